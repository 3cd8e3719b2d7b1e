#!/usr/bin/env bash
# qemu.sh INITRD [extra qemu args...] -- boots the lab kernel under software emulation (TCG)
# with the serial console on stdout. The guest's `poweroff -f` ends qemu with status 0 whatever
# happened inside, so results are read from marker lines on the console, never from the status.
#
# Network: user-mode (slirp) with restrict=on -- the guest reaches nothing outside except the
# guestfwd relays on 10.0.2.100, each connection relayed by fwd.py to 127.0.0.1 on the host:
#   10.0.2.100:18049 -> 18049 (NFS)   10.0.2.100:18048 -> 18048 (MOUNT)   10.0.2.100:18445 -> 18445 (SMB)
# The guest configures 10.0.2.15/24 on eth0 itself (no DHCP client needed).
# Disks: VDA and VDB (default LAB_DIR/vda.img, LAB_DIR/vdb.img) as virtio disks vda and vdb,
# when the files exist.
#
# env: LAB_DIR (setup.sh's dir, default /var/tmp/voltool-lab)  SMP (2)  MEM (MiB, 1536)
#      APPEND (extra kernel command line)  QUIET ("quiet"; set empty for a verbose boot)
#      FWD_PORTS ("18049 18048 18445")  ACCEL (tcg,thread=multi,tb-size=256)  CPU (max)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
L=${LAB_DIR:-/var/tmp/voltool-lab}
Q=$L/root
die() { echo "qemu.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: qemu.sh INITRD [qemu args...]"
INITRD=$1
shift
[ -f "$INITRD" ] || die "initramfs $INITRD missing"
if [ ! -s "$L/vmlinux" ] || [ ! -x "$Q/usr/bin/qemu-system-x86_64" ]; then die "$L is not set up: run setup.sh $L"; fi
case $here in *,*) die "the path of fwd.py ($here) must not contain a comma (qemu option syntax)";; esac
command -v python3 >/dev/null || die "python3 is needed for the guestfwd relays"

net="user,id=n0,restrict=on"
for p in ${FWD_PORTS-18049 18048 18445}; do
  net="$net,guestfwd=tcp:10.0.2.100:$p-cmd:python3 $here/fwd.py $p"
done
disks=()
i=0
for d in "${VDA:-$L/vda.img}" "${VDB:-$L/vdb.img}"; do
  if [ -f "$d" ]; then
    case $d in *,*) die "disk path $d must not contain a comma";; esac
    disks+=(-drive "file=$d,format=raw,if=virtio,index=$i,cache=unsafe")
  fi
  i=$((i + 1))
done

# etc/sercon-port=0 keeps SeaBIOS off the serial console (its escape sequences would land in
# the log); qemu warns once that the name lacks the "opt/" prefix, which is expected.
exec "$Q/usr/bin/qemu-system-x86_64" \
  -L "$Q/usr/share/qemu" -L "$Q/usr/share/seabios" -L "$Q/usr/lib/ipxe/qemu" \
  -accel "${ACCEL:-tcg,thread=multi,tb-size=256}" -cpu "${CPU:-max}" -smp "${SMP:-2}" -m "${MEM:-1536}" \
  -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot \
  -kernel "$L/vmlinux" -initrd "$INITRD" \
  -append "console=ttyS0 ${QUIET-quiet} panic=-1 ${APPEND:-}" \
  -fw_cfg name=etc/sercon-port,string=0 \
  -netdev "$net" -device virtio-net-pci,netdev=n0,romfile= \
  "${disks[@]}" \
  "$@"
