"""Lineage: branches, positions, ancestry and the lineage table (DESIGN §6-7).

Every stream has at most one *link*: the position whose replay is the prefix of its own (a
branch's fork point, a merge's base, or a fast-forward merge's winner). Links form a forest,
so the replays that share history are exactly the ones whose link chains meet; the nearest
common ancestor of two positions is where their chains first meet.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from .engine.catalog import Catalog, bulk
from .engine.replay import Position, references
from .errors import AlreadyExistsError, InvalidInputError
from .manifest import Manifest, check_metadata, create_action
from .names import validate_stream_name

__all__ = [
    "LINEAGE_SCHEMA",
    "ancestry_table",
    "children_table",
    "create_branch",
    "lineage_row",
    "lineage_table",
    "metadata_of",
    "parse_position",
    "pin",
    "provisional",
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


def provisional(
    catalog: Catalog, name: str, offset: int | None, *, allow_empty: bool = False
) -> Position:
    """Resolve and check `name@offset` without sealing anything (for validation).

    The generation and root are the latest committed ones; `pin` makes them exact.
    """
    return _resolve(catalog, name, offset, allow_empty=allow_empty, seal=False)


def pin(catalog: Catalog, name: str, offset: int | None, *, allow_empty: bool = False) -> Position:
    """Pin `name@offset` to the stream's latest generation, sealing its head if needed.

    `offset=None` means the stream's last record. The offset must be committed or in a head
    this process writes (which is then sealed first), so a position only names immutable
    history.
    """
    return _resolve(catalog, name, offset, allow_empty=allow_empty, seal=True)


def _resolve(
    catalog: Catalog, name: str, offset: int | None, *, allow_empty: bool, seal: bool
) -> Position:
    manifest = catalog.manifest(name, refresh=True)
    next_offset = catalog.next_offset(name, manifest)
    if offset is None:
        offset = next_offset - 1
        if offset < 0 and not allow_empty:
            raise InvalidInputError(f"stream {name!r} has no records yet; append some first")
    elif not 0 <= offset < next_offset:
        raise InvalidInputError(
            f"stream {name!r} has no offset {offset}; its next offset is {next_offset}"
        )
    if offset >= manifest.next_offset:
        if not catalog.has_writer(name):
            raise InvalidInputError(
                f"offset {offset} of stream {name!r} is not committed yet (it is in the unsealed "
                "head of another writer); flush that writer first"
            )
        if not seal:
            return Position(name, offset, manifest.generation, manifest.root)
        manifest = catalog.flush(name)
    return Position(name, offset, manifest.generation, manifest.root)


def metadata_of(
    actor: str | None, reason: str | None, labels: dict[str, str] | None
) -> dict[str, Any]:
    """The checked `metadata` of a create action from its parts."""
    return check_metadata({"actor": actor, "reason": reason, "labels": labels or {}})


def create_branch(
    catalog: Catalog,
    name: str,
    at: object,
    *,
    actor: str | None,
    reason: str | None,
    labels: dict[str, str] | None,
    default_parent: str | None = None,
) -> Manifest:
    """Create branch `name` of `at` ("parent@N"): one commit, no byte copied."""
    validate_stream_name(name)
    metadata = metadata_of(actor, reason, labels)
    parent_name, offset = parse_position(at, default_parent)
    if catalog.exists(name):
        raise AlreadyExistsError(f"stream {name!r} already exists in {catalog.uri}")
    position = pin(catalog, parent_name, offset)
    parent = catalog.manifest_at(parent_name, position.generation)
    create = create_action(
        "branch",
        schema=parent.schema,
        metadata=metadata,
        start_offset=position.offset + 1,
        parent=position.to_json(),
    )
    return catalog.create(name, create)


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


def lineage_table(catalog: Catalog) -> pa.Table:
    """One row per stream (see `Log.lineage`)."""
    manifests, _ = catalog.manifests()  # a damaged stream is reported by streams()/verify()
    with bulk():
        rows = [lineage_row(m, catalog.next_offset(name, m)) for name, m in manifests.items()]
        return pa.Table.from_pylist(rows, schema=LINEAGE_SCHEMA)


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


def ancestry_table(catalog: Catalog, manifest: Manifest) -> pa.Table:
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
            frontier.append((depth + 1, catalog.manifest_at(pos.stream, pos.generation)))
    return pa.Table.from_pylist(rows, schema=_RELATION_SCHEMA)


def children_table(catalog: Catalog, name: str) -> pa.Table:
    """Streams whose descriptor references `name` (see `Log.children`)."""
    if not catalog.exists(name):
        raise catalog.not_found(name)
    rows = []
    # Descriptors never change, so any cached generation answers.
    for other, manifest in catalog.manifests(refresh=False)[0].items():
        for relation, pos in references(manifest):
            if pos.stream == name:
                rows.append({"depth": 1, "relation": relation, **pos.to_json(), "stream": other})
    return pa.Table.from_pylist(rows, schema=_RELATION_SCHEMA)
