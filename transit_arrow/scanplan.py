"""The replay as data: which files, which offsets, which shifts and which schema make up a
stream's replay, for engines other than this library (docs/scan_plan.md).

A `ScanPlan` is a `ReplayPlan` written down: one *file span* per (replay span, segment file)
in replay order, each saying which stored offsets of the file to read (`read_first` ..
`read_last`), how to show them (`shift` added to `_offset`, the `_stream` label, whether to
fill `_origin_stream` / `_origin_offset`), and the file's size and BLAKE3 so a reader can
verify what it fetched. Unsealed head records (which exist only on the writer's machine) are
carried *inline*, as Arrow IPC stream bytes already shaped to the read schema, so a plan is
complete on any machine. `read_scan_plan` is the reference reader: it rebuilds exactly what
`stream.read()` returns from the plan alone (in its JSON form, too), which is what proves the
JSON form complete. A `LogScanPlan` holds every stream's plan and the cross-branch schema of
`transit_records` / `Log.scan_all()` (`_branch` first).
"""

from __future__ import annotations

import base64
import builtins
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Self
from urllib.parse import unquote, urlparse

import blake3
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .engine.read import ReplayPlan
from .engine.replay import own_start
from .errors import IntegrityError, InvalidInputError, StorageError
from .record import empty_table, schema_from_json, schema_to_json
from .segments.verified import hash_bytes
from .storage import ObjectStore
from .storage.memory import MemoryStore
from .storage.s3 import s3_options

__all__ = [
    "FILES_SCHEMA",
    "FORMAT",
    "VERSION",
    "FileSpan",
    "Filters",
    "Heads",
    "LogScanPlan",
    "ScanPlan",
    "fetcher",
    "load_plan",
    "log_scan_plan",
    "output_schema",
    "prune",
    "read_file_span",
    "read_scan_plan",
    "scan_plan",
]

#: The `format` value of every scan plan's JSON form.
FORMAT = "transit-arrow/scan-plan"
#: The version of the JSON form this module writes and reads.
VERSION = 1

Heads = Literal["inline", "exclude", "seal"]
"""What a plan does with unsealed head records: carry them inline (default), leave them out
(committed records only), or require that there are none (the caller sealed first)."""

Filters = Sequence[tuple[str, str, Any]] | Sequence[Sequence[tuple[str, str, Any]]]
"""Row filters in disjunctive normal form, as `pyarrow.parquet` and `dask` take them: a list
of `(column, op, value)` terms ANDed, or a list of such lists ORed. Ops: `==`, `=`, `!=`, `<`,
`<=`, `>`, `>=`, `in`, `not in`."""

FILES_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        pa.field("branch", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("stream_label", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("url", pa.string()),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("blake3", pa.string(), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
        pa.field("first_offset", pa.int64(), nullable=False),
        pa.field("last_offset", pa.int64(), nullable=False),
        pa.field("read_first", pa.int64(), nullable=False),
        pa.field("read_last", pa.int64(), nullable=False),
        pa.field("whole", pa.bool_(), nullable=False),
        pa.field("shift", pa.int64(), nullable=False),
        pa.field("replay_first", pa.int64(), nullable=False),
        pa.field("replay_last", pa.int64(), nullable=False),
        pa.field("provenance", pa.bool_(), nullable=False),
        pa.field("own", pa.bool_(), nullable=False),
        pa.field("inline", pa.binary()),
    ]
)
"""One row per file span (`ScanPlan.to_arrow`); docs/scan_plan.md describes each column."""

_ORIGIN = ("_origin_stream", "_origin_offset")


@dataclass(frozen=True)
class FileSpan:
    """Stored records `read_first..read_last` (inclusive) of one file, shown at `+ shift`.

    `kind` is "segment" (a Parquet file of the log, at `path` in the store and `url`) or
    "inline" (unsealed head records carried in `inline` as Arrow IPC stream bytes, already in
    the read schema). `bytes` and `blake3` are those of the file (or of the inline bytes).
    `own` says whether the records are the stream's own (appended to it or produced by its
    merge) rather than inherited from the position it links to (`_own` of `transit_records`).
    """

    branch: str
    index: int
    kind: str
    origin: str
    stream_label: str
    path: str | None
    url: str | None
    bytes: int
    blake3: str
    records: int
    first_offset: int
    last_offset: int
    read_first: int
    read_last: int
    whole: bool
    shift: int
    replay_first: int
    replay_last: int
    provenance: bool
    own: bool
    inline: builtins.bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this file span (inline bytes base64-encoded)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["inline"] = None if self.inline is None else base64.b64encode(self.inline).decode()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileSpan:
        """Inverse of `to_json`."""
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        if values["inline"] is not None:
            values["inline"] = base64.b64decode(values["inline"])
        return cls(**values)


def _schema_json(schema: pa.Schema) -> dict[str, Any]:
    return {
        "ipc": schema_to_json(schema),
        "fields": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
    }


def _rows_table(spans: Iterable[FileSpan], meta: dict[str, str]) -> pa.Table:
    rows = [{f.name: getattr(s, f.name) for f in fields(s)} for s in spans]
    table = pa.Table.from_pylist(rows, schema=FILES_SCHEMA)
    return table.replace_schema_metadata(
        {"transit.format": FORMAT, "transit.version": str(VERSION), **meta}
    )


class _JsonForm:
    """`to_json` and `from_json` over a plan's `to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the plan (see docs/scan_plan.md)."""
        raise NotImplementedError

    def to_json(self, *, indent: int | None = None) -> str:
        """The plan as JSON text (versioned; `load_plan` reads it)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> Self:
        """Read a plan of this kind from its JSON form (text or parsed object)."""
        plan = load_plan(data)
        if not isinstance(plan, cls):
            raise InvalidInputError(f"this JSON is a {type(plan).__name__}, not a {cls.__name__}")
        return plan

    def _header(self, kind: str, log: str, schema: pa.Schema, records: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "log": log,
            "records": records,
            "schema": _schema_json(schema),
        }


@dataclass(frozen=True)
class ScanPlan(_JsonForm):
    """One stream's replay as files, offset ranges, shifts and a read schema.

    Attributes:
        log: the log's root URI (`file:///…`, `s3://bucket/prefix`, `memory://name`).
        stream: the stream replayed.
        generation: the generation planned; `root` is its commit root.
        next_offset: the offset after the replay's last record.
        schema: the read schema (`stream.schema`): what reading the plan returns.
        files: the file spans in replay order.
    """

    log: str
    stream: str
    generation: int
    root: str
    next_offset: int
    schema: pa.Schema
    files: tuple[FileSpan, ...]

    @property
    def records(self) -> int:
        """How many records reading the plan returns."""
        return sum(f.read_last - f.read_first + 1 for f in self.files)

    def to_arrow(self) -> pa.Table:
        """One `FILES_SCHEMA` row per file span; the read schema is in the table's metadata
        (`transit.schema`, the hex of its Arrow IPC serialization)."""
        return _rows_table(
            self.files,
            {
                "transit.log": self.log,
                "transit.stream": self.stream,
                "transit.generation": str(self.generation),
                "transit.root": self.root,
                "transit.schema": schema_to_json(self.schema),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the plan (see docs/scan_plan.md)."""
        return {
            **self._header("stream", self.log, self.schema, self.records),
            "stream": self.stream,
            "generation": self.generation,
            "root": self.root,
            "next_offset": self.next_offset,
            "files": [f.to_json() for f in self.files],
        }


@dataclass(frozen=True)
class LogScanPlan(_JsonForm):
    """Every readable stream's plan, and the cross-branch schema (`_branch` first).

    Reading it returns what `Log.scan_all()` and the SQL view `transit_records` hold. Streams
    whose history cannot be read are left out and listed in `errors`.
    """

    log: str
    schema: pa.Schema
    streams: tuple[ScanPlan, ...]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """How many records reading the plan returns."""
        return sum(p.records for p in self.streams)

    def to_arrow(self) -> pa.Table:
        """Every stream's file spans (`branch` says whose replay a row belongs to)."""
        return _rows_table(
            (f for p in self.streams for f in p.files),
            {"transit.log": self.log, "transit.schema": schema_to_json(self.schema)},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the plan (see docs/scan_plan.md)."""
        return {
            **self._header("log", self.log, self.schema, self.records),
            "streams": [p.to_dict() for p in self.streams],
            "errors": dict(self.errors),
        }


def load_plan(data: str | bytes | dict[str, Any]) -> ScanPlan | LogScanPlan:
    """A stream or whole-log plan from its JSON form.

    Raises:
        InvalidInputError: not a scan plan, or a version this library cannot read.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise InvalidInputError(f"a scan plan must be JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidInputError(f"not a scan plan (expected an object with format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise InvalidInputError(
            f"scan plan version {data.get('version')!r} is not supported (this library reads "
            f"version {VERSION}); upgrade transit-arrow"
        )
    try:
        if data.get("kind") == "log":
            return LogScanPlan(
                log=data["log"],
                schema=schema_from_json(data["schema"]["ipc"]),
                streams=tuple(_stream_plan(s) for s in data["streams"]),
                errors=dict(data.get("errors") or {}),
            )
        return _stream_plan(data)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
        raise InvalidInputError(f"malformed scan plan: {type(e).__name__}: {e}") from None


def _stream_plan(data: dict[str, Any]) -> ScanPlan:
    return ScanPlan(
        log=data["log"],
        stream=data["stream"],
        generation=int(data["generation"]),
        root=data["root"],
        next_offset=int(data["next_offset"]),
        schema=schema_from_json(data["schema"]["ipc"]),
        files=tuple(FileSpan.from_json(f) for f in data["files"]),
    )


# --- planning ---------------------------------------------------------------------------------


def _url(plan: ReplayPlan, path: str) -> str:
    """Where other engines find a store object: the log's root URI and the key, verbatim."""
    return f"{plan.catalog.uri}/{path}"


def scan_plan(plan: ReplayPlan, *, heads: Heads = "inline") -> ScanPlan:
    """The scan plan of a replay (this is `Stream.scan_plan`).

    Args:
        plan: the replay, from `live_plan` / `plan_at`.
        heads: "inline" carries unsealed records as Arrow IPC bytes; "exclude" plans committed
            records only; "seal" refuses a replay that still has unsealed records (the caller
            flushed first, so the plan names files only).

    Raises:
        InvalidInputError: `heads` is unknown, or "seal" and records are still unsealed.
    """
    if heads not in ("inline", "exclude", "seal"):
        raise InvalidInputError(f"heads must be 'inline', 'exclude' or 'seal', not {heads!r}")
    files: list[FileSpan] = []
    mine = own_start(plan.manifest)
    for span in plan.spans:
        for seg in span.manifest.segments:
            if seg.last_offset < span.lo or seg.first_offset >= span.hi:
                continue
            first, last = max(span.lo, seg.first_offset), min(span.hi - 1, seg.last_offset)
            files.append(
                FileSpan(
                    branch=plan.name,
                    index=len(files),
                    kind="segment",
                    origin=span.origin,
                    stream_label=span.label or span.origin,
                    path=seg.path,
                    url=_url(plan, seg.path),
                    bytes=seg.bytes,
                    blake3=seg.blake3,
                    records=seg.records,
                    first_offset=seg.first_offset,
                    last_offset=seg.last_offset,
                    read_first=first,
                    read_last=last,
                    whole=first == seg.first_offset and last == seg.last_offset,
                    shift=span.shift,
                    replay_first=first + span.shift,
                    replay_last=last + span.shift,
                    provenance=span.provenance,
                    own=first + span.shift >= mine,
                )
            )
    next_offset = plan.manifest.next_offset
    unsealed = sum(b.num_rows for _, _, bs in plan.heads for b in bs)
    if unsealed and heads == "seal":
        raise InvalidInputError(
            f"stream {plan.name!r} has {unsealed} unsealed records that this process cannot "
            "seal (another process on this machine writes them); plan with heads='inline' or "
            "'exclude', or flush in the writing process first"
        )
    if unsealed and heads == "inline":
        files.append(_inline(plan, len(files)))
        next_offset = plan.next_offset
    return ScanPlan(
        log=plan.catalog.uri,
        stream=plan.name,
        generation=plan.manifest.generation,
        root=plan.manifest.root,
        next_offset=next_offset,
        schema=plan.schema,
        files=tuple(files),
    )


def _inline(plan: ReplayPlan, index: int) -> FileSpan:
    table = plan.head_table()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    first = plan.heads[0][0]
    last = plan.next_offset - 1
    return FileSpan(
        branch=plan.name,
        index=index,
        kind="inline",
        origin=plan.name,
        stream_label=plan.name,
        path=None,
        url=None,
        bytes=len(data),
        blake3=blake3.blake3(data).hexdigest(),
        records=table.num_rows,
        first_offset=first,
        last_offset=last,
        read_first=first,
        read_last=last,
        whole=True,
        shift=0,
        replay_first=first,
        replay_last=last,
        provenance=False,
        own=True,
        inline=data,
    )


def log_scan_plan(
    log: str, plans: Iterable[ReplayPlan], schema: pa.Schema, errors: dict[str, str]
) -> LogScanPlan:
    """The whole-log plan of `plans` (every stream's replay) with the cross-branch `schema`
    (the query layer's `records_schema`), and the `errors` of streams left out."""
    return LogScanPlan(log, schema, tuple(scan_plan(p) for p in plans), dict(errors))


# --- reading ----------------------------------------------------------------------------------

Fetch = Callable[[FileSpan], bytes]
"""Returns a segment file's bytes."""


def fetcher(
    filesystem: Any = None, *, storage_options: dict[str, Any] | None = None
) -> Callable[[FileSpan], bytes]:
    """A function returning a file span's bytes, from:

    - `None`: the span's `url` (a `file://` path, `s3://` through s3fs with
      `storage_options`, `memory://` in this process, anything else through fsspec);
    - a transit-arrow `ObjectStore` (read by the span's store `path`);
    - an fsspec filesystem or a `pyarrow.fs.FileSystem` (read by `url`).
    """
    if isinstance(filesystem, ObjectStore):
        store = filesystem
        return lambda span: store.get(_need(span.path, span))
    if isinstance(filesystem, pafs.FileSystem):
        arrow_fs = filesystem

        def from_pyarrow(span: FileSpan) -> bytes:
            url = _need(span.url, span)
            path = unquote(urlparse(url).path) if url.startswith("file://") else url
            path = path.split("://", 1)[-1]
            with arrow_fs.open_input_file(path) as f:
                data: bytes = f.readall()
            return data

        return from_pyarrow
    if filesystem is not None:
        fs = filesystem
        return lambda span: bytes(fs.cat_file(_need(span.url, span)))
    options = dict(storage_options or {})
    cache: dict[str, Any] = {}

    def from_url(span: FileSpan) -> bytes:
        url = _need(span.url, span)
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        if scheme == "file":
            path = url[len("file://") :] if url.startswith("file://") else url
            with open(path, "rb") as f:
                return f.read()
        if scheme == "memory":
            name = url[len("memory://") :].split("/", 1)[0]
            root = f"memory://{name}/"
            return MemoryStore.named(name).get(url[len(root) :])
        if scheme not in cache:
            kwargs = s3_options(options) if scheme == "s3" else options
            cache[scheme] = fsspec.filesystem(scheme, **kwargs)
        return bytes(cache[scheme].cat_file(url))

    return from_url


def _need(value: str | None, span: FileSpan) -> str:
    if value is None:
        raise InvalidInputError(f"file span {span.index} of {span.branch!r} names no file")
    return value


def _verified(span: FileSpan, fetch: Fetch) -> bytes:
    """The span's bytes, checked against its size and BLAKE3 (nothing unverified is read)."""
    if span.inline is not None:
        data = span.inline
    else:
        try:
            data = fetch(span)
        except FileNotFoundError as e:
            raise IntegrityError(
                f"segment {span.url} of stream {span.origin!r} is referenced by the plan but "
                "missing"
            ) from e
        except (IntegrityError, StorageError, InvalidInputError):
            raise
        except OSError as e:
            raise StorageError(f"cannot fetch segment {span.url}: {e}") from e
    found = hash_bytes(data)
    if found != span.blake3 or len(data) != span.bytes:
        where = span.url if span.kind == "segment" else f"inline head of {span.branch!r}"
        raise IntegrityError(
            f"{where} does not match the scan plan: expected BLAKE3 {span.blake3} "
            f"({span.bytes} bytes), found {found} ({len(data)} bytes); nothing was read from it"
        )
    return data


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


def _dnf(filters: Filters | None) -> list[list[tuple[str, str, Any]]] | None:
    """`filters` as a list of conjunctions (validated)."""
    if filters is None:
        return None
    items = list(filters)
    if not items:
        return None
    conjunctions = [list(items)] if isinstance(items[0], tuple) else [list(c) for c in items]
    for conj in conjunctions:
        for term in conj:
            if not (isinstance(term, tuple) and len(term) == 3 and term[1] in _OPS):
                raise InvalidInputError(
                    f"filters take (column, op, value) terms with op one of {sorted(_OPS)}, "
                    f"not {term!r}"
                )
    return conjunctions  # type: ignore[return-value]


def _expression(conjunctions: list[list[tuple[str, str, Any]]]) -> pc.Expression | None:
    """The DNF as a pyarrow expression (None when it keeps everything)."""
    out = None
    for conj in conjunctions:
        expr = None
        for name, op, value in conj:
            term = _term(pc.field(name), op, value)
            expr = term if expr is None else expr & term
        if expr is None:
            return None  # an empty conjunction is true
        out = expr if out is None else out | expr
    return out


def _term(ref: pc.Expression, op: str, value: Any) -> pc.Expression:
    if op in ("in", "not in"):
        expr = ref.isin(list(value))
        return ~expr if op == "not in" else expr
    result: pc.Expression = _OPS[op](ref, value)  # type: ignore[assignment]
    return result


def _constant(span: FileSpan, name: str, branch: str | None) -> str | bool | None:
    """The value a column has on every row of the span, if the plan fixes it."""
    if name == "_stream":
        return span.stream_label
    if name == "_branch":
        return branch
    if name == "_own":
        return span.own
    return None


def _fold(
    span: FileSpan, conj: list[tuple[str, str, Any]], branch: str | None
) -> list[tuple[str, str, Any]] | None:
    """The terms of `conj` that still depend on the rows of `span`, or None when no row of
    the span can match (a constant column fails a term, or `_offset` bounds miss the span)."""
    lo, hi = span.replay_first, span.replay_last
    rest = []
    for name, op, value in conj:
        constant = _constant(span, name, branch)
        if constant is not None:
            if not _OPS[op](constant, value):
                return None
            continue
        if name == "_offset" and op != "not in":
            values = list(value) if op == "in" else [value]
            if op in ("==", "=", "in"):
                inside = [v for v in values if lo <= v <= hi]
                if not inside:
                    return None
                lo, hi = min(inside), max(inside)
            elif op in (">", ">="):
                lo = max(lo, value + (op == ">"))
            elif op in ("<", "<="):
                hi = min(hi, value - (op == "<"))
            if lo > hi:
                return None
        rest.append((name, op, value))
    return rest


def prune(
    spans: Iterable[FileSpan], filters: Filters | None, branch: str | None = None
) -> list[FileSpan]:
    """The spans that can hold rows matching `filters` (by `_offset` range, `_stream` label
    and `_branch`), so engines need not schedule the others."""
    dnf = _dnf(filters)
    if dnf is None:
        return list(spans)
    return [s for s in spans if any(_fold(s, c, branch) is not None for c in dnf)]


def _pushed(
    span: FileSpan,
    dnf: list[list[tuple[str, str, Any]]],
    file_schema: pa.Schema,
    read: pa.Schema,
    branch: str | None,
) -> pc.Expression | None:
    """A filter on the *stored* columns that keeps at least every row `dnf` keeps after
    shaping: terms on columns stored as read (`_offset` shifted back) are kept, others
    dropped (the exact filter runs again after shaping)."""
    out: pc.Expression | None = None
    for conj in dnf:
        rest = _fold(span, conj, branch)
        if rest is None:
            continue
        expr = None
        for name, op, value in rest:
            if name == "_offset":
                stored = [v - span.shift for v in value] if op in ("in", "not in") else None
                term = _term(
                    pc.field(name), op, stored if stored is not None else value - span.shift
                )
            elif (
                name in file_schema.names
                and name in read.names
                and name not in _ORIGIN
                and file_schema.field(name).type == read.field(name).type
            ):
                term = _term(pc.field(name), op, value)
            else:
                continue
            expr = term if expr is None else expr & term
        if expr is None:
            return None  # this conjunction keeps every row: push nothing
        out = expr if out is None else out | expr
    return out if out is not None else pc.scalar(False)


def read_file_span(
    span: FileSpan,
    schema: pa.Schema,
    fetch: Fetch,
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    branch: str | None = None,
) -> pa.Table:
    """Read one file span shaped to `schema` (or its `columns`), filtered by `filters`.

    The algorithm of docs/scan_plan.md: keep stored rows `read_first <= _offset <= read_last`;
    `_stream` is `stream_label`; `_offset` is the stored offset plus `shift`; with
    `provenance`, `_origin_stream` / `_origin_offset` come from the file's columns of those
    names, else from the origin stream and the stored offset; `_branch` is `branch`; other
    columns are cast to the read type, null where the file lacks them. The file's bytes are
    verified against `blake3` before anything is read. Filters are pushed into the Parquet scan
    where the stored values decide them (row groups are skipped by their statistics), and
    applied exactly after shaping.
    """
    out_schema = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    dnf = _dnf(filters)
    data = _verified(span, fetch)
    if span.kind == "inline":
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        file_schema = table.schema
        pushed = None if dnf is None else _pushed(span, dnf, file_schema, schema, branch)
        if pushed is not None:
            table = table.filter(pushed)
    else:
        import pyarrow.dataset as ds

        fragment = ds.ParquetFileFormat().make_fragment(pa.BufferReader(data))  # type: ignore[arg-type]
        file_schema = fragment.physical_schema
        needed = set(out_schema.names) | {"_offset"}
        if dnf is not None:
            needed |= {t[0] for conj in dnf for t in conj}
        stored = [n for n in file_schema.names if n in needed]
        row_filter = None
        if not span.whole:
            offset = pc.field("_offset")
            row_filter = (offset >= span.read_first) & (offset <= span.read_last)
        pushed = None if dnf is None else _pushed(span, dnf, file_schema, schema, branch)
        if pushed is not None:
            row_filter = pushed if row_filter is None else row_filter & pushed
        table = fragment.to_table(columns=stored, filter=row_filter)
    if dnf is not None:
        filter_names = {t[0] for conj in dnf for t in conj}
        wide = pa.schema([f for f in schema if f.name in set(out_schema.names) | filter_names])
        shaped = _shape(table, wide, span, branch)
        expr = _expression(dnf)
        if expr is not None:
            shaped = shaped.filter(expr)
        return shaped.select(out_schema.names)
    return _shape(table, out_schema, span, branch)


def _shape(table: pa.Table, schema: pa.Schema, span: FileSpan, branch: str | None) -> pa.Table:
    n = table.num_rows
    have = table.schema.names
    arrays: list[Any] = []
    for f in schema:
        name = f.name
        if name == "_branch":
            arrays.append(pa.repeat(pa.scalar(branch, f.type), n))
        elif name == "_own":
            arrays.append(pa.repeat(pa.scalar(span.own, f.type), n))
        elif name == "_stream":
            arrays.append(pa.repeat(pa.scalar(span.stream_label, f.type), n))
        elif name == "_offset" and span.shift:
            arrays.append(pc.add(table.column("_offset"), span.shift))
        elif span.provenance and name in _ORIGIN and name not in have:
            if name == "_origin_stream":
                arrays.append(pa.repeat(pa.scalar(span.origin, f.type), n))
            else:
                arrays.append(table.column("_offset"))
        elif name in have:
            column = table.column(name)
            arrays.append(column if column.type == f.type else column.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def output_schema(
    schema: pa.Schema, columns: Sequence[str] | None, filters: Filters | None
) -> pa.Schema:
    """The schema of reading `columns` (all when None) of a plan with `schema`, after checking
    that they and every column `filters` names exist and that `filters` is well formed.

    Raises:
        InvalidInputError: an unknown column, `columns` given as a string, a malformed filter.
    """
    if columns is not None and (isinstance(columns, str) or not isinstance(columns, Sequence)):
        raise InvalidInputError("columns must be a list of names, not a string")
    named = [t[0] for conj in (_dnf(filters) or []) for t in conj]
    unknown = [c for c in [*(columns or []), *named] if c not in schema.names]
    if unknown:
        raise InvalidInputError(f"no column(s) {unknown}; the plan's columns are {schema.names}")
    return schema if columns is None else pa.schema([schema.field(c) for c in columns])


def read_scan_plan(
    plan: ScanPlan | LogScanPlan | str | bytes | dict[str, Any],
    filesystem: Any = None,
    *,
    storage_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
) -> pa.Table:
    """The reference reader: the records a plan describes, from the plan alone.

    For a stream plan the result equals `stream.read()` (same rows in replay order, same
    schema); for a whole-log plan, every stream's replay stacked with `_branch` (what
    `Log.scan_all()` holds). Every file is verified against the plan's BLAKE3 first.

    Args:
        plan: a plan, or its JSON form (text or parsed object).
        filesystem: where files are fetched from (see `fetcher`): None reads each span's
            `url`; or an fsspec / pyarrow filesystem, or a transit-arrow `ObjectStore`.
        storage_options: for `s3://` URLs when `filesystem` is None (endpoint, key, ...).
        columns: output only these columns (default: all of the plan's schema).
        filters: DNF row filters (see `Filters`), pushed into the Parquet scans.

    Raises:
        IntegrityError: a file is missing or does not match its BLAKE3.
        InvalidInputError: the plan is malformed, or a column does not exist.
    """
    if not isinstance(plan, ScanPlan | LogScanPlan):
        plan = load_plan(plan)
    fetch = fetcher(filesystem, storage_options=storage_options)
    schema = plan.schema
    out_schema = output_schema(schema, columns, filters)
    branches = (
        [(p.stream, p.files) for p in plan.streams]
        if isinstance(plan, LogScanPlan)
        else [(None, plan.files)]
    )
    tables = [
        read_file_span(s, schema, fetch, columns=columns, filters=filters, branch=branch)
        for branch, spans in branches
        for s in prune(spans, filters, branch)
    ]
    return pa.concat_tables(tables) if tables else empty_table(out_schema)
