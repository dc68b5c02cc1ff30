"""Folded manifest snapshots (DESIGN §5): opening a long stream reads O(1) files; a snapshot is
bound to the root of the commit it folds; a damaged one is never used and `verify` says so."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.commit import CommitLog, writer_identity
from transit_arrow.engine.catalog import Catalog
from transit_arrow.manifest import (
    SMALL_SNAPSHOT_INTERVAL,
    SMALL_SNAPSHOT_SEGMENTS,
    SNAPSHOT_INTERVAL,
    Manifest,
    SegmentRef,
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    snapshot_due,
)
from transit_arrow.storage.local import LocalStore

FIXTURES = Path(__file__).parent / "fixtures"


class CountingStore(LocalStore):
    """A local store that counts the files read."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.gets: list[str] = []

    def get(self, path: str) -> bytes:
        self.gets.append(path)
        return super().get(path)


def _commit_many(catalog: Catalog, name: str, count: int) -> None:
    """`count` more commits (writer fences, so the data stays small), remembered as a writer's."""
    log = CommitLog(catalog.store, name, catalog.stream_folder(name))
    for _ in range(count):
        m = catalog.manifest(name, refresh=False)
        epoch = m.writer_epoch + 1
        action = {"type": "fence", "epoch": epoch, "previous": None}
        commit = log.create(m.generation + 1, m.root, [action], writer_identity("test", epoch))
        catalog.remember(name, commit)


def _snapshots(root: Path, name: str = "s") -> list[str]:
    return sorted(p.name for p in (root / "streams" / name / "snapshots").glob("*.parquet"))


@pytest.fixture
def long_log(tmp_path: Path) -> Path:
    """A stream with segments, a compaction and `2 * SNAPSHOT_INTERVAL + 40` generations."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        for i in range(4):
            s.append(pa.table({"v": list(range(i * 10, i * 10 + 10))}))
            s.flush()
        s.compact()
        s.close()
        _commit_many(log.catalog, "s", 2 * SNAPSHOT_INTERVAL + 40 - 6)
        s = log.stream("s")
        s.append(pa.table({"v": [40, 41]}))
        s.flush()
    return root


def test_a_writer_records_a_snapshot_every_interval(long_log: Path) -> None:
    # A small manifest: every SMALL_SNAPSHOT_INTERVAL generations, through the latest (296).
    latest = 2 * SNAPSHOT_INTERVAL + 40
    step = SMALL_SNAPSHOT_INTERVAL
    assert _snapshots(long_log) == [f"{g:020d}.parquet" for g in range(step, latest + 1, step)]


def test_a_large_manifest_gets_a_snapshot_every_long_interval_only() -> None:
    commit = {"stream": "s", "root": "r", "time": "t", "actions": [{"type": "create"}]}
    small = Manifest.initial(commit)
    seg = SegmentRef("p", 0, 0, 1, 1, "b", 0, 0)
    large = replace(small, segments=(seg,) * (SMALL_SNAPSHOT_SEGMENTS + 1))
    for manifest, due in ((small, True), (large, False)):
        assert snapshot_due(replace(manifest, generation=SMALL_SNAPSHOT_INTERVAL)) is due
        assert snapshot_due(replace(manifest, generation=SNAPSHOT_INTERVAL))
        assert not snapshot_due(replace(manifest, generation=SMALL_SNAPSHOT_INTERVAL + 1))
        assert not snapshot_due(manifest)


def test_opening_reads_o1_commit_files_and_reads_the_same(long_log: Path) -> None:
    store = CountingStore(long_log)
    with ta.open(store) as log:
        s = log.stream("s")
        table = s.read()
        assert table.column("v").to_pylist() == list(range(42))
        latest = log.catalog.manifest("s")
        commit_reads = [p for p in store.gets if "/commits/" in p]
        # the snapshot's commit, commit 0 (its create action) and the commits after it
        assert len(commit_reads) <= latest.generation - 2 * SNAPSHOT_INTERVAL + 2
        assert len(commit_reads) < SNAPSHOT_INTERVAL
        assert sum("/snapshots/" in p for p in store.gets) == 1
        # everything below the snapshot is still there, on demand
        assert len(s.commits()) == latest.generation + 1
        assert s.at(generation=3).read().column("v").to_pylist() == list(range(30))
        assert log.verify("s", deep=True).ok
    with ta.open(long_log) as log:  # the same answers as a fold from genesis
        folded = log.catalog
        for g in (0, 4, 5, SNAPSHOT_INTERVAL, latest.generation):
            assert folded.manifest_at("s", g).root == _fold(long_log, g)


def _fold(root: Path, generation: int) -> str:
    """The root at `generation` by folding the commit files from genesis, without snapshots."""
    copy = root.parent / f"nosnap-{generation}"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("snapshots", "_local"))
    with ta.open(copy) as log:
        assert not (copy / "streams/s/snapshots").exists()
        return log.catalog.manifest_at("s", generation).root


def test_gc_and_writer_cleanup_know_files_released_below_the_snapshot(long_log: Path) -> None:
    with ta.open(long_log) as log:
        released = set(decode_snapshot(_read_latest(long_log), "s")[0].released)
        assert len(released) == 4  # the four segments the compaction replaced
        assert log.catalog.referenced_segments("s") >= released
        log.stream("s").append({"v": 42})  # a writer opens: its orphan cleanup keeps them
        log.stream("s").flush()
        on_disk = {
            f"streams/s/segments/{p.name}" for p in (long_log / "streams/s/segments").iterdir()
        }
        assert released <= on_disk
        # released long ago and needed by nothing reachable: gc frees them now
        assert set(log.gc(min_age=0).removed) == released
        assert log.stream("s").read().column("v").to_pylist() == list(range(43))


def _read_latest(root: Path) -> bytes:
    return (root / "streams/s/snapshots" / _snapshots(root)[-1]).read_bytes()


@pytest.mark.parametrize("damage", ["bytes", "root", "segments"])
def test_a_damaged_snapshot_is_not_used_and_verify_reports_it(long_log: Path, damage: str) -> None:
    path = long_log / "streams/s/snapshots" / _snapshots(long_log)[-1]
    snapshot, _ = decode_snapshot(path.read_bytes(), "s")
    m = snapshot.manifest
    if damage == "bytes":  # a torn file that no longer parses
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "root":
        forged = Snapshot(type(m)(**{**m.__dict__, "root": "ab" * 32}), snapshot.prev_root)
        path.write_bytes(encode_snapshot(forged))
    else:  # consistent with the commit's root, but it drops a segment: only verify sees it
        forged = Snapshot(type(m)(**{**m.__dict__, "segments": m.segments[1:]}), snapshot.prev_root)
        path.write_bytes(encode_snapshot(forged))
    with ta.open(long_log) as log:
        if damage != "segments":  # unusable: the commits are folded from genesis instead
            assert log.stream("s").read().column("v").to_pylist() == list(range(42))
        report = log.verify("s", deep=True)
        assert not report.ok
        failed = [e for e in report.failures if e.check == "snapshot"]
        assert failed and failed[0].object.endswith(path.name), str(report)


def test_the_old_format_fixture_folds_and_gets_snapshots_once_written(tmp_path: Path) -> None:
    """A log written before snapshots existed opens by folding; a writer adds snapshots."""
    root = tmp_path / "log"
    shutil.copytree(FIXTURES / "log_v1", root)
    with ta.open(root) as log:
        names = log.streams().column("name").to_pylist()
        before: dict[str, Any] = {n: log.stream(n).read() for n in names}
        name = names[0]
        assert not list((root / "streams").rglob("snapshots"))
        generation = log.catalog.manifest(name).generation
        _commit_many(log.catalog, name, SNAPSHOT_INTERVAL - generation % SNAPSHOT_INTERVAL)
    assert list((root / "streams").rglob("snapshots/*.parquet"))
    with ta.open(root) as log:
        for n in names:
            assert log.stream(n).read().equals(before[n])
            assert log.verify(n, deep=True).ok
