"""Reading a stream's replay: the API shared by live streams and time-travel views (DESIGN §8)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from .errors import InvalidInputError
from .manifest import Manifest
from .record import full_schema
from .replay import Span, has_origin_columns, iter_spans, replay_spans, shape, union_schema

if TYPE_CHECKING:
    import polars as pl
    from duckdb import DuckDBPyConnection, DuckDBPyRelation

    from .log import Log

__all__ = ["StreamView"]

HeadBatches = list[tuple[int, pa.Schema, list[pa.RecordBatch]]]
_END = 1 << 62


class _Readable(abc.ABC):
    """Read methods over a manifest (plus unsealed heads, for live streams)."""

    log: Log
    name: str

    @abc.abstractmethod
    def _state(self) -> tuple[Manifest, HeadBatches]:
        """The manifest to replay and the unsealed heads that follow it."""

    def _plan(self) -> tuple[Manifest, HeadBatches, list[Span], pa.Schema]:
        manifest, heads = self._state()
        spans = replay_spans(self.log, manifest)
        own = [manifest.schema] if manifest.schema is not None else []
        user = union_schema(spans, [*own, *(u for _, u, _ in heads)])
        origin = has_origin_columns(spans)
        return manifest, heads, spans, full_schema(user, origin=origin)

    @property
    def next_offset(self) -> int:
        """The offset after the last record (the next append's offset, for a live stream)."""
        manifest, heads = self._state()
        if heads:
            start, _, batches = heads[-1]
            return start + sum(b.num_rows for b in batches)
        return manifest.next_offset

    @property
    def generation(self) -> int:
        """The generation this reads (the latest committed one, for a live stream)."""
        return self._state()[0].generation

    @property
    def root(self) -> str:
        """The commit root of `generation`."""
        return self._state()[0].root

    @property
    def schema(self) -> pa.Schema:
        """The schema of read results: system columns, then the user columns."""
        return self._plan()[3]

    def commits(self) -> pa.Table:
        """The commit log through this generation, as an Arrow table (one row per commit)."""
        last = self._state()[0].generation
        rows = []
        for c in self.log._commits(self.name)[: last + 1]:
            segs = [a for a in c["actions"] if a.get("type") == "add_segment"]
            rows.append(
                {
                    "generation": c["generation"],
                    "time": c["time"],
                    "root": c["root"],
                    "prev_root": c["prev_root"],
                    "writer_id": c["writer"].get("id"),
                    "writer_epoch": c["writer"].get("epoch"),
                    "actions": [a.get("type") for a in c["actions"]],
                    "first_offset": segs[0]["first_offset"] if segs else None,
                    "last_offset": segs[-1]["last_offset"] if segs else None,
                    "records": sum(a["records"] for a in segs),
                }
            )
        return pa.Table.from_pylist(rows, schema=_COMMITS_SCHEMA)

    def _batches(
        self, start: int | None, end: int | None, columns: list[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        manifest, heads, spans, schema = self._plan()
        if columns is not None:
            if isinstance(columns, str):
                raise InvalidInputError("columns must be a list of names, not a string")
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise InvalidInputError(
                    f"stream {self.name!r} has no column(s) {unknown}; its columns are "
                    f"{schema.names}"
                )
            schema = pa.schema([schema.field(c) for c in columns])
        for label, value in (("start", start), ("end", end)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"{label} must be an offset >= 0, not {value!r}")
        lo = 0 if start is None else start
        hi = _END if end is None else max(end, lo)
        from .replay import clip

        read_columns = None if columns is None else [*columns, "_stream", "_offset"]
        return schema, self._iter(
            manifest, heads, clip(spans, lo, hi), lo, hi, schema, read_columns
        )

    def _iter(
        self,
        manifest: Manifest,
        heads: HeadBatches,
        spans: list[Span],
        lo: int,
        hi: int,
        schema: pa.Schema,
        columns: list[str] | None,
    ) -> Iterator[pa.RecordBatch]:
        yield from iter_spans(self.log, spans, schema, columns)
        own = Span(self.name, manifest, 0, _END)
        for start, _, batches in heads:
            offset = start
            for batch in batches:
                n = batch.num_rows
                if offset + n > lo and offset < hi:
                    a = max(0, lo - offset)
                    yield shape(batch.slice(a, min(n, hi - offset) - a), schema, own)
                offset += n

    def read(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """Read the replay's records with `start <= _offset < end` as one Arrow table.

        Reading past the end returns an empty table (with the stream's schema), not an error.
        """
        schema, batches = self._batches(start, end, columns)
        return pa.Table.from_batches(list(batches), schema=schema)

    def reader(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatchReader:
        """Like `read`, as a `RecordBatchReader` holding about one row group in memory."""
        schema, batches = self._batches(start, end, columns)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def to_duckdb(self, con: DuckDBPyConnection | None = None) -> DuckDBPyRelation:
        """This replay as a DuckDB relation (on `con`, or on the log's own connection)."""
        from .query import to_duckdb

        return to_duckdb(self, con)

    def scan(self) -> pl.LazyFrame:
        """The replay as a polars LazyFrame; filters and projections reach the Parquet files."""
        import polars as pl

        manifest, heads, spans, schema = self._plan()
        target = pl.from_arrow(schema.empty_table())
        assert isinstance(target, pl.DataFrame)
        frames: list[pl.LazyFrame] = []
        for span in spans:
            for seg in span.manifest.segments:
                if seg.last_offset < span.lo or seg.first_offset >= span.hi:
                    continue
                frame = pl.scan_parquet(self.log._segment_local_path(seg))
                if span.lo > seg.first_offset or span.hi <= seg.last_offset:
                    frame = frame.filter(pl.col("_offset").is_between(span.lo, span.hi - 1))
                frames.append(_span_frame(frame, span, target))
        own = Span(self.name, manifest, 0, _END)
        for _, _, batches in heads:
            if batches:
                tail = pa.Table.from_batches([shape(b, schema, own) for b in batches])
                frames.append(_lazy(tail))
        if not frames:
            return target.lazy()
        return pl.concat([_align(f, target) for f in frames], how="vertical")


def _lazy(table: pa.Table) -> pl.LazyFrame:
    import polars as pl

    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def _span_frame(frame: pl.LazyFrame, span: Span, target: pl.DataFrame) -> pl.LazyFrame:
    import polars as pl

    exprs = []
    if span.provenance:
        have = frame.collect_schema()
        if "_origin_stream" not in have:
            exprs.append(pl.col("_stream").cast(pl.String).alias("_origin_stream"))
        if "_origin_offset" not in have:
            exprs.append(pl.col("_offset").alias("_origin_offset"))
    if span.label is not None:
        exprs.append(pl.lit(span.label, pl.String).alias("_stream"))
    if span.shift:
        exprs.append((pl.col("_offset") + span.shift).alias("_offset"))
    return frame.with_columns(exprs) if exprs else frame


def _align(frame: pl.LazyFrame, target: pl.DataFrame) -> pl.LazyFrame:
    import polars as pl

    have = frame.collect_schema()
    exprs = []
    for name, dtype in target.schema.items():
        expr = pl.col(name) if name in have else pl.lit(None)
        exprs.append(expr.cast(dtype).alias(name))
    return frame.select(exprs)


class StreamView(_Readable):
    """A read-only view of a stream at one generation (from `Stream.at` / `Stream.as_of`).

    It has the read API of `Stream` (`read`, `reader`, `scan`, `commits`, `next_offset`,
    `schema`) and never changes, whatever is appended later.
    """

    def __init__(self, log: Log, name: str, manifest: Manifest) -> None:
        self.log = log
        self.name = name
        self._manifest = manifest

    def __repr__(self) -> str:
        return f"<StreamView {self.name!r} at generation {self._manifest.generation}>"

    def _state(self) -> tuple[Manifest, HeadBatches]:
        self.log._check_open()
        return self._manifest, []


_COMMITS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("generation", pa.int64()),
        ("time", pa.string()),
        ("root", pa.string()),
        ("prev_root", pa.string()),
        ("writer_id", pa.string()),
        ("writer_epoch", pa.int64()),
        ("actions", pa.list_(pa.string())),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("records", pa.int64()),
    ]
)
