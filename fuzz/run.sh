#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 30). CI runs this briefly; run it longer by
# hand (`fuzz/run.sh 600`). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets stable use them.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Build first with LeakSanitizer off: build scripts run under the sanitizer too, and the
# lemon parser generator that libsql's SQL parser builds (a C tool) leaks by design.
# The fuzz runs below keep leak detection.
ASAN_OPTIONS=detect_leaks=0 cargo fuzz build
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  echo "== fuzz $target for ${SECONDS_EACH}s"
  cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$SECONDS_EACH" -max_len=65536 2>&1 | grep -E '^(Done|#[0-9]+ *DONE|==|SUMMARY|thread)' || true
  # cargo fuzz exits non-zero on a crash; the pipe above hides it, so check for artifacts.
  if compgen -G "artifacts/$target/crash-*" >/dev/null; then
    echo "fuzz target $target crashed: $(ls artifacts/$target/crash-*)"
    exit 1
  fi
done
echo "fuzzing finished without crashes"
