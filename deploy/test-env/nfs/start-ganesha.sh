#!/usr/bin/env bash
# Starts nfs-ganesha (NFSv3, userspace) on 127.0.0.1 for the test suites: NFS port 18049,
# MOUNT port 18048, export Path $NFS_DIR/export (the path clients mount), no root squash.
# ganesha insists on registering with rpcbind; a tiny LD_PRELOAD shim makes that succeed
# without one. Prints the export directory; fails if the server does not come up.
#
#   NFS_DIR=/tmp/voltool-nfs deploy/test-env/nfs/start-ganesha.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${NFS_DIR:-/tmp/voltool-nfs}
die() { echo "start-ganesha.sh: $*" >&2; exit 1; }
command -v ganesha.nfsd >/dev/null || die "ganesha.nfsd not installed (apt-get install nfs-ganesha nfs-ganesha-vfs)"
if [ -f "$dir/ganesha.pid" ] && kill -0 "$(cat "$dir/ganesha.pid")" 2>/dev/null; then
  kill "$(cat "$dir/ganesha.pid")" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$(cat "$dir/ganesha.pid")" 2>/dev/null || break; sleep 0.1; done
fi
# Another server on the port would answer the readiness probe below with the wrong export.
if (exec 3<>/dev/tcp/127.0.0.1/18049) 2>/dev/null; then
  die "127.0.0.1:18049 is already in use by another process (ss -ltnp 'sport = :18049'); stop it first"
fi
mkdir -p "$dir/export" "$dir/recovery"
gcc -shared -fPIC -O2 -o "$dir/fake_rpcb.so" "$here/fake_rpcb.c" || die "cannot build the rpcbind shim"
sed "s|\${NFS_DIR}|$dir|g" "$here/ganesha.conf.template" > "$dir/ganesha.conf"
rm -f "$dir/ganesha.pid"
LD_PRELOAD="$dir/fake_rpcb.so" ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" \
  </dev/null >/dev/null 2>&1 &
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/18049) 2>/dev/null && { echo "$dir/export"; exit 0; }
  sleep 0.1
done
tail -5 "$dir/ganesha.log" >&2 || true
die "ganesha did not listen on 127.0.0.1:18049 (log: $dir/ganesha.log)"
