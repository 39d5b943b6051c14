#!/usr/bin/env bash
# Memory per upload in flight (issue 17): atcr on the filesystem, atcr on S3 (s3s-fs on
# loopback) and CNCF distribution 2.8 (Debian's docker-registry) side by side in one run;
# on both atcr servers also uploads through the hold API (io.atcr.hold.uploadPart).
#
#   bash benches/upload-memory.sh
#   SCENARIOS=4x500,1x200 ATCR_BIN=target/release/atcr S3=0 bash benches/upload-memory.sh
#
# Prints one table: idle RSS, peak RSS while the pushes run (VmRSS sampled every 10 ms),
# peak over idle, that divided by the uploads in flight, throughput, and the time RSS takes
# to come back within 2 MiB of idle after the last PUT. See benches/upload_memory.py.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
need=()
for t in curl python3; do command -v "$t" >/dev/null || need+=("$t"); done
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography) # hold API tokens
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null || echo "(some packages failed to install)"
fi
if [[ -z "${ATCR_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --release --quiet --bin atcr)
    ATCR_BIN="$CARGO_TARGET_DIR/release/atcr"
fi
T="$(mktemp -d /tmp/atcr-mem-bench.XXXXXX)"
PIDS=()
S3SH="$ROOT/tests/support/s3-test-server.sh"
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [[ "${S3:-1}" == 1 ]] && bash "$S3SH" stop "$T/s3" >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not up: $1"; cat "$2"; exit 1; }
SERVERS="["
start_atcr() { # name extra-env...
    local name=$1; shift
    local port; port="$(free_port)"
    env -u ATCR_BIN ATCR_AUTH_MODE=none ATCR_SERVER_LISTEN="127.0.0.1:$port" ATCR_SERVER_DATA_DIR="$T/$name" RUST_LOG=warn \
        "$@" "$ATCR_BIN" serve >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    wait_up "http://127.0.0.1:$port/v2/" "$T/$name.log"
    SERVERS+="{\"name\":\"$name\",\"pid\":${PIDS[-1]},\"url\":\"http://127.0.0.1:$port\"},"
}
# The hold API rows: a bench user who owns the atcr servers' holds, its DID document served
# as a PLC directory.
BENCH_DID="$(BENCH_TMP="$T" python3 "$HERE/upload_memory.py" --make-identity "$T/plc" "$T/hold-key.pem")"
PLC_PORT="$(free_port)"
(cd "$T/plc" && exec python3 -m http.server --bind 127.0.0.1 "$PLC_PORT") >/dev/null 2>&1 &
PIDS+=($!)
start_atcr atcr-fs ATCR_HOLD_OWNER_DID="$BENCH_DID" ATCR_IDENTITY_PLC_URL="http://127.0.0.1:$PLC_PORT"
SERVERS="${SERVERS%\},}"',"hold_api":true},'
if [[ "${S3:-1}" == 1 ]]; then
    eval "$(bash "$S3SH" start "$T/s3")"
    start_atcr atcr-s3 ATCR_STORAGE_BACKEND=s3 ATCR_STORAGE_S3_ENDPOINT="$S3_ENDPOINT" ATCR_STORAGE_S3_BUCKET=bench \
        ATCR_STORAGE_S3_ACCESS_KEY="$S3_AK" ATCR_STORAGE_S3_SECRET_KEY="$S3_SK" ATCR_STORAGE_S3_CREATE_BUCKET=true \
        ATCR_HOLD_OWNER_DID="$BENCH_DID" ATCR_IDENTITY_PLC_URL="http://127.0.0.1:$PLC_PORT"
    SERVERS="${SERVERS%\},}"',"hold_api":true},'
fi
D_PORT="$(free_port)"
cat >"$T/distribution.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $T/dist-data
http:
  addr: 127.0.0.1:$D_PORT
  secret: bench-only-secret
YML
/usr/bin/docker-registry serve "$T/distribution.yml" >"$T/distribution.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$D_PORT/v2/" "$T/distribution.log"
SERVERS+="{\"name\":\"distribution-2.8\",\"pid\":${PIDS[-1]},\"url\":\"http://127.0.0.1:$D_PORT\"}]"
BENCH_TMP="$T" BENCH_SERVERS="$SERVERS" python3 "$HERE/upload_memory.py"
