"""The DuckDB connections materialization SQL runs on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__all__ = ["sandbox"]


def sandbox() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for materialization SQL: in memory and without access to files or
    the network, so a definition (stored in the log, so written by anyone who can write it)
    can only read the tables registered on the connection."""
    import duckdb

    return duckdb.connect(config={"enable_external_access": False})
