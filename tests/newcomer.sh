#!/usr/bin/env bash
# A newcomer's first ten minutes, as README.md tells them, on a fresh clone and offline:
#
#   ATCR_BIN=target/debug/atcr bash tests/newcomer.sh      (builds it when unset)
#
# 1. runs itself in a private network namespace with nothing but loopback (no internet, no
#    DNS) and a private mount namespace (the Docker engine's mounts stay in it),
# 2. clones this repository (its committed HEAD) into a temp dir and works there,
# 3. takes the README's blocks marked `newcomer:serve`, `newcomer:docker` and
#    `newcomer:buildah` and runs them as written, except that `cargo run --release --` is the
#    prebuilt ATCR_BIN (CI builds once) and 127.0.0.1:5000 a free port (the machine's
#    5000 may be taken); docker is a private engine (tests/support/dockerd.sh), buildah and
#    skopeo get their own storage,
# 4. checks what the README promises: local mode warns at start, logs carry no terminal
#    colour codes when stderr is a file, every page shows the banner, the push shows in the
#    UI under its local owner with its platform, the pull gets the same image back;
# 5. starts the default mode (`serve` without --local, embedded defaults) and checks that the
#    errors on the way say what to do: a push without login, a handle that cannot resolve.
# Prints "N passed, M failed" and its wall time; exit 1 when anything failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if [[ -z "${NEWCOMER_OFFLINE:-}" ]]; then
    need=()
    for t in git curl jq python3 buildah skopeo unshare ip; do command -v "$t" >/dev/null || need+=("$t"); done
    command -v dockerd >/dev/null || need+=(docker.io)
    if ((${#need[@]})); then
        echo "installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        pkgs=("${need[@]/unshare/util-linux}")
        apt-get install -y -qq "${pkgs[@]/#ip/iproute2}" >/dev/null
    fi
    if [[ -z "${ATCR_BIN:-}" ]]; then
        (cd "$ROOT" && cargo build --quiet --bin atcr)
        ATCR_BIN="$CARGO_TARGET_DIR/debug/atcr"
    fi
    ATCR_BIN="$(cd "$(dirname "$ATCR_BIN")" && pwd)/$(basename "$ATCR_BIN")"
    export ATCR_BIN
    exec unshare --net --mount --propagation private env NEWCOMER_OFFLINE=1 bash "$0" "$@"
fi

STARTED=$(date +%s)
ip link set lo up
# atcr warns about ATCR_* variables it does not know: keep ours out of its environment.
ATCR_EXE="$ATCR_BIN"
unset ATCR_BIN
T="$(mktemp -d /tmp/atcr-nc.XXXXXX)"
SERVER_PID="" DEFAULT_PID="" DOCKERD_DIR="$T/d"
cleanup() {
    local rc=$?
    for p in $SERVER_PID $DEFAULT_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    bash "$ROOT/tests/support/dockerd.sh" stop "$DOCKERD_DIR" >/dev/null 2>&1 || true
    buildah rm -a >/dev/null 2>&1 || true
    buildah rmi -a -f >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $T"; else chmod -R u+w "$T" 2>/dev/null || true; rm -rf "$T"; fi
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
fails_with() {
    local pat="$1" _out; shift
    if _out="$("$@" 2>&1)"; then echo "unexpectedly succeeded: $_out"; return 1; fi
    grep -qiE -- "$pat" <<<"$_out" || { echo "$_out" | tail -8; return 1; }
}
section() { echo; echo "== $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "http://$1/_health" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

section "offline, on a fresh clone"
check "no route out of this network namespace" bash -c "! curl -sS -m 3 -o /dev/null https://crates.io 2>/dev/null"
check "git clone of this repository" git clone -q "$ROOT" "$T/atcr-rs"
cd "$T/atcr-rs"
echo "  clone of $(git log -1 --format='%h %s' | cut -c1-70)"
# The README block after the marker `<!-- newcomer:NAME -->`.
block() { awk -v m="<!-- newcomer:$1 -->" '$0==m{found=1; next} found && /^```sh/{grab=1; next} grab && /^```/{exit} grab{print}' README.md; }
SERVE="$(block serve)" DOCKER_STEPS="$(block docker)" BUILDAH_STEPS="$(block buildah)"
check "README has the serve, docker and buildah blocks" test -n "$SERVE" -a -n "$DOCKER_STEPS" -a -n "$BUILDAH_STEPS"
check "the serve block is one command: cargo run --release -- serve --local" \
    test "$SERVE" == "cargo run --release -- serve --local"

PORT="$(free_port)"
REG="127.0.0.1:$PORT"
as_run() { sed -e "s|cargo run --release -- |\"\$ATCR_EXE\" |" -e "s|127\.0\.0\.1:5000|$REG|g"; }

section "1. run the registry (local mode, embedded defaults, no config file)"
# The README's command; only the listen address is moved off 5000 (ATCR_SERVER_LISTEN).
# exec: the background job is atcr itself, so cleanup's kill reaches it (not just a subshell).
( export ATCR_SERVER_LISTEN="$REG"; eval "exec $(as_run <<<"$SERVE")" ) >"$T/serve.log" 2>&1 &
SERVER_PID=$!
check "atcr answers on $REG" wait_health "$REG"
check "the data is in ./data of the clone" test -f data/registry.redb -a -f data/index.db
check "a loud warning at start: authentication is off" grep -q "LOCAL MODE: authentication is OFF" "$T/serve.log"
check "  and who can push" grep -q "anyone who can reach $REG can push, overwrite and delete" "$T/serve.log"
check "plain log lines when stderr is a file (no terminal colour codes)" bash -c "! grep -q \$'\\x1b\\[' $T/serve.log"
for page in / /install /search "/r/nobody/nothing"; do
    check "banner on $page" bash -c "curl -sS http://$REG$page | grep -q 'Local mode: authentication is off'"
done

section "2. push and pull with docker, as the README says"
eval "$(bash "$ROOT/tests/support/dockerd.sh" start "$DOCKERD_DIR")"
export DOCKER_CONFIG="$T/docker-config"
mkdir -p "$DOCKER_CONFIG" "$T/work"
cd "$T/work"
echo "  $(docker version --format 'docker {{.Client.Version}} / engine {{.Server.Version}}')"
set +e
as_run <<<"$DOCKER_STEPS" | sed 's/^/    $ /'
(set -e; eval "$(as_run <<<"$DOCKER_STEPS")") >"$T/docker-steps.log" 2>&1
rc=$?
set -e
if ((rc == 0)); then ok "the README's docker steps (import, push, rmi, pull)"; else bad "the README's docker steps"; tail -20 "$T/docker-steps.log" | sed 's/^/       /'; fi
check "the pulled image has hello.txt" bash -c \
    "docker create --name hello-check $REG/alice/hello:1 /x >/dev/null && docker cp hello-check:/hello.txt - | tar -xO | grep -qx 'hello from atcr'"
DIGEST="$(curl -fsSI "http://$REG/v2/alice/hello/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')"
check "the pull records the pushed digest" bash -c "docker image inspect --format '{{range .RepoDigests}}{{.}} {{end}}' $REG/alice/hello:1 | grep -qF '$DIGEST'"

section "the push in the web UI, like any other"
check "the home page lists alice/hello" bash -c "curl -fsS http://$REG/ | grep -q 'href=\"/r/alice/hello\"'"
check "/r/alice/hello shows tag 1 with its platform" bash -c \
    "for i in \$(seq 50); do curl -fsS http://$REG/r/alice/hello | grep -q 'linux/amd64' && exit 0; sleep 0.1; done; exit 1"
check "  and the pull command for this host" bash -c "curl -fsS http://$REG/r/alice/hello | grep -qF 'docker pull $REG/alice/hello:1'"
check "/r/alice leads to alice's page" bash -c "curl -fsS -o /dev/null -w '%{http_code} %{redirect_url}' http://$REG/r/alice | grep -q '301 http://$REG/u/alice'"
check "search finds it" bash -c "curl -fsS 'http://$REG/search?q=hello' | grep -q '/r/alice/hello'"

section "or with buildah and skopeo"
mkdir -p "$T/containers"
cat >"$T/containers/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$T/containers/storage"
runroot = "$T/containers/run"
EOF
export CONTAINERS_STORAGE_CONF="$T/containers/storage.conf" REGISTRY_AUTH_FILE="$T/containers/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
set +e
(set -e; eval "$(as_run <<<"$BUILDAH_STEPS")") >"$T/buildah-steps.log" 2>&1
rc=$?
set -e
if ((rc == 0)); then ok "the README's buildah/skopeo steps"; else bad "the README's buildah/skopeo steps"; tail -20 "$T/buildah-steps.log" | sed 's/^/       /'; fi
check "skopeo pulled what buildah pushed" test -f hello-pulled/index.json

section "the default mode (ATProto sign-in), offline: errors say what to do"
cd "$T/atcr-rs"
DPORT="$(free_port)"
DREG="127.0.0.1:$DPORT"
ATCR_SERVER_LISTEN="$DREG" ATCR_SERVER_DATA_DIR="$T/data-default" "$ATCR_EXE" serve >"$T/default.log" 2>&1 &
DEFAULT_PID=$!
check "atcr serve (no --local, no config) answers on $DREG" wait_health "$DREG"
check "no local-mode warning in the default mode" bash -c "! grep -q 'LOCAL MODE' $T/default.log"
docker tag "$REG/alice/hello:1" "$DREG/alice.bsky.social/hello:1"
check "docker push without login says: log in first with docker login" \
    fails_with "log in first with .docker login $DREG" docker push "$DREG/alice.bsky.social/hello:1"
check "docker login with a handle that cannot resolve says why, and mentions --local" \
    fails_with "handle alice.bsky.social could not be resolved.*atcr serve --local" \
    docker login -u alice.bsky.social -p not-an-app-password "$DREG"
check "skopeo says the same (not just 'invalid username/password')" \
    fails_with "could not be resolved" skopeo inspect --tls-verify=false --creds alice.bsky.social:x "docker://$DREG/alice.bsky.social/hello:1"

echo
echo "newcomer path took $(($(date +%s) - STARTED)) s"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
