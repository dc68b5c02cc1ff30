"""SQL text for a stream's replay, and for every stream's replay at once (DESIGN §8).

A replay is a list of spans (`replay.Span`): records `lo <= _offset < hi` of one origin
stream's segments, shown shifted, relabelled or with provenance. The SELECT of a stream reads
them with as few `read_parquet` calls as DuckDB scans fastest:

- one call for all the segments that spans cover whole and show the same way (for a branch,
  every such segment of every ancestor), with no filter at all: a filter on `_offset` would
  make DuckDB read and test that column for every record;
- as few calls as possible for the segments spans cover only in part (the fork point at each
  level), with `_offset` conditions that DuckDB pushes into the scan, so it skips the row
  groups outside the spans by their statistics and never decodes a record outside them. Cut
  segments share a call when no one's dropped offsets are another one's kept offsets (for a
  chain of branches, all of them do); the call also carries the range of all kept offsets,
  which lets DuckDB leave it out of a query whose own `_offset` range misses it.

The parts are stacked with UNION ALL, so rows do not come in replay order: `ORDER BY _offset`
restores it (offsets are unique and dense in a replay).

Every call carries an explicit `schema` map (file column -> output name, DuckDB type, default),
so that binding a view opens no file (creating views for a thousand streams costs no I/O), a
segment written before a column existed reads it as NULL and narrower types are widened,
exactly as `Stream.read()` does. Where spans fill `_origin_stream` / `_origin_offset` from
`_stream` / `_offset` (segments of a parent seen through a `concat` merge), a column that a
file lacks is told apart from one holding NULL by a default no stored value can have (''
is not a stream name and offsets are >= 0).

The cross-branch relation does not stack one such SELECT per stream (planning thousands of
scans is slow): it reads every segment any replay uses in one call and joins each row to the
spans that show it, by file index and offset range (`records_select`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from ..engine.replay import Span
from ..manifest import SegmentRef
from ..names import quote_ident, quote_str
from ..record import empty_table
from .database import shared_database

__all__ = [
    "SPANS_SCHEMA",
    "duckdb_types",
    "empty_select",
    "quote_ident",
    "quote_str",
    "records_select",
    "replay_select",
    "span_rows",
]

Source = Callable[[SegmentRef], str]
"""Where DuckDB reads a segment: a local path or a `transit://` URL."""

_TYPES: dict[bytes, list[str]] = {}
_TYPES_LOCK = threading.Lock()
_SCHEMA_MAP_TYPE = "MAP(VARCHAR, STRUCT(name VARCHAR, type VARCHAR, default_value VARCHAR))"
# Values marking a column the file does not have, where spans fill provenance.
_MISSING = {"_origin_stream": "", "_origin_offset": "-1"}


def duckdb_types(schema: pa.Schema) -> list[str]:
    """The DuckDB type of each field of `schema`, as DuckDB itself maps Arrow types."""
    key = schema.serialize().to_pybytes()
    with _TYPES_LOCK:
        types = _TYPES.get(key)
        if types is None:
            # A cursor of the process's database: a database of its own cost ~20 ms to make.
            con = shared_database().cursor()
            try:
                relation = con.from_arrow(empty_table(schema))
                types = _TYPES[key] = [str(t) for t in relation.types]
            finally:
                con.close()
    return types


def empty_select(schema: pa.Schema) -> str:
    """A SELECT of no rows with the columns and types of `schema`."""
    columns = ", ".join(
        f"CAST(NULL AS {t}) AS {quote_ident(f.name)}"
        for f, t in zip(schema, duckdb_types(schema), strict=True)
    )
    return f"SELECT {columns} WHERE false"


def _overlapping(span: Span) -> list[SegmentRef]:
    return [
        seg
        for seg in span.manifest.segments
        if seg.last_offset >= span.lo and seg.first_offset < span.hi
    ]


def _text(value: str) -> str:
    """`value` quoted for DuckDB's text form of nested values."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _read(files: list[str], schema: pa.Schema, types: list[str], provenance: bool) -> str:
    # The schema map is written as text cast to its type: DuckDB binds that in half the time
    # of a MAP literal, and views are bound again by every query that reads them.
    entries = []
    for f, t in zip(schema, types, strict=True):
        if f.name == "_branch":
            continue
        marker = _MISSING.get(f.name) if provenance else None
        default = "NULL" if marker is None else _text(marker)
        name = _text(f.name)
        entries.append(f"{name}={{'name': {name}, 'type': {_text(t)}, 'default_value': {default}}}")
    schema_map = f"{quote_str('{' + ', '.join(entries) + '}')}::{_SCHEMA_MAP_TYPE}"
    listed = ", ".join(quote_str(f) for f in files)
    return f"read_parquet([{listed}], schema={schema_map})"


def _expression(name: str, span: Span) -> str:
    column = f"s.{quote_ident(name)}"
    if name == "_stream" and span.label is not None:
        return quote_str(span.label)
    if name == "_offset" and span.shift:
        return f"{column} + {span.shift}"
    if span.provenance and name in _MISSING:
        fallback = "_stream" if name == "_origin_stream" else "_offset"
        return (
            f"CASE WHEN {column} = {quote_str(_MISSING[name])} THEN s.{quote_ident(fallback)} "
            f"ELSE {column} END"
        )
    return column


@dataclass
class _Cut:
    """A segment a span shows only part of: the offsets it keeps and the ones it drops."""

    file: str
    keep: tuple[int, int]
    drop: list[tuple[int, int]]

    def clashes(self, other: _Cut) -> bool:
        """Whether one drops offsets the other keeps (then they cannot share a filter)."""
        return any(
            a < b_hi and b_lo < b
            for x, y in ((self, other), (other, self))
            for a, b in x.drop
            for b_lo, b_hi in [y.keep]
        )


def _cut(span: Span, seg: SegmentRef, file: str) -> _Cut | None:
    drop = []
    if seg.first_offset < span.lo:
        drop.append((seg.first_offset, span.lo))
    if seg.last_offset >= span.hi:
        drop.append((span.hi, seg.last_offset + 1))
    if not drop:
        return None
    keep = (max(span.lo, seg.first_offset), min(span.hi, seg.last_offset + 1))
    return _Cut(file, keep, drop)


def _cut_groups(cuts: list[_Cut]) -> list[list[_Cut]]:
    """Cut segments grouped so that no member drops what another keeps: each group is read
    by one call whose filter drops every member's ranges (a filter DuckDB pushes down)."""
    groups: list[list[_Cut]] = []
    for cut in cuts:
        group = next((g for g in groups if not any(cut.clashes(m) for m in g)), None)
        if group is None:
            groups.append([cut])
        else:
            group.append(cut)
    return groups


def replay_select(
    schema: pa.Schema, spans: tuple[Span, ...], head: str | None, source: Source
) -> str:
    """A SELECT of the replay of `spans` then the registered head table `head`, with exactly
    the columns of `schema` (the stream's read schema)."""
    types = duckdb_types(schema)
    # Spans that show their records the same way share calls.
    groups: dict[tuple[int, str | None, bool], tuple[Span, list[str], list[_Cut]]] = {}
    for span in spans:
        _, whole, cuts = groups.setdefault(
            (span.shift, span.label, span.provenance), (span, [], [])
        )
        for seg in _overlapping(span):
            file = source(seg)
            cut = _cut(span, seg, file)
            if cut is None:
                whole.append(file)
            else:
                cuts.append(cut)
    selects = []
    for span, whole, cuts in groups.values():
        columns = ", ".join(f"{_expression(f.name, span)} AS {quote_ident(f.name)}" for f in schema)
        reads = [f"{_read(whole, schema, types, span.provenance)} AS s"] if whole else []
        for group in _cut_groups(cuts):
            files = [c.file for c in group]
            # The outer range lets DuckDB drop the whole call when a query's own `_offset`
            # range cannot meet it (a point lookup elsewhere opens none of these files).
            lo, hi = min(c.keep[0] for c in group), max(c.keep[1] for c in group)
            where = [f's."_offset" >= {lo}', f's."_offset" < {hi}']
            where += [
                f'NOT (s."_offset" >= {a} AND s."_offset" < {b})' for c in group for a, b in c.drop
            ]
            reads.append(
                f"{_read(files, schema, types, span.provenance)} AS s WHERE {' AND '.join(where)}"
            )
        selects += [f"SELECT {columns} FROM {read}" for read in reads]
    if head is not None:
        columns = ", ".join(quote_ident(n) for n in schema.names)
        selects.append(f"SELECT {columns} FROM {quote_ident(head)}")
    if not selects:
        return empty_select(schema)
    return "\nUNION ALL\n".join(selects)


SPANS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("branch", pa.string()),
        ("file", pa.uint64()),
        ("lo", pa.int64()),
        ("hi", pa.int64()),
        ("shift", pa.int64()),
        ("label", pa.string()),
        ("provenance", pa.bool_()),
        ("own_start", pa.int64()),
    ]
)


def span_rows(
    branches: list[tuple[str, int, tuple[Span, ...]]], source: Source
) -> tuple[list[str], pa.Table]:
    """The files every replay of `branches` (name, first own offset, spans) reads, and one
    `SPANS_SCHEMA` row per (branch, span, file) saying which offsets of the file the branch
    shows and how."""
    files: dict[str, int] = {}
    rows = []
    for branch, own, spans in branches:
        for span in spans:
            for seg in _overlapping(span):
                rows.append(
                    {
                        "branch": branch,
                        "file": files.setdefault(source(seg), len(files)),
                        "lo": span.lo,
                        "hi": span.hi,
                        "shift": span.shift,
                        "label": span.label,
                        "provenance": span.provenance,
                        "own_start": own,
                    }
                )
    return list(files), pa.Table.from_pylist(rows, schema=SPANS_SCHEMA)


def _records_expression(name: str) -> str:
    column = f"s.{quote_ident(name)}"
    if name == "_branch":
        return "p.branch"
    if name == "_own":
        return 's."_offset" + p.shift >= p.own_start'
    if name == "_stream":
        return f"COALESCE(p.label, {column})"
    if name == "_offset":
        return f"{column} + p.shift"
    if name in _MISSING:
        fallback = "_stream" if name == "_origin_stream" else "_offset"
        return (
            f"CASE WHEN {column} = {quote_str(_MISSING[name])} THEN "
            f"(CASE WHEN p.provenance THEN s.{quote_ident(fallback)} END) ELSE {column} END"
        )
    return column


def records_select(
    schema: pa.Schema, files: list[str], spans: str, heads: list[tuple[str, pa.Schema, str]]
) -> str:
    """A SELECT of every branch's replay with the columns of `schema` (`_branch` first).

    Args:
        schema: the cross-branch schema (`snapshot.records_schema`).
        files: the segment files to read, in the order `span_rows` numbered them.
        spans: the name of the registered `SPANS_SCHEMA` table.
        heads: (branch, read schema, registered head table) for branches with unsealed records.
    """
    types = duckdb_types(schema)
    selects = []
    if files:
        exprs = ", ".join(f"{_records_expression(f.name)} AS {quote_ident(f.name)}" for f in schema)
        selects.append(
            f"SELECT {exprs} FROM {_read(files, schema, types, True)} AS s "
            f"JOIN {quote_ident(spans)} AS p "
            f'ON s.file_index = p.file AND s."_offset" >= p.lo AND s."_offset" < p.hi'
        )
    for branch, have, table in heads:
        columns = []
        for f, t in zip(schema, types, strict=True):
            column = quote_ident(f.name)
            if f.name == "_branch":
                expr = quote_str(branch)
            elif f.name == "_own":
                expr = "TRUE"  # unsealed records are always the stream's own appends
            elif f.name not in have.names:
                expr = f"CAST(NULL AS {t})"
            elif have.field(f.name).type != f.type:
                expr = f"CAST({column} AS {t})"
            else:
                expr = column
            columns.append(f"{expr} AS {column}")
        selects.append(f"SELECT {', '.join(columns)} FROM {quote_ident(table)}")
    return "\nUNION ALL\n".join(selects) if selects else empty_select(schema)
