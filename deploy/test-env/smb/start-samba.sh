#!/usr/bin/env bash
# Starts Samba smbd on 127.0.0.1:18445 for the test suites: share "data" at $SMB_DIR/share,
# user smbtest with password $SMB_PASSWORD (default smbtest-pass), every state dir under
# $SMB_DIR. Prints the share directory; fails if smbd does not come up.
#
#   SMB_DIR=/tmp/voltool-smb deploy/test-env/smb/start-samba.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${SMB_DIR:-/tmp/voltool-smb}
pass=${SMB_PASSWORD:-smbtest-pass}
die() { echo "start-samba.sh: $*" >&2; exit 1; }
command -v smbd >/dev/null || die "smbd not installed (apt-get install samba smbclient)"
for pidf in "$dir/pid/smbd.pid" "$dir/pid/samba-dcerpcd.pid"; do
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
done
# Give an instance we just stopped time to release the port.
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/18445) 2>/dev/null || break; sleep 0.1; done
# Another server on the port would answer the readiness probe below with the wrong export.
if (exec 3<>/dev/tcp/127.0.0.1/18445) 2>/dev/null; then
  die "127.0.0.1:18445 is already in use by another process (ss -ltnp 'sport = :18445'); stop it first"
fi
mkdir -p "$dir"/{private,lock,state,cache,pid,ncalrpc,log,share}
id smbtest >/dev/null 2>&1 || useradd --system --no-create-home smbtest
chown smbtest "$dir/share"
sed "s|\${SMB_DIR}|$dir|g" "$here/smb.conf.template" > "$dir/smb.conf"
printf '%s\n%s\n' "$pass" "$pass" | smbpasswd -c "$dir/smb.conf" -a -s smbtest >/dev/null || die "smbpasswd failed"
# setsid: smbd's parent signals its whole process group (kill(0, SIGTERM)) when it stops, so
# it must not share ours — it killed the calling script (exit 143) at cleanup.
setsid smbd --foreground --no-process-group -s "$dir/smb.conf" </dev/null >"$dir/log/smbd.out" 2>&1 &
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/18445) 2>/dev/null && { echo "$dir/share"; exit 0; }
  sleep 0.1
done
tail -5 "$dir/log/smbd.out" >&2 || true
die "smbd did not listen on 127.0.0.1:18445"
