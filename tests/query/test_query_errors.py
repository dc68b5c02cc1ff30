"""Errors of the query layer: DuckDB's own messages, wrapped in the transit error tree."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import transit_arrow as ta
from transit_arrow.query import QueryError, connect, create_view, sql


@pytest.fixture
def log(tmp_path: Path) -> ta.Log:
    log = ta.open(tmp_path / "log")
    main = log.create_stream("main")
    main.append([{"v": i} for i in range(3)])
    main.flush()
    main.append({"v": 3})
    main.flush()
    return log


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM nope", "Catalog Error: Table with name nope does not exist!"),
        ("SELEC 1", "Parser Error: syntax error at or near"),
        ('SELECT missing FROM "main"', 'Referenced column "missing" not found'),
    ],
)
def test_sql_errors_are_duckdbs_messages_as_query_errors(
    log: ta.Log, query: str, message: str
) -> None:
    with pytest.raises(QueryError) as caught:
        sql(log.catalog, query)
    error = caught.value
    assert isinstance(error, ta.TransitError)
    assert isinstance(error.__cause__, duckdb.Error)
    assert str(error) == str(error.__cause__)
    assert message in str(error)


def test_unknown_stream_lists_near_names(log: ta.Log) -> None:
    con = connect(log.catalog)
    with pytest.raises(ta.StreamNotFoundError, match="did you mean 'main'"):
        create_view(con, log.catalog, "mian", generation=0)


def test_missing_generation_and_bad_arguments(log: ta.Log) -> None:
    con = connect(log.catalog)
    with pytest.raises(ta.NotFoundError, match="has no generation 9; its latest is 2"):
        create_view(con, log.catalog, "main", generation=9)
    with pytest.raises(ta.NotFoundError, match="has no generation 9"):
        sql(log.catalog, 'SELECT * FROM "main@g9"')
    with pytest.raises(ta.InvalidInputError, match="exactly one of"):
        create_view(con, log.catalog, "main")
    with pytest.raises(ta.InvalidInputError, match="exactly one of"):
        create_view(con, log.catalog, "main", generation=1, as_of="2020-01-01T00:00:00Z")
    with pytest.raises(ta.InvalidInputError, match="not an ISO 8601 timestamp"):
        connect(log.catalog, at="yesterday")


def test_checkpoints_address_a_verified_past(log: ta.Log) -> None:
    main = log.stream("main")
    checkpoint = main.checkpoint()
    main.append({"v": 10})
    main.flush()
    con = connect(log.catalog)
    assert con.sql("SELECT stream, generation FROM transit_checkpoints").fetchall() == [
        ("main", checkpoint.generation)
    ]
    name = create_view(con, log.catalog, "main", checkpoint=checkpoint)
    assert con.sql(f'SELECT sum(v) FROM "{name}"').fetchall() == [(6,)]
    forged = ta.Checkpoint("main", checkpoint.generation, checkpoint.head_offset, "0" * 64)
    with pytest.raises(ta.IntegrityError, match="but the checkpoint says"):
        create_view(con, log.catalog, "main", checkpoint=forged)
    # Views of the past survive refreshes; the live view moves on.
    connect(log.catalog, con)
    assert con.sql(f'SELECT sum(v) FROM "{name}"').fetchall() == [(6,)]
    assert con.sql('SELECT sum(v) FROM "main"').fetchall() == [(16,)]


def test_closed_log(log: ta.Log) -> None:
    log.close()
    with pytest.raises(ta.LogClosedError):
        connect(log.catalog)
