"""Type aliases shared by the public API (kept in one place, see STYLE 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

__all__ = ["ArrowStreamExportable", "Durability", "RecordInput"]

Durability: TypeAlias = Literal["memory", "local", "tiered"]
"""Durability levels, weakest first (DESIGN §4)."""

DURABILITY_LEVELS: tuple[Durability, ...] = ("memory", "local", "tiered")


@runtime_checkable
class ArrowStreamExportable(Protocol):
    """Anything that exports an Arrow C stream (pyarrow, polars, pandas, DuckDB results)."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...


@runtime_checkable
class ArrowArrayExportable(Protocol):
    """Anything that exports a single Arrow C array + schema (e.g. a pyarrow RecordBatch)."""

    def __arrow_c_array__(
        self, requested_schema: object | None = None
    ) -> tuple[object, object]: ...


RecordInput: TypeAlias = (
    Mapping[str, Any] | bytes | str | Sequence[Mapping[str, Any]] | ArrowStreamExportable
)
"""What `Stream.append` accepts (DESIGN §2)."""
