"""`Log.sql` sessions share one DuckDB database per process (issue 16) but not what they hold:
each log handle's views, and the tables its queries create, are its own, and closing a handle
leaves the others working."""

from __future__ import annotations

from pathlib import Path

import pytest

import transit_arrow as ta
from transit_arrow.query.errors import QueryError


def _log(root: Path, stream: str, values: list[int]) -> Path:
    with ta.open(root) as log:
        log.create_stream(stream).append([{"x": v} for v in values])
    return root


def test_sessions_of_two_handles_keep_their_own_views_and_tables(tmp_path: Path) -> None:
    a_root = _log(tmp_path / "a", "only_a", [1, 2, 3])
    b_root = _log(tmp_path / "b", "only_b", [10])
    a, b = ta.open(a_root), ta.open(b_root)
    try:
        assert a.sql('SELECT sum(x) FROM "only_a"').fetchall() == [(6,)]
        assert b.sql('SELECT sum(x) FROM "only_b"').fetchall() == [(10,)]
        with pytest.raises(QueryError):
            b.sql('SELECT * FROM "only_a"').fetchall()
        a.sql("CREATE TABLE results AS SELECT 1 AS k").fetchall()
        b.sql("CREATE TABLE results AS SELECT 2 AS k").fetchall()  # no clash with a's table
        assert a.sql("SELECT k FROM results").fetchall() == [(1,)]
        assert b.sql("SELECT k FROM results").fetchall() == [(2,)]
        a.close()
        assert b.sql('SELECT sum(x) FROM "only_b"').fetchall() == [(10,)]
        with ta.open(a_root) as again:  # a new handle: a new session, without a's table
            with pytest.raises(QueryError):
                again.sql("SELECT k FROM results").fetchall()
            again.sql("CREATE TABLE results AS SELECT 3 AS k").fetchall()
            assert again.sql('SELECT count(*) FROM "only_a"').fetchall() == [(3,)]
    finally:
        a.close()
        b.close()


def test_a_first_query_in_a_new_process_does_not_import_pandas(tmp_path: Path) -> None:
    """pyarrow's `Schema.empty_table()` imports pandas (about 200 ms); a fresh process's first
    `log.sql` over a stream used it to learn DuckDB's column types."""
    import subprocess
    import sys

    import pyarrow as pa

    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("t").append(pa.table({"x": pa.array([1, 2, 3]), "s": ["a", "b", "c"]}))
    script = (
        "import sys, transit_arrow as ta\n"
        f"with ta.open({str(root)!r}) as log:\n"
        "    rows = log.sql('SELECT sum(x), min(s) FROM \"t\"').fetchall()\n"
        "print(rows, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["[(6,", "'a')]", "False"], out
