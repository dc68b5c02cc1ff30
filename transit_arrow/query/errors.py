"""The query layer's error (kept apart so that importing it does not import DuckDB)."""

from __future__ import annotations

from ..errors import TransitError

__all__ = ["QueryError"]


class QueryError(TransitError):
    """DuckDB rejected a query; the message is DuckDB's own and `__cause__` its exception."""
