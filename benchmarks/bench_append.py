"""Append and sealing throughput, each measured side by side with a raw baseline in one run.

Run: `python benchmarks/bench_append.py [--records 1000000] [--runs 5]`. Prints medians of
`--runs` runs and the ratio of transit-arrow's throughput to the baseline's (higher is better):

1. batch append in `local` mode vs raw pyarrow IPC stream write + fdatasync per batch;
2. sealing (Parquet + BLAKE3 + store put + commit) vs raw `pq.write_table` + BLAKE3;
3. per-record `append(dict)` in `memory` mode vs a bare Python loop that fills column lists and
   builds Arrow batches;
4. `local` mode with 8 threads each appending single records (records/s, absolute target).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

import transit_arrow as ta

TOOLS = ["search", "python", "browser", "sql", "shell"]


def make_rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    """`n` records of about 300 bytes with a few typed columns."""
    rng = random.Random(seed)
    words = [f"{w}{i}" for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 64)]
    return [
        {
            "task_id": f"task-{i // 100:06d}",
            "step": i % 100,
            "tool": TOOLS[i % len(TOOLS)],
            "latency_ms": rng.random() * 1000,
            "tokens": rng.randrange(10, 4000),
            "ok": rng.random() > 0.1,
            "text": " ".join(rng.choices(words, k=30))[:220],
        }
        for i in range(n)
    ]


def median_time(
    fn: Callable[[], None], runs: int, setup: Callable[[], None] | None = None
) -> float:
    """Median wall time of `fn` over `runs` runs (setup excluded)."""
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Workdir:
    """A scratch folder recreated before each run."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="transit-bench-"))

    def fresh(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def bench_batch_append(table: pa.Table, batch_rows: int, runs: int, work: Workdir) -> None:
    batches = table.to_batches(max_chunksize=batch_rows)
    state: dict[str, Path] = {}

    def raw() -> None:
        path = state["dir"] / "raw.arrow"
        with open(path, "wb") as f:
            writer = pa.ipc.new_stream(f, table.schema)
            for b in batches:
                writer.write_batch(b)
                f.flush()
                os.fdatasync(f.fileno())
            writer.close()

    streams: list[ta.Stream] = []

    def ours() -> None:
        stream = streams[-1]
        for b in batches:
            stream.append(b, durability="local")

    def setup() -> None:
        state["dir"] = work.fresh("append")

    def setup_ours() -> None:
        setup()
        log = ta.open(state["dir"] / "log", segment_max_records=10**9, segment_max_bytes=1 << 40)
        streams.append(log.create_stream("bench"))

    t_raw = median_time(raw, runs, setup)
    t_ours = median_time(ours, runs, setup_ours)
    n = table.num_rows
    print(
        f"batch append local ({len(batches)} batches of {batch_rows}): "
        f"raw IPC+fsync {n / t_raw:,.0f} rec/s, transit {n / t_ours:,.0f} rec/s, "
        f"ratio {t_raw / t_ours:.2f} (target >= 0.7)"
    )


def bench_seal(table: pa.Table, runs: int, work: Workdir) -> None:
    state: dict[str, object] = {}

    def raw() -> None:
        path = Path(str(state["dir"])) / "raw.parquet"
        pq.write_table(table, path, compression="zstd", row_group_size=65536)
        blake3.blake3(path.read_bytes(), max_threads=blake3.blake3.AUTO).hexdigest()

    def setup_ours() -> None:
        state["dir"] = work.fresh("seal")
        log = ta.open(
            Path(str(state["dir"])) / "log",
            segment_max_records=10**9,
            segment_max_bytes=1 << 40,
            durability="memory",
        )
        stream = log.create_stream("bench")
        stream.append(table)
        state["stream"] = stream

    def ours() -> None:
        stream = state["stream"]
        assert isinstance(stream, ta.Stream)
        stream.flush()

    def setup_raw() -> None:
        state["dir"] = work.fresh("seal")

    t_raw = median_time(raw, runs, setup_raw)
    t_ours = median_time(ours, runs, setup_ours)
    n = table.num_rows
    print(
        f"sealing {n:,} records: raw write_table+blake3 {n / t_raw:,.0f} rec/s, "
        f"transit seal+commit {n / t_ours:,.0f} rec/s, ratio {t_raw / t_ours:.2f} (target >= 0.8)"
    )


def bench_dict_append(rows: list[dict[str, object]], runs: int, work: Workdir) -> None:
    names = list(rows[0])
    schema = pa.Table.from_pylist(rows[:1]).schema

    def raw() -> None:
        cols: dict[str, list[object]] = {k: [] for k in names}
        out = []
        for row in rows:
            for k in names:
                cols[k].append(row[k])
            if len(cols[names[0]]) == 65536:
                out.append(pa.record_batch([pa.array(cols[k]) for k in names], schema=schema))
                cols = {k: [] for k in names}
        out.append(pa.record_batch([pa.array(cols[k]) for k in names], schema=schema))

    state: dict[str, ta.Stream] = {}

    def setup() -> None:
        log = ta.open(f"memory://bench-dict-{time.time_ns()}", durability="memory")
        state["stream"] = log.create_stream("bench")

    def ours() -> None:
        append = state["stream"].append
        for row in rows:
            append(row)

    t_raw = median_time(raw, runs)
    t_ours = median_time(ours, runs, setup)
    n = len(rows)
    print(
        f"per-record append(dict) memory: bare loop {n / t_raw:,.0f} rec/s, "
        f"transit {n / t_ours:,.0f} rec/s, ratio {t_raw / t_ours:.2f} (target >= 0.5)"
    )


def bench_threads(rows: list[dict[str, object]], seconds: float, runs: int, work: Workdir) -> None:
    rates = []
    for _ in range(runs):
        log = ta.open(work.fresh("threads") / "log")
        stream = log.create_stream("bench")
        stream.append(rows[0])
        stop = time.perf_counter() + seconds
        counts = [0] * 8

        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=_append_until, args=(stream, rows, i, stop, counts))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts) / (time.perf_counter() - t0))
        log.close()
    fsync_us = measure_fsync_us(work)
    print(
        f"8 threads single-record append local: {statistics.median(rates):,.0f} rec/s "
        f"(target >= 50,000; one fdatasync on this disk takes {fsync_us:.0f} us, so 8 "
        f"synchronous writers are bounded by {8e6 / fsync_us:,.0f} rec/s)"
    )


def _append_until(
    stream: ta.Stream, rows: list[dict[str, object]], i: int, stop: float, counts: list[int]
) -> None:
    k = 0
    while time.perf_counter() < stop:
        stream.append(rows[(i * 7919 + k) % len(rows)], durability="local")
        k += 1
    counts[i] = k


def measure_fsync_us(work: Workdir, n: int = 200) -> float:
    """Median latency of write(300 B) + fdatasync on the benchmark's disk, in microseconds."""
    path = work.fresh("fsync") / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 300)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dict-records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = make_rows(args.records)
    table = pa.Table.from_pylist(rows)
    print(
        f"data: {table.num_rows:,} records, {table.nbytes / table.num_rows:.0f} B/record in "
        f"Arrow, medians of {args.runs} runs"
    )
    work = Workdir()
    try:
        bench_batch_append(table, args.batch, args.runs, work)
        bench_seal(table, args.runs, work)
        bench_dict_append(rows[: args.dict_records], args.runs, work)
        bench_threads(rows, args.seconds, args.runs, work)
    finally:
        work.cleanup()


if __name__ == "__main__":
    main()
