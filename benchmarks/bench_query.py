"""DuckDB query costs over stream views, each measured side by side with a raw baseline in one run.

Run: `python benchmarks/bench_query.py [--records 5000000] [--runs 5] [--streams 1000]`. Prints
medians of `--runs` runs (baseline and view runs interleaved, after one warm-up each) and the
ratio of the view's time to the baseline's (lower is better):

1. filter + aggregate over a branch three levels deep (`--records` records in its replay, forks
   inside segments) vs the same SQL over `read_parquet` of exactly the files the view reads;
2. an offset-range point lookup of 100 records through the same view vs the same lookup in the
   one Parquet file that holds them;
3. the fixed cost of `connect()` (`Log.duckdb()`) for a log of `--streams` streams, with the
   part spent reading the log's metadata (listing streams and commits) and the cost of
   refreshing a connection that is already up to date; it also checks that `connect()` fetches
   no segment of a `memory://` log (views open no segment file).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

import transit_arrow as ta
from transit_arrow.query import connect
from transit_arrow.query.snapshot import StreamPlan, take_snapshot

TOOLS = np.array(["search", "python", "browser", "sql", "shell"])
AGGREGATE = (
    "SELECT tool, count(*) AS n, avg(latency_ms) AS latency, sum(tokens) AS tokens "
    "FROM {source} WHERE ok AND latency_ms > 100 GROUP BY tool ORDER BY tool"
)
LOOKUP = "SELECT * FROM {source} WHERE _offset >= {lo} AND _offset < {hi}"


def make_table(n: int, seed: int) -> pa.Table:
    """`n` records with a few typed columns, built with numpy (fast for millions of rows)."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "task_id": pa.array(np.char.add("task-", (np.arange(n) // 100).astype(str))),
            "step": pa.array(np.arange(n) % 100, pa.int64()),
            "tool": pa.array(TOOLS[rng.integers(0, len(TOOLS), n)]),
            "latency_ms": pa.array(rng.random(n) * 1000),
            "tokens": pa.array(rng.integers(10, 4000, n)),
            "ok": pa.array(rng.random(n) > 0.1),
        }
    )


def append(stream: ta.Stream, n: int, seed: int) -> None:
    chunk = 500_000
    for i, start in enumerate(range(0, n, chunk)):
        stream.append(make_table(min(chunk, n - start), seed * 1000 + i), durability="memory")
    stream.flush()


def build_deep_log(root: Path, records: int) -> ta.Log:
    """main -> b1 -> b2 -> b3, each fork inside a segment; b3's replay holds `records`."""
    q = records // 10
    log = ta.open(root, segment_max_records=max(q, 1000), durability="memory")
    main = log.create_stream("main")
    append(main, 4 * q, 1)
    b1 = main.branch("b1", at=3 * q - q // 2 - 1, reason="retry")  # 2.5 q from main
    append(b1, 2 * q, 2)
    b2 = b1.branch("b2", at=4 * q + q // 2 - 1, reason="retry of the retry")  # 2 q from b1
    append(b2, 3 * q, 3)
    b3 = b2.branch("b3", at=7 * q - 1, reason="third level")  # 2.5 q from b2
    append(b3, records - 7 * q, 4)
    return log


def interleaved_medians(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """Median wall time of each function, running them in turn `runs` times after a warm-up."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def files_of(log: ta.Log, name: str) -> list[str]:
    """The segment files the view of `name` reads, in replay order."""
    plan = StreamPlan.of(log.stream(name))
    return [
        log.catalog.segment_file(seg)
        for span in plan.spans
        for seg in span.manifest.segments
        if seg.last_offset >= span.lo and seg.first_offset < span.hi
    ]


def bench_deep_branch(work: Path, records: int, runs: int) -> None:
    log = build_deep_log(work / "deep", records)
    con = connect(log)
    files = files_of(log, "b3")
    raw = f"read_parquet([{', '.join(repr(f) for f in files)}])"
    ours, theirs = (AGGREGATE.format(source=s) for s in ('"b3"', raw))
    assert con.sql('SELECT count(*) FROM "b3"').fetchall() == [(records,)]
    t_raw, t_ours = interleaved_medians(
        [lambda: con.sql(theirs).to_arrow_table(), lambda: con.sql(ours).to_arrow_table()], runs
    )
    print(
        f"filter+aggregate over b3 (3 levels deep, {records:,} records, {len(files)} files): "
        f"read_parquet {t_raw * 1000:.1f} ms, view {t_ours * 1000:.1f} ms, "
        f"ratio {t_ours / t_raw:.2f} (target <= 1.2)"
    )

    lo = records - records // 20
    own = log.catalog.manifest("b3", refresh=False).segments
    hit = log.catalog.segment_file(next(s for s in own if s.first_offset <= lo <= s.last_offset))
    ours = LOOKUP.format(source='"b3"', lo=lo, hi=lo + 100)
    theirs = LOOKUP.format(source=f"read_parquet({hit!r})", lo=lo, hi=lo + 100)
    assert con.sql(ours).to_arrow_table().num_rows == 100
    t_raw, t_ours = interleaved_medians(
        [lambda: con.sql(theirs).to_arrow_table(), lambda: con.sql(ours).to_arrow_table()], runs
    )
    print(
        f"point lookup of 100 records at offset {lo:,}: one file {t_raw * 1000:.2f} ms, "
        f"view {t_ours * 1000:.2f} ms, ratio {t_ours / t_raw:.2f} (target <= 2)"
    )
    log.close()


def build_many(root: Path, streams: int) -> ta.Log:
    """`streams` streams: a quarter roots, each with three branches, one segment each."""
    log = ta.open(root, durability="memory")
    table = make_table(100, 0)
    for r in range(max(1, streams // 4)):
        task = log.create_stream(f"task-{r:04d}")
        task.append(table)
        task.flush()
        for b in range(3):
            branch = task.branch(f"task-{r:04d}/retry-{b}", at=50)
            branch.append(table)
            branch.flush()
    return log


def bench_fixed_cost(work: Path, streams: int, runs: int) -> None:
    log = build_many(work / "many", streams)
    n = len(log.streams())
    files = sum(1 for _ in (work / "many" / "streams").rglob("*.parquet"))
    t_snapshot, t_connect = interleaved_medians(
        [lambda: take_snapshot(log), lambda: connect(log).close()], runs
    )
    con = connect(log)
    (t_refresh,) = interleaved_medians([lambda: connect(log, con)], runs)
    con.close()
    print(
        f"connect() for {n:,} streams ({files:,} segment files): {t_connect:.2f} s "
        f"({t_connect / n * 1000:.2f} ms per stream), of which reading the log's metadata "
        f"{t_snapshot:.2f} s; refreshing an up-to-date connection {t_refresh:.2f} s"
    )
    mirror = ta.open(f"memory://bench-query-{time.time_ns()}", durability="memory")
    for name in log.streams()["name"].to_pylist()[:40]:
        target = mirror.create_stream(name.replace("/", "-"))
        target.append(log.stream(name).read().drop_columns(["_stream", "_offset"]))
        target.flush()
    before = mirror.catalog.cache.fetches
    connect(mirror).close()
    print(
        f"segments fetched by connect() on a memory:// log of 40 streams: "
        f"{mirror.catalog.cache.fetches - before} (target 0: views open no segment)"
    )
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"medians of {args.runs} runs")
    work = Path(tempfile.mkdtemp(prefix="transit-bench-query-"))
    try:
        bench_deep_branch(work, args.records, args.runs)
        bench_fixed_cost(work, args.streams, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
