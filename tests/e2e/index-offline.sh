#!/usr/bin/env bash
# The real `atcr` binary with its index as an embedded replica whose primary is down
# (index.primary_url at a closed port): it starts, serves pushes and pulls (skopeo) and the
# UI from the local copy, queues the index writes durably, says so once in the log and on
# /_health, keeps doing so across a restart with a non-empty outbox, and applies the queue
# once the index takes writes again.
#
#   ATCR_BIN=target/debug/atcr bash tests/e2e/index-offline.sh
#
# No primary is needed (none can be reached in CI): a populated replica is made from a local
# index plus the replication-position file libSQL keeps beside a replica, and "the index
# takes writes again" is the same data dir restarted as a local index.
# Prints "N passed, M failed" last; exit status 1 when anything failed. KEEP_TMP=1 keeps
# the temp dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

need=()
for t in skopeo jq curl python3; do command -v "$t" >/dev/null || need+=("$t"); done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ -z "${ATCR_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet)
    ATCR_BIN="$ROOT/target/debug/atcr"
fi
[[ -x "$ATCR_BIN" ]] || { echo "no executable at ATCR_BIN=$ATCR_BIN" >&2; exit 1; }

T="$(mktemp -d /tmp/atcr-index-offline.XXXXXX)"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        local t0=$SECONDS
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        ((SECONDS - t0 < 3)) || echo "  (stopping took $((SECONDS - t0)) s)"
    fi
}
cleanup() {
    local rc=$?
    stop_server
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
CLOSED="$(free_port)" # bound and released: nothing listens there
REG="127.0.0.1:$PORT"
DATA="$T/data"
TOKEN="zq-index-token-$RANDOM$RANDOM"
export REGISTRY_AUTH_FILE="$T/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SK=(skopeo --insecure-policy)

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() {
    local what="$1" _out; shift
    if _out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$_out" | tail -20 | sed 's/^/       /'; fi
}
eq() { [[ "$1" == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }; }
section() { echo; echo "== $*"; }

# start NAME [ENV...]: the server in the background, log in $T/NAME.log; waits for /_health.
start() {
    local name="$1"; shift
    local t0=$SECONDS
    env -u ATCR_BIN ATCR_AUTH_MODE=none ATCR_SERVER_LISTEN="$REG" ATCR_SERVER_DATA_DIR="$DATA" \
        ATCR_IDENTITY_PLC_URL=http://127.0.0.1:9 "$@" "$ATCR_BIN" serve >"$T/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        curl -fsS "http://$REG/_health" >/dev/null 2>&1 && { STARTED_IN=$((SECONDS - t0)); return 0; }
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "atcr exited:"; cat "$T/$name.log"; SERVER_PID=""; return 1; }
        sleep 0.1
    done
    echo "atcr did not answer /_health"; return 1
}
health() { curl -fsS "http://$REG/_health"; }
# wait_for JQ-EXPR: until /_health satisfies it (20 s at most).
wait_for() {
    for _ in $(seq 200); do
        [[ "$(health | jq -r "$1")" == true ]] && return 0
        sleep 0.1
    done
    echo "/_health never satisfied $1:"; health | jq .; return 1
}
push() { "${SK[@]}" copy --dest-tls-verify=false "oci:$T/img:v1" "docker://$REG/alice.test/app:$1"; }
pull() { "${SK[@]}" copy --src-tls-verify=false "docker://$REG/alice.test/app:$1" "oci:$T/pulled-$1:$1"; }
ui_tags() { curl -fsS "http://$REG/r/alice.test/app" | grep -o 'class="tag">v[0-9]<' | grep -o 'v[0-9]' | sort | tr '\n' ' '; }
RO_ENV=(ATCR_INDEX_PRIMARY_URL="http://127.0.0.1:$CLOSED" ATCR_INDEX_AUTH_TOKEN="$TOKEN" ATCR_INDEX_SYNC_INTERVAL_SECS=1)

python3 "$HERE/mkimage.py" "$T/img" v1 --layers 4096,20000 >/dev/null

section "local index: push v1"
start local-1
stop_server
# alice.test is a handle nobody can resolve offline: the index knows it (a sign-in would
# have stored it).
python3 - "$DATA/index.db" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT INTO users (did, handle, first_seen) VALUES ('did:plc:ewvi7nxzyoun6zhxrhs64oiz', 'alice.test', '2026-01-01T00:00:00Z')")
c.commit()
EOF
start local-2
check "skopeo push alice.test/app:v1" push v1
check "the push is indexed (UI lists v1)" bash -c "for i in \$(seq 50); do [[ \"\$(curl -fsS http://$REG/r/alice.test/app | grep -c '>v1<')\" -ge 1 ]] && exit 0; sleep 0.1; done; exit 1"
stop_server

section "replica, primary unreachable (index.primary_url at closed port $CLOSED)"
touch "$DATA/index.db-client_wal_index" # what a replica that synced before keeps
# (start runs here, not inside check: it sets SERVER_PID for stop_server)
if start replica-1 "${RO_ENV[@]}"; then
    ok "atcr serve starts (no exit waiting for the primary): /_health after ${STARTED_IN} s"
else
    bad "atcr serve starts with the primary unreachable"; exit 1
fi
check "/_health: the index is a degraded replica, primary unreachable" \
    wait_for '.index.mode == "replica" and .index.primary_reachable == false and .index.sync_failures >= 1'
check "/_health: status degraded, error names index.primary_url and the cause" \
    bash -c "h=\$(curl -fsS http://$REG/_health); [[ \$(jq -r .status <<<\"\$h\") == degraded ]] && jq -r .index.error <<<\"\$h\" | grep -q 'index.primary_url http://127.0.0.1:$CLOSED is unreachable.*refused'"
check "the UI still shows v1 (local copy)" eq "$(ui_tags)" "v1 "
check "skopeo push alice.test/app:v2 while the primary is down" push v2
check "skopeo pull alice.test/app:v1" pull v1
check "skopeo pull alice.test/app:v2" pull v2
check "pulled v2 is the pushed image" eq "$(jq -r '.manifests[0].digest' "$T/pulled-v2/index.json")" "$(jq -r '.manifests[0].digest' "$T/img/index.json")"
check "/_health: the push and the pull counts are queued in the outbox" wait_for '.index.outbox.entries >= 2 and .index.pending_pulls == 0'
stop_server
LOG="$T/replica-1.log"
check "said once in the log (one warning naming index.primary_url)" eq "$(grep -c 'index.primary_url' "$LOG")" 1
check "no libSQL handshake lines, no tower_http errors" eq "$(grep -c -e 'Attempting to perform handshake' -e 'tower_http' "$LOG" || true)" 0
check "the token never shows in the log" eq "$(grep -c "$TOKEN" "$LOG" || true)" 0

section "restart, primary still unreachable, outbox not empty"
# This time the token comes from a file, replaced while running (SIGHUP re-reads it).
echo "$TOKEN" >"$T/token"
RO_FILE_ENV=(ATCR_INDEX_PRIMARY_URL="http://127.0.0.1:$CLOSED" ATCR_INDEX_AUTH_TOKEN_FILE="$T/token" ATCR_INDEX_SYNC_INTERVAL_SECS=1)
if start replica-2 "${RO_FILE_ENV[@]}"; then ok "atcr serve starts again"; else bad "atcr serve starts again"; exit 1; fi
echo "${TOKEN}-rotated" >"$T/token"
kill -HUP "$SERVER_PID"
check "SIGHUP re-reads index.auth_token_file" \
    bash -c "for i in \$(seq 50); do grep -q 'token re-read from index.auth_token_file' '$T/replica-2.log' && exit 0; sleep 0.1; done; exit 1"
check "/_health: the queue survived the restart" wait_for '.index.outbox.entries >= 2 and .index.primary_reachable == false'
check "skopeo push alice.test/app:v3" push v3
check "skopeo pull alice.test/app:v3" pull v3
check "skopeo pull alice.test/app:v1" pull v1
queued="$(health | jq .index.outbox.entries)"
echo "  ($queued index writes queued)"
stop_server
check "the token (old or new) never shows in the log" eq "$(grep -c "$TOKEN" "$T/replica-2.log" || true)" 0

section "the index takes writes again (same data dir as a local index)"
if start local-3; then ok "atcr serve starts"; else bad "atcr serve starts"; exit 1; fi
check "/_health: the outbox drained, index ok" wait_for '.status == "ok" and .index.outbox.entries == 0 and .index.outbox.applied >= 3'
check "the UI lists v1 v2 v3" eq "$(ui_tags)" "v1 v2 v3 "
# Four pulls were made while the index was down (two per run): none lost across the
# restarts, none counted twice.
check "the UI counts the 4 pulls made during the outage" \
    eq "$(curl -fsS "http://$REG/r/alice.test/app" | grep -o '[0-9]* pulls\?' | head -1)" "4 pulls"
stop_server

echo
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
