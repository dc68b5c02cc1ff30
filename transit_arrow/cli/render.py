"""Rendering Arrow data for the terminal: aligned text tables and JSON values.

JSON conventions (documented in docs/cli.md): timestamps, dates and times are ISO 8601 strings
(timestamps carry their UTC offset), binary values are base64 strings, decimals are strings,
durations are seconds, non-finite floats are null and maps are JSON objects.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["csv_ready", "human_bytes", "json_rows", "ndjson_lines", "plural", "text_table"]

Converter = Callable[[Any], Any]

_MAX_CELL = 40
_CONTROL = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


# --- JSON -------------------------------------------------------------------------------------


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _seconds(value: dt.timedelta) -> float:
    return value.total_seconds()


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _nullable(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _json_converter(t: pa.DataType) -> Converter | None:
    """How to turn the Python values of an Arrow type into JSON values (None: as they are)."""
    if pa.types.is_dictionary(t):
        return _json_converter(t.value_type)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return _nullable(_iso)
    if pa.types.is_duration(t):
        return _nullable(_seconds)
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return _nullable(_base64)
    if pa.types.is_decimal(t):
        return _nullable(str)
    if pa.types.is_floating(t):
        return _nullable(_finite)
    if pa.types.is_map(t):
        return _nullable(_map_converter(t))
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        item = _json_converter(t.value_type)
        return None if item is None else _nullable(lambda xs: [item(x) for x in xs])
    if pa.types.is_struct(t):
        fields = {f.name: c for f in t if (c := _json_converter(f.type)) is not None}
        if not fields:
            return None
        return _nullable(lambda d: {k: fields[k](v) if k in fields else v for k, v in d.items()})
    return None


def _map_converter(t: pa.MapType[Any, Any, Any]) -> Converter:
    keys = _json_converter(t.key_type) or str
    items = _json_converter(t.item_type)

    def convert(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        return {str(keys(k)): items(v) if items else v for k, v in pairs}

    return convert


def _columns(data: pa.RecordBatch | pa.Table) -> list[list[Any]]:
    columns = []
    for i, field in enumerate(data.schema):
        values = data.column(i).to_pylist()
        convert = _json_converter(field.type)
        columns.append(values if convert is None else [convert(v) for v in values])
    return columns


def json_rows(data: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """The rows of `data` as JSON-ready dicts (see the module docstring for the conventions)."""
    names = data.schema.names
    return [dict(zip(names, row, strict=True)) for row in zip(*_columns(data), strict=True)]


def ndjson_lines(data: pa.RecordBatch | pa.Table) -> Iterator[str]:
    """One compact JSON object per row of `data`, without line terminators."""
    for row in json_rows(data):
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _flat(t: pa.DataType) -> bool:
    """Whether CSV can hold values of type `t` as they are."""
    if pa.types.is_dictionary(t):
        return _flat(t.value_type)
    return not (
        pa.types.is_nested(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _csv_text(value: Any) -> str:
    # Binary values arrive as base64 text, written as they are; nested ones as JSON.
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def csv_ready(data: pa.Table) -> pa.Table:
    """`data` with nested and binary columns replaced by their JSON text (binary: base64), so
    that a CSV writer accepts it."""
    for i, field in enumerate(data.schema):
        if _flat(field.type):
            continue
        convert = _json_converter(field.type)
        values = data.column(i).to_pylist()
        texts = [
            None if v is None else _csv_text(v if convert is None else convert(v)) for v in values
        ]
        data = data.set_column(i, pa.field(field.name, pa.string()), pa.array(texts, pa.string()))
    return data


# --- text -------------------------------------------------------------------------------------


def plural(n: int, noun: str) -> str:
    """`n` (with thousands separators) and `noun`, with an "s" unless `n` is 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _text_cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ", timespec="milliseconds")
        return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text
    if isinstance(value, float):
        text = format(value, ".6g")
        # Keep floats recognisable as such: 1.0 shows as "1.0", not "1".
        return text if any(c in text for c in ".ena") else text + ".0"
    if isinstance(value, bytes):
        text = repr(value)
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    else:
        text = str(value).translate(_CONTROL)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def human_bytes(n: int) -> str:
    """`n` bytes in B, kB, MB or GB (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def text_table(data: pa.Table, *, columns: Sequence[str] | None = None) -> str:
    """An aligned, human-readable table of `data` (long cells are cut with '…').

    Args:
        data: the rows to show.
        columns: the columns to show, in order (default: all).
    """
    names = list(columns) if columns is not None else data.schema.names
    cells: list[list[str]] = []
    for name in names:
        column = data.column(name)
        convert = _map_converter(column.type) if pa.types.is_map(column.type) else None
        values = column.to_pylist()
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        cells.append([_text_cell(v) for v in values])
    widths = [max([len(n), *map(len, col)]) for n, col in zip(names, cells, strict=True)]
    right = [_is_numeric(data.schema.field(n).type) for n in names]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(row, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(names), line(["-" * w for w in widths])]
    lines += [line(row) for row in zip(*cells, strict=True)]
    return "\n".join(lines)
