#!/usr/bin/env bash
# Starts nfs-ganesha (NFSv3, userspace) on 127.0.0.1 for the test suites: NFS port 18049,
# MOUNT port 18048, export path $NFS_EXPORT (default $NFS_DIR/export; it is the path clients
# mount), no root squash. ganesha registers its ports with rpcbind: a running portmapper is
# used, else rpcbind is started (so clients that give no ports, like the seed recipe
# `-o o=addr=127.0.0.1,rw -o device=:/export`, find the server); without rpcbind a tiny
# LD_PRELOAD shim makes the registration succeed and clients must pass port=/mountport=.
# Prints the export directory; fails if the server does not come up.
#
#   NFS_DIR=/tmp/voltool-nfs [NFS_EXPORT=/export] deploy/test-env/nfs/start-ganesha.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${NFS_DIR:-/tmp/voltool-nfs}
export_dir=${NFS_EXPORT:-$dir/export}
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
mkdir -p "$export_dir" "$dir/recovery"
preload=""
if rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
  :  # a portmapper is already running
elif command -v rpcbind >/dev/null || [ -x /usr/sbin/rpcbind ]; then
  PATH="$PATH:/usr/sbin:/sbin" rpcbind -f -w </dev/null >"$dir/rpcbind.log" 2>&1 &
  echo $! > "$dir/rpcbind.pid"
  for _ in $(seq 1 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
  rpcinfo -p 127.0.0.1 >/dev/null 2>&1 || die "rpcbind did not start (log: $dir/rpcbind.log)"
else
  gcc -shared -fPIC -O2 -o "$dir/fake_rpcb.so" "$here/fake_rpcb.c" || die "cannot build the rpcbind shim"
  preload="$dir/fake_rpcb.so"
fi
sed "s|\${NFS_EXPORT}|$export_dir|g; s|\${NFS_DIR}|$dir|g" "$here/ganesha.conf.template" > "$dir/ganesha.conf"
rm -f "$dir/ganesha.pid"
LD_PRELOAD="$preload" ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" \
  </dev/null >/dev/null 2>&1 &
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/18049) 2>/dev/null && { echo "$export_dir"; exit 0; }
  sleep 0.1
done
tail -5 "$dir/ganesha.log" >&2 || true
die "ganesha did not listen on 127.0.0.1:18049 (log: $dir/ganesha.log)"
