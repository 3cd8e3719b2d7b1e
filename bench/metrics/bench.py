#!/usr/bin/env python3
"""bench/metrics: what one Prometheus scrape of `GET /metrics` costs the daemon, with 500
volumes (each backed up once) — issue 16's goal: <= 1 ms of daemon CPU per scrape.

usage: bench.py --voltool PATH [--volumes 500] [--scrapes 1000] [--workdir-base /var/tmp]

A private daemon ([monitor] interval 3600 s after the one pass that measures the volumes, so
the watcher does not run while scrapes are timed), N directory volumes with one small file
each, one backup of each; then the daemon's CPU (utime + stime from /proc) over `--scrapes`
scrapes on its management socket, minus its CPU over the same wall time without scrapes.
Prints a markdown table and a PASS/FAIL line.
"""

import argparse
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402


def scrape(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    chunks = []
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
    s.close()
    return b"".join(chunks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voltool", required=True)
    ap.add_argument("--volumes", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=1000)
    ap.add_argument("--workdir-base", default="/var/tmp")
    a = ap.parse_args()
    work, voltool = common.make_workdir(a.workdir_base, 1 << 30, "voltool-bench-metrics.", a.voltool)
    try:
        run(a, work, voltool)
    finally:
        common.Daemon.stop_all()
        common.unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def run(a, work, voltool):
    config = os.path.join(work, "voltool.toml")
    with open(config, "w") as f:
        f.write("[monitor]\ninterval = \"3600s\"\n")
    d = common.Daemon(voltool, os.path.join(work, "state"), work, "metrics", config)
    common.log(f"creating and backing up {a.volumes} volumes")
    for i in range(a.volumes):
        name = f"vol{i:04d}"
        d.cli("volume", "create", name)
        with open(os.path.join(common.volume_data_dir(d.state, name), "f.txt"), "w") as f:
            f.write("x" * 100)
        d.cli("backup", "run", name)
    # Restart so that the watcher's one pass at start sees every volume.
    d.stop()
    d = common.Daemon(voltool, os.path.join(work, "state"), work, "metrics2", config)
    deadline = time.time() + 120
    while scrape(d.api).count(b"voltool_volume_info{") < a.volumes:
        if time.time() > deadline:
            sys.exit("the watcher did not measure every volume within 120 s")
        time.sleep(0.5)
    body = scrape(d.api)
    size = len(body.split(b"\r\n\r\n", 1)[-1])
    common.log(f"measuring {a.scrapes} scrapes ({size} bytes each)")
    c0, t0 = d.cpu(), time.perf_counter()
    for _ in range(a.scrapes):
        scrape(d.api)
    wall = time.perf_counter() - t0
    busy = d.cpu() - c0
    c1 = d.cpu()
    time.sleep(wall)
    idle = d.cpu() - c1
    per = (busy - idle) / a.scrapes * 1000
    print(f"### Metrics scrape cost (bench/metrics), {common.host_line()}\n")
    print("| volumes | scrapes | exposition (bytes) | wall (s) | daemon CPU (s) | idle CPU, same wall (s) | CPU per scrape (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {a.volumes} | {a.scrapes} | {size} | {wall:.2f} | {busy:.2f} | {idle:.2f} | {per:.3f} |\n")
    verdict = "PASS" if per <= 1.0 else "FAIL"
    print(f"- **{verdict}** daemon CPU per scrape <= 1 ms with {a.volumes} volumes: {per:.3f} ms")


if __name__ == "__main__":
    main()
