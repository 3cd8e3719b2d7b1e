#!/usr/bin/env python3
"""bench/metrics: what one Prometheus scrape of `GET /metrics` costs the daemon, and how long
the status page takes to make, with 500 volumes and 10,000 backups in the catalog — issue 16's
goals: <= 1 ms of daemon CPU per scrape, the page in < 200 ms.

usage: bench.py --voltool PATH [--volumes 500] [--scrapes 1000] [--workdir-base /var/tmp]

A private daemon ([monitor] interval 3600 s after the one pass that measures the volumes, so
the watcher does not run while scrapes are timed), N directory volumes with one small file
each, one backup of each; then the daemon's CPU (utime + stime from /proc) over `--scrapes`
scrapes on its management socket, minus its CPU over the same wall time without scrapes.
For the page: the daemon is stopped, the catalog gets copies of each volume's backup row
(sqlite3, new IDs and times: `--backups` rows in all; their objects do not exist, which the
page never reads), the daemon restarts, and `GET /` over TCP is timed (median of 20, first
byte to last). Prints markdown tables and PASS/FAIL lines.
"""

import argparse
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402


def get(s, path):
    """GET `path` on the connected socket `s` (closed after); the whole answer, headers too."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    chunks = []
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
    s.close()
    return b"".join(chunks)


def http_get(port, path):
    return get(socket.create_connection(("127.0.0.1", port)), path)


def fill_catalog(state, total):
    """Copies each volume's backup row until the catalog holds `total` rows."""
    import sqlite3
    db = sqlite3.connect(os.path.join(state, "voltool.db"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(backups)")]
    rows = db.execute("SELECT * FROM backups").fetchall()
    i_id, i_start = cols.index("id"), cols.index("started_at")
    n, k = len(rows), 0
    while n < total:
        for r in rows:
            if n >= total:
                break
            r = list(r)
            r[i_id] = f"{r[i_id]}-copy{k}"
            r[i_start] = f"2026-01-{1 + k % 28:02d}T03:00:00Z"
            db.execute(f"INSERT INTO backups ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", r)
            n += 1
        k += 1
    db.commit()
    db.close()
    return n


def scrape(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    return get(s, "/metrics")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voltool", required=True)
    ap.add_argument("--volumes", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=1000)
    ap.add_argument("--backups", type=int, default=10000)
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(config, "w") as f:
        f.write(f"[monitor]\ninterval = \"3600s\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n")
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
    print(f"- **{verdict}** daemon CPU per scrape <= 1 ms with {a.volumes} volumes: {per:.3f} ms\n")

    d.stop()
    rows = fill_catalog(d.state, a.backups)
    d = common.Daemon(voltool, os.path.join(work, "state"), work, "metrics3", config)
    deadline = time.time() + 120
    while http_get(port, "/").count(b"data-volume=") < a.volumes:
        if time.time() > deadline:
            sys.exit("the page did not list every volume within 120 s")
        time.sleep(0.5)
    times, size = [], 0
    for _ in range(20):
        t0 = time.perf_counter()
        page = http_get(port, "/")
        times.append(time.perf_counter() - t0)
        size = len(page)
    ms = sorted(times)[len(times) // 2] * 1000
    print("| volumes | backups in the catalog | page (bytes) | GET / median (ms) | min (ms) | max (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {a.volumes} | {rows} | {size} | {ms:.1f} | {min(times) * 1000:.1f} | {max(times) * 1000:.1f} |\n")
    verdict = "PASS" if ms < 200 else "FAIL"
    print(f"- **{verdict}** status page < 200 ms with {a.volumes} volumes and {rows} backups: {ms:.1f} ms")


if __name__ == "__main__":
    main()
