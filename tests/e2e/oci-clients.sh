#!/usr/bin/env bash
# End-to-end: real OCI clients (skopeo, podman, buildah) against the real `atcr` binary.
#
#   bash tests/e2e/oci-clients.sh            # builds the release binary first
#   ATCR_BIN=/path/to/atcr bash tests/e2e/oci-clients.sh
#
# Offline: every test image is written by hand (tests/e2e/mkimage.py) or by
# `buildah from scratch`; the only network use is apt-get for missing tools.
# Prints "N passed, M failed" last; exit status 1 when anything failed.
# KEEP_TMP=1 keeps the temp dir (server log, layouts) for a post-mortem.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

# --- tools -----------------------------------------------------------------------------
need=()
for t in skopeo podman buildah jq curl python3 gzip; do
    command -v "$t" >/dev/null || need+=("$t")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- binary ----------------------------------------------------------------------------
if [[ -z "${ATCR_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --release --quiet)
    ATCR_BIN="$CARGO_TARGET_DIR/release/atcr"
fi
[[ -x "$ATCR_BIN" ]] || { echo "no executable at ATCR_BIN=$ATCR_BIN" >&2; exit 1; }

# --- temp dir, server, cleanup ---------------------------------------------------------
T="$(mktemp -d /tmp/atcr-e2e.XXXXXX)"
SERVER_PID=""
# vfs works everywhere (no overlay/fuse needed, e.g. inside a container); cgroupfs and
# file events avoid needing systemd.
PODMAN_OPTS=(--root "$T/storage" --runroot "$T/runroot" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file)
BUILDAH_OPTS=(--root "$T/storage" --runroot "$T/runroot" --storage-driver vfs)
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    [[ -f "$T/s3/pid" ]] && bash "$ROOT/tests/support/s3-test-server.sh" stop "$T/s3" >/dev/null 2>&1 || true
    # podman/buildah vfs storage may hold read-only dirs; let them remove it themselves first.
    podman "${PODMAN_OPTS[@]}" rmi -a -f >/dev/null 2>&1 || true
    buildah "${BUILDAH_OPTS[@]}" rm -a >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else chmod -R u+w "$T" 2>/dev/null || true; rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
REG="127.0.0.1:$PORT"

# Clean container-tools state: their own storage, an empty auth file, no user config.
mkdir -p "$T/containers"
echo '{"auths":{}}' >"$T/containers/auth.json"
export REGISTRY_AUTH_FILE="$T/containers/auth.json"
export XDG_RUNTIME_DIR="$T/xdg-run" XDG_CONFIG_HOME="$T/xdg-config"
mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME"
cat >"$T/containers/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "$REG"
insecure = true
EOF
export CONTAINERS_REGISTRIES_CONF="$T/containers/registries.conf"

# E2E_S3=1: S3 (s3s-fs, a real SigV4-checking server on loopback) is the only blob store,
# so every pull below goes through a presigned 307 redirect.
STORAGE_ENV=()
if [[ "${E2E_S3:-0}" == 1 ]]; then
    S3_SCRIPT="$ROOT/tests/support/s3-test-server.sh"
    eval "$(bash "$S3_SCRIPT" start "$T/s3")"
    STORAGE_ENV=(ATCR_STORAGE_BACKEND=s3 ATCR_STORAGE_S3_ENDPOINT="$S3_ENDPOINT" ATCR_STORAGE_S3_BUCKET=e2e
        ATCR_STORAGE_S3_ACCESS_KEY="$S3_AK" ATCR_STORAGE_S3_SECRET_KEY="$S3_SK" ATCR_STORAGE_S3_CREATE_BUCKET=true
        ATCR_STORAGE_S3_PART_SIZE_MIB=8)
    echo "== blob storage: S3 at $S3_ENDPOINT"
fi
# env -u: ATCR_BIN is ours, not a config key.
env -u ATCR_BIN ATCR_AUTH_MODE=none ATCR_SERVER_LISTEN="$REG" ATCR_SERVER_DATA_DIR="$T/data" RUST_LOG="${RUST_LOG:-atcr=debug}" \
    "${STORAGE_ENV[@]}" "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -fsS "http://$REG/_health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "atcr exited:"; cat "$T/atcr.log"; exit 1; }
    sleep 0.1
done

# --- check bookkeeping -----------------------------------------------------------------
PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
# check "what" cmd...: one counted check; the command's output is shown only on failure.
check() {
    local what="$1" _out; shift
    if _out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$_out" | tail -20 | sed 's/^/       /'; fi
}
eq() { [[ "$1" == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }; }
section() { echo; echo "== $*"; }

SK=(skopeo --insecure-policy)
# sha256sum of every blob in a layout, sorted by name: equal lists = byte-identical blobs.
blob_sums() { (cd "$1/blobs/sha256" && sha256sum -- * | sort -k2); }
# Every blob's content hashes to its file name.
blobs_self_consistent() { (cd "$1/blobs/sha256" && for f in *; do [[ "$(sha256sum <"$f" | cut -d' ' -f1)" == "$f" ]] || { echo "corrupt $f"; return 1; }; done); }
top_digest() { jq -r '.manifests[0].digest' "$1/index.json"; }
blob_of() { cat "$1/blobs/sha256/${2#sha256:}"; }

# push LAYOUT TAG REPO [--all]; pull back into OUT; compare everything.
roundtrip() {
    local src="$1" tag="$2" repo="$3" all="${4:-}" out="$T/pull-${3//\//_}-$2"
    local ref="docker://$REG/$repo:$tag" want
    want="$(top_digest "$src")"
    check "skopeo push $repo:$tag ${all}" "${SK[@]}" copy $all --dest-tls-verify=false "oci:$src:$tag" "$ref"
    check "skopeo inspect --raw is the pushed manifest, byte for byte" \
        cmp <("${SK[@]}" inspect --tls-verify=false --raw "$ref") <(blob_of "$src" "$want")
    check "HEAD manifest by tag gives the digest" \
        eq "$(curl -fsSI "http://$REG/v2/$repo/manifests/$tag" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')" "$want"
    check "skopeo pull $repo:$tag ${all}" "${SK[@]}" copy $all --src-tls-verify=false "$ref" "oci:$out:$tag"
    check "pulled manifest digest equals pushed" eq "$(top_digest "$out")" "$want"
    check "pulled blobs are byte-identical to pushed ($(ls "$src/blobs/sha256" | wc -l) blobs)" \
        cmp <(blob_sums "$src") <(blob_sums "$out")
    check "pulled blobs hash to their names" blobs_self_consistent "$out"
}

echo "atcr: $ATCR_BIN on $REG (log $T/atcr.log)"
echo "$(skopeo --version); $(podman --version); $(buildah --version | cut -d' ' -f1-3)"

# --- images ----------------------------------------------------------------------------
section "build test images offline"
python3 "$HERE/mkimage.py" "$T/img-single" v1 --layers 4096,300000,2000000 >/dev/null
python3 "$HERE/mkimage.py" "$T/img-multi" v1 --layers 5000,700000 --platforms amd64,arm64 >/dev/null
python3 "$HERE/mkimage.py" "$T/img-big" v1 --layers $((100 * 1024 * 1024)) >/dev/null
check "hand-made layouts are self-consistent" bash -c "$(declare -f blobs_self_consistent); for d in $T/img-*; do blobs_self_consistent \$d; done"
check "v2 base answers 200 with the API version header" \
    bash -c "curl -fsSI http://$REG/v2/ | grep -qi '^docker-distribution-api-version: registry/2.0'"

# --- skopeo ----------------------------------------------------------------------------
section "skopeo: single-platform image"
roundtrip "$T/img-single" v1 alice.test/app

section "skopeo: 2-platform image index (--all)"
roundtrip "$T/img-multi" v1 alice.test/multi --all
idx="$(blob_of "$T/img-multi" "$(top_digest "$T/img-multi")")"
for arch in amd64 arm64; do
    child="$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture==$a) | .digest' <<<"$idx")"
    out="$T/pull-multi-$arch"
    check "skopeo copy --override-arch $arch picks the $arch child" \
        "${SK[@]}" --override-arch "$arch" --override-os linux copy --src-tls-verify=false "docker://$REG/alice.test/multi:v1" "oci:$out:x"
    check "  $arch child digest $child" eq "$(top_digest "$out")" "$child"
    check "  $arch child config says $arch" eq "$(jq -r .architecture "$out/blobs/sha256/$(jq -r .config.digest "$out/blobs/sha256/${child#sha256:}" | cut -d: -f2)")" "$arch"
done
check "child manifest fetchable by digest" \
    cmp <(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/alice.test/multi/manifests/$child") <(blob_of "$T/img-multi" "$child")

section "skopeo: 100 MB layer"
t0=$SECONDS
roundtrip "$T/img-big" v1 alice.test/big
echo "  (100 MB push+pull took $((SECONDS - t0)) s)"

section "skopeo: copy between repositories on the same registry"
check "skopeo copy alice.test/app:v1 -> bob.test/copy:v2" \
    "${SK[@]}" copy --src-tls-verify=false --dest-tls-verify=false "docker://$REG/alice.test/app:v1" "docker://$REG/bob.test/copy:v2"
check "copied manifest digest unchanged" \
    eq "$("${SK[@]}" inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG/bob.test/copy:v2")" "$(top_digest "$T/img-single")"
check "tags/list of bob.test/copy" eq "$(curl -fsS "http://$REG/v2/bob.test/copy/tags/list" | jq -c .tags)" '["v2"]'
check "skopeo list-tags alice.test/app" eq "$("${SK[@]}" list-tags --tls-verify=false "docker://$REG/alice.test/app" | jq -c .Tags)" '["v1"]'

# --- podman ----------------------------------------------------------------------------
section "podman: pull, re-push under a new name"
PM=(podman "${PODMAN_OPTS[@]}")
src_ref="$REG/alice.test/app:v1"
check "podman pull $src_ref" "${PM[@]}" pull --tls-verify=false "$src_ref"
check "podman image has the pushed config (image ID)" \
    eq "sha256:$("${PM[@]}" image inspect --format '{{.ID}}' "$src_ref")" "$(jq -r .config.digest <(blob_of "$T/img-single" "$(top_digest "$T/img-single")"))"
check "podman pulled manifest digest" \
    eq "$("${PM[@]}" image inspect --format '{{.Digest}}' "$src_ref")" "$(top_digest "$T/img-single")"
check "podman push to carol.test/repushed:v1" \
    "${PM[@]}" push --tls-verify=false "$src_ref" "docker://$REG/carol.test/repushed:v1"
# podman re-creates the manifest from local storage; config and layers must be identical.
insp() { "${SK[@]}" inspect --tls-verify=false "$@"; }
check "re-pushed layers equal the original layers" \
    eq "$(insp "docker://$REG/carol.test/repushed:v1" | jq -c .Layers)" "$(insp "docker://$REG/alice.test/app:v1" | jq -c .Layers)"
check "re-pushed config digest equals the original" \
    eq "$(insp --config --raw "docker://$REG/carol.test/repushed:v1" | sha256sum | cut -d' ' -f1)" \
       "$(insp --config --raw "docker://$REG/alice.test/app:v1" | sha256sum | cut -d' ' -f1)"
check "re-pushed image pulls back with skopeo" \
    "${SK[@]}" copy --src-tls-verify=false "docker://$REG/carol.test/repushed:v1" "oci:$T/pull-repushed:v1"
check "podman pull of the index picks the local (amd64) child" \
    "${PM[@]}" pull --tls-verify=false "$REG/alice.test/multi:v1"
check "  ... and it is amd64" eq "$("${PM[@]}" image inspect --format '{{.Architecture}}' "$REG/alice.test/multi:v1")" amd64

# --- buildah ---------------------------------------------------------------------------
section "buildah: from scratch, commit, push"
BA=(buildah "${BUILDAH_OPTS[@]}")
head -c 1500000 /dev/urandom >"$T/payload.bin"
echo "hello from atcr e2e" >"$T/hello.txt"
if ctr="$("${BA[@]}" from scratch 2>"$T/buildah.err")"; then
    check "buildah copy" "${BA[@]}" copy "$ctr" "$T/payload.bin" "$T/hello.txt" /
    check "buildah config" "${BA[@]}" config --cmd /hello.txt --label io.atcr.e2e=1 "$ctr"
    check "buildah commit (oci format)" "${BA[@]}" commit --format oci "$ctr" localhost/e2e-scratch:v1
    check "buildah push to dave.test/scratch:v1" \
        "${BA[@]}" push --tls-verify=false localhost/e2e-scratch:v1 "docker://$REG/dave.test/scratch:v1"
    check "buildah image label visible through skopeo inspect" \
        eq "$(insp "docker://$REG/dave.test/scratch:v1" | jq -r '.Labels["io.atcr.e2e"]')" 1
    out="$T/pull-scratch"
    check "skopeo pull of the buildah image" "${SK[@]}" copy --src-tls-verify=false "docker://$REG/dave.test/scratch:v1" "oci:$out:v1"
    check "buildah layer contains the payload bytes" bash -c \
        "layer=\$(jq -r '.layers[0].digest' $out/blobs/sha256/\$(jq -r '.manifests[0].digest' $out/index.json | cut -d: -f2) | cut -d: -f2);
         mkdir -p $T/x && tar -xf $out/blobs/sha256/\$layer -C $T/x && cmp $T/x/payload.bin $T/payload.bin"
else
    bad "buildah from scratch: $(cat "$T/buildah.err")"
fi

# --- chunked upload --------------------------------------------------------------------
section "chunked upload (POST + PATCH Content-Range x N + PUT), 30 MB"
# The blob is a gzip tarball so an image can use it as a layer: build the image first,
# upload its big layer chunk by chunk, then push the image (skopeo must find the layer
# already there) and pull it back.
python3 "$HERE/mkimage.py" "$T/img-chunked" v1 --layers $((30 * 1024 * 1024)),1000 >/dev/null
big_layer="$(jq -r '.layers[0].digest' <(blob_of "$T/img-chunked" "$(top_digest "$T/img-chunked")"))"
echo "  chunked_push.py:"
if python3 "$HERE/chunked_push.py" "$REG" erin.test/chunked "$T/img-chunked/blobs/sha256/${big_layer#sha256:}" | sed 's/^/    /'; then
    ok "chunked upload protocol"
else
    bad "chunked upload protocol (see the FAIL lines above)"
fi
# --debug: the "Skipping blob ... (already present)" line only appears in debug output.
check "skopeo push of an image reusing the chunked blob" \
    bash -c "set -o pipefail; ${SK[*]} --debug copy --dest-tls-verify=false oci:$T/img-chunked:v1 docker://$REG/erin.test/chunked:v1 > $T/chunked-push.log 2>&1"
check "  ... skopeo skipped the layer that was already uploaded" grep -q "Skipping blob $big_layer (already present)" "$T/chunked-push.log"
check "  ... and the image pulls back byte-identical" \
    bash -c "${SK[*]} copy --src-tls-verify=false docker://$REG/erin.test/chunked:v1 oci:$T/pull-chunked:v1 && cmp <(cd $T/img-chunked/blobs/sha256 && sha256sum * | sort -k2) <(cd $T/pull-chunked/blobs/sha256 && sha256sum * | sort -k2)"

# --- server health ---------------------------------------------------------------------
section "server"
check "server still alive" kill -0 "$SERVER_PID"
check "no 5xx in the server log" bash -c "! grep -E 'request failed|panicked' $T/atcr.log"

echo
if ((FAIL)); then echo "server log tail:"; tail -30 "$T/atcr.log" | sed 's/^/  /'; fi
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
