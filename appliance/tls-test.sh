#!/usr/bin/env bash
# TLS for a public host, end to end on loopback: a real ACME server (Debian's `pebble`), its
# DNS stub (pebble-challtestsrv: every name -> 127.0.0.1), Debian's `caddy` configured by the
# appliance's own appliance/files/atcr-tls-setup, and the real atcr binary behind it.
# Checks: a certificate for $NAME is issued via ACME and chains to pebble's root; GET
# https://$NAME/v2/ answers 200 through Caddy; a blob pushed over HTTPS reads back identical;
# http:// redirects to https:// (308) except /_health (200).
#   appliance/tls-test.sh                       # ATCR_BIN=... to pick the binary
# Binaries come from the caddy/pebble .debs unpacked under $WORK/tls/root (apt-get download;
# nothing is installed, so no caddy.service appears on the host). Not part of CI.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK=${WORK:-/opt/atcr-appliance}
T=$WORK/tls
NAME=${NAME:-registry.atcr.test}
HTTP_PORT=${HTTP_PORT:-18080}       # pebble's httpPort (HTTP-01) = Caddy's http_port
HTTPS_PORT=${HTTPS_PORT:-18443}     # pebble's tlsPort (TLS-ALPN-01) = Caddy's https_port
ACME_PORT=${ACME_PORT:-14000}
MGMT_PORT=${MGMT_PORT:-15100}
DNS_PORT=${DNS_PORT:-18053}
ATCR_PORT=${ATCR_PORT:-15500}
ADMIN_PORT=${ADMIN_PORT:-12019}
ATCR_BIN=${ATCR_BIN:-$REPO/target/release/atcr}
[ -x "$ATCR_BIN" ] || ATCR_BIN=$REPO/target/debug/atcr
[ -x "$ATCR_BIN" ] || { echo "no atcr binary: cargo build --release, or set ATCR_BIN"; exit 1; }

t0=$(date +%s)
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }

rm -rf "$T/run"; mkdir -p "$T/run" "$T/debs"
R=$T/run
if [ ! -x "$T/root/usr/bin/caddy" ] || [ ! -x "$T/root/usr/bin/pebble" ]; then
  (cd "$T/debs" && apt-get download caddy pebble >/dev/null 2>&1)
  for d in "$T"/debs/*.deb; do dpkg-deb -x "$d" "$T/root"; done
fi
CADDY=$T/root/usr/bin/caddy PEBBLE=$T/root/usr/bin/pebble CHALLSRV=$T/root/usr/bin/pebble-challtestsrv
echo "$("$CADDY" version | cut -d' ' -f1), pebble $(dpkg-deb -f "$T"/debs/pebble_*.deb Version), atcr $("$ATCR_BIN" version)"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }

# 1. A throw-away CA and a "localhost" certificate for pebble's own HTTPS (the ACME
#    directory); Caddy trusts it through acme_ca_root. (Debian's pebble ships no test certs.)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=atcr-tls-test-ca \
  -keyout "$R/ca.key" -out "$R/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$R/localhost.key" -out "$R/localhost.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$R/san.ext"
openssl x509 -req -in "$R/localhost.csr" -CA "$R/ca.pem" -CAkey "$R/ca.key" -CAcreateserial -days 2 \
  -extfile "$R/san.ext" -out "$R/localhost.pem" 2>/dev/null

# 2. DNS stub: every A query answers 127.0.0.1 (no AAAA), so pebble validates against us.
"$CHALLSRV" -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "127.0.0.1:$((DNS_PORT + 1))" -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$R/challsrv.log" 2>&1 &
PIDS+=($!)

# 3. pebble: ACME on :ACME_PORT, validating HTTP-01 on HTTP_PORT and TLS-ALPN-01 on HTTPS_PORT.
cat > "$R/pebble.json" <<JSON
{ "pebble": { "listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$R/localhost.pem", "privateKey": "$R/localhost.key",
  "httpPort": $HTTP_PORT, "tlsPort": $HTTPS_PORT, "ocspResponderURL": "", "externalAccountBindingRequired": false } }
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 "$PEBBLE" -config "$R/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" \
  >"$R/pebble.log" 2>&1 &
PIDS+=($!)
wait_port "$ACME_PORT" && ok "pebble ACME directory up on localhost:$ACME_PORT" || bad "pebble did not start"

# 4. atcr (plain HTTP on loopback, as in the appliance).
mkdir -p "$R/data"
# atcr rejects unknown ATCR_* variables (e.g. ATCR_BIN), so start it with only its own.
# This checks the TLS transport, so auth is off (auth through the proxy: tests/atproto-e2e.sh).
env $(env | sed -n 's/^\(ATCR_[A-Za-z0-9_]*\)=.*/-u \1/p') \
  ATCR_AUTH_MODE=none ATCR_SERVER_LISTEN=127.0.0.1:$ATCR_PORT ATCR_SERVER_DATA_DIR=$R/data ATCR_SERVER_PUBLIC_URL=https://$NAME:$HTTPS_PORT \
  "$ATCR_BIN" serve >"$R/atcr.log" 2>&1 &
PIDS+=($!)
wait_port "$ATCR_PORT" && ok "atcr up on 127.0.0.1:$ATCR_PORT" || bad "atcr did not start"

# 5. The appliance's Caddyfile generator, pointed at pebble; then Caddy.
CADDYFILE=$R/Caddyfile NO_SYSTEMCTL=1 ATCR_UPSTREAM=127.0.0.1:$ATCR_PORT \
  ATCR_ACME_CA=https://localhost:$ACME_PORT/dir ATCR_ACME_CA_ROOT=$R/ca.pem \
  ATCR_HTTP_PORT=$HTTP_PORT ATCR_HTTPS_PORT=$HTTPS_PORT PATH=$T/root/usr/bin:$PATH \
  sh "$HERE/files/atcr-tls-setup" "$NAME" admin@atcr.test
sed 's/^/    Caddyfile: /' "$R/Caddyfile"
ts=$(date +%s)
HOME=$R XDG_DATA_HOME=$R/caddy-data XDG_CONFIG_HOME=$R/caddy-config CADDY_ADMIN=127.0.0.1:$ADMIN_PORT \
  "$CADDY" run --adapter caddyfile --config "$R/Caddyfile" >"$R/caddy.log" 2>&1 &
PIDS+=($!)

# 6. Wait for the certificate, then check it chains to pebble's (per-run) root.
curl -s --cacert "$R/ca.pem" "https://localhost:$MGMT_PORT/roots/0" > "$R/pebble-root.pem"
curl -s --cacert "$R/ca.pem" "https://localhost:$MGMT_PORT/intermediates/0" > "$R/pebble-int.pem"
grep -q "BEGIN CERTIFICATE" "$R/pebble-root.pem" && ok "fetched pebble's root CA" || bad "no pebble root"
CURL=(curl -s --max-time 10 --cacert "$R/pebble-root.pem" --resolve "$NAME:$HTTPS_PORT:127.0.0.1" --resolve "$NAME:$HTTP_PORT:127.0.0.1")
code=000
for _ in $(seq 120); do
  code=$("${CURL[@]}" -o "$R/v2.body" -w '%{http_code}' "https://$NAME:$HTTPS_PORT/v2/" || true)
  [ "$code" = 200 ] && break
  sleep 1
done
if [ "$code" = 200 ]; then
  ok "GET https://$NAME:$HTTPS_PORT/v2/ -> 200 with a pebble-issued certificate (issued in $(( $(date +%s) - ts )) s)"
else
  bad "GET https://$NAME:$HTTPS_PORT/v2/ -> $code"; tail -5 "$R/atcr.log"; tail -5 "$R/caddy.log" | cut -c1-300; tail -10 "$R/pebble.log"
fi
echo | openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$NAME" 2>/dev/null \
  | openssl x509 -noout -subject -issuer -ext subjectAltName -dates 2>/dev/null | sed 's/^/    cert: /'
grep -o '"challenge_type":"[^"]*"' "$R/caddy.log" | sort -u | sed 's/^/    caddy: /' || true
grep -q "certificate obtained successfully" "$R/caddy.log" && ok "caddy log: certificate obtained successfully" \
  || bad "caddy log has no 'certificate obtained successfully'"
"${CURL[@]}" -D- -o /dev/null "https://$NAME:$HTTPS_PORT/v2/" | tr -d '\r' | grep -i -E '^(HTTP|docker-distribution-api-version)' | sed 's/^/    /'

# 7. A blob pushed over HTTPS through the proxy reads back identical (monolithic POST ?digest=).
head -c 3000000 /dev/urandom > "$R/blob"
dg=sha256:$(sha256sum "$R/blob" | cut -d' ' -f1)
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
  --data-binary @"$R/blob" "https://$NAME:$HTTPS_PORT/v2/alice.test/tls/blobs/uploads/?digest=$dg")
[ "$code" = 201 ] && ok "blob push over HTTPS -> 201" || bad "blob push over HTTPS -> $code"
"${CURL[@]}" -o "$R/blob.back" "https://$NAME:$HTTPS_PORT/v2/alice.test/tls/blobs/$dg"
cmp -s "$R/blob" "$R/blob.back" && ok "blob pulled over HTTPS is byte-identical (3 MB)" || bad "blob differs after HTTPS round trip"

# 8. Plain HTTP: /_health passes, the rest redirects to HTTPS.
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "http://$NAME:$HTTP_PORT/_health")
[ "$code" = 200 ] && ok "GET http://$NAME:$HTTP_PORT/_health -> 200 (not redirected)" || bad "http /_health -> $code"
loc=$("${CURL[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' "http://$NAME:$HTTP_PORT/v2/?x=1")
[ "$loc" = "308 https://$NAME:$HTTPS_PORT/v2/?x=1" ] && ok "GET http://$NAME:$HTTP_PORT/v2/?x=1 -> $loc" \
  || bad "http redirect: got '$loc'"

# 9. Negative: without pebble's root the certificate is not trusted.
code=$(curl -s --max-time 10 --resolve "$NAME:$HTTPS_PORT:127.0.0.1" -o /dev/null -w '%{http_code}' "https://$NAME:$HTTPS_PORT/v2/" || true)
[ "$code" = 000 ] && ok "without pebble's root CA the certificate is rejected (curl: 000)" || bad "untrusted cert accepted? $code"

echo "TLS_TEST_SECONDS=$(( $(date +%s) - t0 )) passed=$pass failed=$fail"
[ "$fail" = 0 ]
