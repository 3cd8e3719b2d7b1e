#!/usr/bin/env bash
# bench/consistency/run.sh — downtime of a consistent backup of a live 1 GiB volume: voltool
# with a snapshot (xfs reflinks), with freeze, without a snapshot, and the script users write
# today (docker stop; tar | zstd; docker start). See README.md.
#
#   sudo bench/consistency/run.sh [--no-build] [--voltool PATH] [--size-gib 1] [--repeat 3]
#                                 [--markdown FILE] [--json FILE]
#
# Needs root, a running dockerd, busybox-static, xfsprogs, zstd, python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=1
voltool="$root/target/release/voltool"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --voltool) voltool=$2; build=0; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
for t in python3 zstd mkfs.xfs docker; do
    command -v "$t" >/dev/null || { echo "run.sh: missing $t" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "run.sh: dockerd is not running" >&2; exit 1; }
if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release -p voltool)
fi
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }
echo "voltool: $("$voltool" --version 2>/dev/null || echo '?'), workspace HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
exec python3 -B "$here/bench.py" --voltool "$voltool" "${args[@]}"
