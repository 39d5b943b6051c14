#!/usr/bin/env bash
# Pull throughput through AppView A: a blob in A's own hold next to the same blob in a
# remote hold B (A answers 307 to B's getBlob; with FED_S3=1 both holds store on S3 (s3s-fs,
# two buckets) and A answers 307 to the presigned URL, for its own hold and for B's alike).
# Release builds, the reference PDS + PLC (tests/support/atnet), loopback.
#
#   bash benches/federation-pull.sh
#   BLOB_MB=200 ITER=5 FED_S3=1 ATCR_BIN=target/release/atcr bash benches/federation-pull.sh
#
# One image with one BLOB_MB layer is pushed twice through A: by dave (captain of A, his
# pushes stay in A's hold) and by alice (her sailor profile names hold B). Then, ITER
# times, alternating the order:
#   curl  GET /v2/<name>/blobs/<layer> on A, following redirects, to /dev/null (the transfer)
#   direct  the same bytes straight from where A's redirect for hold B points (no AppView)
#   skopeo copy docker://A/<name>:v1 -> oci: (a whole client pull, digests verified)
# and prints median/min MB/s and the remote/local ratio. Ports: ATNET_PLC_PORT,
# ATNET_PDS_PORT, ATNET_STATE_DIR as for the test scripts; A and B on free ports.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ATNET="$ROOT/tests/support/atnet/atnet"
BLOB_MB="${BLOB_MB:-200}"
ITER="${ITER:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
for t in curl jq python3 skopeo gzip; do command -v "$t" >/dev/null || { echo "needs $t"; exit 1; }; done
if [[ -z "${ATCR_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    ATCR_BIN="$CARGO_TARGET_DIR/release/atcr"
fi

T="$(mktemp -d /tmp/atcr-fed-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sh "$ATNET" down >/dev/null 2>&1 || true
    [[ -f "$T/s3/pid" ]] && bash "$ROOT/tests/support/s3-test-server.sh" stop "$T/s3" >/dev/null 2>&1 || true
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT INT TERM

export ATNET_ACCOUNTS="alice.test,carol.test,dave.test"
sh "$ATNET" down >/dev/null 2>&1 || true
sh "$ATNET" up >"$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")" PDS="$(jq -r .pds "$T/atnet.json")"
did_of() { jq -r --arg h "$1" '.accounts[] | select(.handle==$h) | .did' "$T/atnet.json"; }
pw_of() { jq -r --arg h "$1" '.accounts[] | select(.handle==$h) | .appPassword' "$T/atnet.json"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT_A="$(free_port)" PORT_B="$(free_port)"
A="localhost:$PORT_A" B="localhost:$PORT_B" HOLD_B="did:web:localhost%3A$PORT_B"

STORAGE_A=() STORAGE_B=()
if [[ "${FED_S3:-0}" == 1 ]]; then
    eval "$(bash "$ROOT/tests/support/s3-test-server.sh" start "$T/s3")"
    s3() { echo ATCR_STORAGE_BACKEND=s3 ATCR_STORAGE_S3_ENDPOINT="$S3_ENDPOINT" ATCR_STORAGE_S3_BUCKET="$1" \
        ATCR_STORAGE_S3_ACCESS_KEY="$S3_AK" ATCR_STORAGE_S3_SECRET_KEY="$S3_SK" ATCR_STORAGE_S3_CREATE_BUCKET=true; }
    read -r -a STORAGE_A <<<"$(s3 holda)"
    read -r -a STORAGE_B <<<"$(s3 holdb)"
fi
serve() {
    local name="$1" port="$2" owner="$3"; shift 3
    env -u ATCR_BIN ATCR_AUTH_MODE=atproto ATCR_SERVER_LISTEN="127.0.0.1:$port" ATCR_SERVER_DATA_DIR="$T/$name" \
        ATCR_IDENTITY_PLC_URL="$PLC" ATCR_IDENTITY_HANDLE_RESOLVER="$PDS" ATCR_HOLD_OWNER_DID="$owner" \
        ATCR_FEDERATION_ALLOW_PRIVATE_ADDRESSES=true ATCR_INDEX_BACKFILL_WHEN_EMPTY=false RUST_LOG=warn "$@" \
        "$ATCR_BIN" serve >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 150); do curl -fsS -o /dev/null "http://localhost:$port/_health" 2>/dev/null && return; sleep 0.1; done
    echo "atcr $name did not start"; cat "$T/$name.log"; exit 1
}
serve a "$PORT_A" "$(did_of dave.test)" "${STORAGE_A[@]}"
serve b "$PORT_B" "$(did_of alice.test)" "${STORAGE_B[@]}"

# alice's profile names hold B (she is its captain, so no crew step is needed).
JWT="$(curl -fsS -H 'Content-Type: application/json' "$PDS/xrpc/com.atproto.server.createSession" \
    -d "{\"identifier\":\"alice.test\",\"password\":\"$(jq -r '.accounts[] | select(.handle=="alice.test") | .password' "$T/atnet.json")\"}" | jq -r .accessJwt)"
curl -fsS -H 'Content-Type: application/json' -H "Authorization: Bearer $JWT" "$PDS/xrpc/com.atproto.repo.putRecord" \
    -d "$(jq -nc --arg r "$(did_of alice.test)" --arg h "$HOLD_B" '{repo:$r, collection:"io.atcr.sailor.profile", rkey:"self",
         record:{"$type":"io.atcr.sailor.profile", defaultHold:$h, createdAt:"2026-01-01T00:00:00.000Z"}}')" >/dev/null

echo "building a ${BLOB_MB} MB layer"
python3 "$ROOT/tests/e2e/mkimage.py" "$T/img" v1 --layers $((BLOB_MB * 1024 * 1024)) >/dev/null
LAYER="$(jq -r '.layers[0].digest' "$T/img/blobs/sha256/$(jq -r '.manifests[0].digest' "$T/img/index.json" | cut -d: -f2)")"
BYTES="$(stat -c %s "$T/img/blobs/sha256/${LAYER#sha256:}")"
SK=(skopeo --insecure-policy)
mkdir -p "$T/containers"; echo '{"auths":{}}' >"$T/containers/auth.json"; export REGISTRY_AUTH_FILE="$T/containers/auth.json"
"${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "dave.test:$(pw_of dave.test)" "oci:$T/img:v1" "docker://$A/dave.test/bench:v1"
"${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice.test:$(pw_of alice.test)" "oci:$T/img:v1" "docker://$A/alice.test/bench:v1"
echo "redirect of the remote blob: $(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://$A/v2/alice.test/bench/blobs/$LAYER" | cut -c1-110)..."
direct_url() { curl -sS -o /dev/null -w '%{redirect_url}' "http://$A/v2/alice.test/bench/blobs/$LAYER"; }

mbps() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.1f}')" "$1" "$2"; }
declare -A S
sample() { # sample KIND NAME
    local t0 t1 secs
    case "$1" in
        curl)
            read -r secs hop <<<"$(curl -fsSL -o /dev/null -w '%{time_total} %{time_redirect}' "http://$A/v2/$2/blobs/$LAYER")"
            # The redirect hop's share of the whole pull (what federation adds on the wire).
            echo "$hop $secs" >>"$T/hops-$3" ;;
        direct) secs="$(curl -fsSL -o /dev/null -w '%{time_total}' "$(direct_url)")" ;;
        skopeo)
            rm -rf "$T/out"
            t0="$(date +%s.%N)"
            "${SK[@]}" copy -q --src-tls-verify=false "docker://$A/$2:v1" "oci:$T/out:v1" >/dev/null
            t1="$(date +%s.%N)"
            secs="$(python3 -c "print($t1 - $t0)")" ;;
    esac
    mbps "$BYTES" "$secs"
}
for i in $(seq "$ITER"); do
    order=("dave.test/bench local" "alice.test/bench remote")
    ((i % 2 == 0)) && order=("alice.test/bench remote" "dave.test/bench local")
    v="$(sample direct - -)"
    S["direct remote"]+="$v "
    printf '  iter %d %-6s %-6s %8s MB/s\n' "$i" direct hold-B "$v"
    for kind in curl skopeo; do
        for entry in "${order[@]}"; do
            read -r name where <<<"$entry"
            v="$(sample "$kind" "$name" "$where")"
            S["$kind $where"]+="$v "
            printf '  iter %d %-6s %-6s %8s MB/s\n' "$i" "$kind" "$where" "$v"
        done
    done
done

stat2() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'{statistics.median(v):.1f} {min(v):.1f}')" $1; }
echo
BACKEND="the filesystem"; [[ "${FED_S3:-0}" == 1 ]] && BACKEND="S3 (s3s-fs)"
echo "pull of a ${BLOB_MB} MB blob through A ($ITER runs each; both holds on $BACKEND)"
printf '%-8s %14s %14s %14s %14s %12s\n' client "A's hold med" "A's hold min" "hold B med" "hold B min" "B/A (med)"
for kind in curl skopeo; do
    read -r lm lmin <<<"$(stat2 "${S["$kind local"]}")"
    read -r rm rmin <<<"$(stat2 "${S["$kind remote"]}")"
    printf '%-8s %14s %14s %14s %14s %12s\n' "$kind" "$lm MB/s" "$lmin MB/s" "$rm MB/s" "$rmin MB/s" \
        "$(python3 -c "print(f'{$rm / $lm:.2f}')")"
done
read -r dm dmin <<<"$(stat2 "${S["direct remote"]}")"
printf '%-8s %14s %14s %14s %14s\n' direct "" "" "$dm MB/s" "$dmin MB/s"
echo "(direct: curl of the URL A redirects to for hold B, without A: the transfer itself)"
for where in local remote; do
    [[ -s "$T/hops-$where" ]] || continue
    python3 - "$where" "$T/hops-$where" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
hop = statistics.median(r[0] for r in rows) * 1000
share = statistics.median(r[0] / r[1] for r in rows) * 100
print(f"A's redirect hop ({sys.argv[1]:6}): median {hop:6.2f} ms, {share:5.2f}% of the pull's time")
PY
done
