#!/usr/bin/env python3
"""Migration benchmark driver (stdlib only). Use ./run.sh, which builds voltool first.

usage: bench.py --voltool PATH [--workdir-base DIR] [--cache cold|warm] [--scale F] [--seed N]
                [--repeat N] [--only LIST] [--quiet-wait S] [--markdown FILE] [--json FILE] [--keep]

Two hosts on one machine: host A is the caller (root network namespace, its own voltool
daemon holding the source volume); host B is a private network namespace reached over a veth
pair, with its own sshd (key-only root login) and its own voltool daemon. The bench/backup
dataset (gendata.py) is generated into volume `bench` on A, then each of these moves it to B:

  voltool   `voltool migrate bench root@B:mN -e SSH --remote-voltool WRAPPER` (fresh daemons on
            both sides; the wrapper sets B's API socket and execs `voltool receive`)
  seed      `tar czf - -C SRC . | ssh root@B "mkdir -p DST && tar xzf - -C DST"`  (the seed recipe)
  tar-zstd  `tar -cf - -C SRC . | zstd -3 -T0 | ssh root@B "mkdir -p DST && zstd -d | tar -xf - -C DST"`

SSH is `ssh -F CONFIG` (through a small wrapper that records its peak RSS) for all three; the
peers land in a directory on B's state filesystem. Every result is compared with the source
(every file's sha256, size, mode, owner). Before each run: `sync`, then drop the page cache
(--cache cold, default) or read the source once (warm).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import (MIB, add_run_args, emit_report, run_rounds, quiet_wait_line, selected_tools, TIME_FMT, Daemon, busy_cpu, kernel_threads_cpu, kernel_cpu_since, compare_digests, digest_totals, discarded_line,  # noqa: E402
                    disturbed, fmt_mib, free_bytes, fs_type, host_line, log, make_dataset, med, prepare_cache,
                    proc_cpu, proc_status, read_time, run, spread, timed_sync, tree_digest, unmount_under,
                    volume_data_dir, wait_quiet, write_empty_config)

TOOLS = ["voltool", "seed", "tar-zstd"]
LABELS = {
    "voltool": "`voltool migrate` (daemon → ssh → daemon)",
    "seed": "`tar czf - \\| ssh \\| tar xzf -` (seed)",
    "tar-zstd": "`tar \\| zstd -3 -T0 \\| ssh \\| zstd -d \\| tar x`",
}
NS = "vtbenchmig"
LINK_A, LINK_B = "vtbmigA", "vtbmigB"
ADDR_A, ADDR_B = "10.250.97.1", "10.250.97.2"


class HwmPoller(threading.Thread):
    """Keeps the last VmHWM read of a process (VmHWM only grows, so the last read is its peak
    up to ~50 ms before it exits)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.hwm = pid, 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.hwm = max(self.hwm, proc_status(self.pid, "VmHWM"))
            except (OSError, KeyError):
                pass
            self._halt.wait(0.05)

    def stop(self):
        self._halt.set()
        self.join()


class Lab:
    """Host B: network namespace NS, veth pair, sshd; host B's daemon is started per run."""

    def __init__(self, work):
        self.dir = os.path.join(work, "lab")
        self.b = os.path.join(work, "hostB")
        self.client = os.path.join(self.dir, "client")
        self.ssh_config = os.path.join(self.dir, "ssh_config")
        self.ssh_wrapper = os.path.join(self.dir, "ssh")
        self.sshd_pidfile = os.path.join(self.dir, "sshd.pid")
        self.up = False

    def start(self, logs):
        for d in (self.dir, self.b, self.client):
            os.makedirs(d, mode=0o700, exist_ok=True)
        if subprocess.run(["ip", "netns", "pids", NS], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            log(f"removing a stale namespace {NS} (an earlier run of this benchmark)")
            self.teardown_ns()
        self.up = True
        run(["ip", "netns", "add", NS])
        run(["ip", "link", "add", LINK_A, "type", "veth", "peer", "name", LINK_B, "netns", NS])
        run(["ip", "addr", "add", f"{ADDR_A}/30", "dev", LINK_A])
        run(["ip", "-n", NS, "addr", "add", f"{ADDR_B}/30", "dev", LINK_B])
        run(["ip", "link", "set", LINK_A, "up"])
        run(["ip", "-n", NS, "link", "set", "lo", "up"])
        run(["ip", "-n", NS, "link", "set", LINK_B, "up"])
        hostkey = os.path.join(self.dir, "hostkey")
        key = os.path.join(self.client, "id_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-hostB", "-f", hostkey])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-client", "-f", key])
        shutil.copy(key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(hostkey + ".pub") as f:
            hk = " ".join(f.read().split()[:2])
        with open(os.path.join(self.client, "known_hosts"), "w") as f:
            f.write(f"{ADDR_B} {hk}\n")
        with open(self.ssh_config, "w") as f:
            f.write(f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                    f"  UserKnownHostsFile {self.client}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
                    "  BatchMode yes\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  ConnectTimeout 10\n")
        # Every row's ssh goes through this wrapper: same ssh, and its peak RSS is recorded.
        with open(self.ssh_wrapper, "w") as f:
            f.write("#!/bin/sh\n# bench/migrate: ssh -F CONFIG, timed (peak RSS) into $BENCH_SSH_TIME\n"
                    f"exec /usr/bin/time -o \"${{BENCH_SSH_TIME:-/dev/null}}\" -f '{TIME_FMT}' "
                    f"ssh -F {self.ssh_config} \"$@\"\n")
        os.chmod(self.ssh_wrapper, 0o755)
        sshd_config = os.path.join(self.dir, "sshd_config")
        with open(sshd_config, "w") as f:
            f.write(f"ListenAddress {ADDR_B}:22\nHostKey {hostkey}\nPidFile {self.sshd_pidfile}\n"
                    f"AuthorizedKeysFile {self.dir}/authorized_keys\nPermitRootLogin prohibit-password\n"
                    "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\nX11Forwarding no\n"
                    "SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
        os.makedirs("/run/sshd", exist_ok=True)
        run(["/usr/sbin/sshd", "-t", "-f", sshd_config])
        run(["ip", "netns", "exec", NS, "/usr/sbin/sshd", "-f", sshd_config, "-E", os.path.join(logs, "sshd.log")])
        for _ in range(100):
            if os.path.exists(self.sshd_pidfile):
                break
            time.sleep(0.05)
        with open(self.sshd_pidfile) as f:
            self.sshd_pid = int(f.read().split()[0])
        for i in range(50):
            p = subprocess.run(["ssh", "-v", "-F", self.ssh_config, f"root@{ADDR_B}", "true"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode == 0:
                break
            if i == 49:
                raise RuntimeError(f"ssh root@{ADDR_B} true failed: {p.stderr[-1500:]}")
            time.sleep(0.1)
        m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+) compression: (\S+)", p.stderr)
        self.cipher = f"{m.group(1)} (MAC {m.group(2)}, compression {m.group(3)})" if m else "?"
        self.ssh_version = (p.stderr.splitlines() or ["?"])[0].strip()
        log(f"lab up: sshd pid {self.sshd_pid} on {ADDR_B}:22 in netns {NS}; cipher {self.cipher}")

    def remote_cpu(self):
        """CPU of everything sshd ran so far (sessions and their commands, once reaped)."""
        return proc_cpu(self.sshd_pid)

    def settle(self):
        """Waits until sshd has reaped every session (their CPU then counts in remote_cpu)."""
        for _ in range(100):
            try:
                with open(f"/proc/{self.sshd_pid}/task/{self.sshd_pid}/children") as f:
                    if not f.read().split():
                        return
            except OSError:
                return
            time.sleep(0.05)

    def wire_bytes(self):
        with open(f"/sys/class/net/{LINK_A}/statistics/tx_bytes") as f:
            return int(f.read())

    def teardown_ns(self):
        p = subprocess.run(["ip", "netns", "pids", NS], text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for pid in p.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", LINK_A], stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.up:
            return
        try:
            with open(self.sshd_pidfile) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
        self.teardown_ns()
        self.up = False


class Bench:
    def __init__(self, args):
        self.args = args
        base = args.workdir_base
        os.makedirs(base, exist_ok=True)
        if fs_type(base) == "tmpfs":
            sys.exit(f"{base} is tmpfs; pick a disk-backed --workdir-base")
        need = int(3 * (1 << 30) * args.scale) + (1 << 30)
        if free_bytes(base) < need:
            sys.exit(f"{base}: {free_bytes(base) / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB")
        self.work = tempfile.mkdtemp(prefix="voltool-bench-migrate.", dir=base)
        os.makedirs(os.path.join(self.work, "bin"))
        self.voltool = shutil.copy2(os.path.abspath(args.voltool), os.path.join(self.work, "bin", "voltool"))
        self.state_a = os.path.join(self.work, "hostA", "state")
        self.logs = os.path.join(self.work, "logs")
        self.config = os.path.join(self.work, "voltool.toml")
        for d in (self.state_a, self.logs):
            os.makedirs(d)
        write_empty_config(self.config)
        self.lab = Lab(self.work)
        self.state_b = os.path.join(self.lab.b, "state")
        self.peer_out = os.path.join(self.lab.b, "peer")  # same filesystem as B's volumes
        self.receive_time = os.path.join(self.logs, "time-receive")
        self.results = {t: [] for t in TOOLS}
        self.errors = {}
        self.discarded = []  # (tool, wall, other CPU) of runs thrown away as disturbed
        self.n = 0
        self.remote_volumes = set()

    def daemon_a(self, name):
        return Daemon(self.voltool, self.state_a, self.logs, f"A-{name}", self.config)

    def daemon_b(self, name):
        return Daemon(self.voltool, self.state_b, self.logs, f"B-{name}", self.config, netns=NS)

    def setup(self):
        self.lab.start(self.logs)
        os.makedirs(self.state_b, exist_ok=True)
        os.makedirs(self.peer_out)
        # The remote voltool: B's API socket, then `voltool receive`, timed (peak RSS).
        self.wrapper = os.path.join(self.lab.b, "voltool")
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\n# bench/migrate: host B's voltool (its daemon's API socket), timed\n"
                    f"VOLTOOL_API_SOCKET={self.state_b}/api.sock\nexport VOLTOOL_API_SOCKET\n"
                    f"exec /usr/bin/time -o {self.receive_time} -f '{TIME_FMT}' {self.voltool} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        d = self.daemon_a("setup")
        try:
            self.data, self.gen = make_dataset(d, "bench", self.args.scale, self.args.seed)
        finally:
            d.stop()
        log("hashing the source tree")
        self.digest = tree_digest(self.data)
        self.bytes, self.files, self.dirs = digest_totals(self.digest)
        log(f"dataset: {self.bytes} bytes in {self.files} files, {self.dirs} dirs")

    # ---- measurements ---------------------------------------------------------------------------

    def before(self):
        waited, busy = wait_quiet(self.args.quiet_wait)
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        prepare_cache(self.args.cache, [self.data])
        return {"waited": waited, "busy_before": busy, "loadavg": load}

    def check(self, tree):
        ok, note = compare_digests(self.digest, tree_digest(tree))
        if not ok:
            raise RuntimeError(f"the migrated tree is wrong: {note}")
        return note

    def timed(self, argv, env):
        """Runs argv; returns (wall, returncode, stdout, stderr, local CPU of it and all its
        descendants, its own VmHWM)."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            poll = HwmPoller(p.pid)
            poll.start()
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.monotonic() - t0
            poll.stop()
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            return wall, p.returncode, out.read(), err.read(), ru.ru_utime + ru.ru_stime, poll.hwm

    def m_voltool(self):
        self.n += 1
        name = f"m{self.n}"
        a, b = self.daemon_a(f"voltool-{self.n}"), self.daemon_b(f"voltool-{self.n}")
        try:
            pre = self.before()
            ssh_t = os.path.join(self.logs, f"time-ssh-{self.n}")
            for f in (ssh_t, self.receive_time):
                if os.path.exists(f):
                    os.remove(f)
            env = dict(os.environ, VOLTOOL_API_SOCKET=a.api, BENCH_SSH_TIME=ssh_t)
            argv = [self.voltool, "migrate", "bench", f"root@{ADDR_B}:{name}", "-e", self.lab.ssh_wrapper,
                    "--remote-voltool", self.wrapper, "--json"]
            self.remote_volumes.add(name)
            ca, cb, cr, c0, w0 = a.cpu(), b.cpu(), self.lab.remote_cpu(), busy_cpu(), self.lab.wire_bytes()
            k0 = kernel_threads_cpu()
            wall, rc, out, err, local_cpu, cli_hwm = self.timed(argv, env)
            busy, kcpu = busy_cpu() - c0, kernel_cpu_since(k0)
            wire = self.lab.wire_bytes() - w0
            if rc != 0:
                raise RuntimeError(f"voltool migrate failed ({rc}): {err.strip() or out.strip()}")
            synced = timed_sync()
            self.lab.settle()
            r = {"wall": wall, "sync": synced, "wire": wire, "busy": busy, **pre,
                 "kernel_cpu": kcpu, "kernel_cpu_synced": kernel_cpu_since(k0),
                 "cpu": local_cpu + (a.cpu() - ca) + (b.cpu() - cb) + (self.lab.remote_cpu() - cr),
                 "cpu_parts": {"daemon A": a.cpu() - ca, "CLI + ssh on A": local_cpu, "daemon B": b.cpu() - cb,
                               "sshd + receive CLI on B": self.lab.remote_cpu() - cr},
                 "rss_a": {"daemon A (VmHWM)": a.hwm(), "migrate CLI": cli_hwm,
                           "ssh": read_time(ssh_t)["maxrss"]},
                 "rss_b": {"daemon B (VmHWM)": b.hwm(), "receive CLI": read_time(self.receive_time)["maxrss"]},
                 "out": json.loads(out)}
            if r["out"].get("files") != self.files or r["out"].get("bytes") != self.bytes:
                raise RuntimeError(f"migrate reported {r['out'].get('files')} files / {r['out'].get('bytes')} bytes, "
                                   f"expected {self.files} / {self.bytes}")
            r["check"] = self.check(volume_data_dir(self.state_b, name))
            b.cli("volume", "rm", "--force", name)
            self.remote_volumes.discard(name)
            return r
        finally:
            a.stop()
            b.stop()

    def m_shell(self, tool):
        self.n += 1
        dst = os.path.join(self.peer_out, f"x{self.n}")
        t = {k: os.path.join(self.logs, f"time-{tool}-{self.n}-{k}") for k in ("c1", "c2", "ssh", "r1", "r2")}
        tm = f"/usr/bin/time -f {shlex.quote(TIME_FMT)} -o"
        src = shlex.quote(self.data)
        ssh = f"{self.lab.ssh_wrapper} root@{ADDR_B}"
        if tool == "seed":
            remote = f"mkdir -p {dst} && {tm} {t['r1']} tar xzf - -C {dst}"
            script = f"{tm} {t['c1']} tar czf - -C {src} . | {ssh} {shlex.quote(remote)}"
            rss_a, rss_b = ["c1", "ssh"], ["r1"]
        else:
            remote = f"mkdir -p {dst} && {tm} {t['r1']} zstd -d -q | {tm} {t['r2']} tar -xf - -C {dst}"
            script = (f"{tm} {t['c1']} tar -cf - -C {src} . | {tm} {t['c2']} zstd -3 -T0 -q "
                      f"| {ssh} {shlex.quote(remote)}")
            rss_a, rss_b = ["c1", "c2", "ssh"], ["r1", "r2"]
        pre = self.before()
        env = dict(os.environ, BENCH_SSH_TIME=t["ssh"])
        cr, c0, w0, k0 = self.lab.remote_cpu(), busy_cpu(), self.lab.wire_bytes(), kernel_threads_cpu()
        wall, rc, out, err, local_cpu, _ = self.timed(["bash", "-c", "set -o pipefail\n" + script], env)
        busy, kcpu = busy_cpu() - c0, kernel_cpu_since(k0)
        wire = self.lab.wire_bytes() - w0
        if rc != 0:
            raise RuntimeError(f"{tool} failed ({rc}): {err.strip()[-2000:]}")
        synced = timed_sync()
        self.lab.settle()
        names = {"c1": "tar czf (tar/gzip)" if tool == "seed" else "tar", "c2": "zstd -T0", "ssh": "ssh",
                 "r1": "tar xzf (tar/gzip)" if tool == "seed" else "zstd -d", "r2": "tar -x"}
        remote_cpu = self.lab.remote_cpu() - cr
        r = {"wall": wall, "sync": synced, "wire": wire, "busy": busy, **pre,
             "kernel_cpu": kcpu, "kernel_cpu_synced": kernel_cpu_since(k0),
             "cpu": local_cpu + remote_cpu,
             "cpu_parts": {"pipeline on A (incl. ssh)": local_cpu, "sshd + pipeline on B": remote_cpu},
             "rss_a": {names[k]: read_time(t[k])["maxrss"] for k in rss_a},
             "rss_b": {names[k]: read_time(t[k])["maxrss"] for k in rss_b}}
        r["check"] = self.check(dst)
        shutil.rmtree(dst)
        return r

    def measure(self, tool):
        try:
            for attempt in range(self.args.retries + 1):
                log(f"measuring {tool}" + (f" (attempt {attempt + 1})" if attempt else ""))
                r = self.m_voltool() if tool == "voltool" else self.m_shell(tool)
                # The kernel's own threads (writeback, journal, network) work for the run.
                r["other_cpu"] = max(0.0, r["busy"] - r["cpu"] - r["kernel_cpu"])
                if not disturbed(r) or attempt == self.args.retries:
                    break
                self.discarded.append((tool, r["wall"], r["other_cpu"]))
                log(f"{tool}: {r['wall']:.2f} s but disturbed (other CPU {r['other_cpu']:.1f} s): discarded, again")
            self.results[tool].append(r)
            log(f"{tool}: {r['wall']:.2f} s (+ sync {r['sync']:.2f} s), {self.bytes / r['wall'] / MIB:.0f} MiB/s, "
                f"wire {fmt_mib(r['wire'])} MiB, RSS A {fmt_mib(sum(r['rss_a'].values()))} MiB, "
                f"B {fmt_mib(sum(r['rss_b'].values()))} MiB, CPU {r['cpu']:.1f} s, other {r['other_cpu']:.1f} s; "
                f"{r['check']}")
        except Exception as e:  # noqa: BLE001 - one tool failing must not hide the others
            self.errors[tool] = str(e).replace("\n", " ")[:400]
            log(f"{tool} FAILED: {e}")

    def cleanup(self):
        Daemon.stop_all()
        if self.remote_volumes and os.path.isdir(self.state_b):
            try:
                d = self.daemon_b("cleanup")
                try:
                    for v in sorted(self.remote_volumes):
                        d.cli("volume", "rm", "--force", v, check=False)
                finally:
                    d.stop()
            except Exception as e:  # noqa: BLE001
                log(f"could not remove B's volumes {sorted(self.remote_volumes)}: {e}")
        if os.path.isdir(self.state_a) and os.path.isdir(os.path.join(self.state_a, "volumes", "bench")):
            try:
                d = self.daemon_a("cleanup")
                try:
                    d.cli("volume", "unmount", "bench", "--id", "bench", check=False)
                    d.cli("volume", "rm", "--force", "bench", check=False)
                finally:
                    d.stop()
            except Exception as e:  # noqa: BLE001
                log(f"could not remove volume bench: {e}")
        self.lab.stop()
        unmount_under(self.work)
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def report(b):
    a = b.args
    r = b.results
    lines = []
    add = lines.append
    add(f"Host: {host_line()}")
    add(f"Dataset: {b.bytes} bytes ({b.bytes / MIB:.0f} MiB) in {b.files} files and {b.dirs} directories "
        f"(bench/backup/gendata.py scale {a.scale}, seed {a.seed}) in voltool volume `bench` on host A. "
        f"Host B: network namespace `{NS}` over a veth pair, sshd ({b.lab.ssh_version}), cipher {b.lab.cipher}, "
        f"its own voltool daemon; A and B share the machine's {os.cpu_count()} CPUs and disk. Page cache: {a.cache} "
        f"before every run ({'sync + drop_caches' if a.cache == 'cold' else 'sync + source read once'}); "
        f"{a.repeat} run(s) per row, interleaved; cells with several runs show median (min–max).")
    add("")

    def wall(t):
        return med([x["wall"] for x in r[t]])

    def on_disk(t):
        return med([x["wall"] + x["sync"] for x in r[t]])

    def ratio(t, ref):
        return f"{on_disk(ref) / on_disk(t):.2f}×" if r[t] and r[ref] else "-"

    add("| migration | wall (s) | wall + sync (s) | throughput (MiB/s) | speed vs seed | speed vs tar\\|zstd "
        "| over the wire (MiB) | peak RSS A (MiB) | peak RSS B (MiB) | CPU + kernel threads (s) | other CPU, max (s) | result |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in TOOLS:
        xs = r[t]
        if not xs:
            if t in b.errors:
                add(f"| {LABELS[t]} | not measured: {b.errors[t]} |" + " |" * 10)
            continue
        add("| " + " | ".join([
            LABELS[t], spread([x["wall"] for x in xs]), spread([x["wall"] + x["sync"] for x in xs]),
            f"{b.bytes / wall(t) / MIB:.0f}", ratio(t, "seed"), ratio(t, "tar-zstd"),
            fmt_mib(med([x["wire"] for x in xs])), fmt_mib(max(sum(x["rss_a"].values()) for x in xs)),
            fmt_mib(max(sum(x["rss_b"].values()) for x in xs)),
            f"{med([x['cpu'] for x in xs]):.1f} + {med([x['kernel_cpu_synced'] for x in xs]):.1f}",
            f"{max(x['other_cpu'] for x in xs):.1f}", xs[-1]["check"]]) + " |")
    add("")
    add("Wall = until the sending command returns; \"+ sync\" adds a `sync` after it: until the data "
        "is on B's disk. voltool's receiver writes the tree to disk before it swaps it in and reports "
        "success, so its `sync` finds nothing left; the pipes' `tar x` returns with the data in the page "
        "cache. Throughput = dataset bytes / wall. Speed ratio = reference (wall + sync) / row (wall + "
        "sync). Over the wire = bytes A sent on the veth (ssh-encrypted stream, TCP/IP "
        "headers included). Peak RSS = the sum of each side's processes' peaks (voltool daemons: VmHWM of "
        "daemons started for that run; others: /usr/bin/time; sshd not included). CPU = user + sys of "
        "everything the row ran on both hosts (daemons, CLIs, ssh, sshd sessions, tar/zstd/gzip); + kernel "
        "threads = the kernel's own threads (writeback, journal, network) from the start to the end of the "
        "`sync` after it; other CPU = the host's busy CPU during the run minus both (≈ 0 on a quiet host).")
    for t in TOOLS:
        xs = r[t]
        if not xs:
            continue
        x = xs[-1]
        parts = ", ".join(f"{k} {v:.1f}" for k, v in x["cpu_parts"].items())
        ra = ", ".join(f"{k} {fmt_mib(v)}" for k, v in x["rss_a"].items())
        rb = ", ".join(f"{k} {fmt_mib(v)}" for k, v in x["rss_b"].items())
        add(f"- {LABELS[t]} (last run): CPU (s) {parts}; peak RSS (MiB) on A: {ra}; on B: {rb}"
            + (f"; reply {json.dumps(x['out'])}" if "out" in x else ""))
    add("")
    add("**Against issue 5's targets** (until on disk; per round in brackets)")
    add("")
    for ref, need in (("seed", 2.0), ("tar-zstd", 0.9)):
        if r["voltool"] and r[ref]:
            x = on_disk(ref) / on_disk("voltool")
            per = ", ".join(f"{(y['wall'] + y['sync']) / (v['wall'] + v['sync']):.2f}"
                            for v, y in zip(r["voltool"], r[ref]))
            add(f"- migrate ≥ {need}× {LABELS[ref]}: {x:.2f}× ({'met' if x >= need else 'NOT met'}) [{per}]; "
                f"until return: {wall(ref) / wall('voltool'):.2f}×")
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
        sys.exit("run as root (network namespace, sshd, volume mounts, drop_caches)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    b = Bench(args)
    try:
        log(f"work dir {b.work}")
        b.setup()
        run_rounds(b, args.repeat, TOOLS, only)
        emit_report(report(b), args.markdown, args.json,
                    {"bytes": b.bytes, "files": b.files, "dirs": b.dirs, "results": b.results, "errors": b.errors})
    finally:
        b.cleanup()
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
