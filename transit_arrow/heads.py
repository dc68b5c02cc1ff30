"""Orphaned heads: acknowledged records that no longer continue their stream, kept aside.

A writer never deletes a head whose records are not committed. When a head cannot continue the
stream it is *set aside*, moved to `<local>/streams/<enc>/set-aside/` with a sidecar
(`<file>.orphan.json`) saying why (`kind`):

- `fenced`: its writer was fenced by a `take_over=True` writer (the fenced writer sets its own
  heads aside when it notices; a writer opening the local dir later does it otherwise);
- `superseded`: another writer committed those offsets first (the head's writer was presumed
  dead, e.g. it crashed and the stream was written from another local dir);
- `gap`: it does not start where the stream continues (an earlier head was set aside);
- `damaged`: a frame fails its checksum with valid frames after it. The valid frames before
  the damage stay in the stream; a copy of the whole file is set aside.

`orphaned_heads(catalog)` lists them (and heads still in a heads folder that a writer will set
aside when it opens the stream there). `reappend_orphaned(catalog, path, branch=...)` appends
the records one still holds to a branch: created at the offset before the orphan's first
record when it does not exist, so the records keep the offsets their writer acknowledged
whenever no gap precedes them. The sidecar then records where they went, and a second
re-append of the same file is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .commit import now_rfc3339
from .engine.catalog import Catalog
from .engine.writer import Ack, writer_for
from .errors import InvalidInputError, NotFoundError
from .layout import heads_dir, set_aside_dir
from .lineage import create_branch
from .manifest import create_action
from .names import decode_stream_name, validate_stream_name
from .segments.head import (
    HeadFile,
    by_priority,
    continues,
    fenced_epoch,
    load_head,
    orphan_records,
    read_heads,
    read_set_aside,
    update_set_aside,
)
from .typing import Durability

__all__ = ["ORPHANED_SCHEMA", "orphaned_heads", "reappend_orphaned"]

ORPHANED_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("stream", pa.string()),
        ("path", pa.string()),
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("records", pa.int64()),
        ("epoch", pa.int64()),
        ("set_aside", pa.bool_()),
        ("set_aside_at", pa.string()),
        ("reappended_to", pa.string()),
        ("reappended_first_offset", pa.int64()),
        ("reappended_last_offset", pa.int64()),
    ]
)


def _stream_dirs(catalog: Catalog) -> list[tuple[str, Path]]:
    root = catalog.local_dir / "streams"
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        name = decode_stream_name(entry.name)
        if name is not None and entry.is_dir():
            out.append((name, entry))
    return out


def orphaned_heads(catalog: Catalog, stream: str | None = None) -> pa.Table:
    """Every orphaned head of this machine's local dir (of `stream`, or of all streams).

    Rows: `stream`, `path`, `kind` (fenced, superseded, gap, damaged), `reason`, the offsets
    and count of the records it holds that are not in the stream, the `epoch` of the writer
    that wrote it, `set_aside` (False: still in the heads folder, set aside when a writer next
    opens the stream here), `set_aside_at`, and where a re-append put its records.
    """
    rows: list[dict[str, Any]] = []
    for name, _ in _stream_dirs(catalog):
        if stream is not None and name != stream:
            continue
        for path, info in read_set_aside(set_aside_dir(catalog.local_dir, name)):
            rows.append(_row(name, path, info))
        rows.extend(_stranded(catalog, name))
    rows.sort(key=lambda r: (r["stream"], r["first_offset"] or 0, r["path"]))
    return pa.Table.from_pylist(rows, schema=ORPHANED_SCHEMA)


def _row(name: str, path: Path, info: dict[str, Any]) -> dict[str, Any]:
    records = info.get("records")
    first, last = info.get("first_offset"), info.get("last_offset")
    if records is None:  # set aside by an earlier version: count what the file holds
        try:
            _, batches = orphan_records(path)
        except (OSError, pa.ArrowException):
            batches = []
        offsets = [int(o) for b in batches for o in b.column(0).to_numpy()]
        records = len(offsets)
        first, last = (min(offsets), max(offsets)) if offsets else (None, None)
    return {
        "stream": info.get("stream", name),
        "path": str(path),
        "kind": info.get("kind", "unknown"),
        "reason": info.get("reason", ""),
        "first_offset": first,
        "last_offset": last,
        "records": records,
        "epoch": info.get("epoch"),
        "set_aside": True,
        "set_aside_at": info.get("set_aside_at"),
        "reappended_to": info.get("reappended_to"),
        "reappended_first_offset": info.get("reappended_first_offset"),
        "reappended_last_offset": info.get("reappended_last_offset"),
    }


def _stranded(catalog: Catalog, name: str) -> list[dict[str, Any]]:
    """Heads still in the heads folder that will not continue the stream (read-only)."""
    try:
        found = read_heads(heads_dir(catalog.local_dir, name))
        if not found:
            return []
        manifest = catalog.manifest(name, refresh=True)
        commits = catalog.commits(name)
    except (OSError, NotFoundError):
        return []
    fenced = fenced_epoch(commits)
    sealed = {
        (a["first_offset"], c["writer"].get("epoch")): a["last_offset"]
        for c in commits
        for a in c["actions"]
        if a.get("type") == "add_segment"
    }
    rows = []
    expected = manifest.next_offset
    for head in by_priority(found):
        if _committed(head, sealed):
            continue
        if continues(head, expected, fenced) and head.status != "damaged":
            expected = head.end_offset if head.records else expected
            continue
        if head.records or head.status == "damaged":
            rows.append(_stranded_row(name, head, fenced, manifest.next_offset))
    return rows


def _committed(head: HeadFile, sealed: dict[tuple[int, Any], int]) -> bool:
    return any(
        first == head.start_offset
        and last >= head.end_offset - 1
        and (head.epoch is None or epoch == head.epoch)
        for (first, epoch), last in sealed.items()
    )


def _stranded_row(name: str, head: HeadFile, fenced: int, expected: int) -> dict[str, Any]:
    if head.status == "damaged":
        kind, reason = "damaged", head.detail
    elif head.epoch is not None and head.epoch <= fenced:
        kind, reason = "fenced", f"its writer (epoch {head.epoch}) was fenced by a newer writer"
    elif head.start_offset < expected:
        kind, reason = "superseded", f"another writer committed from offset {head.start_offset}"
    else:
        kind, reason = (
            "gap",
            f"it starts at {head.start_offset}, the stream continues at {expected}",
        )
    batches = head.batches
    if head.status == "damaged":  # what would be set aside: the valid frames after the damage
        try:
            batches = load_head(head.path, salvage=True).batches
        except OSError:
            batches = []
    offsets = (
        [int(o) for b in batches for o in b.column(0).to_numpy() if o >= head.end_offset]
        if head.status == "damaged"
        else [int(o) for b in batches for o in b.column(0).to_numpy()]
    )
    return {
        "stream": name,
        "path": str(head.path),
        "kind": kind,
        "reason": f"{reason} (still in the heads folder: a writer opening the stream here sets "
        "it aside)",
        "first_offset": min(offsets) if offsets else None,
        "last_offset": max(offsets) if offsets else None,
        "records": len(offsets),
        "epoch": head.epoch,
        "set_aside": False,
        "set_aside_at": None,
        "reappended_to": None,
        "reappended_first_offset": None,
        "reappended_last_offset": None,
    }


def reappend_orphaned(
    catalog: Catalog,
    path: str | Path,
    *,
    branch: str,
    durability: Durability = "local",
) -> Ack:
    """Append the records set-aside head `path` holds to stream `branch`, keeping their
    `_timestamp` and `_headers`.

    When `branch` does not exist it is created as a branch of the head's stream where the
    orphan's records continued the stream as their writer saw it (the offset before the head's
    first record; for a damaged head, the last record kept before the damage), or at the
    stream's last record if it is shorter now, or as a root stream when that is before offset
    0; the reason is recorded. Returns the
    `Ack` of the append; the sidecar records where the records went.

    Raises:
        NotFoundError: `path` is not a set-aside head of this local dir.
        InvalidInputError: it was re-appended already, or it holds no record.
    """
    validate_stream_name(branch)
    target = Path(path)
    entry = None
    for name, _ in _stream_dirs(catalog):
        for found, info in read_set_aside(set_aside_dir(catalog.local_dir, name)):
            if found == target or found.resolve() == target.resolve():
                entry = (name, found, info)
    if entry is None:
        raise NotFoundError(
            f"{path} is not a set-aside head of {catalog.local_dir} (see Log.orphaned_heads())"
        )
    name, found, info = entry
    name = info.get("stream", name)
    if info.get("reappended_to"):
        raise InvalidInputError(
            f"{found} was re-appended already, to {info['reappended_to']!r} (offsets "
            f"{info.get('reappended_first_offset')}..{info.get('reappended_last_offset')})"
        )
    user, batches = orphan_records(found)
    table = pa.Table.from_batches(batches) if batches else None
    if table is not None and info.get("kind") == "damaged" and info.get("first_offset") is not None:
        keep = np.asarray(table.column("_offset").to_numpy() >= info["first_offset"])
        table = table.filter(pa.array(keep))
    if table is None or not table.num_rows:
        raise InvalidInputError(f"{found} holds no record to re-append")
    first = int(table.column("_offset")[0].as_py())
    if not catalog.exists(branch):
        _create_target(catalog, branch, name, first, user, found, info)
    records = table.drop_columns(["_offset"])
    ack = writer_for(catalog, branch).append(records, durability)
    update_set_aside(
        found,
        {
            "reappended_to": branch,
            "reappended_first_offset": ack.first_offset,
            "reappended_last_offset": ack.last_offset,
            "reappended_at": now_rfc3339(),
        },
    )
    return ack


def _create_target(
    catalog: Catalog,
    branch: str,
    stream: str,
    first: int,
    user: pa.Schema,
    path: Path,
    info: dict[str, Any],
) -> None:
    reason = f"re-appended orphaned head {path.name} ({info.get('kind', 'orphaned')})"
    at = info.get("branch_at")
    at = first - 1 if not isinstance(at, int) else min(at, first - 1)
    if catalog.exists(stream):
        at = min(at, catalog.manifest(stream, refresh=True).next_offset - 1)
    if at >= 0:
        create_branch(
            catalog, branch, f"{stream}@{at}", actor="transit", reason=reason, labels=None
        )
        return
    metadata = {"actor": "transit", "reason": reason, "labels": {}}
    catalog.create(branch, create_action("root", schema=user, metadata=metadata, start_offset=0))
