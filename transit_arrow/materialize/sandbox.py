"""The DuckDB connections materialization SQL runs on."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__all__ = ["sandbox"]

_LOCK = threading.Lock()
#: (process id, database): one in-memory database per process, never shared across a fork.
_BASE: tuple[int, duckdb.DuckDBPyConnection] | None = None


def sandbox() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for materialization SQL: in memory and without access to files or
    the network, so a definition (stored in the log, so written by anyone who can write it)
    can only read the tables registered on the connection.

    Each call returns a new connection (a cursor) to one in-memory database of this process
    created with external access disabled (which cannot be re-enabled while it runs):
    registered tables are private to the connection, and a cursor costs microseconds where
    a new database costs tens of milliseconds. Close it after use.
    """
    import duckdb

    global _BASE
    with _LOCK:
        if _BASE is None or _BASE[0] != os.getpid():
            _BASE = (os.getpid(), duckdb.connect(config={"enable_external_access": False}))
        return _BASE[1].cursor()
