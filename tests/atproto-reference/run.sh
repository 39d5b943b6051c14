#!/usr/bin/env bash
# Acceptance check against the reference TypeScript implementation: our Rust code writes a
# repo CAR (plus a record proof and a firehose commit block set), and @atproto/repo verifies
# the CAR, the MST and the commit signature against the did:key; then served-repo.sh checks
# what the real binary serves (CARs, proofs, the firehose frames as @atproto/sync reads them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
for pkg in repo sync lexicon api; do
  [ -d "node_modules/@atproto/$pkg" ] || { npm ci --no-audit --no-fund --loglevel=error; break; }
done
out="$(mktemp -d)/repo.car"
trap 'rm -rf "$(dirname "$out")"' EXIT
(cd "$here/../.." && ATPROTO_REPO_CAR_OUT="$out" cargo test -q --test atproto_interop write_car_for_reference_verifier >/dev/null)
node verify-with-reference.mjs "$out"
bash "$here/served-repo.sh"
