"""The query layer through its `Log` / `Stream` methods (skipped until they are wired)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

import transit_arrow as ta

pytestmark = pytest.mark.skipif(
    not hasattr(ta.Log, "duckdb"), reason="Log.duckdb / sql / scan_all not wired yet"
)


def test_log_and_stream_methods(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=4) as log:
        main = log.create_stream("main", metadata={"reason": "task"})
        main.append([{"k": i % 2, "x": i} for i in range(10)])
        main.flush()
        retry = log.branch("retry", at="main@5", reason="retry")
        retry.append([{"k": 1, "x": 100}])
        early = main.generation

        con = log.duckdb()  # type: ignore[attr-defined]
        assert isinstance(con, duckdb.DuckDBPyConnection)
        counts = "SELECT _branch, count(*) FROM transit_records GROUP BY ALL ORDER BY 1"
        assert con.sql(counts).fetchall() == [("main", 10), ("retry", 7)]

        main.append({"k": 0, "x": 10})
        main.flush()
        assert log.duckdb(con) is con  # type: ignore[attr-defined]
        assert con.sql('SELECT count(*) FROM "main"').fetchall() == [(11,)]

        last = log.sql(  # type: ignore[attr-defined]
            'SELECT k, arg_max(x, _offset) FROM "retry" GROUP BY k ORDER BY k'
        )
        assert last.fetchall() == [(0, 4), (1, 100)]
        joined = log.sql(  # type: ignore[attr-defined]
            "SELECT l.reason, count(*) FROM transit_records r "
            "JOIN transit_lineage l ON l.name = r._branch GROUP BY ALL ORDER BY 1"
        )
        assert joined.fetchall() == [("retry", 7), ("task", 11)]
        past = log.sql(f'SELECT count(*) FROM "main@g{early}"')  # type: ignore[attr-defined]
        assert past.fetchall() == [(10,)]
        with pytest.raises(ta.TransitError):
            log.sql("SELECT * FROM nowhere")  # type: ignore[attr-defined]

        frame = log.scan_all()  # type: ignore[attr-defined]
        assert isinstance(frame, pl.LazyFrame)
        totals = frame.group_by("_branch").agg(pl.len()).sort("_branch").collect()
        assert totals.rows() == [("main", 11), ("retry", 7)]

        relation = retry.to_duckdb()  # type: ignore[attr-defined]
        assert relation.order("_offset").project("x").fetchall()[-1] == (100,)
