"""SQL and dataframes over a whole log: DuckDB views and a cross-branch Polars frame (DESIGN §8).

- `connect(log, con=None, *, at=None)` (`Log.duckdb`): a DuckDB connection where every stream is
  a view under its own name, `transit_records` holds every stream's replay with a `_branch`
  column, and `transit_streams`, `transit_lineage`, `transit_commits`, `transit_segments`,
  `transit_checkpoints` are tables. Calling it again on the same connection refreshes it.
- `sql(log, query, **params)` (`Log.sql`): a query on a per-log connection refreshed first.
- `to_duckdb(stream)` (`Stream.to_duckdb`): one stream's replay as a DuckDB relation.
- `create_view(con, log, stream, generation=|as_of=|checkpoint=)`: a stream's past as a view.
- `scan_all(log)` (`Log.scan_all`): the cross-branch Polars LazyFrame.

The functions load DuckDB and Polars on first use, so importing this package (for
`QueryError`) costs nothing.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import QueryError

if TYPE_CHECKING:
    from .connection import connect, create_view, sql, to_duckdb
    from .frames import scan_all

__all__ = ["QueryError", "connect", "create_view", "scan_all", "sql", "to_duckdb"]

_MODULES = {
    "connect": "connection",
    "create_view": "connection",
    "sql": "connection",
    "to_duckdb": "connection",
    "scan_all": "frames",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
