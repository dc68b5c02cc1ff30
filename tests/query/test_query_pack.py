"""View packs (`query/pack.py`): new connections attach a log state's views instead of creating
them, and still show exactly the log, never another state, never an unverified segment."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import transit_arrow as ta
from transit_arrow.query.pack import KEEP, PACK
from transit_arrow.segments.verified import registry

QUERY = 'SELECT count(*), sum(v) FROM "{}"'


def packs(root: Path) -> list[Path]:
    return sorted((root / "_local" / "duckdb").glob("*.duckdb"))


def view_databases(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Where each view name resolves: a temporary view comes first in DuckDB's lookup."""
    query = "SELECT view_name, database_name FROM duckdb_views() WHERE NOT internal"
    found: dict[str, str] = {}
    for name, database in con.sql(query).fetchall():
        if found.get(name) != "temp":
            found[name] = database
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "log"
    with ta.open(root) as log:
        for name, n in (("a", 3), ("b", 5)):
            s = log.create_stream(name)
            s.append([{"v": i} for i in range(n)])
            s.flush()
    return root


def test_a_new_connection_attaches_the_pack_of_the_log_state(root: Path) -> None:
    with ta.open(root) as log:
        first = log.duckdb()
        assert len(packs(root)) == 1
        assert first.sql(QUERY.format("b")).fetchall() == [(5, 10)]
    with ta.open(root) as log:  # a fresh handle: the same pack, nothing built
        before = packs(root)[0].stat().st_mtime_ns
        con = log.duckdb()
        assert packs(root)[0].stat().st_mtime_ns == before
        views = view_databases(con)
        assert views["a"] == views["b"] == views["transit_records"] == PACK
        assert con.sql(QUERY.format("a")).fetchall() == [(3, 3)]
        assert con.sql("SELECT count(*) FROM transit_records").fetchall() == [(8,)]
        tables = con.sql(
            "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE 'transit_%'"
        ).fetchall()
        assert len(tables) == 6  # the metadata tables stay temporary
        assert con.sql("SELECT count(*) FROM transit_commits").fetchall() == [(4,)]
        con.execute("CREATE TABLE mine AS SELECT 1 AS x")  # the caller's objects still work
        where = "SELECT database_name FROM duckdb_tables() WHERE table_name = 'mine'"
        assert con.sql(where).fetchall() == [("memory",)]
        assert con.sql("SELECT x FROM mine").fetchall() == [(1,)]


def test_a_changed_log_gets_another_pack_and_unsealed_records_a_temporary_view(
    root: Path,
) -> None:
    with ta.open(root) as log:
        log.duckdb()
        log.stream("a").append({"v": 100})  # unsealed: read through a registered head
        con = log.duckdb()
        views = view_databases(con)
        assert views["a"] == "temp" and views["b"] == PACK
        assert views["transit_records"] == "temp"
        assert con.sql(QUERY.format("a")).fetchall() == [(4, 103)]
        log.stream("a").flush()
        con = log.duckdb()
        assert view_databases(con)["a"] == PACK
        assert con.sql(QUERY.format("a")).fetchall() == [(4, 103)]
        assert con.sql("SELECT next_offset FROM transit_streams WHERE name = 'a'").fetchall() == [
            (4,)
        ]
        assert len(packs(root)) == 3  # one per state: all sealed, a head, sealed again
        log.stream("b").append({"v": 1})
        log.duckdb()
        log.stream("b").append({"v": 2})
        log.duckdb()
        assert len(packs(root)) == 4  # appends to a stream with a head: one pack, not one each


def test_refreshing_a_packed_connection_detaches_its_pack(root: Path) -> None:
    with ta.open(root) as log:
        con = log.duckdb()
        log.stream("b").append({"v": 7})
        log.stream("b").flush()
        assert log.duckdb(con) is con
        assert PACK not in {
            d for (d,) in con.sql("SELECT database_name FROM duckdb_databases()").fetchall()
        }
        assert set(view_databases(con).values()) == {"temp"}
        assert con.sql(QUERY.format("b")).fetchall() == [(6, 17)]


def test_a_damaged_pack_is_built_again_and_old_packs_are_pruned(root: Path) -> None:
    with ta.open(root) as log:
        log.duckdb()
        (pack,) = packs(root)
        pack.write_bytes(b"not a database")
        con = log.duckdb()
        assert view_databases(con)["a"] == PACK
        assert con.sql(QUERY.format("a")).fetchall() == [(3, 3)]
        for i in range(KEEP + 2):
            log.stream("a").append({"v": i})
            log.stream("a").flush()
            log.duckdb()
        assert len(packs(root)) == KEEP


def test_a_packed_view_of_a_damaged_segment_is_never_read(root: Path) -> None:
    with ta.open(root) as log:
        log.duckdb()  # a pack of the healthy state
        segment = root / log.catalog.manifest("a").segments[0].path
    data = bytearray(segment.read_bytes())
    data[-20] ^= 0xFF
    segment.write_bytes(bytes(data))
    registry.forget()
    with ta.open(root) as log:
        con = log.duckdb()
        assert view_databases(con)["a"] == "temp"  # a failing view, not the packed one
        with pytest.raises(duckdb.Error, match="IntegrityError: stream 'a' cannot be read"):
            con.sql('SELECT * FROM "a"').fetchall()
        assert con.sql(QUERY.format("b")).fetchall() == [(5, 10)]


def test_a_few_changed_streams_reuse_the_newest_pack(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        for i in range(16):
            s = log.create_stream(f"s{i:02d}")
            s.append({"v": i})
            s.flush()
        log.duckdb()
        s = log.stream("s03")
        s.append({"v": 100})
        s.flush()
        con = log.duckdb()
        assert len(packs(root)) == 1  # the newest pack serves the 15 others
        views = view_databases(con)
        assert views["s03"] == "temp" and views["s04"] == PACK
        assert views["transit_records"] == "temp"
        assert con.sql(QUERY.format("s03")).fetchall() == [(2, 103)]
        assert con.sql("SELECT sum(v) FROM transit_records").fetchall() == [(220,)]
        assert con.sql("SELECT count(*) FROM transit_commits").fetchall() == [(33,)]
        for i in (5, 6):  # three of 17 views changed: more than one in eight, a new pack
            log.stream(f"s{i:02d}").append({"v": 1})
            log.stream(f"s{i:02d}").flush()
        con = log.duckdb()
        assert len(packs(root)) == 2
        assert set(view_databases(con).values()) == {PACK}
