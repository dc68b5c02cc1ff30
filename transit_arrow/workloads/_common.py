"""Shared plumbing of the workload helpers: names, positions, labels and typed appends.

Everything here goes through the public API of `Log` and `Stream`; nothing writes what a plain
`append`, `branch` or `merge` could not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ..errors import AlreadyExistsError, InvalidInputError, StreamNotFoundError
from ..log import Log
from ..stream import Stream

__all__ = [
    "TIMESTAMP",
    "append_rows",
    "check_offset",
    "check_prefix",
    "component",
    "create_numbered",
    "ensure_stream",
    "json_text",
    "labels_of",
    "last_index",
    "parse_position",
    "refuse_existing",
    "require_str",
    "run_sql",
    "schema_of",
    "timestamp",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
"""The type of the `_timestamp` system column (a caller may supply it)."""

_COMPONENT_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_POSITION = re.compile(r"(?P<stream>[^@]+)@(?P<offset>\d+)")

T = TypeVar("T")


def run_sql(tables: Mapping[str, pa.Table], query: str) -> pa.Table:
    """Run `query` on a fresh in-memory DuckDB connection where `tables` are registered."""
    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        result: pa.Table = con.sql(query).to_arrow_table()
        return result
    finally:
        con.close()


def schema_of(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    """A schema of nullable columns."""
    return pa.schema([pa.field(name, kind) for name, kind in columns])


def require_str(value: object, what: str, *, empty: bool = False) -> str:
    """`value` if it is a (non-empty) string, else `InvalidInputError` naming `what`."""
    if not isinstance(value, str) or (not empty and not value):
        raise InvalidInputError(f"{what} must be a non-empty string, not {value!r}")
    return value


def check_prefix(prefix: object) -> str:
    """A stream-name prefix ('evals', 'chat/team'), or `InvalidInputError`."""
    text = require_str(prefix, "prefix")
    if not _PREFIX.fullmatch(text) or any(p in (".", "..") for p in text.split("/")):
        raise InvalidInputError(
            f"prefix {text!r} must be '/'-separated parts of letters, digits, '.', '_', '-'"
        )
    return text


def component(value: object) -> str:
    """`value` (an id of any kind) as one stream-name component.

    Characters a stream name does not allow become '-'; a result that starts with '_' or is
    '.'/'..' gets a 't' in front ('_' names are the helpers' own, such as `_scores`).
    """
    text = _COMPONENT_BAD.sub("-", str(value)).strip("-") or "x"
    if text.startswith("_") or text in (".", ".."):
        text = "t" + text
    return text[:120]


def json_text(value: Any) -> str | None:
    """`value` as compact JSON text (strings are kept as they are; None stays None)."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"cannot write {value!r} as JSON: {e}") from None


def labels_of(values: Mapping[str, object]) -> dict[str, str]:
    """Labels (str -> str) from `values`, leaving out None values."""
    return {k: str(v) for k, v in values.items() if v is not None}


def parse_position(text: object) -> tuple[str, int]:
    """`'stream@N'` as `(stream, N)`, or `InvalidInputError`."""
    match = _POSITION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(f"a position is written 'stream@offset', not {text!r}")
    return match["stream"], int(match["offset"])


def check_offset(stream: Stream, offset: object, what: str) -> int:
    """`offset` if it is an offset of `stream`'s replay, else `InvalidInputError`."""
    end = stream.next_offset
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < end:
        raise InvalidInputError(
            f"{what} must be an offset of {stream.name!r} (0..{end - 1}), not {offset!r}"
        )
    return offset


def last_index(column: pa.ChunkedArray[Any] | pa.Array[Any], value: str) -> int | None:
    """Index of the last element equal to `value`, or None."""
    values = column.to_pylist()
    return next((i for i in range(len(values) - 1, -1, -1) if values[i] == value), None)


def append_rows(
    stream: Stream, schema: pa.Schema, rows: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """Append `rows` (dicts over `schema`'s columns, optionally `_timestamp`) in one call.

    Returns the first and last offsets. Unknown keys raise `InvalidInputError` before anything
    is written.
    """
    if not rows:
        raise InvalidInputError("nothing to append")
    allowed = set(schema.names) | {"_timestamp"}
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise InvalidInputError(f"unknown field(s) {sorted(unknown)}; known: {schema.names}")
    full = schema
    if any(row.get("_timestamp") is not None for row in rows):
        full = schema.append(pa.field("_timestamp", TIMESTAMP))
    try:
        table = pa.Table.from_pylist([dict(r) for r in rows], schema=full)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
        raise InvalidInputError(f"records do not fit the schema: {e}") from None
    ack = stream.append(table)
    return ack.first_offset, ack.last_offset


def timestamp(value: datetime | str | None) -> datetime | None:
    """An aware datetime from a datetime (naive = UTC) or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"not an ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"a time is a datetime or an ISO 8601 string, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def ensure_stream(
    log: Log, name: str, schema: pa.Schema, *, labels: Mapping[str, str], reason: str
) -> Stream:
    """Stream `name`, created (with `schema` and `labels`) when it does not exist yet."""
    try:
        return log.stream(name)
    except StreamNotFoundError:
        pass
    try:
        metadata = {"actor": "transit_arrow.workloads", "reason": reason, "labels": dict(labels)}
        return log.create_stream(name, schema=schema, metadata=metadata)
    except AlreadyExistsError:  # created concurrently
        return log.stream(name)


def refuse_existing(log: Log, names: Iterable[str], source: object) -> None:
    """`AlreadyExistsError` if any of `names` is a stream of `log` (an importer's first check)."""
    taken = sorted(set(names) & set(log.streams().column("name").to_pylist()))
    if taken:
        raise AlreadyExistsError(f"streams {taken} exist already; was {source} imported before?")


def create_numbered(base: str, start: int, create: Callable[[str], T]) -> T:
    """`create(f"{base}{n}")` for the first n >= start whose name is free."""
    n = start
    while True:
        try:
            return create(f"{base}{n}")
        except AlreadyExistsError:
            n += 1
            if n > start + 10_000:
                raise
