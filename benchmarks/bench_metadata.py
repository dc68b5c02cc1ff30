"""Metadata costs that must stay flat as a log grows, each measured side by side in one run.

Run: `python benchmarks/bench_metadata.py [--commits 100000] [--branches 10000]
[--streams 1000] [--many 2000] [--runs 5]`. Prints medians of `--runs` runs (alternating with
their baselines where there is one):

1. opening a stream with `--commits` commits (fresh `ta.open` + `log.stream(name)`), with its
   folded manifest snapshots (DESIGN §5) vs the same log without them (folding every commit),
   and how many files each reads (target: O(1) files, < 0.5 s);
2. a log with `--branches` branches of one root: fresh `ta.open` + `lineage()` (target < 1 s)
   with the local metadata cache (`engine/metacache.py`) and without it (removed before each
   run), beside a bare loop reading and parsing each stream's commit;
3. `Log.duckdb()` for `--streams` streams on a fresh handle (target <= 0.3 s), beside DuckDB
   alone creating one view per stream over `read_parquet` of the same files, and the first
   `Log.duckdb()` of a log state (its view pack, `query/pack.py`, removed before each run),
   and one after a single stream got a commit (the newest pack reused);
4. a fresh handle's first `log.sql` over a 2-stream log vs a new DuckDB connection running the
   same query over `read_parquet` of the same files (target: ratio <= 1.5); then the same two
   in new processes (`python -c`), each process timing itself from after its imports to the
   result, and its whole run (interpreter start and imports included) timed from outside;
5. `log.sql` on a `--many`-stream log: the first query, then one after a single stream changed
   (it should not rebuild views it does not need).

The long commit log and the many-branch log are written directly as commit files (canonical
JSON, chained roots, exactly what `CommitLog.create` writes, without one fsync per file) and the
snapshots as a writer writes them every `SNAPSHOT_INTERVAL` commits, to build them in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

import transit_arrow as ta
from transit_arrow.commit import FORMAT, canonical, compute_root, writer_identity
from transit_arrow.engine.metacache import CACHE_FILE
from transit_arrow.layout import commit_path, snapshot_path, stream_folder
from transit_arrow.manifest import (
    SNAPSHOT_INTERVAL,
    Manifest,
    SegmentRef,
    Snapshot,
    compact_action,
    encode_snapshot,
)
from transit_arrow.storage.local import LocalStore

QUERY = "SELECT model, count(*), avg(score) FROM {a} GROUP BY model ORDER BY model"


class CountingStore(LocalStore):
    """A local store counting the files it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.gets = 0

    def get(self, path: str) -> bytes:
        self.gets += 1
        return super().get(path)


def median_of(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Medians of each function, run in alternating order after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    for run in range(runs):
        for label, fn in items if run % 2 == 0 else items[::-1]:
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def write_commit(root: Path, name: str, g: int, prev: str | None, actions: list) -> dict:
    entry: dict[str, Any] = {
        "format": FORMAT,
        "stream": name,
        "generation": g,
        "prev_root": prev,
        "time": f"2026-01-01T00:00:00.{g % 1000000:06d}Z",
        "writer": writer_identity("bench", 0),
        "actions": actions,
    }
    entry["root"] = compute_root(entry, prev)
    path = root / commit_path(stream_folder(name), g)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical(entry))
    return entry


def build_long_stream(root: Path, commits: int, compact_every: int = 0) -> None:
    """Stream `s` with `commits` commits, each adding a 1,000-record segment entry; with
    `compact_every`, every such commit is instead a compaction of the segments added since the
    previous one (what `auto_compact` does), so the manifest stays small."""
    with ta.open(root) as log:
        log.create_stream("s", schema=pa.schema([("v", pa.int64())]))
    entry = json.loads((root / commit_path(stream_folder("s"), 0)).read_bytes())
    manifest = Manifest.initial(entry)
    prev = entry["root"]
    segments: list[SegmentRef] = []
    run = 0  # index of the first segment not compacted yet
    for g in range(1, commits):
        if compact_every and g % compact_every == 0 and len(segments) - run >= 2:
            old = segments[run:]
            merged = replace(
                old[0],
                path=f"streams/s/segments/compacted-{g:016x}.parquet",
                last_offset=old[-1].last_offset,
                records=sum(x.records for x in old),
                blake3=f"{g:064x}",
            )
            action = compact_action(old, merged)
            segments[run:] = [merged]
            run = len(segments)
        else:
            lo = segments[-1].last_offset + 1 if segments else 0
            action = {
                "type": "add_segment",
                "path": f"streams/s/segments/{lo:020d}-{lo + 999:020d}-{g:016x}.parquet",
                "first_offset": lo,
                "last_offset": lo + 999,
                "records": 1000,
                "bytes": 4096,
                "blake3": f"{g:064x}",
                "min_timestamp": g,
                "max_timestamp": g,
            }
            segments.append(SegmentRef.from_action(action))
        commit = write_commit(root, "s", g, prev, [action])
        before, prev = prev, commit["root"]
        if g % SNAPSHOT_INTERVAL == 0 and g > commits - 2 * SNAPSHOT_INTERVAL:
            # what the writer folds (Manifest.apply) and records at this generation
            at = replace(
                manifest,
                generation=g,
                root=prev,
                segments=tuple(segments),
                next_offset=segments[-1].last_offset + 1,
                commit_times=(commit["time"],),
            )
            path = root / snapshot_path(stream_folder("s"), g)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_snapshot(Snapshot(at, before)))


def bench_open(args: argparse.Namespace, work: Path) -> None:
    with_snap = work / "long"
    t0 = time.perf_counter()
    build_long_stream(with_snap, args.commits)
    built = time.perf_counter() - t0
    compacted = work / "long-compacted"
    build_long_stream(compacted, args.commits, compact_every=1000)
    without = work / "long-nosnap"
    if args.commits <= args.fold_limit:
        shutil.copytree(with_snap, without, ignore=shutil.ignore_patterns("snapshots"))
    reads: dict[str, int] = {}
    segments: dict[str, int] = {}

    def opener(root: Path, label: str) -> Callable[[], Any]:
        def run() -> None:
            store = CountingStore(root)
            with ta.open(store) as log:
                log.stream("s")
                segments[label] = len(log.catalog.manifest("s", refresh=False).segments)
            reads[label] = store.gets

        return run

    runs = {"snapshot": opener(with_snap, "snapshot"), "compacted": opener(compacted, "compacted")}
    if args.commits <= args.fold_limit:
        runs["fold"] = opener(without, "fold")
    got = interleaved(runs, args.runs)
    if "fold" in got:
        baseline = (
            f"; without snapshots (folding every commit) {got['fold'] * 1e3:.0f} ms reading "
            f"{reads['fold']:,} files (ratio {got['fold'] / got['snapshot']:.1f}x)"
        )
    else:  # folding 100,000 commits takes minutes
        baseline = f" (a fold without snapshots is measured up to --fold-limit {args.fold_limit:,})"
    print(
        f"1. open a stream of {args.commits:,} commits (built in {built:.1f} s), target < 0.5 s "
        f"and O(1) files: {got['snapshot'] * 1e3:.0f} ms reading {reads['snapshot']} files "
        f"with {segments['snapshot']:,} segments (none compacted); "
        f"{got['compacted'] * 1e3:.0f} ms reading {reads['compacted']} files with "
        f"{segments['compacted']:,} segments (compacted every 1,000 commits){baseline}"
    )


def build_branches(root: Path, branches: int) -> None:
    with ta.open(root) as log:
        main = log.create_stream("main")
        main.append(pa.table({"v": list(range(100))}))
        main.flush()
        m = log.catalog.manifest("main")
        parent = {"stream": "main", "offset": 0, "generation": m.generation, "root": m.root}
        create = {
            "type": "create",
            "kind": "branch",
            "parent": None,
            "merge": None,
            "schema": None,
            "metadata": {"actor": "bench", "reason": None, "labels": {}},
            "created_at": "2026-01-01T00:00:00Z",
            "start_offset": 0,
        }
    for i in range(branches):
        offset = i % 100
        action = {**create, "parent": {**parent, "offset": offset}, "start_offset": offset + 1}
        write_commit(root, f"b/{i:05d}", 0, None, [action])


def bench_lineage(args: argparse.Namespace, work: Path) -> None:
    root = work / "branches"
    build_branches(root, args.branches)
    cache = root / "_local" / CACHE_FILE

    def lineage() -> None:
        with ta.open(root) as log:
            assert log.lineage().num_rows == args.branches + 1

    def uncached() -> None:
        cache.unlink(missing_ok=True)  # folds every stream from its commits, then writes it
        lineage()

    def floor() -> None:
        # The least any reader of the latest state does per stream: read and parse its one
        # commit and check there is no next one (no hash check, no table).
        base = root / "streams"
        for folder in os.listdir(base):
            commits = base / folder / "commits"
            json.loads((commits / f"{0:020d}.json").read_bytes())
            (commits / f"{1:020d}.json").exists()

    got = interleaved({"lineage": lineage, "uncached": uncached, "floor": floor}, max(3, args.runs))
    print(
        f"2. fresh open + lineage() of a log with {args.branches:,} branches: "
        f"{got['lineage'] * 1e3:.0f} ms (target < 1 s) with the local metadata cache; "
        f"reading and parsing each stream's commit in a bare loop {got['floor'] * 1e3:.0f} ms "
        f"(ratio {got['lineage'] / got['floor']:.2f}); without the cache (folding every stream "
        f"from its commits, then writing the cache) {got['uncached'] * 1e3:.0f} ms (ratio "
        f"{got['uncached'] / got['floor']:.2f})"
    )


def build_streams(root: Path, count: int, rows: int) -> None:
    rng = np.random.default_rng(7)
    with ta.open(root) as log:
        for i in range(count):
            s = log.create_stream(f"s{i:05d}")
            s.append(
                pa.table(
                    {
                        "model": pa.array(rng.integers(0, 8, rows)).cast(pa.string()),
                        "score": rng.random(rows),
                    }
                )
            )
            s.close()


def bench_duckdb(args: argparse.Namespace, work: Path) -> None:
    root = work / "streams"
    build_streams(root, args.streams, 10)
    with ta.open(root) as log:
        files = [str(root / log.catalog.manifest(n).segments[0].path) for n in log.catalog.names()]

    def connect() -> None:
        with ta.open(root) as log:
            log.duckdb().close()

    def unpacked() -> None:
        # The first Log.duckdb() of a log state: the view pack is built (query/pack.py).
        shutil.rmtree(root / "_local" / "duckdb", ignore_errors=True)
        connect()

    def floor() -> None:
        # DuckDB alone: one view per stream over `read_parquet` of its file, in one transaction.
        con = duckdb.connect()
        views = [f"CREATE TEMP VIEW v{i} AS FROM read_parquet('{f}')" for i, f in enumerate(files)]
        con.execute(";\n".join(["BEGIN", *views, "COMMIT"]))
        con.close()

    got = interleaved({"connect": connect, "unpacked": unpacked, "floor": floor}, args.runs)
    changed = []
    for i in range(args.runs):  # one stream gets a commit, then a fresh handle connects
        with ta.open(root) as log:
            s = log.stream(log.catalog.names()[i])
            s.append({"model": "x", "score": 1.0})
            s.close()
        t0 = time.perf_counter()
        connect()
        changed.append(time.perf_counter() - t0)
    print(
        f"3. fresh open + Log.duckdb() for {args.streams:,} streams: {got['connect'] * 1e3:.0f} "
        f"ms (target <= 300 ms); DuckDB alone creating {args.streams:,} views over "
        f"read_parquet of the same files {got['floor'] * 1e3:.0f} ms (ratio "
        f"{got['connect'] / got['floor']:.2f}); the first Log.duckdb() of a log state "
        f"(building its view pack) {got['unpacked'] * 1e3:.0f} ms; after one stream got a "
        f"commit (the newest pack reused) {statistics.median(changed) * 1e3:.0f} ms"
    )


def bench_first_sql(args: argparse.Namespace, work: Path) -> None:
    root = work / "two"
    rng = np.random.default_rng(3)
    with ta.open(root) as log:
        for name in ("a", "b"):
            s = log.create_stream(name)
            for _ in range(4):
                n = 250_000
                models = pa.array(rng.integers(0, 8, n)).cast(pa.string())
                s.append(pa.table({"model": models, "score": rng.random(n)}))
                s.flush()
        files = [str(root / seg.path) for seg in log.catalog.manifest("a").segments]
    query = QUERY.format(a='"a"')

    def transit() -> list:
        with ta.open(root) as log:
            return log.sql(query).fetchall()

    def raw() -> list:
        con = duckdb.connect()
        try:
            return con.sql(
                QUERY.format(a="read_parquet($files)"), params={"files": files}
            ).fetchall()
        finally:
            con.close()

    same = [(m, n, round(a, 9)) for m, n, a in transit()]
    assert same == [(m, n, round(a, 9)) for m, n, a in raw()]
    got = interleaved({"transit": transit, "raw": raw}, args.runs)
    print(
        f"4. fresh handle's first log.sql over a 2-stream log (1 M records each): "
        f"{got['transit'] * 1e3:.0f} ms vs new duckdb connection + read_parquet "
        f"{got['raw'] * 1e3:.0f} ms, ratio {got['transit'] / got['raw']:.2f} (target <= 1.5)"
    )
    first_sql_in_new_processes(root, query, files, args.runs)


#: Child programs of `first_sql_in_new_processes`: each prints the seconds from after its
#: imports to the query's result.
_TRANSIT_CHILD = """
import sys, time
import transit_arrow as ta
t0 = time.perf_counter()
with ta.open(sys.argv[1]) as log:
    log.sql(sys.argv[2]).fetchall()
print(time.perf_counter() - t0)
"""
_DUCKDB_CHILD = """
import json, sys, time
import duckdb
t0 = time.perf_counter()
con = duckdb.connect()
con.sql(sys.argv[2], params={"files": json.loads(sys.argv[1])}).fetchall()
print(time.perf_counter() - t0)
"""


def first_sql_in_new_processes(root: Path, query: str, files: list[str], runs: int) -> None:
    """The first query of a new process: `log.sql` vs duckdb + `read_parquet`, alternating."""
    children = {
        "transit": [sys.executable, "-c", _TRANSIT_CHILD, str(root), query],
        "raw": [
            sys.executable,
            "-c",
            _DUCKDB_CHILD,
            json.dumps(files),
            QUERY.format(a="read_parquet($files)"),
        ],
    }
    inside: dict[str, list[float]] = {k: [] for k in children}
    whole: dict[str, list[float]] = {k: [] for k in children}
    items = list(children.items())
    for run in range(runs):
        for label, argv in items if run % 2 == 0 else items[::-1]:
            t0 = time.perf_counter()
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            whole[label].append(time.perf_counter() - t0)
            inside[label].append(float(out))
    ms = {k: statistics.median(v) * 1e3 for k, v in inside.items()}
    total = {k: statistics.median(v) * 1e3 for k, v in whole.items()}
    print(
        f"   the same in a new process, after its imports: {ms['transit']:.0f} ms vs "
        f"{ms['raw']:.0f} ms, ratio {ms['transit'] / ms['raw']:.2f}; whole process "
        f"(interpreter start and imports included): {total['transit']:.0f} vs "
        f"{total['raw']:.0f} ms"
    )


def bench_many_sql(args: argparse.Namespace, work: Path) -> None:
    root = work / "many"
    build_streams(root, args.many, 10)
    query = QUERY.format(a='"s00000"')
    log = ta.open(root)
    try:
        t0 = time.perf_counter()
        log.sql(query).fetchall()
        first = time.perf_counter() - t0
        times = []
        for i in range(args.runs):
            s = log.stream(f"s{i + 1:05d}")
            s.append({"model": "x", "score": 1.0})
            s.flush()
            t0 = time.perf_counter()
            log.sql(query).fetchall()
            times.append(time.perf_counter() - t0)
        again = median_of(lambda: log.sql(query).fetchall(), args.runs)
    finally:
        log.close()
    print(
        f"5. log.sql on a {args.many:,}-stream log: first {first * 1e3:.0f} ms; after one "
        f"other stream changed {statistics.median(times) * 1e3:.0f} ms; unchanged "
        f"{again * 1e3:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=100_000)
    parser.add_argument("--branches", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--many", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fold-limit", type=int, default=5_000)
    parser.add_argument(
        "--only", nargs="+", choices=["open", "lineage", "duckdb", "sql", "many"], default=None
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="transit-meta-"))
    steps = {
        "open": bench_open,
        "lineage": bench_lineage,
        "duckdb": bench_duckdb,
        "sql": bench_first_sql,
        "many": bench_many_sql,
    }
    try:
        for name, step in steps.items():
            if args.only is None or name in args.only:
                step(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
