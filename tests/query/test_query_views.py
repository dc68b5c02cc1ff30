"""Stream views, `transit_records` and the metadata tables reproduce the log exactly (DESIGN §8)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from branchy_log import STREAMS, Branchy

import transit_arrow as ta
from transit_arrow.query import connect, sql
from transit_arrow.segments.verified import registry


def same(got: pa.Table, want: pa.Table) -> None:
    """DuckDB's result holds `want`'s columns, in order, and its values."""
    assert got.column_names == want.column_names
    assert got.cast(want.schema).to_pylist() == want.to_pylist()


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def con(branchy: Branchy) -> duckdb.DuckDBPyConnection:
    return connect(branchy.log.catalog)


@pytest.mark.parametrize("name", STREAMS)
def test_each_stream_view_is_its_replay(
    branchy: Branchy, con: duckdb.DuckDBPyConnection, name: str
) -> None:
    got = con.sql(f"SELECT * FROM {quoted(name)} ORDER BY _offset").to_arrow_table()
    same(got, branchy.log.stream(name).read())


def test_views_show_unsealed_records_and_widened_types(con: duckdb.DuckDBPyConnection) -> None:
    deep = con.sql(
        'SELECT _stream, _offset, x, who, score FROM "retry/deep.er-1" ORDER BY _offset'
    ).fetchall()
    assert [r[0] for r in deep] == ["main"] * 10 + ["retry"] * 3 + ["retry/deep.er-1"] * 5
    assert deep[-2:] == [
        ("retry/deep.er-1", 16, 400, "deep-unsealed", None),
        ("retry/deep.er-1", 17, 401, "deep-unsealed", None),
    ]
    types = {row[0]: row[1] for row in con.sql('DESCRIBE "main"').fetchall()}
    assert types["x"] == "BIGINT"  # int32 in the first segment, int64 later
    assert types["_timestamp"] == "TIMESTAMP WITH TIME ZONE"


def test_concat_merge_shows_shifted_offsets_labels_and_provenance(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = con.sql(
        'SELECT _stream, _offset, _origin_stream, _origin_offset, x FROM "merged/concat" '
        "WHERE _offset BETWEEN 9 AND 17 ORDER BY _offset"
    ).fetchall()
    assert rows == [
        ("main", 9, None, None, 9),  # the base prefix keeps its identity
        *[("merged/concat", 10 + i, "retry", 10 + i, 100 + i) for i in range(6)],
        ("merged/concat", 16, "main", 10, 10),  # critique's records, after retry's
        ("merged/concat", 17, "main", 11, 11),
    ]


def test_records_view_holds_every_replay_with_its_branch(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    columns = [c for c, *_ in con.sql("DESCRIBE transit_records").fetchall()]
    assert columns.pop(1) == "_own"  # whether the row is the branch's own (issue 13)
    assert columns[:7] == [
        "_branch",
        "_stream",
        "_offset",
        "_timestamp",
        "_headers",
        "_origin_stream",
        "_origin_offset",
    ]
    assert sorted(columns[7:]) == ["key", "score", "tool", "who", "x"]
    for name in STREAMS:
        want = branchy.log.stream(name).read()
        got = con.sql(
            "SELECT * EXCLUDE (_branch) FROM transit_records WHERE _branch = $b ORDER BY _offset",
            params={"b": name},
        ).to_arrow_table()
        got = got.select(want.column_names)
        same(got, want)


def test_records_view_marks_own_and_inherited_rows(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    """`_own` is true exactly for the rows a branch appended or its merge produced (not those it
    inherits from its parent or base), in SQL and in `scan_all`."""
    log = branchy.log
    for name in STREAMS:
        row = log.lineage().filter(pc.field("name") == name).to_pylist()[0]
        link = row["parent_offset"] if row["kind"] == "branch" else row["base_offset"]
        if row["kind"] == "merge" and row["policy"] == "fast_forward":
            link = log.stream(name).next_offset - 1
        own_start = 0 if link is None else link + 1
        got = con.sql(
            "SELECT _offset, _own FROM transit_records WHERE _branch = $b ORDER BY _offset",
            params={"b": name},
        ).fetchall()
        assert got == [(o, o >= own_start) for o, _ in got], name
        frame = log.scan_all().filter(pl.col("_branch") == name).sort("_offset").collect()
        assert frame.select("_offset", "_own").rows() == got, name


def test_metadata_tables_describe_the_log(branchy: Branchy, con: duckdb.DuckDBPyConnection) -> None:
    log = branchy.log
    assert con.sql("SELECT * FROM transit_streams").to_arrow_table().to_pylist() == (
        log.streams().to_pylist()
    )
    assert con.sql("SELECT * FROM transit_lineage").to_arrow_table().to_pylist() == (
        log.lineage().to_pylist()
    )
    commits = con.sql("SELECT stream, count(*) FROM transit_commits GROUP BY ALL").fetchall()
    assert dict(commits) == {n: log.stream(n).generation + 1 for n in STREAMS}
    segments = con.sql(
        "SELECT stream, first_offset, last_offset, records FROM transit_segments "
        "ORDER BY stream, first_offset"
    ).fetchall()
    assert segments == sorted(
        (n, s.first_offset, s.last_offset, s.records)
        for n in STREAMS
        for s in log.catalog.manifest(n, refresh=False).segments
    )
    assert con.sql("SELECT count(*) FROM transit_checkpoints").fetchall() == [(0,)]


def test_metadata_are_temporary_and_views_open_no_segment(
    branchy: Branchy, con: duckdb.DuckDBPyConnection
) -> None:
    tables = con.sql(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE 'transit_%'"
    ).fetchall()
    assert sorted(t for (t,) in tables) == [
        "transit_checkpoints",
        "transit_commits",
        "transit_cursors",
        "transit_lineage",
        "transit_segments",
        "transit_streams",
    ]
    retry = con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'retry'").fetchall()[0][0]
    main = branchy.log.catalog.manifest("main", refresh=False).segments
    # retry forks at main@9: it reads main's first two segments (the second one up to 9 only),
    # never the third.
    assert Path(main[0].path).name in retry and Path(main[1].path).name in retry
    assert Path(main[2].path).name not in retry
    assert "NOT ((s._offset >= 10) AND (s._offset < 20))" in retry


def test_refresh_rebuilds_only_changed_streams_and_drops_stale_heads(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=100) as log:
        a = log.create_stream("a")
        a.append([{"v": i} for i in range(5)])
        a.flush()
        b = log.create_stream("b")
        b.append({"v": 1})  # unsealed: a registered head table
        con = connect(log.catalog)
        catalog = dict(con.sql("SELECT name, key FROM __transit_catalog").fetchall())
        heads = "SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '__transit_arrow_head_%'"
        assert con.sql(heads).fetchall() == [(1,)]
        assert con.sql('SELECT count(*) FROM "b"').fetchall() == [(1,)]

        b.append({"v": 2})
        b.flush()
        log.create_stream("c").append({"v": 3})
        assert connect(log.catalog, con) is con
        after = dict(con.sql("SELECT name, key FROM __transit_catalog").fetchall())
        assert after["a"] == catalog["a"]  # unchanged: not rebuilt
        assert after["b"] != catalog["b"]
        assert con.sql('SELECT sum(v) FROM "b"').fetchall() == [(3,)]
        assert con.sql('SELECT sum(v) FROM "c"').fetchall() == [(3,)]
        assert con.sql(heads).fetchall() == [(1,)]  # b's old head is gone, c's is new
        assert con.sql("SELECT count(*) FROM transit_records").fetchall() == [(8,)]


def test_sql_refreshes_before_each_query(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append({"v": 1})
        assert sql(log.catalog, 'SELECT sum(v) FROM "s"').fetchall() == [(1,)]
        s.append([{"v": 10}, {"v": 100}])
        assert sql(log.catalog, 'SELECT sum(v) FROM "s" WHERE v >= $lo', lo=10).fetchall() == [
            (110,)
        ]
        s.flush()
        assert sql(log.catalog, "SELECT next_offset FROM transit_streams").fetchall() == [(3,)]


def test_to_duckdb_reads_a_stream_or_its_past(branchy: Branchy) -> None:
    main = branchy.log.stream("main")
    relation = main.to_duckdb()
    same(relation.order("_offset").to_arrow_table(), main.read())
    past = main.at(generation=branchy.early_generation).to_duckdb()
    assert past.count("*").fetchall() == [(branchy.early_records,)]
    mine = duckdb.connect()
    assert main.to_duckdb(mine).count("*").fetchall() == [(main.next_offset,)]


def test_quoted_names_and_names_duckdb_cannot_tell_apart(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        for name, v in [("Main", 1), ("main", 2), ("select", 3), ("transit_streams", 4)]:
            log.create_stream(name).append({"v": v})
        con = connect(log.catalog)
        assert con.sql('SELECT v FROM "Main"').fetchall() == [(1,)]  # first in name order
        assert con.sql('SELECT v FROM "select"').fetchall() == [(3,)]
        assert con.sql("SELECT count(*) FROM transit_streams").fetchall() == [(4,)]
        branches = con.sql("SELECT _branch, v FROM transit_records ORDER BY v").fetchall()
        assert branches == [("Main", 1), ("main", 2), ("select", 3), ("transit_streams", 4)]
        for name, v in [("main", 2), ("transit_streams", 4)]:
            assert log.stream(name).to_duckdb(con).project("v").fetchall() == [(v,)]
        assert con.sql('SELECT v FROM "Main"').fetchall() == [(1,)]


def test_columns_differing_only_by_case_are_left_out_not_mixed_up(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        log.create_stream("odd").append({"a": 1, "A": 2})
        log.create_stream("other").append({"A": 3})
        con = connect(log.catalog)
        assert con.sql('SELECT * EXCLUDE (_timestamp, _headers) FROM "odd"').fetchall() == [
            ("odd", 0, 1)
        ]
        records = con.sql("SELECT _branch, a FROM transit_records ORDER BY 1").fetchall()
        assert records == [("odd", 1), ("other", None)]


def test_records_leave_out_columns_unrelated_roots_type_differently(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        log.create_stream("a").append({"v": 1, "w": 1})
        log.create_stream("b").append({"v": "one", "w": 2})
        con = connect(log.catalog)
        columns = [c for c, *_ in con.sql("DESCRIBE transit_records").fetchall()]
        assert "v" not in columns and "w" in columns
        assert con.sql('SELECT v FROM "b"').fetchall() == [("one",)]


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.s3)])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ta.Log]:
    """A log whose store has no local files: `memory://`, or S3 on a local moto server."""
    if request.param == "memory":
        log = ta.open(f"memory://query-remote-{uuid.uuid4().hex}", segment_max_records=4)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        log = ta.open(
            f"s3://{endpoint.create_bucket()}/log",
            storage_options=endpoint.storage_options,
            local_dir=tmp_path / "local",
            segment_max_records=4,
        )
    with log:
        yield log


def test_remote_log_reads_segments_through_the_verified_cache(remote: ta.Log) -> None:
    log = remote
    main = log.create_stream("main")
    for start in (0, 4, 8):  # three segments of four records
        main.append([{"v": i} for i in range(start, start + 4)])
    main.flush()
    branch = log.branch("fork", at="main@5")
    branch.append([{"v": 100 + i} for i in range(3)])
    branch.flush()
    log.merge("both", ["main", "fork"], policy="concat")
    before = log.catalog.cache.fetches
    con = connect(log.catalog)
    assert log.catalog.cache.fetches == before  # creating views reads no segment
    assert con.sql('SELECT sum(v) FROM "fork"').fetchall() == [(15 + 303,)]
    # fork reads main's first two segments and its own, never main's third.
    assert log.catalog.cache.fetches == before + 3
    for name in ("main", "fork", "both"):
        want = log.stream(name).read()
        same(con.sql(f'SELECT * FROM "{name}" ORDER BY _offset').to_arrow_table(), want)
    assert con.sql("SELECT count(*) FROM transit_records").fetchall() == [(12 + 9 + 15,)]
    con.close()


def test_empty_log_and_streams_without_segments(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        con = connect(log.catalog)
        assert con.sql("SELECT count(*) FROM transit_records").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM transit_streams").fetchall() == [(0,)]
        log.create_stream("empty")
        log.create_stream("typed", schema=pa.schema([("v", pa.int32())]))
        log.create_stream("unsealed").append({"w": "x"})
        connect(log.catalog, con)
        for name in ("empty", "typed", "unsealed"):
            want = log.stream(name).read()
            same(con.sql(f'SELECT * FROM "{name}"').to_arrow_table(), want)
        assert con.sql("SELECT _branch, w FROM transit_records").fetchall() == [("unsealed", "x")]


def test_concat_of_an_interleave_keeps_the_stored_provenance(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=3) as log:
        main = log.create_stream("main")
        main.append([{"v": i} for i in range(4)])
        a = log.branch("a", at="main@3")
        a.append([{"v": 10 + i} for i in range(2)])
        b = log.branch("b", at="main@3")
        b.append([{"v": 20 + i} for i in range(2)])
        log.merge("woven", ["a", "b"], policy="interleave")
        main.append([{"v": 4}])
        log.merge("both", ["woven", "main"], policy="concat")
        con = connect(log.catalog)
        want = log.stream("both").read()
        assert set(want.column("_origin_stream").to_pylist()) == {None, "a", "b", "main"}
        same(con.sql('SELECT * FROM "both" ORDER BY _offset').to_arrow_table(), want)
        records = con.sql(
            "SELECT * EXCLUDE (_branch) FROM transit_records WHERE _branch = 'both' "
            "ORDER BY _offset"
        ).to_arrow_table()
        same(records.select(want.column_names), want)


def test_column_names_and_nested_types_survive_the_schema_map(tmp_path: Path) -> None:
    nested = pa.struct([("a b", pa.int32()), ("it's", pa.string())])
    table = pa.table(
        {
            "a,b": [1, 2],
            "x=y": ["p", "q"],
            "it's": [1.5, None],
            'say "hi"': [[1], [2, 3]],
            "é {c}": pa.array([{"a b": 1, "it's": "z"}, None], nested),
        }
    )
    with ta.open(tmp_path / "log", segment_max_records=2) as log:
        s = log.create_stream("s")
        s.append(table)
        s.append({"a,b": 3, "later": True})  # a new column: NULL in the first segment
        s.flush()
        con = connect(log.catalog)
        same(con.sql('SELECT * FROM "s" ORDER BY _offset').to_arrow_table(), s.read())


def test_deep_branch_reads_whole_segments_in_one_call_and_cut_ones_in_another(
    tmp_path: Path,
) -> None:
    with ta.open(tmp_path / "log", segment_max_records=4) as log:
        parent = log.create_stream("l0")
        for level in range(4):
            for start in range(0, 12, 4):  # three segments per level
                parent.append([{"v": 1000 * level + start + i} for i in range(4)])
            parent.flush()
            if level < 3:  # fork two records into the last segment written
                parent = parent.branch(f"l{level + 1}", at=parent.next_offset - 3)
        con = connect(log.catalog)
        for name in ("l0", "l1", "l2", "l3"):
            want = log.stream(name).read()
            same(con.sql(f'SELECT * FROM "{name}" ORDER BY _offset').to_arrow_table(), want)
        deepest = con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'l3'").fetchall()
        # The three cut segments drop offsets no other one keeps: one call reads them all.
        assert deepest[0][0].count("read_parquet(") == 2


def test_sql_builds_only_what_the_query_names(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        for name in ("a", "b", "c"):
            s = log.create_stream(name)
            s.append({"v": 1})
            s.flush()
        registry.forget()  # every segment is hashed again on its first use
        before = registry.hashed_files
        assert log.sql('SELECT count(*) FROM "a"').fetchall() == [(1,)]
        assert registry.hashed_files == before + 1  # b's and c's files are not even checked
        assert log.sql("SELECT count(*) FROM b").fetchall() == [(1,)]
        assert registry.hashed_files == before + 2
        # A quote in a comment does not hide the names after it.
        query = "-- the view's rows\nSELECT count(*) FROM c WHERE 'x' = 'x'"
        assert log.sql(query).fetchall() == [(1,)]
        assert registry.hashed_files == before + 3
        # A query listing the catalog sees every stream and table.
        shown = {name for (name,) in log.sql("SHOW TABLES").fetchall()}
        assert {"a", "b", "c", "transit_records", "transit_streams"} <= shown


def test_sql_keeps_views_of_views_current_and_rebuilds_dropped_ones(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        a = log.create_stream("a")
        a.append({"v": 1})
        other = log.create_stream("other")
        other.append({"v": 7})
        other.close()
        log.sql('CREATE VIEW total AS SELECT sum(v) AS t FROM "a"')
        a.append({"v": 5})
        assert log.sql("SELECT t FROM total").fetchall() == [(6,)]
        log.sql('DROP VIEW "a"')
        assert log.sql('SELECT sum(v) FROM "a"').fetchall() == [(6,)]
        assert log.sql("SELECT t FROM total").fetchall() == [(6,)]
        assert log.sql("SELECT count(*) FROM transit_streams").fetchall() == [(2,)]
        assert log.sql("SELECT v FROM other").fetchall() == [(7,)]
        log.delete_stream("other")
        with pytest.raises(ta.QueryError, match="other does not exist"):
            log.sql("SELECT * FROM other")
        assert log.sql("SELECT count(*) FROM transit_streams").fetchall() == [(1,)]
