"""The cross-branch questions the query layer exists for, answered by SQL and by Polars alike."""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl
import pytest
from branchy_log import STREAMS, Branchy

from transit_arrow.query import connect, create_view, scan_all, sql


@pytest.fixture(scope="module")
def con(branchy: Branchy) -> duckdb.DuckDBPyConnection:
    return connect(branchy.log.catalog)


def replay(branchy: Branchy, name: str) -> list[dict[str, Any]]:
    return branchy.log.stream(name).read().to_pylist()


def test_per_branch_counts_and_aggregates(branchy: Branchy, con: duckdb.DuckDBPyConnection) -> None:
    query = (
        "SELECT _branch, count(*) AS n, sum(x) AS total, max(x) AS top, count(score) AS scored "
        "FROM transit_records GROUP BY _branch ORDER BY _branch"
    )
    want = []
    for name in STREAMS:
        rows = replay(branchy, name)
        xs = [r["x"] for r in rows]
        scored = sum(r.get("score") is not None for r in rows)
        want.append((name, len(rows), sum(xs), max(xs), scored))
    assert con.sql(query).fetchall() == want
    frame = (
        scan_all(branchy.log.catalog)
        .group_by("_branch")
        .agg(
            pl.len().alias("n"),
            pl.col("x").sum().alias("total"),
            pl.col("x").max().alias("top"),
            pl.col("score").count().alias("scored"),
        )
        .sort("_branch")
        .collect()
    )
    assert frame.rows() == want


def positions(rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Records by origin position: where they physically live, whatever replay shows them."""
    return {
        (
            r.get("_origin_stream") or r["_stream"],
            r["_offset"] if r.get("_origin_offset") is None else r["_origin_offset"],
        )
        for r in rows
    }


@pytest.mark.parametrize(("a", "b"), [("retry", "critique"), ("merged/concat", "retry")])
def test_rows_in_one_branch_not_in_another(
    branchy: Branchy, con: duckdb.DuckDBPyConnection, a: str, b: str
) -> None:
    query = """
        WITH pos AS (
            SELECT _branch, coalesce(_origin_stream, _stream) AS origin,
                   coalesce(_origin_offset, _offset) AS origin_offset
            FROM transit_records)
        SELECT origin, origin_offset FROM pos WHERE _branch = $a
        EXCEPT SELECT origin, origin_offset FROM pos WHERE _branch = $b
        ORDER BY ALL
    """
    want = sorted(positions(replay(branchy, a)) - positions(replay(branchy, b)))
    assert con.sql(query, params={"a": a, "b": b}).fetchall() == want
    assert want  # the branches did diverge
    pos = scan_all(branchy.log.catalog).select(
        "_branch",
        pl.coalesce("_origin_stream", "_stream").alias("origin"),
        pl.coalesce("_origin_offset", "_offset").alias("origin_offset"),
    )
    only = (
        pos.filter(pl.col("_branch") == a)
        .join(pos.filter(pl.col("_branch") == b), on=["origin", "origin_offset"], how="anti")
        .select("origin", "origin_offset")
        .sort("origin", "origin_offset")
        .collect()
    )
    assert only.rows() == want


def test_rows_of_a_branch_not_in_its_parent_by_position(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.sql(
        'SELECT _stream, _offset FROM "retry" EXCEPT SELECT _stream, _offset FROM "critique" '
        "ORDER BY ALL"
    ).fetchall()
    assert rows == [("retry", offset) for offset in range(10, 16)]


def test_last_value_per_key(branchy: Branchy, con: duckdb.DuckDBPyConnection) -> None:
    name = "retry/deep.er-1"
    want: dict[str, int] = {}
    for r in replay(branchy, name):  # replay order: later offsets win
        want[r["key"]] = r["x"]
    query = f'SELECT key, arg_max(x, _offset) FROM "{name}" GROUP BY key ORDER BY key'
    assert con.sql(query).fetchall() == sorted(want.items())
    frame = (
        scan_all(branchy.log.catalog)
        .filter(pl.col("_branch") == name)
        .sort("_offset")
        .group_by("key")
        .agg(pl.col("x").last())
        .sort("key")
        .collect()
    )
    assert frame.rows() == sorted(want.items())


def test_records_labelled_with_their_branch_reason_and_actor(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    query = """
        SELECT r._branch, l.kind, l.actor, l.reason, count(*) AS n
        FROM transit_records AS r JOIN transit_lineage AS l ON l.name = r._branch
        GROUP BY ALL ORDER BY r._branch
    """
    lineage = {row["name"]: row for row in branchy.log.lineage().to_pylist()}
    want = [
        (n, lineage[n]["kind"], lineage[n]["actor"], lineage[n]["reason"], len(replay(branchy, n)))
        for n in STREAMS
    ]
    assert con.sql(query).fetchall() == want
    assert want[STREAMS.index("retry")][2:4] == ("agent-1", "retry step 10")
    frame = (
        scan_all(branchy.log.catalog)
        .join(pl.from_arrow(branchy.log.lineage()).lazy(), left_on="_branch", right_on="name")  # type: ignore[union-attr]
        .group_by("_branch", "kind", "actor", "reason")
        .agg(pl.len())
        .sort("_branch")
        .collect()
    )
    assert frame.rows() == want


def test_a_stream_as_of_an_earlier_generation(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    g = branchy.early_generation
    past = branchy.log.stream("main").at(generation=g).read()
    want = [(past.num_rows, sum(past.column("x").to_pylist()))]
    assert past.num_rows == branchy.early_records < branchy.log.stream("main").next_offset
    assert create_view(con, branchy.log.catalog, "main", generation=g) == f"main@g{g}"
    assert con.sql(f'SELECT count(*), sum(x) FROM "main@g{g}"').fetchall() == want
    # Log.sql creates such views on demand, by generation or by time.
    assert sql(branchy.log.catalog, f'SELECT count(*), sum(x) FROM "main@g{g}"').fetchall() == want
    at_time = sql(branchy.log.catalog, f'SELECT count(*), sum(x) FROM "main@{branchy.between}"')
    assert at_time.fetchall() == want
    # ... and a whole connection can show the log as of a time.
    then = connect(branchy.log.catalog, at=branchy.between)
    assert then.sql('SELECT count(*), sum(x) FROM "main"').fetchall() == want
    assert then.sql("SELECT name, generation FROM transit_streams").fetchall() == [("main", g)]
    frame = (
        scan_all(branchy.log.catalog, at=branchy.between)
        .select(pl.len(), pl.col("x").sum())
        .collect()
    )
    assert frame.rows() == want


def test_scan_all_has_the_columns_and_rows_of_transit_records(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    frame = scan_all(branchy.log.catalog).collect()
    records = con.sql("SELECT * FROM transit_records").pl()
    assert frame.columns == records.columns
    key = ["_branch", "_offset"]
    assert frame.sort(key).rows() == records.sort(key).rows()
