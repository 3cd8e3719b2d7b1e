#!/usr/bin/env bash
# bench/incremental/run.sh — the second backup after a 1% change, side by side: voltool
# incremental vs restic (Debian 0.14) vs `tar --listed-incremental | zstd -T0`; time and
# bytes stored, and voltool incremental vs its own full backup (issue 15).
#
#   sudo bench/incremental/run.sh [--no-build] [--voltool PATH] [--scale 0.2] [--rounds 3]
#                             [--cache warm|cold] [--markdown FILE] [--json FILE] [--keep]
#
# Needs root (volume mounts, drop_caches), python3, restic, tar, zstd. See README.md.
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
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
for c in python3 restic tar zstd; do command -v "$c" >/dev/null || { echo "run.sh: missing $c (apt-get install -y restic)" >&2; exit 1; }; done
if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release -p voltool)
fi
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }
echo "voltool: $("$voltool" --version 2>/dev/null || echo '?'), workspace HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
exec python3 -B "$here/bench.py" --voltool "$voltool" "${args[@]}"
