#!/usr/bin/env bash
# bench/encrypt/run.sh — what age encryption costs `voltool backup run` to a directory target:
# the same ~500 MiB of mixed data backed up alternately to a plain target and to one with
# `encrypt-to`, side by side; prints the throughput ratio (issue 15: at most 10% cost).
#
#   sudo bench/encrypt/run.sh [--no-build] [--voltool PATH] [--scale 0.42] [--runs 3]
#                             [--cache warm|cold] [--markdown FILE] [--json FILE] [--keep]
#
# Needs root (volume mounts, drop_caches), python3. See README.md.
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
command -v python3 >/dev/null || { echo "run.sh: missing python3" >&2; exit 1; }
if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release -p voltool)
fi
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }
echo "voltool: $("$voltool" --version 2>/dev/null || echo '?'), workspace HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
exec python3 -B "$here/bench.py" --voltool "$voltool" "${args[@]}"
