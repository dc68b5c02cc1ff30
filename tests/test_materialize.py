"""Materializations: SQL plans, incremental refreshes, checkpoints across branches (DESIGN §9).

Every view read is compared with a full recompute of the same SQL by DuckDB over the branch's
replay (`log.stream(branch).read()` registered as `records`), and every refresh report is
checked field by field: how many records it read, from and to which offsets, and which
checkpoint it resumed from.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.materialize import plan_sql
from transit_arrow.names import encode_stream_name

TOOLS = ("a", "b", "c")
AGG_ALL = (
    "SELECT tool, count(*) AS n, count(lat) AS n_lat, sum(x) AS sx, min(x) AS lo, "
    "max(lat) AS hi, avg(lat) AS mean, bool_and(ok) AS all_ok, bool_or(ok) AS any_ok, "
    "arg_max(x, _offset) AS last_x FROM records GROUP BY tool"
)

Row = tuple[Any, ...]


# --- helpers ----------------------------------------------------------------------------------


def make_rows(n: int, start: int = 0, tools: Sequence[str] = TOOLS) -> list[dict[str, Any]]:
    """`n` records numbered from `start`: a tool, an int, a float that is NULL every 4th
    record, and a bool that is False every 5th record."""
    return [
        {
            "tool": tools[i % len(tools)],
            "x": i,
            "lat": None if i % 4 == 0 else i / 8,
            "ok": i % 5 != 0,
        }
        for i in range(start, start + n)
    ]


def fill(stream: ta.Stream, n: int, start: int = 0, tools: Sequence[str] = TOOLS) -> None:
    """Append `make_rows(n, start, tools)` in one call and commit it."""
    stream.append(make_rows(n, start, tools))
    stream.flush()


def recompute(log: ta.Log, branch: str, query: str) -> pa.Table:
    """The query computed from scratch by DuckDB over the branch's whole replay."""
    con = duckdb.connect()
    try:
        con.register("records", log.stream(branch).read())
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def _sort_key(row: Row) -> tuple[Any, ...]:
    # Floats are left out of the key: they may differ in the last bits between plans.
    return tuple((v is None, str(v)) for v in row if not isinstance(v, float))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def assert_same(got: pa.Table, want: pa.Table, *, ordered: bool = False) -> None:
    """Same column names and the same rows (in order when `ordered`), floats within 1e-9."""
    assert got.column_names == want.column_names
    got_rows = [tuple(r.values()) for r in got.to_pylist()]
    want_rows = [tuple(r.values()) for r in want.to_pylist()]
    if not ordered:
        got_rows.sort(key=_sort_key)
        want_rows.sort(key=_sort_key)
    assert len(got_rows) == len(want_rows), (got_rows, want_rows)
    for g, w in zip(got_rows, want_rows, strict=True):
        assert len(g) == len(w) and all(map(_same_value, g, w)), (g, w)


def assert_view(mv: ta.Materialization, branch: str, *, ordered: bool = False) -> None:
    """The view on `branch` equals a full recompute of its query."""
    assert_same(mv.read(branch), recompute(mv.log, branch, mv.definition["query"]), ordered=ordered)


def checkpoint_files(root: Path, view: str, branch: str) -> list[Path]:
    """The checkpoint JSON files of `view` on `branch`, oldest offset first."""
    folder = (
        root / "materializations" / encode_stream_name(view) / "checkpoints"
    ) / encode_stream_name(branch)
    return sorted(folder.glob("*.json"))


def rewrite_json(path: Path, **changes: Any) -> None:
    """Replace fields of a JSON file in place (a tampering attacker's edit)."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.chmod(0o644)
    path.write_text(json.dumps(data))


def flip_byte(path: Path) -> None:
    """Flip one bit in the middle of a file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def running_count(state: pa.Table | None, batch: pa.Table) -> pa.Table:
    """A reducer: records per tool so far."""
    con = duckdb.connect()
    try:
        con.register("batch", batch)
        new = con.sql("SELECT tool, count(*)::BIGINT AS n FROM batch GROUP BY tool")
        if state is None:
            return new.to_arrow_table()
        con.register("state", state)
        con.register("new", new.to_arrow_table())
        return con.sql(
            "SELECT tool, sum(n)::BIGINT AS n FROM "
            "(SELECT * FROM state UNION ALL SELECT * FROM new) GROUP BY tool"
        ).to_arrow_table()
    finally:
        con.close()


def counts(table: pa.Table) -> dict[str, int]:
    """`{tool: n}` from a reducer's state."""
    return {r["tool"]: r["n"] for r in table.to_pylist()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the test's log lives."""
    return tmp_path / "log"


@pytest.fixture
def mlog(root: Path) -> Iterator[ta.Log]:
    """A log with stream `main` holding 100 committed records."""
    with ta.open(root) as log:
        fill(log.create_stream("main"), 100)
        yield log


# --- plans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM records",
        "SELECT tool, x FROM records WHERE ok",
        "SELECT x * 2 AS y, upper(tool) AS t FROM records WHERE x > 3 AND lat IS NOT NULL",
        "SELECT _offset, _timestamp, tool FROM records",
        "SELECT records.tool, records.x FROM records",
    ],
)
def test_plan_filter(query: str) -> None:
    """SELECT/WHERE without aggregates, DISTINCT, ORDER BY or LIMIT appends new output."""
    plan = plan_sql(query)
    assert plan.mode == "filter"
    assert "appended" in plan.reason
    assert plan.partial_sql == query
    assert plan.keys == []


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("SELECT tool, count(*) FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, count(lat) AS n FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, sum(x) AS s FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, min(x) AS m FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, max(lat) AS m FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, avg(lat) AS m FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, bool_and(ok) AS b FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, bool_or(ok) AS b FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, arg_max(x, _offset) AS last FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, max_by(lat, _offset) AS last FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, ok, count(*), avg(x) FROM records GROUP BY tool, ok", ["tool", "ok"]),
        ("SELECT count(*), sum(x), avg(lat) FROM records", []),
        ("SELECT count(*) FROM records WHERE x > 3", []),
        ("SELECT tool FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, sum(x) / count(*) AS r FROM records GROUP BY tool", ["tool"]),
        ("SELECT tool, count(*) AS n FROM records GROUP BY tool HAVING count(*) > 2", ["tool"]),
        ("SELECT tool, sum(x) AS s FROM records GROUP BY tool ORDER BY s DESC LIMIT 2", ["tool"]),
        ("SELECT tool FROM records GROUP BY tool ORDER BY max(x) DESC", ["tool"]),
        ("SELECT records.tool, min(x) FROM records WHERE ok GROUP BY records.tool", ["tool"]),
        # issue 16: GROUP BY over expressions and ordinals is incremental too
        ("SELECT lower(tool), count(*) FROM records GROUP BY lower(tool)", ["__k0"]),
        ("SELECT tool, count(*) FROM records GROUP BY 1", ["tool"]),
    ],
)
def test_plan_aggregate(query: str, keys: list[str]) -> None:
    """GROUP BY plain columns with decomposable aggregates is maintained from partials."""
    plan = plan_sql(query)
    assert plan.mode == "aggregate", plan.reason
    assert plan.keys == keys
    assert "decomposable" in plan.reason
    assert plan.partial_sql and plan.combine_sql and plan.final_sql


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (
            "SELECT tool, count(DISTINCT x) FROM records GROUP BY tool",
            "COUNT(DISTINCT x) is not a decomposable aggregate",
        ),
        ("SELECT median(lat) FROM records", "MEDIAN(lat) is not a decomposable aggregate"),
        ("SELECT tool, string_agg(tool, ',') FROM records GROUP BY tool", "not a decomposable"),
        ("SELECT tool, arg_max(x, lat) FROM records GROUP BY tool", "not a decomposable"),
        ("SELECT x, sum(x) OVER (ORDER BY _offset) FROM records", "window functions"),
        ("SELECT x FROM records QUALIFY row_number() OVER () = 1", "window functions"),
        (
            "SELECT r.x FROM records r JOIN records s ON r._offset = s._offset",
            "something other than `records`",
        ),
        ("WITH t AS (SELECT * FROM records) SELECT * FROM t", "something other than `records`"),
        ("SELECT x FROM other_table", "something other than `records`"),
        ("SELECT x FROM records WHERE x > (SELECT avg(x) FROM records)", "subqueries"),
        ("SELECT lower(tool) AS t, count(*) FROM records GROUP BY t", "may name an alias"),
        ("SELECT tool, x, count(*) FROM records GROUP BY tool", "x uses a column outside"),
        ("SELECT DISTINCT tool FROM records", "SELECT DISTINCT"),
        ("SELECT x FROM records ORDER BY x", "ORDER BY / LIMIT"),
        ("SELECT x FROM records LIMIT 3", "ORDER BY / LIMIT"),
        ("SELECT x FROM records UNION ALL SELECT x FROM records", "single SELECT"),
    ],
)
def test_plan_full_says_why(query: str, reason: str) -> None:
    """Everything else is recomputed in full, and the plan says why."""
    plan = plan_sql(query)
    assert plan.mode == "full"
    assert reason in plan.reason
    assert plan.partial_sql == plan.combine_sql == plan.final_sql == ""


def test_plan_rollup_is_full() -> None:
    """ROLLUP grouping sets are not decomposed."""
    assert plan_sql("SELECT tool, count(*) FROM records GROUP BY ROLLUP (tool)").mode == "full"


def test_materialization_mode_matches_plan(mlog: ta.Log) -> None:
    """`Materialization.mode` is the plan's mode, or "reducer" for Python reducers."""
    assert mlog.materialize("f", "main", query="SELECT x FROM records").mode == "filter"
    assert mlog.materialize("g", "main", query=AGG_ALL).mode == "aggregate"
    assert mlog.materialize("m", "main", query="SELECT median(x) FROM records").mode == "full"
    assert mlog.materialize("r", "main", reducer=running_count).mode == "reducer"


# --- results of every aggregate ----------------------------------------------------------------


AGG_QUERIES = [
    (AGG_ALL, False),
    ("SELECT tool, avg(lat) FROM records GROUP BY tool", False),
    ("SELECT tool, avg(x) AS ax, sum(lat) AS sl FROM records WHERE ok GROUP BY tool", False),
    ("SELECT tool, arg_max(lat, _offset) AS last_lat FROM records GROUP BY tool", False),
    ("SELECT tool, max_by(lat, _offset) AS last_lat FROM records GROUP BY tool", False),
    ("SELECT tool, ok, count(*) AS n, min(lat) AS lo FROM records GROUP BY tool, ok", False),
    ("SELECT count(*), sum(x), avg(lat), bool_and(ok), max(_offset) FROM records", False),
    ("SELECT count(*) AS n, sum(x) AS s FROM records WHERE x < 0", False),
    ("SELECT tool, count(*) AS n FROM records WHERE x < 0 GROUP BY tool", False),
    ("SELECT tool, count(*) AS n FROM records GROUP BY tool HAVING count(*) > 40", False),
    (
        "SELECT tool, sum(x) AS s, count(*) AS n FROM records GROUP BY tool "
        "HAVING max(lat) > 1 ORDER BY s DESC LIMIT 2",
        True,
    ),
    ("SELECT tool FROM records GROUP BY tool ORDER BY count(*) DESC, tool", True),
    ("SELECT tool, sum(x) + count(*) AS z FROM records GROUP BY tool ORDER BY z, tool", True),
    ("SELECT tool, count(*), sum(x), avg(lat) FROM records GROUP BY tool", False),
    ("SELECT tool FROM records GROUP BY tool", False),
]


@pytest.mark.parametrize(("query", "ordered"), AGG_QUERIES)
def test_aggregate_equals_recompute_over_refreshes(mlog: ta.Log, query: str, ordered: bool) -> None:
    """Every decomposable shape equals a full recompute after each of several refreshes,
    including when new groups appear, on the source and on a branch."""
    main = mlog.stream("main")
    mv = mlog.materialize("v", "main", query=query)
    assert mv.mode == "aggregate"
    mv.refresh()
    assert_view(mv, "main", ordered=ordered)
    fill(main, 37, 100, tools=("b", "d"))
    mv.refresh()
    assert_view(mv, "main", ordered=ordered)
    main.append(make_rows(5, 137, tools=("e",)))  # not flushed: refresh seals it first
    report = mv.refresh()
    assert report.records_processed == 5
    assert_view(mv, "main", ordered=ordered)
    branch = mlog.branch("side", at="main@120")
    fill(branch, 9, 500, tools=("a", "f"))
    assert mv.refresh("side").incremental
    assert_view(mv, "side", ordered=ordered)
    assert_view(mv, "main", ordered=ordered)


def test_unaliased_aggregates_keep_duckdb_names(mlog: ta.Log) -> None:
    """Columns are named as DuckDB names the original query's output."""
    query = (
        "SELECT tool, count(*), sum(x), avg(lat), arg_max(x, _offset) FROM records GROUP BY tool"
    )
    mv = mlog.materialize("v", "main", query=query)
    mv.refresh()
    names = mv.read().column_names
    assert names == recompute(mlog, "main", query).column_names
    assert names == ["tool", "count_star()", "sum(x)", "avg(lat)", "arg_max(x, _offset)"]


def test_avg_with_nulls(root: Path) -> None:
    """avg ignores NULLs, is NULL for a group with only NULLs, across refreshes."""
    with ta.open(root) as log:
        s = log.create_stream("main")
        s.append([{"g": "a", "v": 1.0}, {"g": "a", "v": None}, {"g": "n", "v": None}])
        s.flush()
        mv = log.materialize("v", "main", query="SELECT g, avg(v) AS m FROM records GROUP BY g")
        mv.refresh()
        s.append([{"g": "a", "v": 4.0}, {"g": "n", "v": None}, {"g": "a", "v": None}])
        mv.refresh()
        assert sorted(mv.read().to_pylist(), key=lambda r: r["g"]) == [
            {"g": "a", "m": 2.5},
            {"g": "n", "m": None},
        ]
        assert_view(mv, "main")


def test_arg_max_skips_null_values(root: Path) -> None:
    """arg_max(v, _offset) is the last non-NULL value, even when it came before the state's
    checkpoint and only NULLs followed."""
    with ta.open(root) as log:
        s = log.create_stream("main")
        s.append([{"g": "a", "v": 1}, {"g": "a", "v": 2}, {"g": "n", "v": None}])
        s.flush()
        query = "SELECT g, arg_max(v, _offset) AS last FROM records GROUP BY g"
        mv = log.materialize("v", "main", query=query)
        mv.refresh()
        s.append([{"g": "a", "v": None}, {"g": "n", "v": None}, {"g": "b", "v": None}])
        mv.refresh()
        s.append([{"g": "b", "v": 7}, {"g": "b", "v": None}])
        mv.refresh()
        assert sorted(mv.read().to_pylist(), key=lambda r: r["g"]) == [
            {"g": "a", "last": 2},
            {"g": "b", "last": 7},
            {"g": "n", "last": None},
        ]
        assert_view(mv, "main")


def test_filter_view_appends_only_new_output(mlog: ta.Log) -> None:
    """A filter view holds the query's rows; a refresh reads only the new records."""
    query = "SELECT _offset, tool, x * 2 AS y FROM records WHERE ok AND lat IS NOT NULL"
    mv = mlog.materialize("v", "main", query=query)
    mv.refresh()
    fill(mlog.stream("main"), 30, 100)
    report = mv.refresh()
    assert (report.records_processed, report.from_offset, report.to_offset) == (30, 100, 129)
    assert_view(mv, "main")
    assert mv.read().column_names == ["_offset", "tool", "y"]


def test_full_query_recomputes_and_says_so(mlog: ta.Log) -> None:
    """A non-decomposable query is recomputed from offset 0 on every refresh."""
    query = "SELECT tool, median(lat) AS m, count(DISTINCT x % 7) AS d FROM records GROUP BY tool"
    mv = mlog.materialize("v", "main", query=query)
    first = mv.refresh()
    assert (first.records_processed, first.from_offset, first.to_offset) == (100, 0, 99)
    assert first.incremental is False
    assert first.mode == "full"
    assert first.reused_checkpoint is None
    assert "MEDIAN(lat) is not a decomposable aggregate" in first.reason
    fill(mlog.stream("main"), 10, 100)
    second = mv.refresh()
    assert (second.records_processed, second.from_offset, second.to_offset) == (110, 0, 109)
    assert second.reused_checkpoint is None
    assert_view(mv, "main")


# --- refresh reports ---------------------------------------------------------------------------


def test_refresh_reports(mlog: ta.Log) -> None:
    """Reports say what was read, from and to which offsets, and which checkpoint was reused."""
    main = mlog.stream("main")
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    r1 = mv.refresh()
    g1 = main.generation
    assert r1 == ta.RefreshReport(
        branch="main",
        records_processed=100,
        from_offset=0,
        to_offset=99,
        reused_checkpoint=None,
        incremental=True,
        seconds=r1.seconds,
        mode="aggregate",
        reason=r1.reason,
    )
    assert r1.seconds > 0
    assert "decomposable aggregates grouped by ['tool']" in r1.reason
    r2 = mv.refresh()
    assert (r2.records_processed, r2.from_offset, r2.to_offset) == (0, None, 99)
    assert r2.reused_checkpoint == f"main@99 (generation {g1})"
    assert r2.incremental
    fill(main, 25, 100)
    r3 = mv.refresh(branch="main")
    assert (r3.records_processed, r3.from_offset, r3.to_offset) == (25, 100, 124)
    assert r3.reused_checkpoint == f"main@99 (generation {g1})"
    r4 = mv.refresh()
    assert r4.reused_checkpoint == f"main@124 (generation {main.generation})"
    assert r4.records_processed == 0
    assert_view(mv, "main")


def test_refresh_covers_this_process_unsealed_head(mlog: ta.Log) -> None:
    """Records appended (acknowledged) but not yet sealed by this process are covered."""
    main = mlog.stream("main")
    mv = mlog.materialize(
        "v", "main", query="SELECT tool, count(*) AS n FROM records GROUP BY tool"
    )
    mv.refresh()
    main.append(make_rows(7, 100))
    report = mv.refresh()
    assert (report.records_processed, report.to_offset) == (7, 106)
    assert sum(r["n"] for r in mv.read().to_pylist()) == 107


def test_read_scan_and_branches(mlog: ta.Log) -> None:
    """read() is Arrow, scan() the same rows as a polars LazyFrame; branches() lists where
    the view was refreshed."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    assert mv.branches() == []
    mv.refresh()
    mlog.branch("b/1", at="main@50")
    mv.refresh("b/1")
    frame = mv.scan("b/1")
    assert isinstance(frame, pl.LazyFrame)
    assert frame.collect().to_arrow().to_pylist() == mv.read("b/1").to_pylist()
    assert mv.branches() == ["b/1", "main"]


# --- across branches and merges ----------------------------------------------------------------


def test_branch_reuses_parents_latest_checkpoint_before_fork(mlog: ta.Log) -> None:
    """A branch forked at P@N resumes from P's latest checkpoint at offset <= N and reads
    only the rest of P's prefix plus its own records."""
    main = mlog.stream("main")
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()  # checkpoint main@99
    fill(main, 50, 100)
    mv.refresh()  # main@149
    fill(main, 50, 150)
    mv.refresh()  # main@199
    fill(main, 20, 200)
    assert mv.refresh().to_offset == 219  # a checkpoint after the fork point below
    branch = mlog.branch("feature", at="main@180")
    fill(branch, 12, 1000, tools=("a", "z"))
    report = mv.refresh("feature")
    assert report.reused_checkpoint is not None
    assert report.reused_checkpoint.startswith("main@149 ")
    assert (report.from_offset, report.to_offset) == (150, 192)
    assert report.records_processed == (180 - 149) + 12
    assert_view(mv, "feature")
    assert_view(mv, "main")
    # Its own checkpoint is used next, not the parent's.
    fill(branch, 3, 2000)
    again = mv.refresh("feature")
    assert again.reused_checkpoint is not None
    assert again.reused_checkpoint.startswith("feature@192 ")
    assert again.records_processed == 3
    assert_view(mv, "feature")


def test_branch_at_a_checkpoint_reads_only_its_own_records(mlog: ta.Log) -> None:
    """Forked exactly at a checkpointed offset, the first refresh reads only the branch's
    own records (none at all right after the fork)."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()
    mlog.branch("empty", at="main@99")
    r0 = mv.refresh("empty")
    assert (r0.records_processed, r0.from_offset, r0.to_offset) == (0, None, 99)
    assert r0.reused_checkpoint is not None and r0.reused_checkpoint.startswith("main@99 ")
    assert_view(mv, "empty")
    branch = mlog.branch("own", at="main@99")
    fill(branch, 4, 300)
    r1 = mv.refresh("own")
    assert (r1.records_processed, r1.from_offset, r1.to_offset) == (4, 100, 103)
    assert_view(mv, "own")


def test_branch_before_any_checkpoint_builds_from_scratch(mlog: ta.Log) -> None:
    """A parent checkpoint after the fork point is unusable: the branch builds from 0."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()  # main@99 only
    mlog.branch("early", at="main@40")
    report = mv.refresh("early")
    assert report.reused_checkpoint is None
    assert (report.records_processed, report.from_offset, report.to_offset) == (41, 0, 40)
    assert_view(mv, "early")


def test_grandchild_reuses_grandparents_checkpoint(mlog: ta.Log) -> None:
    """Checkpoints are found up the whole ancestry, not only on the direct parent."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()  # main@99
    fill(mlog.stream("main"), 20, 100)
    child = mlog.branch("child", at="main@110")
    fill(child, 5, 500)
    grandchild = mlog.branch("grandchild", at="child@113")
    fill(grandchild, 2, 900)
    report = mv.refresh("grandchild")
    assert report.reused_checkpoint is not None
    assert report.reused_checkpoint.startswith("main@99 ")
    assert report.records_processed == 11 + 3 + 2
    assert (report.from_offset, report.to_offset) == (100, 115)
    assert_view(mv, "grandchild")


@pytest.mark.parametrize("policy", ["concat", "interleave"])
def test_merge_starts_from_its_base_checkpoint(mlog: ta.Log, policy: str) -> None:
    """A merge resumes from the base's latest checkpoint and reads only what follows."""
    main = mlog.stream("main")
    query = (
        "SELECT tool, count(*) AS n, sum(x) AS s, arg_max(x, _offset) AS last FROM records "
        "GROUP BY tool"
    )
    mv = mlog.materialize("v", "main", query=query)
    mv.refresh()  # main@99
    fill(main, 30, 100)
    mv.refresh()  # main@129, after the base below
    left = mlog.branch("left", at="main@110")
    fill(left, 6, 1000)
    right = mlog.branch("right", at="main@120")
    fill(right, 4, 2000, tools=("r",))
    mv.refresh("left")
    merged = mlog.merge("merged", parents=["left", "right"], policy=policy)
    last = merged.next_offset - 1
    report = mv.refresh("merged")
    assert report.reused_checkpoint is not None
    assert report.reused_checkpoint.startswith("main@99 ")
    assert (report.from_offset, report.to_offset) == (100, last)
    assert report.records_processed == last - 99
    assert_view(mv, "merged")
    fill(merged, 3, 5000)
    again = mv.refresh("merged")
    assert again.records_processed == 3
    assert again.reused_checkpoint is not None
    assert again.reused_checkpoint.startswith(f"merged@{last} ")
    assert_view(mv, "merged")


def test_filter_view_on_merge(mlog: ta.Log) -> None:
    """A filter view over a merge (with provenance columns) equals a recompute."""
    mv = mlog.materialize("v", "main", query="SELECT _offset, tool, x FROM records WHERE x % 3 = 0")
    mv.refresh()
    fill(mlog.branch("l", at="main@99"), 5, 100)
    fill(mlog.branch("r", at="main@99"), 5, 200)
    mlog.merge("m", parents=["l", "r"], policy="concat")
    report = mv.refresh("m")
    assert report.records_processed == 10
    assert_view(mv, "m")


# --- definitions -------------------------------------------------------------------------------


def test_definition_is_persisted(mlog: ta.Log, root: Path) -> None:
    """Another Log on the same folder opens the definition by name and resumes from the
    checkpoints the first one made."""
    mv = mlog.materialize("per_tool", "main", query=AGG_ALL)
    mv.refresh()
    with ta.open(root) as other:
        again = other.materialization("per_tool")
        assert again.definition == mv.definition
        assert again.definition_hash == mv.definition_hash
        assert again.mode == "aggregate"
        assert again.source == "main"
        assert again.read().to_pylist() == mv.read().to_pylist()
        report = again.refresh()
        assert report.records_processed == 0
        assert report.reused_checkpoint is not None
        assert report.reused_checkpoint.startswith("main@99 ")
        listing = other.materializations().to_pylist()
    assert [(r["name"], r["source"], r["kind"], r["mode"], r["query"]) for r in listing] == [
        ("per_tool", "main", "sql", "aggregate", AGG_ALL)
    ]
    assert listing[0]["branches"] == ["main"]
    assert listing[0]["definition_hash"] == mv.definition_hash


def test_changed_definition_rebuilds_and_says_so(mlog: ta.Log) -> None:
    """Redefining a view under the same name makes old checkpoints unusable."""
    old = mlog.materialize(
        "v", "main", query="SELECT tool, count(*) AS n FROM records GROUP BY tool"
    )
    old.refresh()
    new = mlog.materialize("v", "main", query="SELECT tool, sum(x) AS n FROM records GROUP BY tool")
    assert new.definition_hash != old.definition_hash
    report = new.refresh()
    assert report.reused_checkpoint is None
    assert (report.records_processed, report.from_offset, report.to_offset) == (100, 0, 99)
    assert "definition changed" in report.reason
    assert_view(new, "main")
    assert mlog.materialization("v").definition["query"] == new.definition["query"]


def test_version_bump_rebuilds(mlog: ta.Log) -> None:
    """Bumping `version` (e.g. for a changed reducer) forces a rebuild."""
    mlog.materialize("r", "main", reducer=running_count).refresh()
    bumped = mlog.materialize("r", "main", reducer=running_count, version="2")
    report = bumped.refresh()
    assert report.reused_checkpoint is None
    assert report.records_processed == 100
    assert "definition changed" in report.reason


# --- integrity ---------------------------------------------------------------------------------


def test_checkpoint_with_wrong_root_is_not_reused(mlog: ta.Log, root: Path) -> None:
    """A checkpoint whose root no longer matches the source commit is skipped, with the reason
    in the report; the view is rebuilt from an earlier valid checkpoint (or from scratch)."""
    main = mlog.stream("main")
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()  # main@99
    fill(main, 50, 100)
    mv.refresh()  # main@149
    _, latest = checkpoint_files(root, "v", "main")
    rewrite_json(latest, root="0" * 64)
    fill(main, 5, 150)
    report = mv.refresh()
    assert "main@149" in report.reason and "no longer verifies" in report.reason
    assert "0" * 64 in report.reason
    assert report.reused_checkpoint is not None
    assert report.reused_checkpoint.startswith("main@99 ")
    assert (report.records_processed, report.from_offset, report.to_offset) == (55, 100, 154)
    assert_view(mv, "main")
    for cp in checkpoint_files(root, "v", "main"):
        rewrite_json(cp, root="f" * 64)
    fill(main, 5, 155)
    scratch = mv.refresh()
    assert scratch.reused_checkpoint is None
    assert (scratch.records_processed, scratch.from_offset) == (160, 0)
    assert_view(mv, "main")


def test_tampered_checkpoint_blocks_reuse_on_branches(mlog: ta.Log, root: Path) -> None:
    """A branch does not resume from an ancestor checkpoint that no longer verifies."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()
    (cp,) = checkpoint_files(root, "v", "main")
    rewrite_json(cp, root="ab" * 32)
    mlog.branch("b", at="main@99")
    report = mv.refresh("b")
    assert report.reused_checkpoint is None
    assert report.records_processed == 100
    assert "no longer verifies" in report.reason
    assert_view(mv, "b")


def test_rebuild_replaces_invalid_checkpoint(mlog: ta.Log, root: Path) -> None:
    """After a rebuild caused by an invalid checkpoint, the next refresh resumes from the
    rebuilt state instead of rebuilding again."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()
    (cp,) = checkpoint_files(root, "v", "main")
    rewrite_json(cp, root="0" * 64)
    assert mv.refresh().records_processed == 100  # the rebuild
    report = mv.refresh()
    assert report.records_processed == 0
    assert "no longer verifies" not in report.reason


def test_tampered_state_file_raises_on_read(mlog: ta.Log, root: Path) -> None:
    """A state file whose BLAKE3 differs from its checkpoint's raises IntegrityError on read,
    naming the file and both hashes; a refresh never serves a wrong view from it."""
    main = mlog.stream("main")
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()
    (cp,) = checkpoint_files(root, "v", "main")
    data = json.loads(cp.read_text())
    flip_byte(root / data["state_path"])
    with pytest.raises(ta.IntegrityError) as info:
        mv.read()
    message = str(info.value)
    assert data["state_path"] in message
    assert data["state_blake3"] in message and "found" in message
    fill(main, 5, 100)
    try:
        mv.refresh()
    except ta.IntegrityError:
        pass  # refusing to resume is fine; resuming from the corrupt state is not
    else:
        assert_view(mv, "main")


def test_checkpoint_records_its_source_position(mlog: ta.Log, root: Path) -> None:
    """A checkpoint holds the §9 fields and points at a state file with its BLAKE3."""
    import blake3

    mv = mlog.materialize("v", "main", query=AGG_ALL)
    mv.refresh()
    (cp,) = checkpoint_files(root, "v", "main")
    data = json.loads(cp.read_text())
    main = mlog.stream("main")
    assert data["materialization"] == "v"
    assert data["definition_hash"] == mv.definition_hash
    assert (data["stream"], data["offset"]) == ("main", 99)
    assert (data["generation"], data["root"]) == (main.generation, main.root)
    state = (root / data["state_path"]).read_bytes()
    assert blake3.blake3(state).hexdigest() == data["state_blake3"]
    assert data["created_at"]


# --- reducers and keyed filters ----------------------------------------------------------------


def test_reducer_running_count(mlog: ta.Log, root: Path) -> None:
    """A Python reducer folds new batches into its state, resumes from checkpoints (also on
    branches), and must be passed again to refresh when reopened."""
    main = mlog.stream("main")
    mv = mlog.materialize("per_tool", "main", reducer=running_count)
    r1 = mv.refresh()
    assert (r1.mode, r1.records_processed, r1.incremental) == ("reducer", 100, True)
    assert counts(mv.read()) == {"a": 34, "b": 33, "c": 33}
    fill(main, 6, 100, tools=("a", "z"))
    r2 = mv.refresh()
    assert r2.records_processed == 6
    assert r2.reused_checkpoint is not None and r2.reused_checkpoint.startswith("main@99 ")
    assert counts(mv.read()) == {"a": 37, "b": 33, "c": 33, "z": 3}
    branch = mlog.branch("b", at="main@102")
    fill(branch, 2, 900, tools=("q",))
    rb = mv.refresh("b")
    assert rb.records_processed == 5
    assert counts(mv.read("b")) == {"a": 36, "b": 33, "c": 33, "z": 1, "q": 2}
    with ta.open(root) as other:
        reopened = other.materialization("per_tool")
        assert reopened.mode == "reducer"
        assert counts(reopened.read()) == {"a": 37, "b": 33, "c": 33, "z": 3}
        fill(main, 1, 200, tools=("z",))
        with pytest.raises(ta.InvalidInputError, match=r"reducer="):
            reopened.refresh()
        with_fn = other.materialization("per_tool", reducer=running_count)
        report = with_fn.refresh()
        assert report.records_processed == 1
        assert counts(with_fn.read())["z"] == 4


def test_reducer_must_return_a_table(mlog: ta.Log) -> None:
    """A reducer returning something that is not Arrow data raises InvalidInputError."""

    def bad(state: pa.Table | None, batch: pa.Table) -> Any:
        return {"n": batch.num_rows}

    mv = mlog.materialize("bad", "main", reducer=bad)
    with pytest.raises(ta.InvalidInputError, match="must return an Arrow table"):
        mv.refresh()


def test_filter_with_key_keeps_last_row_per_key(mlog: ta.Log) -> None:
    """`key=` turns a filter view into an upserting one: the last row per key by _offset."""
    main = mlog.stream("main")
    query = "SELECT tool, x, _offset FROM records WHERE ok"
    mv = mlog.materialize("latest", "main", query=query, key=["tool"])
    mv.refresh()
    assert sorted(mv.read().to_pylist(), key=lambda r: r["tool"]) == [
        {"tool": "a", "x": 99, "_offset": 99},
        {"tool": "b", "x": 97, "_offset": 97},
        {"tool": "c", "x": 98, "_offset": 98},
    ]
    fill(main, 4, 100, tools=("b", "d"))  # b at 100 (not ok) and 102, d at 101 and 103
    mv.refresh()
    expected = recompute(
        mlog,
        "main",
        f"SELECT * FROM ({query}) QUALIFY row_number() OVER "
        "(PARTITION BY tool ORDER BY _offset DESC) = 1",
    )
    assert_same(mv.read(), expected)
    assert {r["tool"]: r["x"] for r in mv.read().to_pylist()} == {
        "a": 99,
        "b": 102,
        "c": 98,
        "d": 103,
    }


# --- filter views: state as part files ---------------------------------------------------------

FILTER = "SELECT _offset, tool, x FROM records WHERE NOT ok"
FIXTURES = Path(__file__).parent / "fixtures"


def latest_checkpoint(root: Path, view: str, branch: str) -> dict[str, Any]:
    """The JSON of the checkpoint with the highest offset of `view` on `branch`."""
    data: dict[str, Any] = json.loads(checkpoint_files(root, view, branch)[-1].read_text())
    return data


def part_files(root: Path, view: str) -> set[Path]:
    """Every Parquet file under the view's `state/` folder."""
    return set((root / "materializations" / view / "state").rglob("*.parquet"))


def test_filter_refresh_writes_one_part_and_keeps_the_others(mlog: ta.Log, root: Path) -> None:
    """A filter view's refresh writes one new part (the new records' output) and a checkpoint
    listing every part with its BLAKE3: the parts before it are referenced, not rewritten."""
    import blake3

    mv = mlog.materialize("v", "main", query=FILTER)
    mv.refresh()
    first = latest_checkpoint(root, "v", "main")
    assert [p["rows"] for p in first["parts"]] == [20]
    before = {p: p.read_bytes() for p in part_files(root, "v")}
    for k in range(3):
        fill(mlog.stream("main"), 10, 100 + 10 * k)
        report = mv.refresh()
        assert report.records_processed == 10
        assert_view(mv, "main", ordered=True)
    data = latest_checkpoint(root, "v", "main")
    assert data["parts"][0] == first["parts"][0]
    assert [p["rows"] for p in data["parts"]] == [20, 2, 2, 2]
    assert data["state_path"] == ""
    for part in data["parts"]:
        raw = (root / part["path"]).read_bytes()
        assert (len(raw), blake3.blake3(raw).hexdigest()) == (part["bytes"], part["blake3"])
    assert all(p.read_bytes() == raw for p, raw in before.items())  # nothing rewritten
    assert len(part_files(root, "v")) == 4


@pytest.mark.parametrize("key", [None, ["tool"]])
def test_small_parts_merge_and_the_view_stays_exact(root: Path, key: list[str] | None) -> None:
    """With a small merge policy, the last parts are merged (cascading through tiers) and the
    view still equals a recompute after every refresh, on the stream and on a branch."""
    policy = ta.materialize.PartPolicy(fanin=3, base_rows=4, max_tier=3)
    query = "SELECT tool, x, _offset FROM records WHERE ok" if key else FILTER
    with ta.open(root) as log:
        main = log.create_stream("main")
        fill(main, 10)
        mv = log.materialize("v", "main", query=query, key=key)
        mv.part_policy = policy
        counts_seen = []
        for k in range(15):
            fill(main, 7, 10 + 7 * k, tools=("a", "b", "c", f"t{k % 4}"))
            mv.refresh()
            counts_seen.append(len(latest_checkpoint(root, "v", "main")["parts"]))
            if key:
                assert_same(mv.read(), _expected(log, "latest", log.stream("main").read()))
            else:
                assert_view(mv, "main", ordered=True)
        assert max(counts_seen) <= 3 * 3  # fanin - 1 parts per tier, plus the tier above
        assert min(counts_seen[5:]) < max(counts_seen)  # merges happened
        side = log.branch("side", at=f"main@{main.next_offset - 5}")
        fill(side, 9, 5000)
        report = mv.refresh("side")
        # resumed from main's checkpoint one append (7 records) before main's head: 3 + 9
        assert report.records_processed == 3 + 9
        want = log.stream("side").read()
        if key:
            assert_same(mv.read("side"), _expected(log, "latest", want))
        else:
            assert_view(mv, "side", ordered=True)


def test_a_branch_references_its_parents_parts_and_gc_keeps_them(mlog: ta.Log, root: Path) -> None:
    """A branch's first refresh lists the parent's parts by reference (one new part of its
    own); gc keeps every listed part and removes a part no checkpoint lists (a refresh
    interrupted between the part and the checkpoint)."""
    mv = mlog.materialize("v", "main", query=FILTER)
    mv.refresh()
    fill(mlog.stream("main"), 10, 100)
    mv.refresh()
    parent = latest_checkpoint(root, "v", "main")["parts"]
    branch = mlog.branch("b", at="main@109")
    fill(branch, 10, 500)
    assert mv.refresh("b").records_processed == 10
    own = latest_checkpoint(root, "v", "b")["parts"]
    assert own[:2] == parent and len(own) == 3
    assert own[2]["path"].startswith(f"materializations/v/state/{encode_stream_name('b')}/")
    orphan = root / "materializations/v/state/main/00000000000000099999-0123456789abcdef.parquet"
    orphan.write_bytes((root / own[0]["path"]).read_bytes())
    report = mlog.gc(min_age=0)
    assert [p for p in report.removed if "materializations" in p] == [
        "materializations/v/state/main/00000000000000099999-0123456789abcdef.parquet"
    ]
    assert not orphan.exists()
    assert_view(mv, "b", ordered=True)
    assert_view(mv, "main", ordered=True)


def test_a_damaged_part_fails_the_read_and_the_refresh_rebuilds(mlog: ta.Log, root: Path) -> None:
    """A part whose bytes changed raises IntegrityError naming it and both hashes on read;
    the next refresh notices it (BLAKE3 of the changed file) and rebuilds from scratch."""
    mv = mlog.materialize("v", "main", query=FILTER)
    mv.refresh()
    fill(mlog.stream("main"), 10, 100)
    mv.refresh()
    part = latest_checkpoint(root, "v", "main")["parts"][0]
    flip_byte(root / part["path"])
    with pytest.raises(ta.IntegrityError) as info:
        mv.read()
    assert part["path"] in str(info.value) and part["blake3"] in str(info.value)
    fill(mlog.stream("main"), 5, 110)
    report = mv.refresh()
    assert report.reused_checkpoint is None and report.records_processed == 115
    assert "unusable" in report.reason and "rebuilt" in report.reason
    assert_view(mv, "main", ordered=True)


def test_an_edited_parts_list_is_not_resumed_from(mlog: ta.Log, root: Path) -> None:
    """The parts list is covered by the checkpoint's hash: dropping a part is an edit."""
    mv = mlog.materialize("v", "main", query=FILTER)
    mv.refresh()
    fill(mlog.stream("main"), 10, 100)
    mv.refresh()
    latest = checkpoint_files(root, "v", "main")[-1]
    data = json.loads(latest.read_text())
    rewrite_json(latest, parts=data["parts"][1:])
    with pytest.raises(ta.IntegrityError, match="was edited"):
        mv.read()
    fill(mlog.stream("main"), 5, 110)
    report = mv.refresh()
    assert report.reused_checkpoint is not None and report.reused_checkpoint.startswith("main@99 ")
    assert "was edited" in report.reason
    assert_view(mv, "main", ordered=True)


def test_filter_views_written_with_one_state_file_still_read_and_refresh(tmp_path: Path) -> None:
    """`fixtures/mv_filter_v1` (plain and keyed filter views, one state file per checkpoint,
    on a stream and a branch) reads the same; a refresh resumes from the old checkpoint, reads
    only the new records and lists the old state file as its first part."""
    root = tmp_path / "log"
    shutil.copytree(FIXTURES / "mv_filter_v1", root)
    with ta.open(root) as log:
        plain, keyed = log.materialization("fails"), log.materialization("latest")
        latest = "SELECT tool, x, _offset FROM records WHERE ok"
        for branch in ("main", "side"):
            assert "parts" not in latest_checkpoint(root, "fails", branch)
            assert_view(plain, branch)
            assert_same(keyed.read(branch), _expected_keyed(log, branch, latest))
        main = log.stream("main")
        main.append([{"tool": "abe"[i % 3], "x": i, "ok": i % 4 != 0} for i in range(40, 52)])
        main.flush()
        for mv in (plain, keyed):
            old = latest_checkpoint(root, mv.name, "main")["state_path"]
            report = mv.refresh()
            assert report.records_processed == 12
            assert report.reused_checkpoint is not None
            assert report.reused_checkpoint.startswith("main@39 ")
            assert latest_checkpoint(root, mv.name, "main")["parts"][0]["path"] == old
        assert_view(plain, "main")
        assert_same(keyed.read(), _expected_keyed(log, "main", latest))
        assert log.verify("main", deep=True).ok


def _expected_keyed(log: ta.Log, branch: str, query: str) -> pa.Table:
    return recompute(
        log,
        branch,
        f"SELECT * FROM ({query}) QUALIFY row_number() OVER "
        "(PARTITION BY tool ORDER BY _offset DESC) = 1",
    )


# --- errors ------------------------------------------------------------------------------------


def test_unknown_source_stream(mlog: ta.Log) -> None:
    """Defining a view of a stream that does not exist raises StreamNotFoundError."""
    with pytest.raises(ta.StreamNotFoundError, match=r"'mian'.*did you mean 'main'"):
        mlog.materialize("v", "mian", query="SELECT * FROM records")
    assert mlog.materializations().num_rows == 0


@pytest.mark.parametrize("both", [True, False])
def test_query_xor_reducer(mlog: ta.Log, both: bool) -> None:
    """Exactly one of query= and reducer= is required."""
    kwargs: dict[str, Any] = (
        {"query": "SELECT * FROM records", "reducer": running_count} if both else {}
    )
    with pytest.raises(ta.InvalidInputError, match="exactly one of query="):
        mlog.materialize("v", "main", **kwargs)
    assert mlog.materializations().num_rows == 0


def test_sql_that_does_not_bind(mlog: ta.Log) -> None:
    """An unknown column raises InvalidInputError carrying DuckDB's binder message."""
    with pytest.raises(ta.InvalidInputError) as info:
        mlog.materialize("v", "main", query="SELECT tool, nope FROM records")
    message = str(info.value)
    assert "does not run on 'main'" in message
    assert re.search(r'Binder Error: Referenced column "nope" not found', message)
    assert isinstance(info.value.__cause__, duckdb.Error)
    assert mlog.materializations().num_rows == 0


def test_key_requires_key_and_offset_columns(mlog: ta.Log) -> None:
    """`key=` needs the query to output the key columns and _offset."""
    with pytest.raises(ta.InvalidInputError, match="_offset"):
        mlog.materialize("v", "main", query="SELECT tool, x FROM records", key=["tool"])


def test_read_before_refresh(mlog: ta.Log) -> None:
    """Reading a view never refreshed on a branch raises NotFoundError saying what to do."""
    mv = mlog.materialize("v", "main", query=AGG_ALL)
    with pytest.raises(ta.NotFoundError, match=r"refresh\(branch='main'\)"):
        mv.read()
    mv.refresh()
    mlog.branch("b", at="main@10")
    with pytest.raises(ta.NotFoundError, match="has not been refreshed on 'b'"):
        mv.read("b")


def test_open_unknown_materialization(mlog: ta.Log) -> None:
    """Opening a view that was never defined raises NotFoundError."""
    with pytest.raises(ta.NotFoundError, match="no materialization 'ghost'"):
        mlog.materialization("ghost")


# --- library bugs, each with a minimal repro -------------------------------------------------


def test_define_while_records_are_unsealed(root: Path) -> None:
    """A view can be defined right after the first append, before any seal."""
    with ta.open(root) as log:
        s = log.create_stream("main")
        s.append({"tool": "a", "x": 1})
        mv = log.materialize("v", "main", query="SELECT tool FROM records")
        assert mv.refresh().records_processed == 1


def test_select_star_over_merge_keeps_query_column_order(mlog: ta.Log) -> None:
    """`SELECT *` over a merge resumed from the base's checkpoint has the query's columns."""
    mv = mlog.materialize("v", "main", query="SELECT * FROM records WHERE ok")
    mv.refresh()
    fill(mlog.branch("l", at="main@99"), 5, 100)
    fill(mlog.branch("r", at="main@99"), 5, 200)
    mlog.merge("m", parents=["l", "r"], policy="concat")
    mv.refresh("m")
    want = recompute(mlog, "m", "SELECT * FROM records WHERE ok")
    assert mv.read("m").column_names == want.column_names


def test_aggregate_with_filter_clause(mlog: ta.Log) -> None:
    """count(*) FILTER (WHERE ...) is either maintained correctly or recomputed."""
    query = "SELECT tool, count(*) FILTER (WHERE tool = 'a') AS n FROM records GROUP BY tool"
    mv = mlog.materialize("v", "main", query=query)
    mv.refresh()
    assert_view(mv, "main")


def test_arg_max_top_n(mlog: ta.Log) -> None:
    """arg_max(x, _offset, 2) keeps the last two values per group across refreshes."""
    query = "SELECT tool, arg_max(x, _offset, 2) AS top FROM records GROUP BY tool"
    mv = mlog.materialize("v", "main", query=query)
    mv.refresh()
    fill(mlog.stream("main"), 1, 100, tools=("a",))
    mv.refresh()
    assert_view(mv, "main")


@pytest.mark.parametrize("agg", ["fsum(lat)", "product(x % 3 + 1)", "favg(lat)"])
def test_unknown_aggregate_without_group_by(mlog: ta.Log, agg: str) -> None:
    """An aggregate over all records is never maintained as a filter."""
    mv = mlog.materialize("v", "main", query=f"SELECT {agg} AS v FROM records")
    mv.refresh()
    fill(mlog.stream("main"), 10, 100)
    mv.refresh()
    assert_view(mv, "main")
    assert mv.mode != "filter"


def test_repeated_group_by_column(mlog: ta.Log) -> None:
    """GROUP BY tool, tool behaves like GROUP BY tool."""
    mv = mlog.materialize(
        "v", "main", query="SELECT tool, count(*) FROM records GROUP BY tool, tool"
    )
    mv.refresh()
    fill(mlog.stream("main"), 3, 100)
    mv.refresh()
    assert_view(mv, "main")


# --- crash safety ------------------------------------------------------------------------------

CHILD = Path(__file__).with_name("mv_child.py")
#: How long the parent waits for any one line from a child before declaring it stuck.
EVENT_TIMEOUT = 60.0


def _load_child() -> ModuleType:
    spec = importlib.util.spec_from_file_location("transit_mv_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mv_child = _load_child()


class RefreshChild:
    """A child process refreshing the crash test's views until it is SIGKILLed."""

    def __init__(self, root: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[str] = []
        self.eof = False
        self.cond = threading.Condition()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode())
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(self, word: str) -> None:
        """Block until the child has written a line starting with `word`."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        with self.cond:
            while not any(line.startswith(word) for line in self.lines):
                if self.eof or any(line.startswith("ERROR") for line in self.lines):
                    raise AssertionError(
                        f"child died before {word}: {self.lines[-3:]}\n{self.err()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"child never wrote {word}")
                self.cond.wait(left)

    def go(self) -> None:
        """Let the child open the log and start refreshing."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL the (still running) child and return the complete lines it wrote."""
        alive = self.proc.poll() is None
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.close()
        assert alive, f"the child exited by itself: {self.lines[-3:]}\n{self.err()}"
        assert self.proc.returncode == -signal.SIGKILL
        return [line for line in self.lines if line.endswith("\n")]

    def close(self) -> None:
        """Kill the child if needed and release its pipes."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.pump.join()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def err(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _crash_rows(rng: random.Random, n: int, start: int) -> pa.Table:
    return pa.table(
        {
            "tool": [rng.choice(("a", "b", "c", "d", "e")) for _ in range(n)],
            "x": list(range(start, start + n)),
            "lat": [None if rng.random() < 0.1 else rng.random() * 100 for _ in range(n)],
            "ok": [rng.random() > 0.2 for _ in range(n)],
        }
    )


def _expected(log: ta.Log, name: str, records: pa.Table) -> pa.Table:
    """The crash-test view `name` computed from scratch over `records`."""
    if name == mv_child.REDUCER_VIEW:
        counted = mv_child.tool_counts(records)
        return pa.Table.from_pylist(
            [{"tool": t, "n": counted[t]} for t in sorted(counted)], schema=mv_child.COUNT_SCHEMA
        )
    query, key = mv_child.SQL_VIEWS[name]
    if key:
        cols = ", ".join(key)
        query = (
            f"SELECT * FROM ({query}) QUALIFY row_number() OVER "
            f"(PARTITION BY {cols} ORDER BY _offset DESC) = 1"
        )
    con = duckdb.connect()
    try:
        con.register("records", records)
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def _check_checkpoints(
    log: ta.Log, root: Path, views: dict[str, ta.Materialization], context: str
) -> int:
    """Every checkpoint file is complete and verifies (state BLAKE3 and source root), and the
    newest one per view and branch holds exactly the view of the replay through its offset.
    Returns the number of checkpoints checked."""
    import blake3

    checked = 0
    for name, mv in views.items():
        for branch in mv_child.BRANCHES:
            files = checkpoint_files(root, name, branch)
            newest: dict[str, Any] | None = None
            for path in files:
                data = json.loads(path.read_text())
                stored = [(p["path"], p["blake3"]) for p in data.get("parts") or []]
                if "parts" not in data:
                    stored = [(data["state_path"], data["state_blake3"])]
                for file, digest in stored:
                    state = (root / file).read_bytes()
                    assert blake3.blake3(state).hexdigest() == digest, (context, path, file)
                source = mv.log.stream(data["stream"]).at(generation=data["generation"])
                assert source.root == data["root"], (context, path)
                assert data["definition_hash"] == mv.definition_hash, (context, path)
                if newest is None or data["offset"] > newest["offset"]:
                    newest = data
                checked += 1
            if newest is None:
                continue
            prefix = log.stream(branch).read(end=newest["offset"] + 1)
            assert_same(mv.read(branch), _expected(log, name, prefix))
    return checked


@pytest.mark.crash
def test_refresh_survives_sigkill(tmp_path: Path) -> None:
    """A child refreshes every view on two branches in a loop and is SIGKILLed at random
    moments. After each kill every checkpoint still verifies and the newest one holds the right
    view; the parent's next refresh resumes from a checkpoint and equals a full recompute."""
    seed = int(os.environ.get("TRANSIT_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    kills = int(os.environ.get("TRANSIT_MV_CRASH_KILLS", "12"))
    rng = random.Random(seed)
    root = tmp_path / "log"
    in_flight = completed = checked = 0
    with ta.open(root) as log:
        main = log.create_stream("main")
        main.append(_crash_rows(rng, 20_000, 0))
        main.flush()
        side = log.branch("side", at="main@15000")
        side.append(_crash_rows(rng, 5_000, 1_000_000))
        side.flush()
        views = mv_child.define_views(log)
        child = RefreshChild(root, tmp_path / "child-0.err")
        try:
            for k in range(kills):
                context = f"kill {k} (seed {seed})"
                main.append(_crash_rows(rng, rng.randint(1_000, 20_000), 100_000 * (k + 1)))
                main.flush()
                side.append(_crash_rows(rng, rng.randint(100, 5_000), 1_000_000 * (k + 2)))
                side.flush()
                child.wait_for("READY")
                child.go()
                child.wait_for("START")
                time.sleep(rng.uniform(0.0, 0.7))
                lines = child.kill()
                child = RefreshChild(root, tmp_path / f"child-{k + 1}.err")  # imports meanwhile
                begun = [line for line in lines if line.startswith("BEGIN")]
                done = [line for line in lines if line.startswith("DONE")]
                in_flight += len(begun) > len(done)
                completed += len(done)
                checked += _check_checkpoints(log, root, views, context)
                for name, mv in views.items():
                    for branch in mv_child.BRANCHES:
                        report = mv.refresh(branch)
                        last = log.stream(branch).next_offset - 1
                        assert report.to_offset == last, (context, report)
                        expected = _expected(log, name, log.stream(branch).read())
                        assert_same(mv.read(branch), expected)
        finally:
            child.close()
    assert completed > 0, f"no child ever finished a refresh (seed {seed})"
    assert in_flight >= kills // 2, f"only {in_flight} kills landed inside a refresh (seed {seed})"
    assert checked > 0


def test_views_are_duckdb_tables_per_branch(tmp_path: Path) -> None:
    """`Log.duckdb()` exposes each materialization as `mv_<name>`, one set of rows per
    refreshed branch, labelled by `_branch`."""
    with ta.open(tmp_path / "log") as log:
        main = log.create_stream("main")
        main.append([{"tool": t, "x": i} for i, t in enumerate("aabba")])
        mv = log.materialize(
            "per_tool", "main", query=("SELECT tool, count(*) AS n FROM records GROUP BY tool")
        )
        mv.refresh()
        log.branch("side", at="main@1").append({"tool": "c", "x": 9})
        mv.refresh(branch="side")
        rows = (
            log.duckdb()
            .sql("SELECT _branch, tool, n FROM mv_per_tool ORDER BY _branch, tool")
            .fetchall()
        )
    assert rows == [("main", "a", 3), ("main", "b", 2), ("side", "a", 2), ("side", "c", 1)]
