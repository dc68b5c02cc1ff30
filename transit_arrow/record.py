"""Records and schemas: system columns, input coercion and schema evolution (DESIGN §2)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InvalidInputError, SchemaMismatchError

__all__ = [
    "HEADERS_TYPE",
    "SYSTEM_COLUMNS",
    "TIMESTAMP_TYPE",
    "caller_columns",
    "check_appendable",
    "check_names",
    "check_parquet",
    "coerce_input",
    "conform",
    "empty_table",
    "evolve_schema",
    "from_arrow",
    "full_schema",
    "head_schema",
    "parquet_exact",
    "schema_from_json",
    "schema_to_json",
]

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
HEADERS_TYPE = pa.map_(pa.string(), pa.string())
SYSTEM_COLUMNS = ("_stream", "_offset", "_timestamp", "_headers")
# Columns a caller may supply; the others are assigned by the log.
_CALLER_SYSTEM = {"_timestamp": TIMESTAMP_TYPE, "_headers": HEADERS_TYPE}

_STREAM_FIELD = pa.field("_stream", pa.string(), nullable=False)
_HEAD_SYSTEM_FIELDS = [
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_timestamp", TIMESTAMP_TYPE, nullable=False),
    pa.field("_headers", HEADERS_TYPE, nullable=True),
]


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of no rows in `schema`, made without importing pandas: pyarrow's own
    `Schema.empty_table()` (and `pa.array` of a list) imports it to look for pandas
    metadata, which cost a fresh process about 200 ms on its first `log.sql`."""
    return pa.Table.from_batches([], schema=schema)


_SIGNED: list[pa.DataType] = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
_UNSIGNED: list[pa.DataType] = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
_FLOATS: list[pa.DataType] = [pa.float16(), pa.float32(), pa.float64()]


def head_schema(user: pa.Schema) -> pa.Schema:
    """Schema of a head file: system columns except `_stream` (constant per head), then user."""
    return pa.schema([*_HEAD_SYSTEM_FIELDS, *user])


ORIGIN_FIELDS = [pa.field("_origin_stream", pa.string()), pa.field("_origin_offset", pa.int64())]


def full_schema(user: pa.Schema, *, origin: bool = False) -> pa.Schema:
    """Schema of read results: the system columns (with merge provenance if `origin`), then
    the user columns."""
    extra = ORIGIN_FIELDS if origin else []
    return pa.schema([_STREAM_FIELD, *_HEAD_SYSTEM_FIELDS, *extra, *user])


def schema_to_json(schema: pa.Schema) -> str:
    """Serialize a schema to a hex string of its Arrow IPC form (exact and portable)."""
    return bytes(schema.serialize()).hex()


def schema_from_json(text: str) -> pa.Schema:
    """Inverse of `schema_to_json`."""
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(text)))


# --- schema evolution -------------------------------------------------------------------------


def _rank(kind: list[pa.DataType], t: pa.DataType) -> int:
    return kind.index(t) if t in kind else -1


def _widen(column: str, old: pa.DataType, new: pa.DataType) -> pa.DataType:
    """The type a column holding `old` values must have to also hold `new` ones."""
    if old == new or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    for family in (_SIGNED, _UNSIGNED, _FLOATS):
        ro, rn = _rank(family, old), _rank(family, new)
        if ro >= 0 and rn >= 0:
            return family[max(ro, rn)]
    # Signed and unsigned meet at a signed type strictly wider than the unsigned one.
    signed, unsigned = (old, new) if old in _SIGNED else (new, old)
    if signed in _SIGNED and unsigned in _UNSIGNED:
        needed = max(_rank(_UNSIGNED, unsigned) + 1, _rank(_SIGNED, signed))
        if needed < len(_SIGNED):
            return _SIGNED[needed]
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {old, new} == {small, large}:
            return large
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        fields = {f.name: f for f in old}
        merged = [
            pa.field(f.name, _widen(f"{column}.{f.name}", f.type, new.field(f.name).type))
            if new.get_field_index(f.name) >= 0
            else f.with_nullable(True)
            for f in old
        ]
        merged += [f.with_nullable(True) for f in new if f.name not in fields]
        return pa.struct(merged)
    for is_kind, make in (
        (pa.types.is_list, pa.list_),
        (pa.types.is_large_list, pa.large_list),
    ):
        if is_kind(old) and is_kind(new):
            value = _widen(f"{column}[]", old.value_type, new.value_type)  # type: ignore[attr-defined]
            return make(value)
    raise SchemaMismatchError(
        f"column {column!r} has type {old} in the stream but {new} in the appended data; "
        "only new nullable columns and safe widening (e.g. int32 -> int64) are automatic"
    )


def _plain_schema(schema: pa.Schema) -> bool:
    """Whether `schema` is as `evolve_schema` builds them: nullable fields, no metadata."""
    return not schema.metadata and all(f.nullable and not f.metadata for f in schema)


def evolve_schema(current: pa.Schema | None, incoming: pa.Schema) -> pa.Schema:
    """Return the user schema that holds both `current` and `incoming` data.

    New columns are appended (nullable); types widen safely. Anything else raises
    `SchemaMismatchError` naming the column, the old and the new type.
    """
    if current is None:
        return pa.schema([pa.field(f.name, f.type) for f in incoming])
    if incoming.equals(current) and _plain_schema(current):
        return current  # the usual case: nothing to evolve
    fields = [pa.field(f.name, f.type) for f in current]
    index = {f.name: i for i, f in enumerate(fields)}
    for f in incoming:
        if f.name in index:
            i = index[f.name]
            fields[i] = pa.field(f.name, _widen(f.name, fields[i].type, f.type))
        else:
            index[f.name] = len(fields)
            fields.append(pa.field(f.name, f.type))
    return pa.schema(fields)


# --- input coercion ---------------------------------------------------------------------------


def check_names(names: Sequence[str]) -> None:
    for name in names:
        if not isinstance(name, str):
            raise InvalidInputError(f"column names must be strings, not {name!r}")
        if name.startswith("_") and name not in _CALLER_SYSTEM:
            raise InvalidInputError(
                f"column {name!r} is reserved: names starting with '_' belong to the log "
                "(only '_timestamp' and '_headers' may be supplied)"
            )
        if not name:
            raise InvalidInputError("column names must not be empty")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"duplicate column names in {list(names)!r}")


def _refuse_unordered(column: str, value: Any) -> None:
    """Sets have no order, so storing one as a list would make reads nondeterministic."""
    if isinstance(value, set | frozenset):
        raise InvalidInputError(
            f"column {column!r} holds a {type(value).__name__}; sets have no order: pass a "
            "sorted list instead"
        )
    if isinstance(value, dict):
        for item in value.values():
            _refuse_unordered(column, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_unordered(column, item)


def _prepare_row(row: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise InvalidInputError(f"a list of records must hold dicts, not {type(row).__name__}")
    out = dict(row)
    for key, value in out.items():
        _refuse_unordered(key, value)
    headers = out.get("_headers")
    if isinstance(headers, Mapping):
        out["_headers"] = [(str(k), str(v)) for k, v in headers.items()]
    stamp = out.get("_timestamp")
    if stamp is not None and not isinstance(stamp, str | datetime):
        raise InvalidInputError(
            f"'_timestamp' must be a datetime or an ISO 8601 string, not {stamp!r}"
        )
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidInputError(f"'_timestamp' {stamp!r} is not an ISO 8601 time") from e
        out["_timestamp"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return out


def _flat(kind: pa.DataType) -> bool:
    return not pa.types.is_nested(kind)


def _plain_views(table: pa.Table) -> pa.Table:
    """Arrow "view" string/binary columns (polars exports them) as plain string/binary."""
    schema = table.schema
    if not any(f.type in _VIEW_TYPES for f in schema):
        return table
    fields = []
    changed = False
    for f in schema:
        kind = f.type
        if kind == pa.string_view():
            kind, changed = pa.string(), True
        elif kind == pa.binary_view():
            kind, changed = pa.binary(), True
        fields.append(pa.field(f.name, kind, f.nullable))
    return table.cast(pa.schema(fields)) if changed else table


_VIEW_TYPES = (pa.string_view(), pa.binary_view())


def _from_rows(rows: list[dict[str, Any]], current: pa.Schema | None) -> pa.Table:
    names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                names.append(key)
    check_names(names)
    hints = {n: t for n, t in _CALLER_SYSTEM.items() if n in seen}
    if current is not None:
        # Nested hints would silently drop fields the rows add; those columns are inferred.
        hints.update({f.name: f.type for f in current if f.name in seen and _flat(f.type)})
        # pyarrow would truncate 4.5 into an int column: let such columns be inferred, so
        # evolution reports the mismatch instead.
        for name, kind in list(hints.items()):
            if pa.types.is_integer(kind) and not all(_integral(r.get(name)) for r in rows):
                # pyarrow would truncate 4.5 or Decimal("4.5") into an int column.
                del hints[name]
            elif _textual(kind) is not None and not all(
                r.get(name) is None or isinstance(r.get(name), _textual(kind) or ()) for r in rows
            ):
                del hints[name]  # pyarrow would turn bytes into str (or str into bytes)
            elif (
                name not in _CALLER_SYSTEM
                and _may_lose(kind)
                and not _round_trips([r.get(name) for r in rows], kind)
            ):
                # Converting to the column's type would round (float32, seconds, dates):
                # infer instead, and evolution widens the column or names it in a
                # SchemaMismatchError.
                del hints[name]
    if len(hints) == len(names):
        try:
            schema = pa.schema([(n, hints[n]) for n in names])
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass  # fall through: infer, then evolve (which names the offending column)
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values, type=_CALLER_SYSTEM.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise InvalidInputError(
                f"cannot store column {name!r} (Python types: {', '.join(kinds)}): {e}"
            ) from e
    return pa.table(columns)


def _textual(kind: pa.DataType) -> type | None:
    """The one Python type a string or binary column takes as it is."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return str
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return bytes
    return None


def _integral(value: Any) -> bool:
    """Whether `value` goes into an integer column as it is (None, or an int but no bool)."""
    return value is None or (isinstance(value, int | np.integer) and not isinstance(value, bool))


def _may_lose(kind: pa.DataType) -> bool:
    """Whether converting Python values to `kind` can round them silently."""
    if pa.types.is_floating(kind):
        return kind != pa.float64()
    if pa.types.is_timestamp(kind) or pa.types.is_time(kind) or pa.types.is_duration(kind):
        return kind.unit not in ("us", "ns")
    return pa.types.is_date(kind)


def _round_trips(values: list[Any], kind: pa.DataType) -> bool:
    """Whether `values` converted to `kind` read back exactly as they were."""
    try:
        back: list[Any] = pa.array(values, type=kind).to_pylist()  # type: ignore[misc]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False
    for value, got in zip(values, back, strict=True):
        numeric = isinstance(value, int | float) and isinstance(got, float)
        if type(value) is not type(got) and value is not None and not numeric:
            return False
        if value != got and not (value != value and got != got):  # NaN stays NaN
            return False
    return True


def from_arrow(data: Any) -> pa.Table:
    """Any Arrow producer (pyarrow, pandas, polars, DuckDB, PyCapsule) as one pyarrow Table;
    `InvalidInputError` for anything else."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if type(data).__module__.startswith("pandas"):
        # Before the PyCapsule path: that one would export the index as a reserved column.
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data).read_all()
    if hasattr(data, "__arrow_c_array__"):
        return pa.Table.from_batches([pa.record_batch(data)])
    raise InvalidInputError(
        f"cannot append a {type(data).__module__}.{type(data).__qualname__}: pass a dict, a list "
        "of dicts, bytes/str, or an Arrow producer (pyarrow, polars, pandas, DuckDB result)"
    )


def coerce_input(data: Any, current: pa.Schema | None) -> pa.Table:
    """Turn any accepted `append` input into an Arrow table of user (+ caller system) columns.

    Raises `InvalidInputError` for unsupported objects or reserved column names. The result is
    not yet conformed to the stream schema (see `evolve_schema` / `conform`).
    """
    if isinstance(data, Mapping):
        table = _from_rows([_prepare_row(data)], current)
    elif isinstance(data, bytes | bytearray | memoryview):
        table = pa.table({"payload": pa.array([bytes(data)], pa.binary())})
    elif isinstance(data, str):
        table = pa.table({"payload": pa.array([data], pa.string())})
    elif isinstance(data, list | tuple):
        if not data:
            raise InvalidInputError("cannot append an empty list of records")
        table = _from_rows([_prepare_row(r) for r in data], current)
    else:
        table = _plain_views(from_arrow(data))
        check_names(table.column_names)
    if table.num_columns == 0 or all(n in _CALLER_SYSTEM for n in table.column_names):
        raise InvalidInputError("appended data has no user columns")
    return table


def check_appendable(data: Any, current: pa.Schema | None) -> pa.Table:
    """Convert `data` as `append` does and raise what `append` would raise on a stream whose
    user schema is `current`, writing nothing: the coerced table, to append instead of `data`
    (an input such as a `RecordBatchReader` can be read only once).

    Raises:
        InvalidInputError: the data is not acceptable.
        SchemaMismatchError: a column would change type incompatibly.
    """
    table = coerce_input(data, current)
    conform(table, evolve_schema(current, user_part(table)))
    system_columns(table, 0)
    return table


def user_part(table: pa.Table) -> pa.Schema:
    """The user columns' schema of a coerced input table."""
    return pa.schema([f for f in table.schema if f.name not in _CALLER_SYSTEM])


def conform(table: pa.Table, user: pa.Schema) -> pa.Table:
    """Cast a coerced input table to the user schema (missing columns become null)."""
    n = table.num_rows
    if table.schema.equals(user, check_metadata=True):
        return table  # already conformed
    present = set(table.column_names)
    columns = []
    for field in user:
        if field.name in present:
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise SchemaMismatchError(
                        f"column {field.name!r}: cannot convert {col.type} to {field.type}: {e}"
                    ) from e
            columns.append(col)
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=user)


def system_columns(table: pa.Table, first_offset: int, now_us: int | None = None) -> list[Any]:
    """`_offset`, `_timestamp`, `_headers` for a coerced input table starting at `first_offset`."""
    n = table.num_rows
    offsets = pa.array(np.arange(first_offset, first_offset + n, dtype=np.int64))
    return [offsets, *caller_columns(table, now_us)]


def caller_columns(table: pa.Table | pa.RecordBatch, now_us: int | None = None) -> list[Any]:
    """`_timestamp` and `_headers` for a coerced input table: the caller's, checked, or the
    append time and no headers."""
    n = table.num_rows
    stamp = time.time_ns() // 1000 if now_us is None else now_us
    names = table.schema.names
    if "_timestamp" in names:
        ts: Any = table.column("_timestamp")
        try:
            if pa.types.is_timestamp(ts.type) and ts.type.tz is None:
                ts = ts.cast(pa.timestamp("us")).cast(pa.int64()).cast(TIMESTAMP_TYPE)
            else:
                ts = ts.cast(TIMESTAMP_TYPE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidInputError(
                f"'_timestamp' must be a timestamp with at most microsecond precision: {e}"
            ) from e
        if ts.null_count:
            # Records that supply no time get the append time (DESIGN §2).
            ts = pc.fill_null(ts, pa.scalar(stamp, TIMESTAMP_TYPE))
    else:
        ts = pa.array(np.full(n, stamp, dtype=np.int64)).view(TIMESTAMP_TYPE)
    if "_headers" in names:
        try:
            headers: Any = table.column("_headers").cast(HEADERS_TYPE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidInputError(f"'_headers' must be a map of strings: {e}") from e
    else:
        headers = _null_headers(n)
    return [ts, headers]


#: All-null `_headers` columns by length (arrays are immutable: appends of one size share one).
_NULL_HEADERS: dict[int, pa.Array[Any]] = {}


def _null_headers(n: int) -> pa.Array[Any]:
    column = _NULL_HEADERS.get(n)
    if column is None:
        column = pa.nulls(n, HEADERS_TYPE)
        if n <= 1 << 16:
            if len(_NULL_HEADERS) >= 16:
                _NULL_HEADERS.clear()
            _NULL_HEADERS[n] = column
    return column


# --- Parquet compatibility: checked before an append is acknowledged ----------------------------

# Types whose every value a Parquet segment stores and reads back exactly (with the Arrow
# schema stored in the file). Anything else (seconds and date64 that Parquet rescales,
# intervals, unions, empty structs, dictionaries of nested values, extension types ...) is
# checked by writing the appended values to Parquet in memory and reading them back.
_PARQUET_EXACT = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_fixed_size_binary,
    pa.types.is_date32,
    pa.types.is_time64,
    pa.types.is_decimal,
    pa.types.is_duration,
    pa.types.is_null,
)
_UNCHECKED: dict[pa.Schema, tuple[str, ...]] = {}


def _parquet_exact(kind: pa.DataType) -> bool:
    if isinstance(kind, pa.DictionaryType):
        value = kind.value_type
        return not pa.types.is_nested(value) and _parquet_exact(value)
    if isinstance(kind, pa.TimestampType):
        return bool(kind.unit != "s")
    if isinstance(kind, pa.Time32Type):
        return bool(kind.unit == "ms")
    if isinstance(kind, pa.StructType):
        return kind.num_fields > 0 and all(_parquet_exact(f.type) for f in kind)
    if isinstance(kind, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        return _parquet_exact(kind.value_type)
    if isinstance(kind, pa.MapType):
        return _parquet_exact(kind.key_type) and _parquet_exact(kind.item_type)
    return any(test(kind) for test in _PARQUET_EXACT)


def parquet_exact(schema: pa.Schema) -> bool:
    """Whether a Parquet segment stores every value of every column of `schema` exactly, so
    that `check_parquet` has nothing to check for it."""
    unchecked = _UNCHECKED.get(schema)
    if unchecked is None:
        unchecked = tuple(f.name for f in schema if not _parquet_exact(f.type))
        _UNCHECKED[schema] = unchecked
    return not unchecked


def check_parquet(table: pa.Table) -> None:
    """Raise `InvalidInputError` unless a Parquet segment can store every value of `table`
    (user columns conformed to the stream schema) and read it back exactly.

    Columns of types Parquet stores exactly cost nothing; others are written to Parquet in
    memory and read back, so a value that sealing would refuse or change is refused at append,
    before anything is acknowledged.
    """
    unchecked = _UNCHECKED.get(table.schema)
    if unchecked is None:
        unchecked = tuple(f.name for f in table.schema if not _parquet_exact(f.type))
        _UNCHECKED[table.schema] = unchecked
    for name in unchecked:
        column = table.column(name)
        try:
            sink = pa.BufferOutputStream()
            pq.write_table(pa.table({name: column}), sink, compression="none", store_schema=True)
            back = pq.read_table(pa.BufferReader(sink.getvalue())).column(0)
        except (pa.ArrowException, OverflowError, ValueError) as e:
            raise InvalidInputError(
                f"column {name!r} ({column.type}) cannot be stored in a Parquet segment: {e}; "
                "nothing was appended"
            ) from e
        if not _same_values(column, back):
            raise InvalidInputError(
                f"column {name!r} ({column.type}): a Parquet segment would not store these "
                f"values exactly (it reads them back as {back.type}); nothing was appended"
            )


def _same_values(column: pa.ChunkedArray[Any], back: pa.ChunkedArray[Any]) -> bool:
    try:
        if back.cast(column.type).equals(column):
            return True
    except pa.ArrowException:
        pass
    # Dictionaries may come back encoded otherwise (or decoded): compare the values.
    return "dictionary" in str(column.type) and column.to_pylist() == back.to_pylist()
