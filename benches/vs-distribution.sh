#!/usr/bin/env bash
# Side-by-side throughput: atcr (release build) vs CNCF distribution 2.8 (Debian's
# docker-registry), in ONE run on this machine, both on loopback with filesystem storage
# in temp dirs and no auth.
#
#   bash benches/vs-distribution.sh
#   BLOB_MB=200 ITER=5 RPS_SECS=5 ATCR_BIN=target/release/atcr bash benches/vs-distribution.sh
#
# Measures, with the same neutral client for both servers:
#   push  curl: POST, one streaming PATCH of the whole blob (-T streams from the file),
#         PUT ?digest=  (wall clock of the three requests)
#   pull  curl: GET blob -> /dev/null
#   skopeo copy of a one-layer image (BLOB_MB layer) oci: -> docker:// and back
#   HEAD  requests/second for a manifest and a blob (ab -k -i: keep-alive HEAD; wrk is not
#         usable here, it waits for a body after HEAD responses with Content-Length > 0)
# Each push uses a fresh random blob (new digest) so no server can short-circuit by dedup.
# Iterations alternate the order A B / B A so neither server always goes first (page-cache
# writeback of one push then lands on the other equally). Every sample is kept; median and
# min are reported. Note: atcr fsyncs each blob before it becomes visible; distribution's
# filesystem driver does not, so push numbers include that durability cost for atcr only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BLOB_MB="${BLOB_MB:-200}"
ITER="${ITER:-5}"
RPS_SECS="${RPS_SECS:-5}"
RPS_CONNS="${RPS_CONNS:-8}"

# --- tools -----------------------------------------------------------------------------
need=()
for t in curl jq python3 skopeo gzip; do command -v "$t" >/dev/null || need+=("$t"); done
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
command -v ab >/dev/null || need+=(apache2-utils)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null || echo "(some packages failed to install)"
fi
command -v ab >/dev/null && HAVE_AB=1 || HAVE_AB=0

if [[ -z "${ATCR_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --release --quiet)
    ATCR_BIN="$CARGO_TARGET_DIR/release/atcr"
fi
[[ -x "$ATCR_BIN" ]] || { echo "no executable at ATCR_BIN=$ATCR_BIN" >&2; exit 1; }

# --- servers ---------------------------------------------------------------------------
T="$(mktemp -d /tmp/atcr-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [[ "${KEEP_TMP:-0}" == 1 ]] && echo "kept $T" || rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { # url pid log
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "server died:"; cat "$3"; exit 1; }
        sleep 0.1
    done
    echo "server did not come up: $1"; cat "$3"; exit 1
}

A_PORT="$(free_port)"
# env -u: atcr refuses to start on unknown ATCR_* variables, and ATCR_BIN is ours.
env -u ATCR_BIN ATCR_SERVER_LISTEN="127.0.0.1:$A_PORT" ATCR_SERVER_DATA_DIR="$T/atcr-data" RUST_LOG=warn \
    "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$A_PORT/v2/" "${PIDS[-1]}" "$T/atcr.log"

D_PORT="$(free_port)"
# The stock Debian config minus auth and the health poller; access log off like atcr's
# info-level default (no per-request lines), inmemory descriptor cache as shipped.
cat >"$T/distribution.yml" <<EOF
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
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$D_PORT
  secret: bench-only-secret
EOF
/usr/bin/docker-registry serve "$T/distribution.yml" >"$T/distribution.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$D_PORT/v2/" "${PIDS[-1]}" "$T/distribution.log"

declare -A URL=([atcr]="http://127.0.0.1:$A_PORT" [distribution]="http://127.0.0.1:$D_PORT")
declare -A SPID=([atcr]="${PIDS[0]}" [distribution]="${PIDS[1]}")
REPO=alice.test/bench

# --- helpers ---------------------------------------------------------------------------
now_ns() { date +%s%N; }
# Location may be absolute (distribution) or a path (atcr).
absolute() { [[ "$1" == http* ]] && echo "$1" || echo "$2$1"; }
header() { tr -d '\r' | awk -v h="$1" 'BEGIN{IGNORECASE=1} index(tolower($0), tolower(h)":")==1 {sub(/^[^:]*: */,""); print; exit}'; }

# push_blob REG FILE DIGEST -> prints elapsed ns; fails loudly on any unexpected status.
push_blob() {
    local base="${URL[$1]}" file="$2" digest="$3" loc sep t0 t1 code
    t0=$(now_ns)
    loc="$(curl -sS -D - -o /dev/null -X POST "$base/v2/$REPO/blobs/uploads/" | header Location)"
    loc="$(absolute "$loc" "$base")"
    # -T streams the file (no buffering in memory), Content-Length known up front.
    loc="$(curl -sS -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' -T "$file" "$loc" | header Location)"
    loc="$(absolute "$loc" "$base")"
    [[ "$loc" == *\?* ]] && sep='&' || sep='?'
    code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Length: 0' "$loc${sep}digest=$digest")"
    t1=$(now_ns)
    [[ "$code" == 201 ]] || { echo "push to $1 failed: PUT -> $code" >&2; return 1; }
    echo $((t1 - t0))
}

# pull_blob REG DIGEST -> prints elapsed ns (and checks the byte count).
pull_blob() {
    local base="${URL[$1]}" digest="$2" t0 t1 out
    t0=$(now_ns)
    out="$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' "$base/v2/$REPO/blobs/$digest")"
    t1=$(now_ns)
    [[ "$out" == "200 $BLOB_BYTES" ]] || { echo "pull from $1 failed: $out" >&2; return 1; }
    echo $((t1 - t0))
}

# Fresh blob: overwrite the first 32 bytes in place (no 200 MB copy), then hash it.
freshen() { head -c 32 /dev/urandom | dd of="$1" bs=32 count=1 conv=notrunc status=none; echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# Server CPU time (user+system) in ms, from /proc: a load-independent cost measure, useful
# when other work on the machine makes wall-clock numbers noisy.
TCK=$(getconf CLK_TCK)
cpu_ms() { awk -v t="$TCK" '{print int(($14 + $15) * 1000 / t)}' "/proc/${SPID[$1]}/stat"; }

mbps() { python3 -c "print(f'{$BLOB_BYTES / ($1 / 1e9) / 1e6:.1f}')"; }

# server CPU seconds per GB moved, from a ms delta
cpu_per_gb() { python3 -c "print(f'{$1 / 1000 / ($BLOB_BYTES / 1e9):.2f}')"; }
declare -A LAST=()
declare -A SAMPLES # key "reg dir" -> space-separated MB/s values
record() { SAMPLES["$1 $2"]+="$3 "; }

# --- 1. raw blob push/pull with curl ---------------------------------------------------
BLOB="$T/blob.bin"
echo "generating ${BLOB_MB} MB of random data ..."
head -c $((BLOB_MB * 1024 * 1024)) /dev/urandom >"$BLOB"
BLOB_BYTES=$(stat -c %s "$BLOB")
echo "atcr:         $ATCR_BIN ($("$ATCR_BIN" version 2>/dev/null || echo ?), tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo ?)) on :$A_PORT"
echo "distribution: $(/usr/bin/docker-registry --version) on :$D_PORT"
echo "machine:      $(nproc) cores, $(uname -r); blob ${BLOB_MB} MB; ${ITER} iterations"
echo
echo "== curl blob push/pull"
for i in $(seq "$ITER"); do
    if ((i % 2)); then order=(atcr distribution); else order=(distribution atcr); fi
    for reg in "${order[@]}"; do
        digest="$(freshen "$BLOB")"
        sync # start each push with no dirty pages from the previous one
        c0=$(cpu_ms "$reg"); ns="$(push_blob "$reg" "$BLOB" "$digest")"; c1=$(cpu_ms "$reg")
        up="$(mbps "$ns")"; record "$reg" push "$up"; record "$reg" push-cpu "$(cpu_per_gb $((c1 - c0)))"
        ns="$(pull_blob "$reg" "$digest")"; c2=$(cpu_ms "$reg")
        down="$(mbps "$ns")"; record "$reg" pull "$down"; record "$reg" pull-cpu "$(cpu_per_gb $((c2 - c1)))"
        printf '  iter %d %-12s push %7s MB/s (server CPU %4d ms)   pull %7s MB/s (server CPU %4d ms)\n' \
            "$i" "$reg" "$up" $((c1 - c0)) "$down" $((c2 - c1))
        LAST[$reg]="$digest"
    done
done
# Correctness, outside the timing: each server's last blob reads back with the right hash.
for reg in atcr distribution; do
    got="sha256:$(curl -fsS "${URL[$reg]}/v2/$REPO/blobs/${LAST[$reg]}" | sha256sum | cut -d' ' -f1)"
    [[ "$got" == "${LAST[$reg]}" ]] || { echo "$reg returned wrong bytes for ${LAST[$reg]}" >&2; exit 1; }
done

# --- 2. skopeo image copy --------------------------------------------------------------
echo
echo "== skopeo copy, one ${BLOB_MB} MB layer (fresh image per push)"
export REGISTRY_AUTH_FILE="$T/auth.json"; echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SK=(skopeo --insecure-policy)
for i in $(seq "$ITER"); do
    if ((i % 2)); then order=(atcr distribution); else order=(distribution atcr); fi
    for reg in "${order[@]}"; do
        img="$T/img"; rm -rf "$img" "$T/out"
        python3 "$ROOT/tests/e2e/mkimage.py" "$img" v1 --layers "$BLOB_BYTES" >/dev/null
        layer_bytes=$(find "$img/blobs" -type f -size +1M -printf '%s\n')
        ref="docker://${URL[$reg]#http://}/alice.test/skopeo:it$i"
        sync
        t0=$(now_ns); "${SK[@]}" copy -q --dest-tls-verify=false "oci:$img:v1" "$ref"; t1=$(now_ns)
        up="$(BLOB_BYTES=$layer_bytes; mbps $((t1 - t0)))"
        t0=$(now_ns); "${SK[@]}" copy -q --src-tls-verify=false "$ref" "oci:$T/out:v1"; t1=$(now_ns)
        down="$(BLOB_BYTES=$layer_bytes; mbps $((t1 - t0)))"
        record "$reg" skopeo-push "$up"; record "$reg" skopeo-pull "$down"
        printf '  iter %d %-12s push %7s MB/s   pull %7s MB/s\n' "$i" "$reg" "$up" "$down"
    done
done
rm -rf "$T/out" "$T/img"

# --- 3. HEAD requests/second -----------------------------------------------------------
echo
echo "== HEAD requests/second (${RPS_SECS}s each, ${RPS_CONNS} keep-alive connections)"
# A small image in both, so there is a manifest to HEAD by tag.
python3 "$ROOT/tests/e2e/mkimage.py" "$T/small" v1 --layers 4096 >/dev/null
for reg in atcr distribution; do
    "${SK[@]}" copy -q --dest-tls-verify=false "oci:$T/small:v1" "docker://${URL[$reg]#http://}/alice.test/small:v1"
done
small_layer="$(jq -r '.layers[0].digest' "$T/small/blobs/sha256/$(jq -r '.manifests[0].digest' "$T/small/index.json" | cut -d: -f2)")"
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json'
rps() { # url -> "requests/s non2xx"
    if ((HAVE_AB)); then
        # -i HEAD, -k keep-alive, -t seconds (a huge -n so the time limit is what stops it).
        local out; out="$(ab -q -i -k -c "$RPS_CONNS" -t "$RPS_SECS" -n 100000000 -H "Accept: $ACCEPT" "$1" 2>&1)"
        local failed non2xx
        failed="$(awk '/^Failed requests/{print $3}' <<<"$out")"
        non2xx="$(awk '/^Non-2xx responses/{print $3}' <<<"$out")"
        echo "$(awk '/^Requests per second/{printf "%.0f", $4}' <<<"$out") $((${failed:-0} + ${non2xx:-0}))"
    else
        # Fallback: one keep-alive connection, python http.client, RPS_SECS seconds.
        python3 - "$1" "$RPS_SECS" "$ACCEPT" <<'PY'
import http.client, sys, time, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); dur = float(sys.argv[2])
c = http.client.HTTPConnection(u.netloc); n = bad = 0; end = time.time() + dur
while time.time() < end:
    c.request("HEAD", u.path, headers={"Accept": sys.argv[3]}); r = c.getresponse(); r.read()
    n += 1; bad += r.status != 200
print(f"{n / dur:.0f} {bad}")
PY
    fi
}
declare -A RPS CPUREQ
for what in manifest blob; do
    for reg in atcr distribution; do
        if [[ $what == manifest ]]; then path="/v2/alice.test/small/manifests/v1"; else path="/v2/alice.test/small/blobs/$small_layer"; fi
        code="$(curl -sS -o /dev/null -w '%{http_code}' -I -H "Accept: $ACCEPT" "${URL[$reg]}$path")"
        [[ "$code" == 200 ]] || { echo "HEAD $what on $reg -> $code" >&2; exit 1; }
        c0=$(cpu_ms "$reg")
        read -r r nonok < <(rps "${URL[$reg]}$path")
        c1=$(cpu_ms "$reg")
        RPS["$reg $what"]="$r"
        # server CPU microseconds per request
        CPUREQ["$reg $what"]="$(python3 -c "print(f'{($c1 - $c0) * 1000 / max(1, $r * $RPS_SECS):.0f}')")"
        printf '  %-8s HEAD %-12s %10s req/s  %6s us server CPU/req  (failed or non-2xx: %s)\n' \
            "$what" "$reg" "$r" "${CPUREQ["$reg $what"]}" "$nonok"
    done
done
((HAVE_AB)) || echo "  (ab unavailable: single-connection python loop)"

# --- summary ---------------------------------------------------------------------------
# stat2 "v1 v2 ..." [decimals] -> "median min"
stat2() { python3 -c "import statistics,sys; p=int(sys.argv[1]); v=[float(x) for x in sys.argv[2:]]; print(f'{statistics.median(v):.{p}f} {min(v):.{p}f}')" "${2:-1}" $1; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else 'n/a')"; }
echo
echo "== summary: MB/s (MB = 10^6 bytes), blob ${BLOB_MB} MiB, ${ITER} iterations each, higher is better"
printf '%-14s %12s %12s %12s %12s %10s\n' measure "atcr med" "atcr min" "dist med" "dist min" "atcr/dist"
for dir in push pull skopeo-push skopeo-pull; do
    read -r am amin <<<"$(stat2 "${SAMPLES["atcr $dir"]}")"
    read -r dm dmin <<<"$(stat2 "${SAMPLES["distribution $dir"]}")"
    printf '%-14s %12s %12s %12s %12s %10s\n' "$dir" "$am" "$amin" "$dm" "$dmin" "$(ratio "$am" "$dm")x"
done
echo
echo "== server CPU cost, lower is better (user+system time of the server process)"
printf '%-22s %12s %12s %10s\n' measure atcr dist "atcr/dist"
for dir in push pull; do
    read -r a _ <<<"$(stat2 "${SAMPLES["atcr $dir-cpu"]}" 2)"
    read -r d _ <<<"$(stat2 "${SAMPLES["distribution $dir-cpu"]}" 2)"
    printf '%-22s %12s %12s %10s\n' "$dir CPU s/GB (med)" "$a" "$d" "$(ratio "$a" "$d")x"
done
for what in manifest blob; do
    a="${CPUREQ["atcr $what"]}" d="${CPUREQ["distribution $what"]}"
    printf '%-22s %12s %12s %10s\n' "HEAD $what CPU us/req" "$a" "$d" "$(ratio "$a" "$d")x"
done
echo
echo "== HEAD requests/second, higher is better"
printf '%-22s %12s %12s %10s\n' measure atcr dist "atcr/dist"
for what in manifest blob; do
    printf '%-22s %12s %12s %10s\n' "HEAD $what req/s" "${RPS["atcr $what"]}" "${RPS["distribution $what"]}" \
        "$(ratio "${RPS["atcr $what"]}" "${RPS["distribution $what"]}")x"
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other work inflates wall-clock noise)"
