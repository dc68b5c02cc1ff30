"""Bulk `tiered` appends: an append that fills a segment by itself is written straight to
Parquet (no IPC head), as segments of at most `segment_max_records` / `segment_max_bytes`,
encoded in parallel and committed by ONE commit; with the same guarantees as any append
(all or nothing, offsets assigned in order, no gap or duplicate for readers, outages
survived). The SIGKILL story is `tests/test_crash.py::test_sigkill_during_bulk_tiered_appends`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from faulty_store import Fault, FaultyStore, path_contains

import transit_arrow as ta
from transit_arrow.storage import MemoryStore


def _table(first: int, n: int, **extra: list[Any]) -> pa.Table:
    return pa.table({"n": pa.array(range(first, first + n), pa.int64()), **extra})


def _add_segments(commit: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in commit["actions"] if a["type"] == "add_segment"]


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_a_bulk_tiered_append_is_one_commit_of_several_segments(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root, local_dir=tmp_path / "w", segment_max_records=1000) as log:
        s = log.create_stream("s")
        s.append({"n": -1}, durability="memory")  # an unsealed record before the bulk append
        ack = s.append(_table(0, 3500), durability="tiered")
        assert ack == ta.Ack(1, 3500, "tiered")
        commits = log.catalog.commits("s")
        last, before = commits[-1], commits[-2]
        # the record before was sealed first, by its own commit
        assert [(a["first_offset"], a["last_offset"]) for a in _add_segments(before)] == [(0, 0)]
        spans = [(a["first_offset"], a["last_offset"]) for a in _add_segments(last)]
        assert spans == [(1, 875), (876, 1750), (1751, 2625), (2626, 3500)]
        assert not list((tmp_path / "w").rglob("*.arrow")), "no IPC head was written"
        assert s.read().column("n").to_pylist() == [-1, *range(3500)]
        assert s.append({"n": 9}, durability="tiered").first_offset == 3501
    with ta.open(root, local_dir=tmp_path / "fresh") as fresh:
        t = fresh.stream("s").read()
        assert t.column("_offset").to_pylist() == list(range(3502))
        assert fresh.verify("s", deep=True).ok


def test_bulk_pieces_respect_segment_max_bytes(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_bytes=100_000) as log:
        s = log.create_stream("s")
        blob = ["x" * 100] * 4000  # ~ 0.4 MB of strings
        s.append(_table(0, 4000, blob=blob), durability="tiered")
        (commit,) = [c for c in log.catalog.commits("s") if _add_segments(c)]
        pieces = _add_segments(commit)
        assert len(pieces) >= 4
        assert sum(p["records"] for p in pieces) == 4000


def test_a_bulk_append_evolving_the_schema_commits_the_evolution_with_it(
    tmp_path: Path,
) -> None:
    with ta.open(tmp_path / "log", segment_max_records=10) as log:
        s = log.create_stream("s")
        s.append(_table(0, 5), durability="tiered")
        s.append(_table(5, 25, tag=[f"t{i}" for i in range(25)]), durability="tiered")
        last = log.catalog.commits("s")[-1]
        assert [a["type"] for a in last["actions"]] == ["evolve_schema", *["add_segment"] * 3]
        t = s.read()
        assert t.column("n").to_pylist() == list(range(30))
        assert t.column("tag").to_pylist() == [None] * 5 + [f"t{i}" for i in range(25)]


def test_a_refused_bulk_append_changes_nothing(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=10) as log:
        s = log.create_stream("s")
        s.append(_table(0, 20), durability="tiered")
        files = _files(tmp_path / "log")
        with pytest.raises(ta.SchemaMismatchError):
            s.append(pa.table({"n": ["not a number"] * 30}), durability="tiered")
        assert _files(tmp_path / "log") == files
        assert s.next_offset == 20
        assert s.append(_table(20, 30), durability="tiered") == ta.Ack(20, 49, "tiered")
        assert s.read().column("n").to_pylist() == list(range(50))


def test_a_bulk_append_during_an_outage_fails_then_commits_once_the_store_is_back(
    tmp_path: Path,
) -> None:
    """While segment uploads fail, the `tiered` bulk append raises `StorageError` (its records
    stay appended in memory); once the store is back they are committed, once, by one commit
    holding every piece, and nothing is duplicated."""
    store = FaultyStore(MemoryStore(f"memory://bulk-{tmp_path.name}"))
    with ta.open(store, local_dir=tmp_path / "w", segment_max_records=10) as log:
        s = log.create_stream("s")
        s.append(_table(0, 5), durability="tiered")
        store.arm(Fault("error", path_contains("put", "/segments/"), times=None))
        with pytest.raises(ta.StorageError, match="was not acknowledged"):
            s.append(_table(5, 35), durability="tiered")
        assert s.read().column("n").to_pylist() == list(range(40))  # appended, in memory
        store.disarm()
        assert s.append(_table(40, 3), durability="tiered") == ta.Ack(40, 42, "tiered")
        commits = [c for c in log.catalog.commits("s") if _add_segments(c)]
        spans = [[(a["first_offset"], a["last_offset"]) for a in _add_segments(c)] for c in commits]
        assert spans[1] == [(5, 13), (14, 22), (23, 31), (32, 39)]
    with ta.open(store.inner, local_dir=tmp_path / "fresh") as fresh:
        assert fresh.stream("s").read().column("n").to_pylist() == list(range(43))
        assert fresh.verify("s", deep=True).ok


def test_readers_see_no_gap_or_duplicate_while_bulk_appends_are_sealed(tmp_path: Path) -> None:
    """An in-process reader reading while bulk appends (several segments each) are sealed,
    and a reader in a fresh handle reading the committed stream, never see a gap or a
    duplicate: offsets are dense from 0 and values match offsets."""
    with ta.open(tmp_path / "log", segment_max_records=50) as log:
        s = log.create_stream("s", schema=pa.schema([("n", pa.int64())]))
        done = threading.Event()
        problems: list[str] = []

        def read_loop() -> None:
            while not done.is_set():
                t = s.read()
                offsets = t.column("_offset").to_pylist()
                if offsets != list(range(len(offsets))) or t.column("n").to_pylist() != offsets:
                    problems.append(f"not dense: {len(offsets)} records")
                    return

        reader = threading.Thread(target=read_loop)
        reader.start()
        try:
            at = 0
            for size in (10, 120, 7, 260, 51, 300, 3):
                mode = "tiered" if size >= 50 else "memory"
                s.append(_table(at, size), durability=mode)  # type: ignore[arg-type]
                at += size
        finally:
            done.set()
            reader.join()
        assert problems == []
        s.flush()
        with ta.open(tmp_path / "log", local_dir=tmp_path / "other") as other:
            assert other.stream("s").read().column("n").to_pylist() == list(range(at))
