#!/usr/bin/env python3
"""Deterministic benchmark dataset for bench/backup (stdlib only).

usage: gendata.py DIR [--scale 1.0] [--seed 4242]

Writes into DIR (which should be empty):
  text/log-NN.txt    16 files, 512 MiB total of log-like text (seeded PRNG; zstd -3 ~4x)
  random/blob-NN.bin 16 files, 512 MiB total of seeded pseudo-random bytes (incompressible)
  small/dNNN/fNNN    100,000 files of 0..4096 bytes in 1,000 directories (half text, half random)
Every file has its own seed (derived from --seed), so the output does not depend on the
number of worker processes.
--scale multiplies every size and count (for quick trials). Prints a JSON summary
(files, dirs, bytes) on stdout. Same seed and scale => byte-identical tree (mtimes aside).
"""

import json
import multiprocessing
import os
import random
import sys

MIB = 1 << 20


def make_vocab(rng, n):
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    lw = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0,
          0.8, 0.2, 0.2, 0.1, 0.1]
    words = set()
    while len(words) < n:
        k = rng.choice((2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9, 10, 11))
        words.add("".join(rng.choices(letters, weights=lw, k=k)))
    words = sorted(words)
    rng.shuffle(words)
    # Zipf-like weights: a few words are very common.
    cum, total = [], 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1) ** 1.05
        cum.append(total)
    return words, cum


LEVELS = ["INFO"] * 14 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
COMPONENTS = ["http", "db.pool", "scheduler", "auth", "cache", "worker", "api.v2", "storage", "mailer", "metrics",
              "gc", "session", "queue", "billing", "search", "index"]


class TextGen:
    def __init__(self, rng):
        self.rng = rng
        self.words, self.cum = make_vocab(rng, 8000)
        self.t = 1_760_000_000_000  # ms

    def chunk(self, nbytes):
        """About nbytes of log lines (ends with a newline)."""
        rng = self.rng
        out = []
        size = 0
        # Draw words in bulk: much faster than per line.
        pool = rng.choices(self.words, cum_weights=self.cum, k=nbytes // 9 + 64)
        p = 0
        levels, comps = LEVELS, COMPONENTS
        while size < nbytes:
            r = rng.getrandbits(64)
            self.t += r & 31
            t = self.t
            n = 4 + (r >> 42) % 12
            msg = " ".join(pool[p:p + n])
            p += n
            if p + 16 > len(pool):
                pool = rng.choices(self.words, cum_weights=self.cum, k=nbytes // 9 + 64)
                p = 0
            line = "%d.%03d %s [%s] req=%08x user=%d %s latency_ms=%d\n" % (
                t // 1000, t % 1000, levels[(r >> 5) % 21], comps[(r >> 10) & 15], rng.getrandbits(32),
                (r >> 14) % 100000, msg, (r >> 31) % 2000)
            out.append(line)
            size += len(line)
        return "".join(out).encode()


def write_file(path, gen, total, piece=4 * MIB):
    with open(path, "wb") as f:
        left = total
        while left > 0:
            b = gen(min(piece, left))
            b = b[:left]
            f.write(b)
            left -= len(b)


def big_file(job):
    root, kind, i, per, seed = job
    if kind == "text":
        write_file(os.path.join(root, "text", "log-%02d.txt" % i), TextGen(random.Random(seed * 1000 + i)).chunk, per)
    else:
        write_file(os.path.join(root, "random", "blob-%02d.bin" % i), random.Random(seed * 1000 + 500 + i).randbytes,
                   per)
    return per


def small_dir(job):
    root, d, seed = job
    rng = random.Random(seed * 100000 + d)
    text = TextGen(random.Random(seed * 100000 + 50000 + d))
    dpath = os.path.join(root, "small", "d%03d" % d)
    os.makedirs(dpath, exist_ok=True)
    sizes = [rng.randrange(0, 4097) for _ in range(100)]
    kinds = [rng.random() < 0.5 for _ in range(100)]
    tbuf = text.chunk(sum(s for s, k in zip(sizes, kinds) if k) + 1)
    off = nbytes = 0
    for j in range(100):
        s = sizes[j]
        if kinds[j]:
            data = tbuf[off:off + s]
            off += s
        else:
            data = rng.randbytes(s)
        with open(os.path.join(dpath, "f%03d" % j), "wb") as f:
            f.write(data)
        nbytes += s
    return nbytes


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    root = args[0]
    scale, seed = 1.0, 4242
    i = 1
    while i < len(args):
        if args[i] == "--scale":
            scale = float(args[i + 1])
            i += 2
        elif args[i] == "--seed":
            seed = int(args[i + 1])
            i += 2
        else:
            sys.exit("unknown argument " + args[i])

    per = int(32 * MIB * scale)
    ndirs = max(1, int(1000 * scale))
    for sub in ("text", "random", "small"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    jobs = [(root, kind, i, per, seed) for i in range(16) for kind in ("text", "random")]
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        nbytes = sum(pool.map(big_file, jobs, chunksize=1))
        nbytes += sum(pool.map(small_dir, [(root, d, seed) for d in range(ndirs)], chunksize=10))
    files = len(jobs) + 100 * ndirs
    dirs = 3 + ndirs
    print(json.dumps({"files": files, "dirs": dirs, "bytes": nbytes, "seed": seed, "scale": scale}))


if __name__ == "__main__":
    main()
