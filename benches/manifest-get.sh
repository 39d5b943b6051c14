#!/usr/bin/env bash
# Manifest GET latency under load (issue 17): atcr vs CNCF distribution 2.8 (Debian's
# docker-registry) in one run, wrk with 32 connections on this machine (wrk shares the
# cores with the server: the figures include that). Prints one table: p50 / p90 / p99 and
# requests/s for a manifest GET by tag on each server, plus atcr's `/_health` (the floor of
# its HTTP stack on this machine: no registry work at all).
#
#   bash benches/manifest-get.sh
#   SECS=10 CONNS=32 ATCR_BIN=target/release/atcr bash benches/manifest-get.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SECS="${SECS:-10}"; CONNS="${CONNS:-32}"
need=()
for t in curl wrk python3; do command -v "$t" >/dev/null || need+=("$t"); done
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null || echo "(some packages failed to install)"
fi
if [[ -z "${ATCR_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --release --quiet --bin atcr)
    ATCR_BIN="$CARGO_TARGET_DIR/release/atcr"
fi
T="$(mktemp -d /tmp/atcr-mget.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not up: $1"; cat "$2"; exit 1; }

A_PORT="$(free_port)"
env -u ATCR_BIN ATCR_AUTH_MODE=none ATCR_SERVER_LISTEN="127.0.0.1:$A_PORT" ATCR_SERVER_DATA_DIR="$T/atcr" RUST_LOG=warn \
    "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$A_PORT/v2/" "$T/atcr.log"
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

cfg='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
printf '%s' "$cfg" >"$T/cfg"
cfg_digest="sha256:$(sha256sum "$T/cfg" | cut -c1-64)"
# distribution refuses an image manifest without layers: one small layer.
head -c 4096 /dev/urandom >"$T/layer"
layer_digest="sha256:$(sha256sum "$T/layer" | cut -c1-64)"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
    "$cfg_digest" "${#cfg}" "$layer_digest" >"$T/manifest"
MT='application/vnd.oci.image.manifest.v1+json'
push_blob() { # base file digest: POST, then PUT ?digest= with the bytes (both servers take it)
    local loc
    loc=$(curl -fsS -X POST -D - -o /dev/null "$1/v2/bench/app/blobs/uploads/" | awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
    [[ "$loc" == http* ]] || loc="$1$loc"
    [[ "$loc" == *\?* ]] && loc="$loc&digest=$3" || loc="$loc?digest=$3"
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$2" "$loc"
}
for port in "$A_PORT" "$D_PORT"; do
    B="http://127.0.0.1:$port"
    push_blob "$B" "$T/cfg" "$cfg_digest"
    push_blob "$B" "$T/layer" "$layer_digest"
    curl -fsS -o /dev/null -X PUT -H "Content-Type: $MT" --data-binary @"$T/manifest" "$B/v2/bench/app/manifests/v1"
    curl -fsS -o /dev/null -H "Accept: $MT" "$B/v2/bench/app/manifests/v1"
done

to_ms() { # wrk latency "1.23ms" / "850.00us" / "1.02s" -> ms
    awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); printf "%.2f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.2f", v} else {sub(/s$/,"",v); printf "%.2f", v*1000} }'
}
run() { # label url
    local out
    wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "Accept: $MT" "$2" >"$T/wrk.out" 2>&1 || true
    out="$T/wrk.out"
    printf '%-34s %8s %8s %8s %10s\n' "$1" \
        "$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")" "$(to_ms "$(awk '$1=="90%"{print $2}' "$out")")" \
        "$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")" "$(awk '/Requests\/sec/{printf "%.0f", $2}' "$out")"
    if grep -q "Non-2xx" "$out"; then echo "   ($(grep Non-2xx "$out"))"; fi
}
echo "machine: $(nproc) cores; wrk -t2 -c$CONNS for ${SECS}s per row, on the same cores"
printf '%-34s %8s %8s %8s %10s\n' "" "p50 ms" "p90 ms" "p99 ms" "req/s"
run "atcr manifest GET by tag" "http://127.0.0.1:$A_PORT/v2/bench/app/manifests/v1"
run "distribution manifest GET by tag" "http://127.0.0.1:$D_PORT/v2/bench/app/manifests/v1"
run "atcr /_health (HTTP floor)" "http://127.0.0.1:$A_PORT/_health"
echo "goal (issue 17): atcr manifest GET p99 <= 2 ms at 32 connections"
