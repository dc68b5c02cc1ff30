"""Cost of verifying segments on every read (README: "What is verified, and when").

1. A repeated `log.sql` query over verified segments vs the same query with verification
   switched off (the registry's check replaced by a no-op), side by side, medians of >= 5
   runs each: target ratio >= 0.9 (warm verification costs one stat per file).
2. First-touch verification throughput: hashing every segment of a fresh log (the registry
   emptied before each run, the files in the page cache), in GB/s of segment bytes:
   target >= 1 GB/s.

Run: python benchmarks/bench_verify.py [--records N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import transit_arrow as ta
from transit_arrow.segments import verified


def build(root: Path, records: int, segments: int) -> None:
    rng = np.random.default_rng(0)
    per = records // segments
    with ta.open(root, segment_max_records=per) as log:
        s = log.create_stream("main")
        for _ in range(segments):
            s.append(
                pa.table(
                    {
                        "k": rng.integers(0, 1000, per),
                        "x": rng.random(per),
                        "text": pa.array([f"row {j} " * 8 for j in range(per)]),
                    }
                )
            )
            s.flush()


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "log"
        build(root, args.records, args.segments)
        files = list((root / "streams" / "main" / "segments").glob("*.parquet"))
        total = sum(f.stat().st_size for f in files)
        print(f"{args.records:,} records in {len(files)} segments, {total / 1e6:.1f} MB")

        query = "SELECT k % 10 AS g, count(*), sum(x) FROM main WHERE x > 0.5 GROUP BY 1"
        with ta.open(root) as log:
            log.sql(query).fetchall()  # warm: views, footers, page cache, verification
            real_check = verified.registry.check

            def off(path: str, expected: str, size: int, *, what: str) -> None:
                return None

            with_v, without_v = [], []
            for i in range(args.runs * 4):  # alternating, in both orders: noise hits both
                for verify in (True, False) if i % 2 else (False, True):
                    verified.registry.check = real_check if verify else off  # type: ignore[method-assign]
                    (with_v if verify else without_v).extend(
                        timed(lambda: log.sql(query).fetchall(), 1)
                    )
            verified.registry.check = real_check  # type: ignore[method-assign]
        a, b = statistics.median(with_v), statistics.median(without_v)
        print(
            f"repeated log.sql over verified segments: {a * 1e3:.1f} ms vs {b * 1e3:.1f} ms "
            f"without verification; throughput ratio {b / a:.2f} (target >= 0.9)"
        )

        seconds = []
        for _ in range(args.runs):
            for f in files:
                f.read_bytes()  # page cache, as for a file just written or read
            verified.registry.forget()
            with ta.open(root) as log:
                start = time.perf_counter()
                for seg in log.catalog.manifest("main").segments:
                    log.catalog.segment_file(seg, "main")
                seconds.append(time.perf_counter() - start)
        rate = total / statistics.median(seconds) / 1e9
        print(f"first-touch verification: {rate:.2f} GB/s of segment bytes (target >= 1)")


if __name__ == "__main__":
    main()
