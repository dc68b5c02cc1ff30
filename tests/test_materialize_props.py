"""Property test: incremental views equal a full recompute on every branch (DESIGN §9).

A Hypothesis state machine appends random records (a group key from a small set with NULLs,
ints, floats with NULLs, bools) to random streams, seals heads, forks branches at random
offsets, merges pairs of streams with `concat` or `interleave`, and refreshes a fixed set of
views on random streams. After every refresh, each view read on that stream must equal the same
query run from scratch by DuckDB over `log.stream(branch).read()`, and each refresh report must
be consistent: it covers the whole stream, reads exactly the records after the checkpoint it
resumed from, and resumes from at least the furthest checkpoint the model knows is usable (the
branch's own, or an ancestor's at or before the fork point).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import transit_arrow as ta
from transit_arrow.materialize import PartPolicy

SCHEMA = pa.schema([("g", pa.string()), ("i", pa.int64()), ("f", pa.float64()), ("b", pa.bool_())])

#: name -> (query, compare in order?)
QUERIES: dict[str, tuple[str, bool]] = {
    "filter": ("SELECT _offset, g, i, f FROM records WHERE b OR i % 3 = 0", False),
    "latest": ("SELECT g, i, _offset FROM records WHERE i % 2 = 0", False),
    "agg": (
        "SELECT g, count(*) AS n, count(f) AS nf, sum(i) AS si, sum(f) AS sf, min(i) AS lo, "
        "max(f) AS hi, avg(f) AS af, avg(i) AS ai, bool_and(b) AS ba, bool_or(b) AS bo, "
        "arg_max(f, _offset) AS lf, arg_max(i, _offset) AS li FROM records GROUP BY g",
        False,
    ),
    "two_keys": (
        "SELECT g, b, count(*) AS n, min(f) AS lo, max(i) AS hi, sum(f) AS s "
        "FROM records WHERE i > -20 GROUP BY g, b",
        False,
    ),
    "no_group": (
        "SELECT count(*), sum(i), avg(f), min(f), max(i), bool_or(b), arg_max(g, _offset) "
        "FROM records",
        False,
    ),
    "mix": (
        "SELECT g, sum(i) AS s, count(*) AS n FROM records GROUP BY g "
        "HAVING count(*) > 1 AND max(i) > -40 ORDER BY s DESC, g NULLS FIRST LIMIT 3",
        True,
    ),
    "full": (
        "SELECT g, median(f) AS m, count(DISTINCT i) AS d FROM records GROUP BY g",
        False,
    ),
}
#: Upserting views: name -> key (the last row per key by `_offset`).
KEYS = {"latest": ["g"]}
#: Parts merge at 2 tiny ones, so histories of a dozen steps go through merges.
POLICY = PartPolicy(fanin=2, base_rows=3, max_tier=3)
EXPECTED_MODES = {
    "filter": "filter",
    "latest": "filter",
    "agg": "aggregate",
    "two_keys": "aggregate",
    "no_group": "aggregate",
    "mix": "aggregate",
    "full": "full",
}
MAX_STREAMS = 6
_REUSED = re.compile(r"(?P<stream>.+)@(?P<offset>-?\d+) \(generation \d+\)")

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "g": st.sampled_from(["a", "b", "c", None]),
            "i": st.integers(-50, 50),
            "f": st.one_of(
                st.none(), st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)
            ),
            "b": st.booleans(),
        }
    ),
    min_size=1,
    max_size=12,
)


#: One connection for every recompute (opening one costs ~10-40 ms).
_CON = duckdb.connect()


def recompute(log: ta.Log, branch: str, query: str, key: list[str] | None = None) -> pa.Table:
    """The query computed from scratch by DuckDB over the branch's whole replay (the last row
    per `key` by `_offset` for an upserting view)."""
    if key:
        query = (
            f"SELECT * FROM ({query}) QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(key)} ORDER BY _offset DESC) = 1"
        )
    _CON.register("records", log.stream(branch).read())
    try:
        return _CON.sql(query).to_arrow_table()
    finally:
        _CON.unregister("records")


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, str(v)) for v in row if not isinstance(v, float))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        # Float sums differ in the last bits with the order of additions.
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def assert_same(got: pa.Table, want: pa.Table, *, ordered: bool, what: str) -> None:
    """Same column names and rows (in order when `ordered`), floats within tolerance."""
    assert got.column_names == want.column_names, what
    got_rows = [tuple(r.values()) for r in got.to_pylist()]
    want_rows = [tuple(r.values()) for r in want.to_pylist()]
    if not ordered:
        got_rows.sort(key=_sort_key)
        want_rows.sort(key=_sort_key)
    assert len(got_rows) == len(want_rows), (what, got_rows, want_rows)
    for g, w in zip(got_rows, want_rows, strict=True):
        assert all(map(_same_value, g, w)), (what, g, w)


class MaterializeMachine(RuleBasedStateMachine):
    """Random histories of appends, seals, branches, merges and refreshes."""

    def __init__(self) -> None:
        super().__init__()
        self.log = ta.open(f"memory://mv-props-{uuid.uuid4().hex}", durability="memory")
        main = self.log.create_stream("main", schema=SCHEMA)
        main.append([{"g": "a", "i": 1, "f": 0.5, "b": True}])
        main.flush()  # views can only be defined over committed columns
        self.streams = ["main"]
        #: branch -> (parent, fork offset); roots and merges have no entry (no lower bound)
        self.links: dict[str, tuple[str, int]] = {}
        #: stream -> offsets of the checkpoints every incremental view holds
        self.checkpoints: dict[str, set[int]] = {"main": set()}
        self.views = {
            name: self.log.materialize(name, "main", query=query, key=KEYS.get(name))
            for name, (query, _) in QUERIES.items()
        }
        for mv in self.views.values():
            mv.part_policy = POLICY  # filter views' parts merge every few refreshes

    def teardown(self) -> None:
        self.log.close()
        # A memory:// log keeps its heads in a temporary folder made for it: remove it.
        local = self.log.local_dir
        if local.name.startswith("transit-memory-") and local.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(local, ignore_errors=True)

    def _pick(self, k: int) -> str:
        return self.streams[k % len(self.streams)]

    # --- model ------------------------------------------------------------------------------

    def _lower_bound(self, stream: str, through: int) -> int:
        """The furthest checkpoint offset the model knows to be usable for `stream` through
        `through` (-1: none)."""
        link = self.links.get(stream)
        if link is not None and through <= link[1]:
            return self._lower_bound(link[0], through)
        best = max((o for o in self.checkpoints[stream] if o <= through), default=-1)
        if link is not None:
            best = max(best, self._lower_bound(*link))
        return best

    # --- rules ------------------------------------------------------------------------------

    @initialize(rows=rows_strategy)
    def start(self, rows: list[dict[str, Any]]) -> None:
        """Give `main` some history and checkpoint every view on it, so that later branches
        and merges have ancestor checkpoints to resume from."""
        self.log.stream("main").append(rows)
        self._refresh("main")

    @rule(k=st.integers(0, 1000), rows=rows_strategy)
    def append(self, k: int, rows: list[dict[str, Any]]) -> None:
        """Append one call's records to a random stream."""
        self.log.stream(self._pick(k)).append(rows)

    @rule(k=st.integers(0, 1000))
    def seal(self, k: int) -> None:
        """Seal a random stream's head into a segment."""
        self.log.stream(self._pick(k)).flush()

    @precondition(lambda self: len(self.streams) < MAX_STREAMS)
    @rule(k=st.integers(0, 1000), where=st.floats(0, 1), rows=st.none() | rows_strategy)
    def branch(self, k: int, where: float, rows: list[dict[str, Any]] | None) -> None:
        """Fork a random stream at a random offset (then append to the fork and refresh it,
        when `rows` are given)."""
        parent = self._pick(k)
        last = self.log.stream(parent).next_offset - 1
        offset = min(last, int(where * (last + 1)))
        name = f"s{len(self.streams)}"
        self.log.branch(name, at=f"{parent}@{offset}")
        self.streams.append(name)
        self.links[name] = (parent, offset)
        self.checkpoints[name] = set()
        if rows is not None:
            self.log.stream(name).append(rows)
            self._refresh(name)

    @precondition(lambda self: 2 <= len(self.streams) < MAX_STREAMS)
    @rule(
        k=st.integers(0, 1000),
        j=st.integers(1, 1000),
        policy=st.sampled_from(["concat", "interleave"]),
        then_refresh=st.booleans(),
    )
    def merge(self, k: int, j: int, policy: str, then_refresh: bool) -> None:
        """Merge two distinct streams (and maybe refresh the merge right away)."""
        first = k % len(self.streams)
        second = (first + 1 + j % (len(self.streams) - 1)) % len(self.streams)
        name = f"s{len(self.streams)}"
        self.log.merge(name, parents=[self.streams[first], self.streams[second]], policy=policy)
        self.streams.append(name)
        self.checkpoints[name] = set()
        if then_refresh:
            self._refresh(name)

    @rule(k=st.integers(0, 1000), newest=st.booleans())
    def refresh(self, k: int, newest: bool) -> None:
        """Refresh every view on a random stream (or the newest one)."""
        self._refresh(self.streams[-1] if newest else self._pick(k))

    def _refresh(self, branch: str) -> None:
        """Refresh every view on `branch`: each equals a full recompute, each report is
        consistent with the model's checkpoints."""
        stream = self.log.stream(branch)
        stream.flush()
        last = stream.next_offset - 1
        bound = self._lower_bound(branch, last)
        for name, mv in self.views.items():
            query, ordered = QUERIES[name]
            report = mv.refresh(branch)
            what = f"{name} on {branch}: {report}"
            assert report.branch == branch, what
            assert report.mode == EXPECTED_MODES[name], what
            assert report.to_offset == last, what
            if report.mode == "full":
                assert not report.incremental, what
                assert report.reused_checkpoint is None, what
                assert report.records_processed == last + 1, what
            else:
                assert report.incremental, what
                resumed = -1
                if report.reused_checkpoint is not None:
                    match = _REUSED.fullmatch(report.reused_checkpoint)
                    assert match is not None, what
                    resumed = int(match["offset"])
                    assert resumed in self.checkpoints[match["stream"]], what
                assert resumed >= bound, (what, bound)
                assert report.records_processed == last - resumed, what
                expected_from = resumed + 1 if last > resumed else None
                assert report.from_offset == expected_from, what
            want = recompute(self.log, branch, query, KEYS.get(name))
            assert_same(mv.read(branch), want, ordered=ordered, what=what)
        self.checkpoints[branch].add(last)

    @invariant()
    def views_are_listed(self) -> None:
        """Every view is refreshed exactly on the streams the model refreshed."""
        refreshed = sorted(s for s, offsets in self.checkpoints.items() if offsets)
        for mv in self.views.values():
            assert mv.branches() == refreshed


class ThoroughMaterializeMachine(MaterializeMachine):
    """The same machine, run with many more examples (marked slow)."""


#: The default run: a few examples (each is a dozen steps of every kind). The slow variant
#: below runs the same rules with 5x the examples.
MaterializeMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMaterializeMachine = MaterializeMachine.TestCase

ThoroughMaterializeMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestThoroughMaterializeMachine = pytest.mark.slow(ThoroughMaterializeMachine.TestCase)
