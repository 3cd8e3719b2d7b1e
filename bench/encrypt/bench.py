#!/usr/bin/env python3
"""What encryption costs a backup (stdlib only). Use ./run.sh, which builds voltool first.

usage: bench.py --voltool PATH [--scale 0.42] [--seed 4242] [--runs 3] [--cache warm|cold]
                [--workdir-base DIR] [--markdown FILE] [--json FILE] [--keep]

One private daemon, one dataset (bench/backup/gendata.py: text, random and small files; scale
0.42 is ~500 MiB), and two directory targets defined in its config file: `plain`, and `sealed`
with `encrypt-to` (an age X25519 key). Runs `voltool backup run bench --target plain` and
`--target sealed` alternately (plain, sealed, plain, sealed, ...), each after `sync` and a
warm-up read of the dataset (--cache warm, default: the page cache holds it, so the runs
measure the CPU work the encryption adds, not the disk) or a page-cache drop (--cache cold).
Reports per run the daemon's own duration (`duration_ms`), the wall time of the CLI, the
daemon's CPU, and the stored bytes; then the median throughput of each and their ratio, with
PASS when encryption costs at most 10% of the throughput.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import (MIB, Daemon, make_workdir, busy_cpu, emit_report, fmt_mib, host_line, log,  # noqa: E402
                    make_dataset, med, prepare_cache, run, unmount_under)

# A public key only: the benchmark never decrypts (tests/encryption.rs does).
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
LIMIT = 0.10


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voltool", required=True)
    p.add_argument("--scale", type=float, default=0.42)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--runs", type=int, default=3, help="pairs of runs (plain + sealed)")
    p.add_argument("--cache", choices=["warm", "cold"], default="warm")
    p.add_argument("--workdir-base", default="/var/tmp")
    p.add_argument("--markdown")
    p.add_argument("--json")
    p.add_argument("--keep", action="store_true")
    return p.parse_args()


def one_run(d, data, target, out_dir, cache):
    prepare_cache(cache, [data])
    c0 = d.cpu()
    busy0 = busy_cpu()
    t0 = time.monotonic()
    entry = json.loads(d.cli("backup", "run", "bench", "--target", target, "--json").stdout)
    wall = time.monotonic() - t0
    cpu = d.cpu() - c0
    other = busy_cpu() - busy0 - cpu
    if entry.get("status") != "complete":
        raise RuntimeError(f"backup to {target} did not complete: {entry}")
    names = sorted(n for n in os.listdir(out_dir) if n.startswith(entry["id"]))
    for n in names:
        os.remove(os.path.join(out_dir, n))
    return {"target": target, "id": entry["id"], "wall": wall, "daemon_s": entry["duration_ms"] / 1000,
            "bytes_in": entry["bytes_in"], "bytes_out": entry["bytes_out"], "encrypted": entry.get("encrypted", False),
            "cpu": cpu, "other_cpu": max(other, 0.0), "objects": names}


def report(args, gen, runs):
    lines = [f"### Encryption cost (bench/encrypt), {host_line()}", "",
             f"Dataset: {fmt_mib(gen['bytes'])} MiB in {gen['files']} files (gendata.py --scale {args.scale}), "
             f"cache {args.cache}, {args.runs} alternating pairs.", "",
             "| run | target | daemon (s) | wall (s) | MiB/s (daemon) | stored (MiB) | daemon CPU (s) | other CPU (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['target']} | {r['daemon_s']:.2f} | {r['wall']:.2f} | "
                     f"{r['bytes_in'] / MIB / r['daemon_s']:.1f} | {fmt_mib(r['bytes_out'])} | {r['cpu']:.2f} | "
                     f"{r['other_cpu']:.1f} |")
    by = {t: [r for r in runs if r["target"] == t] for t in ("plain", "sealed")}
    tput = {t: med([r["bytes_in"] / MIB / r["daemon_s"] for r in rs]) for t, rs in by.items()}
    cpu = {t: med([r["cpu"] for r in rs]) for t, rs in by.items()}
    ratio = tput["sealed"] / tput["plain"]
    cost = 1 - ratio
    lines += ["", "| | plain | encrypted (age) | encrypted / plain |", "|---|---:|---:|---:|",
              f"| median throughput (MiB/s) | {tput['plain']:.1f} | {tput['sealed']:.1f} | **{ratio:.3f}** |",
              f"| median daemon CPU (s) | {cpu['plain']:.2f} | {cpu['sealed']:.2f} | {cpu['sealed'] / cpu['plain']:.3f} |",
              "", f"Encryption costs {cost * 100:.1f}% of the throughput (limit {LIMIT * 100:.0f}%): "
              f"**{'PASS' if cost <= LIMIT else 'FAIL'}**."]
    return "\n".join(lines), ratio


def main():
    args = parse_args()
    work, voltool = make_workdir(args.workdir_base, int(3.5 * (1 << 30) * args.scale), "voltool-bench-encrypt.", args.voltool)
    outs = {t: os.path.join(work, "out", t) for t in ("plain", "sealed")}
    for o in outs.values():
        os.makedirs(o)
    config = os.path.join(work, "voltool.toml")
    with open(config, "w") as f:
        f.write(f'[targets.plain]\nurl = "{outs["plain"]}"\n'
                f'[targets.sealed]\nurl = "{outs["sealed"]}"\nencrypt-to = ["{RECIPIENT}"]\n')
    os.makedirs(os.path.join(work, "logs"))
    state = os.path.join(work, "state")
    d = None
    try:
        d = Daemon(voltool, state, os.path.join(work, "logs"), "encrypt", config)
        data, gen = make_dataset(d, "bench", args.scale, args.seed)
        runs = []
        for i in range(args.runs):
            for t in ("plain", "sealed"):
                r = one_run(d, data, t, outs[t], args.cache)
                log(f"pair {i + 1}: {t}: {r['daemon_s']:.2f} s, {fmt_mib(r['bytes_out'])} MiB, objects {r['objects']}")
                runs.append(r)
        def sealed_objects(r):
            return len(r["objects"]) == 3 and all(".age" in n for n in r["objects"])

        def plain_objects(r):
            return len(r["objects"]) == 3 and not any(".age" in n for n in r["objects"])

        bad = [r for r in runs if r["encrypted"] != (r["target"] == "sealed")
               or not (sealed_objects(r) if r["target"] == "sealed" else plain_objects(r))]
        if bad:
            raise RuntimeError(f"runs stored the wrong kind of objects: {bad}")
        text, ratio = report(args, gen, runs)
        emit_report(text, args.markdown, args.json, {"runs": runs, "dataset": gen, "ratio": ratio})
    finally:
        if d is not None:
            d.cli("volume", "unmount", "bench", "--id", "bench", check=False)
            d.stop()
        unmount_under(state)
        if args.keep:
            log(f"kept {work}")
        else:
            run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
