#!/usr/bin/env bash
# setup.sh [LABDIR] -- prepares the kernel lab in LABDIR (default $LAB_DIR or /var/tmp/voltool-lab):
#   * downloads (never installs) Debian's kernel and qemu-system-x86 .debs and extracts them
#     into LABDIR/root. qemu-system is not installed on purpose: on images with a newer
#     qemu-utils (backports) installing the bookworm qemu-system-common would remove it.
#   * installs the few small runtime libraries the extracted qemu needs,
#   * writes LABDIR/vmlinux, the uncompressed kernel: qemu boots an ELF vmlinux through its PVH
#     entry point, which skips the bzImage decompressor (very slow under software emulation),
#   * makes sure the host tools the initramfs copies exist (busybox-static, e2fsprogs, xfsprogs).
# Idempotent: a LABDIR that already has vmlinux and a working qemu is left alone (~0.1 s).
# Needs root (apt-get install) and Debian's apt sources; ~85 MB download, ~10-20 s.
set -euo pipefail
L=${1:-${LAB_DIR:-/var/tmp/voltool-lab}}
die() { echo "setup.sh: $*" >&2; exit 1; }
log() { echo "setup.sh: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

updated=
apt_update() { [ -n "$updated" ] && return 0; apt-get update -qq >/dev/null || die "apt-get update failed"; updated=1; }
apt_install() { # PKG... (only the missing ones are passed)
  [ $# -gt 0 ] || return 0
  log "installing $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt_update; apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

# --- host tools the initramfs copies (and python3 for fwd.py and the vmlinux extraction)
need=()
# (grep without -q: with pipefail, grep -q's early exit would fail the pipeline on SIGPIPE)
if ! { [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x cpio >/dev/null; }; then need+=(busybox-static); fi
for t in mke2fs resize2fs e2fsck; do [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || { need+=(e2fsprogs); break; }; done
for t in mkfs.xfs xfs_growfs; do [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || { need+=(xfsprogs); break; }; done
command -v python3 >/dev/null || need+=(python3)
apt_install "${need[@]}"

QEMU=$L/root/usr/bin/qemu-system-x86_64
qemu_ok() { [ -x "$QEMU" ] && "$QEMU" --version >/dev/null 2>&1; }
# Runtime libraries of bookworm's qemu-system-x86 7.2 that a base image lacks (small, and
# installing them does not conflict with anything).
QEMU_LIBS=(libcapstone4 libfdt1 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 libaio1 liburing2)
qemu_libs() {
  local missing=()
  for p in "${QEMU_LIBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'ok installed' >/dev/null || missing+=("$p")
  done
  apt_install "${missing[@]}"
}

if [ -s "$L/vmlinux" ] && [ -f "$L/kernel-version" ] && [ -d "$L/root/lib/modules/$(cat "$L/kernel-version")" ]; then
  qemu_ok || qemu_libs
  if qemu_ok; then
    log "lab already set up in $L (kernel $(cat "$L/kernel-version"))"
    exit 0
  fi
fi

mkdir -p "$L"
L=$(cd "$L" && pwd)
if ! apt-cache depends linux-image-amd64 2>/dev/null | grep 'Depends: linux-image-[0-9]' >/dev/null; then
  apt_update
fi
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ && !k {k = $2} END {print k}')
[ -n "$KPKG" ] || die "apt-cache knows no linux-image-amd64 (are Debian's sources configured?)"
log "downloading $KPKG and qemu-system-x86 into $L/debs"
rm -rf "$L/debs" "$L/root.new"
mkdir -p "$L/debs" "$L/root.new"
# apt-get download warns that it runs unsandboxed as root; that is expected here.
(cd "$L/debs" && apt-get download "$KPKG" qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu 2>&1 \
  | { grep -v 'Download is performed unsandboxed' || true; }) >&2
for p in "$KPKG" qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu; do
  compgen -G "$L/debs/${p}_*.deb" >/dev/null || die "apt-get download $p failed"
done
for d in "$L"/debs/*.deb; do dpkg-deb -x "$d" "$L/root.new"; done
rm -rf "$L/root"
mv "$L/root.new" "$L/root"
KV=$(ls "$L/root/lib/modules")
[ "$(echo "$KV" | wc -l)" = 1 ] || die "expected one kernel in $L/root/lib/modules, found: $KV"
busybox depmod -b "$L/root" "$KV"
qemu_libs
if ! qemu_ok; then
  ldd "$QEMU" | grep 'not found' >&2 || true
  die "the extracted qemu does not run (missing libraries above?)"
fi
# The bzImage carries an xz-compressed ELF; pull it out for the PVH boot.
python3 - "$L/root/boot/vmlinuz-$KV" "$L/vmlinux.new" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
if i < 0:
    sys.exit("no xz stream in " + sys.argv[1])
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
PY
mv "$L/vmlinux.new" "$L/vmlinux"
echo "$KV" > "$L/kernel-version"
rm -rf "$L/debs"
log "$("$QEMU" --version | head -1); kernel $KV ready in $L"
