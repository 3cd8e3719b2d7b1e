#!/usr/bin/env bash
# bench/backup/run.sh — backup throughput: voltool vs tar|zstd, tar czf, restic; disk and S3.
#
# Usage (as root, from anywhere in the workspace):
#   bench/backup/run.sh [--no-build] [--cache cold|warm] [--scale 1.0] [--seed 4242]
#                       [--workdir-base /var/tmp] [--s3-port 18030] [--only voltool-disk,tar-zstd,...]
#                       [--markdown FILE] [--json FILE] [--keep] [--voltool PATH]
#                       [--nice -10] [--quiet-wait SECONDS]
#
# What it does:
#   1. cargo build --release -p voltool (skipped with --no-build; then target/release/voltool
#      must exist; --voltool PATH uses another binary). The run uses a private copy of it;
#   2. generates a deterministic dataset (512 MiB log-like text, 512 MiB random, 100,000 files
#      of 0-4 KiB in 1,000 dirs; gendata.py) straight into a voltool directory volume of a
#      private daemon, under a fresh dir in --workdir-base (must be disk, not tmpfs; ~8 GiB free);
#   3. measures, one after the other, all reading that same directory, each after `sync` and
#      a page-cache drop (--cache cold, default) or a full warm-up read (--cache warm):
#        voltool-disk  voltool backup run bench --target DIR   (fresh daemon; RSS = its VmHWM)
#        tar-zstd      tar -cf - DIR | zstd -3 -T0 > out      (the reference)
#        tar-gz        tar czf out.tar.gz DIR                 (the seed recipe)
#        restic        restic backup into a fresh repo        (restic init not timed)
#        voltool-s3    voltool backup run bench --target s3://bench/run1?endpoint=...
#                      (fresh daemon with an empty TMPDIR, private s3s-fs on 127.0.0.1)
#   4. prints a markdown table (wall, throughput, ratio to tar|zstd, output size, peak RSS, CPU),
#      the ratio table and a PASS/FAIL line per target;
#   5. stops its daemons and s3s-fs, removes the volume and deletes the work dir (--keep keeps it).
#
# Needs: root, python3, GNU tar, zstd, gzip, /usr/bin/time (apt-get install time),
# restic (apt-get install restic), s3s-fs (cargo install s3s-fs --features binary) for voltool-s3.
# On a shared host: --quiet-wait 3600 waits (up to an hour) for load < 1 and no other
# bench/*/bench.py; --nice -10 runs every process of the benchmark (all tools alike) at nice -10
# and I/O priority best-effort 0, so background jobs disturb the numbers less.
# --scale 0.05 gives a ~60 MiB dataset for a quick trial (RSS limits are then not meaningful).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=1
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: run as root (volume mounts, drop_caches)" >&2
    exit 1
fi
missing=()
for t in python3 tar zstd gzip restic /usr/bin/time; do
    command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: missing: ${missing[*]} (apt-get install -y zstd restic time)" >&2
    exit 1
fi

if [ "$build" = 1 ]; then
    echo "run.sh: cargo build --release -p voltool" >&2
    (cd "$root" && cargo build --release -p voltool)
fi
voltool="$root/target/release/voltool"
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }

{
    echo "tools: $(tar --version | head -1); $(zstd --version | sed 's/^\*\** *//;s/ *\**$//'); $(gzip --version | head -1); $(restic version | cut -d' ' -f1-2)"
    echo "voltool: $("$voltool" --version 2>/dev/null || echo '?') at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' + uncommitted changes')"
} >&2

exec python3 "$here/bench.py" --voltool "$voltool" "${args[@]}"
