#!/usr/bin/env bash
# bench/metrics/run.sh — the daemon's CPU per Prometheus scrape with 500 volumes (issue 16).
#   sudo bench/metrics/run.sh [--no-build] [--volumes 500] [--scrapes 1000]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=1
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
if [ "$build" = 1 ]; then (cd "$root" && cargo build --release -p voltool); fi
exec python3 "$here/bench.py" --voltool "$root/target/release/voltool" "${args[@]}"
