"""DuckDB over a log: stream views, metadata tables and cross-branch SQL (DESIGN §8).

`connect(log)` fills a DuckDB connection with temporary objects (never persisted into a
database file the caller attached; on a new connection, the stream views come from a view
pack of the log's local dir instead, see `pack.py`):

- one view per stream, under the stream's own name, reading its replay (see `replay_sql`);
- `transit_records`: every stream's replay with a `_branch` column;
- tables `transit_streams`, `transit_lineage`, `transit_commits`, `transit_segments`,
  `transit_checkpoints` and `transit_cursors`.

The temporary table `__transit_catalog` records what each view was built from, so calling
`connect(log, con)` again brings an existing connection up to date by rebuilding only the views
of streams that changed (new commits or unsealed records), dropping views of streams that went
away and unregistering the Arrow tables (unsealed heads) no view uses any more. `sql(log, q)`
does that on a connection kept per log before every query, so its answers always reflect the
latest commits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import re
import threading
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import blake3
import duckdb
import pyarrow as pa

from ..cursors import cursors_table
from ..engine.catalog import Catalog, bulk
from ..engine.read import ReplayPlan, plan_at
from ..engine.replay import own_start
from ..errors import IntegrityError, InvalidInputError, StorageError, TransitError
from ..integrity import Checkpoint
from ..manifest import SegmentRef
from ..materialize import materialized_tables
from ..names import validate_stream_name
from .database import FOOTERS, close_shared_database, shared_database
from .errors import QueryError
from .filesystem import ensure_registered, segment_url
from .pack import HISTORY_PREFIX, KEYS, PACK, attach_pack, detach_pack, newest_key, pack_key
from .replay_sql import Source, quote_ident, quote_str, records_select, replay_select, span_rows
from .snapshot import At, StreamPlan, plan_for_sql, records_schema, take_snapshot
from .tables import HISTORY_TABLES, checkpoints_table, history_tables

__all__ = [
    "RECORDS_VIEW",
    "connect",
    "create_view",
    "past_plan",
    "run_sql",
    "sql",
    "to_duckdb",
]

RECORDS_VIEW = "transit_records"
_TABLES = (
    "transit_streams",
    "transit_lineage",
    "transit_commits",
    "transit_segments",
    "transit_checkpoints",
    "transit_cursors",
)
_RESERVED = frozenset({RECORDS_VIEW, *_TABLES})
_PREFIX = "__transit_"  # starts the names of our private objects
_ARROW = f"{_PREFIX}arrow_"  # registered Arrow tables
_RANK = "#"  # `<stream>#<n>`: a stream whose name DuckDB cannot tell from another's
_CATALOG = f"{_PREFIX}catalog"
_LOCK = threading.RLock()
_SESSIONS: weakref.WeakKeyDictionary[Catalog, duckdb.DuckDBPyConnection] = (
    weakref.WeakKeyDictionary()
)
_QUOTED = re.compile(r'"((?:[^"]|"")+)"')
_GENERATION = re.compile(r"g(\d+)")
_MISSING = re.compile(r"Table with name (.+?) does not exist")
_BARE = re.compile(r"[^\W\d][\w$#]*")
_QUOTES = re.compile(r'"((?:[^"]|"")*)"|\'((?:[^\']|\'\')*)\'')
_CATALOG_WORDS = frozenset(
    {"show", "pragma", "information_schema", "pg_catalog", "sqlite_master", "sqlite_schema"}
)
# Statements after which a log's own connection may hold other objects than `sql` built.
_DDL = re.compile(r"\b(drop|create|alter|replace|rename|attach|detach|use)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Built:
    """A view's definition, the Arrow tables it reads, and its fingerprint."""

    kind: str  # "stream", "as_of" (connect at=), "at" (create_view) or "records"
    # The SELECT, or what makes it (only when the view must be created).
    make: str | Callable[[], str]
    # Registered name -> the Arrow table, made only when it is not registered yet.
    tables: tuple[tuple[str, Callable[[], pa.Table]], ...] = ()
    # What the SELECT is made from, when that is known without making it (the replay
    # states of the plans it shows, and where it reads segments): the view's fingerprint.
    state: str | None = None

    @functools.cached_property
    def select(self) -> str:
        """The view's SELECT."""
        return self.make if isinstance(self.make, str) else self.make()

    @property
    def entry(self) -> dict[str, Any]:
        """What `__transit_catalog` records of the view."""
        text = f"{self.kind}\0{self.state}" if self.state is not None else self.select
        key = blake3.blake3(text.encode()).hexdigest()[:32]
        return {"kind": self.kind, "key": key, "uses": [name for name, _ in self.tables]}


_CATALOG_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("key", pa.string()),
        ("uses", pa.list_(pa.string())),
    ]
)


def _temp_views(con: duckdb.DuckDBPyConnection) -> set[str]:
    query = "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
    return {n for (n,) in con.sql(query).fetchall()}


@dataclass
class _Views:
    """The views of ours a connection holds (with what they were built from) and the names of
    the Arrow tables registered on it, kept in the temporary table `__transit_catalog`."""

    views: dict[str, dict[str, Any]]
    registered: set[str]
    changed: bool = False

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> _Views:
        names = _temp_views(con)
        views: dict[str, dict[str, Any]] = {}
        tables = con.sql(
            f"SELECT 1 FROM duckdb_tables() WHERE temporary AND table_name = '{_CATALOG}'"
        ).fetchall()
        if tables:
            for row in con.sql(f"SELECT * FROM {_CATALOG}").to_arrow_table().to_pylist():
                if row["name"] in names:  # a view dropped by hand is built again
                    views[row.pop("name")] = row
        return cls(views, {n for n in names if n.startswith(_ARROW) and _RANK not in n})

    def register(self, con: duckdb.DuckDBPyConnection, built: _Built) -> None:
        for name, make in built.tables:
            if name not in self.registered:
                con.register(name, make())
                self.registered.add(name)

    def define(self, con: duckdb.DuckDBPyConnection, name: str, built: _Built) -> list[str]:
        """The SQL creating or replacing view `name`, or none when it is up to date."""
        self.register(con, built)
        if self.views.get(name) == built.entry:
            return []
        self.views[name] = built.entry
        self.changed = True
        return [f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS\n{built.select}"]

    def drop(self, name: str) -> list[str]:
        del self.views[name]
        self.changed = True
        return [f"DROP VIEW IF EXISTS temp.main.{quote_ident(name)}"]

    def save(self, con: duckdb.DuckDBPyConnection) -> None:
        """Unregister the Arrow tables no view uses, and store the catalog."""
        used = set().union(*(v["uses"] for v in self.views.values()))
        for name in self.registered - used:
            con.unregister(name)
        self.registered &= used
        if self.changed and con not in _STATE:  # a session's state is kept in Python
            rows = [{"name": n, **v} for n, v in self.views.items()]
            _replace_tables(con, {_CATALOG: pa.Table.from_pylist(rows, schema=_CATALOG_SCHEMA)})
            self.changed = False


#: Connections this module made (`connect()` without one, and each log's own).
_OURS: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_STATE: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, _Views] = weakref.WeakKeyDictionary()
#: Connections with a view pack attached (`pack.py`).
_PACKED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def _views_of(con: duckdb.DuckDBPyConnection) -> _Views:
    """What views of ours `con` holds: kept in Python for a log's own connection (nothing else
    changes it but `sql`, which forgets it after DDL), read from DuckDB for any other."""
    return _STATE.get(con) or _Views.read(con)


def _reconcile(con: duckdb.DuckDBPyConnection) -> None:
    """Forget the views of ours a log's own connection no longer holds."""
    state = _STATE.get(con)
    if state is not None:
        present = _temp_views(con)
        state.views = {n: e for n, e in state.views.items() if n in present}
        state.registered &= present


def _referenced(query: str) -> set[str] | None:
    """Every name `query` may read, lowercased: its identifiers, quoted identifiers and string
    literals, and every word and every run between two quotes anywhere (a quote in a comment
    cannot hide a name): more than it reads, never less, views of views aside. None when it
    lists the catalog (`SHOW TABLES`, `duckdb_views()`, `information_schema`, ...): then it
    must see every view."""
    words = {w.lower() for w in _BARE.findall(query)}
    for quoted, text in _QUOTES.findall(query):
        words.add((quoted.replace('""', '"') or text.replace("''", "'")).lower())
    for quote in "\"'":
        words.update(part.lower() for part in query.split(quote)[1::2])
    if words & _CATALOG_WORDS or any(w.startswith("duckdb_") for w in words):
        return None
    return words


@dataclass(frozen=True)
class _Source:
    """How views name a segment (`name`): its local file, else a URL read through the log's
    cache; `where` tells the two apart (the store's folder, or the log's URI)."""

    name: Source
    where: str


def _source(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> _Source:
    root = catalog.store.local_path("")
    if root is not None:

        def local(seg: SegmentRef) -> str:
            path = catalog.store.local_path(seg.path)
            assert path is not None
            return path

        return _Source(local, f"file\0{root}")
    ensure_registered(con)
    return _Source(lambda seg: segment_url(catalog, seg), f"url\0{catalog.uri}")


def _build(plan: StreamPlan, kind: str, source: _Source) -> _Built:
    # A replay's state (its commits' roots, its unsealed records) fixes its SELECT.
    state = f"{plan.state_key()}\0{source.where}"
    if not plan.heads:
        return _Built(
            kind,
            lambda: replay_select(plan.schema, plan.spans, None, source.name),
            state=state,
        )
    # The name changes with the head's records, so a registered head is never stale.
    head = f"{_ARROW}head_{plan.state_key()}"
    return _Built(
        kind,
        lambda: replay_select(plan.schema, plan.spans, head, source.name),
        ((head, plan.head_table),),
        state,
    )


def _build_records(plans: list[StreamPlan], heads: list[_Built], source: _Source) -> _Built:
    key = blake3.blake3(b"".join(p.state_key().encode() for p in plans)).hexdigest()[:24]
    spans_name = f"{_ARROW}spans_{key}"

    @functools.cache
    def spans() -> tuple[list[str], pa.Table]:
        branches = [(p.name, own_start(p.manifest), p.spans) for p in plans]
        return span_rows(branches, source.name)

    def select() -> str:
        head_tables = [
            (p.name, p.schema, b.tables[0][0])
            for p, b in zip(plans, heads, strict=True)
            if b.tables
        ]
        return records_select(records_schema(plans), spans()[0], spans_name, head_tables)

    tables = ((spans_name, lambda: spans()[1]), *(t for b in heads for t in b.tables))
    return _Built("records", select, tables, f"{key}\0{source.where}")


@contextlib.contextmanager
def _duckdb_errors() -> Iterator[None]:
    """Raise DuckDB's errors as `QueryError`s, with DuckDB's message unchanged."""
    try:
        yield
    except duckdb.Error as e:
        raise QueryError(str(e)) from e


def _run(con: duckdb.DuckDBPyConnection, statements: list[str], what: str) -> None:
    if not statements:
        return
    # Many statements run in one transaction (DuckDB then creates views about twice as fast),
    # unless the caller has one open on `con`: then they run in that one.
    began = False
    if len(statements) > 1:
        try:
            con.execute("BEGIN TRANSACTION")
            began = True
        except duckdb.TransactionException:
            pass
    try:
        con.execute(";\n".join(statements))
        if began:
            con.execute("COMMIT")
    except duckdb.Error as e:
        if began:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
        raise QueryError(f"building {what} failed: {e}") from e


def _view_names(streams: list[str]) -> list[str]:
    """Each stream's view name, for `streams` in name order.

    A stream's view is its own name, unless DuckDB cannot tell that name apart (identifiers
    are case-insensitive) from a `transit_*` object, from a name starting with `__transit_`, or
    from a stream earlier in name order: the n-th stream of one case-insensitive spelling is
    then `<name>#<n>` (`Main`, `main` -> `Main`, `main#2`; a stream called `transit_streams`
    -> `transit_streams#2`). `#` never occurs in a stream name, so these never collide.
    """
    seen: dict[str, int] = dict.fromkeys(_RESERVED, 1)
    names = []
    for stream in streams:
        key = stream.lower()
        rank = seen.get(key, 1 if key.startswith(_PREFIX) else 0) + 1
        seen[key] = rank
        names.append(stream if rank == 1 else f"{stream}{_RANK}{rank}")
    return names


def _history_key(plans: list[StreamPlan]) -> str:
    """The state of the history tables of `plans`."""
    return blake3.blake3("\0".join(p.state_key() for p in plans).encode()).hexdigest()[:32]


def _replace_metadata(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    plans: list[StreamPlan],
    only: Collection[str] = _TABLES,
    *,
    packed: bool = False,
) -> None:
    """Replace the `transit_*` tables named in `only`; those derived from the plans only when
    they changed (the key of the plans each was built from is its comment), copied from the
    attached pack when `packed`."""
    history = [t for t in HISTORY_TABLES if t in only]
    if history:
        key = _history_key(plans)
        listed = ", ".join(quote_str(t) for t in history)
        built = dict(
            con.sql(
                "SELECT table_name, comment FROM duckdb_tables() "
                f"WHERE temporary AND table_name IN ({listed})"
            ).fetchall()
        )
        stale = [t for t in history if built.get(t) != key]
        if stale:
            if packed:  # the attached pack holds them for these plans
                copies = [
                    f"CREATE OR REPLACE TEMP TABLE {t} AS "
                    f"SELECT * FROM {PACK}.main.{HISTORY_PREFIX}{t}"
                    for t in stale
                ]
                _run(con, copies, "tables")
            else:
                _replace_tables(con, history_tables(plans, stale))
            comments = [f"COMMENT ON TABLE temp.main.{t} IS {quote_str(key)}" for t in stale]
            _run(con, comments, "tables")
    tables = {}
    if "transit_checkpoints" in only:
        tables["transit_checkpoints"] = checkpoints_table(catalog, plans)
    if "transit_cursors" in only:
        tables["transit_cursors"] = cursors_table(catalog)
    _replace_tables(con, tables)


def _replace_tables(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
    scratch = f"{_PREFIX}scratch"
    for name, table in tables.items():
        con.register(scratch, table)
        try:
            _run(
                con,
                [f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {scratch}"],
                f"table {name}",
            )
        finally:
            con.unregister(scratch)


def _materialized(catalog: Catalog) -> dict[str, _Built]:
    """`mv_<name>` views: each materialization's state on every refreshed branch."""
    out = {}
    for name, (key, make) in materialized_tables(catalog).items():
        table = f"{_ARROW}mv_{key}"
        out[f"mv_{name}"] = _Built("mv", f"SELECT * FROM {table}", ((table, make),))
    return out


def _failing(what: str, error: TransitError) -> _Built:
    """A view that fails every query reading it, with a message naming what and why."""
    kind = "StorageError" if isinstance(error, StorageError) else "IntegrityError"
    message = f"{kind}: {what} cannot be read, so the query cannot run: {error}"
    # In a filter, so that no query reading the view (not even count(*)) can skip it.
    return _Built("broken", f"SELECT NULL AS error WHERE error({quote_str(message)}) IS NULL")


def _sync(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    at: At,
    *,
    failing_views: bool = True,
    words: set[str] | None = None,
    pack: bool = False,
) -> dict[str, tuple[str, TransitError]]:
    """Bring `con`'s views up to date; return, by view name, what cannot be read and why.

    What cannot be read gets a view that raises DuckDB's error naming it and the cause when a
    query reads it (`failing_views`), or no view at all (for `sql`, which then raises the
    `IntegrityError` / `StorageError` itself).

    With `words` (the lowercased names a query may read, see `_referenced`), only what those
    name is built or refreshed: the views of the streams they name, `transit_records`, the
    `transit_*` tables and `mv_*` views they name, and every stream view built before (a view
    of the caller's may read it). Otherwise everything is.

    With `pack` (a new connection of ours, every stream now), the views of streams without
    unsealed records come from a view pack (`pack.py`) instead of being created; a connection
    that has one gets temporary views for everything when it is brought up to date again.
    """
    if con in _PACKED:
        _PACKED.discard(con)
        detach_pack(con)
    views = _views_of(con)
    tables: Collection[str] = _TABLES
    records = mv = True
    names: list[str] | None = None
    if words is not None and at is None:
        tables = [t for t in _TABLES if t in words]
        records = RECORDS_VIEW in words
        mv = any(w.startswith("mv_") for w in words)
        if not (records or tables):
            # Names compare case-insensitively in SQL: take whole groups of such names, so
            # that `_view_names` ranks them as it would among every stream.
            keys = {w.partition(_RANK)[0] for w in words} | {
                v.partition(_RANK)[0].lower()
                for v, e in views.views.items()
                if e["kind"] in ("stream", "broken")
            }
            names = catalog.names(lambda name: name.lower() in keys)
    plans, broken_streams = take_snapshot(catalog, at, names)
    source = _source(con, catalog)
    kind = "stream" if at is None else "as_of"
    built = [_build(plan, kind, source) for plan in plans]
    named = dict(zip([p.name for p in plans], built, strict=True))
    streams = sorted([*named, *broken_streams])  # names stay put when a stream breaks
    statements: list[str] = []
    wanted = {RECORDS_VIEW} if records else set()
    broken: dict[str, tuple[str, TransitError]] = {}
    packable: dict[str, _Built] = {}
    for view, stream in zip(_view_names(streams), streams, strict=True):
        if stream in broken_streams:
            what = f"stream {stream!r}"
            broken[view] = (what, broken_streams[stream])
            if not failing_views:
                continue
            b = _failing(what, broken_streams[stream])
        else:
            b = named[stream]
        wanted.add(view)
        if pack and b.kind == "stream" and not b.tables:
            packable[view] = b
        else:
            statements += views.define(con, view, b)
    # With unsealed records somewhere, `transit_records` and the history tables change with
    # every append: the pack holds neither, so that appends do not make new packs.
    settled = not any(x.tables for x in built)
    if records:
        b = _build_records(plans, built, source)
        if packable and settled:
            packable[RECORDS_VIEW] = b
        else:
            statements += views.define(con, RECORDS_VIEW, b)
    served, packed = _attach(con, catalog, plans if settled else None, packable)
    for view, b in packable.items():
        if view in served:
            views.views[view] = b.entry  # recorded, so a refresh knows what it showed
            views.changed = True
        else:
            statements += views.define(con, view, b)
    if at is None and mv:
        for view, b in _materialized(catalog).items():
            try:
                statements += views.define(con, view, b)
            except (IntegrityError, StorageError) as e:  # a damaged state fails only its view
                what = f"materialization view {view!r}"
                broken[view] = (what, e)
                if not failing_views:
                    continue
                statements += views.define(con, view, _failing(what, e))
            wanted.add(view)
    # Other views of ours show streams this snapshot does not (or another `at`); views of
    # past generations (`create_view`) never change, so they stay. A partial refresh looked
    # at every stream that has a view, but keeps the kinds of view it did not build.
    examined = {"stream", "broken"} | ({"mv"} if mv else set())
    for name, entry in list(views.views.items()):
        if name in wanted or entry["kind"] == "at":
            continue
        if words is None or at is not None or entry["kind"] in examined:
            statements += views.drop(name)
    with _creating(con):
        _run(con, statements, f"the views of {catalog.uri}")
    views.save(con)
    _replace_metadata(con, catalog, plans, tables, packed=packed)
    return broken


def _attach(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    plans: list[StreamPlan] | None,
    packable: dict[str, _Built],
) -> tuple[set[str], bool]:
    """Attach a view pack to `con`: the views it serves of `packable`, and whether it holds
    the history tables of `plans` (None: it must not).

    The pack of exactly this state when there is one; else the log's newest pack, when it
    holds every view it shows for `packable` and differs from it in few (the others get
    temporary views, which come first in DuckDB's lookup); else a new pack of this state.
    """
    if not packable:
        return set(), False
    keys = {v: b.entry["key"] for v, b in packable.items()}
    key = pack_key(keys, _history_key(plans) if plans is not None else "")
    if attach_pack(con, catalog.local_dir, key, None):
        _PACKED.add(con)
        return set(packable), plans is not None
    served = _reuse(con, catalog, keys)
    if served is not None:
        return served, False

    def contents() -> tuple[dict[str, str], dict[str, pa.Table]]:
        made = history_tables(plans) if plans is not None else {}
        tables = {f"{HISTORY_PREFIX}{t}": x for t, x in made.items()}
        for b in packable.values():
            tables.update((name, make()) for name, make in b.tables)
        tables[KEYS] = pa.table({"name": list(keys), "key": list(keys.values())})
        return {v: b.select for v, b in packable.items()}, tables

    if not attach_pack(con, catalog.local_dir, key, contents):
        return set(), False
    _PACKED.add(con)
    return set(packable), plans is not None


def _reuse(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, keys: dict[str, str]
) -> set[str] | None:
    """Attach the log's newest pack when it shows no view `keys` does not, and at most one
    in eight differ; the views it serves as they are (None: nothing attached)."""
    newest = newest_key(catalog.local_dir)
    if newest is None or not attach_pack(con, catalog.local_dir, newest, None):
        return None
    try:
        held = dict(con.sql(f"SELECT name, key FROM {PACK}.main.{KEYS}").fetchall())
    except duckdb.Error:
        held = {}
    served = {v for v, k in keys.items() if held.get(v) == k}
    if not held or set(held) - set(keys) or (len(keys) - len(served)) * 8 > len(keys):
        detach_pack(con)
        return None
    _PACKED.add(con)
    return served


def connect(
    catalog: Catalog, con: duckdb.DuckDBPyConnection | None = None, *, at: At = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where every stream of the log is a view (this is `Log.duckdb`).

    A stream whose files cannot be read gets a view that fails every query reading it with an
    error naming the stream; every other view works.

    Args:
        catalog: the log to expose.
        con: a connection to fill or bring up to date; a new in-memory one when None. Calling
            `connect(catalog, con)` again after the log changed rebuilds only what changed.
        at: show every stream as of this time (a datetime, naive meaning UTC, or an ISO 8601
            string): its latest generation committed then, without unsealed records; streams
            created later are absent and the metadata tables describe that moment.

    Returns:
        The connection, with one view per stream (named as the stream; quote it in SQL), the
        view `transit_records` and the `transit_*` metadata tables, all temporary; on a new
        connection (no `con`, no `at`) of a local log, the views of streams without unsealed
        records come from the log's view pack (`pack.py`), attached read-only.

    Raises:
        QueryError: DuckDB could not build a view.
        InvalidInputError: `at` is not a time.
    """
    with _LOCK, _duckdb_errors(), bulk():
        pack = con is None and at is None and catalog.store.local_path("") is not None
        if con is None:
            con = _new_connection()
        _sync(con, catalog, at, pack=pack)
    return con


def _new_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # Segments are immutable files: their footers can be cached for good.
    con.execute(FOOTERS.format("true"))
    _OURS.add(con)
    return con


@contextlib.contextmanager
def _creating(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Create views with DuckDB's footer cache off on a connection of ours: with it on,
    binding each view's `read_parquet` looks its files up (creating a thousand views takes
    about 1.5x as long); queries run with it on again."""
    if con not in _OURS:
        yield
        return
    con.execute(FOOTERS.format("false"))
    try:
        yield
    finally:
        con.execute(FOOTERS.format("true"))


_SESSION_IDS = itertools.count()


def _session(catalog: Catalog) -> duckdb.DuckDBPyConnection:
    """The connection `sql` and `to_duckdb` use for a log (one per catalog), closed with it.

    Sessions are connections (cursors) to one in-memory DuckDB database per process, each
    with a private in-memory catalog of its own as its default (tables a query creates go
    there; views of ours are temporary, which are the connection's own): a new database per
    log handle cost more than opening a fresh handle and querying 500 small segments' footers
    together (its creation and closing, about 25 ms). Settings (`SET`) are the database's."""
    with _LOCK:
        con = _SESSIONS.get(catalog)
        if con is None:
            con = shared_database().cursor()
            private = f"__transit_session_{next(_SESSION_IDS)}"
            con.execute(f"ATTACH ':memory:' AS {private}; USE {private}")
            _OURS.add(con)
            _SESSIONS[catalog] = con
            _STATE[con] = _Views({}, set())
            catalog.on_close(functools.partial(_close_session, catalog, private))
        return con


def _close_session(catalog: Catalog, private: str) -> None:
    with _LOCK:
        con = _SESSIONS.pop(catalog, None)
    if con is not None:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"USE memory; DETACH {private}")
        con.close()


@atexit.register
def _close_sessions() -> None:
    # A connection still holding a Python filesystem when the interpreter exits makes
    # DuckDB's bindings report leaked objects; closing it first avoids that.
    with _LOCK:
        for con in list(_SESSIONS.values()):
            con.close()
        _SESSIONS.clear()
    close_shared_database()


def _at_view(con: duckdb.DuckDBPyConnection, catalog: Catalog, plan: ReplayPlan, name: str) -> str:
    plan.check_files()  # the view reads these files directly: verify them first
    with _LOCK, _duckdb_errors():
        built = _build(plan_for_sql(plan), "at", _source(con, catalog))
        views = _views_of(con)
        _run(con, views.define(con, name, built), f"view {name!r}")
        views.save(con)
    return name


def past_plan(
    catalog: Catalog,
    stream: str,
    *,
    generation: int | None = None,
    as_of: datetime | str | None = None,
    checkpoint: Checkpoint | None = None,
) -> ReplayPlan:
    """The plan of `stream` at a generation, a time or a checkpoint (exactly one)."""
    if sum(x is not None for x in (generation, as_of, checkpoint)) != 1:
        raise InvalidInputError("pass exactly one of generation=, as_of= or checkpoint=")
    if not catalog.exists(validate_stream_name(stream)):
        raise catalog.not_found(stream)
    if as_of is not None:
        manifest = catalog.manifest_as_of(stream, as_of)
    elif checkpoint is not None:
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidInputError(f"not a Checkpoint: {checkpoint!r}")
        if checkpoint.stream != stream:
            raise InvalidInputError(
                f"checkpoint is of stream {checkpoint.stream!r}, not {stream!r}"
            )
        manifest = catalog.manifest_at(stream, checkpoint.generation)
        if manifest.root != checkpoint.root:
            raise IntegrityError(
                f"stream {stream!r} generation {checkpoint.generation} has root "
                f"{manifest.root}, but the checkpoint says {checkpoint.root}"
            )
    else:
        if not isinstance(generation, int) or isinstance(generation, bool):
            raise InvalidInputError(f"generation must be an int, not {generation!r}")
        manifest = catalog.manifest_at(stream, generation)
    return plan_at(catalog, stream, manifest)


def create_view(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    stream: str,
    *,
    generation: int | None = None,
    as_of: datetime | str | None = None,
    checkpoint: Checkpoint | None = None,
    name: str | None = None,
) -> str:
    """Create a view of `stream` as of a generation, a time or a checkpoint; return its name.

    The view is named `"<stream>@g<generation>"` unless `name` is given, so after
    `create_view(con, catalog, "main", generation=12)` SQL can read `SELECT * FROM "main@g12"`.
    Such views never change and survive `connect(catalog, con)` refreshes.

    Raises:
        StreamNotFoundError: no such stream (the message lists near names).
        NotFoundError: the stream has no such generation, or did not exist at `as_of`.
        IntegrityError: the stream's commit at the checkpoint's generation has another root.
        InvalidInputError: not exactly one of `generation`, `as_of`, `checkpoint`.
    """
    plan = past_plan(catalog, stream, generation=generation, as_of=as_of, checkpoint=checkpoint)
    return _at_view(con, catalog, plan, name or f"{stream}@g{plan.manifest.generation}")


def _time_travel_references(con: duckdb.DuckDBPyConnection, catalog: Catalog, query: str) -> None:
    """Create the views `"stream@g12"` / `"stream@<ISO time>"` that `query` names."""
    for match in _QUOTED.finditer(query):
        text = match.group(1).replace('""', '"')
        stream, at, point = text.rpartition("@")
        if not at or not point:
            continue
        try:
            exists = catalog.exists(validate_stream_name(stream))
        except InvalidInputError:
            continue  # not a stream name: leave the identifier to DuckDB
        if not exists:
            continue
        generation = _GENERATION.fullmatch(point)
        if generation is not None:
            create_view(con, catalog, stream, generation=int(generation.group(1)), name=text)
            continue
        try:
            when = datetime.fromisoformat(point.replace("Z", "+00:00"))
        except ValueError:
            continue
        create_view(con, catalog, stream, as_of=when, name=text)


def sql(catalog: Catalog, query: str, /, **params: Any) -> duckdb.DuckDBPyRelation:
    """Run `query` on the log's own connection, brought up to date first (this is `Log.sql`).

    Quoted names `"stream@g12"` (a generation) and `"stream@2024-05-01T12:00:00Z"` (the
    latest generation committed at that time) in the query read a stream's past.

    Args:
        catalog: the log to query.
        query: DuckDB SQL over the stream views and `transit_*` tables.
        **params: values of `$name` parameters in `query`.

    Returns:
        A lazy DuckDB relation (`.to_arrow_table()`, `.pl()`, `.fetchall()`, ...).

    Raises:
        QueryError: DuckDB rejected the query (its message, unchanged).
        NotFoundError: a `"stream@g…"` name refers to a generation that does not exist.
    """
    con = _session(catalog)
    words = _referenced(query)
    with _LOCK, _duckdb_errors():
        with bulk():
            broken = _sync(con, catalog, None, failing_views=False, words=words)
        _time_travel_references(con, catalog, query)
        try:
            return con.sql(query, params=params or None)
        except duckdb.CatalogException as e:
            _raise_broken(e, broken)
            raise
        finally:
            if _DDL.search(query):
                _reconcile(con)  # the query may have dropped views of ours


def _raise_broken(
    error: duckdb.CatalogException, broken: dict[str, tuple[str, TransitError]]
) -> None:
    """If `error` is about the missing view of a stream that cannot be read, raise why."""
    match = _MISSING.search(str(error))
    if match is None:
        return
    missing = match.group(1).lower()
    for view, (what, cause) in broken.items():
        if view.lower() == missing:
            kind = StorageError if isinstance(cause, StorageError) else IntegrityError
            raise kind(f"{what} cannot be read, so the query cannot run: {cause}") from cause


def run_sql(
    con: duckdb.DuckDBPyConnection, query: str, /, **params: Any
) -> duckdb.DuckDBPyRelation | None:
    """Run `query` on `con`, raising DuckDB's errors as `QueryError`."""
    with _duckdb_errors():
        return con.sql(query, params=params or None)


def to_duckdb(
    plan: ReplayPlan, con: duckdb.DuckDBPyConnection | None = None, *, past: bool = False
) -> duckdb.DuckDBPyRelation:
    """A DuckDB relation over a stream's replay (this is `Stream.to_duckdb` /
    `StreamView.to_duckdb`).

    A live stream (`past=False`) reads through its view on `con` (the log's own connection
    by default), refreshed now; a past generation reads through a `"stream@g<generation>"`
    view.
    """
    catalog = plan.catalog
    con = _session(catalog) if con is None else con
    if past:
        view = _at_view(con, catalog, plan, f"{plan.name}@g{plan.manifest.generation}")
    else:
        names = catalog.names()
        view = _view_names(names)[names.index(plan.name)]
        plan.check_files()  # the view reads these files directly: verify them first
        with _LOCK, _duckdb_errors():
            built = _build(plan_for_sql(plan), "stream", _source(con, catalog))
            views = _views_of(con)
            _run(con, views.define(con, view, built), f"the view of {view!r}")
            views.save(con)
    with _duckdb_errors():
        return con.sql(f"SELECT * FROM {quote_ident(view)}")
