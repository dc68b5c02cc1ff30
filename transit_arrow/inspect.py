"""The log's metadata as Arrow tables, with their schemas in one place (STYLE 10).

`streams_table` and `checkpoints_table` back `Log.streams()` and `Log.checkpoints()`; the
query layer builds its `transit_*` tables with the same schemas. A stream whose commits cannot
be read (damaged or missing files) is reported as a row with its `error`, never by raising for
the whole log.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .engine.catalog import Catalog, bulk
from .errors import TransitError
from .integrity import list_checkpoints
from .record import TIMESTAMP_TYPE

__all__ = [
    "CHECKPOINTS_SCHEMA",
    "SEGMENTS_SCHEMA",
    "STREAMS_SCHEMA",
    "checkpoints_table",
    "stream_row",
    "streams_table",
]

CHECKPOINTS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("stream", pa.string()),
        ("generation", pa.int64()),
        ("head_offset", pa.int64()),
        ("root", pa.string()),
        ("kind", pa.string()),
        ("created_at", pa.string()),
    ]
)

STREAMS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("name", pa.string()),
        ("kind", pa.string()),
        ("next_offset", pa.int64()),
        ("committed_offset", pa.int64()),
        ("generation", pa.int64()),
        ("root", pa.string()),
        ("segments", pa.int64()),
        ("created_at", pa.string()),
        ("error", pa.string()),
    ]
)

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


def stream_row(catalog: Catalog, name: str) -> dict[str, Any]:
    """One `streams` row; a stream whose history cannot be read gets only its `error`."""
    try:
        manifest = catalog.manifest(name, refresh=True)
        next_offset = catalog.next_offset(name, manifest)
    except TransitError as e:
        return {"name": name, "error": f"{type(e).__name__}: {e}"}
    return {
        "name": name,
        "kind": manifest.kind,
        "next_offset": next_offset,
        "committed_offset": manifest.next_offset,
        "generation": manifest.generation,
        "root": manifest.root,
        "segments": len(manifest.segments),
        "created_at": manifest.create.get("created_at"),
        "error": None,
    }


def streams_table(catalog: Catalog) -> pa.Table:
    """One row per stream (see `Log.streams`)."""
    with bulk():
        rows = [stream_row(catalog, name) for name in catalog.names()]
        return pa.Table.from_pylist(rows, schema=STREAMS_SCHEMA)


def checkpoints_table(catalog: Catalog, name: str | None = None) -> pa.Table:
    """Recorded checkpoints of one stream, or of all (see `Log.checkpoints`)."""
    names = [name] if name is not None else catalog.names()
    rows = [cp.to_dict() for n in names for cp in list_checkpoints(catalog, n)]
    return pa.Table.from_pylist(rows, schema=CHECKPOINTS_SCHEMA)
