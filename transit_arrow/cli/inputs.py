"""Reading `transit append` input (NDJSON, CSV, Parquet) into one Arrow table.

The whole input is parsed before anything is appended, so a bad line appends nothing.
`_stream` and `_offset` columns in the input (as in `transit read` output) are dropped: the log
assigns them. `_timestamp` and `_headers` are kept, so records copied between streams keep them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import PurePath
from typing import IO, Any, Literal, TypeAlias, get_args

import pyarrow as pa

from ..errors import InvalidInputError
from ..record import SYSTEM_COLUMNS, coerce_input

__all__ = ["FORMATS", "InputFormat", "detect_format", "read_input", "user_columns"]

InputFormat: TypeAlias = Literal["ndjson", "csv", "parquet"]
FORMATS: tuple[str, ...] = get_args(InputFormat)

# Columns that `transit read` writes but the log assigns on append.
_ASSIGNED = ("_stream", "_offset")

_EXTENSIONS: dict[str, InputFormat] = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(name: str, explicit: InputFormat | None) -> InputFormat:
    """The input format: `explicit` if given, else by `name`'s extension, else NDJSON."""
    if explicit is not None:
        return explicit
    return _EXTENSIONS.get(PurePath(name).suffix.lower(), "ndjson")


def read_input(
    source: IO[bytes], fmt: InputFormat, *, name: str, user_schema: pa.Schema | None
) -> pa.Table:
    """Parse all of `source` into one table of user (and caller-supplied system) columns.

    Args:
        source: the binary input stream.
        fmt: its format.
        name: how to refer to the input in error messages (a path or "<stdin>").
        user_schema: the target stream's user columns, used as type hints (None: infer).

    Raises:
        InvalidInputError: the input cannot be parsed; the message names the line for NDJSON.
    """
    if fmt == "ndjson":
        table = _read_ndjson(source, name, user_schema)
    elif fmt == "csv":
        table = _read_csv(source, name, user_schema)
    else:
        table = _read_parquet(source, name)
    table = table.drop_columns([c for c in _ASSIGNED if c in table.column_names])
    if table.num_rows and fmt != "ndjson":
        # Refuse what `append` would refuse (reserved or duplicate names, no user column)
        # now, before the command creates the stream.
        try:
            coerce_input(table, user_schema)
        except InvalidInputError as e:
            raise InvalidInputError(f"{name}: {e}; nothing was appended") from None
    return table


def user_columns(schema: pa.Schema) -> pa.Schema | None:
    """The user part of a stream's read schema (None when it has no user columns yet)."""
    fields = [f for f in schema if f.name not in SYSTEM_COLUMNS]
    return pa.schema(fields) if fields else None


def _parse_lines(lines: Iterable[bytes], name: str) -> list[dict[str, Any]]:
    rows = []
    stamped = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise InvalidInputError(
                f"{name} line {number}: nested too deeply; nothing was appended"
            ) from None
        except json.JSONDecodeError as e:
            raise InvalidInputError(
                f"{name} line {number}: not valid JSON ({e.msg} at column {e.colno}); "
                "nothing was appended"
            ) from None
        except UnicodeDecodeError as e:
            raise InvalidInputError(
                f"{name} line {number}: not UTF-8 ({e.reason}); nothing was appended"
            ) from None
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{name} line {number}: expected a JSON object, got {type(row).__name__}; "
                "nothing was appended"
            )
        # JSON has no timestamp type: a caller-supplied `_timestamp` arrives as ISO 8601 text.
        stamp = row.get("_timestamp")
        if isinstance(stamp, str):
            try:
                row["_timestamp"] = dt.datetime.fromisoformat(stamp)
            except ValueError:
                raise InvalidInputError(
                    f"{name} line {number}: '_timestamp' {stamp!r} is not an ISO 8601 "
                    "timestamp; nothing was appended"
                ) from None
        stamped = stamped or stamp is not None
        for column in _ASSIGNED:
            row.pop(column, None)
        rows.append(row)
    if stamped:
        # The log stamps records only when a call supplies no `_timestamp` at all; stamp the
        # lines without one here, as if each line were appended on its own.
        now = dt.datetime.now(dt.UTC)
        for row in rows:
            if row.get("_timestamp") is None:
                row["_timestamp"] = now
    return rows


def _read_ndjson(source: IO[bytes], name: str, user_schema: pa.Schema | None) -> pa.Table:
    rows = _parse_lines(source, name)
    if not rows:
        return pa.table({})
    try:
        return coerce_input(rows, user_schema)
    except InvalidInputError as e:
        raise InvalidInputError(f"{name}: {e}; nothing was appended") from None


def _read_csv(source: IO[bytes], name: str, user_schema: pa.Schema | None) -> pa.Table:
    import pyarrow.csv as pv

    # Parse columns the stream already has with the stream's types (e.g. "1" into a double
    # column), so that a CSV does not fail on a type the inference happened to pick.
    hints = {
        f.name: f.type
        for f in user_schema or []
        if pa.types.is_primitive(f.type) or pa.types.is_string(f.type)
    }
    try:
        return pv.read_csv(source, convert_options=pv.ConvertOptions(column_types=hints))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"{name}: cannot read CSV: {e}; nothing was appended") from None


def _read_parquet(source: IO[bytes], name: str) -> pa.Table:
    import pyarrow.parquet as pq

    # Parquet needs random access; stdin and pipes are read into memory first.
    data: Any = source if source.seekable() else pa.BufferReader(source.read())
    try:
        return pq.read_table(data)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"{name}: cannot read Parquet: {e}; nothing was appended") from None
