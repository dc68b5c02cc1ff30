"""Branch cost and deep-branch replay, each measured side by side in one run (DESIGN §6).

Run: `python benchmarks/bench_branch.py [--big 10000000] [--small 1000] [--runs 9] [--w3]`
(`--only w3` for the W3 read alone).

Prints medians of `--runs` runs (at least 5), each pair measured alternately in the same run:

1. branch creation (`log.branch(name, at="parent@last")`) with a parent of `--small` records
   vs one of `--big` records; target: big/small <= 1.5 (O(1) in the parent's history);
2. first-read latency: time from `reader()` on the new branch to its first record batch,
   same parents, same target. The first batch is the first row group of the parent's first
   segment (at most 65,536 rows), so a 1,000-record parent has a smaller one; the line also
   shows what pyarrow alone takes to open that segment and decode that batch, and a control
   pair isolates history size: a `--control`-record parent (default one 1,000,000-record
   segment) vs the big one, whose first segments are laid out identically;
3. replay throughput of a branch three levels deep (`read()`) vs `pq.read_table` of exactly
   the Parquet segment files that replay covers; target: transit/raw >= 0.8;
4. `--w3` (alone, or with `--only w3`): the peers benchmark's W3 layout (`benchmarks/peers.py`:
   `--w3-commits` commits of 1,000 records with `durability="tiered"`, one segment each,
   then one bulk append of `--w3-bulk` records, a branch at the head and 1,000 records
   appended to it, ~200-byte string payloads); `branch.read()` vs `pq.read_table` of the same
   segment files, side by side (target: transit <= 1.2x the raw read, its time over pyarrow's).

`--big` sets the big parent's record count (default 10,000,000). It is built fast: pyarrow
tables of 1,000,000 rows appended with `memory` durability into 1,000,000-record segments
(`segment_max_records`): about 10 s and 0.6 GB of RAM on a 2-core machine at the default;
`--big 1000000` gives a quick run. `--level` sets the records each level of the deep branch
adds (default 1,000,000; the replay covers 4 x `--level` records).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import transit_arrow as ta

CHUNK = 1_000_000
TAGS = np.array(["search", "python", "browser", "sql"])


def make_table(n: int, first: int) -> pa.Table:
    """`n` records: a sequential int64, a random float64 and a short string."""
    rng = np.random.default_rng(first)
    return pa.table(
        {
            "step": np.arange(first, first + n, dtype=np.int64),
            "score": rng.random(n),
            "tool": TAGS[rng.integers(0, len(TAGS), n)],
        }
    )


def fill(stream: ta.Stream, records: int) -> None:
    """Append `records` records in tables of at most CHUNK rows, then seal them."""
    for first in range(0, records, CHUNK):
        stream.append(make_table(min(CHUNK, records - first), first), durability="memory")
    stream.flush()


def median_pair(
    first: Callable[[int], float], second: Callable[[int], float], runs: int
) -> tuple[float, float]:
    """Medians of `runs` alternating measurements (each callable returns seconds)."""
    a, b = [], []
    for i in range(runs):
        a.append(first(i))
        b.append(second(i))
    return statistics.median(a), statistics.median(b)


def segment_files(root: Path, stream: str, last_offset: int) -> list[Path]:
    """The stream's own segment files holding offsets <= `last_offset`, in offset order
    (names are `<first>-<last>-<blake3>.parquet`)."""
    folder = root / "streams" / stream / "segments"
    return sorted(p for p in folder.glob("*.parquet") if int(p.name.split("-")[1]) <= last_offset)


class BranchBench:
    """Parents of several sizes in one log, and branches of them."""

    def __init__(self, log: ta.Log, root: Path, sizes: dict[str, int]) -> None:
        self.log = log
        self.root = root
        self.sizes = sizes
        self.first_rows: dict[str, int] = {}
        self.names = itertools.count()

    def _branch(self, parent: str) -> ta.Stream:
        """Branch `parent` at its last record (the whole history behind the fork)."""
        at = f"{parent}@{self.sizes[parent] - 1}"
        return self.log.branch(f"{parent}-{next(self.names)}", at=at)

    def create(self, parent: str) -> Callable[[int], float]:
        def run(i: int) -> float:
            t0 = time.perf_counter()
            self._branch(parent)
            return time.perf_counter() - t0

        return run

    def first_read(self, parent: str) -> Callable[[int], float]:
        def run(i: int) -> float:
            branch = self._branch(parent)
            t0 = time.perf_counter()
            batch = branch.reader().read_next_batch()
            elapsed = time.perf_counter() - t0
            self.first_rows[parent] = batch.num_rows
            return elapsed

        return run

    def raw_first_batch(self, parent: str) -> Callable[[int], float]:
        path = sorted((self.root / "streams" / parent / "segments").glob("*.parquet"))[0]

        def run(i: int) -> float:
            t0 = time.perf_counter()
            next(pq.ParquetFile(path).iter_batches(batch_size=65536))
            return time.perf_counter() - t0

        return run


def bench_branching(work: Path, small: int, control: int, big: int, runs: int) -> None:
    root = work / "branching"
    sizes = {"small": small, "control": control, "big": big}
    with ta.open(
        root, durability="memory", segment_max_records=CHUNK, segment_max_bytes=1 << 40
    ) as log:
        for name, n in sizes.items():
            t0 = time.perf_counter()
            fill(log.create_stream(name), n)
            if name == "big":
                elapsed = time.perf_counter() - t0
        print(f"built the {big:,}-record parent in {elapsed:.1f} s ({big / elapsed:,.0f} rec/s)")
        os.sync()  # so that writeback of the parents does not slow the timed commits' fsyncs
        bench = BranchBench(log, root, sizes)
        for name in sizes:  # warm up: first handles, manifests and page cache of each parent
            bench.first_read(name)(0)
        t_small, t_big = median_pair(bench.create("small"), bench.create("big"), runs)
        print(
            f"branch creation: parent of {small:,} records {t_small * 1e3:.2f} ms, "
            f"parent of {big:,} records {t_big * 1e3:.2f} ms, ratio {t_big / t_small:.2f} "
            "(target <= 1.5)"
        )
        r_small, r_big = median_pair(bench.first_read("small"), bench.first_read("big"), runs)
        raw_small, raw_big = median_pair(
            bench.raw_first_batch("small"), bench.raw_first_batch("big"), runs
        )
        rows = bench.first_rows
        print(
            f"first-read latency: parent of {small:,} records {r_small * 1e3:.2f} ms, "
            f"parent of {big:,} records {r_big * 1e3:.2f} ms, ratio {r_big / r_small:.2f} "
            f"(target <= 1.5); first batches of {rows['small']:,} vs {rows['big']:,} rows, "
            f"pyarrow alone decodes them in {raw_small * 1e3:.2f} vs {raw_big * 1e3:.2f} ms"
        )
        r_control, r_big = median_pair(bench.first_read("control"), bench.first_read("big"), runs)
        print(
            f"first-read latency, equal first batches ({rows['control']:,} rows): parent of "
            f"{control:,} records {r_control * 1e3:.2f} ms, parent of {big:,} records "
            f"{r_big * 1e3:.2f} ms, ratio {r_big / r_control:.2f} (target <= 1.5)"
        )


def bench_deep_replay(work: Path, level: int, runs: int) -> None:
    root = work / "deep"
    with ta.open(
        root, durability="memory", segment_max_records=CHUNK, segment_max_bytes=1 << 40
    ) as log:
        stream = log.create_stream("deep")
        fill(stream, level)
        fill(stream, level)  # a second segment, which the branches' replay does not cover
        covered = segment_files(root, "deep", level - 1)
        for depth in (1, 2, 3):
            stream = stream.branch(f"deep-l{depth}", at=depth * level - 1)
            fill(stream, level)
            covered += segment_files(root, stream.name, (depth + 1) * level - 1)
        deepest = stream
        records = deepest.next_offset
        assert records == 4 * level
        assert sum(pq.read_metadata(p).num_rows for p in covered) == records

        def raw(i: int) -> float:
            t0 = time.perf_counter()
            table = pa.concat_tables([pq.read_table(p) for p in covered])
            elapsed = time.perf_counter() - t0
            assert table.num_rows == records
            return elapsed

        def ours(i: int) -> float:
            t0 = time.perf_counter()
            table = deepest.read()
            elapsed = time.perf_counter() - t0
            assert table.num_rows == records
            return elapsed

        raw(0), ours(0)  # warm the page cache for both alike
        t_raw, t_ours = median_pair(raw, ours, runs)
        print(
            f"replay of a branch 3 levels deep ({records:,} records in {len(covered)} files): "
            f"pq.read_table {records / t_raw:,.0f} rec/s, transit read() "
            f"{records / t_ours:,.0f} rec/s, ratio {t_raw / t_ours:.2f} (target >= 0.8)"
        )


def payload_table(n: int, first: int) -> pa.Table:
    """`n` records shaped like the peers benchmark's (a model name, ids, a score, a latency
    and a ~200-byte JSON-like payload), built without a Python loop per record."""
    rng = np.random.default_rng(first)
    models = np.array(["gpt-4o", "claude-3-5-sonnet", "llama-3-70b", "mistral-large"])
    notes = pa.array([f'{{"prompt":"template {i}","note":"' + "." * 160 + '"}' for i in range(64)])
    return pa.table(
        {
            "model": models[rng.integers(0, len(models), n)],
            "task_id": np.arange(first, first + n, dtype=np.int64),
            "score": rng.random(n),
            "latency_ms": rng.integers(20, 5000, n, dtype=np.int32),
            "payload": notes.take(pa.array(rng.integers(0, 64, n))),
        }
    )


def bench_w3(work: Path, commits: int, bulk: int, runs: int) -> None:
    root = work / "w3"
    with ta.open(root) as log:
        stream = log.create_stream("t")
        for k in range(commits):
            stream.append(payload_table(1000, k * 1000), durability="tiered")
        stream.append(payload_table(bulk, commits * 1000), durability="tiered")
        n = stream.next_offset
        branch = log.branch("b", at=f"t@{n - 1}")
        branch.append(payload_table(1000, n), durability="tiered")
        files = segment_files(root, "t", n - 1) + segment_files(root, "b", n + 999)
        records = n + 1000

        def raw(i: int) -> float:
            t0 = time.perf_counter()
            table = pq.read_table([str(p) for p in files])
            elapsed = time.perf_counter() - t0
            assert table.num_rows == records
            return elapsed

        def ours(i: int) -> float:
            t0 = time.perf_counter()
            table = log.stream("b").read()
            elapsed = time.perf_counter() - t0
            assert table.num_rows == records
            return elapsed

        raw(0), ours(0)  # warm the page cache (and this process's verification) for both
        t_ours, t_raw = median_pair(ours, raw, runs)
    print(
        f"W3 read of a branch ({records:,} records in {len(files)} files): transit read() "
        f"{t_ours:.3f} s, pq.read_table of the same files {t_raw:.3f} s, ratio "
        f"{t_ours / t_raw:.2f} (target <= 1.2); load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", type=int, default=10_000_000, help="records of the big parent")
    parser.add_argument("--small", type=int, default=1_000, help="records of the small parent")
    parser.add_argument("--control", type=int, default=CHUNK, help="records of the control parent")
    parser.add_argument("--level", type=int, default=1_000_000, help="records per deep level")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--w3", action="store_true", help="also run the W3 read side by side")
    parser.add_argument("--only", choices=["w3"], help="run only this part")
    parser.add_argument("--w3-commits", type=int, default=500)
    parser.add_argument("--w3-bulk", type=int, default=2_000_000)
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    print(
        f"data: 3 columns, {CHUNK:,}-record segments, {65536:,}-row row groups, medians of "
        f"{args.runs} runs"
    )
    work = Path(tempfile.mkdtemp(prefix="transit-bench-branch-"))
    try:
        if args.only is None:
            bench_branching(work, args.small, args.control, args.big, args.runs)
            bench_deep_replay(work, args.level, args.runs)
        if args.w3 or args.only == "w3":
            bench_w3(work, args.w3_commits, args.w3_bulk, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
