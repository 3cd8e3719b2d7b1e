#!/usr/bin/env bash
# powercut.sh [ROUNDS] -- the kernel lab's power-cut campaign: the guest (powercut-init.sh)
# keeps voltool's state on a persistent virtio disk; each round boots it on the SAME disk,
# the guest checks what the previous cut left (daemon starts, every `complete` backup
# verifies, the volume's tree is exactly the old or the new one, at least what the policy
# keeps is restorable, secrets listed hold their exact value) and then runs a random mix of
# backup runs (each followed by retention, backup-keep=last=KEEP), restore --force from a
# backup, new files and secret adds, until this script kills qemu with SIGKILL (no shutdown)
# after a random delay. One round in 8 is cut earlier instead, 0-6 s after the daemon
# answered, while its recovery at start may still run. A last boot only checks.
#
#   deploy/lab/powercut.sh 20
#
# env: LAB_DIR (default /var/tmp/voltool-lab), VOLTOOL_BIN (default: cargo build --release),
#      POWERCUT_MAX_DELAY (seconds of work before the cut, random in 1..this; default 40),
#      POWERCUT_BUDGET (seconds: stop starting rounds after this; default unlimited),
#      POWERCUT_KEEP (backup-keep=last=N, default 2), POWERCUT_SEED (default: random),
#      POWERCUT_OPS (the guest's operations to draw from, repeats weigh more; default
#      "mutate backup restore secret"; e.g. "backup restore restore restore"),
#      POWERCUT_AT=OP (aim the cuts at one operation, e.g. restore: the cut comes 0..
#      POWERCUT_AT_WINDOW seconds, default 10, after the round's first PC-OP OP line),
#      POWERCUT_KEEP_DISK=1 (keep LAB_DIR/powercut.img).
# Prints every PC-CHECK line, the operation each cut hit, and
# `powercut: R rounds, N checks passed, M failed`. Exit status: 0 all checks passed; 1 a check
# failed or a boot never reached its checks; 77 the campaign could not start (lab setup,
# build, initramfs or lock failed: nothing was tested).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
ROUNDS=${1:-20}
L=${LAB_DIR:-/var/tmp/voltool-lab}
MAXD=${POWERCUT_MAX_DELAY:-40}
KEEP=${POWERCUT_KEEP:-2}
BUDGET=${POWERCUT_BUDGET:-0}
RANDOM=${POWERCUT_SEED:-$$}
OPS=${POWERCUT_OPS:-mutate backup restore secret}
AT=${POWERCUT_AT:-} AT_WINDOW=${POWERCUT_AT_WINDOW:-10}
die() { echo "powercut.sh: $*" >&2; exit 1; }
cannot_start() { echo "powercut.sh: cannot start: $*" >&2; exit 77; }
log() { printf 'powercut: %s\n' "$*"; }
mkdir -p "$L"
L=$(cd "$L" && pwd)
exec 9>"$L/run.lock"
flock -n 9 || cannot_start "another lab run is using $L"
for o in $OPS $AT; do case $o in mutate | backup | restore | secret) ;; *) die "unknown operation $o in POWERCUT_OPS/POWERCUT_AT" ;; esac; done
case $AT_WINDOW in '' | *[!0-9]* | 0) die "POWERCUT_AT_WINDOW must be a positive number of seconds" ;; esac
case $ROUNDS in '' | *[!0-9]*) die "ROUNDS must be a number, not $ROUNDS" ;; esac
"$here/setup.sh" "$L" || cannot_start "setup.sh $L failed"
BIN=${VOLTOOL_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$top" && cargo build --release --locked -p voltool) || cannot_start "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$top/target}/release/voltool
fi
[ -x "$BIN" ] || cannot_start "voltool binary $BIN is not executable"
LAB_DIR=$L "$here/build-initramfs.sh" "$BIN" "$L/powercut.cpio" "$here/powercut-init.sh" \
  || cannot_start "build-initramfs.sh failed"
DISK=$L/powercut.img
rm -f "$DISK"
truncate -s 384M "$DISK"
qpid=
cleanup() { [ -z "$qpid" ] || kill -9 "$qpid" 2>/dev/null || true; [ -n "${POWERCUT_KEEP_DISK:-}" ] || rm -f "$DISK"; }
trap cleanup EXIT
t0=$(date +%s)
passed=0 failed=0 cuts=0
declare -A hit=() # operation -> cuts that landed in it

# boot PHASE SEED CONSOLE: qemu in the background on the disk, $qpid set
boot() {
  : >"$3" # now, not in the background job: a console left by an earlier campaign must not match
  # no_timer_check: on a loaded host the emulated timer can miss the kernel's early IO-APIC
  # timer check, which panics the guest before /init ("IO-APIC + timer doesn't work")
  APPEND="no_timer_check pc.phase=$1 pc.seed=$2 pc.keep=$KEEP pc.ops=${OPS// /,}" VDA=$DISK VDB=$L/no-such-disk FWD_PORTS= LAB_DIR=$L \
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
  tr -d '\r' < "$1" | grep -aE '^PC-(COUNT|RECOVERY) ' | sed "s/^/round $2: /" || true
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
  early=$((RANDOM % 8 == 0))
  if [ "$early" = 1 ]; then mark="PC-CHECK daemon" delay=$((RANDOM % 6)).$((RANDOM % 10)); else
    mark=PC-WORK delay=$((RANDOM % MAXD + 1)).$((RANDOM % 10)); fi
  [ "$early" = 0 ] && [ -n "$AT" ] && delay=$((RANDOM % (AT_WINDOW * 10) / 10)).$((RANDOM % 10))
  if ! wait_for "$con" "$mark" 400; then
    tally "$con" "$r"
    log "round $r: the guest never reached its work phase (console $con)"
    tail -40 "$con"
    failed=$((failed + 1))
    kill -9 "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; qpid=
    break
  fi
  # aimed: from the round's first PC-OP AT line (a round that never starts one is cut anyway)
  aimed=
  if [ "$early" = 0 ] && [ -n "$AT" ]; then wait_for "$con" "PC-OP $AT" 300 && aimed="its first $AT began"; fi
  sleep "$delay"
  kill -9 "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
  cuts=$((cuts + 1))
  tally "$con" "$r"
  # what the cut hit: the last operation started (PC-OP) unless it had ended (PC-DONE)
  op=$(tr -d '\r' < "$con" | grep -aE '^PC-(WORK|OP|DONE)' | tail -1 || true)
  case $op in
    PC-OP*) what=${op#PC-OP } key=${what%% *} ;;
    PC-DONE*) what="between operations (${op#PC-DONE })" key=between ;;
    *) what="the checks at start (daemon recovery)" key=start ;;
  esac
  if [ "$early" = 1 ]; then log "round $r: cut ${delay}s after the daemon answered, during: $what"
  elif [ -n "$aimed" ]; then log "round $r: cut ${delay}s after $aimed, during: $what"
  else log "round $r: cut after ${delay}s of work, during: $what"; fi
  hit[$key]=$((${hit[$key]:-0} + 1))
done
con=$L/powercut-final.log
boot check 1 "$con"
if ! wait_for "$con" "PC-END check" 600; then log "the final check boot did not finish"; failed=$((failed + 1)); fi
kill -9 "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; qpid=
tally "$con" final
log "$cuts power cuts in $(($(date +%s) - t0))s; cut during: $(for o in "${!hit[@]}"; do printf '%s=%s ' "$o" "${hit[$o]}"; done)"
echo "powercut: $cuts rounds, $passed checks passed, $failed failed"
[ "$failed" = 0 ]
