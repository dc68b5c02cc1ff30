"""SQL text for a stream's replay, and for every stream's replay at once (DESIGN §8).

A replay is a list of spans (`replay.Span`): records `lo <= _offset < hi` of one origin
stream's segments, shown shifted, relabelled or with provenance. The SELECT of a stream reads
them with as few `read_parquet` calls as DuckDB scans fastest:

- one call for all the segments that spans cover whole and show the same way (for a branch,
  every such segment of every ancestor), with no filter at all;
- one call per segment a span covers only in part (at most the fork point at each level), with
  a plain `_offset` range that DuckDB pushes into the scan, so it skips the row groups outside
  the span by their statistics and never decodes a record outside it.

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

import duckdb
import pyarrow as pa

from ..manifest import SegmentRef
from ..replay import Span

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
_TYPES_CON: list[duckdb.DuckDBPyConnection] = []
# Values marking a column the file does not have, where spans fill provenance.
_MISSING = {"_origin_stream": "''", "_origin_offset": "-1"}


def quote_ident(name: str) -> str:
    """`name` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_str(text: str) -> str:
    """`text` as a single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def duckdb_types(schema: pa.Schema) -> list[str]:
    """The DuckDB type of each field of `schema`, as DuckDB itself maps Arrow types."""
    key = schema.serialize().to_pybytes()
    with _TYPES_LOCK:
        types = _TYPES.get(key)
        if types is None:
            if not _TYPES_CON:
                _TYPES_CON.append(duckdb.connect())
            relation = _TYPES_CON[0].from_arrow(schema.empty_table())
            types = _TYPES[key] = [str(t) for t in relation.types]
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


def _read(files: list[str], schema: pa.Schema, types: list[str], provenance: bool) -> str:
    entries = []
    for f, t in zip(schema, types, strict=True):
        if f.name == "_branch":
            continue
        # Defaults are given as text (one type for the whole map); DuckDB casts them.
        marker = _MISSING.get(f.name) if provenance else None
        default = "NULL::VARCHAR" if marker is None else quote_str(marker.strip("'"))
        name = quote_str(f.name)
        entries.append(f"{name}: {{name: {name}, type: {quote_str(t)}, default_value: {default}}}")
    listed = ", ".join(quote_str(f) for f in files)
    return f"read_parquet([{listed}], schema=MAP {{{', '.join(entries)}}})"


def _expression(name: str, span: Span) -> str:
    column = f"s.{quote_ident(name)}"
    if name == "_stream" and span.label is not None:
        return quote_str(span.label)
    if name == "_offset" and span.shift:
        return f"{column} + {span.shift}"
    if span.provenance and name in _MISSING:
        fallback = "_stream" if name == "_origin_stream" else "_offset"
        return (
            f"CASE WHEN {column} = {_MISSING[name]} THEN s.{quote_ident(fallback)} "
            f"ELSE {column} END"
        )
    return column


def replay_select(
    schema: pa.Schema, spans: tuple[Span, ...], head: str | None, source: Source
) -> str:
    """A SELECT of the replay of `spans` then the registered head table `head`, with exactly
    the columns of `schema` (the stream's read schema)."""
    types = duckdb_types(schema)
    # Spans that show their records the same way share one call for their whole segments.
    groups: dict[tuple[int, str | None, bool], tuple[Span, list[str], list[str]]] = {}
    for span in spans:
        _, whole, parts = groups.setdefault(
            (span.shift, span.label, span.provenance), (span, [], [])
        )
        for seg in _overlapping(span):
            where = []
            if seg.first_offset < span.lo:
                where.append(f's."_offset" >= {span.lo}')
            if seg.last_offset >= span.hi:
                where.append(f's."_offset" < {span.hi}')
            if where:
                parts.append(
                    f"{_read([source(seg)], schema, types, span.provenance)} AS s "
                    f"WHERE {' AND '.join(where)}"
                )
            else:
                whole.append(source(seg))
    selects = []
    for span, whole, parts in groups.values():
        columns = ", ".join(f"{_expression(f.name, span)} AS {quote_ident(f.name)}" for f in schema)
        if whole:
            parts.insert(0, f"{_read(whole, schema, types, span.provenance)} AS s")
        selects += [f"SELECT {columns} FROM {part}" for part in parts]
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
    ]
)


def span_rows(
    branches: list[tuple[str, tuple[Span, ...]]], source: Source
) -> tuple[list[str], pa.Table]:
    """The files every replay of `branches` reads, and one `SPANS_SCHEMA` row per (branch,
    span, file) saying which offsets of the file the branch shows and how."""
    files: dict[str, int] = {}
    rows = []
    for branch, spans in branches:
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
                    }
                )
    return list(files), pa.Table.from_pylist(rows, schema=SPANS_SCHEMA)


def _records_expression(name: str) -> str:
    column = f"s.{quote_ident(name)}"
    if name == "_branch":
        return "p.branch"
    if name == "_stream":
        return f"COALESCE(p.label, {column})"
    if name == "_offset":
        return f"{column} + p.shift"
    if name in _MISSING:
        fallback = "_stream" if name == "_origin_stream" else "_offset"
        return (
            f"CASE WHEN {column} = {_MISSING[name]} THEN "
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
            elif f.name not in have.names:
                expr = f"CAST(NULL AS {t})"
            elif have.field(f.name).type != f.type:
                expr = f"CAST({column} AS {t})"
            else:
                expr = column
            columns.append(f"{expr} AS {column}")
        selects.append(f"SELECT {', '.join(columns)} FROM {quote_ident(table)}")
    return "\nUNION ALL\n".join(selects) if selects else empty_select(schema)
