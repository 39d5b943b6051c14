#!/usr/bin/env bash
# Acceptance check against the reference TypeScript implementation: our Rust code writes a
# repo CAR (plus a record proof and a firehose commit block set), and @atproto/repo verifies
# the CAR, the MST and the commit signature against the did:key.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
[ -d node_modules/@atproto/repo ] || npm ci --no-audit --no-fund --loglevel=error
out="$(mktemp -d)/repo.car"
trap 'rm -rf "$(dirname "$out")"' EXIT
(cd "$here/../.." && ATPROTO_REPO_CAR_OUT="$out" cargo test -q --test atproto_interop write_car_for_reference_verifier >/dev/null)
node verify-with-reference.mjs "$out"
bash "$here/served-repo.sh"
