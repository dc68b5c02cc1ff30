"""Lineage: branches, positions, ancestry and the lineage table (DESIGN §6-7).

Every stream has at most one *link*: the position whose replay is the prefix of its own (a
branch's fork point, a merge's base, or a fast-forward merge's winner). Links form a forest,
so the replays that share history are exactly the ones whose link chains meet; the nearest
common ancestor of two positions is where their chains first meet.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .commit import now_rfc3339
from .errors import AlreadyExistsError, InvalidInputError
from .manifest import Manifest
from .names import validate_stream_name
from .record import schema_to_json
from .replay import Position, link_of

if TYPE_CHECKING:
    from .log import Log
    from .stream import Stream

__all__ = [
    "ancestry_table",
    "children_table",
    "common_ancestor",
    "create_branch",
    "is_prefix",
    "lineage_table",
    "parse_position",
    "pin",
]

_POSITION_RE = re.compile(r"(?P<stream>[^@]+)(?:@(?P<offset>-?\d+))?")


def parse_position(text: object, default_stream: str | None = None) -> tuple[str, int | None]:
    """Parse `"stream@N"` (or `"stream"`, or an int N when a default stream is given)."""
    if isinstance(text, int) and not isinstance(text, bool) and default_stream is not None:
        return default_stream, text
    if not isinstance(text, str):
        raise InvalidInputError(f"a position is written 'stream@offset', not {text!r}")
    match = _POSITION_RE.fullmatch(text)
    if match is None:
        raise InvalidInputError(f"a position is written 'stream@offset', not {text!r}")
    name = validate_stream_name(match["stream"])
    offset = match["offset"]
    return name, int(offset) if offset is not None else None


def provisional(log: Log, name: str, offset: int | None, *, allow_empty: bool = False) -> Position:
    """Resolve and check `name@offset` without sealing anything (for validation).

    The generation and root are the latest committed ones; `pin` makes them exact.
    """
    return _resolve(log, name, offset, allow_empty=allow_empty, seal=False)


def pin(log: Log, name: str, offset: int | None, *, allow_empty: bool = False) -> Position:
    """Pin `name@offset` to the stream's latest generation, sealing its head if needed.

    `offset=None` means the stream's last record. The offset must be committed or in a head
    this process writes (which is then sealed first), so a position only names immutable
    history.
    """
    return _resolve(log, name, offset, allow_empty=allow_empty, seal=True)


def _resolve(log: Log, name: str, offset: int | None, *, allow_empty: bool, seal: bool) -> Position:
    stream = log.stream(name)
    manifest = log._manifest(name, refresh=True)
    next_offset = stream.next_offset
    if offset is None:
        offset = next_offset - 1
        if offset < 0 and not allow_empty:
            raise InvalidInputError(f"stream {name!r} has no records yet; append some first")
    elif not 0 <= offset < next_offset:
        raise InvalidInputError(
            f"stream {name!r} has no offset {offset}; its next offset is {next_offset}"
        )
    if offset >= manifest.next_offset:
        if stream._writer is None:
            raise InvalidInputError(
                f"offset {offset} of stream {name!r} is not committed yet (it is in the unsealed "
                "head of another writer); flush that writer first"
            )
        if not seal:
            return Position(name, offset, manifest.generation, manifest.root)
        stream.flush()
        manifest = log._manifest(name, refresh=True)
    return Position(name, offset, manifest.generation, manifest.root)


def _metadata(actor: str | None, reason: str | None, labels: dict[str, str] | None) -> Any:
    from .log import _check_metadata

    return _check_metadata({"actor": actor, "reason": reason, "labels": labels or {}})


def create_branch(
    log: Log,
    name: str,
    at: object,
    *,
    actor: str | None,
    reason: str | None,
    labels: dict[str, str] | None,
    default_parent: str | None = None,
) -> Stream:
    """Create branch `name` of `at` ("parent@N"): one commit, no byte copied."""
    validate_stream_name(name)
    metadata = _metadata(actor, reason, labels)
    parent_name, offset = parse_position(at, default_parent)
    if log._exists(name):
        raise AlreadyExistsError(f"stream {name!r} already exists in {log.uri}")
    position = pin(log, parent_name, offset)
    parent = log._manifest_at(parent_name, position.generation)
    create = {
        "type": "create",
        "kind": "branch",
        "parent": position.to_json(),
        "merge": None,
        "schema": schema_to_json(parent.schema) if parent.schema is not None else None,
        "metadata": metadata,
        "created_at": now_rfc3339(),
        "start_offset": position.offset + 1,
    }
    return log._create(name, create)


def chain(log: Log, position: Position) -> list[Position]:
    """The link chain of a replay point, nearest first, after normalisation.

    A point at or before its stream's link offset is the same replay as the link's stream
    at that offset, so it is moved up first.
    """
    out = []
    current: Position | None = position
    while current is not None:
        manifest = log._manifest_at(current.stream, current.generation)
        link = link_of(manifest)
        if link is not None and current.offset <= link.offset:
            current = Position(link.stream, current.offset, link.generation, link.root)
            continue
        out.append(current)
        if link is None:
            break
        current = link
    return out


def is_prefix(log: Log, prefix: Position, of: Position) -> bool:
    """Whether the replay through `prefix` is a prefix of the replay through `of`."""
    if prefix.offset < 0:
        return True
    head = chain(log, prefix)[0]
    return any(p.stream == head.stream and p.offset >= head.offset for p in chain(log, of))


def common_ancestor(log: Log, a: Position, b: Position) -> Position | None:
    """The nearest common ancestor position of two replay points (None: no shared history)."""
    other = {p.stream: p for p in chain(log, b)}
    for p in chain(log, a):
        q = other.get(p.stream)
        if q is not None:
            mine = p if p.offset <= q.offset else q
            return chain(log, mine)[0]
    return None


# --- metadata tables --------------------------------------------------------------------------

_POS_TYPE = pa.struct(
    [
        ("stream", pa.string()),
        ("offset", pa.int64()),
        ("generation", pa.int64()),
        ("root", pa.string()),
    ]
)
LINEAGE_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("name", pa.string()),
        ("kind", pa.string()),
        ("parent_stream", pa.string()),
        ("parent_offset", pa.int64()),
        ("parent_generation", pa.int64()),
        ("parent_root", pa.string()),
        ("merge_parents", pa.list_(_POS_TYPE)),
        ("base_stream", pa.string()),
        ("base_offset", pa.int64()),
        ("policy", pa.string()),
        ("policy_params", pa.string()),
        ("policy_version", pa.string()),
        ("actor", pa.string()),
        ("reason", pa.string()),
        ("labels", pa.map_(pa.string(), pa.string())),
        ("created_at", pa.string()),
        ("next_offset", pa.int64()),
        ("generation", pa.int64()),
        ("root", pa.string()),
    ]
)


def lineage_row(manifest: Manifest, next_offset: int) -> dict[str, Any]:
    """One lineage-table row for a stream's manifest."""
    create = manifest.create
    parent = create.get("parent") or {}
    merge = create.get("merge") or {}
    base = merge.get("base") or {}
    policy = merge.get("policy") or {}
    metadata = create.get("metadata") or {}
    return {
        "name": manifest.stream,
        "kind": manifest.kind,
        "parent_stream": parent.get("stream"),
        "parent_offset": parent.get("offset"),
        "parent_generation": parent.get("generation"),
        "parent_root": parent.get("root"),
        "merge_parents": merge.get("parents"),
        "base_stream": base.get("stream"),
        "base_offset": base.get("offset"),
        "policy": policy.get("name"),
        "policy_params": json.dumps(policy.get("params"), sort_keys=True) if policy else None,
        "policy_version": policy.get("version"),
        "actor": metadata.get("actor"),
        "reason": metadata.get("reason"),
        "labels": list((metadata.get("labels") or {}).items()),
        "created_at": create.get("created_at"),
        "next_offset": next_offset,
        "generation": manifest.generation,
        "root": manifest.root,
    }


def lineage_table(log: Log) -> pa.Table:
    """One row per stream (see `Log.lineage`)."""
    rows = []
    for name in log._stream_names():
        manifest = log._manifest(name, refresh=True)
        rows.append(lineage_row(manifest, log._next_offset(name, manifest)))
    return pa.Table.from_pylist(rows, schema=LINEAGE_SCHEMA)


def references(manifest: Manifest) -> list[tuple[str, Position]]:
    """The positions a stream's descriptor references, with how (parent, base, merge_parent)."""
    create = manifest.create
    out = []
    if create.get("parent"):
        out.append(("parent", Position.from_json(create["parent"])))
    merge = create.get("merge") or {}
    if merge.get("base"):
        out.append(("base", Position.from_json(merge["base"])))
    out += [("merge_parent", Position.from_json(p)) for p in merge.get("parents", [])]
    return out


_RELATION_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("depth", pa.int64()),
        ("stream", pa.string()),
        ("relation", pa.string()),
        ("offset", pa.int64()),
        ("generation", pa.int64()),
        ("root", pa.string()),
    ]
)


def ancestry_table(log: Log, manifest: Manifest) -> pa.Table:
    """Every position the stream's replay depends on, nearest first (see `Stream.ancestry`)."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int, int]] = set()
    frontier = [(1, manifest)]
    while frontier:
        depth, current = frontier.pop(0)
        for relation, pos in references(current):
            key = (pos.stream, pos.offset, pos.generation)
            if key in seen:
                continue
            seen.add(key)
            rows.append({"depth": depth, "relation": relation, **pos.to_json()})
            frontier.append((depth + 1, log._manifest_at(pos.stream, pos.generation)))
    return pa.Table.from_pylist(rows, schema=_RELATION_SCHEMA)


def children_table(log: Log, name: str) -> pa.Table:
    """Streams whose descriptor references `name` (see `Log.children`)."""
    log.stream(name)  # raises StreamNotFoundError with near names
    rows = []
    for other in log._stream_names():
        # Descriptors never change, so any cached generation answers.
        manifest = log._manifest(other, refresh=not log._known(other))
        for relation, pos in references(manifest):
            if pos.stream == name:
                rows.append({"depth": 1, "relation": relation, **pos.to_json(), "stream": other})
    return pa.Table.from_pylist(rows, schema=_RELATION_SCHEMA)
