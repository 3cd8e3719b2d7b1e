"""Helpers shared by bench/restore/bench.py and bench/migrate/bench.py (stdlib only).

Private `voltool serve` daemons, the dataset (bench/backup/gendata.py, called, not copied),
a content digest of a tree to prove a result complete, page-cache preparation, /usr/bin/time
records, host CPU accounting and a wait for a quiet host.
"""

import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
GENDATA = os.path.join(HERE, "backup", "gendata.py")
TIME_FMT = "%e %U %S %M"  # elapsed, user, sys, max RSS (KiB)
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs cmd, raising with its stderr on failure; returns stdout."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {(p.stderr or '').strip()[-2000:]}")
    return p.stdout


def fs_type(path):
    return run(["df", "--output=fstype", path]).split()[-1]


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def make_workdir(base, need, prefix, voltool):
    """A fresh work dir under `base` (disk, not tmpfs, `need` bytes free) holding a private copy
    of the voltool binary; exits with the reason otherwise. Returns (work dir, voltool copy)."""
    os.makedirs(base, exist_ok=True)
    if fs_type(base) == "tmpfs":
        sys.exit(f"{base} is tmpfs; pick a disk-backed --workdir-base")
    if free_bytes(base) < need:
        sys.exit(f"{base}: {free_bytes(base) / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB")
    work = tempfile.mkdtemp(prefix=prefix, dir=base)
    return work, shutil.copy2(voltool, os.path.join(work, "voltool"))


def busy_cpu():
    """System-wide busy CPU seconds so far (all CPUs; everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def kernel_threads_cpu():
    """user + sys seconds so far of each of the kernel's own threads (kworker, jbd2, ...: the
    writeback and journal commits a run's syncs cause), by pid."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def kernel_cpu_since(before):
    """Kernel threads' CPU seconds since the `kernel_threads_cpu()` snapshot `before` (threads
    started since count whole; ones that ended in between are lost)."""
    return sum(max(0.0, v - before.get(p, 0.0)) for p, v in kernel_threads_cpu().items())


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def proc_cpu(pid):
    """user + sys seconds of pid (its threads and reaped children included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st + cut + cst) / CLK_TCK


def read_time(path):
    """One /usr/bin/time -f TIME_FMT record: elapsed, user, sys (s), maxrss (bytes)."""
    with open(path) as f:
        e, u, s, m = f.read().split()[-4:]
    return {"elapsed": float(e), "cpu": float(u) + float(s), "maxrss": int(m) * 1024}


def wait_quiet(max_wait, limit=0.25, window=1.0):
    """Waits (at most max_wait s) until the host's busy CPU over `window` s is below `limit`
    CPUs, so a measurement does not start in the middle of someone else's build. Returns
    (seconds waited, busy CPUs in the last window)."""
    t0 = time.monotonic()
    while True:
        c0 = busy_cpu()
        time.sleep(window)
        busy = (busy_cpu() - c0) / window
        waited = time.monotonic() - t0
        if busy < limit or waited >= max_wait:
            return waited, busy


def disturbed(r):
    """Whether other work on the host took noticeable CPU during a run: more than 1 CPU-second
    or 10% of the wall time (a quiet host shows 0-0.4 s, mostly this script's own polling)."""
    return r["other_cpu"] > max(1.0, 0.1 * r["wall"])


def discarded_line(discarded, retries):
    if not discarded:
        return "- no run was disturbed by other work on the host (other CPU ≤ max(1 s, 10% of wall))"
    runs = "; ".join(f"{t} {w:.2f} s (other CPU {o:.1f} s)" for t, w, o in discarded)
    return (f"- discarded as disturbed by other work on the host (other CPU > max(1 s, 10% of wall)) and run "
            f"again (at most {retries} times per measurement; a run still disturbed after that is kept and "
            f"shows in the other CPU column): {runs}")


def drop_caches():
    run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_through(paths):
    """Reads files or trees once through a pipe (GNU tar skips contents into /dev/null)."""
    for p in paths:
        if os.path.isdir(p):
            run(["bash", "-c", 'tar -C "$1" -cf - . | cat > /dev/null', "_", p])
        else:
            run(["bash", "-c", 'cat "$1" > /dev/null', "_", p])


def prepare_cache(mode, warm_paths):
    """`sync`, then drop the page cache (cold) or read warm_paths once (warm)."""
    run(["sync"])
    if mode == "cold":
        drop_caches()
    else:
        read_through(warm_paths)


def timed_sync():
    t0 = time.monotonic()
    run(["sync"])
    return time.monotonic() - t0


# ---- tree digests: proof that a result is complete and right -----------------------------------


def _hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree_digest(root):
    """{relative path: (kind, size, mode, uid, gid, mtime s, sha256 or link target)} of every
    entry under root (root itself excluded), not following symlinks."""
    out = {}
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            mode = st.st_mode
            if (mode & 0o170000) == 0o100000:
                kind, extra = "file", None
                files.append(rel)
            elif (mode & 0o170000) == 0o040000:
                kind, extra = "dir", None
            elif (mode & 0o170000) == 0o120000:
                kind, extra = "symlink", os.readlink(p)
            else:
                kind, extra = "other", None
            size = st.st_size if kind == "file" else 0
            out[rel] = [kind, size, mode & 0o7777, st.st_uid, st.st_gid, int(st.st_mtime), extra]
    with ThreadPoolExecutor(max_workers=NCPU) as ex:  # hashlib releases the GIL
        for rel, h in zip(files, ex.map(lambda r: _hash_file(os.path.join(root, r)), files, chunksize=64)):
            out[rel][6] = h
    return {k: tuple(v) for k, v in out.items()}


def digest_totals(d):
    files = sum(1 for v in d.values() if v[0] == "file")
    dirs = sum(1 for v in d.values() if v[0] == "dir")
    return sum(v[1] for v in d.values()), files, dirs


def compare_digests(want, got):
    """(ok, text): content, type, size, mode and owner must match exactly; mtimes are counted
    (whole seconds) but do not fail the check."""
    bad = []
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    for k in missing[:3]:
        bad.append(f"missing {k}")
    for k in extra[:3]:
        bad.append(f"extra {k}")
    mtime_off = 0
    for k, w in want.items():
        g = got.get(k)
        if g is None:
            continue
        if w[:5] != g[:5] or w[6] != g[6]:
            if len(bad) < 6:
                what = [n for n, a, b in zip(("kind", "size", "mode", "uid", "gid"), w, g) if a != b]
                if w[6] != g[6]:
                    what.append("content")
                bad.append(f"{k}: {','.join(what)} differ")
        elif w[5] != g[5]:
            mtime_off += 1
    nbytes, nfiles, _ = digest_totals(got)
    if missing or extra or bad:
        return False, (f"FAILED: {len(missing)} missing, {len(extra)} extra; " + "; ".join(bad)
                       + f" ({nfiles} files, {nbytes} bytes found)")
    note = f"{nfiles} files, {nbytes} B, sha256 + mode + owner ok"
    if mtime_off:
        note += f", {mtime_off} mtimes differ"
    return True, note


# ---- voltool daemons -------------------------------------------------------------------------


def cli(voltool, api, *argv, check=True, timeout=3600):
    env = dict(os.environ, VOLTOOL_API_SOCKET=api)
    p = subprocess.run([voltool, *argv], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"voltool {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


def stop_daemon(proc, name, logf):
    """Stops a daemon: SIGTERM, SIGKILL if it is still there after 60 s; closes its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            log(f"daemon {name} ignored SIGTERM for 60 s; killing it")
            proc.kill()
            proc.wait()
    logf.close()


class Daemon:
    """A private `voltool serve` (state dir, sockets, log, empty config); optionally in a
    network namespace (nsenter --net, the caller's mount namespace)."""

    registry = []

    def __init__(self, voltool, state, logdir, name, config, netns=None):
        self.voltool, self.state, self.name = voltool, state, name
        self.api = os.path.join(state, "api.sock")
        os.makedirs(state, exist_ok=True)
        self.log_path = os.path.join(logdir, f"daemon-{name}.log")
        self.logf = open(self.log_path, "a")
        cmd = [voltool, "serve", "--state-dir", state, "--plugin-socket", os.path.join(state, "p.sock"),
               "--api-socket", self.api, "--config", config, "--log", "info"]
        if netns:
            cmd = ["nsenter", f"--net=/run/netns/{netns}", "--"] + cmd  # nsenter execs: same pid
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLTOOL_")}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     start_new_session=True)
        self.pid = self.proc.pid
        Daemon.registry.append(self)
        wait_for_api(self.proc, self.api, self.log_path, f"voltool serve ({name})")
        # Settle: the first answers prove the daemon is fully up before anything is measured.
        cli(voltool, self.api, "volume", "ls", "-q")

    def cli(self, *argv, check=True):
        return cli(self.voltool, self.api, *argv, check=check)

    def hwm(self):
        return proc_status(self.pid, "VmHWM")

    def rss(self):
        return proc_status(self.pid, "VmRSS")

    def cpu(self):
        return proc_cpu(self.pid)

    def stop(self):
        stop_daemon(self.proc, self.name, self.logf)
        if self in Daemon.registry:
            Daemon.registry.remove(self)

    @classmethod
    def stop_all(cls):
        for d in list(cls.registry):
            try:
                d.stop()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log(f"stopping daemon {d.name}: {e}")


def write_empty_config(path):
    with open(path, "w") as f:
        f.write("# empty: defaults (zstd level 3, one worker per CPU)\n")


def volume_data_dir(state, volume):
    """Where a directory volume's data lives (what the daemon bind-mounts)."""
    return os.path.join(state, "volumes", volume, "data")


def make_dataset(daemon, volume, scale, seed):
    """Creates `volume` and fills it with bench/backup/gendata.py; returns its data dir and the
    generator's summary."""
    daemon.cli("volume", "create", volume)
    mnt = daemon.cli("volume", "mount", volume, "--id", "bench").stdout.strip().splitlines()[-1]
    log(f"generating the dataset (scale {scale}) into volume {volume} at {mnt}")
    t0 = time.monotonic()
    gen = json.loads(run([sys.executable, GENDATA, mnt, "--scale", str(scale), "--seed", str(seed)]))
    run(["sync"])
    log(f"dataset written in {time.monotonic() - t0:.0f} s: {gen}")
    daemon.cli("volume", "unmount", volume, "--id", "bench")
    data = volume_data_dir(daemon.state, volume)
    if not os.path.isdir(os.path.join(data, "small")):
        raise RuntimeError(f"dataset not found in {data} (volume layout changed?)")
    return data, gen


def unmount_under(prefix):
    with open("/proc/self/mountinfo") as f:
        left = [line.split()[4] for line in f if line.split()[4].startswith(prefix.rstrip("/") + "/")]
    for m in sorted(left, reverse=True):
        log(f"unmounting leftover {m}")
        subprocess.run(["umount", "-l", m])


# ---- reporting -------------------------------------------------------------------------------


def mem_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


def host_line():
    return (f"{datetime.date.today().isoformat()}, kernel {platform.release()}, {NCPU} CPUs (nproc), "
            f"{mem_gib():.0f} GiB RAM")


def fmt_mib(b):
    return f"{b / MIB:.1f}"


def med(xs):
    return statistics.median(xs)


def spread(xs, fmt="{:.2f}"):
    """'median' or 'median (min–max)' for several runs."""
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


class Sampler(threading.Thread):
    """Polls the RSS of some pids every 50 ms (a cross-check of VmHWM; not the reported peak)."""

    def __init__(self, pids, interval=0.05):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.max = {p: 0 for p in pids}
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for p in self.pids:
                try:
                    self.max[p] = max(self.max[p], proc_status(p, "VmRSS"))
                except (OSError, KeyError):
                    pass
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()


def quiet_wait_line(results, max_wait):
    """The report's line on how long the runs waited for a quiet host (None without runs)."""
    runs = [x for xs in results.values() for x in xs]
    if not runs:
        return None
    waits = [x["waited"] for x in runs]
    loads = [x["loadavg"] for x in runs]
    return (f"- waited for a quiet host (< 0.25 busy CPUs over 1 s, at most {max_wait} s) before each run: "
            f"{min(waits):.0f}–{max(waits):.0f} s; load average (1 min) at the starts "
            f"{min(loads):.2f}–{max(loads):.2f}")


def add_run_args(ap, tools, repeat=3):
    """The options bench/restore and bench/migrate share."""
    ap.add_argument("--voltool", required=True)
    ap.add_argument("--workdir-base", default="/var/tmp")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--quiet-wait", type=float, default=120, help="max seconds to wait for a quiet host per run")
    ap.add_argument("--retries", type=int, default=2,
                    help="runs disturbed by other work on the host (see disturbed()) are redone up to this often")
    ap.add_argument("--only", default=",".join(tools), help="comma-separated subset of " + ",".join(tools))
    ap.add_argument("--markdown", help="also write the report to this file")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (dataset, logs)")


def selected_tools(only, tools):
    """The --only list, checked against the known tools (exits naming an unknown one)."""
    picked = [t for t in only.split(",") if t]
    for t in picked:
        if t not in tools:
            sys.exit(f"unknown tool {t}; known: {', '.join(tools)}")
    return picked


def wait_for_api(proc, sock, log_path, what):
    """Waits (at most 60 s) until the daemon `proc` accepts connections on its API socket."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"voltool serve exited ({proc.returncode}); see {log_path}:\n"
                               + open(log_path).read()[-2000:])
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not open its API socket within 60 s")
            time.sleep(0.05)


def run_rounds(b, repeat, tools, only):
    """Measures every selected tool once per round, in `tools` order (interleaved rounds); a tool
    that failed (in `b.errors`) is not run again."""
    for i in range(repeat):
        log(f"round {i + 1} of {repeat}")
        for name in tools:
            if name in only and name not in b.errors:
                b.measure(name)


def emit_report(text, markdown, json_path, data):
    """Prints the report and writes it (--markdown) and the raw results (--json) when asked."""
    print(text)
    if markdown:
        with open(markdown, "w") as f:
            f.write(text + "\n")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
