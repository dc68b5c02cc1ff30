"""A fresh handle's time-travel read of 10 small segments (the peers benchmark's W4), with and
without the parsed footers the process kept from an earlier read of the same files.

Run: `python benchmarks/bench_small_reads.py` (`--reads 200` per side, about 20 s). The log
holds the peers benchmark's W1: 500 commits of 1,000 rows of `benchmarks/peers/common.py`'s
data, each appended with `durability="tiered"` (one segment each). After one full read of the
stream (as W3 reads it), fresh handles read it as of its 10th commit, alternately with the
footers kept and after `verified.registry.forget_footers()`; prints the median and minimum wall
and CPU (`time.process_time`) milliseconds of each side.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import transit_arrow as ta
from transit_arrow.segments import verified

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    data = common.load_data(500 * 1000 + 2_000_000 + 1000, common.DEFAULT_WORKDIR)
    root = Path(tempfile.mkdtemp(prefix="small-reads-")) / "log"
    try:
        with ta.open(root) as log:
            stream = log.create_stream("t")
            for k in range(500):
                stream.append(data.slice(k * 1000, 1000), durability="tiered")
            generation = stream.commits().column("generation")[10].as_py()
            stream.read()  # every segment verified and its footer kept
        found: dict[str, list[tuple[float, float]]] = {"footers kept": [], "footers dropped": []}
        for i in range(2 * args.reads):
            side = "footers kept" if i % 2 else "footers dropped"
            if side == "footers dropped":
                verified.registry.forget_footers()
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            with ta.open(root) as fresh:
                table = fresh.stream("t").at(generation=generation).read()
            found[side].append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
            assert table.num_rows == 10_000
        print(f"load average {os.getloadavg()[0]:.2f}")
        for side, timings in found.items():
            walls, cpus = zip(*timings, strict=True)
            print(
                f"{side:16s} wall median {statistics.median(walls):.2f} min {min(walls):.2f} ms"
                f"  CPU median {statistics.median(cpus):.2f} min {min(cpus):.2f} ms"
            )
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
