#!/usr/bin/env python3
"""Backup throughput benchmark driver (stdlib only). Use ./run.sh, which builds voltool first.

usage: bench.py --voltool PATH [--workdir-base DIR] [--cache cold|warm] [--scale F] [--seed N]
                [--s3-port N] [--s3s-fs PATH] [--only LIST] [--nice N] [--quiet-wait SECONDS]
                [--markdown FILE] [--json FILE] [--keep]

Generates one dataset (gendata.py) directly into a voltool directory volume, then measures,
one after the other and each reading that same directory:

  voltool-disk  `voltool backup run bench --target DIR` against a fresh private daemon
  tar-zstd      `tar -cf - DIR | zstd -3 -T0 > out.tar.zst`             (the reference)
  tar-gz        `tar czf out.tar.gz DIR`                                  (the seed recipe)
  restic        `restic backup --repo R DIR` into a fresh repo (init not timed)
  voltool-s3    `voltool backup run bench --target s3://...` against a fresh private daemon
                and a private s3s-fs on 127.0.0.1

Before each measurement: `sync`, then either drop the page cache (--cache cold, default) or
read the whole dataset once through a pipe (--cache warm). Prints a markdown report: table,
ratios, PASS/FAIL per target.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = ["voltool-disk", "tar-zstd", "tar-gz", "restic", "voltool-s3"]
LABELS = {
    "voltool-disk": "voltool backup → disk",
    "tar-zstd": "`tar -cf - \\| zstd -3 -T0`",
    "tar-gz": "`tar czf`",
    "restic": "restic 0.14 first backup",
    "voltool-s3": "voltool backup → S3 (s3s-fs)",
}
TIME_FMT = "%e %U %S %M"  # elapsed, user, sys, max RSS (KiB)
CLK_TCK = os.sysconf("SC_CLK_TCK")
S3_KEY, S3_SECRET, S3_BUCKET = "benchkey", "benchsecret", "bench"

sys.path.insert(0, os.path.join(HERE, ".."))
from common import (busy_cpu, emit_report, fmt_mib, free_bytes, fs_type, log, mem_gib,  # noqa: E402
                    proc_status, run, stop_daemon, wait_for_api)


def tree_size(path):
    """(bytes of regular files, files, dirs) under path, not following symlinks."""
    total = files = dirs = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirs += len(dirnames)
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            total += st.st_size
            files += 1
    return total, files, dirs


def proc_cpu(pid):
    """(user, sys) seconds of pid (its threads included; reaped children too)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + cut) / CLK_TCK, (st + cst) / CLK_TCK


class FdWatcher(threading.Thread):
    """Polls /proc/PID/fd and records every regular file the process has open for writing."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.written = set()
        self.max_rss = 0
        self.samples = 0
        self.threads = {}  # tid -> (comm, user+sys seconds at the last poll)
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)
        self.poll()

    def poll(self):
        base = f"/proc/{self.pid}"
        try:
            fds = os.listdir(base + "/fd")
            self.max_rss = max(self.max_rss, proc_status(self.pid, "VmRSS"))
        except (FileNotFoundError, ProcessLookupError, KeyError):
            return
        self.samples += 1
        try:
            for tid in os.listdir(base + "/task"):
                with open(f"{base}/task/{tid}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                v = rest.split()
                self.threads[tid] = (head.split("(", 1)[1], (int(v[11]) + int(v[12])) / CLK_TCK)
        except OSError:
            pass
        for fd in fds:
            try:
                target = os.readlink(f"{base}/fd/{fd}")
                if not target.startswith("/"):
                    continue  # socket:, pipe:, anon_inode:
                with open(f"{base}/fdinfo/{fd}") as f:
                    flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            if flags & 3:  # O_WRONLY or O_RDWR
                self.written.add(target)

    def stop(self):
        self._halt.set()
        self.join()


class Daemon:
    """A private `voltool serve` with its own state dir, sockets, log and empty TMPDIR."""

    def __init__(self, bench, name, env_extra=None):
        self.b, self.name = bench, name
        self.tmpdir = os.path.join(bench.work, f"daemon-tmp-{name}")
        os.makedirs(self.tmpdir)
        self.log_path = os.path.join(bench.work, "logs", f"daemon-{name}.log")
        env = dict(os.environ, TMPDIR=self.tmpdir, VOLTOOL_API_SOCKET=bench.api_sock, **(env_extra or {}))
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [bench.voltool, "serve", "--state-dir", bench.state, "--plugin-socket", bench.plugin_sock,
             "--config", bench.config, "--log", "info"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
        bench.daemons.append(self)
        wait_for_api(self.proc, bench.api_sock, self.log_path, "voltool serve")
        self.pid = self.proc.pid

    def stop(self):
        stop_daemon(self.proc, self.name, self.logf)
        if self in self.b.daemons:
            self.b.daemons.remove(self)


class Bench:
    def __init__(self, args):
        self.args = args
        self.voltool = os.path.abspath(args.voltool)
        base = args.workdir_base
        os.makedirs(base, exist_ok=True)
        if fs_type(base) == "tmpfs":
            sys.exit(f"{base} is tmpfs; pick a disk-backed --workdir-base (the dataset must be read from disk)")
        need = int((1.25 * 6 + 1) * (1 << 30) * args.scale)
        if free_bytes(base) < need:
            sys.exit(f"{base}: {free_bytes(base) / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB")
        self.work = tempfile.mkdtemp(prefix="voltool-bench-backup.", dir=base)
        # A private copy: a concurrent `cargo build` must not swap the binary between runs.
        os.makedirs(os.path.join(self.work, "bin"))
        self.voltool = shutil.copy2(self.voltool, os.path.join(self.work, "bin", "voltool"))
        self.state = os.path.join(self.work, "state")
        self.api_sock = os.path.join(self.state, "api.sock")
        self.plugin_sock = os.path.join(self.state, "p.sock")
        self.config = os.path.join(self.work, "voltool.toml")
        with open(self.config, "w") as f:
            f.write("# empty: defaults (zstd level 3, one worker per CPU)\n")
        self.out = os.path.join(self.work, "out")
        for d in (self.state, self.out, os.path.join(self.work, "logs")):
            os.makedirs(d)
        self.daemons = []
        self.s3proc = None
        self.volume_created = False
        self.results = {}
        self.data = None

    # ---- helpers -------------------------------------------------------------------------------

    def cli(self, *argv, check=True):
        env = dict(os.environ, VOLTOOL_API_SOCKET=self.api_sock)
        p = subprocess.run([self.voltool, *argv], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and p.returncode != 0:
            raise RuntimeError(f"voltool {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def prepare_cache(self):
        run(["sync"])
        if self.args.cache == "cold":
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        else:
            # Through a pipe: GNU tar does not read file contents when writing to /dev/null.
            run(["bash", "-c", 'tar -C "$1" -cf - "$2" | cat > /dev/null', "_",
                 os.path.dirname(self.data), os.path.basename(self.data)])

    # ---- dataset -------------------------------------------------------------------------------

    def make_dataset(self):
        d = Daemon(self, "setup")
        self.cli("volume", "create", "bench")
        self.volume_created = True
        mnt = self.cli("volume", "mount", "bench").stdout.strip().splitlines()[-1]
        log(f"generating the dataset (scale {self.args.scale}) into volume bench at {mnt}")
        t0 = time.monotonic()
        self.gen = json.loads(run([sys.executable, os.path.join(HERE, "gendata.py"), mnt,
                                   "--scale", str(self.args.scale), "--seed", str(self.args.seed)]))
        run(["sync"])
        log(f"dataset written in {time.monotonic() - t0:.0f} s: {self.gen}")
        self.cli("volume", "unmount", "bench")
        d.stop()
        # The volume's data directory: what the daemon bind-mounts and what every tool reads.
        self.data = os.path.join(self.state, "volumes", "bench", "data")
        if not os.path.isdir(os.path.join(self.data, "small")):
            raise RuntimeError(f"dataset not found in {self.data} (volume layout changed?)")
        self.bytes, self.files, self.dirs = tree_size(self.data)
        log(f"dataset: {self.bytes} bytes in {self.files} files, {self.dirs} dirs")

    # ---- measurements --------------------------------------------------------------------------

    def timed_shell(self, name, script, time_files, env=None):
        """Runs a bash script (which writes /usr/bin/time outputs to time_files); returns wall and
        the per-process time records."""
        self.prepare_cache()
        c0 = busy_cpu()
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", "set -o pipefail\n" + script], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.monotonic() - t0
        self.busy = busy_cpu() - c0
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        recs = []
        for tf in time_files:
            with open(tf) as f:
                e, u, s, m = f.read().split()[-4:]
            recs.append({"elapsed": float(e), "user": float(u), "sys": float(s), "maxrss": int(m) * 1024})
        return wall, recs

    def m_tar_zstd(self):
        out = os.path.join(self.out, "ref.tar.zst")
        t1, t2 = (os.path.join(self.work, "logs", f"time-tar-zstd-{i}") for i in (1, 2))
        parent, base = os.path.split(self.data)
        script = (f"/usr/bin/time -o {t1} -f '{TIME_FMT}' tar -C '{parent}' -cf - '{base}' "
                  f"| /usr/bin/time -o {t2} -f '{TIME_FMT}' zstd -3 -T0 -q > '{out}'")
        wall, recs = self.timed_shell("tar | zstd", script, [t1, t2])
        self.results["tar-zstd"] = {
            "wall": wall, "out_bytes": os.path.getsize(out),
            "rss": sum(r["maxrss"] for r in recs), "rss_note": "tar + zstd peaks summed",
            "user": sum(r["user"] for r in recs), "sys": sum(r["sys"] for r in recs)}
        os.remove(out)

    def m_tar_gz(self):
        out = os.path.join(self.out, "seed.tar.gz")
        tf = os.path.join(self.work, "logs", "time-tar-gz")
        parent, base = os.path.split(self.data)
        script = f"/usr/bin/time -o {tf} -f '{TIME_FMT}' tar -C '{parent}' -czf '{out}' '{base}'"
        wall, (rec,) = self.timed_shell("tar czf", script, [tf])
        self.results["tar-gz"] = {
            "wall": wall, "out_bytes": os.path.getsize(out), "rss": rec["maxrss"],
            "rss_note": "larger of tar and its gzip child", "user": rec["user"], "sys": rec["sys"]}
        os.remove(out)

    def m_restic(self):
        repo = os.path.join(self.out, "restic-repo")
        cache = os.path.join(self.work, "restic-cache")
        env = dict(os.environ, RESTIC_PASSWORD="x")
        run(["restic", "init", "--repo", repo, "--cache-dir", cache], env=env)
        tf = os.path.join(self.work, "logs", "time-restic")
        logf = os.path.join(self.work, "logs", "restic-backup.log")
        script = (f"/usr/bin/time -o {tf} -f '{TIME_FMT}' restic backup --repo '{repo}' --cache-dir '{cache}' "
                  f"'{self.data}' > '{logf}'")
        wall, (rec,) = self.timed_shell("restic backup", script, [tf], env=env)
        size = run(["du", "-sb", repo]).split()[0]
        self.results["restic"] = {
            "wall": wall, "out_bytes": int(size), "rss": rec["maxrss"], "rss_note": "",
            "user": rec["user"], "sys": rec["sys"], "out_note": "repo dir (du -sb)"}
        shutil.rmtree(repo)
        shutil.rmtree(cache, ignore_errors=True)

    def measure_voltool(self, name, target, env_extra, locate, server_pid=None):
        d = Daemon(self, name, env_extra)
        try:
            state_before = self.state_files()
            idle_rss = proc_status(d.pid, "VmRSS")
            u0, s0 = proc_cpu(d.pid)
            self.prepare_cache()
            w = FdWatcher(d.pid)
            w.poll()
            threads0 = dict(w.threads)
            w.start()
            c0 = busy_cpu()
            srv0 = sum(proc_cpu(server_pid)) if server_pid else 0.0
            t0 = time.monotonic()
            p = self.cli("backup", "run", "bench", "--target", target, "--json", check=False)
            wall = time.monotonic() - t0
            self.busy = busy_cpu() - c0
            server_cpu = sum(proc_cpu(server_pid)) - srv0 if server_pid else None
            w.stop()
            if p.returncode != 0:
                raise RuntimeError(p.stderr.strip() or p.stdout.strip())
            hwm = proc_status(d.pid, "VmHWM")
            u1, s1 = proc_cpu(d.pid)
            entry = json.loads(p.stdout)
            archive = locate(entry["id"])
            tmp_left = sorted(os.listdir(d.tmpdir))
            state_new = sorted(self.state_files() - state_before)
        finally:
            d.stop()
        size = os.path.getsize(archive)
        ok = subprocess.run(["zstd", "-tq", archive]).returncode == 0
        written = sorted(w.written)
        self.results[name] = {
            "wall": wall, "out_bytes": size, "rss": hwm, "rss_note": "daemon VmHWM (fresh daemon)",
            "idle_rss": idle_rss, "sampled_rss": w.max_rss, "user": u1 - u0, "sys": s1 - s0,
            "daemon_ms": entry.get("duration_ms"), "bytes_in": entry.get("bytes_in"),
            "bytes_out": entry.get("bytes_out"), "files": entry.get("files"), "id": entry["id"],
            "zstd_test": ok, "written": written, "tmp_left": tmp_left, "state_new": state_new,
            "fd_samples": w.samples, "log": d.log_path, "server_cpu": server_cpu,
            "threads": sorted(((c - threads0.get(t, ("", 0.0))[1], n) for t, (n, c) in w.threads.items()
                               if c - threads0.get(t, ("", 0.0))[1] >= 0.05), reverse=True)}
        return archive

    def state_files(self):
        """Files in the state dir outside volume data and mounts."""
        found = set()
        skip = {os.path.join(self.state, "volumes"), os.path.join(self.state, "mounts")}
        for dirpath, dirnames, filenames in os.walk(self.state):
            dirnames[:] = [x for x in dirnames if os.path.join(dirpath, x) not in skip]
            found.update(os.path.join(dirpath, f) for f in filenames)
        return found

    def m_voltool_disk(self):
        target = os.path.join(self.out, "voltool-disk")
        os.makedirs(target)
        archive = self.measure_voltool("voltool-disk", target, {},
                                       lambda bid: os.path.join(target, bid + ".tar.zst"))
        self.results["voltool-disk"]["target_total"] = int(run(["du", "-sb", target]).split()[0])
        os.remove(archive)
        shutil.rmtree(target)

    def m_voltool_s3(self):
        s3data = os.path.join(self.work, "s3data")
        os.makedirs(os.path.join(s3data, S3_BUCKET))
        port = self.args.s3_port
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"127.0.0.1:{port} is already in use; pick another --s3-port")
        logf = open(os.path.join(self.work, "logs", "s3s-fs.log"), "w")
        self.s3proc = subprocess.Popen(
            [self.args.s3s_fs, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
             "--secret-key", S3_SECRET, s3data], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        deadline = time.monotonic() + 30
        while True:
            if self.s3proc.poll() is not None:
                raise RuntimeError("s3s-fs exited at start; see logs/s3s-fs.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("s3s-fs did not listen within 30 s")
            time.sleep(0.05)
        env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        target = f"s3://{S3_BUCKET}/run1?endpoint=http://127.0.0.1:{port}&path_style=true"
        try:
            self.measure_voltool("voltool-s3", target, env,
                                 lambda bid: os.path.join(s3data, S3_BUCKET, "run1", bid + ".tar.zst"),
                                 server_pid=self.s3proc.pid)
            self.results["voltool-s3"]["s3_objects"] = sorted(
                os.path.relpath(os.path.join(dp, f), s3data) for dp, _, fs in os.walk(s3data) for f in fs)
        finally:
            self.stop_s3()
        shutil.rmtree(s3data)

    def stop_s3(self):
        if self.s3proc and self.s3proc.poll() is None:
            self.s3proc.terminate()
            try:
                self.s3proc.wait(20)
            except subprocess.TimeoutExpired:
                self.s3proc.kill()
                self.s3proc.wait()
        self.s3proc = None

    # ---- cleanup -------------------------------------------------------------------------------

    def cleanup(self):
        for d in list(self.daemons):
            d.stop()
        self.stop_s3()
        if self.volume_created and not self.args.keep:
            try:
                d = Daemon(self, "cleanup")
                try:
                    self.cli("volume", "unmount", "bench", check=False)
                    self.cli("volume", "rm", "--force", "bench")
                finally:
                    d.stop()
            except Exception as e:  # noqa: BLE001 - report and go on cleaning
                log(f"could not remove volume bench: {e}")
        with open("/proc/mounts") as f:
            left = [line.split()[1] for line in f if line.split()[1].startswith(self.work)]
        for m in sorted(left, reverse=True):
            log(f"unmounting leftover {m}")
            subprocess.run(["umount", "-l", m])
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---- report ------------------------------------------------------------------------------------


def report(b, errors):
    a = b.args
    r = b.results
    lines = []
    add = lines.append
    host = (f"{datetime.date.today().isoformat()}, kernel {platform.release()}, {os.cpu_count()} CPUs (nproc), "
            f"{mem_gib():.0f} GiB RAM")
    add(f"Host: {host}")
    add(f"Dataset: {b.bytes} bytes ({b.bytes / MIB:.0f} MiB) in {b.files} files and {b.dirs} directories "
        f"(gendata.py scale {a.scale}, seed {a.seed}); page cache: {a.cache} before every run "
        f"({'sync + drop_caches' if a.cache == 'cold' else 'sync + whole dataset read once'})"
        f"{f'; everything at nice {a.nice}' if a.nice else ''}.")
    add("")
    add("| tool | wall (s) | throughput (MiB/s) | vs tar\\|zstd | output (MiB) | output/input | peak RSS (MiB) "
        "| CPU user+sys (s) | other CPU (s) |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = r.get("tar-zstd")

    def thr(name):
        return b.bytes / r[name]["wall"]

    for name in TOOLS:
        if name in r:
            x = r[name]
            vs = f"{thr(name) / thr('tar-zstd'):.2f}×" if ref else "-"
            add(f"| {LABELS[name]} | {x['wall']:.2f} | {thr(name) / MIB:.1f} | {vs} | {fmt_mib(x['out_bytes'])} | "
                f"{x['out_bytes'] / b.bytes:.3f} | {fmt_mib(x['rss'])} | {x['user']:.1f} + {x['sys']:.1f} | "
                f"{x['other_cpu']:.1f} |")
        elif name in errors:
            add(f"| {LABELS[name]} | not measured: {errors[name]} | | | | | | | |")
    add("")
    add("Throughput = dataset bytes / wall time. Peak RSS: voltool = VmHWM of a daemon started just for "
        "that backup; tar|zstd = tar + zstd peaks summed; tar czf = larger of tar and gzip; restic = "
        "/usr/bin/time. Output: the archive file (voltool: ID.tar.zst only; the manifest is separate), "
        "restic: repo dir. Other CPU: busy CPU time of the whole host during the run (/proc/stat) minus the "
        "tool's own, i.e. anything else that ran meanwhile (0 on a quiet host; the voltool rows include "
        "the CLI polling the daemon).")
    for name in ("voltool-disk", "voltool-s3"):
        if name in r:
            x = r[name]
            extra = ""
            if "target_total" in x:
                extra = f", target dir incl. manifest + .sha256 {fmt_mib(x['target_total'])} MiB"
            server = ""
            if x.get("server_cpu") is not None:
                server = f"; s3s-fs (on this host) used {x['server_cpu']:.1f} s CPU meanwhile (counted in other CPU)"
            add(f"{LABELS[name]}: daemon duration_ms {x['daemon_ms']} (CLI wall {x['wall'] * 1000:.0f} ms, the CLI "
                f"follows the run every 20 ms for 2 s, then every 250 ms), bytes_in {x['bytes_in']}, bytes_out {x['bytes_out']}, files {x['files']}, "
                f"idle daemon RSS {fmt_mib(x['idle_rss'])} MiB, max sampled RSS {fmt_mib(x['sampled_rss'])} MiB, "
                f"daemon CPU {x['user']:.1f} s user + {x['sys']:.1f} s sys "
                f"({(x['user'] + x['sys']) / x['wall']:.2f} CPUs busy on average), "
                f"`zstd -t` {'ok' if x['zstd_test'] else 'FAILED'}{extra}"
                f"{server}"
                f"; daemon threads' CPU during the run "
                f"(s, ≥ 0.05): {', '.join(f'{n} {c:.1f}' for c, n in x['threads']) or '-'}.")
    add("")

    verdicts = []

    def target(label, ok, detail):
        verdicts.append((label, ok, detail))

    def ratio_line(vname, other, goal):
        label = f"{LABELS[vname]} throughput ≥ {goal}× {LABELS[other]}"
        if vname in r and other in r:
            q = thr(vname) / thr(other)
            target(label, q >= goal, f"{q:.2f}×")
        else:
            target(label, None, "not measured")

    add("| ratio | voltool → disk | voltool → S3 |")
    add("|---|---:|---:|")
    for other in ("tar-zstd", "tar-gz", "restic"):
        cells = []
        for v in ("voltool-disk", "voltool-s3"):
            cells.append(f"{thr(v) / thr(other):.2f}×" if v in r and other in r else "-")
        add(f"| throughput vs {LABELS[other]} | {cells[0]} | {cells[1]} |")
    cells = []
    for v in ("voltool-disk", "voltool-s3"):
        cells.append(f"{r[v]['out_bytes'] / r['tar-zstd']['out_bytes']:.4f}" if v in r and ref else "-")
    add(f"| output size vs {LABELS['tar-zstd']} | {cells[0]} | {cells[1]} |")
    add("")

    # The throughput targets are for the backup to disk; for S3 it sets memory and
    # "no temp files" (the S3 server shares this host's CPUs: its ratios are in the table only).
    for v in ("voltool-disk",):
        ratio_line(v, "tar-zstd", 1.0)
        ratio_line(v, "tar-gz", 4)
        ratio_line(v, "restic", 2)
    scale_note = "" if a.scale == 1.0 else f" (limit scaled: dataset scale {a.scale})"
    for v, limit in (("voltool-disk", 64), ("voltool-s3", 128)):
        label = f"{LABELS[v]} daemon peak RSS ≤ {limit} MiB{scale_note}"
        if v in r:
            target(label, r[v]["rss"] <= limit * MIB, f"{fmt_mib(r[v]['rss'])} MiB")
        else:
            target(label, None, "not measured")
    for v in ("voltool-disk", "voltool-s3"):
        label = f"{LABELS[v]} output size within 2% of {LABELS['tar-zstd']}"
        if v in r and ref:
            q = r[v]["out_bytes"] / ref["out_bytes"]
            target(label, abs(q - 1) <= 0.02, f"{(q - 1) * 100:+.2f}%")
        else:
            target(label, None, "not measured")
    label = "voltool → S3 writes no temporary files"
    if "voltool-s3" in r:
        x = r["voltool-s3"]
        # Expected: the catalog (SQLite + WAL), the state dir lock, the daemon's stderr log (opened
        # by this script) and /dev/null. Anything else written is a temporary file.
        known = [p for p in x["written"] if p.startswith("/dev/") or p == x["log"]
                 or p == os.path.join(b.state, ".lock") or p.startswith(os.path.join(b.state, "voltool.db"))]
        other = [p for p in x["written"] if p not in known]
        ok = not other and not x["tmp_left"] and not x["state_new"]
        target(label, ok, f"regular files open for writing (polled every 50 ms, {x['fd_samples']} samples): "
                          f"{other or 'none'} besides {sorted(p.replace(b.work, 'WORK') for p in known)}; "
                          f"daemon TMPDIR after the run: {x['tmp_left'] or 'empty'}; new files in the state dir: "
                          f"{x['state_new'] or 'none'}")
    else:
        target(label, None, "not measured")
    if "voltool-disk" in r:
        x = r["voltool-disk"]
        add(f"voltool → disk: regular files open for writing while polled: "
            f"{sorted(p.replace(b.work, 'WORK') for p in x['written'])}")
        add("")
    for label, ok, detail in verdicts:
        word = "PASS" if ok else ("FAIL" if ok is False else "NOT MEASURED")
        add(f"- **{word}** {label}: {detail}")
    return "\n".join(lines)


def other_bench_running():
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if "/voltool-bench-" in cmd or ("bench/" in cmd and "bench.py" in cmd):
            return True
    return False


def wait_quiet(limit):
    deadline = time.monotonic() + limit
    ok = 0
    while time.monotonic() < deadline:
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        ok = ok + 1 if load < 1.0 and not other_bench_running() else 0
        if ok >= 3:
            log(f"host quiet (load {load})")
            return
        time.sleep(20)
    log(f"host not quiet after {limit} s; running anyway")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voltool", required=True)
    ap.add_argument("--workdir-base", default="/var/tmp")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--s3-port", type=int, default=18030)
    ap.add_argument("--s3s-fs", default=shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs"))
    ap.add_argument("--only", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--markdown", help="also write the report to this file")
    ap.add_argument("--nice", type=int, default=0,
                    help="run everything (dataset, daemons, every tool) at this CPU nice value, and with "
                         "best-effort I/O priority 0 when negative: less disturbance on a shared host")
    ap.add_argument("--quiet-wait", type=int, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for a quiet host (1-min load < 1.0 for 60 s and no other "
                         "voltool-bench-* work dir in use), then run anyway")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir (dataset in state/volumes/bench/data, logs); the volume is not "
                         "removed, no daemon or mount is left: rm -rf the work dir afterwards")
    args = ap.parse_args()
    only = [t for t in args.only.split(",") if t]
    for t in only:
        if t not in TOOLS:
            sys.exit(f"unknown tool {t}; known: {', '.join(TOOLS)}")
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon mounts volumes; cold runs drop the page cache)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quiet_wait:
        wait_quiet(args.quiet_wait)
    if args.nice:
        os.nice(args.nice)  # inherited by every process this script starts
        if args.nice < 0:
            run(["ionice", "-c", "2", "-n", "0", "-p", str(os.getpid())])
    b = Bench(args)
    errors = {}
    try:
        log(f"work dir {b.work}")
        b.make_dataset()
        steps = {"voltool-disk": b.m_voltool_disk, "tar-zstd": b.m_tar_zstd, "tar-gz": b.m_tar_gz,
                 "restic": b.m_restic, "voltool-s3": b.m_voltool_s3}
        for name in TOOLS:
            if name not in only:
                continue
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            log(f"measuring {name} (load average {load})")
            try:
                steps[name]()
                x = b.results[name]
                x["loadavg"] = float(load)
                x["other_cpu"] = max(0.0, b.busy - x["user"] - x["sys"])
                log(f"{name}: {x['wall']:.2f} s, {b.bytes / x['wall'] / MIB:.1f} MiB/s, "
                    f"out {fmt_mib(x['out_bytes'])} MiB, peak RSS {fmt_mib(x['rss'])} MiB")
            except Exception as e:  # noqa: BLE001 - one tool failing must not hide the others
                errors[name] = str(e).replace("\n", " ")[:300]
                log(f"{name} FAILED: {e}")
        emit_report(report(b, errors), args.markdown, args.json,
                    {"bytes": b.bytes, "files": b.files, "dirs": b.dirs, "results": b.results, "errors": errors})
    finally:
        b.cleanup()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
