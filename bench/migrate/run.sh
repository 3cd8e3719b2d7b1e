#!/usr/bin/env bash
# bench/migrate/run.sh — moving a volume to another host: voltool migrate vs the seed's
# `tar czf - | ssh | tar xzf -` and `tar | zstd -T0 | ssh | zstd -d | tar x`.
#
# Usage (as root, from anywhere in the workspace):
#   bench/migrate/run.sh [--no-build] [--cache cold|warm] [--scale 1.0] [--seed 4242] [--repeat 3]
#                        [--workdir-base /var/tmp] [--quiet-wait 120] [--only voltool,seed,tar-zstd]
#                        [--markdown FILE] [--json FILE] [--keep] [--voltool PATH]
#
# What it does:
#   1. cargo build --release -p voltool (skipped with --no-build; --voltool PATH uses another
#      binary). The run uses a private copy of it;
#   2. sets up two hosts on this machine: A = the caller (root network namespace, its own
#      voltool daemon), B = network namespace vtbenchmig (veth 10.250.97.1 <-> 10.250.97.2)
#      with its own sshd (generated keys, key-only root login; client config under the work
#      dir, never ~/.ssh) and its own voltool daemon (state under the work dir);
#   3. generates the bench/backup dataset (gendata.py, 1.19 GiB in 100,032 files) into volume
#      `bench` on A (under a fresh dir in --workdir-base, disk, ~4 GiB free) and hashes it;
#   4. measures, --repeat rounds, each run after `sync` + a page-cache drop (--cache cold,
#      default) or one read of the source (warm), and after waiting (at most --quiet-wait s) for
#      the host to be idle:
#        voltool   voltool migrate bench root@B:mN -e SSH --remote-voltool WRAPPER (fresh daemons
#                  on A and B; WRAPPER sets B's API socket and execs voltool)
#        seed      tar czf - -C SRC . | ssh root@B "mkdir -p DST && tar xzf - -C DST"
#        tar-zstd  tar -cf - -C SRC . | zstd -3 -T0 | ssh root@B "mkdir -p DST && zstd -d | tar -xf - -C DST"
#      SSH = ssh -F CONFIG (default cipher) through a wrapper that records its peak RSS. Every
#      result on B is compared with the source (sha256, size, mode, owner of every file);
#   5. prints a markdown report (wall, throughput, speed vs both peers, bytes on the wire, peak
#      RSS per side, CPU; ratios until on disk) and issue 5's targets, met or not;
#   6. stops daemons and sshd, deletes the namespace and veth, removes the volumes and the work
#      dir (--keep keeps the work dir).
#
# Needs: root, python3, GNU tar, zstd, gzip, /usr/bin/time, openssh-client + openssh-server,
# iproute2, util-linux (nsenter). --scale 0.05 --repeat 1 gives a ~60 MiB quick trial.
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
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: run as root (network namespace, sshd, volume mounts, drop_caches)" >&2
    exit 1
fi
missing=()
for t in python3 tar zstd gzip ssh ssh-keygen /usr/sbin/sshd ip nsenter /usr/bin/time; do
    command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: missing: ${missing[*]} (apt-get install -y zstd time openssh-client openssh-server iproute2)" >&2
    exit 1
fi

if [ "$build" = 1 ]; then
    echo "run.sh: cargo build --release -p voltool" >&2
    (cd "$root" && cargo build --release -p voltool)
fi
[ -x "$voltool" ] || { echo "run.sh: $voltool not built" >&2; exit 1; }

{
    echo "tools: $(tar --version | head -1); $(zstd --version | sed 's/^\*\** *//;s/ *\**$//'); $(gzip --version | head -1); $(ssh -V 2>&1)"
    # With --no-build the binary may be older than HEAD: say when it was built.
    echo "voltool: $("$voltool" --version 2>/dev/null || echo '?'), $voltool built $(date -r "$voltool" '+%F %T %Z'); workspace HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- . ':!bench' ':!docs' 2>/dev/null || echo ' + uncommitted changes')"
} >&2

exec python3 -B "$here/bench.py" --voltool "$voltool" "${args[@]}"
