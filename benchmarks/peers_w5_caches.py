"""W5 of the peers benchmark with DuckDB's caches cold and warm: DuckLake beside transit-arrow.

Run: `python benchmarks/peers_w5_caches.py` (about 2 minutes; `--setup` of `peers.py` first,
for DuckLake's virtualenv; `--reps N`, default 5). Each system writes the W1 + W2 data of
`benchmarks/peers/common.py` (500 commits of 1,000 rows, then 2,000,000 rows) through its own
API, then runs W5's query (`SELECT model, count(*), avg(score) ... GROUP BY model`) from a
fresh handle, as the peers benchmark does, in two states of the DuckDB instance it runs on:

- cold: a DuckDB instance that has read none of the files yet (DuckLake: a new connection,
  `LOAD` and `ATTACH` untimed, then `DETACH`/`ATTACH` and the query timed; transit-arrow: the
  process's shared database closed first, so the fresh handle's session makes a new one);
- warm: the same instance after it read every file once (DuckLake: the full read of the head
  that W3 makes for a peer without branches, then the timed `DETACH`/`ATTACH` and query;
  transit-arrow: a first fresh handle's query, then the timed one).

Then, to tell the files apart from the engines, this interpreter's DuckDB runs the same query
with `read_parquet` over each system's data files (and over plain Parquet files written by
pyarrow, as the floor writes them) on a new DuckDB instance each time: all files, the 500 small
ones, the bulk; and over transit-arrow's bulk segments encoded again in snappy. (Segments
without headers no longer store the all-null `_headers` column: docs/format.md.)

Prints the median wall and CPU (`time.process_time`, all threads) milliseconds of each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "peers"


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def _build(peer: Any, root: Path) -> None:
    import common

    data = common.load_data(500 * 1000 + 2_000_000 + 1000, common.DEFAULT_WORKDIR)
    peer.setup(root)
    for k in range(500):
        peer.commit(data.slice(k * 1000, 1000))
    peer.bulk(data.slice(500_000, 2_000_000))
    peer.mark_version("head")


def _ducklake(root: Path, reps: int) -> dict[str, list[tuple[float, float]]]:
    import bench_ducklake
    import common
    import duckdb

    peer = bench_ducklake.DuckLake()
    _build(peer, root)
    peer.close()
    out: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    for state in ("cold", "warm"):
        for _ in range(reps):
            peer.con = duckdb.connect()
            peer.con.execute(f"LOAD '{peer.ext}'")
            peer._attach()
            if state == "warm":
                peer.read_version("head")
            out[state].append(_timed(lambda: peer.query(common.QUERY)))
            peer.close()
    return out


def _transit(root: Path, reps: int) -> dict[str, list[tuple[float, float]]]:
    import bench_transit_arrow
    import common

    from transit_arrow.query.database import close_shared_database, shared_database

    peer = bench_transit_arrow.TransitArrow()
    _build(peer, root)
    out: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    for state in ("cold", "warm"):
        for _ in range(reps):
            close_shared_database()
            shared_database()  # made untimed, like DuckLake's connection
            if state == "warm":
                peer.query(common.QUERY)
            out[state].append(_timed(lambda: peer.query(common.QUERY)))
    peer.close()
    return out


def worker(system: str, reps: int, root: Path) -> None:
    sys.path.insert(0, str(HERE))
    root.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = dict(
        _ducklake(root, reps) if system == "ducklake" else _transit(root, reps)
    )
    # The data files the table holds now (the caller reads them, then removes `root`).
    found["files"] = sorted(
        str(p)
        for p in root.rglob("*.parquet")
        if system == "ducklake" or "/segments/" in str(p.relative_to(root))
    )
    print(json.dumps(found))


def _floor_files(root: Path) -> list[str]:
    """500 files of 1,000 rows and one of 2,000,000, as the floor writes them."""
    sys.path.insert(0, str(HERE))
    import common
    import pyarrow.parquet as pq

    data = common.load_data(500 * 1000 + 2_000_000 + 1000, common.DEFAULT_WORKDIR)
    root.mkdir(parents=True)
    files = []
    for k in range(501):
        table = data.slice(k * 1000, 1000) if k < 500 else data.slice(500_000, 2_000_000)
        files.append(str(root / f"part-{k:06d}.parquet"))
        pq.write_table(table, files[-1])
    return files


def _scan(sets: dict[str, list[str]], reps: int) -> dict[str, str]:
    """Median wall / CPU ms of the query over each set of files, on a new DuckDB instance
    each time; the sets take turns, so that a change of the machine's load hits all alike."""
    import duckdb

    query = (
        "SELECT model, count(*) AS n, avg(score) AS avg_score FROM read_parquet($files) "
        "GROUP BY model ORDER BY model"
    )
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in sets}
    for _ in range(reps):
        for name, files in sets.items():
            con = duckdb.connect()
            con.execute("SELECT 1").fetchall()
            found[name].append(
                _timed(lambda con=con, files=files: con.execute(query, {"files": files}).fetchall())
            )
            con.close()
    out = {}
    for name, timings in found.items():
        walls, cpus = zip(*timings, strict=True)
        out[name] = f"{statistics.median(walls):.1f} / {statistics.median(cpus):.1f}"
    return out


def _variants(files: list[str], root: Path) -> dict[str, list[str]]:
    """transit-arrow's bulk segments encoded again by its own encoder in snappy instead of
    zstd (the "auto" codec of segments of 1 MiB or more)."""
    import pyarrow.parquet as pq

    from transit_arrow.segments.parquet import encode_segment

    _, bulk = _by_size(files)
    out: dict[str, list[str]] = {"bulk in snappy": []}
    root.mkdir(parents=True)
    for i, path in enumerate(bulk):
        head = pq.read_table(path).drop_columns(["_stream"])
        kind, data = "bulk in snappy", encode_segment(head, "t", compression="snappy")[0]
        out[kind].append(str(root / f"{i:06d}.parquet"))
        Path(out[kind][-1]).write_bytes(bytes(data))
    return out


def _by_size(files: list[str]) -> tuple[list[str], list[str]]:
    """The files of 1,000 rows (under 1 MB) and the others (the bulk)."""
    small = [f for f in files if os.path.getsize(f) < 1 << 20]
    return small, [f for f in files if f not in set(small)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--worker", choices=["ducklake", "transit_arrow"])
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.reps, args.root)
        return
    import duckdb

    root = Path(tempfile.mkdtemp(prefix="w5caches-"))
    try:
        _compare(args.reps, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"(this interpreter: DuckDB {duckdb.__version__})")


def _compare(reps: int, root: Path) -> None:
    ducklake_py = os.environ.get("DUCKLAKE_PY", "/tmp/ducklake-venv/bin/python")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| system | W5 cold wall ms | W5 cold CPU ms | W5 warm wall ms | W5 warm CPU ms |")
    print("|---|---|---|---|---|")
    files = {}
    for system, python in (("ducklake", ducklake_py), ("transit_arrow", sys.executable)):
        if not Path(python).exists():
            print(f"| {system} | skipped: no {python} | | | |")
            continue
        command = [python, __file__, "--worker", system, "--reps", str(reps)]
        done = subprocess.run(
            [*command, "--root", str(root / system)], capture_output=True, text=True, check=True
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
        files[system] = found["files"]
        cells = []
        for state in ("cold", "warm"):
            walls, cpus = zip(*found[state], strict=True)
            cells += [f"{statistics.median(walls):.1f}", f"{statistics.median(cpus):.1f}"]
        print(f"| {system} | {' | '.join(cells)} |", flush=True)
    files["floor (pyarrow defaults)"] = _floor_files(root / "floor")
    sets: dict[str, list[str]] = {}
    for system, listed in files.items():
        small, bulk = _by_size(listed)
        sets[f"{system}: all"], sets[f"{system}: small"], sets[f"{system}: bulk"] = (
            listed,
            small,
            bulk,
        )
    extra = {}
    if "transit_arrow" in files:
        extra = _variants(files["transit_arrow"], root / "variants")
        sets.update((f"transit_arrow, {kind}", listed) for kind, listed in extra.items())
    timed = _scan(sets, reps)
    print()
    print("| files of | columns | all: wall / CPU ms | 1,000-row files | the bulk |")
    print("|---|---|---|---|---|")
    import pyarrow.parquet as pq

    for system, listed in files.items():
        small, bulk = _by_size(listed)
        columns = len(pq.ParquetFile(small[0]).schema_arrow.names)
        cells = [timed[f"{system}: {part}"] for part in ("all", "small", "bulk")]
        label = f"{system} ({len(small)} + {len(bulk)} files)"
        print(f"| {label} | {columns} | {' | '.join(cells)} |")
    for kind, listed in extra.items():
        size = sum(os.path.getsize(f) for f in listed) / (1 << 20)
        cell = timed[f"transit_arrow, {kind}"]
        cells = ["", "", cell]
        print(f"| transit_arrow, {kind} ({size:.0f} MiB) | | {' | '.join(cells)} |")
    if "transit_arrow" in files:
        _, bulk = _by_size(files["transit_arrow"])
        size = sum(os.path.getsize(f) for f in bulk) / (1 << 20)
        print(f"| (transit_arrow's bulk as written: {size:.0f} MiB) | | | | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
