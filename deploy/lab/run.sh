#!/usr/bin/env bash
# run.sh -- the kernel lab's host-side driver: boots Debian's kernel under qemu (software
# emulation) with voltool in an initramfs and runs the real-kernel scenarios of init.sh
# (project quotas on xfs and ext4, online grow of an image-backed volume, kernel NFS and CIFS
# mounts of this host's nfs-ganesha and Samba through guestfwd relays), all through voltool.
#
#   deploy/lab/run.sh
#
# env:
#   LAB_DIR          work dir: kernel, qemu, initramfs, disks, console.log (default /var/tmp/voltool-lab)
#   VOLTOOL_BIN      the voltool binary to test (default: `cargo build --release -p voltool`,
#                    target/release/voltool)
#   VOLTOOL_TEST_NFS_EXPORT   export dir of nfs-ganesha on 127.0.0.1:18049/18048
#   VOLTOOL_TEST_SMB_SHARE    dir of share "data" of smbd on 127.0.0.1:18445, user smbtest
#   VOLTOOL_TEST_SMB_PASSWORD smbtest's password
#                    deploy/test-env/test.sh exports these three after starting the servers.
#                    When they are unset, run.sh starts both servers itself with
#                    deploy/test-env/{nfs,smb}/start-*.sh (dirs /tmp/voltool-lab-{nfs,smb}) and
#                    stops them at the end.
#   LAB_SCENARIOS    space- or comma-separated subset of: xfs-project-quota ext4-project-quota
#                    ext4-image-online-grow kernel-nfs kernel-cifs (default: all)
#   LAB_TIMEOUT      hard limit for the whole VM run in seconds (default 600)
#   LAB_SCENARIO_TIMEOUT  the guest's watchdog per scenario in seconds (default 240)
#   LAB_LOG          VOLTOOL_LOG of the daemons in the guest (default info)
#   LAB_KEEP_DISKS=1 keep the guest's disk images vda.img (xfs) and vdb.img (ext4) after the run
#
# Prints every LAB-RESULT line, the host-side checks of the NFS and CIFS scenarios and a final
# `lab: N passed, N failed`; exits non-zero when a scenario failed, printed no result, or the
# guest never printed LAB-DONE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
L=${LAB_DIR:-/var/tmp/voltool-lab}
ALL="xfs-project-quota ext4-project-quota ext4-image-online-grow kernel-nfs kernel-cifs"
SCEN=$(echo "${LAB_SCENARIOS:-$ALL}" | tr ',' ' ' | xargs)
TIMEOUT=${LAB_TIMEOUT:-600}
die() { echo "run.sh: $*" >&2; exit 2; }
log() { printf 'lab: %s\n' "$*"; }
wants() { case " $SCEN " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for s in $SCEN; do case " $ALL " in *" $s "*) ;; *) die "unknown scenario $s (known: $ALL)" ;; esac; done
t_start=$(date +%s)

mkdir -p "$L"
L=$(cd "$L" && pwd)
exec 9>"$L/run.lock"
flock -n 9 || die "another run.sh is using $L"

# --- servers on the host (reuse the test script's, or start our own)
started=()
tmpfiles=()
NFS_EXPORT=${VOLTOOL_TEST_NFS_EXPORT:-}
SMB_SHARE=${VOLTOOL_TEST_SMB_SHARE:-}
SMB_PASSWORD=${VOLTOOL_TEST_SMB_PASSWORD:-}
cleanup() {
  local f pid
  for f in ${tmpfiles[@]+"${tmpfiles[@]}"}; do rm -f "$f"; done
  # the guest's disks (recreated by every run); LAB_KEEP_DISKS=1 keeps them for a post-mortem
  [ -n "${LAB_KEEP_DISKS:-}" ] || rm -f "$L/vda.img" "$L/vdb.img"
  # the volume dirs the guest created on the servers
  if wants kernel-nfs && [ -n "$NFS_EXPORT" ]; then rm -rf "${NFS_EXPORT:?}/lab-n1"; fi
  if wants kernel-cifs && [ -n "$SMB_SHARE" ]; then rm -rf "${SMB_SHARE:?}/lab-c1"; fi
  for f in ${started[@]+"${started[@]}"}; do
    if [ -f "$f" ]; then pid=$(cat "$f"); [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if wants kernel-nfs && [ -z "$NFS_EXPORT" ]; then
  port_busy 18049 && die "something already listens on 127.0.0.1:18049; export VOLTOOL_TEST_NFS_EXPORT=<its export dir>"
  log "starting nfs-ganesha (deploy/test-env/nfs/start-ganesha.sh, NFS_DIR=/tmp/voltool-lab-nfs)"
  NFS_EXPORT=$(NFS_DIR=/tmp/voltool-lab-nfs "$top/deploy/test-env/nfs/start-ganesha.sh") || die "nfs-ganesha did not start"
  started+=(/tmp/voltool-lab-nfs/ganesha.pid)
fi
if wants kernel-cifs && [ -z "$SMB_SHARE" ]; then
  port_busy 18445 && die "something already listens on 127.0.0.1:18445; export VOLTOOL_TEST_SMB_SHARE and VOLTOOL_TEST_SMB_PASSWORD"
  SMB_PASSWORD=${SMB_PASSWORD:-smbtest-pass}
  log "starting smbd (deploy/test-env/smb/start-samba.sh, SMB_DIR=/tmp/voltool-lab-smb)"
  SMB_SHARE=$(SMB_DIR=/tmp/voltool-lab-smb SMB_PASSWORD=$SMB_PASSWORD "$top/deploy/test-env/smb/start-samba.sh") || die "smbd did not start"
  started+=(/tmp/voltool-lab-smb/pid/smbd.pid /tmp/voltool-lab-smb/pid/samba-dcerpcd.pid)
fi
if wants kernel-nfs; then
  [ -d "$NFS_EXPORT" ] || die "NFS export dir $NFS_EXPORT does not exist"
  case $NFS_EXPORT in /*) ;; *) die "VOLTOOL_TEST_NFS_EXPORT must be an absolute path" ;; esac
  case $NFS_EXPORT in *[[:space:]]*) die "the NFS export path must not contain white space (kernel command line)" ;; esac
  rm -rf "${NFS_EXPORT:?}/lab-n1"     # a previous run's volume dir would satisfy the host check
fi
if wants kernel-cifs; then
  [ -d "$SMB_SHARE" ] || die "SMB share dir $SMB_SHARE does not exist"
  [ -n "$SMB_PASSWORD" ] || die "VOLTOOL_TEST_SMB_PASSWORD is not set"
  rm -rf "${SMB_SHARE:?}/lab-c1"
fi

# --- kernel, qemu, voltool, initramfs, disks
"$here/setup.sh" "$L"
BIN=${VOLTOOL_BIN:-}
if [ -z "$BIN" ]; then
  log "building voltool (cargo build --release -p voltool)"
  (cd "$top" && cargo build --release -p voltool) || die "cargo build failed"
  BIN=$top/target/release/voltool
fi
[ -x "$BIN" ] || die "voltool binary $BIN is not executable"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if ! "$BIN" volume --help 2>/dev/null | grep -E '^ +mount ' >/dev/null; then
  log "note: $BIN has no 'volume mount' yet; scenarios that mount will fail"
fi
LAB_DIR=$L "$here/build-initramfs.sh" "$BIN" "$L/initramfs.cpio" "$here/init.sh"
rm -f "$L/vda.img" "$L/vdb.img"
truncate -s 512M "$L/vda.img"
truncate -s 512M "$L/vdb.img"
# The SMB password reaches the guest through qemu's fw_cfg, not the kernel command line (which
# the kernel logs).
pwfile=$L/smb_password
fwcfg=()
if [ -n "$SMB_PASSWORD" ]; then
  tmpfiles+=("$pwfile")
  (umask 077 && printf %s "$SMB_PASSWORD" > "$pwfile")
  fwcfg=(-fw_cfg "name=opt/voltool/smb_password,file=$pwfile")
fi

# --- boot
append="lab.scenarios=$(echo "$SCEN" | tr ' ' ',') lab.log=${LAB_LOG:-info} lab.timeout=${LAB_SCENARIO_TIMEOUT:-240}"
[ -n "$NFS_EXPORT" ] && append="$append lab.nfs_export=$NFS_EXPORT"
log "booting $(cat "$L/kernel-version") under qemu (TCG), limit ${TIMEOUT}s, console: $L/console.log"
t_boot=$(date +%s)
set +e
APPEND=$append LAB_DIR=$L timeout -k 10 "$TIMEOUT" "$here/qemu.sh" "$L/initramfs.cpio" \
  ${fwcfg[@]+"${fwcfg[@]}"} </dev/null 2>&1 | tee "$L/console.log"
qrc=${PIPESTATUS[0]}
set -e
rm -f "$pwfile"
t_end=$(date +%s)
echo
[ "$qrc" = 0 ] || log "qemu ended with status $qrc$([ "$qrc" = 124 ] && echo " (killed after ${TIMEOUT}s)")"

# --- results
console=$(tr -d '\r' < "$L/console.log")
passed=0 failed=0
log "results:"
grep -E '^LAB-RESULT: ' <<<"$console" || true
verdict() { # NAME -> PASS / FAIL / (empty: no result)
  { grep -E "^LAB-RESULT: $1 (PASS|FAIL)" <<<"$console" || true; } | tail -n 1 | awk '{print $3}'
}
host_check() { # FILE EXPECTED
  local got
  if [ ! -f "$1" ]; then echo "$1 does not exist on the host"; return 1; fi
  got=$(cat "$1")
  [ "$got" = "$2" ] || { echo "$1 holds '${got:0:80}', expected '$2'"; return 1; }
}
for s in $SCEN; do
  v=$(verdict "$s")
  if [ -z "$v" ]; then
    log "$s: FAIL (the guest printed no result)"
    failed=$((failed + 1))
    continue
  fi
  if [ "$v" = PASS ]; then
    msg=
    case $s in
      kernel-nfs) msg=$(host_check "$NFS_EXPORT/lab-n1/guest.txt" hello-from-guest-nfs) || v=FAIL ;;
      kernel-cifs) msg=$(host_check "$SMB_SHARE/lab-c1/guest.txt" hello-from-guest-cifs) || v=FAIL ;;
    esac
    case $s in
      kernel-nfs | kernel-cifs)
        if [ "$v" = PASS ]; then log "host check $s: the guest's file is on the server"; else log "host check $s: FAIL: $msg"; fi ;;
    esac
  fi
  if [ "$v" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
done_seen=no
grep -qx 'LAB-DONE' <<<"$console" && done_seen=yes
[ "$done_seen" = yes ] || log "the guest never printed LAB-DONE (hang, panic or timeout; see $L/console.log)"
log "vm run $((t_end - t_boot))s, total $((t_end - t_start))s"
echo "lab: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$done_seen" = yes ]
