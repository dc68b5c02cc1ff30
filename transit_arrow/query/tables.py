"""The log's metadata as Arrow tables, from one snapshot (STYLE 10): the `transit_*` tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ..integrity import list_checkpoints
from ..lineage import LINEAGE_SCHEMA, lineage_row
from ..log import _CHECKPOINTS_SCHEMA, _STREAMS_SCHEMA
from ..record import TIMESTAMP_TYPE
from ..view import _COMMITS_SCHEMA
from .snapshot import StreamPlan

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["SEGMENTS_SCHEMA", "checkpoints_table", "history_tables"]

SEGMENTS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("stream", pa.string()),
        ("path", pa.string()),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("records", pa.int64()),
        ("bytes", pa.int64()),
        ("blake3", pa.string()),
        ("min_timestamp", TIMESTAMP_TYPE),
        ("max_timestamp", TIMESTAMP_TYPE),
    ]
)
_COMMITS = pa.schema([pa.field("stream", pa.string()), *_COMMITS_SCHEMA])


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
        }
        for p in plans
    ]
    return pa.Table.from_pylist(rows, schema=_STREAMS_SCHEMA)


def _commits(plans: list[StreamPlan]) -> pa.Table:
    tables = []
    for plan in plans:
        commits = plan.readable.commits()
        stream = pa.repeat(pa.scalar(plan.name), commits.num_rows)
        tables.append(commits.add_column(0, _COMMITS.field("stream"), stream))
    return pa.concat_tables(tables) if tables else _COMMITS.empty_table()


def _segments(plans: list[StreamPlan]) -> pa.Table:
    rows = [{"stream": p.name, **seg.__dict__} for p in plans for seg in p.manifest.segments]
    return pa.Table.from_pylist(rows, schema=SEGMENTS_SCHEMA)


def history_tables(plans: list[StreamPlan]) -> dict[str, pa.Table]:
    """`transit_streams`, `transit_lineage`, `transit_commits` and `transit_segments` for the
    streams of `plans`, each at its planned generation (they change only with the plans)."""
    lineage = [lineage_row(p.manifest, p.next_offset) for p in plans]
    return {
        "transit_streams": _streams(plans),
        "transit_lineage": pa.Table.from_pylist(lineage, schema=LINEAGE_SCHEMA),
        "transit_commits": _commits(plans),
        "transit_segments": _segments(plans),
    }


def checkpoints_table(log: Log, plans: list[StreamPlan]) -> pa.Table:
    """`transit_checkpoints`: the recorded checkpoints of the streams of `plans`, up to each
    one's planned generation (checkpoints are recorded without a commit, so this can change
    while the plans do not)."""
    rows = [
        cp.to_dict()
        for p in plans
        for cp in list_checkpoints(log, p.name)
        if cp.generation <= p.manifest.generation
    ]
    return pa.Table.from_pylist(rows, schema=_CHECKPOINTS_SCHEMA)
