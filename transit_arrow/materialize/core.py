"""Incremental materializations: derived views per branch, checkpointed against roots (DESIGN §9).

Layout under the log root:

```
materializations/<enc(name)>/definition.json
materializations/<enc(name)>/state/<enc(branch)>/<records:020d>-<blake3[:16]>.parquet
materializations/<enc(name)>/checkpoints/<enc(branch)>/<records:020d>-<def_hash[:16]>.json
```

A refresh writes the new state file first and the checkpoint after it (put-if-absent), so a
crash at any point leaves the previous checkpoint valid; an unreferenced state file is an
orphan. A checkpoint records the source position it covers (`stream`, `offset`, `generation`,
`root`); resuming re-reads that commit and requires the same root, and re-hashes the state.
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

from ..commit import CommitLog, canonical, now_rfc3339
from ..engine.catalog import Catalog
from ..engine.read import live_plan, plan_at
from ..engine.replay import Position, chain
from ..errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    TransitError,
)
from ..layout import materialization_folder
from ..names import decode_stream_name, encode_stream_name, validate_stream_name
from .plan import SqlPlan, plan_sql

if TYPE_CHECKING:
    import polars as pl

__all__ = ["Materialization", "Reducer", "RefreshReport"]

Reducer = Callable[[pa.Table | None, pa.Table], Any]
_BATCH = 65536


@dataclass(frozen=True)
class RefreshReport:
    """What one `Materialization.refresh` did.

    Attributes:
        branch: the stream refreshed.
        records_processed: source records read by this refresh.
        from_offset: first replay offset processed (None when nothing was new).
        to_offset: last replay offset now covered (-1 for an empty stream).
        reused_checkpoint: the checkpoint resumed from, as "stream@offset (generation g)",
            or None for a build from scratch.
        incremental: False when the definition is recomputed in full.
        seconds: wall time.
        mode: "filter", "aggregate", "reducer" or "full".
        reason: why the plan is what it is (e.g. why not incremental, why a rebuild).
    """

    branch: str
    records_processed: int
    from_offset: int | None
    to_offset: int
    reused_checkpoint: str | None
    incremental: bool
    seconds: float
    mode: str
    reason: str


@dataclass(frozen=True)
class _Checkpoint:
    materialization: str
    definition_hash: str
    stream: str
    offset: int
    generation: int
    root: str
    state_path: str
    state_blake3: str
    created_at: str
    mode: str

    def describe(self) -> str:
        return f"{self.stream}@{self.offset} (generation {self.generation})"


class Materialization:
    """A derived view of a source stream, refreshed incrementally per branch.

    Get one from `Log.materialize` (define) or `Log.materialization` (open an existing one).
    """

    def __init__(
        self,
        catalog: Catalog,
        definition: dict[str, Any],
        reducer: Reducer | None,
        *,
        log: Any = None,
    ) -> None:
        self.catalog = catalog
        #: The `Log` this materialization was opened from (None when opened from a catalog).
        self.log = log
        self.name: str = definition["name"]
        self.source: str = definition["source"]
        self.definition = definition
        self.definition_hash = blake3.blake3(canonical(definition)).hexdigest()
        self._reducer = reducer
        self._plan: SqlPlan | None = (
            plan_sql(definition["query"]) if definition["kind"] == "sql" else None
        )
        self._folder = materialization_folder(self.name)

    def __repr__(self) -> str:
        return f"<Materialization {self.name!r} of {self.source!r} ({self.mode})>"

    @property
    def mode(self) -> str:
        """ "filter", "aggregate", "full" (SQL) or "reducer"."""
        return self._plan.mode if self._plan is not None else "reducer"

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint_folder(self, branch: str) -> str:
        """The store folder of this view's checkpoints on `branch`."""
        return f"{self._folder}/checkpoints/{encode_stream_name(branch)}"

    def _checkpoints(self, branch: str) -> list[_Checkpoint]:
        folder = self.checkpoint_folder(branch)
        out = []
        for entry in self.catalog.store.list(folder):
            if entry.endswith(".json"):
                data = json.loads(self.catalog.store.get(f"{folder}/{entry}"))
                out.append(_Checkpoint(**data))
        return out

    def _valid(self, cp: _Checkpoint) -> str | None:
        """None if the checkpoint's source commit still has its root, else why not."""
        if cp.definition_hash != self.definition_hash:
            return f"checkpoint {cp.describe()} was made by another definition"
        try:
            manifest = self.catalog.manifest_at(cp.stream, cp.generation)
            prev = (
                self.catalog.manifest_at(cp.stream, cp.generation - 1).root
                if cp.generation
                else None
            )
            commit = CommitLog(self.catalog.store, cp.stream, self.catalog.stream_folder(cp.stream))
            found = commit.read(cp.generation, prev)["root"]
        except (TransitError, OSError) as e:
            return f"checkpoint {cp.describe()} cannot be verified: {e}"
        if found != cp.root or manifest.root != cp.root:
            return (
                f"checkpoint {cp.describe()} no longer verifies: the source commit's root is "
                f"{found}, the checkpoint says {cp.root}"
            )
        return None

    def _best_checkpoint(self, branch: str, through: int) -> tuple[_Checkpoint | None, str]:
        """The furthest valid checkpoint usable for `branch` through replay offset `through`:
        the branch's own, or an ancestor's at or before the fork (DESIGN §9)."""
        manifest = self.catalog.manifest(branch, refresh=True)
        here = Position(branch, through, manifest.generation, manifest.root)
        best: _Checkpoint | None = None
        notes: list[str] = []
        stale_definition = False
        for pos in [here, *chain(self.catalog, here)]:
            for cp in self._checkpoints(pos.stream):
                if cp.offset > pos.offset or (best is not None and cp.offset <= best.offset):
                    continue
                problem = self._valid(cp)
                if problem is None:
                    best = cp
                elif cp.definition_hash != self.definition_hash:
                    stale_definition = True
                elif problem not in notes:
                    notes.append(problem)
        if stale_definition and best is None:
            notes.append("the definition changed since the last checkpoint: rebuilt")
        return best, "; ".join(notes)

    # --- state ----------------------------------------------------------------------------

    def _load_state(self, cp: _Checkpoint) -> pa.Table:
        data = self.catalog.store.get(cp.state_path)
        found = blake3.blake3(data).hexdigest()
        if found != cp.state_blake3:
            raise IntegrityError(
                f"materialization state {self.catalog.uri}/{cp.state_path}: expected BLAKE3 "
                f"{cp.state_blake3}, found {found}"
            )
        return pq.read_table(io.BytesIO(data))

    def _save(self, branch: str, state: pa.Table, offset: int, mode: str) -> _Checkpoint:
        manifest = self.catalog.manifest(branch, refresh=False)
        sink = io.BytesIO()
        pq.write_table(state, sink, compression="zstd")
        data = sink.getvalue()
        digest = blake3.blake3(data).hexdigest()
        enc = encode_stream_name(branch)
        path = f"{self._folder}/state/{enc}/{offset + 1:020d}-{digest[:16]}.parquet"
        self.catalog.put_segment(path, data)
        cp = _Checkpoint(
            materialization=self.name,
            definition_hash=self.definition_hash,
            stream=branch,
            offset=offset,
            generation=manifest.generation,
            root=manifest.root,
            state_path=path,
            state_blake3=digest,
            created_at=now_rfc3339(),
            mode=mode,
        )
        # The state digest is part of the name: a rebuild after an invalid checkpoint at the
        # same offset must not be shadowed by it.
        name = f"{offset + 1:020d}-{self.definition_hash[:16]}-{digest[:16]}.json"
        # If the same position was checkpointed already, that state is equivalent.
        path = f"{self.checkpoint_folder(branch)}/{name}"
        try:
            self.catalog.store.put_if_absent(path, canonical(asdict(cp)))
        except FileExistsError:
            existing = _Checkpoint(**json.loads(self.catalog.store.get(path)))
            if self._valid(existing) is not None:
                self.catalog.store.put(path, canonical(asdict(cp)))  # replace an invalid one
        return cp

    # --- refresh --------------------------------------------------------------------------

    def refresh(self, branch: str | None = None) -> RefreshReport:
        """Bring the view up to date on `branch` (default: the source stream).

        Only records after the furthest usable checkpoint are processed: the branch's own, or
        an ancestor's at or before the fork. Covers committed records (this process's unsealed
        head of the branch is sealed first).
        """
        started = time.perf_counter()
        branch = self.source if branch is None else validate_stream_name(branch)
        if not self.catalog.exists(branch):
            raise self.catalog.not_found(branch)
        manifest = self.catalog.flush(branch)
        through = manifest.next_offset - 1
        cp, notes = self._best_checkpoint(branch, through)
        mode = self.mode
        reason = self._plan.reason if self._plan is not None else "Python reducer over new batches"
        if notes:
            reason = f"{reason}; {notes}"
        full = mode == "full"
        start = 0 if (cp is None or full) else cp.offset + 1
        if cp is not None and not full and cp.stream == branch and cp.offset == through:
            return RefreshReport(
                branch,
                0,
                None,
                through,
                cp.describe(),
                True,
                time.perf_counter() - started,
                mode,
                reason,
            )
        state = self._load_state(cp) if cp is not None and not full else None
        reader = plan_at(self.catalog, branch, manifest).reader(start=start, end=through + 1)
        state, processed = self._apply(state, reader)
        self._save(branch, state, through, mode)
        return RefreshReport(
            branch=branch,
            records_processed=processed,
            from_offset=start if processed else None,
            to_offset=through,
            reused_checkpoint=cp.describe() if cp is not None and not full else None,
            incremental=not full,
            seconds=time.perf_counter() - started,
            mode=mode,
            reason=reason,
        )

    def _apply(self, state: pa.Table | None, reader: pa.RecordBatchReader) -> tuple[pa.Table, int]:
        if self._plan is None:
            if self._reducer is None:
                raise InvalidInputError(
                    f"materialization {self.name!r} uses a Python reducer; open it with "
                    f"log.materialization({self.name!r}, reducer=...) to refresh"
                )
            processed = 0
            for batch in reader:
                processed += batch.num_rows
                out = self._reducer(state, pa.Table.from_batches([batch]))
                state = _as_table(out, f"reducer of {self.name!r}")
            if state is None:
                state = _as_table(self._reducer(None, reader.schema.empty_table()), "reducer")
            return state, processed
        return self._apply_sql(self._plan, state, reader)

    def _apply_sql(
        self, plan: SqlPlan, state: pa.Table | None, reader: pa.RecordBatchReader
    ) -> tuple[pa.Table, int]:
        import duckdb

        records = reader.read_all()
        con = duckdb.connect()
        try:
            con.register("records", records)
            try:
                if plan.mode == "full":
                    return con.sql(plan.query).to_arrow_table(), records.num_rows
                new = con.sql(plan.partial_sql).to_arrow_table()
                if state is not None:
                    order = new.column_names
                    con.register("__state", state)
                    con.register("__new", new)
                    new = con.sql(plan.combine_sql).to_arrow_table()
                    # UNION BY NAME appends columns the state lacked: keep the query's order.
                    rest = [c for c in new.column_names if c not in order]
                    new = new.select([*order, *rest])
                key = self.definition.get("key")
                if key and plan.mode == "filter":
                    # Keep the last row per key, by source offset (an upserting view).
                    con.register("__rows", new)
                    cols = ", ".join(f'"{k}"' for k in key)
                    new = con.sql(
                        f"SELECT * FROM __rows QUALIFY row_number() OVER "
                        f"(PARTITION BY {cols} ORDER BY _offset DESC) = 1 ORDER BY _offset"
                    ).to_arrow_table()
                return new, records.num_rows
            except duckdb.Error as e:
                raise InvalidInputError(f"materialization {self.name!r}: {e}") from e
        finally:
            con.close()

    # --- reading --------------------------------------------------------------------------

    def read(self, branch: str | None = None) -> pa.Table:
        """The view on `branch` as of its last refresh, as an Arrow table.

        Raises:
            NotFoundError: the view was never refreshed on that branch.
        """
        branch = self.source if branch is None else branch
        own = [c for c in self._checkpoints(branch) if self._valid(c) is None]
        if not own:
            raise NotFoundError(
                f"materialization {self.name!r} has not been refreshed on {branch!r}; call "
                f"refresh(branch={branch!r}) first"
            )
        cp = max(own, key=lambda c: (c.offset, c.created_at))
        state = self._load_state(cp)
        if self._plan is None or self._plan.mode != "aggregate":
            return state
        return self._final(self._plan, state)

    def _final(self, plan: SqlPlan, state: pa.Table) -> pa.Table:
        import duckdb

        con = duckdb.connect()
        try:
            con.register("__state", state)
            out = con.sql(plan.final_sql).to_arrow_table()
            # Name columns as the original query would (unaliased aggregates included).
            empty = live_plan(self.catalog, self.source).schema.empty_table()
            con.register("records", empty)
            names = list(con.sql(plan.query).columns)
        finally:
            con.close()
        renamed: pa.Table = out.rename_columns(names)
        return renamed

    def scan(self, branch: str | None = None) -> pl.LazyFrame:
        """The view on `branch` as a polars LazyFrame."""
        import polars as pl

        frame = pl.from_arrow(self.read(branch))
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy()

    def branches(self) -> list[str]:
        """Branches this view has been refreshed on."""
        out = []
        for entry in self.catalog.store.list(f"{self._folder}/checkpoints"):
            if entry.endswith("/"):
                name = decode_stream_name(entry[:-1])
                if name is not None:
                    out.append(name)
        return sorted(out)


def _as_table(value: Any, what: str) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if hasattr(value, "__arrow_c_stream__"):
        table: pa.Table = pa.RecordBatchReader.from_stream(value).read_all()
        return table
    raise InvalidInputError(f"the {what} must return an Arrow table, not {type(value).__name__}")


# --- definitions ------------------------------------------------------------------------------


def define(
    catalog: Catalog,
    name: str,
    source: str,
    *,
    query: str | None,
    reducer: Reducer | None,
    key: list[str] | None,
    version: str,
) -> Materialization:
    """Create or update the definition `name` (see `Log.materialize`)."""
    validate_stream_name(name)
    if not catalog.exists(source):
        raise catalog.not_found(source)
    if (query is None) == (reducer is None):
        raise InvalidInputError("pass exactly one of query= (SQL over `records`) or reducer=")
    if query is not None and not isinstance(query, str):
        raise InvalidInputError("query must be a SQL string over a relation named `records`")
    if reducer is not None and not callable(reducer):
        raise InvalidInputError("reducer must be callable: (state, batch) -> Arrow table")
    definition = {
        "format": 1,
        "name": name,
        "source": source,
        "kind": "sql" if query is not None else "reducer",
        "query": query,
        "reducer": getattr(reducer, "__qualname__", None) if reducer is not None else None,
        "key": list(key) if key else None,
        "version": str(version),
    }
    if query is not None:
        columns = _check_sql(catalog, source, query)
        if key and not set(key) | {"_offset"} <= set(columns):
            raise InvalidInputError(
                f"key={key} needs the query to output those columns and _offset; it outputs "
                f"{columns}"
            )
    path = f"{materialization_folder(name)}/definition.json"
    catalog.store.put(path, canonical(definition))
    return Materialization(catalog, definition, reducer)


def _check_sql(catalog: Catalog, source: str, query: str) -> list[str]:
    import duckdb

    con = duckdb.connect()
    try:
        con.register("records", live_plan(catalog, source).schema.empty_table())
        return list(con.sql(query).columns)  # binding the query catches unknown columns
    except duckdb.Error as e:
        raise InvalidInputError(f"the materialization query does not run on {source!r}: {e}") from e
    finally:
        con.close()


def load(catalog: Catalog, name: str, reducer: Reducer | None) -> Materialization:
    """Open the existing definition `name`."""
    path = f"{materialization_folder(validate_stream_name(name))}/definition.json"
    try:
        definition = json.loads(catalog.store.get(path))
    except FileNotFoundError:
        raise NotFoundError(f"there is no materialization {name!r} in {catalog.uri}") from None
    return Materialization(catalog, definition, reducer)


def list_definitions(catalog: Catalog) -> pa.Table:
    """One row per materialization definition."""
    rows = []
    for entry in catalog.store.list("materializations"):
        if entry.endswith("/"):
            path = f"materializations/{entry}definition.json"
            try:
                definition = json.loads(catalog.store.get(path))
            except FileNotFoundError:
                continue
            m = Materialization(catalog, definition, None)
            rows.append(
                {
                    "name": m.name,
                    "source": m.source,
                    "kind": definition["kind"],
                    "mode": m.mode,
                    "query": definition.get("query"),
                    "version": definition.get("version"),
                    "definition_hash": m.definition_hash,
                    "branches": m.branches(),
                }
            )
    schema = pa.schema(
        [
            ("name", pa.string()),
            ("source", pa.string()),
            ("kind", pa.string()),
            ("mode", pa.string()),
            ("query", pa.string()),
            ("version", pa.string()),
            ("definition_hash", pa.string()),
            ("branches", pa.list_(pa.string())),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def materialized_tables(catalog: Catalog) -> dict[str, tuple[str, Callable[[], pa.Table]]]:
    """Every materialization's rows on every branch it was refreshed on, with a `_branch`
    column (as of the last refreshes), by name: `(key, make)` where `key` changes whenever a
    refresh records a new checkpoint and `make()` builds the table."""
    out: dict[str, tuple[str, Callable[[], pa.Table]]] = {}
    for entry in catalog.store.list("materializations"):
        if not entry.endswith("/"):
            continue
        try:
            definition = json.loads(catalog.store.get(f"materializations/{entry}definition.json"))
        except FileNotFoundError:
            continue
        view = Materialization(catalog, definition, None)
        branches = view.branches()
        parts = [view.definition_hash]
        for branch in branches:
            parts += [branch, *catalog.store.list(view.checkpoint_folder(branch))]
        key = blake3.blake3("\0".join(parts).encode()).hexdigest()[:24]
        out[view.name] = (key, functools.partial(_branches_table, view, branches))
    return out


def _branches_table(view: Materialization, branches: list[str]) -> pa.Table:
    tables = []
    for branch in branches:
        try:
            table = view.read(branch)
        except NotFoundError:
            continue
        tables.append(table.append_column("_branch", pa.repeat(pa.scalar(branch), len(table))))
    if not tables:
        return pa.table({"_branch": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")
