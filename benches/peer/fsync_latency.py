#!/usr/bin/env python3
"""The fsync latency of the disk that holds the benchmark's SQLite databases.

Usage: fsync_latency.py [DIR] [--n N] [--when LABEL]   (DIR defaults to $TMPDIR or /tmp)

Writes 4 KiB and calls os.fsync, N times (default 200, after 10 discarded), on a file in a
fresh temporary directory under DIR, and prints one JSON line:
  {"side":"disk","dir":DIR,"when":LABEL,"fsyncs":N,"fsync_us_median":...,"fsync_us_p90":...,
   "fsync_us_max":...}
Every durable row of the table pays this at each commit it makes durable, so it is the floor
under durable runs per second: runs/s <= 1e6 / (fsync_us_median * fsyncs per run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def measure(directory: str, n: int, when: str = "") -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="nanovm-fsync-", dir=directory) as d:
        path = os.path.join(d, "probe")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            block = b"\0" * 4096
            times = []
            for i in range(n + 10):
                os.pwrite(fd, block, (i % 64) * 4096)
                t0 = time.perf_counter_ns()
                os.fsync(fd)
                if i >= 10:
                    times.append((time.perf_counter_ns() - t0) / 1e3)
        finally:
            os.close(fd)
    times.sort()
    return {
        "side": "disk",
        "dir": directory,
        "when": when,
        "fsyncs": n,
        "fsync_us_median": statistics.median(times),
        "fsync_us_p90": times[int(0.9 * (len(times) - 1))],
        "fsync_us_max": times[-1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", nargs="?", default=os.environ.get("TMPDIR") or "/tmp")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--when", default="", help="a label for the report, e.g. 'at start'")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    print(json.dumps(measure(args.dir, args.n, args.when)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
