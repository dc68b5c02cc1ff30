"""Replay: which physical records, from which streams, make up a stream's history (DESIGN §6-7).

A stream's replay is a list of *spans*. A span names a physical stream (its *origin*), that
stream's manifest at a pinned generation, an origin offset range `[lo, hi)` and a shift: the
record at origin offset `o` appears in the replay at offset `o + shift`. Branches inherit their
parent's spans up to the fork offset (shift 0, so offsets keep their numbering); `concat`
merges reference their parents' spans shifted into the merge's numbering (zero-copy). Reading
a span reads only the Parquet row groups overlapping its range.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from ..errors import IntegrityError, TransitError
from ..manifest import Manifest
from ..record import evolve_schema
from ..segments.parquet import iter_segment
from .catalog import Catalog

__all__ = [
    "Position",
    "Span",
    "chain",
    "clip",
    "common_ancestor",
    "has_origin_columns",
    "is_prefix",
    "iter_spans",
    "link_of",
    "own_start",
    "references",
    "replay_spans",
    "shape",
    "union_schema",
]

_ORIGIN_NAMES = {"_origin_stream", "_origin_offset"}


@dataclass(frozen=True)
class Position:
    """`stream@offset`, pinned to the stream's generation and root when it was referenced."""

    stream: str
    offset: int
    generation: int
    root: str

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "offset": self.offset,
            "generation": self.generation,
            "root": self.root,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        return cls(data["stream"], int(data["offset"]), int(data["generation"]), data["root"])

    def __str__(self) -> str:
        return f"{self.stream}@{self.offset}"


@dataclass(frozen=True)
class Span:
    """Records of `origin` with `lo <= offset < hi`, shown at `offset + shift`."""

    origin: str
    manifest: Manifest
    lo: int
    hi: int
    shift: int = 0
    label: str | None = None  # the `_stream` shown; None shows the origin
    provenance: bool = False  # fill `_origin_stream` / `_origin_offset`

    @property
    def start(self) -> int:
        """First replay offset of the span."""
        return self.lo + self.shift

    @property
    def end(self) -> int:
        """Replay offset after the span's last record."""
        return self.hi + self.shift


def link_of(manifest: Manifest) -> Position | None:
    """The position whose replay forms the prefix of this stream's replay, if any."""
    create = manifest.create
    if create.get("kind") == "branch":
        return Position.from_json(create["parent"])
    merge = create.get("merge")
    if merge:
        if merge["policy"]["name"] == "fast_forward":
            return Position.from_json(merge["winner"])
        if merge.get("base"):
            return Position.from_json(merge["base"])
    return None


def own_start(manifest: Manifest) -> int:
    """The first replay offset that is the stream's *own* record (appended to it, or produced
    by its merge); the offsets before it are inherited from the position it links to (a
    branch's fork point, a merge's base, a fast-forward merge's winner)."""
    link = link_of(manifest)
    return link.offset + 1 if link is not None else 0


def clip(spans: list[Span], lo: int, hi: int) -> list[Span]:
    """The spans restricted to replay offsets `[lo, hi)`."""
    out = []
    for s in spans:
        a, b = max(s.lo, lo - s.shift), min(s.hi, hi - s.shift)
        if a < b:
            out.append(replace(s, lo=a, hi=b))
    return out


def replay_spans(catalog: Catalog, manifest: Manifest, end: int | None = None) -> list[Span]:
    """The spans of `manifest`'s stream, in replay order, for replay offsets below `end`."""
    limit = manifest.next_offset if end is None else min(end, manifest.next_offset)
    spans: list[Span] = []
    link = link_of(manifest)
    if link is not None:
        parent = catalog.manifest_at(link.stream, link.generation)
        spans += replay_spans(catalog, parent, min(link.offset + 1, limit))
    merge = manifest.create.get("merge")
    if merge and merge["policy"]["name"] == "concat":
        spans += _concat_spans(catalog, manifest.stream, merge)
    if manifest.start_offset < limit:
        spans.append(Span(manifest.stream, manifest, manifest.start_offset, limit))
    return clip(spans, 0, limit)


def _concat_spans(catalog: Catalog, name: str, merge: dict[str, Any]) -> list[Span]:
    base_end = merge["base"]["offset"] + 1 if merge.get("base") else 0
    cursor = base_end
    out: list[Span] = []
    for ref in merge["parents"]:
        pos = Position.from_json(ref)
        parent = catalog.manifest_at(pos.stream, pos.generation)
        sub = clip(replay_spans(catalog, parent, pos.offset + 1), base_end, pos.offset + 1)
        shift = cursor - base_end
        out += [replace(s, shift=s.shift + shift, label=name, provenance=True) for s in sub]
        cursor += max(0, pos.offset + 1 - base_end)
    return out


def has_origin_columns(spans: list[Span]) -> bool:
    """Whether reads of these spans carry `_origin_stream` / `_origin_offset`."""
    return any(s.provenance or set(s.manifest.extra_columns) >= _ORIGIN_NAMES for s in spans)


def union_schema(spans: list[Span], extra: list[pa.Schema]) -> pa.Schema:
    """The user schema holding every span's and every extra schema's columns."""
    schema: pa.Schema | None = None
    seen: set[tuple[str, int]] = set()
    for s in spans:
        key = (s.origin, s.manifest.generation)
        if key in seen or s.manifest.schema is None:
            continue
        seen.add(key)
        schema = evolve_schema(schema, s.manifest.schema)
    for user in extra:
        if len(user):
            schema = evolve_schema(schema, user)
    return schema if schema is not None else pa.schema([])


def iter_spans(
    catalog: Catalog, spans: list[Span], schema: pa.Schema, columns: list[str] | None
) -> Iterator[pa.RecordBatch]:
    """Yield the spans' records shaped to `schema` (see `shape`)."""
    for span in spans:
        for seg in span.manifest.segments:
            if seg.last_offset < span.lo or seg.first_offset >= span.hi:
                continue
            source = catalog.segment_file(seg, span.origin)  # verified against its BLAKE3
            try:
                batches = iter_segment(
                    source, seg, span.lo, span.hi, columns, decoded=catalog.decoded
                )
                for batch in batches:
                    yield shape(batch, schema, span)
            except TransitError:
                raise
            except FileNotFoundError as e:
                raise IntegrityError(
                    f"segment {catalog.uri}/{seg.path} of stream {span.origin!r} is referenced "
                    "by a commit but missing"
                ) from e
            except (OSError, pa.ArrowInvalid) as e:
                raise IntegrityError(
                    f"segment {catalog.uri}/{seg.path} of stream {span.origin!r} cannot be "
                    f"read: {e}"
                ) from e


def shape(batch: pa.RecordBatch, schema: pa.Schema, span: Span) -> pa.RecordBatch:
    """Give a stored batch the read schema: `_stream` label, shifted offsets, provenance,
    widened types and null columns for what the batch lacks."""
    n = batch.num_rows
    names = batch.schema.names
    arrays: list[Any] = []
    for field in schema:
        name = field.name
        if name == "_stream":
            if span.label is None and "_stream" in names:
                stored = batch.column("_stream")
                if pa.types.is_dictionary(stored.type) and stored.type.value_type == pa.string():
                    # a third cheaper than a cast
                    arrays.append(stored.dictionary_decode())  # type: ignore[attr-defined]
                else:
                    arrays.append(stored.cast(pa.string()))
            else:
                arrays.append(pa.repeat(pa.scalar(span.label or span.origin), n))
        elif name == "_offset" and span.shift:
            arrays.append(pa.compute.add(batch.column("_offset"), span.shift))
        elif span.provenance and name == "_origin_stream" and "_origin_stream" not in names:
            label = pa.scalar(span.origin) if "_stream" not in names else None
            col = batch.column("_stream").cast(pa.string()) if label is None else None
            arrays.append(col if col is not None else pa.repeat(label, n))
        elif span.provenance and name == "_origin_offset" and "_origin_offset" not in names:
            arrays.append(batch.column("_offset"))
        elif name in names:
            col = batch.column(name)
            arrays.append(col if col.type == field.type else col.cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def chain(catalog: Catalog, position: Position) -> list[Position]:
    """The link chain of a replay point, nearest first, after normalisation.

    A point at or before its stream's link offset is the same replay as the link's stream
    at that offset, so it is moved up first.
    """
    out = []
    current: Position | None = position
    while current is not None:
        manifest = catalog.manifest_at(current.stream, current.generation)
        link = link_of(manifest)
        if link is not None and current.offset <= link.offset:
            current = Position(link.stream, current.offset, link.generation, link.root)
            continue
        out.append(current)
        if link is None:
            break
        current = link
    return out


def is_prefix(catalog: Catalog, prefix: Position, of: Position) -> bool:
    """Whether the replay through `prefix` is a prefix of the replay through `of`."""
    if prefix.offset < 0:
        return True
    head = chain(catalog, prefix)[0]
    return any(p.stream == head.stream and p.offset >= head.offset for p in chain(catalog, of))


def common_ancestor(catalog: Catalog, a: Position, b: Position) -> Position | None:
    """The nearest common ancestor position of two replay points (None: no shared history)."""
    other = {p.stream: p for p in chain(catalog, b)}
    for p in chain(catalog, a):
        q = other.get(p.stream)
        if q is not None:
            mine = p if p.offset <= q.offset else q
            return chain(catalog, mine)[0]
    return None


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
