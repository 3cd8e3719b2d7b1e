#!/usr/bin/env bash
# bench/restore/run.sh — restore and verify-only speed: voltool vs zstd -d | tar -x, zstd -t.
#
# Usage (as root, from anywhere in the workspace):
#   bench/restore/run.sh [--no-build] [--cache cold|warm] [--scale 1.0] [--seed 4242] [--repeat 3]
#                        [--workdir-base /var/tmp] [--quiet-wait 120] [--only voltool-id,zstd-tar,...]
#                        [--markdown FILE] [--json FILE] [--keep] [--voltool PATH]
#
# What it does:
#   1. cargo build --release -p voltool (skipped with --no-build; then target/release/voltool
#      must exist; --voltool PATH uses another binary). The run uses a private copy of it;
#   2. generates the bench/backup dataset (bench/backup/gendata.py: 512 MiB log-like text,
#      512 MiB random, 100,000 files of 0-4 KiB) into a voltool directory volume of a private
#      daemon under a fresh dir in --workdir-base (disk, not tmpfs; ~6 GiB free), hashes every
#      file, and backs the volume up once with `voltool backup run` (not measured);
#   3. measures, --repeat rounds, each run after `sync` + a page-cache drop (--cache cold,
#      default) or one read of the archive (--cache warm), and after waiting (at most
#      --quiet-wait s) for the host to be idle:
#        voltool-id      voltool restore rN --from ID            (fresh daemon; RSS = its VmHWM)
#        voltool-file    voltool restore rN --from DIR/ID.tar.zst (the CLI streams the file)
#        zstd-tar        zstd -d < ID.tar.zst | tar -x -C D      (the reference)
#        zstd-T0-tar     zstd -d -T0 < ID.tar.zst | tar -x -C D
#        voltool-verify  voltool backup verify ID                (fresh daemon)
#        zstd-t          zstd -t ID.tar.zst                      (the verify reference)
#        zstd-sha        zstd -dc ID.tar.zst | openssl dgst -sha256
#      Every restored tree is compared with the source (sha256, size, mode, owner of every file);
#   4. prints a markdown report (wall, wall + sync, throughput, speed ratios, peak RSS, CPU)
#      and issue 5's targets (restore vs zstd | tar until on disk, verify vs restore), met or not;
#   5. stops its daemons, removes its volumes and deletes the work dir (--keep keeps it).
#
# Needs: root, python3, GNU tar, zstd, openssl, /usr/bin/time (apt-get install time).
# --scale 0.05 --repeat 1 gives a ~60 MiB quick trial.
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
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: run as root (volume mounts, drop_caches)" >&2
    exit 1
fi
missing=()
for t in python3 tar zstd openssl /usr/bin/time; do
    command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: missing: ${missing[*]} (apt-get install -y zstd time openssl)" >&2
    exit 1
fi

if [ "$build" = 1 ]; then
    echo "run.sh: cargo build --release -p voltool" >&2
    (cd "$root" && cargo build --release -p voltool)
fi
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }

{
    echo "tools: $(tar --version | head -1); $(zstd --version | sed 's/^\*\** *//;s/ *\**$//')"
    # With --no-build the binary may be older than HEAD: say when it was built.
    echo "voltool: $("$voltool" --version 2>/dev/null || echo '?'), $voltool built $(date -r "$voltool" '+%F %T %Z'); workspace HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- . ':!bench' ':!docs' 2>/dev/null || echo ' + uncommitted changes')"
} >&2

exec python3 -B "$here/bench.py" --voltool "$voltool" "${args[@]}"
