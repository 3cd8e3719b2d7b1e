#!/bin/sh
# /init of the kernel-lab guest (busybox ash, PID 1). Runs voltool's real-kernel scenarios --
# every one THROUGH voltool (daemon + CLI) -- and reports on the serial console:
#   LAB-RESULT: <name> PASS
#   LAB-RESULT: <name> FAIL <reason>
# one line per scenario, then LAB-DONE, then poweroff. Every command runs under busybox
# `timeout` and every scenario under a watchdog, so a hang gives FAIL instead of a stuck VM:
# each scenario is this script again (`/init --scenario NAME`) in a session of its own, which
# the watchdog kills as a whole.
#
# Kernel command line (all optional):
#   lab.scenarios=a,b,...   which scenarios to run (default: all, in the order below)
#   lab.nfs_export=/path    the host's NFS export path (kernel-nfs)
#   lab.log=debug           VOLTOOL_LOG for the daemons
#   lab.timeout=SECS        watchdog per scenario (default 240)
# The SMB password comes from qemu's fw_cfg entry opt/voltool/smb_password (kept off the
# kernel command line and so out of the kernel log); lab.smb_password=... is a fallback.
# Real tools (e2fsprogs, xfsprogs) live in /usr/sbin, busybox applets in /bin. busybox ash and
# `timeout` prefer their own applets over PATH, so this script calls the real mke2fs by its
# full path; voltool's children find them through PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
MODE=${1:-}
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "lab: $*"; }
if [ "$MODE" != --scenario ]; then
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  mount -t tmpfs tmp /tmp
  mount -t tmpfs run /run
  say "init at uptime $(up), kernel $(uname -r)"
fi

ALL="xfs-project-quota ext4-project-quota ext4-image-online-grow kernel-nfs kernel-cifs"
SCEN=$ALL NFS_EXPORT='' SMB_PASSWORD='' VLOG=info SCEN_TIMEOUT=''
# shellcheck disable=SC2013 # words, not lines
for w in $(cat /proc/cmdline); do
  case $w in
    lab.scenarios=*) SCEN=$(echo "${w#*=}" | tr ',' ' ') ;;
    lab.nfs_export=*) NFS_EXPORT=${w#*=} ;;
    lab.smb_password=*) SMB_PASSWORD=${w#*=} ;;
    lab.log=*) VLOG=${w#*=} ;;
    lab.timeout=*) SCEN_TIMEOUT=${w#*=} ;;
  esac
done
STEP_TIMEOUT=90                   # default per command
SCEN_TIMEOUT=${SCEN_TIMEOUT:-240} # watchdog per scenario

FWCFG=/sys/firmware/qemu_fw_cfg/by_name/opt/voltool/smb_password/raw
if [ "$MODE" != --scenario ]; then
  for m in virtio_pci virtio_blk virtio_net loop xfs ext4 quota_v2 nfs nfsv3 nfsv4 cifs qemu_fw_cfg; do
    timeout -s KILL 30 modprobe "$m" || say "modprobe $m failed"
  done
  for _ in $(seq 1 50); do [ -b /dev/vda ] && [ -b /dev/vdb ] && [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
  ip link set lo up
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  say "disks: $(echo /dev/vd?), eth0: $(ip -o -4 addr show dev eth0 | awk '{print $4}')"
  say "scenarios: $SCEN; nfs export: ${NFS_EXPORT:-none}; smb password: $([ -n "$SMB_PASSWORD" ] || [ -r "$FWCFG" ] && echo given || echo none)"
fi
if [ -z "$SMB_PASSWORD" ] && [ -r "$FWCFG" ]; then SMB_PASSWORD=$(cat "$FWCFG"); fi

# ---------------------------------------------------------------------------------------
# Helpers. A scenario runs in a process of its own: `fail REASON` ends it with that reason.
CUR=boot
OUT=/tmp/step.out
ERR=/tmp/step.err
fail() { printf '%s\n' "$*" > /tmp/reason; exit 1; }
note() { echo "[$CUR] $*"; }
# step [SECS] CMD... : runs CMD under `timeout -s KILL`, stdout in $OUT, stderr in $ERR, both
# shown on the console; returns CMD's status (137 when it was killed at the deadline).
step() {
  case $1 in [0-9]*) t=$1; shift ;; *) t=$STEP_TIMEOUT ;; esac
  echo "[$CUR] \$ $*"
  timeout -s KILL "$t" "$@" >"$OUT" 2>"$ERR"
  rc=$?
  tail -n 20 "$OUT" | sed "s/^/[$CUR]   /"
  tail -n 20 "$ERR" | sed "s/^/[$CUR]   ! /"
  [ "$rc" = 0 ] || echo "[$CUR]   (exit $rc$([ "$rc" = 137 ] && echo ", killed after ${t}s"))"
  return "$rc"
}
# the last non-empty line of the last step's stderr (or stdout), for a FAIL reason
why() { { grep -v '^[[:space:]]*$' "$ERR" || grep -v '^[[:space:]]*$' "$OUT"; } | tail -n 1 | cut -c1-240; }
# the mountpoint `voltool volume mount` printed
mp() { grep -v '^[[:space:]]*$' "$OUT" | tail -n 1; }
kib() { du -k "$1" 2>/dev/null | cut -f1; }

# prepare_fs KIND DEV DIR: make the filesystem and mount it with project quotas (once)
prepare_fs() {
  kind=$1 dev=$2 dir=$3
  grep -q " $dir " /proc/mounts && return 0
  mkdir -p "$dir"
  case $kind in
    xfs) step 120 /usr/sbin/mkfs.xfs -q -f "$dev" || fail "mkfs.xfs $dev: $(why)" ;;
    ext4) step 120 /usr/sbin/mke2fs -q -F -t ext4 -O quota,project -E quotatype=prjquota "$dev" || fail "mke2fs $dev: $(why)" ;;
  esac
  step 60 mount -t "$kind" -o prjquota "$dev" "$dir" || fail "mount -o prjquota $dev: $(why)"
  grep " $dir " /proc/mounts | sed "s/^/[$CUR]   /"
}
# start_daemon TAG STATE_DIR: voltool serve on /run/TAG/{plugin,api}.sock, log /tmp/TAG.log (once)
start_daemon() {
  tag=$1 dir=$2 sock=/run/$1/api.sock
  if [ -f "/run/$tag.pid" ] && kill -0 "$(cat "/run/$tag.pid")" 2>/dev/null; then return 0; fi
  mkdir -p "/run/$tag"
  note "starting voltool serve --state-dir $dir (log /tmp/$tag.log)"
  VOLTOOL_LOG=$VLOG voltool serve --state-dir "$dir" --plugin-socket "/run/$tag/plugin.sock" \
    --api-socket "$sock" </dev/null >>"/tmp/$tag.log" 2>&1 &
  echo $! > "/run/$tag.pid"
  t0=$(up)
  for _ in $(seq 1 120); do
    if [ -S "$sock" ] && VOLTOOL_API_SOCKET=$sock timeout -s KILL 10 voltool volume ls >/dev/null 2>&1; then
      note "daemon $tag ready (started at $t0, now $(up))"
      return 0
    fi
    kill -0 "$(cat "/run/$tag.pid")" 2>/dev/null || fail "voltool serve ($tag) exited: $(tail -n 1 "/tmp/$tag.log")"
    sleep 0.5
  done
  fail "voltool serve ($tag) did not answer on $sock within 60 s"
}
xfs_daemon() {
  prepare_fs xfs /dev/vda /var/lib/voltool-xfs
  start_daemon vx /var/lib/voltool-xfs
  export VOLTOOL_API_SOCKET=/run/vx/api.sock
  echo vx > /tmp/daemon
}
ext4_daemon() {
  prepare_fs ext4 /dev/vdb /var/lib/voltool-ext4
  start_daemon ve /var/lib/voltool-ext4
  export VOLTOOL_API_SOCKET=/run/ve/api.sock
  echo ve > /tmp/daemon
}
# write_mib FILE MIB: dd from /dev/zero, synced so quota/ENOSPC errors surface here. It runs
# as a container's process does: root without CAP_SYS_RESOURCE (Docker's default capability
# set lacks it). With that capability the kernel's generic quota code (ext4) lets a process
# exceed hard limits (dquot.c ignore_hardlimit); XFS enforces project quotas regardless.
write_mib() { step 120 /usr/bin/setpriv --bounding-set -sys_resource dd if=/dev/zero of="$1" bs=1M count="$2" conv=fsync; }
# put_text FILE TEXT / get_text FILE: small file I/O, under a deadline (network filesystems)
# shellcheck disable=SC2016 # $1 and $2 are the inner shell's
put_text() { step 60 sh -c 'printf "%s\n" "$2" > "$1" && sync' put "$1" "$2"; }

# ---------------------------------------------------------------------------------------
# Scenarios

# project_quota VOLUME: 10 MiB hard limit enforced, online grow to 30 MiB, Status backing
project_quota() {
  v=$1
  step voltool volume create "$v" -o size=10m -o quota=project || fail "volume create $v -o quota=project: $(why)"
  step voltool volume mount "$v" || fail "volume mount $v: $(why)"
  MP=$(mp)
  [ -d "$MP" ] || fail "volume mount printed '$MP', not a directory"
  grep -q " $MP " /proc/mounts || note "(note: $MP is not a mount point of its own; a project-quota dir may be used in place)"
  if write_mib "$MP/big" 20; then fail "dd wrote 20 MiB into a 10 MiB volume"; fi
  grep -qiE 'quota exceeded|no space left' "$ERR" || fail "dd failed, but not with EDQUOT/ENOSPC: $(why)"
  sz=$(kib "$MP/big")
  note "file after the limit: ${sz} KiB"
  [ "${sz:-0}" -le $((10240 + 64)) ] || fail "the file holds ${sz} KiB, more than the 10 MiB limit"
  [ "${sz:-0}" -ge 8192 ] || fail "only ${sz} KiB fit into a 10 MiB volume"
  step voltool volume resize "$v" 30m || fail "volume resize $v 30m: $(why)"
  write_mib "$MP/more" 15 || fail "after resize to 30m, writing 15 MiB more failed: $(why)"
  step voltool volume inspect --json "$v" || fail "volume inspect $v: $(why)"
  grep -qE '"backing": *"project quota"' "$OUT" || fail "inspect: Status has no \"backing\": \"project quota\""
  step voltool volume unmount "$v" || fail "volume unmount $v: $(why)"
}

scen_xfs_project_quota() {
  xfs_daemon
  project_quota pq1
}

scen_ext4_project_quota() {
  ext4_daemon
  project_quota pq2
}

scen_ext4_image_online_grow() {
  ext4_daemon
  step voltool volume create img1 -o size=64m -o quota=image || fail "volume create img1 -o quota=image: $(why)"
  step voltool volume mount img1 || fail "volume mount img1: $(why)"
  MP=$(mp)
  [ -d "$MP" ] || fail "volume mount printed '$MP', not a directory"
  write_mib "$MP/a" 50 || fail "writing 50 MiB into a 64 MiB volume failed: $(why)"
  step voltool volume resize img1 128m || fail "volume resize img1 128m while mounted: $(why)"
  step df -k "$MP"
  write_mib "$MP/b" 50 || fail "after the online resize to 128m, writing 50 MiB more failed: $(why)"
  step voltool volume inspect img1
  step voltool volume unmount img1 || fail "volume unmount img1: $(why)"
}

# network_volume NAME TEXT CREATE-OPTIONS...: create, mount, write TEXT to guest.txt, read back
network_volume() {
  v=$1 text=$2
  shift 2
  step 120 voltool volume create "$v" "$@" || fail "volume create $v: $(why)"
  step 120 voltool volume mount "$v" || fail "volume mount $v: $(why)"
  MP=$(mp)
  [ -d "$MP" ] || fail "volume mount printed '$MP', not a directory"
  grep " $MP " /proc/mounts | sed "s/^/[$CUR]   /"
  put_text "$MP/guest.txt" "$text" || fail "writing $MP/guest.txt: $(why)"
  step 60 cat "$MP/guest.txt" || fail "reading $MP/guest.txt back: $(why)"
  [ "$(cat "$OUT")" = "$text" ] || fail "read back '$(head -c 80 "$OUT")', expected '$text'"
  step 120 voltool volume unmount "$v" || fail "volume unmount $v: $(why)"
}

scen_kernel_nfs() {
  [ -n "$NFS_EXPORT" ] || fail "no lab.nfs_export=PATH on the kernel command line"
  xfs_daemon
  network_volume lab-n1 hello-from-guest-nfs -o type=nfs \
    -o o=addr=10.0.2.100,port=18049,mountport=18048 -o "device=:$NFS_EXPORT"
}

scen_kernel_cifs() {
  [ -n "$SMB_PASSWORD" ] || fail "no SMB password (fw_cfg opt/voltool/smb_password or lab.smb_password=)"
  xfs_daemon
  printf %s "$SMB_PASSWORD" > /run/smbpw
  step 30 voltool secret add smbpw </run/smbpw || { rm -f /run/smbpw; fail "secret add: $(why)"; }
  rm -f /run/smbpw
  network_volume lab-c1 hello-from-guest-cifs -o type=cifs -o share=//10.0.2.100/data \
    -o username=smbtest -o secret=smbpw -o o=port=18445,vers=3.0
}

# ---------------------------------------------------------------------------------------
diagnose() { # NAME
  d=$(cat /tmp/daemon 2>/dev/null)
  echo "[$1] --- diagnostics"
  if [ -n "$d" ] && [ -f "/tmp/$d.log" ]; then
    echo "[$1] voltool daemon ($d) log, last lines:"
    tail -n 15 "/tmp/$d.log" | sed "s/^/[$1]   /"
  fi
  case $1 in
    xfs-project-quota)
      grep -q ' /var/lib/voltool-xfs ' /proc/mounts &&
        timeout -s KILL 20 /usr/sbin/xfs_quota -x -c 'report -p -h' /var/lib/voltool-xfs 2>&1 | sed "s/^/[$1]   /" ;;
    ext4-project-quota | ext4-image-online-grow)
      timeout -s KILL 20 df -k 2>&1 | sed "s/^/[$1]   /" ;;
  esac
  echo "[$1] dmesg, last lines:"
  dmesg | tail -n 15 | sed "s/^/[$1]   /"
}

if [ "$MODE" = --scenario ]; then
  CUR=$2
  case " $ALL " in *" $2 "*) ;; *) fail "unknown scenario (known: $ALL)" ;; esac
  "scen_$(echo "$2" | tr - _)"
  exit 0
fi

PASSED=0 FAILED=0
run() { # NAME
  name=$1
  rm -f /tmp/reason /tmp/daemon
  say "--- $name (uptime $(up))"
  # setsid: the scenario and everything it starts (except what it kills itself) form one
  # session and process group, which the watchdog kills at once.
  setsid "$0" --scenario "$name" &
  pid=$!
  (
    sleep "$SCEN_TIMEOUT"
    echo "no result after ${SCEN_TIMEOUT} s (watchdog)" > /tmp/reason
    kill -9 "-$pid" "$pid" 2>/dev/null
  ) &
  wd=$!
  wait "$pid"
  rc=$?
  kill "$wd" 2>/dev/null
  if [ "$rc" = 0 ]; then
    PASSED=$((PASSED + 1))
    echo "LAB-RESULT: $name PASS"
  else
    FAILED=$((FAILED + 1))
    diagnose "$name"
    reason=$(head -c 400 /tmp/reason 2>/dev/null | tr '\n' ' ')
    echo "LAB-RESULT: $name FAIL ${reason:-exit status $rc}"
  fi
}

for s in $SCEN; do run "$s"; done

for tag in vx ve; do
  [ -f "/run/$tag.pid" ] && kill "$(cat "/run/$tag.pid")" 2>/dev/null
done
sleep 1
sync
say "$PASSED passed, $FAILED failed, uptime $(up)"
echo "LAB-DONE"
poweroff -f
sleep 60
