#!/usr/bin/env bash
# Acceptance check over HTTP: start the real `atcr` binary on a loopback port with a fresh
# data dir, then have the reference implementation (@atproto/repo) verify the CAR served by
# com.atproto.sync.getRepo and its commit signature against the key in /.well-known/did.json.
# Restarts once to check that the same repo (same key, same head) is served afterwards, then
# once more with `public = false`, which updates the captain record in a new commit; the
# replayed firehose frames are verified each time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
cd "$here"
for pkg in repo sync lexicon api; do
  [ -d "node_modules/@atproto/$pkg" ] || { npm ci --no-audit --no-fund --loglevel=error; break; }
done
(cd "$root" && cargo build -q --bin atcr)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/atcr"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
owner="did:plc:ewvi7nxzyoun6zhxrhs64oiz"
base="http://127.0.0.1:$port"
# Node 22 has a global WebSocket; Node 20 needs the flag.
wsflag=""
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' || wsflag="--experimental-websocket"

start() {
  env "$@" ATCR_SERVER_LISTEN="127.0.0.1:$port" ATCR_SERVER_DATA_DIR="$work/data" \
    ATCR_HOLD_OWNER_DID="$owner" ATCR_LOG_LEVEL=warn "$bin" serve >>"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "$base/xrpc/_health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "atcr did not start:"; cat "$work/log"; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }

start
node $wsflag verify-served.mjs "$base" "$owner"
before="$(curl -fs "$base/xrpc/com.atproto.sync.getLatestCommit?did=did:web:localhost%253A$port")"
key_before="$(curl -fs "$base/.well-known/did.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["verificationMethod"][0]["publicKeyMultibase"])')"
stop
start
after="$(curl -fs "$base/xrpc/com.atproto.sync.getLatestCommit?did=did:web:localhost%253A$port")"
key_after="$(curl -fs "$base/.well-known/did.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["verificationMethod"][0]["publicKeyMultibase"])')"
[ "$before" = "$after" ] || { echo "FAIL head changed across restart: $before -> $after"; exit 1; }
[ "$key_before" = "$key_after" ] || { echo "FAIL key changed across restart"; exit 1; }
echo "ok   restart: same head and key ($after)"
node $wsflag verify-served.mjs "$base" "$owner"
stop
start ATCR_HOLD_PUBLIC=false
changed="$(curl -fs "$base/xrpc/com.atproto.sync.getLatestCommit?did=did:web:localhost%253A$port")"
[ "$changed" != "$after" ] || { echo "FAIL config change made no commit"; exit 1; }
curl -fs "$base/xrpc/com.atproto.repo.getRecord?repo=localhost&collection=io.atcr.hold.captain&rkey=self" | grep -q '"public":false' \
  || { echo "FAIL captain not updated"; exit 1; }
echo "ok   config change: captain updated in a new commit"
node $wsflag verify-served.mjs "$base" "$owner"
