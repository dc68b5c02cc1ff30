"""Child process of the materialization crash test (`tests/test_materialize.py`).

Not a test module (no `test_` prefix). It also defines the views the test uses, so parent and
child share one definition. Run as

    python tests/mv_child.py ROOT

It imports everything, writes `READY`, then blocks reading one line from stdin (so the parent
can start it early). It then opens the log and the views and refreshes them on every branch in
a loop until it is SIGKILLed, reporting each step as one line written with one `os.write`
(atomic on a pipe):

    READY                                        imports done, waiting for the go line
    START                                        log and views opened
    BEGIN <view> <branch>                        a refresh is about to start
    DONE <view> <branch> <processed> <to_offset>    ... and returned
    ERROR <message>                              an exception (exit status 3)
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import duckdb  # noqa: F401  (imported before READY, so that kills never land in imports)
import pyarrow as pa

import transit_arrow as ta
from transit_arrow.materialize import PartPolicy

#: Branches the child refreshes, in order.
BRANCHES = ("main", "side")

#: SQL views: name -> (query, key)
SQL_VIEWS: dict[str, tuple[str, list[str] | None]] = {
    "agg": (
        "SELECT tool, count(*) AS n, sum(x) AS sx, avg(lat) AS mean, min(x) AS lo, "
        "bool_or(ok) AS any_ok, arg_max(x, _offset) AS last_x FROM records GROUP BY tool",
        None,
    ),
    "sample": ("SELECT _offset, tool, x FROM records WHERE x % 97 = 0", None),
    "latest": ("SELECT tool, x, _offset FROM records WHERE ok", ["tool"]),
    "median": ("SELECT tool, median(lat) AS m FROM records GROUP BY tool", None),
}
#: Small parts merge often, so kills also land inside merges of filter views' parts.
POLICY = PartPolicy(fanin=3, base_rows=64)
#: The reducer view's name, and the schema of its state.
REDUCER_VIEW = "count"
COUNT_SCHEMA = pa.schema([("tool", pa.string()), ("n", pa.int64())])


def running_count(state: pa.Table | None, batch: pa.Table) -> pa.Table:
    """Reducer: records per tool so far, as a table `(tool, n)` sorted by tool."""
    parts = [batch.group_by("tool").aggregate([("tool", "count")]).rename_columns(["tool", "n"])]
    if state is not None:
        parts.append(state)
    both = pa.concat_tables([p.cast(COUNT_SCHEMA) for p in parts])
    total = both.group_by("tool").aggregate([("n", "sum")]).rename_columns(["tool", "n"])
    return total.sort_by("tool")


def define_views(log: ta.Log) -> dict[str, ta.Materialization]:
    """Define every view of the crash test on stream `main`."""
    views = {
        name: log.materialize(name, "main", query=query, key=key)
        for name, (query, key) in SQL_VIEWS.items()
    }
    views[REDUCER_VIEW] = log.materialize(REDUCER_VIEW, "main", reducer=running_count)
    for mv in views.values():
        mv.part_policy = POLICY
    return views


def open_views(log: ta.Log) -> dict[str, ta.Materialization]:
    """Open the stored views (as another process would)."""
    views = {name: log.materialization(name) for name in SQL_VIEWS}
    views[REDUCER_VIEW] = log.materialization(REDUCER_VIEW, reducer=running_count)
    for mv in views.values():
        mv.part_policy = POLICY
    return views


def tool_counts(table: pa.Table) -> dict[str, int]:
    """`{tool: records}` of a replay, computed directly."""
    counted = table.group_by("tool").aggregate([("tool", "count")])
    return dict(zip(counted["tool"].to_pylist(), counted["tool_count"].to_pylist(), strict=True))


def emit(line: str) -> None:
    """Write one whole line to stdout with a single write (atomic on a pipe)."""
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def main() -> None:
    root = sys.argv[1]
    emit("READY")
    if not sys.stdin.readline().strip():
        os._exit(0)  # the parent went away before handing out work
    try:
        log = ta.open(root)
        views = open_views(log)
        emit("START")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for branch in BRANCHES:
                for name, mv in views.items():
                    emit(f"BEGIN {name} {branch}")
                    report = mv.refresh(branch)
                    emit(f"DONE {name} {branch} {report.records_processed} {report.to_offset}")
    except BaseException as e:
        emit(f"ERROR {type(e).__name__}: {e}".replace("\n", " | "))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    emit("ERROR the child ran out of time without being killed")
    os._exit(4)  # never close the log: the parent expected to kill us


if __name__ == "__main__":
    main()
