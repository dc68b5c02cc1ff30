"""Compaction and retention (DESIGN §10): commits that change which files hold the records,
never the records; branches and checkpoints taken before still read and verify the same; `gc`
frees only what nothing reachable references, materialization state included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import transit_arrow as ta
from transit_arrow.cli import main as cli
from transit_arrow.commit import CommitLog, writer_identity
from transit_arrow.compaction import compact
from transit_arrow.engine.writer import writer_for
from transit_arrow.errors import IntegrityError, InvalidInputError, TransitError
from transit_arrow.manifest import Manifest, SegmentRef, compact_action
from transit_arrow.segments.parquet import encode_segment

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64()), ("f", pa.float64())])


def _rows(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "k": [f"k{i % 5}" for i in range(start, start + n)],
            "v": list(range(start, start + n)),
            "f": [i / 7 if i % 4 else None for i in range(start, start + n)],
        },
        schema=SCHEMA,
    )


def _fill(stream: ta.Stream, segments: int, per: int = 10) -> None:
    base = stream.read(columns=["_offset"]).num_rows
    for i in range(segments):
        stream.append(_rows(base + i * per, per))
        stream.flush()


def _files(root: Path, name: str = "s") -> set[str]:
    return {p.name for p in (root / "streams" / name / "segments").glob("*.parquet")}


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_local" not in p.parts
    }


# --- compaction -------------------------------------------------------------------------------


def test_compaction_keeps_every_record_and_lists_what_it_replaced(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        _fill(s, 6)
        before = s.read()
        old = [seg.path for seg in log.catalog.manifest("s").segments]
        report = s.compact()
        assert report.replaced == old
        assert len(report.created) == 1 and report.records == 60
        assert report.segments_before == 6 and report.segments_after == 1
        assert s.read().equals(before)
        manifest = log.catalog.manifest("s")
        assert [seg.path for seg in manifest.segments] == report.created
        assert manifest.next_offset == 60
        last = log.catalog.commits("s")[-1]
        assert [a["type"] for a in last["actions"]] == ["compact"]
        assert [r["path"] for r in last["actions"][0]["replaced"]] == old
        report = log.verify("s", deep=True)
        assert report.ok, str(report)
        checks = [e for e in report.entries if e.check == "compaction"]
        assert len(checks) == 1 and "exactly the records" in checks[0].detail
        # appends continue after the compacted segment, and a second compaction merges again
        _fill(s, 3)
        assert s.compact().segments_after == 1
        assert s.read().column("_offset").to_pylist() == list(range(90))
    with ta.open(tmp_path / "log") as log:  # a fresh handle folds the compact actions
        assert log.stream("s").read().column("v").to_pylist() == list(range(90))
        assert log.sql('SELECT count(*), sum(v) FROM "s"').fetchall() == [(90, sum(range(90)))]


def test_branches_checkpoints_and_time_travel_taken_before_compaction_read_the_same(
    tmp_path: Path,
) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        _fill(s, 5)
        branch = log.branch("b", at="s@23")  # forks inside the third segment
        branch.append(_rows(1000, 4))
        branch.flush()
        merge = log.merge("m", parents=["s", "b"], policy="concat")
        cp = s.checkpoint()
        generation = log.catalog.manifest("s").generation
        seen = {
            "s": s.read(),
            "b": branch.read(),
            "m": merge.read(),
            "old": s.at(generation=generation).read(),
            "cp": s.at(cp).read(),
            "sql": log.sql('SELECT * FROM "b" ORDER BY _offset').to_arrow_table(),
        }
        assert s.compact().segments_after == 1
        _fill(s, 2)  # later appends do not leak into the branch, the merge or the checkpoint
        assert log.stream("b").read().equals(seen["b"])
        assert log.stream("m").read().equals(seen["m"])
        assert s.at(generation=generation).read().equals(seen["old"])
        assert s.at(cp).read().equals(seen["cp"])
        assert log.sql('SELECT * FROM "b" ORDER BY _offset').to_arrow_table().equals(seen["sql"])
        assert s.read(end=50).equals(seen["s"])
        for target in ("s", "b", "m", cp):
            report = log.verify(target, deep=True)
            assert report.ok, str(report)
    with ta.open(tmp_path / "log") as log:
        assert log.stream("b").read().equals(seen["b"])
        assert log.verify(cp, deep=True).ok


def test_compaction_respects_size_limits_and_schema_changes(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        _fill(s, 3)
        s.append({"k": "x", "v": 1, "f": 0.5, "extra": "new column"})  # evolves the schema
        s.flush()
        _fill(s, 3)
        before = s.read()
        sizes = [seg.bytes for seg in log.catalog.manifest("s").segments]
        # nothing is small enough: nothing to do, nothing committed
        generation = log.catalog.manifest("s").generation
        assert s.compact(small_bytes=min(sizes)).replaced == []
        assert log.catalog.manifest("s").generation == generation
        # the schema change splits the runs: 3 segments of the first schema, 4 of the second
        report = s.compact(min_segments=2)
        assert report.segments_before == 7 and report.segments_after == 2
        schemas = [
            pq.read_schema(log.catalog.segment_file(g)).names
            for g in log.catalog.manifest("s").segments
        ]
        assert "extra" not in schemas[0] and "extra" in schemas[1]
        assert s.read().equals(before)
        # a target size of one segment never merges anything
        _fill(s, 3)
        assert s.compact(target_bytes=min(sizes)).replaced == []
        assert log.verify("s", deep=True).ok


def test_dry_run_and_refusals_change_nothing(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 4)
        s.close()
        s = log.stream("s")
        snapshot = _tree(root)
        report = s.compact(dry_run=True)
        assert len(report.replaced) == 4 and report.created == [] and report.generation is None
        assert s.retain(keep_records=0, dry_run=True).records == 40
        for bad in (
            {"small_bytes": 0},
            {"target_bytes": -1},
            {"min_segments": 1},
            {"small_bytes": True},
        ):
            with pytest.raises(InvalidInputError):
                s.compact(**bad)
        for bad_retain in (
            {},
            {"before_offset": 3, "keep_records": 1},
            {"before_offset": -1},
            {"older_than": -2.0},
            {"keep_records": 1.5},
        ):
            with pytest.raises(InvalidInputError):
                s.retain(**bad_retain)
        with pytest.raises(ta.StreamNotFoundError):
            compact(log.catalog, "nope")
    assert _tree(root) == snapshot


def test_compaction_refuses_a_damaged_segment(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 3)
        s.close()
        s = log.stream("s")
        victim = root / log.catalog.manifest("s").segments[1].path
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        generation = log.catalog.manifest("s").generation
        with pytest.raises(IntegrityError):
            s.compact()
        assert log.catalog.manifest("s").generation == generation


def test_compaction_while_appending_loses_nothing(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=50) as log:
        s = log.create_stream("s")
        stop = threading.Event()
        acked: list[tuple[int, int]] = []
        errors: list[BaseException] = []

        def appender() -> None:
            i = 0
            try:
                while not stop.is_set():
                    ack = s.append(_rows(i, 7))
                    acked.append((ack.first_offset, ack.last_offset))
                    i += 7
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        thread = threading.Thread(target=appender)
        thread.start()
        compacted = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            compacted += len(s.compact(small_bytes=1 << 30).replaced)
        stop.set()
        thread.join()
        assert not errors
        assert compacted > 0
        s.flush()
        table = s.read()
        last = acked[-1][1]
        assert table.column("_offset").to_pylist() == list(range(last + 1))
        assert table.column("v").to_pylist() == list(range(last + 1))
        assert log.verify("s", deep=True).ok


def test_a_forged_compaction_is_refused_or_detected(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 3)
        s.close()
        catalog = log.catalog
        manifest = catalog.manifest("s")
        first, second = manifest.segments[0], manifest.segments[1]
        # a file with the right offsets but one value changed
        table = pa.concat_tables(
            [pq.read_table(root / first.path), pq.read_table(root / second.path)]
        ).drop_columns(["_stream"])
        values = table.column("v").to_pylist()
        values[3] = -1
        table = table.set_column(table.schema.get_field_index("v"), "v", pa.array(values))
        data, meta = encode_segment(table, "s")
        path = f"streams/s/segments/forged-{meta['blake3'][:16]}.parquet"
        (root / path).write_bytes(bytes(data))
        forged = SegmentRef(path=path, **meta)
        commit_log = CommitLog(catalog.store, "s", "streams/s")

        def commit(action: dict[str, Any]) -> None:
            m = catalog.manifest("s")
            commit_log.create(m.generation + 1, m.root, [action], writer_identity("forger", 9))

        # malformed actions never fold: not adjacent, wrong coverage, unknown file
        third = manifest.segments[2]
        for bad in (
            compact_action([first, third], forged),
            compact_action([first], forged),
        ):
            with pytest.raises(IntegrityError):
                Manifest.apply(manifest, _as_commit(manifest, bad))
        commit(compact_action([first, second], forged))
    with ta.open(root) as log:
        report = log.verify("s", deep=True)
        assert not report.ok
        failed = [e for e in report.failures if e.check == "compaction"]
        assert failed and "'v' differs" in failed[0].detail, str(report)


def _as_commit(manifest: Manifest, action: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": manifest.stream,
        "generation": manifest.generation + 1,
        "root": "00" * 32,
        "time": "2026-01-01T00:00:00Z",
        "actions": [action],
    }


# --- retention --------------------------------------------------------------------------------


def test_retention_drops_whole_oldest_segments_and_offsets_never_move(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        _fill(s, 5)
        branch = log.branch("b", at="s@14")
        cp = s.checkpoint()
        kept_branch = branch.read()
        kept_cp = s.at(cp).read()
        report = s.retain(before_offset=25)  # 0..9 and 10..19 go; 20..29 holds 25: kept
        assert report.records == 20 and report.retained_from == 20
        assert len(report.dropped) == 2 and report.generation is not None
        table = s.read()
        assert table.column("_offset").to_pylist() == list(range(20, 50))
        assert table.column("v").to_pylist() == list(range(20, 50))
        assert s.read(start=0, end=22).column("_offset").to_pylist() == [20, 21]
        ack = s.append(_rows(50, 1))
        assert ack.first_offset == 50  # offsets continue: they never move
        s.flush()
        assert log.sql('SELECT min(_offset), max(_offset) FROM "s"').fetchall() == [(20, 50)]
        rows = {r["name"]: r for r in log.streams().to_pylist()}
        assert rows["s"]["next_offset"] == 51
        assert log.stream("b").read().equals(kept_branch)
        assert s.at(cp).read().equals(kept_cp)
        assert log.verify(cp, deep=True).ok and log.verify("s", deep=True).ok
        assert s.retain(keep_records=12).records == 10  # 20..29 goes; 30..50 (21) stay
        assert s.retain(keep_records=21).records == 0
        assert s.retain(older_than=3600.0).records == 0  # written just now
        assert s.retain(older_than=0.0).records == 21
        assert s.read().num_rows == 0
        ack = s.append(_rows(51, 2))
        assert ack.first_offset == 51
    with ta.open(tmp_path / "log") as log:
        s = log.stream("s")
        s.flush()
        assert s.read().column("_offset").to_pylist() == [51, 52]
        assert log.stream("b").read().equals(kept_branch)


# --- gc ---------------------------------------------------------------------------------------


def test_gc_frees_released_files_only_when_nothing_reachable_needs_them(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 4)
        originals = _files(root)
        branch = log.branch("b", at="s@5")  # pins generation 4: all four files
        s.compact()
        # recently released files are kept (readers of the previous manifest, time travel)
        assert log.gc(min_age=3600).removed == []
        assert log.gc(min_age=0).removed == []  # the branch still reaches the first file...
        assert originals <= _files(root)  # ... through the pinned generation's manifest
        assert branch.read().num_rows == 6
    with ta.open(root) as log:
        s = log.create_stream("t")
        _fill(s, 3)
        t_files = _files(root, "t")
        cp = s.checkpoint()
        s.compact()
        assert log.gc(min_age=0).removed == []  # the checkpoint needs them
        assert s.at(cp).read().num_rows == 30
        (root / "streams/t/checkpoints").joinpath(f"{cp.generation:020d}-{cp.kind}.json").unlink()
        report = log.gc(min_age=0, dry_run=True)
        assert {Path(p).name for p in report.removed} == t_files
        assert _files(root, "t") >= t_files  # dry run
        report = log.gc(min_age=0)
        assert {Path(p).name for p in report.removed} == t_files
        assert not (_files(root, "t") & t_files)
        assert s.read().column("v").to_pylist() == list(range(30))
        assert log.verify("t", deep=True).ok  # the compaction check says the originals are gone
        entry = next(e for e in log.verify("t", deep=True).entries if e.check == "compaction")
        assert "freed by gc" in entry.detail
        # retention releases files too
        _fill(s, 2)
        s.compact()
        s.retain(keep_records=0)
        assert s.read().num_rows == 0
        freed = log.gc(min_age=0).removed
        assert freed and not _files(root, "t")
        # the untouched streams lost nothing
        assert log.stream("s").read().num_rows == 40
        assert log.stream("b").read().num_rows == 6
        for name in ("s", "b", "t"):
            assert log.verify(name, deep=True).ok


def test_gc_frees_unreferenced_materialization_state_and_keeps_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 2)
        mv = log.materialize("per_k", "s", query="SELECT k, count(*) AS n FROM records GROUP BY k")
        mv.refresh()
        _fill(s, 1)
        mv.refresh()
        state = root / "materializations/per_k/state/s"
        referenced = {p.name for p in state.iterdir()}
        assert len(referenced) == 2
        orphan = state / "00000000000000000999-0123456789abcdef.parquet"
        orphan.write_bytes(b"a refresh interrupted before its checkpoint")
        young = log.gc(min_age=3600)
        assert not any("materializations" in p for p in young.removed)
        report = log.gc(min_age=0)
        assert report.removed == [str(orphan.relative_to(root))]
        assert {p.name for p in state.iterdir()} == referenced
        expected = mv.read().sort_by("k")
        # a redefinition supersedes the old checkpoints: their state is freed
        mv2 = log.materialize("per_k", "s", query="SELECT k, sum(v) AS s FROM records GROUP BY k")
        mv2.refresh()
        report = log.gc(min_age=0)
        freed = [p for p in report.removed if p.startswith("materializations/")]
        assert len([p for p in freed if "/state/" in p]) == 2
        assert len([p for p in freed if "/checkpoints/" in p]) == 2
        assert mv2.read().num_rows == expected.num_rows
        assert log.materialization("per_k").read().column_names == ["k", "s"]


# --- automatic compaction ---------------------------------------------------------------------


def test_automatic_compaction_is_off_by_default_and_compacts_when_on(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        _fill(s, 6)
        time.sleep(0.2)
        assert len(log.catalog.manifest("s").segments) == 6  # off by default
        auto = s.auto_compact(threshold=4)
        _fill(s, 1)  # a change wakes it up
        deadline = time.monotonic() + 10
        while not auto.reports and time.monotonic() < deadline:
            time.sleep(0.05)
        assert auto.reports and not auto.errors
        assert auto.reports[0].segments_before >= 6
        assert len(log.catalog.manifest("s").segments) < 4  # fewer small ones than the threshold
        auto.stop()
        assert s.read().column("v").to_pylist() == list(range(70))
        with pytest.raises(InvalidInputError):
            s.auto_compact(threshold=1)


# --- S3 ---------------------------------------------------------------------------------------


@pytest.mark.s3
def test_compaction_and_gc_on_s3(s3_uri: str, s3_endpoint: Any, tmp_path: Path) -> None:
    options = s3_endpoint.storage_options
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "a") as log:
        s = log.create_stream("s")
        _fill(s, 4)
        before = s.read()
        assert s.compact().segments_after == 1
        assert s.read().equals(before)
        assert log.gc(min_age=0).removed and log.verify("s", deep=True).ok
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "b") as log:
        assert log.stream("s").read().equals(before)  # a fresh machine
        assert log.verify("s", deep=True).ok


# --- CLI --------------------------------------------------------------------------------------


def test_cli_compact_and_retain(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        _fill(log.create_stream("s"), 4)
    runner = CliRunner()
    result = runner.invoke(cli, ["compact", str(root), "s", "--dry-run"])
    assert result.exit_code == 0 and "would compact 4 segments" in result.output
    result = runner.invoke(cli, ["compact", str(root), "s", "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["segments_before"] == 4 and data["segments_after"] == 1
    result = runner.invoke(cli, ["retain", str(root), "s", "--keep-records", "0", "-o", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["retained_from"] == 40
    snapshot = _tree(root)
    for args in (
        ["retain", str(root), "s"],
        ["retain", str(root), "s", "--before-offset", "1", "--keep-records", "2"],
        ["compact", str(root), "nope"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert _tree(root) == snapshot


# --- crash: SIGKILL during compaction ---------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, os
    import pyarrow as pa
    import transit_arrow as ta
    root = sys.argv[1]
    log = ta.open(root, segment_max_records=20)
    from transit_arrow.engine.writer import writer_for
    names = log.streams().column("name").to_pylist()
    s = log.stream("s") if "s" in names else log.create_stream("s")
    n = writer_for(log.catalog, "s").next_offset  # recovered heads included
    os.write(1, b"START\\n")
    while True:
        ack = s.append(pa.table({"v": list(range(n, n + 9))}))
        os.write(1, f"ACK {ack.first_offset} {ack.last_offset}\\n".encode())
        n = ack.last_offset + 1
        s.compact(small_bytes=1 << 30)
    """
)


@pytest.mark.crash
@pytest.mark.parametrize(
    "seed", [pytest.param(i, marks=[pytest.mark.crash_long] if i >= 2 else []) for i in range(30)]
)
def test_sigkill_during_compaction_loses_no_acknowledged_record(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "log"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    acked_last = -1
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=False
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline() == b"START\n"
            time.sleep(0.3 + 0.15 * ((seed * 3 + round_) % 7))
            os.kill(proc.pid, signal.SIGKILL)
            out = proc.stdout.read().decode()
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            if line.startswith("ACK "):
                acked_last = max(acked_last, int(line.split()[2]))
        with ta.open(root) as log:
            s = log.stream("s")
            s.flush()
            values = s.read().column("v").to_pylist()
            # every acknowledged record is there, once, in order, with its offset
            assert values[: acked_last + 1] == list(range(acked_last + 1))
            assert values == list(range(len(values)))
            report = log.verify("s", deep=True)
            assert report.ok, str(report)
            log.gc(min_age=0)
            assert s.read().column("v").to_pylist() == values
    assert acked_last > 0


def test_the_committed_state_is_never_ambiguous_after_a_failed_upload(tmp_path: Path) -> None:
    """A compaction whose commit fails leaves an orphan file, never a half state."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        _fill(s, 3)
        before = s.read()
        writer = writer_for(log.catalog, "s")
        original = writer.commit_log.create

        def failing(*args: Any, **kwargs: Any) -> Any:
            raise TransitError("the store refused the commit")

        writer.commit_log.create = failing  # type: ignore[method-assign]
        try:
            with pytest.raises(TransitError):
                s.compact()
        finally:
            writer.commit_log.create = original  # type: ignore[method-assign]
        assert s.read().equals(before)
        assert len(log.catalog.manifest("s").segments) == 3
        assert len(_files(root)) == 4  # the orphan: gc's business
    with ta.open(root) as log:  # the writer's recovery removes the orphan
        log.stream("s").append(_rows(30, 1))
        log.stream("s").flush()
        assert len(_files(root)) == 4
        assert log.stream("s").read().num_rows == 31
