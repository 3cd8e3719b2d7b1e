#!/usr/bin/env python3
"""bench/consistency: downtime and total time of a consistent backup of a live volume.

A container holds a volume of --size-gib GiB (half random, half log-like text). Rows, each run
--repeat times, interleaved:

  voltool-snapshot   voltool backup run V --consistency stop, the state dir on xfs with reflinks
                     (an image-backed volume: the container is stopped for the snapshot only)
  voltool-freeze     the same with --consistency freeze (the container is never stopped)
  voltool-held       voltool backup run V --consistency stop, the state dir on ext4 (no
                     snapshot: the container stays stopped for the whole backup)
  script             what users script today, at its best: docker stop C; tar -cf - -C MOUNTPOINT .
                     | zstd -3 -T0 > FILE on the host; docker start C

Downtime: voltool's catalog (`downtime_ms`, first hold to last release); the script's is from
the stop to the end of the start. Total: the command's wall time. Every run starts cold
(sync, drop_caches). Prints a markdown table with medians and ratios to the script's downtime.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import common  # noqa: E402

IMAGE = "voltool-e2e-busybox"
ROWS = ["voltool-snapshot", "voltool-freeze", "voltool-held", "script"]
LABELS = {
    "voltool-snapshot": "voltool `stop`, snapshot (xfs reflink)",
    "voltool-freeze": "voltool `freeze`, snapshot (xfs reflink)",
    "voltool-held": "voltool `stop`, no snapshot (ext4 state dir)",
    "script": "`docker stop`, `tar \\| zstd -3 -T0` of the volume, `docker start`",
}
LOAD = "trap 'exit 0' TERM; while true; do date >> /data/live.log; sleep 0.1; done"


def sh(cmd, check=True):
    p = subprocess.run(cmd, shell=True, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd}: {p.stderr.strip()[-1500:]}")
    return p.stdout.strip()


def ensure_image():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    bb = shutil.which("busybox") or "/bin/busybox"
    d = tempfile.mkdtemp()
    os.makedirs(f"{d}/bin")
    shutil.copy(bb, f"{d}/bin/busybox")
    for a in sh(f"{bb} --list").split():
        if a != "busybox":
            os.symlink("busybox", f"{d}/bin/{a}")
    sh(f"tar -C {d} -c . | docker import - {IMAGE}")
    shutil.rmtree(d)


class Host:
    """A voltool daemon whose plugin socket dockerd finds (driver `name`)."""

    def __init__(self, voltool, state, logdir, name):
        self.name, self.voltool = name, voltool
        self.api = os.path.join(state, "api.sock")
        self.socket = f"/run/docker/plugins/{name}.sock"
        os.makedirs("/run/docker/plugins", exist_ok=True)
        if os.path.exists(self.socket):
            os.remove(self.socket)
        self.log_path = os.path.join(logdir, f"daemon-{name}.log")
        self.logf = open(self.log_path, "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLTOOL_")}
        config = os.path.join(logdir, "empty.toml")
        common.write_empty_config(config)
        self.proc = subprocess.Popen(
            [voltool, "serve", "--state-dir", state, "--plugin-socket", self.socket, "--api-socket", self.api,
             "--config", config, "--log", "info"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf, start_new_session=True)
        common.wait_for_api(self.proc, self.api, self.log_path, f"voltool serve ({name})")

    def cli(self, *argv):
        return common.cli(self.voltool, self.api, *argv)

    def stop(self):
        common.stop_daemon(self.proc, self.name, self.logf)
        if os.path.exists(self.socket):
            os.remove(self.socket)


class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.results = {r: [] for r in ROWS}
        self.hosts, self.containers, self.volumes = {}, [], []

    def setup(self):
        a, w = self.args, self.work
        xfs_img, xfs = os.path.join(w, "xfs.img"), os.path.join(w, "xfs-state")
        os.makedirs(xfs)
        with open(xfs_img, "wb") as f:
            f.truncate(int((a.size_gib * 3 + 2) * (1 << 30)))
        sh(f"mkfs.xfs -q -m reflink=1 {xfs_img} && mount -o loop {xfs_img} {xfs}")
        self.xfs = xfs
        ext4 = os.path.join(w, "ext4-state")
        if common.fs_type(w) not in ("ext4",):
            common.log(f"note: the work dir is on {common.fs_type(w)}; the 'held' row needs a state dir without reflinks")
        # Fixed driver names: dockerd keeps asking every legacy plugin it has used until it
        # restarts, so a name per run would leave it a growing list of dead sockets.
        self.hosts["xfs"] = Host(a.voltool, xfs, w, "voltool-bench-xfs")
        self.hosts["ext4"] = Host(a.voltool, ext4, w, "voltool-bench-ext4")
        size_mib = int(a.size_gib * 1024)
        for key, h in self.hosts.items():
            vol = f"bench-cons-{key}-{os.getpid()}"
            sh(f"docker volume create -d {h.name} -o size={size_mib + 256}m {vol}")
            self.volumes.append(vol)
            half = size_mib // 2
            common.log(f"filling {vol} with {size_mib} MiB")
            sh(f"docker run --rm --network none -v {vol}:/data {IMAGE} sh -c "
               f"\"head -c {half << 20} /dev/urandom > /data/random && "
               f"yes 'GET /api/v1/items?page=42 HTTP/1.1 200 1234 0.004 Mozilla/5.0' | head -c {half << 20} > /data/text && sync\"")
            c = sh(f"docker run -d --network none -v {vol}:/data {IMAGE} sh -c \"{LOAD}\"")
            self.containers.append(c)
            h.volume, h.container = vol, c

    def measure(self, row):
        common.wait_quiet(self.args.quiet_wait)
        common.drop_caches()
        if row == "script":
            # The best case of what users script today: tar | zstd on the host, at disk speed
            # (the volume's own mountpoint), with the container stopped throughout.
            h = self.hosts["ext4"]
            out = os.path.join(self.work, "script.tar.zst")
            t0 = time.monotonic()
            sh(f"docker stop -t 10 {h.container}")
            mp = h.cli("volume", "mount", h.volume, "--id", "bench-script").stdout.strip().splitlines()[-1]
            sh(f"tar -cf - -C {mp} . | zstd -3 -T0 -q -f -o {out}")
            h.cli("volume", "unmount", h.volume, "--id", "bench-script")
            sh(f"docker start {h.container}")
            total = time.monotonic() - t0
            self.results[row].append({"downtime": total, "total": total, "bytes": os.path.getsize(out)})
            os.remove(out)
            return
        h = self.hosts["ext4" if row == "voltool-held" else "xfs"]
        mode = "freeze" if row == "voltool-freeze" else "stop"
        t0 = time.monotonic()
        b = json.loads(h.cli("backup", "run", h.volume, "--consistency", mode, "--json").stdout)
        total = time.monotonic() - t0
        if b.get("status") != "complete":
            raise RuntimeError(f"{row}: {b}")
        want = "none" if row == "voltool-held" else "reflink"
        if b.get("snapshot") != want:
            raise RuntimeError(f"{row}: snapshot {b.get('snapshot')}, expected {want}: {b}")
        running = sh(f"docker inspect -f '{{{{.State.Running}}}}' {h.container}")
        if running != "true":
            raise RuntimeError(f"{row}: the container is not running after the backup")
        self.results[row].append({"downtime": (b.get("downtime_ms") or 0) / 1000, "total": total,
                                  "bytes": b.get("bytes_out")})
        h.cli("backup", "prune", h.volume, "--keep", "last=1")

    def teardown(self):
        for c in self.containers:
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        for v in self.volumes:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
        for h in self.hosts.values():
            h.stop()
        common.unmount_under(self.work)  # the volumes' mounts and the xfs state dir, deepest first

    def report(self):
        med = lambda row, k: common.med([r[k] for r in self.results[row]]) if self.results[row] else None  # noqa: E731
        ref = med("script", "downtime")
        lines = [f"Consistent backup of a live {self.args.size_gib:g} GiB volume (half random, half text), "
                 f"{self.args.repeat} runs each, cold cache; {common.host_line()}", "",
                 "| | downtime (s) | total (s) | downtime vs the script |", "|---|---:|---:|---:|"]
        for row in ROWS:
            d, t = med(row, "downtime"), med(row, "total")
            if d is None:
                continue
            ratio = f"{ref / d:.1f}× shorter" if ref and d > 0 and row != "script" else "—"
            lines.append(f"| {LABELS[row]} | {common.spread([r['downtime'] for r in self.results[row]], '{:.3f}')} "
                         f"| {common.spread([r['total'] for r in self.results[row]])} | {ratio} |")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voltool", required=True)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir-base", default="/var/tmp")
    ap.add_argument("--quiet-wait", type=float, default=60)
    ap.add_argument("--only", default=",".join(ROWS))
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()
    only = common.selected_tools(args.only, ROWS)
    ensure_image()
    work = tempfile.mkdtemp(prefix="voltool-bench-consistency-", dir=args.workdir_base)
    b = Bench(args, work)
    try:
        b.setup()
        for i in range(args.repeat):
            common.log(f"round {i + 1} of {args.repeat}")
            for row in ROWS:
                if row in only:
                    b.measure(row)
        common.emit_report(b.report(), args.markdown, args.json, b.results)
    finally:
        b.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
