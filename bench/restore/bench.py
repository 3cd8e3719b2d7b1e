#!/usr/bin/env python3
"""Restore and verify benchmark driver (stdlib only). Use ./run.sh, which builds voltool first.

usage: bench.py --voltool PATH [--workdir-base DIR] [--cache cold|warm] [--scale F] [--seed N]
                [--repeat N] [--only LIST] [--quiet-wait S] [--markdown FILE] [--json FILE] [--keep]

Generates the bench/backup dataset (gendata.py) into a voltool directory volume, backs it up
once with `voltool backup run` (not measured), then measures, each with the same archive:

  restore:
    voltool-id     `voltool restore rN --from ID`         (catalog; the daemon reads the target)
    voltool-file   `voltool restore rN --from DIR/ID.tar.zst` (the CLI streams the file to the daemon)
    zstd-tar       `zstd -d < ID.tar.zst | tar -x -C D`   (the reference)
    zstd-T0-tar    `zstd -d -T0 < ID.tar.zst | tar -x -C D`
  verify only:
    voltool-verify `voltool backup verify ID`             (archive sha256 + every file's sha256)
    zstd-t         `zstd -t ID.tar.zst`                   (frame checksums only; the reference)
    zstd-sha       `zstd -dc ID.tar.zst | openssl dgst -sha256` (decode + hash every byte of the tar;
                   openssl uses the CPU's SHA instructions, coreutils sha256sum does not)

Every voltool measurement gets a fresh daemon (peak RSS = its VmHWM). Before each measurement:
`sync`, then drop the page cache (--cache cold, default) or read the archive once (warm).
Every restored tree is compared with the source (every file's sha256, size, mode, owner).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import (MIB, add_run_args, emit_report, run_rounds, quiet_wait_line, selected_tools, TIME_FMT, Daemon, busy_cpu, kernel_threads_cpu, kernel_cpu_since, compare_digests, digest_totals, discarded_line,  # noqa: E402
                    disturbed, fmt_mib, free_bytes, fs_type, host_line, log, make_dataset, med, prepare_cache,
                    read_time, spread, timed_sync, tree_digest, unmount_under, volume_data_dir, wait_quiet,
                    write_empty_config)

RESTORE = ["voltool-id", "voltool-file", "zstd-tar", "zstd-T0-tar"]
VERIFY = ["voltool-verify", "zstd-t", "zstd-sha"]
TOOLS = RESTORE + VERIFY
LABELS = {
    "voltool-id": "`voltool restore NEW --from ID`",
    "voltool-file": "`voltool restore NEW --from FILE.tar.zst`",
    "zstd-tar": "`zstd -d \\| tar -x` (reference)",
    "zstd-T0-tar": "`zstd -d -T0 \\| tar -x`",
    "voltool-verify": "`voltool backup verify ID`",
    "zstd-t": "`zstd -t` (reference)",
    "zstd-sha": "`zstd -dc \\| openssl dgst -sha256`",
}


class Bench:
    def __init__(self, args):
        self.args = args
        base = args.workdir_base
        os.makedirs(base, exist_ok=True)
        if fs_type(base) == "tmpfs":
            sys.exit(f"{base} is tmpfs; pick a disk-backed --workdir-base")
        need = int(5 * (1 << 30) * args.scale) + (1 << 30)
        if free_bytes(base) < need:
            sys.exit(f"{base}: {free_bytes(base) / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB")
        self.work = tempfile.mkdtemp(prefix="voltool-bench-restore.", dir=base)
        os.makedirs(os.path.join(self.work, "bin"))
        # A private copy: a concurrent `cargo build` must not swap the binary between runs.
        self.voltool = shutil.copy2(os.path.abspath(args.voltool), os.path.join(self.work, "bin", "voltool"))
        self.state = os.path.join(self.work, "state")
        self.logs = os.path.join(self.work, "logs")
        self.config = os.path.join(self.work, "voltool.toml")
        self.backups = os.path.join(self.work, "backups")
        self.out = os.path.join(self.work, "out")
        for d in (self.state, self.logs, self.backups, self.out):
            os.makedirs(d)
        write_empty_config(self.config)
        self.results = {t: [] for t in TOOLS}
        self.errors = {}
        self.discarded = []  # (tool, wall, other CPU) of runs thrown away as disturbed
        self.n = 0
        self.made_volumes = set()

    def daemon(self, name):
        return Daemon(self.voltool, self.state, self.logs, name, self.config)

    # ---- setup ----------------------------------------------------------------------------------

    def setup(self):
        d = self.daemon("setup")
        try:
            self.made_volumes.add("bench")
            self.data, self.gen = make_dataset(d, "bench", self.args.scale, self.args.seed)
            log("hashing the source tree")
            self.digest = tree_digest(self.data)
            self.bytes, self.files, self.dirs = digest_totals(self.digest)
            log(f"dataset: {self.bytes} bytes in {self.files} files, {self.dirs} dirs")
            log("backing it up (not measured)")
            t0 = time.monotonic()
            entry = json.loads(d.cli("backup", "run", "bench", "--target", self.backups, "--json").stdout)
            self.backup_wall = time.monotonic() - t0
            self.id = entry["id"]
            self.archive = os.path.join(self.backups, self.id + ".tar.zst")
            self.archive_bytes = os.path.getsize(self.archive)
            log(f"backup {self.id}: {self.archive_bytes} bytes in {self.backup_wall:.1f} s")
        finally:
            d.stop()

    # ---- measurements ---------------------------------------------------------------------------

    def before(self):
        waited, busy = wait_quiet(self.args.quiet_wait)
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        prepare_cache(self.args.cache, [self.archive])
        return {"waited": waited, "busy_before": busy, "loadavg": load}

    def check(self, tree):
        ok, note = compare_digests(self.digest, tree_digest(tree))
        if not ok:
            raise RuntimeError(f"the restored tree is wrong: {note}")
        return note

    def m_voltool(self, name):
        self.n += 1
        vol = f"r{self.n}"
        d = self.daemon(f"{name}-{self.n}")
        try:
            idle = d.rss()
            pre = self.before()
            tf = os.path.join(self.logs, f"time-{name}-{self.n}")
            if name == "voltool-verify":
                argv = ["backup", "verify", self.id, "--json"]
            else:
                src = self.id if name == "voltool-id" else self.archive
                argv = ["restore", vol, "--from", src, "--json"]
                self.made_volumes.add(vol)
            env = dict(os.environ, VOLTOOL_API_SOCKET=d.api)
            cpu0, c0, k0 = d.cpu(), busy_cpu(), kernel_threads_cpu()
            t0 = time.monotonic()
            p = subprocess.run(["/usr/bin/time", "-o", tf, "-f", TIME_FMT, self.voltool, *argv], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wall = time.monotonic() - t0
            busy, kcpu = busy_cpu() - c0, kernel_cpu_since(k0)
            if p.returncode != 0:
                raise RuntimeError(f"voltool {' '.join(argv)} failed: {p.stderr.strip() or p.stdout.strip()}")
            synced = timed_sync() if name != "voltool-verify" else 0.0
            kcpu_synced = kernel_cpu_since(k0)
            hwm, dcpu = d.hwm(), d.cpu() - cpu0
            cli_rec = read_time(tf)
            out = json.loads(p.stdout)
            r = {"wall": wall, "sync": synced, "rss": hwm, "idle_rss": idle, "cli_rss": cli_rec["maxrss"],
                 "cpu": dcpu + cli_rec["cpu"], "daemon_cpu": dcpu, "cli_cpu": cli_rec["cpu"], "busy": busy,
                 "kernel_cpu": kcpu, "kernel_cpu_synced": kcpu_synced,
                 "out": out, **pre}
            if name == "voltool-verify":
                if not out.get("ok"):
                    raise RuntimeError(f"verify said not ok: {out}")
                v = out.get("verify") or {}
                if v.get("files") != self.files or v.get("bytes") != self.bytes:
                    raise RuntimeError(f"verify checked {v.get('files')} files / {v.get('bytes')} bytes, "
                                       f"expected {self.files} / {self.bytes}")
                r["check"] = f"ok: {v.get('entries')} entries, {v.get('files')} files checked"
            else:
                if out.get("files") != self.files or out.get("bytes") != self.bytes:
                    raise RuntimeError(f"restore reported {out.get('files')} files / {out.get('bytes')} bytes, "
                                       f"expected {self.files} / {self.bytes}")
                r["check"] = self.check(volume_data_dir(self.state, vol))
                d.cli("volume", "rm", "--force", vol)
                self.made_volumes.discard(vol)
            return r
        finally:
            d.stop()

    def m_shell(self, name):
        self.n += 1
        dst = os.path.join(self.out, f"x{self.n}")
        t = [os.path.join(self.logs, f"time-{name}-{self.n}-{i}") for i in (1, 2)]
        tm = f"/usr/bin/time -f '{TIME_FMT}' -o"
        a = self.archive
        script = {
            "zstd-tar": f"mkdir '{dst}' && {tm} {t[0]} zstd -d -q < '{a}' | {tm} {t[1]} tar -x -C '{dst}'",
            "zstd-T0-tar": f"mkdir '{dst}' && {tm} {t[0]} zstd -d -q -T0 < '{a}' | {tm} {t[1]} tar -x -C '{dst}'",
            "zstd-t": f"{tm} {t[0]} zstd -t -q '{a}'",
            "zstd-sha": (f"{tm} {t[0]} zstd -dc -q '{a}' | {tm} {t[1]} openssl dgst -sha256 "
                         f"> {self.logs}/sha-{self.n}"),
        }[name]
        pre = self.before()
        c0, k0 = busy_cpu(), kernel_threads_cpu()
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", "set -o pipefail\n" + script], text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        wall = time.monotonic() - t0
        busy, kcpu = busy_cpu() - c0, kernel_cpu_since(k0)
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        synced = timed_sync() if name in RESTORE else 0.0
        kcpu_synced = kernel_cpu_since(k0)
        recs = [read_time(f) for f in t if os.path.exists(f)]
        r = {"wall": wall, "sync": synced, "rss": sum(x["maxrss"] for x in recs),
             "cpu": sum(x["cpu"] for x in recs), "busy": busy, "kernel_cpu": kcpu, "kernel_cpu_synced": kcpu_synced,
             **pre}
        if name in RESTORE:
            # The archive holds the volume's root as "./": compare its contents.
            r["check"] = self.check(dst)
            shutil.rmtree(dst)
        else:
            r["check"] = "exit 0"
        return r

    def measure(self, name):
        try:
            for attempt in range(self.args.retries + 1):
                log(f"measuring {name}" + (f" (attempt {attempt + 1})" if attempt else ""))
                r = self.m_voltool(name) if name.startswith("voltool") else self.m_shell(name)
                # The kernel's writeback threads work for the run (a durable restore's syncs).
                r["other_cpu"] = max(0.0, r["busy"] - r["cpu"] - r["kernel_cpu"])
                if not disturbed(r) or attempt == self.args.retries:
                    break
                self.discarded.append((name, r["wall"], r["other_cpu"]))
                log(f"{name}: {r['wall']:.2f} s but disturbed (other CPU {r['other_cpu']:.1f} s): discarded, again")
            self.results[name].append(r)
            log(f"{name}: {r['wall']:.2f} s (+ sync {r['sync']:.2f} s), {self.bytes / r['wall'] / MIB:.0f} MiB/s, "
                f"peak RSS {fmt_mib(r['rss'])} MiB, other CPU {r['other_cpu']:.1f} s; {r['check']}")
        except Exception as e:  # noqa: BLE001 - one tool failing must not hide the others
            self.errors[name] = str(e).replace("\n", " ")[:400]
            log(f"{name} FAILED: {e}")

    # ---- cleanup --------------------------------------------------------------------------------

    def cleanup(self):
        Daemon.stop_all()
        if self.made_volumes and os.path.isdir(self.state):
            try:
                d = self.daemon("cleanup")
                try:
                    for v in sorted(self.made_volumes):
                        d.cli("volume", "unmount", v, "--id", "bench", check=False)
                        d.cli("volume", "rm", "--force", v, check=False)
                finally:
                    d.stop()
            except Exception as e:  # noqa: BLE001
                log(f"could not remove volumes {sorted(self.made_volumes)}: {e}")
        unmount_under(self.work)
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---- report --------------------------------------------------------------------------------------


def targets(r):
    """Issue 5's restore and verify targets, from the medians and round by round."""
    out = []

    def rounds(a, b, key):
        return ", ".join(f"{key(y) / key(x):.2f}" for x, y in zip(r[a], r[b]))

    synced = lambda x: x["wall"] + x["sync"]  # noqa: E731
    walled = lambda x: x["wall"]  # noqa: E731
    if r["voltool-id"] and r["zstd-tar"]:
        v, z = med([synced(x) for x in r["voltool-id"]]), med([synced(x) for x in r["zstd-tar"]])
        out.append(f"restore ≥ 1.0× `zstd -d | tar -x` (until on disk): {z / v:.2f}× "
                   f"({'met' if z / v >= 1.0 else 'NOT met'}); per round {rounds('voltool-id', 'zstd-tar', synced)}")
        v, z = med([walled(x) for x in r["voltool-id"]]), med([walled(x) for x in r["zstd-tar"]])
        out.append(f"(until the command returns, the pipeline's data still in the page cache: {z / v:.2f}×)")
    if r["voltool-verify"] and r["voltool-id"]:
        v, x = med([walled(y) for y in r["voltool-verify"]]), med([walled(y) for y in r["voltool-id"]])
        out.append(f"verify ≥ 1.5× restore (`voltool backup verify` vs `voltool restore`, each until it returns): "
                   f"{x / v:.2f}× ({'met' if x / v >= 1.5 else 'NOT met'}); "
                   f"per round {rounds('voltool-verify', 'voltool-id', walled)}")
    return out


def report(b):
    a = b.args
    lines = []
    add = lines.append
    add(f"Host: {host_line()}")
    add(f"Dataset: {b.bytes} bytes ({b.bytes / MIB:.0f} MiB) in {b.files} files and {b.dirs} directories "
        f"(bench/backup/gendata.py scale {a.scale}, seed {a.seed}); archive `{b.id}.tar.zst` "
        f"{b.archive_bytes} bytes ({b.archive_bytes / MIB:.0f} MiB, made by `voltool backup run` in "
        f"{b.backup_wall:.1f} s). Page cache: {a.cache} before every run "
        f"({'sync + drop_caches' if a.cache == 'cold' else 'sync + archive read once'}); "
        f"{a.repeat} run(s) per row, interleaved; cells with several runs show median (min–max).")
    add("")
    r = b.results

    def wall(name):
        return med([x["wall"] for x in r[name]])

    def on_disk(name):
        # Until the data is on disk: voltool restore syncs before it returns (its `sync` after
        # finds ~nothing), the shell pipelines leave it in the page cache for the `sync`.
        return med([x["wall"] + x["sync"] for x in r[name]])

    def ratio(name, ref):
        if not r[name] or not r[ref]:
            return "-"
        t = on_disk if name in RESTORE else wall
        return f"{t(ref) / t(name):.2f}×"

    def row(name, ref, extra_ref=None):
        xs = r[name]
        if not xs:
            if name in b.errors:
                add(f"| {LABELS[name]} | not measured: {b.errors[name]} |" + " |" * (8 if name in RESTORE else 7))
            return
        walls = [x["wall"] for x in xs]
        synced = [x["wall"] + x["sync"] for x in xs]
        cells = [LABELS[name], spread(walls)] + ([spread(synced)] if name in RESTORE else []) + [
            f"{b.bytes / med(walls) / MIB:.0f}", ratio(name, ref)]
        if extra_ref:
            cells.append(ratio(name, extra_ref))
        cells += [fmt_mib(max(x["rss"] for x in xs)),
                  f"{med([x['cpu'] for x in xs]):.1f} + {med([x['kernel_cpu_synced'] for x in xs]):.1f}",
                  f"{max(x['other_cpu'] for x in xs):.1f}", xs[-1]["check"]]
        add("| " + " | ".join(cells) + " |")

    add("**Restore** (dataset bytes / wall; wall = until the command returns; \"+ sync\" adds a `sync` "
        "after it: until the data is on disk. `voltool restore` writes the restored tree to disk before "
        "it swaps it in, so it returns with the data there; the shell pipelines return with it in the "
        "page cache. Speed ratios compare wall + sync.)")
    add("")
    add("| restore | wall (s) | wall + sync (s) | throughput (MiB/s) | speed vs `zstd -d \\| tar -x` "
        "| speed vs `zstd -d -T0 \\| tar -x` | peak RSS (MiB) | CPU + kernel threads (s) | other CPU, max (s) | result |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in RESTORE:
        row(name, "zstd-tar", "zstd-T0-tar")
    add("")
    add("**Verify only** (nothing written; dataset bytes / wall)")
    add("")
    add("| verify | wall (s) | throughput (MiB/s) | speed vs `zstd -t` | speed vs `zstd -dc \\| openssl sha256` "
        "| peak RSS (MiB) | CPU + kernel threads (s) | other CPU, max (s) | result |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in VERIFY:
        row(name, "zstd-t", "zstd-sha")
    add("")
    add("Speed ratio = reference wall / row wall (> 1: faster than the reference). Peak RSS: voltool = "
        "VmHWM of a daemon started just for that run (the CLI's own peak is listed below); shell rows = "
        "/usr/bin/time peaks of the pipeline's processes summed. CPU = user + sys of the tool (voltool: "
        "daemon + CLI); + kernel threads = what the kernel's own threads (writeback, journal) used from "
        "the start to the end of the `sync` after it. Other CPU = the host's busy CPU during the run "
        "minus the tool's and the kernel threads': anything else that ran meanwhile (≈ 0 on a quiet host).")
    for name in RESTORE[:2] + ["voltool-verify"]:
        xs = r[name]
        if xs:
            x = xs[-1]
            add(f"- {LABELS[name]}: daemon idle RSS {fmt_mib(x['idle_rss'])} MiB; CLI peak RSS "
                f"{fmt_mib(max(y['cli_rss'] for y in xs))} MiB; daemon CPU {med([y['daemon_cpu'] for y in xs]):.1f} s "
                f"(≈ {med([y['daemon_cpu'] / y['wall'] for y in xs]):.2f} CPUs busy on average), CLI CPU "
                f"{med([y['cli_cpu'] for y in xs]):.1f} s; reply: "
                f"{json.dumps({k: v for k, v in x['out'].items() if k not in ('volume',)})}")
    add("")
    add("**Against issue 5's targets**")
    add("")
    for line in targets(r):
        add(f"- {line}")
    add("")
    add(discarded_line(b.discarded, a.retries))
    line = quiet_wait_line(r, a.quiet_wait)
    if line:
        add(line)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, TOOLS)
    args = ap.parse_args()
    only = selected_tools(args.only, TOOLS)
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon mounts volumes; cold runs drop the page cache)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    b = Bench(args)
    try:
        log(f"work dir {b.work}")
        b.setup()
        run_rounds(b, args.repeat, TOOLS, only)
        emit_report(report(b), args.markdown, args.json,
                    {"bytes": b.bytes, "files": b.files, "dirs": b.dirs, "archive_bytes": b.archive_bytes,
                     "results": b.results, "errors": b.errors})
    finally:
        b.cleanup()
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
