#!/usr/bin/env bash
# Boot the image built by appliance/build.sh under QEMU (TCG by default) with a NoCloud seed
# (cloud-init/nocloud.yaml) and check from the host:
#   - http://127.0.0.1:15000/v2/ and /_health answer 200 (hostfwd 15000 -> guest 5000)
#   - skopeo pushes a small OCI image through the forwarded port and pulls it back with the
#     same manifest digest and byte-identical blobs, also after `systemctl restart atcr`
#   - cloud-init wrote /etc/atcr/config.toml (0600) and enabled the service; the unit is
#     Type=notify with a watchdog and reported READY with its status line; journal entries
#     (native protocol) carry priorities, request fields and no ANSI colours; no failed units;
#     the root partition was grown
#   - the unit settings: Restart=on-failure with RestartPreventExitStatus=2, and a bad config
#     really stops at exit 2 without restarts; journald's fixed limits are in effect after the
#     disk grew; unattended security upgrades are on; the image's apt sources are Debian's
#   - atcr-backup.timer is enabled and scheduled; its service takes an online backup to the
#     configured target (0700), which `atcr restore --verify-only` accepts; `atcr restore
#     --force` of it with atcr stopped gives a server that starts and serves the image
# The guest network is "restrict=on": it can reach nothing but the forwarded ports.
#   sudo appliance/boot-test.sh                 # TCG, SeaBIOS
#   sudo appliance/boot-test.sh --firmware uefi --accel kvm
#   --image / IMG (default $OUT/atcr-appliance.qcow2), --work / WORK, --accel / ACCEL (tcg|kvm),
#   --firmware / FIRMWARE (bios|uefi), --timeout / TIMEOUT (900 s); HTTP_PORT, SSH_PORT, MEM, SMP;
#   --keep 1 / KEEP=1 leaves the VM running afterwards (prints how to ssh in and stop it).
# Slow suite (3-6 min under TCG), not part of CI. Exit status 0 only when every check passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/common.sh"
parse_settings "$0" "image=IMG work=WORK accel=ACCEL firmware=FIRMWARE timeout=TIMEOUT keep=KEEP" \
  "IMG WORK OUT NAME ACCEL FIRMWARE TIMEOUT HTTP_PORT SSH_PORT MEM SMP CPU KEEP" "$@"
WORK=${WORK:-/opt/atcr-appliance}
OUT=${OUT:-$WORK/out}
NAME=${NAME:-atcr-appliance}
IMG=${IMG:-$OUT/$NAME.qcow2}
ACCEL=${ACCEL:-tcg}
FIRMWARE=${FIRMWARE:-bios}
RUN=$WORK/run-$ACCEL-$FIRMWARE
HTTP_PORT=${HTTP_PORT:-15000}
SSH_PORT=${SSH_PORT:-15022}
TIMEOUT=${TIMEOUT:-900}
MEM=${MEM:-1024}
SMP=${SMP:-2}
[ -f "$IMG" ] || { echo "no image at $IMG: run sudo appliance/build.sh first (or --image)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (installs QEMU when missing)"; exit 1; }

# QEMU: the distro package, or (when the host's qemu-utils comes from backports and Breaks
# qemu-system-common 7.2) the bookworm .debs unpacked under $WORK/qemu, no dpkg involved.
QEMU=$(command -v qemu-system-x86_64 || true); QEMU_L=()
if [ -z "$QEMU" ]; then
  if ! apt_get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1; then
    if [ ! -x "$WORK/qemu/usr/bin/qemu-system-x86_64" ]; then
      mkdir -p "$WORK/debs" "$WORK/qemu"
      (cd "$WORK/debs" && apt-get download qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu ovmf)
      for d in "$WORK"/debs/*.deb; do dpkg-deb -x "$d" "$WORK/qemu"; done
      apt_get install -y -qq --no-install-recommends \
        libcapstone4 libfdt1 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 libpixman-1-0 \
        libaio1 liburing2 libfuse3-3 libnuma1 libjpeg62-turbo libpng16-16 libsasl2-2 libbpf1 >/dev/null
    fi
    QEMU=$WORK/qemu/usr/bin/qemu-system-x86_64
    QEMU_L=(-L "$WORK/qemu/usr/share/qemu" -L "$WORK/qemu/usr/share/seabios" -L "$WORK/qemu/usr/lib/ipxe/qemu")
  else
    QEMU=$(command -v qemu-system-x86_64)
  fi
fi
command -v cloud-localds >/dev/null || apt_get install -y -qq --no-install-recommends cloud-image-utils >/dev/null
command -v skopeo >/dev/null || apt_get install -y -qq --no-install-recommends skopeo >/dev/null
command -v jq >/dev/null || apt_get install -y -qq --no-install-recommends jq >/dev/null
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

rm -rf "$RUN"; mkdir -p "$RUN"
ssh-keygen -q -t ed25519 -N '' -C atcr-boot-test -f "$RUN/id_ed25519"
sed "s|@SSH_PUBKEY@|$(cat "$RUN/id_ed25519.pub")|" "$REPO/cloud-init/nocloud.yaml" > "$RUN/user-data"
printf 'instance-id: atcr-test-%s\nlocal-hostname: atcr-test\n' "$(date +%s)" > "$RUN/meta-data"
cloud-localds "$RUN/seed.iso" "$RUN/user-data" "$RUN/meta-data"
# Throw-away overlay, 2 GiB bigger than the image so growpart/resizefs have work to do.
virt=$(qemu-img info "$IMG" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p')
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG" "$RUN/disk.qcow2" $((virt + 2*1024*1024*1024))

# KVM: on a nested host (Firecracker VM) plain "-cpu host" aborts with "failed to set MSR
# 0x10a"; host,-arch-capabilities starts, but there Linux still hung after "Probing EDD", so
# ACCEL=kvm is for CI runners with real KVM. TCG (default) is the proven path.
case "$ACCEL" in
  kvm) ACC=(-accel kvm -cpu "${CPU:-host,-arch-capabilities}") ;;
  *)   ACC=(-accel tcg,thread=multi -cpu "${CPU:-max}") ;;
esac
FW=()
if [ "$FIRMWARE" = uefi ]; then   # OVMF without Secure Boot; pflash vars copy per run
  for d in /usr/share/OVMF "$WORK/qemu/usr/share/OVMF"; do [ -f "$d/OVMF_CODE_4M.fd" ] && OVMF=$d; done
  [ -n "${OVMF:-}" ] || apt_get install -y -qq --no-install-recommends ovmf >/dev/null
  OVMF=${OVMF:-/usr/share/OVMF}
  cp "$OVMF/OVMF_VARS_4M.fd" "$RUN/OVMF_VARS.fd"
  FW=(-drive if=pflash,format=raw,readonly=on,file="$OVMF/OVMF_CODE_4M.fd"
      -drive if=pflash,format=raw,file="$RUN/OVMF_VARS.fd")
fi
t0=$(date +%s.%N)
"$QEMU" "${QEMU_L[@]}" -machine pc "${ACC[@]}" "${FW[@]}" -smp "$SMP" -m "$MEM" \
  -drive file="$RUN/disk.qcow2",if=virtio,format=qcow2 \
  -drive file="$RUN/seed.iso",if=virtio,format=raw,readonly=on \
  -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$HTTP_PORT-:5000,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22 \
  -device virtio-net-pci,netdev=n0 \
  -nographic -serial file:"$RUN/serial.log" -monitor none \
  </dev/null >"$RUN/qemu.out" 2>&1 &
QPID=$!
echo "$QPID" > "$RUN/qemu.pid"
cleanup() { kill "$QPID" 2>/dev/null || true; }
trap cleanup EXIT
el() { echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f'; }

echo "qemu pid $QPID ($ACCEL, $FIRMWARE), serial log $RUN/serial.log"
http_ok=""
while :; do
  kill -0 "$QPID" 2>/dev/null || { echo "qemu exited"; cat "$RUN/qemu.out"; exit 1; }
  if code=$(curl -s -o "$RUN/v2.body" -w '%{http_code}' --max-time 3 "http://127.0.0.1:$HTTP_PORT/v2/") \
     && [ "$code" = 200 ]; then http_ok=$(el); break; fi
  [ "$(el | cut -d. -f1)" -lt "$TIMEOUT" ] || { echo "TIMEOUT waiting for HTTP"; tail -40 "$RUN/serial.log"; exit 1; }
  sleep 1
done
echo "BOOT_TO_HTTP_SECONDS=$http_ok"
curl -si "http://127.0.0.1:$HTTP_PORT/v2/" | tr -d '\r'; echo
while ! grep -q "ATCR-CHECK cloud-init final" "$RUN/serial.log"; do
  [ "$(el | cut -d. -f1)" -lt "$TIMEOUT" ] || { echo "TIMEOUT waiting for cloud-init final"; exit 1; }
  sleep 2
done
echo "CLOUD_INIT_FINAL_SECONDS=$(el)"
grep -a "ATCR-CHECK" "$RUN/serial.log" | sed 's/^/serial: /'

SSH=(ssh -q -i "$RUN/id_ed25519" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o ConnectTimeout=10 ops@127.0.0.1)
check "cloud-init wrote the config and enabled the service (serial markers)" \
  grep -aq "ATCR-CHECK service: enabled active" "$RUN/serial.log"
check "atcr-tls-setup generates a Caddyfile that caddy validates, in the image" \
  grep -aq "ATCR-CHECK tls-setup: ok" "$RUN/serial.log"
check "GET /_health -> 200" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/_health")" = 200

# skopeo round trip through the forwarded port: a hand-made OCI layout (2 gzip layers).
REG=127.0.0.1:$HTTP_PORT
SK=(skopeo --insecure-policy)
python3 "$REPO/tests/e2e/mkimage.py" "$RUN/img" 1 --layers 4096,300000 >/dev/null
want=$(jq -r '.manifests[0].digest' "$RUN/img/index.json")
roundtrip() { # $1 = label, $2 = output layout
  local ref="docker://$REG/alice.test/app:1" out=$2
  check "skopeo push oci:img:1 -> $ref ($1)" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$RUN/img:1" "$ref"
  check "skopeo pull $ref -> oci ($1)" "${SK[@]}" copy -q --src-tls-verify=false "$ref" "oci:$out:1"
  local got; got=$(jq -r '.manifests[0].digest' "$out/index.json" 2>/dev/null || true)
  check "pulled manifest digest = pushed ($got) ($1)" test "$got" = "$want"
  local b same=1
  for b in "$RUN"/img/blobs/sha256/*; do cmp -s "$b" "$out/blobs/sha256/$(basename "$b")" || same=0; done
  check "every pulled blob is byte-identical ($(ls "$RUN"/img/blobs/sha256 | wc -l) blobs) ($1)" test "$same" = 1
}
roundtrip "first boot" "$RUN/pulled1"

G() { "${SSH[@]}" "$@" 2>/dev/null; }
check "config.toml is root:root 0600" test "$(G 'sudo stat -c "%U:%G %a" /etc/atcr/config.toml')" = "root:root 600"
has() { grep -q -- "$2" <<<"$1"; }   # has TEXT REGEX
check "cloud-init status: done" has "$(G 'cloud-init status')" "status: done"
props=$(G 'systemctl show -p Type -p WatchdogUSec -p StatusText -p ActiveState -p User -p NRestarts atcr.service')
echo "$props" | sed 's/^/    guest: /'
check "unit is Type=notify, watchdog 30s, READY with status line" \
  sh -c 'echo "$1" | grep -qx Type=notify && echo "$1" | grep -qx WatchdogUSec=30s && echo "$1" | grep -q "^StatusText=listening on" && echo "$1" | grep -qx ActiveState=active' _ "$props"
sleep_s=35  # > WatchdogSec: the service must still be up (pings arrive every 15 s)
echo "    waiting ${sleep_s}s (longer than WatchdogSec) ..."; sleep "$sleep_s"
props=$(G 'systemctl show -p ActiveState -p NRestarts atcr.service')
check "still active after WatchdogSec, no watchdog restart" \
  sh -c 'echo "$1" | grep -qx ActiveState=active && echo "$1" | grep -qx NRestarts=0' _ "$props"
G 'sudo journalctl -u atcr.service -o json --no-pager' > "$RUN/journal.json"
# atcr writes to journald over the native protocol (systemd-journal-logger): INFO is
# PRIORITY 5 there, and each request's entry carries the request span as journal fields.
check "journal: 'atcr listening' at PRIORITY 5 (native protocol)" \
  test "$(jq -r 'select((.MESSAGE|tostring)|test("atcr listening")) | .PRIORITY' "$RUN/journal.json" | head -n1)" = 5
check "journal: the manifest PUT has REQUEST_ID, ROUTE, METHOD, REPOSITORY, STATUS fields" \
  test -n "$(jq -r 'select(.ROUTE == "oci_manifest" and .METHOD == "PUT" and .STATUS == "201"
    and .REPOSITORY == "alice.test/app" and (.REQUEST_ID | tostring | length) == 16) | .MESSAGE' "$RUN/journal.json")"
check "journal: the blob upload PUT has its DIGEST field" \
  test -n "$(jq -r 'select(.ROUTE == "oci_upload" and .STATUS == "201" and (.DIGEST | tostring | startswith("sha256:"))) | .DIGEST' "$RUN/journal.json")"
# journald stores a MESSAGE holding control characters (ANSI colours) as a byte array.
check "journal: no ANSI colours, no timestamp of our own" \
  test -z "$(jq -r 'select(._COMM == "atcr") | .MESSAGE | select(type != "string" or test("\u001b|^ *[0-9]{4}-[0-9]{2}-[0-9]{2}T"))' "$RUN/journal.json")"

# Graceful restart: STOPPING=1, drain, READY again; the data survives.
t_r=$(date +%s.%N)
G 'sudo systemctl restart atcr.service'
check "systemctl restart atcr.service: active again (took $(echo "$(date +%s.%N) - $t_r" | bc | xargs printf '%.1f') s)" \
  test "$(G 'systemctl is-active atcr.service')" = active
check "journal shows the SIGTERM drain (shutting down ... stopped)" \
  sh -c 'echo "$1" | grep -q "shutting down: finishing in-flight requests" && echo "$1" | grep -q "stopped"' _ \
  "$(G 'sudo journalctl -u atcr.service -o cat --no-pager')"
check "pull after restart: manifest digest = pushed" sh -c \
  '"$@" && test "$(jq -r ".manifests[0].digest" "$0/index.json")" = "'"$want"'"' "$RUN/pulled2" \
  "${SK[@]}" copy -q --src-tls-verify=false "docker://$REG/alice.test/app:1" "oci:$RUN/pulled2:1"
check "no failed units" test -z "$(G 'systemctl --failed --no-legend --plain')"

# Unit settings: a configuration error (exit 2) is not retried; anything else is.
props=$(G 'systemctl show -p Restart -p RestartPreventExitStatus -p RestartUSec atcr.service')
echo "$props" | sed 's/^/    guest: /'
check "atcr.service: Restart=on-failure, RestartPreventExitStatus=2, RestartSec=5s" \
  sh -c 'echo "$1" | grep -qx Restart=on-failure && echo "$1" | grep -qx "RestartPreventExitStatus=2" && echo "$1" | grep -qx RestartUSec=5s' _ "$props"
# journald: fixed limits (50-atcr.conf), and what journald computes now that the disk has grown.
G 'sudo systemctl restart systemd-journald'
jconf=$(G 'systemd-analyze cat-config systemd/journald.conf')
jline=$(G 'sudo journalctl -b -u systemd-journald -o cat --no-pager | grep "System Journal" | tail -n1')
echo "    guest: $jline"
check "journald.conf.d/50-atcr.conf in effect: SystemMaxUse=1G, SystemKeepFree=1G; journald reports max 1.0G" \
  sh -c 'echo "$1" | grep -qx SystemMaxUse=1G && echo "$1" | grep -qx SystemKeepFree=1G && echo "$2" | grep -q "max 1.0G"' _ "$jconf" "$jline"
# Unattended security upgrades.
uu=$(G 'apt-config dump APT::Periodic; systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer; dpkg-query -W -f="\${Status}\n" unattended-upgrades; grep -h "^URIs:" /etc/apt/sources.list.d/*.sources')
echo "$uu" | sed 's/^/    guest: /'
check "unattended upgrades on: APT::Periodic::Unattended-Upgrade \"1\", apt-daily(-upgrade).timer enabled, package installed" \
  sh -c 'echo "$1" | grep -qx "APT::Periodic::Unattended-Upgrade \"1\";" && echo "$1" | grep -qx "APT::Periodic::Update-Package-Lists \"1\";" && [ "$(echo "$1" | grep -cx enabled)" = 2 ] && echo "$1" | grep -qx "install ok installed"' _ "$uu"
check "image apt sources are deb.debian.org (debian, debian-security)" \
  sh -c 'echo "$1" | grep -qx "URIs: http://deb.debian.org/debian" && echo "$1" | grep -qx "URIs: http://deb.debian.org/debian-security"' _ "$uu"

# The daily backup: timer on and scheduled; its service backs up online to the target in
# nocloud.yaml ([backup] target = "/var/backups/atcr").
tprops=$(G 'systemctl show -p UnitFileState -p ActiveState -p SubState -p NextElapseUSecRealtime -p Persistent atcr-backup.timer')
echo "$tprops" | sed 's/^/    guest: /'
check "atcr-backup.timer enabled, waiting, persistent, next run scheduled" \
  sh -c 'echo "$1" | grep -qx UnitFileState=enabled && echo "$1" | grep -qx SubState=waiting && echo "$1" | grep -qx Persistent=yes && echo "$1" | grep -q "^NextElapseUSecRealtime=.\+"' _ "$tprops"
G 'sudo systemctl start atcr-backup.service' || true
bprops=$(G 'systemctl show -p Result -p ExecMainStatus atcr-backup.service; sudo journalctl -u atcr-backup.service -o cat --no-pager; sudo sh -c "stat -c \"%a %U %n\" /var/backups/atcr/atcr-backup-*"' || true)
echo "$bprops" | sed 's/^/    guest: /'
check "systemctl start atcr-backup: success, online snapshot, backup dir 0700 root" \
  sh -c 'echo "$1" | grep -qx Result=success && echo "$1" | grep -q "online snapshot" && echo "$1" | grep -q "^700 root /var/backups/atcr/atcr-backup-"' _ "$bprops"
bk=$(G 'sudo sh -c "ls -d /var/backups/atcr/atcr-backup-* | tail -n1"' || true)
check "atcr restore --verify-only $bk" \
  sh -c '"$@" | grep -q "sizes and SHA-256 match"' _ "${SSH[@]}" "sudo atcr restore --config /etc/atcr/config.toml --verify-only $bk"
# Restore with the service stopped (files owned by the service's dynamic user afterwards).
rout=$(G "sudo systemctl stop atcr.service && sudo atcr restore --config /etc/atcr/config.toml --force $bk; sudo systemctl start atcr.service; systemctl is-active atcr.service" || true)
echo "$rout" | sed 's/^/    guest: /'
check "atcr restore --force with atcr stopped, then atcr starts on the restored data" \
  sh -c 'echo "$1" | grep -q "restored /var/lib/atcr/registry.redb" && echo "$1" | tail -n1 | grep -qx active' _ "$rout"
check "pull after the restore: manifest digest = pushed" sh -c \
  '"$@" && test "$(jq -r ".manifests[0].digest" "$0/index.json")" = "'"$want"'"' "$RUN/pulled3" \
  "${SK[@]}" copy -q --src-tls-verify=false "docker://$REG/alice.test/app:1" "oci:$RUN/pulled3:1"

# A configuration error stops the service with status 2 and no restart loop.
G 'sudo mkdir -p /run/systemd/system/atcr.service.d && printf "[Service]\nEnvironment=ATCR_HOLD_OWNER_DID=did:plc:REPLACE-ME\n" | sudo tee /run/systemd/system/atcr.service.d/bad.conf >/dev/null && sudo systemctl daemon-reload && sudo systemctl restart atcr.service' || true
sleep 12   # > RestartSec: a restart would have happened by now
badprops=$(G 'systemctl show -p ActiveState -p Result -p ExecMainStatus -p NRestarts atcr.service; sudo journalctl -u atcr.service -n 8 -o cat --no-pager' || true)
echo "$badprops" | sed 's/^/    guest: /'
check "bad config: failed with exit status 2, not restarted, the journal names the key" \
  sh -c 'echo "$1" | grep -qx ActiveState=failed && echo "$1" | grep -qx ExecMainStatus=2 && echo "$1" | grep -qx NRestarts=0 && echo "$1" | grep -q "hold.owner_did"' _ "$badprops"
G 'sudo rm -r /run/systemd/system/atcr.service.d && sudo systemctl daemon-reload && sudo systemctl reset-failed atcr.service && sudo systemctl start atcr.service' || true
check "fixed config: active again" test "$(G 'systemctl is-active atcr.service')" = active

"${SSH[@]}" 'set -x; sudo cat /etc/atcr/config.toml | grep -v "^ *#" | grep .
  cloud-init status --long; sudo cloud-init analyze show | tail -n 3
  systemctl status atcr.service --no-pager | head -n 12
  ps -o user,pid,rss,cmd -C atcr; sudo ls -ld /var/lib/private/atcr /var/lib/atcr
  sudo systemd-analyze security atcr.service --no-pager | tail -n 1
  sudo journalctl -u atcr.service -o short-monotonic --no-pager | tail -n 8
  systemd-analyze || true; systemd-analyze blame | head -n 8
  test -d /sys/firmware/efi && echo "booted via UEFI" || echo "booted via BIOS"
  sudo sfdisk -l /dev/vda | grep -E "^/dev|Disklabel"; grep 127.0.1.1 /etc/hosts
  df -h /; uname -r; free -m | head -2; cat /usr/local/share/atcr/VERSION
  sudo grep -E "WARNING|ERROR|Traceback" /var/log/cloud-init.log | cut -c1-200' 2>&1 | sed 's/^/guest: /'

trap - EXIT
if [ "${KEEP:-0}" = 1 ]; then
  echo "VM left running (pid $QPID): ssh -i $RUN/id_ed25519 -p $SSH_PORT ops@127.0.0.1; registry at 127.0.0.1:$HTTP_PORT"
  echo "stop it: ssh -i $RUN/id_ed25519 -p $SSH_PORT ops@127.0.0.1 sudo poweroff   (or kill $QPID)"
else
  "${SSH[@]}" 'sudo systemctl poweroff' || true
  for _ in $(seq 60); do kill -0 "$QPID" 2>/dev/null || break; sleep 1; done
  kill -0 "$QPID" 2>/dev/null && { echo "qemu still running, killing pid $QPID"; kill "$QPID"; }
fi
echo "BOOT_TO_HTTP_SECONDS=$http_ok TOTAL_SECONDS=$(el) passed=$pass failed=$fail ($ACCEL, $FIRMWARE)"
[ "$fail" = 0 ]
