#!/usr/bin/env bash
# The test command (README "Tests", and what .ci/run calls). Installs and starts every real
# component the suites need, fails loudly when one cannot start, then runs fmt, clippy and
# all tests. Run as root on a Debian machine:
#
#   bash deploy/test-env/test.sh
#
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
log() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { echo "test.sh: FAILED: $*" >&2; exit 1; }

# Every server this script starts is stopped when it ends, also when a start fails.
# stop_pidfile FILE NAME [SIGNAL]: signals the pid in FILE only while that process is still
# NAME (/proc/PID/comm). A server that exited on its own (samba's idle rpcd_* helpers do)
# leaves a stale file, and over a long run its pid is reused by an unrelated process.
stop_pidfile() {
  local f=$1 name=$2 sig=${3:-TERM} pid comm
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null) || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
  [ "$comm" = "${name:0:15}" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  # (The Docker suite removes its own plugin and host daemon when its test process ends.)
  stop_pidfile /tmp/voltool-test-nfs/ganesha.pid ganesha.nfsd
  stop_pidfile /tmp/voltool-test-nfs/rpcbind.pid rpcbind
  local p
  for p in /tmp/voltool-test-smb/pid/*.pid; do stop_pidfile "$p" "$(basename "$p" .pid)"; done
  stop_pidfile "${VOLTOOL_TEST_S3_PIDFILE:-/nonexistent}" s3s-fs
  stop_pidfile "${VOLTOOL_TEST_MOTO_PIDFILE:-/nonexistent}" moto_server
  [ -x /tmp/voltool-test-ssh/stop.sh ] && /tmp/voltool-test-ssh/stop.sh >/dev/null 2>&1 || true
  echo "test.sh: servers stopped, exit status $rc"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root: the runtime and Docker suites mount filesystems"

log "packages"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v mkfs.xfs >/dev/null || [ -x /usr/sbin/mkfs.xfs ] || need+=(xfsprogs)
command -v ganesha.nfsd >/dev/null || need+=(nfs-ganesha nfs-ganesha-vfs)
command -v smbd >/dev/null || need+=(samba smbclient)
[ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v zstd >/dev/null || need+=(zstd)
command -v age >/dev/null || need+=(age)
command -v setfattr >/dev/null || need+=(attr)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v mkfs.btrfs >/dev/null || [ -x /usr/sbin/mkfs.btrfs ] || need+=(btrfs-progs)
# tests/metrics.rs: a real Prometheus scrapes the daemon; promtool checks the exposition.
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
# tests/status.rs: the status page in headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
# start-moto.sh installs moto into a virtualenv of its own.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq || die "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]}"
fi

log "dockerd"
if ! docker info >/dev/null 2>&1; then
  # No bridge/iptables: the machine has no network; test containers run with --network none.
  nohup dockerd --iptables=false --bridge=none >/tmp/voltool-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { tail -20 /tmp/voltool-dockerd.log >&2; die "dockerd did not start (log: /tmp/voltool-dockerd.log)"; }
echo "docker $(docker version --format '{{.Server.Version}}') up"

log "nfs server (nfs-ganesha, NFSv3 on 127.0.0.1:18049)"
export VOLTOOL_TEST_NFS_EXPORT VOLTOOL_TEST_NFS_PIDFILE=/tmp/voltool-test-nfs/ganesha.pid
# Exported as /export, so the seed recipe (-o o=addr=127.0.0.1,rw -o device=:/export) is tested as written.
VOLTOOL_TEST_NFS_EXPORT=$(NFS_DIR=/tmp/voltool-test-nfs NFS_EXPORT=/export deploy/test-env/nfs/start-ganesha.sh) \
  || die "nfs-ganesha did not start"

log "smb server (samba smbd on 127.0.0.1:18445)"
export VOLTOOL_TEST_SMB_SHARE VOLTOOL_TEST_SMB_PASSWORD=smbtest-pass
VOLTOOL_TEST_SMB_SHARE=$(SMB_DIR=/tmp/voltool-test-smb SMB_PASSWORD=$VOLTOOL_TEST_SMB_PASSWORD deploy/test-env/smb/start-samba.sh) \
  || die "smbd did not start"

log "s3 server (s3s-fs on 127.0.0.1:18014, checks signatures)"
# Installs s3s-fs with cargo the first time (~3 min); prints export lines for the suites.
s3env=$(deploy/test-env/s3/start-s3.sh /tmp/voltool-test-s3) || die "s3s-fs did not start"
eval "$s3env"
[ -n "${VOLTOOL_TEST_S3_ENDPOINT:-}" ] || die "start-s3.sh gave no endpoint"

log "aiosmtpd (the notify crate's mail tests start their own SMTP server with it)"
VOLTOOL_TEST_AIOSMTPD_PYTHON=$(deploy/test-env/notify/setup.sh) || die "aiosmtpd could not be installed"
export VOLTOOL_TEST_AIOSMTPD_PYTHON

log "second s3 server (moto on 127.0.0.1:18015, in memory)"
# Installs moto[server] with pip into a virtualenv under ~/.cache the first time (~1 min); the
# S3 suites run their backup, verify, multipart and cleanup tests against both servers.
motoenv=$(deploy/test-env/s3/start-moto.sh /tmp/voltool-test-moto) || die "moto did not start"
eval "$motoenv"
[ -n "${VOLTOOL_TEST_MOTO_ENDPOINT:-}" ] || die "start-moto.sh gave no endpoint"

log "ssh lab (host B: sshd + its own voltool daemon in netns vtsshB, 10.250.88.2)"
# Prints export lines; tests/migrate.rs restarts B's daemon with the binary cargo builds.
sshenv=$(deploy/test-env/ssh/start-ssh-lab.sh /tmp/voltool-test-ssh) || die "ssh lab did not start"
eval "$sshenv"
[ -n "${VOLTOOL_TEST_SSH_HOST:-}" ] || die "start-ssh-lab.sh gave no host"

log "test image voltool-e2e-busybox"
if ! docker image inspect voltool-e2e-busybox >/dev/null 2>&1; then
  root=$(mktemp -d)
  mkdir -p "$root/bin" && cp /bin/busybox "$root/bin/busybox"
  for a in $("$root/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  tar -C "$root" -c . | docker import - voltool-e2e-busybox >/dev/null || die "docker import"
  rm -rf "$root"
fi

log "fmt + clippy"
cargo fmt --all --check || die "cargo fmt --check: run cargo fmt"
cargo clippy --workspace --all-targets --locked -- -D warnings || die "clippy"

log "architecture"
# The layout docs/DESIGN.md describes ("Crates"): the plugin crate knows no backups, and no
# file or function outgrows the limits of issue 13 (600 lines, 100 lines).
for dep in voltool-backup voltool-restore voltool-migrate voltool-daemon voltool-docker; do
  if cargo tree -p voltool-plugin -e normal --prefix none --locked | grep -q "^$dep "; then
    die "voltool-plugin depends on $dep (docs/DESIGN.md: the arrows point one way)"
  fi
done
python3 deploy/test-env/size-check.py || die "size-check: split the files/functions listed above"

log "managed plugin build (release; the lab runs its binary)"
# The Docker suite installs a plugin of its own (voltool-e2e-PID:latest, built from the
# binary under test, its state under /tmp) and removes it again: an installed voltool:latest
# and the host's /var/lib/voltool are left alone.
deploy/plugin.sh build || die "plugin build"

log "tests"
out=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e

log "kernel lab (Debian kernel under qemu: project quotas, kernel NFS and CIFS)"
lab_out=$(mktemp)
set +e
VOLTOOL_BIN="$top/target/release/voltool" deploy/lab/run.sh 2>&1 | tee "$lab_out"
lab_rc=${PIPESTATUS[0]}
set -e

# --- power-cut campaign (deploy/lab/powercut.sh; owner: issue 12 item 5) ---------------------
# A few rounds, time-bounded, in CI; run `deploy/lab/powercut.sh 20` by hand for the campaign.
# Status 77: the campaign could not start (lab setup, build, initramfs): a failure in CI, a
# visible SKIP elsewhere.
log "power-cut campaign (qemu SIGKILLed mid backup+prune / restore / secret add, checked at reboot)"
pc_out=$(mktemp)
set +e
VOLTOOL_BIN="${CARGO_TARGET_DIR:-$top/target}/release/voltool" POWERCUT_BUDGET=${POWERCUT_BUDGET:-300} \
  POWERCUT_MAX_DELAY=20 deploy/lab/powercut.sh "${POWERCUT_ROUNDS:-5}" 2>&1 | tee "$pc_out"
pc_rc=${PIPESTATUS[0]}
set -e
pc_skip=0
if [ "$pc_rc" = 77 ] && [ "${CI:-}" != true ]; then
  echo "SKIP power-cut campaign: $(grep -E 'cannot start' "$pc_out" | tail -1) (fails in CI)"
  pc_passed=0 pc_failed=0 pc_rc=0 pc_skip=1
else
  # (|| true: no summary line must not end test.sh here under set -e; it counts as a failure)
  pc_sum=$(grep -E '^powercut: [0-9]+ rounds' "$pc_out" | tail -1 || true)
  pc_passed=$(grep -oE '[0-9]+ checks passed' <<<"$pc_sum" | awk '{print $1+0}' || true)
  pc_failed=$(grep -oE '[0-9]+ failed' <<<"$pc_sum" | awk '{print $1+0}' || true)
  [ -n "$pc_failed" ] || { pc_passed=0; pc_failed=1; echo "test.sh: the power-cut campaign printed no summary (status $pc_rc)" >&2; }
  [ "$pc_rc" = 0 ] || [ "$pc_failed" != 0 ] || pc_failed=1
fi
rm -f "$pc_out"
lab_passed_pc=$pc_passed lab_failed_pc=$pc_failed
# --- end of the power-cut campaign ------------------------------------------------------------

# --- fuzzing (fuzz/run.sh; owner: issue 12 item 8) --------------------------------------------
# Every fuzz target (tar/pax reader, manifest, migration frames, plugin requests, volume
# options) for FUZZ_SECONDS each (default 60: ~5 min plus the build); a crash fails the run.
log "fuzzing (cargo fuzz, ${FUZZ_SECONDS:-60} s per target)"
set +e
bash fuzz/run.sh "${FUZZ_SECONDS:-60}"
fuzz_rc=$?
set -e
# --- end of fuzzing ---------------------------------------------------------------------------

# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
sum() { grep -E '^test result:' "$out" | grep -oE "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
lab() { grep -E '^lab: [0-9]+ passed, [0-9]+ failed' "$lab_out" | tail -1 | grep -oE "[0-9]+ $1" | awk '{print $1+0}'; }
lab_passed=$(lab passed); lab_failed=$(lab failed)
# A lab that died before its summary counts as one failure.
[ -n "$lab_failed" ] || { lab_passed=0; lab_failed=1; }
[ "$lab_rc" = 0 ] || [ "$lab_failed" != 0 ] || lab_failed=1
lab_passed=$((lab_passed + lab_passed_pc)) lab_failed=$((lab_failed + lab_failed_pc))   # power-cut campaign
[ "$fuzz_rc" = 0 ] || lab_failed=$((lab_failed + 1))   # fuzzing
skips=$(( $(grep -cE '^SKIP[: ]' "$out" || true) + pc_skip ))
summary="voltool: $(( $(sum passed) + lab_passed )) passed, $(( $(sum failed) + lab_failed )) failed, $(sum ignored) skipped"
rm -f "$out" "$lab_out"
echo
[ "$skips" = 0 ] || echo "note: $skips test(s) printed SKIP (see above)"
echo "$summary"
[ "$rc" = 0 ] && [ "$lab_rc" = 0 ] && [ "$pc_rc" = 0 ] && [ "$fuzz_rc" = 0 ]
