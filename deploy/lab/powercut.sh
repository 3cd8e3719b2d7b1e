#!/usr/bin/env bash
# powercut.sh [ROUNDS] -- the kernel lab's power-cut campaign: the guest (powercut-init.sh)
# keeps voltool's state on a persistent virtio disk; each round boots it on the SAME disk,
# the guest checks what the previous cut left (daemon starts, every `complete` backup
# verifies, the volume's tree is exactly the old or the new one, at least what the policy
# keeps is restorable, secrets listed hold their exact value) and then runs a random mix of
# backup runs (each followed by retention, backup-keep=last=KEEP), restore --force from a
# backup, new files and secret adds, until this script kills qemu with SIGKILL (no shutdown)
# after a random delay. A last boot only checks.
#
#   deploy/lab/powercut.sh 20
#
# env: LAB_DIR (default /var/tmp/voltool-lab), VOLTOOL_BIN (default: cargo build --release),
#      POWERCUT_MAX_DELAY (seconds of work before the cut, random in 1..this; default 40),
#      POWERCUT_BUDGET (seconds: stop starting rounds after this; default unlimited),
#      POWERCUT_KEEP (backup-keep=last=N, default 2), POWERCUT_SEED (default: random).
# Prints every PC-CHECK line and `powercut: R rounds, N checks passed, M failed`; exits
# non-zero when a check failed or a boot never reached its checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
ROUNDS=${1:-20}
L=${LAB_DIR:-/var/tmp/voltool-lab}
MAXD=${POWERCUT_MAX_DELAY:-40}
KEEP=${POWERCUT_KEEP:-2}
BUDGET=${POWERCUT_BUDGET:-0}
RANDOM=${POWERCUT_SEED:-$$}
die() { echo "powercut.sh: $*" >&2; exit 2; }
log() { printf 'powercut: %s\n' "$*"; }
mkdir -p "$L"
L=$(cd "$L" && pwd)
exec 9>"$L/run.lock"
flock -n 9 || die "another lab run is using $L"
"$here/setup.sh" "$L"
BIN=${VOLTOOL_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$top" && cargo build --release -p voltool) || die "cargo build failed"
  BIN=$top/target/release/voltool
fi
[ -x "$BIN" ] || die "voltool binary $BIN is not executable"
LAB_DIR=$L "$here/build-initramfs.sh" "$BIN" "$L/powercut.cpio" "$here/powercut-init.sh"
DISK=$L/powercut.img
rm -f "$DISK"
truncate -s 384M "$DISK"
qpid=
cleanup() { [ -z "$qpid" ] || kill -9 "$qpid" 2>/dev/null || true; [ -n "${POWERCUT_KEEP_DISK:-}" ] || rm -f "$DISK"; }
trap cleanup EXIT
t0=$(date +%s)
passed=0 failed=0 cuts=0

# boot PHASE SEED CONSOLE: qemu in the background on the disk, $qpid set
boot() {
  APPEND="pc.phase=$1 pc.seed=$2 pc.keep=$KEEP" VDA=$DISK VDB=$L/no-such-disk FWD_PORTS= LAB_DIR=$L \
    "$here/qemu.sh" "$L/powercut.cpio" </dev/null >"$3" 2>&1 &
  qpid=$!
}
# wait_for CONSOLE PATTERN SECS: 0 when the pattern showed up, 1 when qemu ended or time ran out
wait_for() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    grep -qa -- "$2" "$1" && return 0
    kill -0 "$qpid" 2>/dev/null || { grep -qa -- "$2" "$1"; return; }
    sleep 0.2
  done
  return 1
}
tally() { # CONSOLE ROUND: counts and prints the PC-CHECK lines of one boot
  local line
  while IFS= read -r line; do
    echo "round $2: $line"
    case $line in *" PASS"*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
  done < <(tr -d '\r' < "$1" | grep -aE '^PC-CHECK ' || true)
  tr -d '\r' < "$1" | grep -aE '^PC-COUNT ' | sed "s/^/round $2: /" || true
}

con=$L/powercut-setup.log
log "setup boot (mkfs, daemon, volume vol1 with backup-keep=last=$KEEP), console $con"
boot setup 1 "$con"
wait_for "$con" PC-SETUP-DONE 300 || { tail -30 "$con"; die "the setup boot did not finish"; }
wait "$qpid" || true; qpid=

for ((r = 1; r <= ROUNDS; r++)); do
  if [ "$BUDGET" != 0 ] && [ $(($(date +%s) - t0)) -ge "$BUDGET" ]; then
    log "time budget ${BUDGET}s used up after $((r - 1)) rounds"
    break
  fi
  con=$L/powercut-$r.log
  boot run "$RANDOM" "$con"
  if ! wait_for "$con" PC-WORK 400; then
    tally "$con" "$r"
    log "round $r: the guest never reached its work phase (console $con)"
    tail -40 "$con"
    failed=$((failed + 1))
    kill -9 "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; qpid=
    break
  fi
  delay=$((RANDOM % MAXD + 1)).$((RANDOM % 10))
  sleep "$delay"
  kill -9 "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
  cuts=$((cuts + 1))
  tally "$con" "$r"
  log "round $r: cut after ${delay}s of work, during: $(tr -d '\r' < "$con" | grep -aE '^PC-OP ' | tail -1)"
done
con=$L/powercut-final.log
boot check 1 "$con"
if ! wait_for "$con" "PC-END check" 600; then log "the final check boot did not finish"; failed=$((failed + 1)); fi
kill -9 "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; qpid=
tally "$con" final
log "$cuts power cuts in $(($(date +%s) - t0))s"
echo "powercut: $cuts rounds, $passed checks passed, $failed failed"
[ "$failed" = 0 ]
