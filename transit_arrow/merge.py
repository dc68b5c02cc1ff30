"""Merges: a new stream with >= 2 pinned parent heads and a deterministic policy (DESIGN §7).

| policy          | the merge's replay                                                          |
|-----------------|-----------------------------------------------------------------------------|
| `pin`           | the base prefix; parents are pinned references; the app appends the rest     |
| `fast_forward`  | one parent's replay, valid only when every other parent is its ancestor      |
| `concat`        | base prefix, then each parent's post-base records in parent order (zero-copy)|
| `interleave`    | base prefix, then all post-base records by (_timestamp, parent order, offset)|
| `custom:<name>` | base prefix, then a registered resolver's output (run once, stored)          |

Policies are recorded as data (`{"name", "params", "version"}`) in the merge's first commit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .engine.catalog import Catalog
from .engine.read import live_plan, plan_at
from .engine.replay import Position, common_ancestor, is_prefix, union_schema
from .errors import (
    AlreadyExistsError,
    InvalidInputError,
    MergeConflictError,
    SchemaMismatchError,
    TransitError,
)
from .layout import segment_path
from .lineage import parse_position, pin, provisional
from .manifest import Manifest, create_action
from .names import validate_stream_name
from .record import (
    HEADERS_TYPE,
    TIMESTAMP_TYPE,
    coerce_input,
    conform,
    evolve_schema,
    full_schema,
    system_columns,
)

__all__ = ["MergeResolver", "register_merge_resolver"]


class MergeResolver(Protocol):
    """`f(base, parents) -> Arrow table`, the signature of a custom merge resolver.

    `base` is the base prefix's replay; `parents` holds each parent's records after the base
    (with `_stream`, `_offset`, `_origin_stream`, `_origin_offset` and user columns). The
    output (any Arrow producer) becomes the merge's first segment: its user columns, optional
    `_timestamp` / `_headers`, and provenance taken from `_origin_*` (or `_stream`/`_offset`).
    """

    def __call__(self, base: pa.Table, parents: list[pa.Table], /) -> Any: ...


_RESOLVERS: dict[str, tuple[MergeResolver, str]] = {}
_RESOLVERS_LOCK = threading.Lock()
_BUILTIN = ("pin", "fast_forward", "concat", "interleave")


def register_merge_resolver(name: str, resolver: MergeResolver, *, version: str = "1") -> None:
    """Register a custom merge resolver, usable as `policy="custom:<name>"`.

    The name and version are recorded in the merge's commit; re-registering a name replaces it
    (bump `version` when its behaviour changes).
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidInputError(
            f"resolver name must be a non-empty string without ':', not {name!r}"
        )
    if not callable(resolver):
        raise InvalidInputError("resolver must be callable: f(base, parents) -> Arrow table")
    with _RESOLVERS_LOCK:
        _RESOLVERS[name] = (resolver, str(version))


def _policy(policy: str, params: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(policy, str):
        raise InvalidInputError(f"policy must be a string, not {policy!r}")
    if params is not None and not isinstance(params, dict):
        raise InvalidInputError("policy_params must be a dict of JSON values")
    version = "1"
    if policy.startswith("custom:"):
        with _RESOLVERS_LOCK:
            found = _RESOLVERS.get(policy[len("custom:") :])
        if found is None:
            known = ", ".join(sorted(_RESOLVERS)) or "none"
            raise InvalidInputError(
                f"no merge resolver is registered as {policy[7:]!r} (registered: {known}); "
                "call transit_arrow.register_merge_resolver first"
            )
        version = found[1]
    elif policy not in _BUILTIN:
        raise InvalidInputError(
            f"unknown merge policy {policy!r}; use one of {', '.join(_BUILTIN)} or 'custom:<name>'"
        )
    return {"name": policy, "params": params or {}, "version": version}


def create_merge(
    catalog: Catalog,
    name: str,
    parents: Sequence[str],
    *,
    base: str | None,
    policy: str,
    policy_params: dict[str, Any] | None,
    metadata: dict[str, Any],
) -> Manifest:
    """Create merge stream `name` (see `Log.merge`). Writes nothing when it raises."""
    validate_stream_name(name)
    policy_record = _policy(policy, policy_params)
    if isinstance(parents, str) or not isinstance(parents, Sequence):
        raise InvalidInputError("parents must be a list like ['a', 'b@17']")
    parsed = [parse_position(p) for p in parents]
    if len(parsed) < 2:
        raise MergeConflictError(
            f"a merge needs at least 2 parent heads, got {len(parsed)}; use branch() to fork "
            "a single stream"
        )
    streams = [s for s, _ in parsed]
    duplicates = sorted({s for s in streams if streams.count(s) > 1})
    if duplicates:
        raise MergeConflictError(
            f"parent stream(s) {duplicates} appear more than once; a merge reconciles distinct "
            "streams"
        )
    if name in streams:
        raise MergeConflictError(f"merge {name!r} cannot be one of its own parents")
    for stream in streams:
        if not catalog.exists(stream):
            raise catalog.not_found(stream)
    if catalog.exists(name):
        raise AlreadyExistsError(f"stream {name!r} already exists in {catalog.uri}")
    # Validate everything on provisional positions first: pinning may seal parents' heads,
    # which must not happen for a merge that is then refused.
    provisional_pins = [provisional(catalog, s, o, allow_empty=True) for s, o in parsed]
    _base(catalog, provisional_pins, base, seal=False)
    if policy_record["name"] == "fast_forward":
        _fast_forward_winner(catalog, provisional_pins)
    schema = _parents_schema(catalog, [s for s, _ in parsed])
    kind = policy_record["name"]
    table = None
    if kind not in ("pin", "fast_forward", "concat"):
        # Run before pinning: a failing resolver must leave the parents' heads unsealed. The
        # same offsets are what the pins below commit, so the records are the same.
        early_base = _base(catalog, provisional_pins, base, seal=False)
        early_end = early_base.offset + 1 if early_base is not None else 0
        table = _materialized(
            catalog, name, provisional_pins, early_base, early_end, policy_record, schema
        )
        try:  # the output must fit the parents' schema: refuse before sealing anything
            evolve_schema(schema, _user(table))
        except SchemaMismatchError as e:
            raise MergeConflictError(
                f"merge resolver {policy_record['name']!r} returned columns that do not fit "
                f"the parents' schema: {e}"
            ) from None
    pins = [pin(catalog, s, o, allow_empty=True) for s, o in parsed]
    base_pos = _base(catalog, pins, base, seal=True)
    base_end = base_pos.offset + 1 if base_pos is not None else 0
    merge: dict[str, Any] = {
        "parents": [p.to_json() for p in pins],
        "base": base_pos.to_json() if base_pos is not None else None,
        "policy": policy_record,
    }
    actions: list[dict[str, Any]] = []
    start = base_end
    if kind == "fast_forward":
        winner = _fast_forward_winner(catalog, pins)
        merge["winner"] = winner.to_json()
        start = winner.offset + 1
    elif kind == "concat":
        start = base_end + sum(max(0, p.offset + 1 - base_end) for p in pins)
    elif table is not None and table.num_rows:
        schema = evolve_schema(schema, _user(table))
        actions.append(_upload(catalog, name, table))
    create = create_action(
        "merge",
        schema=schema if len(schema) else None,
        metadata=metadata,
        start_offset=start,
        merge=merge,
    )
    return catalog.create(name, create, extra_actions=actions)


def _parents_schema(catalog: Catalog, names: list[str]) -> pa.Schema:
    """The union of the parents' read schemas, or `MergeConflictError` if they conflict."""
    try:
        users = [
            pa.schema([f for f in live_plan(catalog, n).schema if not f.name.startswith("_")])
            for n in names
        ]
        return union_schema([], users)
    except SchemaMismatchError as e:
        raise MergeConflictError(f"the parents' schemas cannot be merged: {e}") from None


def _base(
    catalog: Catalog, pins: list[Position], base: str | None, *, seal: bool
) -> Position | None:
    if base is None:
        found: Position | None = pins[0]
        for p in pins[1:]:
            if found is None:
                break
            found = common_ancestor(catalog, found, p)
        return found
    stream, offset = parse_position(base)
    position = (pin if seal else provisional)(catalog, stream, offset)
    for p in pins:
        if not is_prefix(catalog, position, p):
            raise MergeConflictError(
                f"base {position} is not an ancestor of parent {p}: the replay of {p} does not "
                f"start with the replay of {position}; omit base to use the nearest common "
                "ancestor"
            )
    return position


def _fast_forward_winner(catalog: Catalog, pins: list[Position]) -> Position:
    for candidate in pins:
        if all(is_prefix(catalog, other, candidate) for other in pins if other is not candidate):
            return candidate
    described = ", ".join(str(p) for p in pins)
    raise MergeConflictError(
        f"fast_forward needs one parent whose history contains every other parent's; none of "
        f"{described} does (they diverged); use concat, interleave, pin or a custom policy"
    )


def _post_base(catalog: Catalog, pos: Position, base_end: int, schema: pa.Schema) -> pa.Table:
    """A parent's records after the base (unsealed ones included), with provenance."""
    full = full_schema(schema, origin=True)
    read = live_plan(catalog, pos.stream).read(start=base_end, end=pos.offset + 1)
    columns = [
        read[f.name].cast(f.type) if f.name in read.column_names else pa.nulls(len(read), f.type)
        for f in full
    ]
    table = pa.Table.from_arrays(columns, schema=full)
    # Provenance is the physical position: where no merge set it, the record's own.
    origin_stream = pc.coalesce(table["_origin_stream"], table["_stream"])
    origin_offset = pc.coalesce(table["_origin_offset"], table["_offset"])
    table = table.set_column(
        table.schema.get_field_index("_origin_stream"), "_origin_stream", origin_stream
    )
    return table.set_column(
        table.schema.get_field_index("_origin_offset"), "_origin_offset", origin_offset
    )


def _materialized(
    catalog: Catalog,
    name: str,
    pins: list[Position],
    base_pos: Position | None,
    base_end: int,
    policy: dict[str, Any],
    schema: pa.Schema,
) -> pa.Table:
    """The records an `interleave` or `custom:` merge stores as its first segment."""
    parts = [_post_base(catalog, p, base_end, schema) for p in pins]
    if policy["name"] == "interleave":
        keyed = [
            t.append_column("_parent", pa.repeat(pa.scalar(i, pa.int64()), t.num_rows))
            for i, t in enumerate(parts)
        ]
        merged = pa.concat_tables(keyed).sort_by(
            [("_timestamp", "ascending"), ("_parent", "ascending"), ("_offset", "ascending")]
        )
        merged = merged.drop_columns(["_parent", "_stream", "_offset"])
        return _number(merged, base_end)
    resolver, _ = _RESOLVERS[policy["name"][len("custom:") :]]
    if base_pos is not None:
        base_manifest = catalog.manifest_at(base_pos.stream, base_pos.generation)
        base_table = plan_at(catalog, base_pos.stream, base_manifest).read(end=base_end)
    else:
        base_table = pa.table({})
    try:
        output = resolver(base_table, parts)
    except Exception as e:
        raise MergeConflictError(f"merge resolver {policy['name']!r} failed: {e!r}") from e
    try:
        return _custom_output(output, base_end)
    except TransitError as e:
        raise MergeConflictError(f"merge resolver {policy['name']!r} output refused: {e}") from e
    except (pa.ArrowException, TypeError, ValueError, KeyError) as e:
        raise MergeConflictError(
            f"merge resolver {policy['name']!r} returned something that is not a table of "
            f"records: {e}"
        ) from e


def _custom_output(output: Any, base_end: int) -> pa.Table:
    if isinstance(output, pa.Table):
        table = output
    else:
        table = coerce_input(output, None) if not isinstance(output, pa.Table) else output
    renames = {"_stream": "_origin_stream", "_offset": "_origin_offset"}
    if "_origin_stream" in table.column_names:
        table = table.drop_columns([c for c in ("_stream", "_offset") if c in table.column_names])
    else:
        table = table.rename_columns([renames.get(c, c) for c in table.column_names])
    allowed = {"_timestamp", "_headers", "_origin_stream", "_origin_offset"}
    bad = [c for c in table.column_names if c.startswith("_") and c not in allowed]
    if bad:
        raise MergeConflictError(f"merge resolver output has reserved columns {bad}")
    n = table.num_rows
    for column, kind in (("_origin_stream", pa.string()), ("_origin_offset", pa.int64())):
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(n, kind))
    if "_timestamp" not in table.column_names:
        ts = system_columns(table.select([c for c in table.column_names if c != "_headers"]), 0)[1]
        table = table.append_column("_timestamp", ts)
    if "_headers" not in table.column_names:
        table = table.append_column("_headers", pa.nulls(n, HEADERS_TYPE))
    return _number(table, base_end)


def _user(table: pa.Table) -> pa.Schema:
    system = {"_offset", "_timestamp", "_headers", "_origin_stream", "_origin_offset"}
    return pa.schema([f for f in table.schema if f.name not in system])


def _number(table: pa.Table, first: int) -> pa.Table:
    """Renumber densely from `first`, in segment column order."""
    n = table.num_rows
    user = _user(table)
    body = conform(table.select(user.names), evolve_schema(None, user)) if len(user) else None
    columns: list[Any] = [
        pa.array(np.arange(first, first + n, dtype=np.int64)),
        table["_timestamp"].cast(TIMESTAMP_TYPE),
        table["_headers"].cast(HEADERS_TYPE),
        table["_origin_stream"].cast(pa.string()),
        table["_origin_offset"].cast(pa.int64()),
    ]
    names = ["_offset", "_timestamp", "_headers", "_origin_stream", "_origin_offset"]
    if body is not None:
        columns += list(body.columns)
        names += body.column_names
    return pa.Table.from_arrays(columns, names=names)


def _upload(catalog: Catalog, name: str, table: pa.Table) -> dict[str, Any]:
    folder = catalog.stream_folder(name)
    data, meta = catalog.encode_segment(table, name)
    path = segment_path(folder, meta["first_offset"], meta["last_offset"], meta["blake3"])
    catalog.put_segment(path, data, meta["blake3"])
    return {"type": "add_segment", "path": path, **meta}
