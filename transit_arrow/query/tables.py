"""The log's metadata as Arrow tables, from one snapshot (STYLE 10): the `transit_*` tables."""

from __future__ import annotations

from collections.abc import Callable, Collection

import pyarrow as pa

from ..commit import Commit
from ..engine.catalog import Catalog
from ..engine.read import COMMITS_SCHEMA, commits_table
from ..inspect import CHECKPOINTS_SCHEMA, SEGMENTS_SCHEMA, STREAMS_SCHEMA
from ..integrity import list_checkpoints
from ..lineage import LINEAGE_SCHEMA, lineage_row
from .snapshot import StreamPlan

__all__ = ["HISTORY_TABLES", "checkpoints_table", "history_tables"]

_COMMITS = pa.schema([pa.field("stream", pa.string()), *COMMITS_SCHEMA])


def _streams(plans: list[StreamPlan]) -> pa.Table:
    rows = [
        {
            "name": p.name,
            "kind": p.manifest.kind,
            "next_offset": p.next_offset,
            "committed_offset": p.manifest.next_offset,
            "generation": p.manifest.generation,
            "root": p.manifest.root,
            "segments": len(p.manifest.segments),
            "created_at": p.manifest.create.get("created_at"),
            "error": None,
        }
        for p in plans
    ]
    return pa.Table.from_pylist(rows, schema=STREAMS_SCHEMA)


def _commits(plans: list[StreamPlan]) -> pa.Table:
    # One table of every stream's commits (one chunk: DuckDB copies a table of thousands of
    # small chunks many times slower, and making one table per stream costs as much again).
    names: list[str] = []
    commits: list[Commit] = []
    for plan in plans:
        history = plan.catalog.commits(plan.name)[: plan.manifest.generation + 1]
        names += [plan.name] * len(history)
        commits += history
    table = commits_table(commits)
    return table.add_column(0, _COMMITS.field("stream"), pa.array(names, pa.string()))


def _segments(plans: list[StreamPlan]) -> pa.Table:
    rows = [{"stream": p.name, **seg.__dict__} for p in plans for seg in p.manifest.segments]
    return pa.Table.from_pylist(rows, schema=SEGMENTS_SCHEMA)


HISTORY_TABLES = ("transit_streams", "transit_lineage", "transit_commits", "transit_segments")


def history_tables(
    plans: list[StreamPlan], names: Collection[str] = HISTORY_TABLES
) -> dict[str, pa.Table]:
    """`transit_streams`, `transit_lineage`, `transit_commits` and `transit_segments` (those of
    them in `names`) for the streams of `plans`, each at its planned generation (they change
    only with the plans)."""
    makers: dict[str, Callable[[list[StreamPlan]], pa.Table]] = {
        "transit_streams": _streams,
        "transit_lineage": _lineage,
        "transit_commits": _commits,
        "transit_segments": _segments,
    }
    return {name: makers[name](plans) for name in HISTORY_TABLES if name in names}


def _lineage(plans: list[StreamPlan]) -> pa.Table:
    rows = [lineage_row(p.manifest, p.next_offset) for p in plans]
    return pa.Table.from_pylist(rows, schema=LINEAGE_SCHEMA)


def checkpoints_table(catalog: Catalog, plans: list[StreamPlan]) -> pa.Table:
    """`transit_checkpoints`: the recorded checkpoints of the streams of `plans`, up to each
    one's planned generation (checkpoints are recorded without a commit, so this can change
    while the plans do not)."""
    rows = [
        cp.to_dict()
        for p in plans
        for cp in list_checkpoints(catalog, p.name)
        if cp.generation <= p.manifest.generation
    ]
    return pa.Table.from_pylist(rows, schema=CHECKPOINTS_SCHEMA)
