#!/usr/bin/env bash
# build-initramfs.sh VOLTOOL_BIN OUT.cpio [INIT]
#   (or env VOLTOOL_BIN, OUT, INIT; LAB_DIR = the dir setup.sh prepared, default /var/tmp/voltool-lab)
# Builds the guest's initramfs (uncompressed newc cpio, 2-5 s):
#   * busybox-static with all its applets in /bin, /sbin/modprobe (the kernel's request_module),
#   * the kernel modules the scenarios need, with their modules.dep dependencies, plus every
#     crypto module (soft dependencies of cifs and sunrpc that modules.dep does not list),
#   * voltool and the filesystem tools it runs by name (mkfs.ext4, mkfs.xfs, resize2fs, e2fsck,
#     xfs_growfs) in /usr/sbin, xfs_quota/xfs_io/chattr/lsattr for diagnostics, util-linux's
#     setpriv, /etc/mke2fs.conf, each dynamic binary with its libraries (ldd),
#   * INIT (default: init.sh next to this script) as /init.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
L=${LAB_DIR:-/var/tmp/voltool-lab}
BIN=${1:-${VOLTOOL_BIN:-}}
OUT=${2:-${OUT:-$L/initramfs.cpio}}
INIT=${3:-${INIT:-$here/init.sh}}
die() { echo "build-initramfs.sh: $*" >&2; exit 1; }
[ -n "$BIN" ] || die "usage: build-initramfs.sh VOLTOOL_BIN [OUT.cpio] [INIT] (or env VOLTOOL_BIN)"
[ -x "$BIN" ] || die "voltool binary $BIN is not executable"
[ -f "$INIT" ] || die "init script $INIT missing"
[ -f "$L/kernel-version" ] || die "$L is not set up: run setup.sh $L first"
KROOT=$L/root
KV=$(cat "$L/kernel-version")
MD=$KROOT/lib/modules/$KV
[ -f "$MD/modules.dep" ] || busybox depmod -b "$KROOT" "$KV"
[ -x /bin/busybox ] || die "/bin/busybox missing (apt-get install busybox-static)"

W=$(mktemp -d /tmp/voltool-initramfs.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,var/lib,lib64,lib/x86_64-linux-gnu,root}

# --- busybox: every applet as a link in /bin (real tools in /usr/{s,}bin come first in PATH)
cp /bin/busybox "$W/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$W/bin/$a"; done
ln -sf /bin/busybox "$W/sbin/modprobe"

# --- kernel modules: the wanted ones + their hard deps + all crypto
WANT="virtio_pci virtio_blk virtio_net loop xfs ext4 quota_v2 nfs nfsv3 nfsv4 cifs qemu_fw_cfg"
declare -A SEEN=()
add_mod() { # path relative to $MD, as in modules.dep
  [ -n "${SEEN[$1]:-}" ] && return 0
  SEEN[$1]=1
  mkdir -p "$W/lib/modules/$KV/$(dirname "$1")"
  cp "$MD/$1" "$W/lib/modules/$KV/$1"
  local d
  # shellcheck disable=SC2013 # modules.dep lists dependencies as words
  for d in $(grep -E "^$1:" "$MD/modules.dep" | cut -d: -f2); do add_mod "$d"; done
}
for m in $WANT; do
  p=$(grep -E "(^|/)(${m}|${m//_/-})\.ko(\.[a-z]+)?:" "$MD/modules.dep" | cut -d: -f1 | head -1)
  if [ -z "$p" ]; then
    grep -qE "(^|/)(${m}|${m//_/-})\.ko" "$MD/modules.builtin" || die "module $m is neither a module nor built in"
    continue
  fi
  add_mod "$p"
done
# shellcheck disable=SC2013 # one path per line, no spaces
for p in $(grep -E '^kernel/(crypto|arch/x86/crypto|lib/crypto|lib)/[^:]*\.ko(\.[a-z]+)?:' "$MD/modules.dep" | cut -d: -f1); do
  add_mod "$p"
done
cp "$MD"/modules.builtin* "$MD/modules.order" "$W/lib/modules/$KV/"
busybox depmod -b "$W" "$KV"

# --- dynamic binaries and their libraries
add_bin() { # SRC DEST
  local src=$1 dst=$2 l
  mkdir -p "$W$(dirname "$dst")"
  cp -L "$src" "$W$dst"
  for l in $(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+'); do
    case $l in
      */ld-linux*) mkdir -p "$W$(dirname "$l")"; cp -Ln "$l" "$W$l" ;;
      *) cp -Ln "$l" "$W/lib/x86_64-linux-gnu/" ;;
    esac
  done
}
tool() { # NAME DESTDIR: a host tool found in /usr/sbin, /sbin, /usr/bin or /bin
  local n=$1 d=$2 p
  for p in /usr/sbin/$n /sbin/$n /usr/bin/$n /bin/$n; do
    [ -x "$p" ] && { add_bin "$p" "$d/$n"; return 0; }
  done
  die "host tool $n not found (setup.sh installs e2fsprogs and xfsprogs)"
}
add_bin "$BIN" /usr/bin/voltool
# debug info makes the binary ~4x larger; the guest only needs the code
if command -v strip >/dev/null; then strip --strip-debug "$W/usr/bin/voltool" 2>/dev/null || true; fi
for t in mke2fs resize2fs e2fsck mkfs.xfs xfs_growfs xfs_quota xfs_io; do tool "$t" /usr/sbin; done
ln -sf mke2fs "$W/usr/sbin/mkfs.ext4"    # mke2fs picks the fs type from argv[0]
ln -sf e2fsck "$W/usr/sbin/fsck.ext4"
for t in chattr lsattr setpriv; do tool "$t" /usr/bin; done   # setpriv: util-linux's, busybox's cannot drop capabilities
[ -f /etc/mke2fs.conf ] || die "/etc/mke2fs.conf missing (e2fsprogs)"
cp /etc/mke2fs.conf "$W/etc/mke2fs.conf"

cp "$INIT" "$W/init"
chmod 755 "$W/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$W/etc/passwd"
printf 'root:x:0:\n' > "$W/etc/group"
printf '127.0.0.1 localhost\n10.0.2.100 labhost\n' > "$W/etc/hosts"
mkdir -p "$(dirname "$OUT")"
(cd "$W" && find . | busybox cpio -o -H newc 2>/dev/null) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "initramfs: $OUT $(du -h "$OUT" | cut -f1), kernel $KV, $(find "$W" -name '*.ko*' | wc -l) modules" >&2
