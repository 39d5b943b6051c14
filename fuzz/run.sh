#!/usr/bin/env bash
# Build every fuzz target with libFuzzer + AddressSanitizer and run each for SECONDS (default
# 60), JOBS targets at a time (default 2). CI: `bash fuzz/run.sh 60 2`; by hand, longer
# (`bash fuzz/run.sh 600 1`). The targets are the [[bin]]s of fuzz/Cargo.toml; each starts
# from `seeds/<target>/` and keeps what it finds in `corpus/<target>/` (git-ignored).
#
# No cargo-fuzz: this is what `cargo fuzz build` does (the same RUSTFLAGS, --target so build
# scripts and proc macros stay uninstrumented), on the machine's stable toolchain with
# RUSTC_BOOTSTRAP=1 for -Zsanitizer, and saves installing cargo-fuzz (~1 min) in CI.
# `cargo fuzz run <target>` still works by hand on this crate.
#
# Prints the build time and, per target, executions, executions/s, corpus size and the
# coverage counters; fails on any crash, leak, timeout or out-of-memory.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
JOBS="${2:-2}"
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGETS=$(awk '/^\[\[bin\]\]/{bin=1; next} bin && /^name *=/{gsub(/[" ]/, ""); sub(/^name=/, ""); print; bin=0}' Cargo.toml)

export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Zsanitizer=address \
-Cdebug-assertions -Ccodegen-units=1"
export CARGO_TERM_COLOR=never

build_start=$(date +%s)
# Optimised like cargo-fuzz's default, but with debug assertions (overflow checks) on.
nice -n 5 cargo build --release --target "$TRIPLE" --bins --quiet \
  --config 'profile.release.debug="line-tables-only"'
build_secs=$(( $(date +%s) - build_start ))
echo "fuzz build: ${build_secs}s ($(echo "$TARGETS" | wc -w) targets, target $TRIPLE)"

BIN_DIR="target/$TRIPLE/release"
mkdir -p logs
run_one() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  local seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: two targets fit in memory.
  ASAN_OPTIONS="detect_odr_violation=0:${ASAN_OPTIONS:-}" \
    "$BIN_DIR/$target" "corpus/$target" "${seeds[@]}" \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
    >"logs/$target.log" 2>&1
}

failed=()
running=()
status_dir=$(mktemp -d)
for target in $TARGETS; do
  ( if run_one "$target"; then echo 0; else echo $?; fi >"$status_dir/$target" ) &
  running+=($!)
  if [ ${#running[@]} -ge "$JOBS" ]; then
    wait "${running[0]}"
    running=("${running[@]:1}")
  fi
done
wait

printf '%-12s %12s %10s %8s %8s %8s  %s\n' target executions exec/s corpus cov ft result
for target in $TARGETS; do
  log="logs/$target.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  corpus=$(find "corpus/$target" -type f | wc -l)
  code=$(cat "$status_dir/$target")
  result=ok
  if [ "$code" != 0 ] || compgen -G "artifacts/$target/*" >/dev/null; then
    result="FAILED (exit $code): $(ls "artifacts/$target" 2>/dev/null | tr '\n' ' ')"
    failed+=("$target")
  fi
  printf '%-12s %12s %10s %8s %8s %8s  %s\n' "$target" "${execs:-?}" "${rate:-?}" "$corpus" "${cov:-?}" "${ft:-?}" "$result"
done
rm -rf "$status_dir"
if [ ${#failed[@]} -gt 0 ]; then
  for target in "${failed[@]}"; do
    echo "== fuzz/logs/$target.log (tail)"
    tail -40 "logs/$target.log"
  done
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
  exit 1
fi
echo "fuzzing: $(echo "$TARGETS" | wc -w) targets x ${SECONDS_EACH}s, no crashes"
