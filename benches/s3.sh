#!/usr/bin/env bash
# S3-backend bench: atcr (release) with a real S3 server (s3s-fs, SigV4-checking) on loopback.
#   bash benches/s3.sh                      # LAYER_MB=500 CONCURRENT=4 RPS_SECS=5
# Reports:
#  - push: CONCURRENT layers of LAYER_MB pushed at once (curl: POST, streaming PATCH, PUT),
#    aggregate MB/s, and atcr's peak RSS (VmHWM) over the run: memory must stay bounded
#    (about 2 x part size per upload), not grow with layer size;
#  - pull: GET -> 307 -> S3, MB/s, and how many bytes atcr itself wrote meanwhile (from
#    /proc/<pid>/io): the blob bytes must not pass through atcr;
#  - requests/second for manifest HEAD, manifest GET, blob HEAD and blob GET (the redirect).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
LAYER_MB="${LAYER_MB:-500}"; CONCURRENT="${CONCURRENT:-4}"; RPS_SECS="${RPS_SECS:-5}"
command -v ab >/dev/null || { apt-get update -qq && apt-get install -y -qq apache2-utils >/dev/null; }
S3="$ROOT/tests/support/s3-test-server.sh"
T="$(mktemp -d /tmp/atcr-s3-bench.XXXXXX)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; bash "$S3" stop "$T/s3" >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT
eval "$(bash "$S3" start "$T/s3")"
if [ -z "${ATCR_BIN:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); ATCR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/atcr"; fi
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
B="http://127.0.0.1:$PORT"
env ATCR_SERVER_LISTEN="127.0.0.1:$PORT" ATCR_SERVER_DATA_DIR="$T/data" RUST_LOG=warn \
    ATCR_STORAGE_BACKEND=s3 ATCR_STORAGE_S3_ENDPOINT="$S3_ENDPOINT" ATCR_STORAGE_S3_BUCKET=bench \
    ATCR_STORAGE_S3_ACCESS_KEY="$S3_AK" ATCR_STORAGE_S3_SECRET_KEY="$S3_SK" ATCR_STORAGE_S3_CREATE_BUCKET=true \
    "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -fs -o /dev/null "$B/v2/" && break; sleep 0.1; done
rss_kb() { awk '/^VmHWM/{print $2}' "/proc/$PID/status"; }
wchar() { awk '/^wchar/{print $2}' "/proc/$PID/io"; }
now() { date +%s.%N; }
echo "== generating $CONCURRENT x $LAYER_MB MB random layers"
for i in $(seq "$CONCURRENT"); do head -c "$((LAYER_MB * 1000000))" /dev/urandom >"$T/layer$i"; done
push() { # file -> digest
  local f=$1 d loc
  d="sha256:$(sha256sum "$f" | cut -c1-64)"
  loc=$(curl -fsS -X POST -D - -o /dev/null "$B/v2/alice.test/bench/blobs/uploads/" | awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
  loc=$(curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' -T "$f" -D - -o /dev/null "$B$loc" | awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
  curl -fsS -X PUT -o /dev/null "$B$loc?digest=$d"
  echo "$d" >"$f.digest"
}
rss_before=$(rss_kb)
echo "== pushing $CONCURRENT layers concurrently (peak RSS before: $((rss_before / 1024)) MiB)"
t0=$(now)
for i in $(seq "$CONCURRENT"); do push "$T/layer$i" & done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
t1=$(now)
rss_after=$(rss_kb)
total_mb=$((CONCURRENT * LAYER_MB))
push_s=$(echo "$t1 - $t0" | bc -l)
echo "== pulling through the redirect"
w0=$(wchar); t0=$(now)
for i in $(seq "$CONCURRENT"); do
  d=$(cat "$T/layer$i.digest")
  got=$(curl -fsSL "$B/v2/alice.test/bench/blobs/$d" | sha256sum | cut -c1-64)
  [ "sha256:$got" = "$d" ] || { echo "pulled bytes do not match $d"; exit 1; }
done
t1=$(now); w1=$(wchar)
pull_s=$(echo "$t1 - $t0" | bc -l)
# A small image for the request-rate runs.
cfg='{"architecture":"amd64","os":"linux"}'; printf '%s' "$cfg" >"$T/cfg"
cd_=$(sha256sum "$T/cfg" | cut -c1-64)
curl -fsS -X POST --data-binary @"$T/cfg" -o /dev/null "$B/v2/alice.test/bench/blobs/uploads/?digest=sha256:$cd_"
l1=$(cat "$T/layer1.digest")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$cd_" "${#cfg}" "$l1" "$((LAYER_MB * 1000000))" >"$T/manifest"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$T/manifest" -o /dev/null "$B/v2/alice.test/bench/manifests/v1"
rps() { ab -q -k -c 8 -t "$RPS_SECS" -n 10000000 "$@" 2>/dev/null | awk '/Requests per second/{print $4}'; }
m_head=$(rps -i "$B/v2/alice.test/bench/manifests/v1")
m_get=$(rps "$B/v2/alice.test/bench/manifests/v1")
b_head=$(rps -i "$B/v2/alice.test/bench/blobs/$l1")
b_get=$(rps "$B/v2/alice.test/bench/blobs/$l1")
printf '\n== S3 backend summary (layers %s x %s MB)\n' "$CONCURRENT" "$LAYER_MB"
printf '%-34s %12s\n' "push, concurrent aggregate MB/s" "$(echo "$total_mb / $push_s" | bc -l | xargs printf '%.1f')"
printf '%-34s %12s\n' "peak RSS before push (MiB)" "$((rss_before / 1024))"
printf '%-34s %12s\n' "peak RSS after push (MiB)" "$((rss_after / 1024))"
printf '%-34s %12s\n' "pull via redirect MB/s" "$(echo "$total_mb / $pull_s" | bc -l | xargs printf '%.1f')"
printf '%-34s %12s\n' "bytes atcr wrote during pulls" "$((w1 - w0))"
printf '%-34s %12s\n' "manifest HEAD req/s" "$m_head"
printf '%-34s %12s\n' "manifest GET req/s" "$m_get"
printf '%-34s %12s\n' "blob HEAD req/s" "$b_head"
printf '%-34s %12s\n' "blob GET (307 redirect) req/s" "$b_get"
