"""The process's DuckDB database: one in-memory database per process (made again in a forked
child), behind every log's `sql` session (`connection.py`) and the type mapping of the views
(`replay_sql.duckdb_types`).

Creating a DuckDB database costs about 20 ms of CPU (the first one in a process several times
that): a log handle's first query used to create two, one for its session and one to ask
DuckDB how it maps Arrow types. Settings (`SET`) are the database's: its Parquet footer
cache is on (segments are immutable files, see `connection.py`).
"""

from __future__ import annotations

import os
import threading

import duckdb

__all__ = ["FOOTERS", "close_shared_database", "shared_database"]

#: Turns DuckDB's Parquet footer cache on or off (`.format("true")`).
FOOTERS = "SET parquet_metadata_cache = {}"
_SHARED: list[tuple[int, duckdb.DuckDBPyConnection]] = []
_LOCK = threading.Lock()


def shared_database() -> duckdb.DuckDBPyConnection:
    """The process's database (its first connection; use a `cursor()` of it)."""
    with _LOCK:
        if not _SHARED or _SHARED[0][0] != os.getpid():
            con = duckdb.connect()
            con.execute(FOOTERS.format("true"))
            _SHARED[:] = [(os.getpid(), con)]
        return _SHARED[0][1]


def close_shared_database() -> None:
    """Close the process's database (at exit, after its sessions)."""
    with _LOCK:
        for _, con in _SHARED:
            con.close()
        _SHARED.clear()
