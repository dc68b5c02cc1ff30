"""One suite, two targets: every test runs on `transit_arrow.open(path)` and on `connect()` to a
`transit serve` subprocess, and must see the same results (the README tour and its errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from flight_helpers import Target

import transit_arrow as ta


def table_of(result: Any) -> pa.Table:
    """`log.sql` returns a DuckDB relation locally and a table remotely."""
    return result if isinstance(result, pa.Table) else result.to_arrow_table()


def user_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows without `_stream`/`_timestamp` (which differ between targets by name or time)."""
    drop = [c for c in ("_stream", "_timestamp") if c in table.column_names]
    return table.drop_columns(drop).to_pylist()


def test_tour_append_and_read(target: Target) -> None:
    log = target.log
    runs = log.create_stream(target.name("runs"))
    ack = runs.append({"task": "t1", "step": 0, "score": 0.4})
    assert tuple(ack) == (0, 0, "local")
    assert (ack.first_offset, ack.last_offset, ack.durability, ack.records) == (0, 0, "local", 1)
    assert tuple(runs.append([{"task": "t1", "step": 1, "score": 0.7}])) == (1, 1, "local")
    more = pa.table({"task": ["t2", "t2"], "step": [0, 1], "score": [0.1, 0.2]})
    assert tuple(runs.append(more, durability="memory")) == (2, 3, "memory")
    assert (
        runs.append(pl.DataFrame({"task": ["t3"], "step": [5], "score": [1.0]})).first_offset == 4
    )
    assert runs.append(pd.DataFrame({"task": ["t4"], "step": [6], "score": [0.5]})).last_offset == 5

    table = runs.read()
    assert table.column_names == [
        "_stream", "_offset", "_timestamp", "_headers", "task", "step", "score"
    ]  # fmt: skip
    assert table.column("_offset").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert set(table.column("_stream").to_pylist()) == {target.name("runs")}
    assert table.column("score").to_pylist() == [0.4, 0.7, 0.1, 0.2, 1.0, 0.5]
    assert runs.read(start=2, end=4, columns=["_offset", "task"]).to_pylist() == [
        {"_offset": 2, "task": "t2"},
        {"_offset": 3, "task": "t2"},
    ]
    assert runs.read(start=100).num_rows == 0
    reader = runs.reader(start=1)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.read_all().column("_offset").to_pylist() == [1, 2, 3, 4, 5]
    assert runs.scan().select(pl.col("score").sum()).collect().item() == pytest.approx(2.9)
    assert runs.next_offset == 6
    assert runs.schema.names == table.column_names

    assert runs.commits().num_rows >= 1
    streams = log.streams()
    row = next(r for r in streams.to_pylist() if r["name"] == target.name("runs"))
    assert (row["kind"], row["next_offset"]) == ("root", 6)


def test_python_records_take_the_stream_types(target: Target) -> None:
    """Dicts convert with the stream's schema remotely as locally (an int into a float)."""
    s = target.log.create_stream(target.name("typed"))
    s.append({"x": 1.5, "tags": ["a"], "meta": {"k": 1}})
    s.append({"x": 2})  # flat columns only: converted with the stream's types
    s.append([{"x": 3.0, "extra": "new"}, {"x": None}])
    s.append({"payload": "t", "_timestamp": "2024-05-01T12:00:00Z", "_headers": {"h": "v"}})
    s.append("plain text")
    t = s.read()
    assert t.schema.field("x").type == pa.float64()
    assert t.column("x").to_pylist() == [1.5, 2.0, 3.0, None, None, None]
    assert t.column("extra").to_pylist() == [None, None, "new", None, None, None]
    assert t.column("_headers").to_pylist()[4] == [("h", "v")]
    assert t.column("_timestamp")[4].as_py() == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert t.column("payload").to_pylist()[4:] == ["t", "plain text"]
    raw = target.log.create_stream(target.name("bytes"))
    raw.append(b"\x00\x01")
    assert raw.read().column("payload").to_pylist() == [b"\x00\x01"]


def test_branches_merges_and_lineage(target: Target) -> None:
    log, n = target.log, target.name
    runs = log.create_stream(n("runs"))
    runs.append([{"step": i} for i in range(5)])
    retry = log.branch(n("runs/retry"), at=f"{n('runs')}@2", actor="agent", reason="timeout")
    assert retry.append({"step": 42}).first_offset == 3
    assert retry.read().column("_stream").to_pylist() == [n("runs")] * 3 + [n("runs/retry")]
    deeper = retry.branch(n("runs/retry/critique"), at=3)
    assert deeper.read().column("step").to_pylist() == [0, 1, 2, 42]
    runs.append({"step": 5})
    best = log.merge(n("best"), [n("runs"), n("runs/retry")], policy="concat", reason="both")
    replay = best.read()
    assert replay.column("step").to_pylist() == [0, 1, 2, 3, 4, 5, 42]
    assert replay.column("_origin_stream").to_pylist()[-1] == n("runs/retry")

    lineage = {r["name"]: r for r in log.lineage().to_pylist()}
    assert lineage[n("runs/retry")]["parent_stream"] == n("runs")
    assert lineage[n("runs/retry")]["parent_offset"] == 2
    assert lineage[n("runs/retry")]["actor"] == "agent"
    assert lineage[n("best")]["policy"] == "concat"
    ancestry = retry.ancestry().to_pylist()
    assert ancestry[0]["stream"] == n("runs")
    children = set(log.children(n("runs")).column("stream").to_pylist())
    assert {n("runs/retry"), n("best")} <= children


def test_time_travel_checkpoints_and_verification(target: Target) -> None:
    log = target.log
    runs = log.create_stream(target.name("tt"))
    runs.append([{"v": i} for i in range(3)])
    cp = runs.checkpoint(kind="eval-start")
    assert (cp.stream, cp.head_offset, cp.kind) == (target.name("tt"), 2, "eval-start")
    assert ta.Checkpoint.from_json(cp.to_json()).to_dict() == cp.to_dict()
    runs.append({"v": 3})
    runs.flush()
    report = log.verify(cp, deep=True)
    assert report.ok, str(report)
    assert "OK" in str(report)
    assert report.to_arrow().num_rows == len(report.entries) > 0
    assert log.verify(target.name("tt")).ok
    assert runs.at(cp).read().column("v").to_pylist() == [0, 1, 2]
    assert runs.at(generation=cp.generation).next_offset == 3
    assert runs.as_of(datetime.now(UTC)).read().num_rows == 4
    assert [c["stream"] for c in log.checkpoints(target.name("tt")).to_pylist()] == [cp.stream]
    forged = ta.Checkpoint(cp.stream, cp.generation, cp.head_offset, "0" * 64)
    with pytest.raises(ta.IntegrityError):
        runs.at(forged)
    with pytest.raises(ta.NotFoundError):
        runs.at(generation=99)


def test_sql_and_materializations(target: Target) -> None:
    log, name = target.log, target.name("events")
    s = log.create_stream(name)
    s.append([{"user": u, "n": i} for i, u in enumerate("abab")])
    got = table_of(log.sql(f'SELECT user, sum(n) AS total FROM "{name}" GROUP BY 1 ORDER BY 1'))
    assert got.to_pylist() == [{"user": "a", "total": 2}, {"user": "b", "total": 4}]
    got = table_of(log.sql(f'SELECT count(*) AS c FROM "{name}" WHERE n > $lo', lo=1))
    assert got.column("c").to_pylist() == [2]

    query = "SELECT user, count(*) AS calls FROM records GROUP BY user"
    mv = log.materialize(target.name("per-user"), name, query=query)
    report = mv.refresh()
    assert (report.records_processed, report.mode, report.incremental) == (4, "aggregate", True)
    s.append({"user": "c", "n": 9})
    again = log.materialization(target.name("per-user")).refresh()
    assert (again.records_processed, again.from_offset) == (1, 4)
    assert sorted(mv.read().to_pylist(), key=lambda r: r["user"]) == [
        {"user": "a", "calls": 2},
        {"user": "b", "calls": 2},
        {"user": "c", "calls": 1},
    ]
    assert target.name("per-user") in log.materializations().column("name").to_pylist()


def test_idempotent_producers(target: Target) -> None:
    s = target.log.create_stream(target.name("once"))
    first = s.append([{"v": 0}, {"v": 1}], producer="ingest", sequence=0)
    s.append({"v": 2}, producer="ingest", sequence=1)
    retried = s.append([{"v": 0}, {"v": 1}], producer="ingest", sequence=0)  # a retry
    assert (retried.first_offset, retried.last_offset) == (first.first_offset, first.last_offset)
    assert s.read().column("v").to_pylist() == [0, 1, 2]
    with pytest.raises(ta.InvalidInputError):
        s.append({"v": 9}, producer="ingest", sequence=5)  # skips ahead: refused
    assert s.next_offset == 3


def test_tails_and_durable_cursors(target: Target) -> None:
    log, name = target.log, target.name("feed")
    s = log.create_stream(name)
    s.append([{"v": v} for v in range(4)])
    with s.tail(1, timeout=0.3) as tail:
        got = [v for batch in tail for v in batch.column("v").to_pylist()]
        assert got == [1, 2, 3] and tail.position == 4

    cursor = log.cursor(target.name("indexer"), name)
    assert (cursor.position, cursor.generation) == (0, None)
    with cursor.tail(timeout=0.3) as tail:
        seen = sum(b.num_rows for b in tail)
        assert seen == 4
        cursor.commit(tail.position)
    again = log.cursor(target.name("indexer"), name)  # another handle (process, machine)
    assert again.position == 4 and again.committed_at
    s.append({"v": 4})
    again.commit(5)
    with pytest.raises(ta.CommitConflictError):
        cursor.commit(5)  # stale: it has not seen the other handle's commit
    assert cursor.refresh() == 5
    with pytest.raises(ta.InvalidInputError):
        cursor.commit(99)  # past the end of the stream
    rows = [r for r in log.cursors().to_pylist() if r["stream"] == name]
    assert [(r["name"], r["position"]) for r in rows] == [(target.name("indexer"), 5)]


def _code(error: BaseException) -> str | None:
    return getattr(error, "code", None)


@pytest.mark.parametrize(
    ("case", "expected", "code"),
    [
        ("missing stream", ta.StreamNotFoundError, "not_found"),
        ("existing stream", ta.AlreadyExistsError, "conflict"),
        ("schema mismatch", ta.SchemaMismatchError, "conflict"),
        ("reserved column", ta.InvalidInputError, "invalid_request"),
        ("bad name", ta.InvalidInputError, "invalid_request"),
        ("bad offset", ta.InvalidInputError, "invalid_request"),
        ("one parent", ta.MergeConflictError, "conflict"),
        ("bad branch point", ta.InvalidInputError, "invalid_request"),
        ("bad sql", ta.TransitError, "invalid_request"),
        ("bad durability", ta.InvalidInputError, "invalid_request"),
        ("set value", ta.InvalidInputError, "invalid_request"),
    ],
)
def test_errors_are_the_same_and_change_nothing(
    target: Target, case: str, expected: type[Exception], code: str
) -> None:
    log = target.log
    s = log.create_stream(target.name("err"))
    s.append({"x": 1})
    before = (s.next_offset, log.streams().num_rows)
    actions: dict[str, Any] = {
        "missing stream": lambda: log.stream(target.name("nope")),
        "existing stream": lambda: log.create_stream(target.name("err")),
        "schema mismatch": lambda: s.append({"x": "text"}),
        "reserved column": lambda: s.append({"_offset": 3, "x": 1}),
        "bad name": lambda: log.create_stream("bad name!"),
        "bad offset": lambda: s.read(start=-1),
        "one parent": lambda: log.merge(target.name("m"), [target.name("err")]),
        "bad branch point": lambda: log.branch(target.name("b"), at=f"{target.name('err')}@99"),
        "bad sql": lambda: table_of(log.sql("SELEC nothing")),
        "bad durability": lambda: s.append({"x": 2}, durability="forever"),
        "set value": lambda: s.append({"x": 2, "tags": {"a", "b"}}),
    }
    with pytest.raises(expected) as info:
        actions[case]()
    if target.remote:
        assert _code(info.value) == code
    assert (s.next_offset, log.streams().num_rows) == before
