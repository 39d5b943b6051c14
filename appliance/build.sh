#!/usr/bin/env bash
# Build a bootable Debian 12 (bookworm) cloud image for the atcr appliance: the release
# binary, systemd/atcr.service (+ the daily atcr-backup.timer), Caddy for TLS
# (appliance/files/atcr-tls-setup), cloud-init, unattended security upgrades.
#
#   sudo appliance/build.sh                                  # runs cargo build --release first
#   sudo appliance/build.sh --bin target/release/atcr --compress "gz xz"
#   sudo appliance/build.sh ATCR_BIN=target/release/atcr COMPRESS="gz xz"   # the same
#   appliance/build.sh --help
#
# Settings are options or VAR=value arguments; environment variables of the same names work
# too, but sudo drops variables written in front of it (`COMPRESS=gz sudo appliance/build.sh`
# loses COMPRESS; `sudo COMPRESS=gz appliance/build.sh` keeps it where sudoers allows).
#   --bin PATH        ATCR_BIN       the atcr binary (default: cargo build --release --locked,
#                                    as $SUDO_USER under sudo)
#   --compress LIST   COMPRESS       extra outputs: gz (UpCloud), xz or zst (Hetzner): "gz xz"
#   --out DIR         OUT            output directory (default: $WORK/out)
#   --work DIR        WORK           work directory (default: /opt/atcr-appliance)
#   --mirror M        MIRROR         apt source for the build: URI, "deb ..." line or sources
#                                    file (default: /etc/apt/sources.list.d/debian.sources)
#   --image-sources F IMAGE_SOURCES  deb822 file shipped as the image's apt sources (default:
#                                    deb.debian.org bookworm, bookworm-updates, -security)
#   --layout L        LAYOUT         hybrid (GPT, BIOS + UEFI; default) or mbr (BIOS only)
#   --disk-mb N       DISK_MB        virtual disk size (2048; growpart grows it on first boot)
#   STRIP=0 ships the binary with its line tables; MAX_USED_MB (600) fails a bloated image.
# Waits for the host's apt/dpkg lock when another apt runs. Ends with a list of what it made.
#
# Slow suite (2-5 min on 2 cores), not part of CI.
#
# No loop devices, no mounts of the image, no nbd/kvm, no network except the apt mirror(s):
#   mmdebstrap -> rootfs directory -> mkfs.ext4 -d -> dd into a partitioned raw file
#   -> GRUB i386-pc boot.img + core.img written with dd (what grub-install does, minus probing)
#   LAYOUT=hybrid (default): GPT with BIOS-boot + EFI system partition + root; boots on SeaBIOS
#     and on UEFI (removable-media path EFI/BOOT/BOOTX64.EFI, no NVRAM entry, no Secure Boot).
#   LAYOUT=mbr: MBR with one partition, BIOS only.
# Outputs: $OUT/atcr-appliance.raw (sparse), $OUT/atcr-appliance.qcow2 (compressed), with
#   COMPRESS: .raw.gz (UpCloud storage import), .raw.xz / .raw.zst (Hetzner, hcloud-upload-image),
#   and SHA256SUMS. Fails when the raw image uses MAX_USED_MB or more.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/common.sh"
parse_settings "$0" \
  "bin=ATCR_BIN compress=COMPRESS out=OUT work=WORK mirror=MIRROR image-sources=IMAGE_SOURCES layout=LAYOUT disk-mb=DISK_MB" \
  "ATCR_BIN COMPRESS OUT WORK MIRROR IMAGE_SOURCES LAYOUT DISK_MB NAME STRIP MAX_USED_MB SUITE" "$@"
WORK=${WORK:-/opt/atcr-appliance}
OUT=${OUT:-$WORK/out}
ROOT=$WORK/rootfs
SUITE=${SUITE:-bookworm}
# Any mmdebstrap MIRROR form: a URI, a "deb ..." line, or a (deb822) sources file.
MIRROR=${MIRROR:-/etc/apt/sources.list.d/debian.sources}
[ -e "$MIRROR" ] || [[ "$MIRROR" == *"://"* || "$MIRROR" == deb* ]] || MIRROR=/etc/apt/sources.list
IMAGE_SOURCES=${IMAGE_SOURCES:-}
DISK_MB=${DISK_MB:-2048}          # virtual disk size; cloud-init growpart grows it on the provider
NAME=${NAME:-atcr-appliance}
ATCR_BIN=${ATCR_BIN:-}
COMPRESS=${COMPRESS:-}             # space- or comma-separated: gz zst xz
COMPRESS=${COMPRESS//,/ }
MAX_USED_MB=${MAX_USED_MB:-600}
LAYOUT=${LAYOUT:-hybrid}           # hybrid (GPT, BIOS+UEFI) | mbr (BIOS only)
for c in $COMPRESS; do
  case $c in gz|zst|xz) ;; *) echo "--compress: unknown '$c' (gz, zst, xz)"; exit 2 ;; esac
done
case $LAYOUT in hybrid|mbr) ;; *) echo "--layout: hybrid or mbr, not '$LAYOUT'"; exit 2 ;; esac
if [ -n "$ATCR_BIN" ]; then
  ATCR_BIN=$(realpath -e "$ATCR_BIN" 2>/dev/null) || { echo "--bin: no such file"; exit 2; }
fi
if [ -n "$IMAGE_SOURCES" ]; then
  IMAGE_SOURCES=$(realpath -e "$IMAGE_SOURCES" 2>/dev/null) || { echo "--image-sources: no such file"; exit 2; }
fi

[ "$(id -u)" = 0 ] || { echo "run as root (mmdebstrap root mode + chown in mkfs)"; exit 1; }
t_start=$(date +%s)
stamp() { echo "[build +$(( $(date +%s) - t_start ))s] $*"; }

# 1. Host tools (Debian/Ubuntu). qemu-utils only for qemu-img convert.
need=()
for p in mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs sfdisk:fdisk qemu-img:qemu-utils xz:xz-utils \
         mkfs.vfat:dosfstools mcopy:mtools zstd:zstd objcopy:binutils; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  stamp "installing host packages: ${need[*]}"
  apt_get update -qq && apt_get install -y -qq --no-install-recommends "${need[@]}"
fi

# 2. The service binary: the release build of this checkout unless ATCR_BIN is given. It must
#    run on bookworm's glibc 2.36 (true when built on Debian 12, checked below) or be static.
if [ -z "$ATCR_BIN" ]; then
  # Under sudo, build as the invoking user: their toolchain, and target/ stays theirs.
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    stamp "cargo build --release --locked (as $SUDO_USER)"
    sudo -u "$SUDO_USER" -H bash -lc 'cd "$1" && cargo build -q --release --locked' _ "$REPO" \
      || { echo "cargo build as $SUDO_USER failed: build first (cargo build --release), then --bin target/release/atcr"; exit 1; }
  else
    command -v cargo >/dev/null \
      || { echo "no cargo here: build first (cargo build --release), then --bin target/release/atcr"; exit 1; }
    stamp "cargo build --release --locked"
    cargo build -q --release --locked --manifest-path "$REPO/Cargo.toml"
  fi
  ATCR_BIN=$REPO/target/release/atcr
fi
[ -x "$ATCR_BIN" ] || { echo "ATCR_BIN=$ATCR_BIN is not executable"; exit 1; }
glibc_max=$(grep -aoE 'GLIBC_2\.[0-9]+' "$ATCR_BIN" | sort -uV | tail -n1 || true)
if [ -n "$glibc_max" ] && [ "$(printf '%s\nGLIBC_2.36\n' "$glibc_max" | sort -V | tail -n1)" != GLIBC_2.36 ]; then
  echo "$ATCR_BIN needs $glibc_max; bookworm has 2.36: build on Debian 12 or statically"; exit 1
fi
ATCR_VERSION=$(env -u ATCR_BIN "$ATCR_BIN" version)
stamp "binary: $ATCR_BIN ($ATCR_VERSION, needs ${glibc_max:-no glibc})"
for f in "$REPO"/systemd/atcr{,-backup}.service "$REPO"/systemd/atcr-backup.timer "$HERE"/files/{atcr-tls-setup,journald-atcr.conf,20auto-upgrades} "$REPO"/cloud-init/*.yaml; do
  [ -f "$f" ] || { echo "missing $f"; exit 1; }
done

# 3. Root filesystem.
stamp "mmdebstrap $SUITE -> $ROOT"
rm -rf "$ROOT"; mkdir -p "$OUT"; rm -f "$OUT/$NAME".* "$OUT/SHA256SUMS"
PKGS=systemd-sysv,udev,dbus,linux-image-cloud-amd64,initramfs-tools,zstd,busybox
PKGS+=,grub-pc-bin,grub-efi-amd64-bin
PKGS+=,cloud-init,cloud-guest-utils,gdisk,fdisk,e2fsprogs,openssh-server,sudo,ca-certificates
PKGS+=,ifupdown,isc-dhcp-client,iproute2,netbase,procps,systemd-timesyncd,less
PKGS+=,caddy,curl     # TLS reverse proxy with automatic HTTPS (atcr-tls-setup); curl for checks
PKGS+=,unattended-upgrades   # daily Debian security updates (appliance/files/20auto-upgrades)
mmdebstrap --variant=minbase --mode=root --format=directory \
  --include="$PKGS" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  "$SUITE" "$ROOT" "$MIRROR"

# 4. Configure the tree (plain files; the only chroot calls are grub-mkimage).
stamp "configuring rootfs"
UUID=$(cat /proc/sys/kernel/random/uuid)
install -m 0755 "$ATCR_BIN" "$ROOT/usr/local/bin/atcr"
# The release profile keeps line tables for backtraces (29 MB); the image keeps symbols only
# (7 MB). STRIP=0 to ship the binary as built.
[ "${STRIP:-1}" = 0 ] || objcopy --strip-debug "$ROOT/usr/local/bin/atcr"
install -m 0644 "$REPO"/systemd/atcr{,-backup}.service "$REPO"/systemd/atcr-backup.timer "$ROOT/etc/systemd/system/"
# The daily backup timer is on; its service does nothing until [backup] target is set.
mkdir -p "$ROOT/etc/systemd/system/timers.target.wants"
ln -sf ../atcr-backup.timer "$ROOT/etc/systemd/system/timers.target.wants/atcr-backup.timer"
install -D -m 0644 "$HERE/files/journald-atcr.conf" "$ROOT/etc/systemd/journald.conf.d/50-atcr.conf"
install -m 0644 "$HERE/files/20auto-upgrades" "$ROOT/etc/apt/apt.conf.d/20auto-upgrades"
# The image's apt sources: the public Debian mirror (the build host's mirror may be a local
# cache a cloud server cannot reach), or IMAGE_SOURCES.
rm -f "$ROOT/etc/apt/sources.list" "$ROOT"/etc/apt/sources.list.d/*
if [ -n "$IMAGE_SOURCES" ]; then
  install -m 0644 "$IMAGE_SOURCES" "$ROOT/etc/apt/sources.list.d/debian.sources"
else
  cat > "$ROOT/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
install -m 0755 "$HERE/files/atcr-tls-setup" "$ROOT/usr/local/sbin/atcr-tls-setup"
install -d -m 0755 "$ROOT/etc/atcr" "$ROOT/usr/local/share/atcr/cloud-init"
install -m 0644 "$REPO"/cloud-init/*.yaml "$ROOT/usr/local/share/atcr/cloud-init/"
env -u ATCR_BIN "$ATCR_BIN" config init - > "$ROOT/usr/local/share/atcr/config.example.toml"
echo "$ATCR_VERSION" > "$ROOT/usr/local/share/atcr/VERSION"
# Caddy's package enables caddy.service (a welcome page on :80); it stays off until
# atcr-tls-setup writes the real Caddyfile and enables it.
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/caddy.service"
cat > "$ROOT/etc/fstab" <<EOF
UUID=$UUID / ext4 rw,discard,errors=remount-ro 0 1
EOF
echo localhost > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
cat > "$ROOT/etc/network/interfaces" <<'EOF'
# cloud-init renders the real config into interfaces.d/50-cloud-init
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
EOF
cat > "$ROOT/etc/cloud/cloud.cfg.d/90-atcr.cfg" <<'EOF'
# NoCloud: seed ISO (label cidata) / SMBIOS serial; Hetzner & UpCloud: their metadata services.
datasource_list: [ NoCloud, ConfigDrive, Hetzner, UpCloud, None ]
# en_US.UTF-8 (cloud-init's default) is not generated in a minbase tree: update-locale fails.
locale: C.UTF-8
# "sudo: unable to resolve host" otherwise (no 127.0.1.1 entry for the instance hostname).
manage_etc_hosts: true
EOF
# Per-instance identity must not be baked in.
: > "$ROOT/etc/machine-id"; rm -f "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT"/etc/ssh/ssh_host_*
# sshd refuses to start without host keys; cloud-init (cc_ssh) normally creates them first,
# this is the fallback for a boot where cloud-init finds no datasource.
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' > "$ROOT/etc/systemd/system/ssh.service.d/hostkeys.conf"
mkdir -p "$ROOT/var/log/journal"                       # persistent journal
rm -f "$ROOT/etc/apt/apt.conf.d/99mmdebstrap"           # build-only apt options
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/tmp/* "$ROOT"/var/tmp/*
[ -e "$ROOT/vmlinuz" ] && [ -e "$ROOT/initrd.img" ] || { echo "missing /vmlinuz or /initrd.img symlink"; exit 1; }

# GRUB: modules for both platforms under /boot/grub, one static grub.cfg that boots the
# /vmlinuz and /initrd.img symlinks (kept current by Debian's kernel postinst), and loader
# images (BIOS core.img, UEFI BOOTX64.EFI) that find the root filesystem by UUID.
for plat in i386-pc x86_64-efi; do
  install -d "$ROOT/boot/grub/$plat"
  cp "$ROOT"/usr/lib/grub/$plat/*.mod "$ROOT"/usr/lib/grub/$plat/*.lst "$ROOT/boot/grub/$plat/"
done
KCMD="root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8 consoleblank=0"
cat > "$ROOT/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=1
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input console serial
terminal_output console serial
menuentry 'Debian GNU/Linux 12 (atcr appliance)' {
  search --no-floppy --fs-uuid --set=root $UUID
  linux /vmlinuz $KCMD
  initrd /initrd.img
}
menuentry 'Debian GNU/Linux 12 (previous kernel)' {
  search --no-floppy --fs-uuid --set=root $UUID
  linux /vmlinuz.old $KCMD
  initrd /initrd.img.old
}
EOF
cat > "$ROOT/tmp/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $UUID
set prefix=(\$root)/boot/grub
EOF
chroot "$ROOT" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
  biosdisk part_msdos part_gpt ext2 search search_fs_uuid configfile normal
chroot "$ROOT" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -c /tmp/early.cfg -p /boot/grub \
  part_gpt part_msdos ext2 search search_fs_uuid configfile normal efi_gop
mv "$ROOT/tmp/core.img" "$ROOT/tmp/BOOTX64.EFI" "$WORK/"; rm -f "$ROOT/tmp/early.cfg"
cp "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/boot.img"

# 5. Root filesystem image straight from the directory (no loop device, no mount).
stamp "mkfs.ext4 -d ($LAYOUT layout)"
if [ "$LAYOUT" = hybrid ]; then
  BIOSBOOT_START=2048; ESP_START=4096; ESP_MB=64; ROOT_START=$(( ESP_START + ESP_MB * 2048 ))
else
  ROOT_START=2048
fi
ROOT_SECTORS=$(( (DISK_MB * 2048 - ROOT_START - 64) / 8 * 8 ))  # leave room for the backup GPT
rm -f "$WORK/root.ext4"; truncate -s $(( ROOT_SECTORS * 512 )) "$WORK/root.ext4"
# GRUB 2.06 cannot read metadata_csum_seed; orphan_file is too new for older rescue systems.
mkfs.ext4 -q -F -L rootfs -U "$UUID" -O ^metadata_csum_seed,^orphan_file \
  -E root_owner=0:0 -d "$ROOT" "$WORK/root.ext4"
e2fsck -fn "$WORK/root.ext4" >/dev/null 2>&1

# 6. Disk: partition table, filesystems dd'ed in at their offsets, GRUB boot code.
stamp "assembling disk"
RAW=$OUT/$NAME.raw
rm -f "$RAW"; truncate -s "${DISK_MB}M" "$RAW"
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (v >> (8*i)) & 255 )))"; done; }
poke() { dd of="$RAW" bs=1 seek="$1" conv=notrunc status=none; }    # poke OFFSET < bytes
core_sectors=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
if [ "$LAYOUT" = hybrid ]; then
  sfdisk -q "$RAW" <<PARTS
label: gpt
start=$BIOSBOOT_START, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios-boot
start=$ESP_START, size=$(( ESP_MB * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$ROOT_START, size=$ROOT_SECTORS, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
PARTS
  [ "$core_sectors" -le 2048 ] || { echo "core.img does not fit the BIOS boot partition"; exit 1; }
  # ESP: FAT32 holding only the removable-media loader; built as a file with mtools.
  rm -f "$WORK/esp.vfat"; truncate -s "${ESP_MB}M" "$WORK/esp.vfat"
  mkfs.vfat -F 32 -n ESP "$WORK/esp.vfat" >/dev/null
  mmd -i "$WORK/esp.vfat" ::/EFI ::/EFI/BOOT
  mcopy -i "$WORK/esp.vfat" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  dd if="$WORK/esp.vfat" of="$RAW" bs=512 seek=$ESP_START conv=notrunc,sparse status=none
  CORE_LBA=$BIOSBOOT_START
else
  printf 'label: dos\nstart=%s, type=83, bootable\n' "$ROOT_START" | sfdisk -q "$RAW"
  [ "$core_sectors" -lt "$ROOT_START" ] || { echo "core.img too big for the post-MBR gap"; exit 1; }
  CORE_LBA=1
fi
dd if="$WORK/root.ext4" of="$RAW" bs=512 seek=$ROOT_START conv=notrunc,sparse status=none
# What grub-setup does: boot.img code into the MBR (first 440 bytes: keeps disk id + table),
# point it at core.img's first sector (offset 0x5c), NOP its floppy drive check (0x66), and
# point core.img's diskboot blocklist (last 12 bytes of its first sector) at the rest of it.
dd if="$WORK/boot.img" of="$RAW" bs=440 count=1 conv=notrunc status=none
le64 "$CORE_LBA" | poke $((0x5c))
printf '\x90\x90' | poke $((0x66))
dd if="$WORK/core.img" of="$RAW" bs=512 seek="$CORE_LBA" conv=notrunc status=none
le64 $(( CORE_LBA + 1 )) | poke $(( CORE_LBA * 512 + 500 ))
rm -f "$WORK/root.ext4" "$WORK/esp.vfat"
sfdisk -l "$RAW" | sed 's/^/  /'

# 7. Deliverables.
RAW_USED=$(du -B1 "$RAW" | cut -f1)
echo "RAW_USED_MB=$(( RAW_USED / 1000000 )) (allocated blocks of the sparse $DISK_MB MiB raw; limit $MAX_USED_MB MB)"
[ $(( RAW_USED / 1000000 )) -lt "$MAX_USED_MB" ] || { echo "image uses $(( RAW_USED / 1000000 )) MB >= $MAX_USED_MB MB"; exit 1; }
stamp "qemu-img convert -> qcow2"
qemu-img convert -c -O qcow2 "$RAW" "$OUT/$NAME.qcow2"
for c in $COMPRESS; do
  stamp "compress raw -> .$c"
  case $c in
    xz)  xz -T0 -6 -k -f "$RAW" ;;
    gz)  gzip -6 -k -f "$RAW" ;;
    zst) zstd -q -T0 -10 -k -f "$RAW" ;;
    *)   exit 2 ;;  # checked above
  esac
done
echo "$UUID" > "$OUT/$NAME.rootfs-uuid"
(cd "$OUT" && sha256sum "$NAME".raw* "$NAME".qcow2 > SHA256SUMS && cat SHA256SUMS)
stamp "done"
du -sh --apparent-size "$ROOT" | sed 's/^/rootfs apparent: /'
echo "BUILD_SECONDS=$(( $(date +%s) - t_start ))"
what() {
  case $1 in
    *.raw)   echo "disk image, sparse: $DISK_MB MiB virtual, $(( RAW_USED / 1000000 )) MB used" ;;
    *.qcow2) echo "QEMU/KVM, Proxmox, OpenStack; appliance/boot-test.sh boots it" ;;
    *.xz)    echo "Hetzner Cloud: hcloud-upload-image --compression xz" ;;
    *.zst)   echo "Hetzner Cloud: hcloud-upload-image --compression zstd" ;;
    *.gz)    echo "UpCloud: Storage -> Import (gzip)" ;;
    *.rootfs-uuid) echo "the root filesystem's UUID (names this build)" ;;
    SHA256SUMS) echo "sha256sum -c SHA256SUMS" ;;
  esac
}
echo "Produced in $OUT ($ATCR_VERSION):"
for f in "$OUT/$NAME".raw "$OUT/$NAME".qcow2 "$OUT/$NAME".raw.* "$OUT/$NAME".rootfs-uuid "$OUT/SHA256SUMS"; do
  [ -e "$f" ] || continue
  printf '  %-28s %6s  %s\n' "$(basename "$f")" "$(du -h --apparent-size "$f" | cut -f1)" "$(what "$(basename "$f")")"
done
echo "Next: sudo appliance/boot-test.sh   (boots $NAME.qcow2 under QEMU and checks it)"
