"""Branches, merges, lineage metadata and time travel (DESIGN §6, §7, §8, §10).

Every replay is compared with an exact expected list of records; every rejected input is
checked for its error type, a helpful message, and for having written nothing at all (the
sorted list of every file under the log root is the same before and after the call).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import transit_arrow as ta

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
MERGE_COLUMNS = ("_stream", "_offset", "x", "_origin_stream", "_origin_offset")
_resolver_ids = itertools.count()

Row = tuple[Any, ...]


# --- helpers ----------------------------------------------------------------------------------


def ts(seconds: float) -> dt.datetime:
    """A fixed point in time, `seconds` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def rows(table: pa.Table, columns: Sequence[str] = ("_stream", "_offset", "x")) -> list[Row]:
    """The table's rows as tuples of `columns`."""
    return [tuple(r[c] for c in columns) for r in table.select(list(columns)).to_pylist()]


def own(name: str, first: int, xs: Sequence[int]) -> list[Row]:
    """Expected `(_stream, _offset, x)` rows of records that `name` holds itself."""
    return [(name, first + i, x) for i, x in enumerate(xs)]


def merged(name: str, first: int, origins: Sequence[tuple[str, int, int]]) -> list[Row]:
    """Expected merge rows: `(name, offset, x, origin_stream, origin_offset)` from
    `(origin_stream, origin_offset, x)` triples, numbered densely from `first`."""
    return [(name, first + i, x, s, o) for i, (s, o, x) in enumerate(origins)]


def inherited(stream: str, xs_by_offset: Sequence[tuple[int, int]]) -> list[Row]:
    """Expected merge-read rows of base-prefix records: no provenance columns set."""
    return [(stream, o, x, None, None) for o, x in xs_by_offset]


def files(root: Path) -> list[str]:
    """Every file under `root`, as sorted relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def stream_files(root: Path) -> set[str]:
    """Every file under `<root>/streams/`, relative to `root`."""
    return {f for f in files(root) if f.startswith("streams/")}


def fill(stream: ta.Stream, xs: Sequence[int], *, times: Sequence[float] | None = None) -> None:
    """Append one record per x (with `_timestamp` = ts(t) when `times` is given), then seal
    (the flush makes them durable, so the appends need not sync one by one)."""
    for i, x in enumerate(xs):
        record: dict[str, Any] = {"x": x}
        if times is not None:
            record["_timestamp"] = ts(times[i])
        stream.append(record, durability="memory")
    stream.flush()


def lineage_rows(log: ta.Log) -> dict[str, dict[str, Any]]:
    """The lineage table keyed by stream name."""
    return {row["name"]: row for row in log.lineage().to_pylist()}


def register(resolver: ta.MergeResolver, *, version: str = "1") -> str:
    """Register `resolver` under a fresh name and return the policy string for it."""
    name = f"test-resolver-{next(_resolver_ids)}"
    ta.register_merge_resolver(name, resolver, version=version)
    return f"custom:{name}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the test's log lives."""
    return tmp_path / "log"


@pytest.fixture
def log(root: Path) -> Iterator[ta.Log]:
    """A log sealing every 4 records, so that histories span several segments."""
    with ta.open(root, segment_max_records=4) as log:
        yield log


@pytest.fixture
def forked(log: ta.Log) -> ta.Log:
    """main = x 0..9 (offsets 0..9); b = main@5 + x 100..102 (offsets 6..8); all sealed."""
    fill(log.create_stream("main"), range(10), times=range(10))
    fill(log.branch("b", at="main@5"), [100, 101, 102], times=[20, 21, 22])
    return log


MAIN = own("main", 0, range(10))
B = MAIN[:6] + own("b", 6, [100, 101, 102])


# --- branches -----------------------------------------------------------------------------------


def test_branch_replays_parent_prefix_then_own_records(forked: ta.Log, root: Path) -> None:
    """A branch at parent@N replays the parent through N (records keep `_stream` = parent),
    then its own records from N+1; the parent never sees them, later parent appends never
    reach the branch, and all of it survives a reopen."""
    log = forked
    assert rows(log.stream("b").read()) == B
    assert rows(log.stream("main").read()) == MAIN
    fill(log.stream("main"), [10, 11])
    fill(log.stream("b"), [103])
    assert rows(log.stream("main").read()) == [*MAIN, *own("main", 10, [10, 11])]
    assert rows(log.stream("b").read()) == [*B, ("b", 9, 103)]
    assert log.stream("b").next_offset == 10
    log.close()
    with ta.open(root) as reopened:
        assert rows(reopened.stream("b").read()) == [*B, ("b", 9, 103)]
        assert rows(reopened.stream("main").read()) == [*MAIN, *own("main", 10, [10, 11])]
        ack = reopened.stream("b").append({"x": 104})
        assert (ack.first_offset, ack.last_offset) == (10, 10)


def test_branch_of_branch_of_branch(forked: ta.Log, root: Path) -> None:
    """Three levels of branches each replay their whole ancestry through the fork point, with
    every record labelled by the stream that physically holds it, across a reopen."""
    log = forked
    c = log.branch("b/c", at="b@7", reason="deeper")
    fill(c, [200, 201])
    d = c.branch("b/c/d", at=8)
    fill(d, [300])
    expected_c = [*B[:8], ("b/c", 8, 200), ("b/c", 9, 201)]
    expected_d = [*B[:8], ("b/c", 8, 200), ("b/c/d", 9, 300)]
    assert rows(c.read()) == expected_c
    assert rows(d.read()) == expected_d
    assert rows(log.stream("b").read()) == B
    log.close()
    with ta.open(root) as reopened:
        assert rows(reopened.stream("b/c").read()) == expected_c
        assert rows(reopened.stream("b/c/d").read()) == expected_d
        assert rows(reopened.stream("b/c/d").read(start=5, end=9)) == expected_d[5:9]


def test_branch_inside_unsealed_head_seals_parent_first(root: Path) -> None:
    """Branching at an offset still in the parent's unsealed head first seals that head (one
    more commit and a segment on the parent), then pins the new generation; the branch
    replays exactly the parent through N and then its own records."""
    with ta.open(root, segment_max_records=1000) as log:
        main = log.create_stream("main")
        for x in range(6):
            main.append({"x": x})
        assert main.generation == 0
        assert main.commits().num_rows == 1
        assert not (root / "streams" / "main" / "segments").exists()
        branch = log.branch("b", at="main@3")
        commits = main.commits().to_pylist()
        assert len(commits) == 2
        assert commits[1]["actions"] == ["evolve_schema", "add_segment"]
        assert (commits[1]["first_offset"], commits[1]["last_offset"]) == (0, 5)
        assert len(list((root / "streams" / "main" / "segments").iterdir())) == 1
        row = lineage_rows(log)["b"]
        assert (row["parent_generation"], row["parent_root"]) == (1, main.root)
        branch.append({"x": 100})
        main.append({"x": 6})
        assert rows(branch.read()) == [*own("main", 0, range(4)), ("b", 4, 100)]
        assert rows(main.read()) == own("main", 0, range(7))
    with ta.open(root) as log:
        assert rows(log.stream("b").read()) == [*own("main", 0, range(4)), ("b", 4, 100)]
        assert rows(log.stream("main").read()) == own("main", 0, range(7))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda log: log.branch("new", at="main@5"), id="log.branch"),
        pytest.param(lambda log: log.stream("main").branch("new", at=1), id="stream.branch"),
        pytest.param(lambda log: log.branch("new", at="b@8"), id="branch-of-branch"),
        pytest.param(lambda log: log.branch("new", at="b"), id="at-last-record"),
    ],
)
def test_branch_creation_writes_one_commit_and_no_segment(
    forked: ta.Log, root: Path, make: Callable[[ta.Log], ta.Stream]
) -> None:
    """Creating a branch of sealed history writes exactly generation 0 of the child: one
    commit file, no segment, nothing on the parent (O(1), no byte copied)."""
    before = stream_files(root)
    make(forked)
    assert stream_files(root) - before == {"streams/new/commits/00000000000000000000.json"}
    assert before <= stream_files(root)


def test_reader_over_deep_branch_streams_many_small_batches(root: Path) -> None:
    """`reader()` over a three-level branch streams batches no larger than one row group
    (bounded memory), and together they equal `read()`."""
    with ta.open(root, segment_max_records=50, row_group_size=10) as log:
        main = log.create_stream("main")
        main.append(pa.table({"x": pa.array(range(200), pa.int64())}))
        level = main
        fork = 149
        for depth in range(3):
            level = level.branch(f"l{depth}", at=fork)
            level.append(
                pa.table({"x": pa.array(range(1000 * (depth + 1), 1000 * (depth + 1) + 100))})
            )
            level.flush()
            fork += 100
        sizes = [batch.num_rows for batch in level.reader()]
        assert sum(sizes) == level.next_offset == 450
        assert len(sizes) >= 45
        assert max(sizes) <= 10
        assert pa.Table.from_batches(list(level.reader())).equals(level.read())


def test_stream_branch_at_offset_and_defaults(forked: ta.Log) -> None:
    """`Stream.branch(name, at=N)` equals `Log.branch(name, at="parent@N")`; without `at`
    (or with a bare stream name) a branch forks at the parent's last record."""
    log = forked
    main = log.stream("main")
    by_stream = main.branch("s", at=3)
    by_log = log.branch("l", at="main@3")
    assert rows(by_stream.read()) == rows(by_log.read()) == MAIN[:4]
    assert rows(main.branch("last").read()) == MAIN
    assert rows(log.branch("bare", at="b").read()) == B
    assert lineage_rows(log)["s"]["parent_offset"] == lineage_rows(log)["l"]["parent_offset"] == 3


# --- lineage metadata -------------------------------------------------------------------------


def _created_between(value: str, start: dt.datetime, end: dt.datetime) -> bool:
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return start <= when <= end


def pos(stream: str, offset: int, generation: int, root: str) -> dict[str, Any]:
    """A pinned position as the lineage table's `merge_parents` holds it."""
    return {"stream": stream, "offset": offset, "generation": generation, "root": root}


def rel(depth: int, relation: str, stream: str, offset: int, gen: int, root: str) -> dict[str, Any]:
    """A row of `Stream.ancestry()` / `Log.children()`."""
    return {"depth": depth, "relation": relation, **pos(stream, offset, gen, root)}


LINEAGE_COLUMNS = [
    "name",
    "kind",
    "parent_stream",
    "parent_offset",
    "parent_generation",
    "parent_root",
    "merge_parents",
    "base_stream",
    "base_offset",
    "policy",
    "policy_params",
    "policy_version",
    "actor",
    "reason",
    "labels",
    "created_at",
    "next_offset",
    "generation",
    "root",
]
NO_PARENT = {
    "parent_stream": None,
    "parent_offset": None,
    "parent_generation": None,
    "parent_root": None,
}
NO_MERGE = {
    "merge_parents": None,
    "base_stream": None,
    "base_offset": None,
    "policy": None,
    "policy_params": None,
    "policy_version": None,
}


def test_lineage_table_every_column(root: Path) -> None:
    """`Log.lineage()` has one row per stream with every column right for a root, a branch
    and a merge of each policy (parents pinned with generation and root, base, policy name,
    params and version, actor, reason, labels, creation time, next offset, generation, root),
    and the same after a reopen (labels compared as mappings; their order is the next
    test)."""
    start = dt.datetime.now(dt.UTC)
    log = ta.open(root, segment_max_records=4)
    meta = {"actor": "alice", "reason": "task 7", "labels": {"env": "ci"}}
    fill(log.create_stream("main", metadata=meta), range(10))
    b = log.branch("b", at="main@5", actor="agent", reason="retry", labels={"try": "2", "a": "1"})
    fill(b, [100, 101, 102])
    custom = register(lambda base, parents: parents[1].select(["x"]), version="2.5")
    specs: dict[str, tuple[list[str], str, dict[str, Any] | None]] = {
        "m-pin": (["main", "b"], "pin", None),
        "m-ff": (["b", "main@3"], "fast_forward", None),
        "m-concat": (["main", "b"], "concat", None),
        "m-interleave": (["main", "b"], "interleave", {"seed": 1}),
        "m-custom": (["main", "b"], custom, {"k": [1, 2]}),
    }
    for name, (parents, policy, params) in specs.items():
        labels = {"policy": policy, "a": "1"}
        log.merge(name, parents, policy=policy, policy_params=params, reason=name, labels=labels)
    end = dt.datetime.now(dt.UTC)
    main_root, b_root = log.stream("main").root, log.stream("b").root
    table = log.lineage()
    assert table.column_names == LINEAGE_COLUMNS
    got = lineage_rows(log)
    assert sorted(got) == sorted(["main", "b", *specs])
    for row in got.values():
        assert _created_between(row.pop("created_at"), start, end)
        row["labels"] = dict(row["labels"])
    assert got["main"] == {
        "name": "main",
        "kind": "root",
        **NO_PARENT,
        **NO_MERGE,
        **meta,
        "next_offset": 10,
        "generation": 3,
        "root": main_root,
    }
    assert got["b"] == {
        "name": "b",
        "kind": "branch",
        "parent_stream": "main",
        "parent_offset": 5,
        "parent_generation": 3,
        "parent_root": main_root,
        **NO_MERGE,
        "actor": "agent",
        "reason": "retry",
        "labels": {"a": "1", "try": "2"},
        "next_offset": 9,
        "generation": 1,
        "root": b_root,
    }
    two_heads = [pos("main", 9, 3, main_root), pos("b", 8, 1, b_root)]
    merge_parents = {"m-ff": [pos("b", 8, 1, b_root), pos("main", 3, 3, main_root)]}
    next_offsets = {"m-pin": 6, "m-ff": 9, "m-concat": 13, "m-interleave": 13, "m-custom": 9}
    for name, (_, policy, params) in specs.items():
        assert got[name] == {
            "name": name,
            "kind": "merge",
            **NO_PARENT,
            "merge_parents": merge_parents.get(name, two_heads),
            "base_stream": "main",
            "base_offset": 3 if name == "m-ff" else 5,
            "policy": policy,
            "policy_params": json.dumps(params or {}, sort_keys=True),
            "policy_version": "2.5" if policy == custom else "1",
            "actor": None,
            "reason": name,
            "labels": {"policy": policy, "a": "1"},
            "next_offset": next_offsets[name],
            "generation": 0,
            "root": log.stream(name).root,
        }, name
    log.close()
    with ta.open(root) as reopened:
        again = reopened.lineage()
        assert again.drop_columns(["labels"]).equals(table.drop_columns(["labels"]))
        assert [dict(x) for x in again["labels"].to_pylist()] == [
            dict(x) for x in table["labels"].to_pylist()
        ]


def test_lineage_table_is_identical_after_reopen(root: Path) -> None:
    """The lineage table is a pure function of the commits: the same after a reopen, labels
    map entries included."""
    with ta.open(root) as log:
        fill(log.create_stream("main"), [1, 2])
        log.branch("b", at="main@0", labels={"z": "1", "a": "2"})
        table = log.lineage()
    with ta.open(root) as log:
        assert log.lineage().equals(table)


def test_ancestry_lists_every_referenced_position_nearest_first(forked: ta.Log) -> None:
    """`Stream.ancestry()` lists, nearest first, every position the replay depends on, with
    the relation and the generation and root each was pinned at; a root has none."""
    log = forked
    c = log.branch("c", at="b@7")
    fill(c, [7])
    m = log.merge("m", ["c", "main"], policy="concat")
    main_root, b_root, c_root = (log.stream(n).root for n in ("main", "b", "c"))
    assert log.stream("main").ancestry().num_rows == 0
    assert c.ancestry().to_pylist() == [
        rel(1, "parent", "b", 7, 1, b_root),
        rel(2, "parent", "main", 5, 3, main_root),
    ]
    assert m.ancestry().to_pylist() == [
        rel(1, "base", "main", 5, 3, main_root),
        rel(1, "merge_parent", "c", 8, 1, c_root),
        rel(1, "merge_parent", "main", 9, 3, main_root),
        rel(2, "parent", "b", 7, 1, b_root),
    ]


def test_children_lists_streams_referencing_a_stream(forked: ta.Log) -> None:
    """`Log.children(name)` lists every stream whose descriptor references `name` (as
    parent, base or merge parent) with the referenced position; unknown names raise."""
    log = forked
    log.merge("m", ["main", "b"], policy="pin")
    main_root, b_root = log.stream("main").root, log.stream("b").root
    assert log.children("main").to_pylist() == [
        {**rel(1, "parent", "main", 5, 3, main_root), "stream": "b"},
        {**rel(1, "base", "main", 5, 3, main_root), "stream": "m"},
        {**rel(1, "merge_parent", "main", 9, 3, main_root), "stream": "m"},
    ]
    assert log.children("b").to_pylist() == [
        {**rel(1, "merge_parent", "b", 8, 1, b_root), "stream": "m"}
    ]
    assert log.children("m").num_rows == 0
    with pytest.raises(ta.StreamNotFoundError, match=r"'mian'.*did you mean 'main'"):
        log.children("mian")


# --- merges ---------------------------------------------------------------------------------


@pytest.fixture
def diverged(log: ta.Log) -> ta.Log:
    """main x 0..3 at ts 0..3; a = main@1 + x 10,11,12 at ts 10,12,12;
    b = main@1 + x 20,21,22 at ts 5,12,11. All sealed."""
    fill(log.create_stream("main"), range(4), times=range(4))
    fill(log.branch("a", at="main@1"), [10, 11, 12], times=[10, 12, 12])
    fill(log.branch("b", at="main@1"), [20, 21, 22], times=[5, 12, 11])
    return log


BASE = inherited("main", [(0, 0), (1, 1)])
A_POST = [("a", 2, 10), ("a", 3, 11), ("a", 4, 12)]
B_POST = [("b", 2, 20), ("b", 3, 21), ("b", 4, 22)]


def test_merge_pin_replays_base_prefix_and_appends_continue(diverged: ta.Log, root: Path) -> None:
    """A `pin` merge replays only the base prefix; the application's appends continue the
    merge's numbering, as its own records; it writes one commit and no segment."""
    before = stream_files(root)
    m = diverged.merge("m", ["a", "b"], policy="pin")
    assert stream_files(root) - before == {"streams/m/commits/00000000000000000000.json"}
    assert rows(m.read()) == [("main", 0, 0), ("main", 1, 1)]
    assert "_origin_stream" not in m.read().column_names
    fill(m, [99, 98])
    assert rows(m.read()) == [("main", 0, 0), ("main", 1, 1), ("m", 2, 99), ("m", 3, 98)]
    diverged.close()
    with ta.open(root) as log:
        assert rows(log.stream("m").read())[2:] == [("m", 2, 99), ("m", 3, 98)]


def test_merge_fast_forward_replays_the_descendant(diverged: ta.Log, root: Path) -> None:
    """A `fast_forward` merge replays the parent whose history contains every other
    parent's (whatever its place in the list), records keeping their origin `_stream`; it
    writes one commit and no segment, and appends continue after the winner's head."""
    before = stream_files(root)
    m = diverged.merge("m", ["main@1", "a"], policy="fast_forward")
    assert stream_files(root) - before == {"streams/m/commits/00000000000000000000.json"}
    expected = [("main", 0, 0), ("main", 1, 1), *A_POST]
    assert rows(m.read()) == expected
    fill(m, [50])
    assert rows(m.read()) == [*expected, ("m", 5, 50)]
    assert lineage_rows(diverged)["m"]["base_offset"] == 1


def test_merge_concat_exact_replay_zero_copy(diverged: ta.Log, root: Path) -> None:
    """A `concat` merge replays the base prefix, then each parent's post-base records in
    declared order, densely renumbered, with `_origin_stream`/`_origin_offset` naming each
    record's physical position; it writes no segment (zero-copy) and survives a reopen."""
    before = stream_files(root)
    m = diverged.merge("m", ["b", "a"], policy="concat")
    assert stream_files(root) - before == {"streams/m/commits/00000000000000000000.json"}
    expected = BASE + merged("m", 2, [*B_POST, *A_POST])
    table = m.read()
    assert rows(table, MERGE_COLUMNS) == expected
    assert table["_offset"].to_pylist() == list(range(8))
    assert table["_timestamp"].to_pylist() == [ts(t) for t in (0, 1, 5, 12, 11, 10, 12, 12)]
    fill(m, [77])
    assert rows(m.read(), MERGE_COLUMNS)[-1] == ("m", 8, 77, None, None)
    diverged.close()
    with ta.open(root) as log:
        assert rows(log.stream("m").read(), MERGE_COLUMNS) == [*expected, ("m", 8, 77, None, None)]


def test_merge_interleave_orders_by_timestamp_then_parent_then_offset(
    diverged: ta.Log, root: Path
) -> None:
    """An `interleave` merge orders post-base records by supplied `_timestamp`, then by
    declared parent order, then by offset, renumbers them densely, keeps their timestamps
    and provenance, and stores them as one new segment."""
    before = stream_files(root)
    ab = diverged.merge("ab", ["a", "b"], policy="interleave")
    added = stream_files(root) - before
    assert len(added) == 2
    assert "streams/ab/commits/00000000000000000000.json" in added
    assert any(
        p.startswith("streams/ab/segments/00000000000000000002-00000000000000000007-")
        for p in added
    )
    ba = diverged.merge("ba", ["b", "a"], policy="interleave")
    # ts: b@2=5, a@2=10, b@4=11, then the ts-12 tie: a@3, a@4 (parent a first), b@3.
    order_ab = [("b", 2, 20), ("a", 2, 10), ("b", 4, 22), ("a", 3, 11), ("a", 4, 12), ("b", 3, 21)]
    order_ba = [("b", 2, 20), ("a", 2, 10), ("b", 4, 22), ("b", 3, 21), ("a", 3, 11), ("a", 4, 12)]
    assert rows(ab.read(), MERGE_COLUMNS) == BASE + merged("ab", 2, order_ab)
    assert rows(ba.read(), MERGE_COLUMNS) == BASE + merged("ba", 2, order_ba)
    assert ab.read()["_timestamp"].to_pylist() == [ts(t) for t in (0, 1, 5, 10, 11, 12, 12, 12)]
    fill(ab, [5])
    diverged.close()
    with ta.open(root) as log:
        expected = [*BASE, *merged("ab", 2, order_ab), ("ab", 8, 5, None, None)]
        assert rows(log.stream("ab").read(), MERGE_COLUMNS) == expected


def test_merge_custom_resolver_runs_once_with_base_and_parents(
    diverged: ta.Log, root: Path
) -> None:
    """A `custom:<name>` merge calls the resolver once with the base replay and each
    parent's post-base records (with provenance); its output becomes the merge's records
    after the base, and the resolver's name and version are recorded in the lineage."""
    calls: list[tuple[list[int], list[list[int]], list[str]]] = []

    def evens_descending(base: pa.Table, parents: list[pa.Table]) -> pa.Table:
        calls.append(
            (base["x"].to_pylist(), [p["x"].to_pylist() for p in parents], parents[0].column_names)
        )
        table = pa.concat_tables(parents).select(["x", "_origin_stream", "_origin_offset"])
        table = table.filter(pc.equal(pc.bit_wise_and(table["x"], 1), 0))
        return table.sort_by([("x", "descending")])

    policy = register(evens_descending, version="3.1")
    m = diverged.merge("m", ["a", "b"], policy=policy, policy_params={"parity": "even"})
    assert len(calls) == 1
    base_x, parent_x, columns = calls[0]
    assert base_x == [0, 1]
    assert parent_x == [[10, 11, 12], [20, 21, 22]]
    assert {"_origin_stream", "_origin_offset", "x"} <= set(columns)
    expected = BASE + merged("m", 2, [("b", 4, 22), ("b", 2, 20), ("a", 4, 12), ("a", 2, 10)])
    assert rows(m.read(), MERGE_COLUMNS) == expected
    row = lineage_rows(diverged)["m"]
    assert (row["policy"], row["policy_version"]) == (policy, "3.1")
    assert json.loads(row["policy_params"]) == {"parity": "even"}
    # Re-registering the name with a new version changes later merges only.
    ta.register_merge_resolver(policy.removeprefix("custom:"), evens_descending, version="4")
    diverged.merge("m2", ["a", "b"], policy=policy)
    assert lineage_rows(diverged)["m"]["policy_version"] == "3.1"
    assert lineage_rows(diverged)["m2"]["policy_version"] == "4"
    fill(m, [1])
    diverged.close()
    with ta.open(root) as log:
        assert rows(log.stream("m").read(), MERGE_COLUMNS) == [*expected, ("m", 6, 1, None, None)]
    assert len(calls) == 2


def test_merge_custom_resolver_output_without_provenance(diverged: ta.Log) -> None:
    """Resolver output without `_origin_*` (any Arrow producer, here a list of dicts) becomes
    the merge's records with null provenance, numbered after the base."""
    policy = register(lambda base, parents: [{"x": base.num_rows}, {"x": len(parents)}])
    m = diverged.merge("m", ["a", "b"], policy=policy)
    expected = [*BASE, ("m", 2, 2, None, None), ("m", 3, 2, None, None)]
    assert rows(m.read(), MERGE_COLUMNS) == expected


def test_merge_base_is_nearest_common_ancestor_of_three_parents(log: ta.Log) -> None:
    """Without `base`, a merge's base is the nearest common ancestor position of all its
    parents, also when it lies on a branch rather than the root; 3 parents concat in order."""
    fill(log.create_stream("main"), range(6))
    fill(log.branch("a", at="main@3"), [40, 50])  # a@4, a@5
    fill(log.branch("b", at="main@1"), [20])  # b@2
    fill(log.branch("c", at="a@4"), [500])  # c@5
    three = log.merge("abc", ["a", "b", "c"], policy="concat")
    assert (lineage_rows(log)["abc"]["base_stream"], lineage_rows(log)["abc"]["base_offset"]) == (
        "main",
        1,
    )
    main_2_3 = [("main", 2, 2), ("main", 3, 3)]
    expected = inherited("main", [(0, 0), (1, 1)]) + merged(
        "abc",
        2,
        [
            *main_2_3,
            ("a", 4, 40),
            ("a", 5, 50),
            ("b", 2, 20),
            *main_2_3,
            ("a", 4, 40),
            ("c", 5, 500),
        ],
    )
    assert rows(three.read(), MERGE_COLUMNS) == expected
    ac = log.merge("ac", ["a", "c"], policy="concat")
    assert (lineage_rows(log)["ac"]["base_stream"], lineage_rows(log)["ac"]["base_offset"]) == (
        "a",
        4,
    )
    assert rows(ac.read(), MERGE_COLUMNS) == [
        ("main", 0, 0, None, None), ("main", 1, 1, None, None), ("main", 2, 2, None, None),
        ("main", 3, 3, None, None), ("a", 4, 40, None, None),
        ("ac", 5, 50, "a", 5), ("ac", 6, 500, "c", 5),
    ]  # fmt: skip


def test_merge_of_different_roots_has_no_base(log: ta.Log) -> None:
    """Parents with no shared history merge with base None: concat replays every record of
    each parent in parent order, interleave by timestamp, renumbered from 0, with
    provenance."""
    fill(log.create_stream("main"), [0, 1], times=[1, 3])
    fill(log.create_stream("other"), [7, 8, 9], times=[0, 2, 4])
    m = log.merge("m", ["other", "main"], policy="concat")
    i = log.merge("i", ["other", "main"], policy="interleave")
    for name in ("m", "i"):
        row = lineage_rows(log)[name]
        assert (row["base_stream"], row["base_offset"]) == (None, None)
    other = [("other", 0, 7), ("other", 1, 8), ("other", 2, 9)]
    main = [("main", 0, 0), ("main", 1, 1)]
    assert rows(m.read(), MERGE_COLUMNS) == merged("m", 0, [*other, *main])
    by_time = [other[0], main[0], other[1], main[1], other[2]]
    assert rows(i.read(), MERGE_COLUMNS) == merged("i", 0, by_time)


def test_merge_with_explicit_base(diverged: ta.Log) -> None:
    """An explicit `base` that is an ancestor of every parent (not the nearest one) is
    recorded, and concat replays each parent's records after it."""
    m = diverged.merge("m", ["a", "b"], base="main@0", policy="concat")
    row = lineage_rows(diverged)["m"]
    assert (row["base_stream"], row["base_offset"]) == ("main", 0)
    assert rows(m.read(), MERGE_COLUMNS) == inherited("main", [(0, 0)]) + merged(
        "m", 1, [("main", 1, 1), *A_POST, ("main", 1, 1), *B_POST]
    )


def test_merge_parents_pinned_at_offsets(diverged: ta.Log) -> None:
    """`parents=["a@3", ...]` pins a parent at that offset (later records are excluded and
    later appends do not matter); an offset inside a branch's inherited prefix is the
    ancestor's record."""
    m = diverged.merge("m", ["a@3", "b"], policy="concat")
    fill(diverged.stream("a"), [13])
    assert rows(m.read(), MERGE_COLUMNS) == BASE + merged("m", 2, [*A_POST[:2], *B_POST])
    assert [p["offset"] for p in lineage_rows(diverged)["m"]["merge_parents"]] == [3, 4]
    n = diverged.merge("n", ["b@1", "a"], policy="concat")
    assert lineage_rows(diverged)["n"]["base_offset"] == 1
    assert rows(n.read(), MERGE_COLUMNS) == BASE + merged("n", 2, [*A_POST, ("a", 5, 13)])


def merge_rows(table: pa.Table) -> list[Row]:
    """`MERGE_COLUMNS` rows; provenance is None when the stream has no such columns."""
    present = [c for c in MERGE_COLUMNS if c in table.column_names]
    return [tuple(r.get(c) for c in MERGE_COLUMNS) for r in table.select(present).to_pylist()]


def test_appends_to_every_merge_continue_its_numbering(diverged: ta.Log, root: Path) -> None:
    """Whatever the policy, records appended to a merge stream continue its numbering, are
    labelled with the merge's name and carry no provenance; all survives a reopen."""
    policies = {
        "pin": "pin",
        "ff": "fast_forward",
        "concat": "concat",
        "interleave": "interleave",
        "custom": register(lambda base, parents: parents[0]),
    }
    first = {"pin": 2, "ff": 5, "concat": 8, "interleave": 8, "custom": 5}
    expected: dict[str, list[Row]] = {}
    for name, policy in policies.items():
        m = diverged.merge(name, ["a", "main@1"] if name == "ff" else ["a", "b"], policy=policy)
        assert m.next_offset == first[name]
        before = merge_rows(m.read())
        ack = m.append([{"x": 1000}, {"x": 1001}])
        assert (ack.first_offset, ack.last_offset) == (first[name], first[name] + 1)
        expected[name] = [
            *before,
            (name, first[name], 1000, None, None),
            (name, first[name] + 1, 1001, None, None),
        ]
        assert merge_rows(m.read()) == expected[name]
        assert m.read()["_offset"].to_pylist() == list(range(first[name] + 2))
    diverged.close()
    with ta.open(root) as log:
        for name in policies:
            assert merge_rows(log.stream(name).read()) == expected[name], name
            assert log.stream(name).append({"x": 1}).first_offset == first[name] + 2


def test_branch_of_merge(diverged: ta.Log, root: Path) -> None:
    """A branch of a merge replays the merge's replay through the fork point (provenance
    included), then its own records; the merge does not see them."""
    m = diverged.merge("m", ["a", "b"], policy="concat")
    br = m.branch("m/br", at=4, reason="try the b side")
    fill(br, [900])
    expected = [*BASE, *merged("m", 2, A_POST[:3]), ("m/br", 5, 900, None, None)]
    assert rows(br.read(), MERGE_COLUMNS) == expected
    assert rows(m.read(), MERGE_COLUMNS) == BASE + merged("m", 2, [*A_POST, *B_POST])
    ancestry = br.ancestry().to_pylist()
    assert [(r["depth"], r["stream"], r["relation"], r["offset"]) for r in ancestry][:1] == [
        (1, "m", "parent", 4)
    ]
    diverged.close()
    with ta.open(root) as log:
        assert rows(log.stream("m/br").read(), MERGE_COLUMNS) == expected


def test_merge_of_merges_keeps_physical_provenance(diverged: ta.Log) -> None:
    """Merging merges (concat of an interleave and a concat merge) reports, for every record,
    the stream and offset that physically hold it, not the intermediate merge."""
    diverged.merge("i", ["a", "b"], policy="interleave")
    diverged.merge("c", ["b", "a"], policy="concat")
    mm = diverged.merge("mm", ["i", "c"], policy="concat")
    order_i = [("b", 2, 20), ("a", 2, 10), ("b", 4, 22), ("a", 3, 11), ("a", 4, 12), ("b", 3, 21)]
    assert rows(mm.read(), MERGE_COLUMNS) == BASE + merged("mm", 2, [*order_i, *B_POST, *A_POST])
    assert mm.scan().collect().to_arrow().select(list(MERGE_COLUMNS)).to_pylist() == (
        mm.read().select(list(MERGE_COLUMNS)).to_pylist()
    )


# --- time travel ----------------------------------------------------------------------------


def test_at_generation_is_fixed_after_later_appends(forked: ta.Log, root: Path) -> None:
    """`at(generation=g)` reads the stream as of commit g, unchanged by later appends and
    by a reopen; a branch's generation 0 is the parent prefix alone."""
    log = forked
    main = log.stream("main")
    view = main.at(generation=2)
    assert view.generation == 2
    assert rows(view.read()) == MAIN[:8]
    snapshot = view.read()
    fill(main, [10, 11, 12])
    assert view.read().equals(snapshot)
    assert main.at(generation=2).read().equals(snapshot)
    assert rows(log.stream("b").at(generation=0).read()) == MAIN[:6]
    with pytest.raises(ta.NotFoundError, match="no generation 99; its latest is"):
        main.at(generation=99)
    log.close()
    with ta.open(root) as reopened:
        assert reopened.stream("main").at(generation=2).read().equals(snapshot)


def test_as_of_timestamp(forked: ta.Log) -> None:
    """`as_of(t)` reads the latest generation committed at or before `t` (aware or naive
    datetime, or ISO 8601 text); before the stream existed it raises NotFoundError."""
    main = forked.stream("main")
    time.sleep(0.002)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(0.002)
    fill(main, [10])
    assert main.as_of(moment).next_offset == 10
    assert main.as_of(moment.replace(tzinfo=None)).next_offset == 10
    assert main.as_of(moment.isoformat()).next_offset == 10
    assert main.as_of(dt.datetime.now(dt.UTC)).next_offset == 11
    assert rows(main.as_of(moment).read()) == MAIN
    with pytest.raises(ta.NotFoundError, match="did not exist"):
        main.as_of(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def test_at_checkpoint_and_root_mismatch(forked: ta.Log, root: Path) -> None:
    """`at(checkpoint)` reads exactly the checkpointed prefix after later appends and a
    reopen; a checkpoint whose root differs from the commit's raises IntegrityError, and one
    of another stream is refused."""
    log = forked
    b = log.stream("b")
    cp = b.checkpoint(kind="eval-start")
    fill(b, [103, 104])
    assert rows(b.at(cp).read()) == B
    forged = ta.Checkpoint(cp.stream, cp.generation, cp.head_offset, "0" * 64)
    with pytest.raises(ta.IntegrityError, match=f"generation {cp.generation} has root {cp.root}"):
        b.at(forged)
    with pytest.raises(ta.InvalidInputError, match="checkpoint is of stream 'b', not 'main'"):
        log.stream("main").at(cp)
    log.close()
    with ta.open(root) as reopened:
        assert rows(reopened.stream("b").at(ta.Checkpoint.from_json(cp.to_json())).read()) == B


# --- bad inputs -------------------------------------------------------------------------------


def _raise(base: pa.Table, parents: list[pa.Table]) -> pa.Table:
    raise RuntimeError("the judge crashed")


RAISING = register(_raise)
RESERVED = register(lambda base, parents: pa.table({"x": [1], "_secret": [2]}))

BadCall = Callable[[ta.Log], object]


def bad(case: str, call: BadCall, error: type[Exception], message: str) -> Any:
    """One bad-input case: the call, the error it must raise and a regex of its message."""
    return pytest.param(call, error, message, id=case)


BAD_INPUTS = [
    bad(
        "merge-one-parent",
        lambda log: log.merge("m", ["main"]),
        ta.MergeConflictError,
        "at least 2 parent heads, got 1",
    ),
    bad(
        "merge-same-stream-twice",
        lambda log: log.merge("m", ["main", "main@3"]),
        ta.MergeConflictError,
        r"\['main'\] appear more than once",
    ),
    bad(
        "merge-unknown-stream",
        lambda log: log.merge("m", ["main", "mian"]),
        ta.StreamNotFoundError,
        r"'mian' does not exist.*did you mean 'main'",
    ),
    bad(
        "fast-forward-diverged",
        lambda log: log.merge("m", ["main", "b"], policy="fast_forward"),
        ta.MergeConflictError,
        r"none of main@9, b@8 does \(they diverged\)",
    ),
    bad(
        "base-not-ancestor",
        lambda log: log.merge("m", ["main", "b"], base="other@0"),
        ta.MergeConflictError,
        "base other@0 is not an ancestor of parent main@9",
    ),
    bad(
        "base-past-fork",
        lambda log: log.merge("m", ["main", "b"], base="main@7"),
        ta.MergeConflictError,
        "base main@7 is not an ancestor of parent b@8",
    ),
    bad(
        "unknown-policy",
        lambda log: log.merge("m", ["main", "b"], policy="newest"),
        ta.InvalidInputError,
        "unknown merge policy 'newest'; use one of pin, fast_forward",
    ),
    bad(
        "unregistered-resolver",
        lambda log: log.merge("m", ["main", "b"], policy="custom:unknown"),
        ta.InvalidInputError,
        r"no merge resolver is registered as 'unknown'.*register_merge_resolver",
    ),
    bad(
        "resolver-raises",
        lambda log: log.merge("m", ["main", "b"], policy=RAISING),
        ta.MergeConflictError,
        r"failed: RuntimeError\('the judge crashed'\)",
    ),
    bad(
        "resolver-reserved-column",
        lambda log: log.merge("m", ["main", "b"], policy=RESERVED),
        ta.MergeConflictError,
        r"reserved columns \['_secret'\]",
    ),
    bad(
        "merge-existing-name",
        lambda log: log.merge("b", ["main", "other"]),
        ta.AlreadyExistsError,
        "stream 'b' already exists",
    ),
    bad(
        "merge-into-a-parent",
        lambda log: log.merge("b", ["main", "b"]),
        ta.MergeConflictError,
        "cannot be one of its own parents",
    ),
    bad(
        "branch-past-end",
        lambda log: log.branch("x", at="main@10"),
        ta.InvalidInputError,
        "stream 'main' has no offset 10; its next offset is 10",
    ),
    bad(
        "branch-negative",
        lambda log: log.branch("x", at="main@-1"),
        ta.InvalidInputError,
        "stream 'main' has no offset -1",
    ),
    bad(
        "stream-branch-negative",
        lambda log: log.stream("main").branch("x", at=-3),
        ta.InvalidInputError,
        "stream 'main' has no offset -3",
    ),
    bad(
        "stream-branch-past-end",
        lambda log: log.stream("main").branch("x", at=99),
        ta.InvalidInputError,
        "has no offset 99; its next offset is 10",
    ),
    bad(
        "branch-existing-name",
        lambda log: log.branch("b", at="main@1"),
        ta.AlreadyExistsError,
        "stream 'b' already exists",
    ),
    bad(
        "branch-bad-name-empty-part",
        lambda log: log.branch("a//b", at="main@1"),
        ta.InvalidInputError,
        "empty, '.' or '..' path component",
    ),
    bad(
        "branch-bad-name-chars",
        lambda log: log.branch("bad name!", at="main@1"),
        ta.InvalidInputError,
        "contains ' !'; allowed characters",
    ),
    bad(
        "branch-bad-name-dotdot",
        lambda log: log.branch("../escape", at="main@1"),
        ta.InvalidInputError,
        "'..' path component",
    ),
    bad(
        "branch-unknown-stream",
        lambda log: log.branch("x", at="mian@1"),
        ta.StreamNotFoundError,
        r"'mian' does not exist.*did you mean 'main'",
    ),
    bad(
        "branch-empty-stream",
        lambda log: log.branch("x", at="empty"),
        ta.InvalidInputError,
        "'empty' has no records yet",
    ),
    bad(
        "branch-bad-labels",
        lambda log: log.branch("x", at="main@1", labels={"k": 1}),
        ta.InvalidInputError,
        "labels' must map strings to strings",
    ),
]


@pytest.fixture
def settled(forked: ta.Log) -> ta.Log:
    """`forked` plus a root `other` (1 record) and an empty root `empty`; all sealed."""
    fill(forked.create_stream("other"), [1])
    forked.create_stream("empty")
    return forked


@pytest.mark.parametrize(("call", "error", "message"), BAD_INPUTS)
def test_bad_input_raises_and_writes_nothing(
    settled: ta.Log, root: Path, call: BadCall, error: type[Exception], message: str
) -> None:
    """Each bad branch or merge raises the documented error with a message saying what is
    wrong, and leaves every file under the log root exactly as it was."""
    before = files(root)
    with pytest.raises(error, match=message):
        call(settled)
    assert files(root) == before
    assert sorted(lineage_rows(settled)) == ["b", "empty", "main", "other"]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda log: log.merge("m", ["main", "b"], policy="fast_forward"), id="ff"),
        pytest.param(lambda log: log.merge("m", ["main", "b"], base="other@0"), id="base"),
        pytest.param(lambda log: log.merge("m", ["main", "b"], policy=RAISING), id="resolver"),
    ],
)
def test_failed_merge_with_unsealed_parents_writes_nothing(
    settled: ta.Log, root: Path, call: BadCall
) -> None:
    """A merge that fails leaves the log untouched even when its parents have records in
    unsealed heads (the heads must not be sealed for a merge that is never created)."""
    parents = ("main", "b", "other")
    for name in parents:
        settled.stream(name).append({"x": 1})
    generations = [settled.stream(n).generation for n in parents]
    before = files(root)
    with pytest.raises(ta.MergeConflictError):
        call(settled)
    assert [settled.stream(n).generation for n in parents] == generations
    assert files(root) == before
