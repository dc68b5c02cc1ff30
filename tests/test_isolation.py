"""One damaged stream is reported, and every other stream stays readable and queryable
(issue: engine layers, deliverables 2-4); store failures surface as `StorageError`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from faulty_store import Fault, FaultyStore

import transit_arrow as ta
from transit_arrow.cli import main
from transit_arrow.storage import MemoryStore


def _two_streams(root: Path) -> None:
    with ta.open(root) as log:
        for name in ("good", "bad"):
            s = log.create_stream(name)
            s.append([{"v": i} for i in range(10)])
            s.flush()
        log.branch("good/child", at="good@4").append({"v": 100})
        mv = log.materialize("totals", "good", query="SELECT sum(v) AS total FROM records")
        mv.refresh()


def _damage_commit(root: Path, stream: str, generation: int) -> Path:
    path = root / "streams" / stream / "commits" / f"{generation:020d}.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_commit_is_reported_and_the_other_streams_work(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _two_streams(root)
    _damage_commit(root, "bad", 1)
    with ta.open(root) as log:
        streams = {r["name"]: r for r in log.streams().to_pylist()}
        assert streams["good"]["error"] is None and streams["good"]["next_offset"] == 10
        assert "IntegrityError" in streams["bad"]["error"]
        assert streams["bad"]["next_offset"] is None
        assert set(log.lineage().column("name").to_pylist()) == {"good", "good/child"}
        assert log.stream("good").read().num_rows == 10
        assert log.sql('SELECT sum(v) FROM "good"').fetchall() == [(45,)]
        assert log.sql('SELECT count(*) FROM "good/child"').fetchall() == [(6,)]
        assert log.sql("SELECT count(*) FROM transit_records").fetchall() == [(16,)]
        with pytest.raises(ta.IntegrityError, match="stream 'bad' cannot be read"):
            log.sql('SELECT * FROM "bad"')
        assert not log.verify("bad").ok
        assert log.verify("good").ok
        report = log.hydrate()
        assert set(report.errors) == {"bad"}
        assert log.duckdb().sql('SELECT sum(v) FROM "good"').fetchall() == [(45,)]
    result = CliRunner().invoke(main, ["sql", str(root), 'SELECT sum(v) AS s FROM "good"'])
    assert result.exit_code == 0, result.output
    assert "45" in result.output
    result = CliRunner().invoke(main, ["streams", str(root), "--output", "json"])
    assert result.exit_code == 0 and "IntegrityError" in result.output


def test_a_missing_segment_fails_only_its_stream(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _two_streams(root)
    for segment in (root / "streams" / "bad" / "segments").glob("*.parquet"):
        segment.unlink()
    with ta.open(root) as log:
        with pytest.raises(ta.IntegrityError, match="missing"):
            log.stream("bad").read()
        assert log.stream("good").read().num_rows == 10
        assert log.sql('SELECT sum(v) FROM "good"').fetchall() == [(45,)]


def test_materialized_views_are_seen_by_sql_duckdb_and_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _two_streams(root)
    with ta.open(root) as log:
        assert log.sql("SELECT total FROM mv_totals").fetchall() == [(45,)]
        assert log.duckdb().sql("SELECT total, _branch FROM mv_totals").fetchall() == [(45, "good")]
        log.stream("good").append({"v": 5})
        log.materialization("totals").refresh()
        assert log.sql("SELECT total FROM mv_totals").fetchall() == [(50,)]
    result = CliRunner().invoke(main, ["sql", str(root), "SELECT total FROM mv_totals"])
    assert result.exit_code == 0 and "50" in result.output, result.output


def test_store_failures_are_storage_errors(tmp_path: Path) -> None:
    store = FaultyStore(MemoryStore.named("isolation-faults"))
    log = ta.open(store, local_dir=tmp_path / "local")
    s = log.create_stream("s")
    s.append([{"v": 1}, {"v": 2}])
    s.flush()
    mv = log.materialize("m", "s", query="SELECT count(*) AS n FROM records")
    store.arm(Fault("error", times=None))
    for call in (
        log.materializations,
        log.checkpoints,
        lambda: log.verify("s"),
        mv.refresh,
        log.streams,
        lambda: log.create_stream("t"),
    ):
        with pytest.raises(ta.StorageError) as info:
            call()
        assert info.value.__cause__ is not None
    store.faults.clear()
    log.close()


def test_the_cli_prints_one_error_line_for_s3_without_credentials(tmp_path: Path) -> None:
    # An endpoint nobody listens on: the request fails fast, with no traceback.
    result = CliRunner().invoke(
        main,
        [
            "streams",
            "s3://bucket/prefix",
            "--storage-option",
            "endpoint_url=http://127.0.0.1:9",
            "--storage-option",
            "key=x",
            "--storage-option",
            "secret=y",
            "--local-dir",
            str(tmp_path / "local"),
        ],
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output


def test_python_dash_m_runs_the_cli() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "transit_arrow", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "transit" in out.stdout
