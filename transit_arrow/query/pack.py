"""View packs: a log's stream views, bound once, kept in a DuckDB file in its local dir (issue 16).

DuckDB binds a view when it creates it, and binding a stream's `read_parquet` with its explicit
schema costs most of a millisecond, so a connection with a view per stream of a 1,000-stream log
took over a second to make, every time. A pack is a DuckDB database file holding those views
(and the `transit_*` history tables of the same state), created once; a new connection of
ours ATTACHes it read-only (DuckDB loads the views without binding them again) and puts it on
its search path, so `SELECT * FROM "stream"` finds them. Temporary views (streams with
unsealed records, broken streams, `transit_records`, `mv_*`) come first in DuckDB's name
lookup, so they shadow nothing the pack should show: the pack holds only what they do not.

A pack's file name is the BLAKE3 of what it holds (each view's name and the digest of its
SELECT, and the state of the history tables): a log state that was packed once is found again
by any later handle of any process, and a pack never shows another state than the one asked
for. Views name local segment files, which the caller verifies before it attaches a pack, as
for temporary views. The file is written to a temporary name and renamed, so a reader never
sees a half-written pack; one that DuckDB cannot attach (damaged) is removed and built again,
and if that fails too the caller creates temporary views as without packs. Only the newest
`KEEP` packs of a log are kept. A pack lists its views and their fingerprints (`KEYS`), so
that a state with no pack of its own can use the newest one when few of its views differ
(`connection._reuse`: those get temporary views).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import blake3
import duckdb
import pyarrow as pa

from .replay_sql import quote_ident, quote_str

__all__ = [
    "HISTORY_PREFIX",
    "KEEP",
    "KEYS",
    "PACK",
    "attach_pack",
    "detach_pack",
    "newest_key",
    "pack_key",
]

#: The name a pack is attached under.
PACK = "__transit_views"
#: The pack's copy of history table `t` is `HISTORY_PREFIX + t`.
HISTORY_PREFIX = "__transit_history_"
#: The table of a pack listing its views and their fingerprints (`name`, `key`).
KEYS = "__transit_pack_views"
#: Packs kept per log (the newest ones).
KEEP = 4
_VERSION = b"transit-arrow view pack 1\0"
_FOLDER = "duckdb"
_SUFFIX = ".duckdb"


def _code() -> bytes:
    """A digest of the code that writes views: a pack made by other code is never used."""
    if not _CODE:
        h = blake3.blake3(_VERSION)
        for module in ("replay_sql.py", "connection.py", "tables.py", "snapshot.py", "pack.py"):
            with contextlib.suppress(OSError):
                h.update((Path(__file__).parent / module).read_bytes())
        _CODE.append(h.digest())
    return _CODE[0]


_CODE: list[bytes] = []


def pack_key(views: Mapping[str, str], tables: str) -> str:
    """The name of the pack holding `views` (view name -> the fingerprint of its SELECT) and
    tables of state `tables`."""
    h = blake3.blake3(_code())
    for name in sorted(views):
        h.update(f"{name}\0{views[name]}\0".encode())
    h.update(tables.encode())
    return h.hexdigest()[:32]


def attached(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `con` has a pack attached."""
    query = f"SELECT 1 FROM duckdb_databases() WHERE database_name = {quote_str(PACK)}"
    return bool(con.sql(query).fetchall())


def detach_pack(con: duckdb.DuckDBPyConnection) -> None:
    """Detach `con`'s pack, if it has one (its names then no longer resolve)."""
    if attached(con):
        con.execute(f"DETACH {PACK}")
        con.execute("RESET search_path")


def attach_pack(
    con: duckdb.DuckDBPyConnection,
    local_dir: Path,
    key: str,
    contents: Callable[[], tuple[Mapping[str, str], Mapping[str, pa.Table]]] | None,
) -> bool:
    """Attach pack `key` to `con`, building it first from `contents()` (its views, name ->
    SELECT, and its tables, name -> Arrow table) when it does not exist yet (unless
    `contents` is None); False when it cannot be had (then nothing is attached)."""
    folder = local_dir / _FOLDER
    path = folder / f"{key}{_SUFFIX}"
    for attempt in range(2):
        if not path.exists():
            if contents is None:
                return False
            try:
                _build(folder, path, *contents())
            except (OSError, duckdb.Error):
                return False
        try:
            con.execute(f"ATTACH {quote_str(str(path))} AS {PACK} (READ_ONLY)")
        except duckdb.Error:
            with contextlib.suppress(OSError):  # damaged: build it again, once
                path.unlink()
            if attempt:
                return False
            continue
        con.execute(f"SET search_path = {quote_str(f'memory.main,{PACK}.main')}")
        return True
    return False


def newest_key(local_dir: Path) -> str | None:
    """The key of the log's newest pack, if it has one."""
    packs = _packs(local_dir / _FOLDER)
    return packs[-1].stem if packs else None


def _packs(folder: Path) -> list[Path]:
    """The packs in `folder`, oldest first."""
    try:
        return sorted(
            (p for p in folder.iterdir() if p.suffix == _SUFFIX and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime_ns,
        )
    except OSError:
        return []


def _build(
    folder: Path, path: Path, views: Mapping[str, str], tables: Mapping[str, pa.Table]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    for leftover in (tmp, Path(f"{tmp}.wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    builder = duckdb.connect(str(tmp))
    try:
        for name, table in tables.items():  # first: views may read them
            builder.register("scratch", table)
            builder.execute(f"CREATE TABLE {quote_ident(name)} AS SELECT * FROM scratch")
            builder.unregister("scratch")
        statements = [f"CREATE VIEW {quote_ident(n)} AS\n{s}" for n, s in views.items()]
        builder.execute(";\n".join(["BEGIN TRANSACTION", *statements, "COMMIT"]))
        builder.execute("CHECKPOINT")
    except BaseException:
        builder.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    builder.close()
    os.replace(tmp, path)
    _prune(folder)


def _prune(folder: Path) -> None:
    """Remove all but the newest `KEEP` packs (a process that has one attached keeps it)."""
    for old in _packs(folder)[:-KEEP]:
        with contextlib.suppress(OSError):
            old.unlink()
