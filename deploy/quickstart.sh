#!/usr/bin/env bash
# Build voltool and run the daemon on the embedded defaults: SQLite state in
# /var/lib/voltool, the Docker plugin socket /run/docker/plugins/voltool.sock (dockerd finds it
# by itself: `docker volume create -d voltool ...`), the CLI socket /run/voltool/voltool.sock.
# Runs in the foreground; Ctrl-C stops it (volumes stay mounted for running containers).
#
#   sudo bash deploy/quickstart.sh
#
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "quickstart.sh: run as root (the daemon mounts volumes)" >&2; exit 1; }
cd "$top"
cargo build --release --locked -p voltool
install -m 0755 target/release/voltool /usr/local/bin/voltool
echo "quickstart.sh: installed /usr/local/bin/voltool; starting the daemon (try: voltool doctor, voltool volume ls)"
exec /usr/local/bin/voltool serve
