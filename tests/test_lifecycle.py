"""Notebook lifecycle (issue 14): exist_ok, deleting a stream, dropping a materialization,
verify() of every stream."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.names import encode_stream_name


def _files(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and "_local" not in p.parts
    }


def test_exist_ok_returns_what_exists_and_refuses_what_differs(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        runs = log.create_stream("runs", metadata={"actor": "nb"})
        runs.append([{"x": i} for i in range(5)])
        assert log.create_stream("runs", metadata={"actor": "nb"}, exist_ok=True) is runs
        with pytest.raises(ta.AlreadyExistsError, match="actor"):
            log.create_stream("runs", metadata={"actor": "other"}, exist_ok=True)
        with pytest.raises(ta.AlreadyExistsError):
            log.create_stream("runs")
        schema = pa.schema([("x", pa.int64())])
        log.create_stream("typed", schema=schema)
        with pytest.raises(ta.AlreadyExistsError, match="schema"):
            log.create_stream("typed", schema=pa.schema([("y", pa.string())]), exist_ok=True)

        retry = log.branch("runs/retry", at="runs@2", reason="r")
        assert log.branch("runs/retry", at="runs@2", reason="r", exist_ok=True) is retry
        assert runs.branch("runs/retry", at=2, reason="r", exist_ok=True) is retry
        before = _files(tmp_path / "log")
        with pytest.raises(ta.AlreadyExistsError, match="forks at 2, not 3"):
            log.branch("runs/retry", at="runs@3", reason="r", exist_ok=True)
        with pytest.raises(ta.AlreadyExistsError, match="not a branch"):
            log.branch("typed", at="runs@1", exist_ok=True)
        assert _files(tmp_path / "log") == before  # refusals change nothing

        query = "SELECT count(*) AS n FROM records"
        mv = log.materialize("count", "runs", query=query)
        again = log.materialize("count", "runs", query=query, exist_ok=True)
        assert again.definition_hash == mv.definition_hash
        with pytest.raises(ta.AlreadyExistsError, match="query"):
            log.materialize("count", "runs", query="SELECT sum(x) AS s FROM records", exist_ok=True)


def test_drop_materialization_removes_it_everywhere(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        runs = log.create_stream("runs")
        runs.append([{"x": i} for i in range(5)])
        mv = log.materialize("count", "runs", query="SELECT count(*) AS n FROM records")
        mv.refresh()
        assert log.sql("SELECT n FROM mv_count").fetchall() == [(5,)]
        assert log.drop_materialization("count") >= 3  # definition, checkpoint, state
        assert log.materializations().num_rows == 0
        folder = tmp_path / "log" / "materializations" / "count"
        assert not any(p.is_file() for p in folder.rglob("*"))
        with pytest.raises(ta.QueryError):
            log.sql("SELECT * FROM mv_count").fetchall()
        with pytest.raises(ta.NotFoundError):
            log.drop_materialization("count")


def test_delete_stream_is_refused_while_anything_depends_on_it(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        runs = log.create_stream("runs")
        runs.append([{"x": i} for i in range(5)])
        runs.flush()
        log.branch("runs/b", at="runs@2").append({"x": 9})
        log.stream("runs/b").close()
        runs.close()
        before = _files(root)
        with pytest.raises(ta.InvalidInputError, match="'runs/b'"):
            log.delete_stream("runs")
        assert _files(root) == before
        folder = root / "streams" / encode_stream_name("runs/b") / "segments"
        segments = list(folder.glob("*.parquet"))
        log.delete_stream("runs/b", reason="scratch")
        names = log.streams().column("name").to_pylist()
        assert names == ["runs"]
        assert "runs/b" not in log.lineage().column("name").to_pylist()
        with pytest.raises(ta.StreamNotFoundError):
            log.stream("runs/b")
        with pytest.raises(ta.QueryError):
            log.sql('SELECT * FROM "runs/b"').fetchall()
        assert log.verify().ok  # every remaining stream
        with pytest.raises(ta.AlreadyExistsError):
            log.create_stream("runs/b")  # the name's history stays
        report = log.gc(min_age=0)
        assert segments and all(not p.exists() for p in segments), report
        assert log.stream("runs").read().num_rows == 5
    with ta.open(root) as log:  # another process sees the deletion
        assert log.streams().column("name").to_pylist() == ["runs"]
        log.delete_stream("runs")
        assert log.streams().num_rows == 0
    assert os.path.isdir(root / "deleted")


def test_verify_with_no_target_checks_every_stream(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        for name in ("a", "b"):
            s = log.create_stream(name)
            s.append({"x": 1})
            s.flush()
        report = log.verify(deep=True)
        assert report.ok and report.target == "*"
        assert {e.stream for e in report.entries} == {"a", "b"}
        commit = next((root / "streams" / "b" / "commits").glob("*1.json"))
        data = bytearray(commit.read_bytes())
        data[len(data) // 2] ^= 0x01
        commit.write_bytes(bytes(data))
    with ta.open(root) as log:
        report = log.verify()
        assert not report.ok
        assert {e.stream for e in report.failures} == {"b"}
