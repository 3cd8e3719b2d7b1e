#!/usr/bin/env python3
"""The second backup after a 1% change, side by side (stdlib only). Use ./run.sh.

usage: bench.py --voltool PATH [--scale 0.2] [--seed 4242] [--rounds 3] [--cache warm|cold]
                [--workdir-base DIR] [--markdown FILE] [--json FILE] [--keep]

One private daemon and one dataset (bench/backup/gendata.py: text, random and small files;
scale 0.2 is ~410 MiB in ~20,000 files). Each round: every tool takes a first backup of the
same tree (voltool: a full `backup run` to a directory target; restic 0.14: `restic backup`
into a fresh repository; tar: `tar --listed-incremental=SNAR | zstd -3 -T0`, level 0), then 1%
of the files change (modified, added, deleted, renamed, chmodded: one fixed recipe), then each
takes its second backup (voltool `--incremental`; restic's second snapshot; tar level 1 from a
copy of the level-0 snapshot file). Before every timed backup: `sync`, then the page cache is
warmed with the tree (--cache warm, default) or dropped (--cache cold). Reports per round the
wall time of each second backup and the bytes it added to its store, the median of each, the
ratio of voltool's to the fastest peer's (goal <= 1.0) and of voltool's incremental to its full
backup (goal <= 0.15).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import (MIB, Daemon, make_workdir, emit_report, fmt_mib, host_line, log,  # noqa: E402
                    make_dataset, med, prepare_cache, run, unmount_under)

TOOLS = ("voltool", "restic", "tar")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voltool", required=True)
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache", choices=["warm", "cold"], default="warm")
    p.add_argument("--workdir-base", default="/var/tmp")
    p.add_argument("--markdown")
    p.add_argument("--json")
    p.add_argument("--keep", action="store_true")
    return p.parse_args()


def du(path):
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def all_files(data):
    out = []
    for dirpath, _, names in os.walk(data):
        out += [os.path.join(dirpath, n) for n in names]
    return sorted(out)


def change_one_percent(data, rng, tag):
    """1% of the files: 0.4% rewritten, 0.2% added, 0.2% deleted, 0.1% renamed, 0.1% chmodded."""
    files = all_files(data)
    n = max(len(files) // 100, 10)
    picks = rng.sample(files, n)
    k = n * 4 // 10
    for p in picks[:k]:
        with open(p, "ab") as f:
            f.write(f"changed {tag}\n".encode())
    for i in range(n // 5):
        d = os.path.join(data, "small", f"new-{tag}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:04}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(0, 4096)))
    for p in picks[k:k + n // 5]:
        os.remove(p)
    for p in picks[k + n // 5:k + n * 3 // 10]:
        os.rename(p, p + f".r{tag}")
    for p in picks[k + n * 3 // 10:]:
        os.chmod(p, 0o600)
    return n


def timed(cmd, **kw):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


class Peers:
    """Where each tool keeps its backups in a round, and how it takes one."""

    def __init__(self, work, d, data, out):
        self.work, self.d, self.data, self.out = work, d, data, out
        self.repo = os.path.join(work, "restic")
        self.tar_dir = os.path.join(work, "tar")
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
        self.daemon_s = 0.0

    def reset(self):
        for p in (self.repo, self.tar_dir, self.env["RESTIC_CACHE_DIR"]):
            shutil.rmtree(p, ignore_errors=True)
        os.makedirs(self.tar_dir)
        run(["restic", "init", "--repo", self.repo], env=self.env)

    def store(self, tool):
        return {"voltool": self.out, "restic": self.repo, "tar": self.tar_dir}[tool]

    def backup(self, tool, second):
        if tool == "voltool":
            args = ["backup", "run", "bench", "--target", self.out, "--json"] + (["--incremental"] if second else [])
            t0 = time.monotonic()
            entry = json.loads(self.d.cli(*args).stdout)
            wall = time.monotonic() - t0
            if entry.get("status") != "complete" or entry.get("level", 0) != (1 if second else 0):
                raise RuntimeError(f"voltool backup: {entry}")
            self.daemon_s = entry["duration_ms"] / 1000
            return wall
        if tool == "restic":
            return timed(["restic", "--repo", self.repo, "backup", "--quiet", "."], cwd=self.data, env=self.env)
        snar, level = os.path.join(self.tar_dir, "snar"), 1 if second else 0
        if second:
            shutil.copy(os.path.join(self.tar_dir, "snar.0"), snar)
        out = os.path.join(self.tar_dir, f"level{level}.tar.zst")
        wall = timed(["sh", "-c", f"tar --listed-incremental='{snar}' -C '{self.data}' -cf - . | zstd -3 -T0 -q -o '{out}'"])
        if not second:
            shutil.copy(snar, os.path.join(self.tar_dir, "snar.0"))
        return wall


def one_round(peers, rng, i, cache):
    peers.reset()
    first = {}
    for t in TOOLS:
        prepare_cache(cache, [peers.data])
        before = du(peers.store(t))
        first[t] = {"wall": peers.backup(t, False), "bytes": du(peers.store(t)) - before}
    first["voltool"]["daemon"] = peers.daemon_s
    changed = change_one_percent(peers.data, rng, i)
    run(["sync"])
    second = {}
    for t in TOOLS:
        prepare_cache(cache, [peers.data])
        before = du(peers.store(t))
        second[t] = {"wall": peers.backup(t, True), "bytes": du(peers.store(t)) - before}
    second["voltool"]["daemon"] = peers.daemon_s
    manifests = [n for n in os.listdir(peers.out) if n.endswith(".manifest.json")]
    second["voltool"]["manifest"] = max(os.path.getsize(os.path.join(peers.out, n)) for n in manifests)
    log(f"round {i}: {changed} files changed; " + ", ".join(
        f"{t} {first[t]['wall']:.2f} s -> {second[t]['wall']:.2f} s, {fmt_mib(second[t]['bytes'])} MiB" for t in TOOLS))
    return {"first": first, "second": second, "changed": changed}


def report(args, gen, rounds):
    lines = [f"### Second backup after a 1% change (bench/incremental), {host_line()}", "",
             f"Dataset: {fmt_mib(gen['bytes'])} MiB in {gen['files']} files (gendata.py --scale {args.scale}), "
             f"cache {args.cache}, {len(rounds)} rounds; ~{rounds[0]['changed']} files changed per round.", "",
             "| round | " + " | ".join(f"{t} 1st (s) | {t} 2nd (s) | {t} 2nd stored (MiB)" for t in TOOLS) + " |",
             "|---|" + "---:|" * (3 * len(TOOLS))]
    for i, r in enumerate(rounds, 1):
        cells = []
        for t in TOOLS:
            cells += [f"{r['first'][t]['wall']:.2f}", f"{r['second'][t]['wall']:.2f}",
                      f"{r['second'][t]['bytes'] / MIB:.2f}"]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    second = {t: med([r["second"][t]["wall"] for r in rounds]) for t in TOOLS}
    first = {t: med([r["first"][t]["wall"] for r in rounds]) for t in TOOLS}
    stored = {t: med([r["second"][t]["bytes"] for r in rounds]) for t in TOOLS}
    full_stored = med([r["first"]["voltool"]["bytes"] for r in rounds])
    fastest = min((t for t in TOOLS if t != "voltool"), key=lambda t: second[t])
    vs_peer = second["voltool"] / second[fastest]
    vs_full = second["voltool"] / first["voltool"]
    d_first = med([r["first"]["voltool"]["daemon"] for r in rounds])
    d_second = med([r["second"]["voltool"]["daemon"] for r in rounds])
    manifest = med([r["second"]["voltool"]["manifest"] for r in rounds])
    lines += ["", "| median | " + " | ".join(TOOLS) + " |", "|---|" + "---:|" * len(TOOLS),
              "| first backup (s) | " + " | ".join(f"{first[t]:.2f}" for t in TOOLS) + " |",
              "| second backup (s) | " + " | ".join(f"{second[t]:.2f}" for t in TOOLS) + " |",
              "| second backup stored (MiB) | " + " | ".join(f"{stored[t] / MIB:.2f}" for t in TOOLS) + " |", "",
              f"voltool incremental / fastest peer ({fastest}): **{vs_peer:.2f}x** (goal <= 1.0: "
              f"**{'PASS' if vs_peer <= 1.0 else 'FAIL'}**).",
              f"voltool incremental / its full backup: time **{vs_full:.3f}** (goal <= 0.15: "
              f"**{'PASS' if vs_full <= 0.15 else 'FAIL'}**), bytes {stored['voltool'] / full_stored:.4f}.",
              f"As the daemon times itself (`duration_ms`, without the CLI's start and polling): full "
              f"{d_first:.2f} s, incremental {d_second:.2f} s (**{d_second / d_first:.3f}**). Of the incremental's "
              f"stored bytes, {fmt_mib(manifest)} MiB are its manifest (the whole tree's listing, plain JSON)."]
    return "\n".join(lines), {"vs_peer": vs_peer, "vs_full": vs_full}


def main():
    args = parse_args()
    work, voltool = make_workdir(args.workdir_base, int(12 * (1 << 30) * args.scale), "voltool-bench-incremental.", args.voltool)
    out = os.path.join(work, "out")
    os.makedirs(out)
    config = os.path.join(work, "voltool.toml")
    with open(config, "w") as f:
        f.write("# defaults: zstd level 3, one worker per CPU\n")
    os.makedirs(os.path.join(work, "logs"))
    state = os.path.join(work, "state")
    d = None
    try:
        d = Daemon(voltool, state, os.path.join(work, "logs"), "incremental", config)
        data, gen = make_dataset(d, "bench", args.scale, args.seed)
        peers = Peers(work, d, data, out)
        rng = random.Random(args.seed)
        rounds = []
        for i in range(1, args.rounds + 1):
            for n in os.listdir(out):
                os.remove(os.path.join(out, n))
            rounds.append(one_round(peers, rng, i, args.cache))
        text, ratios = report(args, gen, rounds)
        emit_report(text, args.markdown, args.json, {"rounds": rounds, "dataset": gen, **ratios})
    finally:
        if d is not None:
            d.stop()
        unmount_under(state)
        if args.keep:
            log(f"kept {work}")
        else:
            run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
