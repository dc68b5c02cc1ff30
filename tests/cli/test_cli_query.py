"""`transit sql` and `transit materialize ...`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import failed, ndjson, ok, records

import transit_arrow as ta

needs_log_sql = pytest.mark.skipif(
    not hasattr(ta.Log, "sql"), reason="Log.sql is not wired to the query layer yet"
)


@pytest.fixture
def history(log_dir: Path) -> Path:
    """main: 0..2 at generation 1, 0..4 at generation 2; b: main@1 + {"i": 10} (with a
    header)."""
    ok("append", log_dir, "main", stdin=records(3))
    ok("append", log_dir, "main", stdin=records(2, start=3))
    ok("branch", log_dir, "b", "--at", "main@1")
    ok("append", log_dir, "b", stdin='{"i": 10, "_headers": {"k": "v"}}')
    return log_dir


# --- sql --------------------------------------------------------------------------------------


@needs_log_sql
def test_sql_text_json_csv_parquet(history: Path, tmp_path: Path) -> None:
    query = 'SELECT _stream, _offset, i FROM "b" ORDER BY _offset'
    lines = ok("sql", history, query).stdout.splitlines()
    assert lines[0].split() == ["_stream", "_offset", "i"]
    assert [line.split() for line in lines[2:]] == [
        ["main", "0", "0"],
        ["main", "1", "1"],
        ["b", "2", "10"],
        ["(3", "rows)"],
    ]
    assert ndjson(ok("sql", history, query, "-o", "json")) == [
        {"_stream": "main", "_offset": 0, "i": 0},
        {"_stream": "main", "_offset": 1, "i": 1},
        {"_stream": "b", "_offset": 2, "i": 10},
    ]
    # CSV writes nested values (here the `_headers` map) as JSON text.
    rows = list(
        csv.DictReader(
            io.StringIO(ok("sql", history, "FROM b ORDER BY _offset", "-o", "csv").stdout)
        )
    )
    assert [(r["i"], r["_headers"]) for r in rows] == [("0", ""), ("1", ""), ("10", '{"k":"v"}')]
    out = tmp_path / "counts.parquet"
    count = "SELECT _branch, count(*) AS n FROM transit_records GROUP BY 1 ORDER BY 1"
    assert ok("sql", history, count, "-o", "parquet", "--out", out).stdout == ""
    assert pq.read_table(out).to_pylist() == [{"_branch": "b", "n": 3}, {"_branch": "main", "n": 5}]
    cut = ok("sql", history, "SELECT * FROM range(30)").stdout.splitlines()
    assert cut[-1].startswith("(first 20 rows") and len(cut) == 2 + 20 + 1
    assert (
        len(ndjson(ok("sql", history, "SELECT * FROM range(30)", "-o", "json", "--limit", "4")))
        == 4
    )


@needs_log_sql
def test_sql_errors_exit_1(history: Path) -> None:
    assert "syntax error" in failed("sql", history, "SELEC 1")
    assert "nope" in failed("sql", history, "SELECT * FROM nope")


@needs_log_sql
def test_sql_reads_quoted_time_travel_names(history: Path) -> None:
    query = 'SELECT count(*) AS n FROM "main@g1"'
    assert ndjson(ok("sql", history, query, "-o", "json")) == [{"n": 3}]


def test_sql_at_reads_a_stream_as_of_a_generation(history: Path) -> None:
    query = "SELECT count(*) AS n, max(i) AS top FROM main"
    assert ndjson(ok("sql", history, query, "--at", "main@g1", "-o", "json")) == [
        {"n": 3, "top": 2}
    ]
    assert ndjson(ok("sql", history, query, "--at", "main@g2", "-o", "json")) == [
        {"n": 5, "top": 4}
    ]
    both = 'SELECT (SELECT count(*) FROM main) AS m, (SELECT count(*) FROM "b") AS b'
    out = ok("sql", history, both, "--at", "main@g1", "--at", "b@g0", "-o", "json")
    assert ndjson(out) == [{"m": 3, "b": 2}]  # b at generation 0: the inherited prefix only
    assert "has no generation 9" in failed("sql", history, query, "--at", "main@g9")
    assert "stream 'mian' does not exist" in failed("sql", history, query, "--at", "mian@g1")
    assert "is neither gN" in failed("sql", history, query, "--at", "main@yesterday", code=2)
    assert "expected STREAM@gN" in failed("sql", history, query, "--at", "main", code=2)
    assert "Catalog Error" in failed("sql", history, "SELECT * FROM nope", "--at", "main@g1")


# --- materialize ------------------------------------------------------------------------------


def test_materialize_create_refresh_read_list(history: Path, tmp_path: Path) -> None:
    query = "SELECT count(*) AS n, sum(i) AS total FROM records"
    out = ok("materialize", "create", history, "totals", "main", "--query", query).stdout
    assert out.startswith("defined materialization 'totals' over 'main' (mode aggregate)")
    text = ok("materialize", "refresh", history, "totals").stdout.splitlines()
    assert text[0] == "refreshed on 'main': processed 5 records (offsets 0..4)"
    assert text[1].startswith("  built from scratch; incremental (mode aggregate)")
    again = json.loads(ok("materialize", "refresh", history, "totals", "-o", "json").stdout)
    assert (again["records_processed"], again["from_offset"], again["to_offset"]) == (0, None, 4)
    assert again["reused_checkpoint"] == "main@4 (generation 2)"
    assert ndjson(ok("materialize", "read", history, "totals", "-o", "json")) == [
        {"n": 5, "total": "10"}  # DuckDB's sum of BIGINT is a decimal: JSON text
    ]
    lines = ok("materialize", "read", history, "totals").stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["n", "total"],
        ["-", "-----"],
        ["5", "10"],
        ["(1", "row)"],
    ]
    csv_out = tmp_path / "totals.csv"
    ok("materialize", "read", history, "totals", "-o", "csv", "--out", csv_out)
    assert csv_out.read_text().splitlines() == ['"n","total"', "5,10"]

    rows = json.loads(ok("materialize", "list", history, "-o", "json").stdout)
    assert [(r["name"], r["source"], r["mode"], r["branches"]) for r in rows] == [
        ("totals", "main", "aggregate", ["main"])
    ]
    listing = ok("materialize", "list", history).stdout.splitlines()
    assert listing[0].split() == ["name", "source", "mode", "version", "branches", "query"]
    assert listing[2].startswith("totals  main    aggregate")


def test_materialize_on_a_branch_resumes_from_the_parent(log_dir: Path) -> None:
    ok("append", log_dir, "main", stdin=records(2))
    query = "SELECT i, _offset FROM records WHERE i > 0"
    args = ("materialize", "create", log_dir, "positive", "main", "--query", query)
    info = json.loads(ok(*args, "--key", "i", "-o", "json").stdout)
    assert (info["mode"], info["key"], len(info["definition_hash"])) == ("filter", ["i"], 64)
    ok("materialize", "refresh", log_dir, "positive")  # a checkpoint of main at offset 1
    ok("append", log_dir, "main", stdin=records(3, start=2))
    ok("branch", log_dir, "b", "--at", "main@1")
    ok("append", log_dir, "b", stdin=records(1, start=10))
    report = json.loads(
        ok("materialize", "refresh", log_dir, "positive", "--branch", "b", "-o", "json").stdout
    )
    assert report["branch"] == "b" and report["reused_checkpoint"] == "main@1 (generation 1)"
    assert (report["records_processed"], report["from_offset"], report["to_offset"]) == (1, 2, 2)
    rows = ndjson(ok("materialize", "read", log_dir, "positive", "--branch", "b", "-o", "json"))
    assert [(r["i"], r["_offset"]) for r in rows] == [(1, 1), (10, 2)]
    # main's view is as of its own last refresh.
    assert [
        r["i"] for r in ndjson(ok("materialize", "read", log_dir, "positive", "-o", "json"))
    ] == [1]
    assert "has not been refreshed on 'c'" in failed(
        "materialize", "read", log_dir, "positive", "--branch", "c"
    )


def test_materialize_errors(history: Path) -> None:
    assert "there is no materialization 'nope'" in failed("materialize", "refresh", history, "nope")
    assert "does not run on 'main'" in failed(
        "materialize", "create", history, "bad", "main", "--query", "SELECT nope FROM records"
    )
    assert "stream 'mian' does not exist" in failed(
        "materialize", "create", history, "bad", "mian", "--query", "SELECT * FROM records"
    )
    failed("materialize", "create", history, "bad", "main", code=2)  # --query is required
    assert "no materializations" in ok("materialize", "list", history).stdout
