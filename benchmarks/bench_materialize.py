"""Materialization refresh cost: does it depend on history size, and do branches reuse work?

Run: `python benchmarks/bench_materialize.py [--small 100000] [--big 10000000] [--new 10000]
[--runs 5]`. Prints medians of `--runs` runs, measured side by side in one run (small and big
histories alternate, and take turns going first, so machine noise hits both alike):

1. `refresh()` after `--new` new records on a stream with `--small` vs `--big` records of
   history, each already checkpointed at its head (target: big/small ratio <= 1.5), for an
   aggregate view (state = one row per group), a filter view (state = every matching row) and
   an "eval" view of the forms issue 16 made incremental (FILTER, count_if, avg(CASE), stddev,
   var_pop, GROUP BY an expression). A filter view's refresh writes one new part file for the
   new records' output (docs/format.md, "Filter-view parts"), so it does not rewrite the
   ~1 M rows the big view holds; the number of parts it ends with is printed;
2. a branch forked near the head of the `--big` parent, after the parent's checkpoint: the
   records its first refresh reads (must be only those after the checkpoint) and its time vs a
   full recompute (the same query with no checkpoint, over the branch's whole replay).

History is built fast: `--chunk`-record pyarrow tables appended in `memory` durability, sealed
into `--segment`-record Parquet segments. The time to commit the new records (flush) is not part
of the refresh time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

import transit_arrow as ta

TOOLS = pa.array(["search", "python", "browser", "sql", "shell"])
AGG_QUERY = (
    "SELECT tool, count(*) AS n, sum(tokens) AS tokens, avg(latency_ms) AS latency, "
    "min(latency_ms) AS fastest, max(tokens) AS biggest, bool_and(ok) AS all_ok, "
    "arg_max(tokens, _offset) AS last_tokens FROM records GROUP BY tool"
)
FILTER_QUERY = "SELECT _offset, tool, tokens, latency_ms FROM records WHERE NOT ok"
#: What eval users write (issue 16): FILTER, count_if, avg(CASE), stddev, GROUP BY expression.
EVAL_QUERY = (
    "SELECT upper(tool) AS tool, count(*) FILTER (WHERE ok) AS passed, "
    "count_if(latency_ms > 500) AS slow, avg(CASE WHEN ok THEN 1.0 ELSE 0.0 END) AS pass_rate, "
    "stddev(latency_ms) AS latency_sd, var_pop(tokens) FILTER (WHERE ok) AS tokens_var "
    "FROM records GROUP BY upper(tool)"
)


def make_table(n: int, rng: np.random.Generator) -> pa.Table:
    """`n` records: a tool (5 values), a latency, a token count and an ok flag (90% true)."""
    tool = pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 5, n, dtype=np.int8)), TOOLS)
    return pa.table(
        {
            "tool": tool.cast(pa.string()),
            "latency_ms": rng.random(n) * 1000,
            "tokens": rng.integers(10, 4000, n),
            "ok": rng.random(n) > 0.1,
        }
    )


class History:
    """A log whose stream `main` holds `records` records, with both views checkpointed."""

    def __init__(self, folder: Path, records: int, chunk: int, segment: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.folder = folder
        self.log = ta.open(
            folder,
            durability="memory",
            segment_max_records=segment,
            segment_max_bytes=1 << 40,
            segment_max_age=3600.0,
        )
        self.main = self.log.create_stream("main")
        t0 = time.perf_counter()
        for start in range(0, records, chunk):
            self.main.append(make_table(min(chunk, records - start), self.rng))
        self.main.flush()
        self.build_seconds = time.perf_counter() - t0
        self.views = {
            "aggregate": self.log.materialize("agg", "main", query=AGG_QUERY),
            "filter": self.log.materialize("failures", "main", query=FILTER_QUERY),
            "eval": self.log.materialize("eval", "main", query=EVAL_QUERY),
        }
        self.first_refresh: dict[str, float] = {}
        for kind, mv in self.views.items():
            report = mv.refresh()
            assert report.records_processed == records, report
            self.first_refresh[kind] = report.seconds

    def append(self, n: int) -> None:
        """Append and commit `n` new records."""
        self.main.append(make_table(n, self.rng))
        self.main.flush()

    def filter_parts(self) -> int:
        """How many part files the filter view's latest checkpoint on `main` lists."""
        folder = self.folder / "materializations" / "failures" / "checkpoints" / "main"
        latest = max(folder.glob("*.json"), key=lambda p: p.name)
        return len(json.loads(latest.read_text())["parts"])

    def close(self) -> None:
        self.log.close()


def timed(fn: Callable[[], ta.RefreshReport]) -> tuple[float, ta.RefreshReport]:
    """Wall time of `fn()` and its result."""
    t0 = time.perf_counter()
    report = fn()
    return time.perf_counter() - t0, report


def bench_history(small: History, big: History, args: argparse.Namespace) -> None:
    times: dict[tuple[str, str], list[float]] = {}
    pairs = [("small", small), ("big", big)]
    for run in range(args.runs):
        for label, history in pairs if run % 2 == 0 else pairs[::-1]:  # alternate who goes first
            history.append(args.new)
            for kind, mv in history.views.items():
                seconds, report = timed(mv.refresh)
                assert report.records_processed == args.new, report
                assert report.reused_checkpoint is not None, report
                assert report.incremental, report
                times.setdefault((label, kind), []).append(seconds)
    print(
        f"1. refresh after {args.new:,} new records "
        f"(history {args.small:,} vs {args.big:,} records):"
    )
    for kind in small.views:
        t_small = statistics.median(times[("small", kind)])
        t_big = statistics.median(times[("big", kind)])
        target = " (target <= 1.5)"
        print(
            f"   {kind:9} view: {t_small * 1e3:8.1f} ms vs {t_big * 1e3:8.1f} ms, "
            f"ratio {t_big / t_small:.2f}{target}; first build from scratch: "
            f"{small.first_refresh[kind]:.2f} s vs {big.first_refresh[kind]:.2f} s"
        )
    rows = {k: mv.read().num_rows for k, mv in big.views.items()}
    print(f"   view rows at {args.big:,} records: {rows}")
    parts = {label: history.filter_parts() for label, history in pairs}
    print(f"   filter view state files (parts) after the runs: {parts}")


def bench_branch(big: History, args: argparse.Namespace) -> None:
    """Fork near the head of the big history, after its checkpoint, and refresh the fork."""
    mv = big.views["aggregate"]
    checkpoint = big.main.next_offset - 1
    assert mv.refresh().records_processed == 0  # the parent is checkpointed at its head
    big.append(args.new)  # parent records after the checkpoint
    fork = checkpoint + args.new // 2
    own = 1_000
    expected = (fork - checkpoint) + own
    first: list[float] = []
    full: list[float] = []
    processed: set[int] = set()
    for run in range(args.runs):
        name = f"fork-{run}"
        branch = big.log.branch(name, at=f"main@{fork}")
        branch.append(make_table(own, big.rng))
        branch.flush()
        seconds, report = timed(partial(mv.refresh, name))
        assert report.reused_checkpoint is not None
        assert report.reused_checkpoint.startswith(f"main@{checkpoint} "), report
        processed.add(report.records_processed)
        first.append(seconds)
        scratch = big.log.materialize(f"agg-scratch-{run}", "main", query=AGG_QUERY)
        seconds, report = timed(partial(scratch.refresh, name))
        assert report.reused_checkpoint is None and report.records_processed == fork + 1 + own
        full.append(seconds)
        got = sorted(mv.read(name).to_pylist(), key=lambda r: r["tool"])
        want = sorted(scratch.read(name).to_pylist(), key=lambda r: r["tool"])
        assert [r["n"] for r in got] == [r["n"] for r in want]
        assert [r["tokens"] for r in got] == [r["tokens"] for r in want]
    t_first, t_full = statistics.median(first), statistics.median(full)
    (n,) = processed
    print(
        f"2. branch forked at main@{fork:,} (parent checkpoint at main@{checkpoint:,}, "
        f"{own:,} own records):"
    )
    print(
        f"   first refresh read {n:,} records (expected {expected:,}: "
        f"{'OK' if n == expected else 'WRONG'}) in {t_first * 1e3:.1f} ms; full recompute "
        f"of {fork + 1 + own:,} records {t_full:.2f} s; speedup {t_full / t_first:,.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--segment", type=int, default=2_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="transit-bench-mv-"))
    try:
        small = History(work / "small", args.small, args.chunk, args.segment, seed=1)
        big = History(work / "big", args.big, args.chunk, args.segment, seed=2)
        print(
            f"history: {args.small:,} records built in {small.build_seconds:.1f} s, "
            f"{args.big:,} in {big.build_seconds:.1f} s; medians of {args.runs} runs"
        )
        bench_history(small, big, args)
        bench_branch(big, args)
        small.close()
        big.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
