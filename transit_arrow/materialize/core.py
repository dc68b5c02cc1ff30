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
`root`), the BLAKE3 of its state file, the hash of the checkpoint it resumed from
(`prev_hash`, `prev_path`) and its own `hash` (BLAKE3 of its canonical JSON without `hash`):
checkpoints form hash chains like commits. Before a checkpoint is used its bytes must be
canonical and hash to `hash`, its predecessor must still hash to `prev_hash`, the source
commit at `generation` must have `root` and end at `offset`, and the state file must hash to
`state_blake3`; otherwise the refresh rebuilds (or resumes from an earlier checkpoint) and its
report says why. A filter view's state is instead a list of immutable part files (`parts`
field, `parts.py`): a refresh writes one new part for the new records and lists the earlier
ones by reference. Materialization SQL runs on DuckDB connections without file system access.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
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
from ..manifest import Manifest
from ..names import decode_stream_name, encode_stream_name, validate_stream_name
from ..record import empty_table
from .partials import dask_partials
from .parts import Part, PartPolicy, local_part, merge_tail, read_part, write_part
from .parts import combine as combine_parts
from .plan import SqlPlan, plan_sql
from .sandbox import sandbox

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
    prev_hash: str | None = None
    prev_path: str | None = None
    hash: str | None = None  # None: written before checkpoints were hash-chained
    #: A filter view's state as part files (`Part.to_json` entries); None: one state file.
    parts: list[dict[str, Any]] | None = None
    path: str = field(default="", compare=False)  # where it was read from (not stored)

    def describe(self) -> str:
        return f"{self.stream}@{self.offset} (generation {self.generation})"

    def body(self) -> dict[str, Any]:
        """The stored fields (with `hash` when set, `parts` when the state is parts)."""
        data = asdict(self)
        del data["path"]
        if self.parts is None:  # one state file: exactly the fields such checkpoints have
            del data["parts"]
        if self.hash is None:  # a legacy checkpoint: exactly the fields it was written with
            for name in ("prev_hash", "prev_path", "hash"):
                del data[name]
        return data

    def computed_hash(self) -> str:
        """BLAKE3 of a context line and the canonical JSON of every stored field but `hash`."""
        data = asdict(self)
        del data["path"], data["hash"]
        if self.parts is None:
            del data["parts"]
        return blake3.blake3(_MV_CONTEXT + canonical(data)).hexdigest()

    def state_parts(self) -> list[Part] | None:
        """The parts of a parts checkpoint (None for one state file)."""
        if self.parts is None:
            return None
        return [Part.from_json(p, f"checkpoint {self.path}") for p in self.parts]


_MV_CONTEXT = b"transit-arrow materialization checkpoint v1\n"
_PARTS_FIELDS = frozenset(f.name for f in fields(_Checkpoint)) - {"path"}
_CHAINED_FIELDS = _PARTS_FIELDS - {"parts"}
_LEGACY_FIELDS = _CHAINED_FIELDS - {"prev_hash", "prev_path", "hash"}
_INT_FIELDS = ("offset", "generation")


def _parse_checkpoint(raw: bytes, path: str) -> tuple[_Checkpoint, str | None]:
    """A checkpoint file's content, and why it was edited (None: its hash holds, or it is a
    legacy checkpoint without one). Raises `IntegrityError` when it is not a checkpoint."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise IntegrityError(f"checkpoint {path} is not valid JSON") from None
    if not isinstance(data, dict) or set(data) not in (
        _PARTS_FIELDS,
        _CHAINED_FIELDS,
        _LEGACY_FIELDS,
    ):
        raise IntegrityError(f"checkpoint {path} does not have the fields of a checkpoint")
    for name, value in data.items():
        want: type | tuple[type, ...] = int if name in _INT_FIELDS else str
        if name in ("prev_hash", "prev_path"):
            want = (str, type(None))
        if name == "parts":
            want = list
        if not isinstance(value, want) or isinstance(value, bool):
            raise IntegrityError(f"checkpoint {path}: field {name!r} has a wrong type")
    cp = _Checkpoint(**data, path=path)
    cp.state_parts()  # every entry is a part
    if cp.hash is None:
        return cp, None
    found = cp.computed_hash()
    if found != cp.hash:
        return cp, (
            f"checkpoint {path} was edited: it records hash {cp.hash}, its content hashes to "
            f"{found}"
        )
    if canonical(data) != raw:
        return cp, f"checkpoint {path} was edited: its bytes are not canonical JSON"
    return cp, None


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
        #: When a filter view's last part files are merged into one (`parts.PartPolicy`).
        self.part_policy = PartPolicy()

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

    def _checkpoints(
        self, branch: str
    ) -> tuple[list[tuple[_Checkpoint, str | None]], list[tuple[int, str]]]:
        """The checkpoints recorded on `branch` with why each was edited (None: it was not),
        and for files that are no checkpoint at all the offset their name gives and why."""
        folder = self.checkpoint_folder(branch)
        out = []
        problems = []
        for entry in self.catalog.store.list(folder):
            if entry.endswith(".json"):
                path = f"{folder}/{entry}"
                try:
                    out.append(_parse_checkpoint(self.catalog.store.get(path), path))
                except IntegrityError as e:
                    offset = int(entry[:20]) - 1 if entry[:20].isdigit() else -1
                    problems.append((offset, str(e)))
                except FileNotFoundError:
                    continue  # replaced meanwhile
        return out, problems

    def _valid(self, cp: _Checkpoint) -> str | None:
        """None if the checkpoint can be used: made by this definition, its predecessor
        unchanged, and its source commit still has its root and ends at its offset."""
        if cp.definition_hash != self.definition_hash:
            return f"checkpoint {cp.describe()} was made by another definition"
        if cp.prev_path is not None:
            before: _Checkpoint | None = None
            problem = ""
            try:
                before, edited = _parse_checkpoint(
                    self.catalog.store.get(cp.prev_path), cp.prev_path
                )
                problem = edited or ""
                before = before if edited is None else None
            except (IntegrityError, FileNotFoundError) as e:
                problem = f"{e}"
            if before is None or before.hash != cp.prev_hash:
                why = problem if before is None else f"it hashes to {before.hash}"
                return (
                    f"checkpoint {cp.path} is chained to {cp.prev_path} (hash {cp.prev_hash}), "
                    f"which changed: {why}"
                )
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
        if manifest.next_offset - 1 != cp.offset:
            return (
                f"checkpoint {cp.path or cp.describe()} claims offset {cp.offset}, but "
                f"generation {cp.generation} of {cp.stream!r} ends at offset "
                f"{manifest.next_offset - 1}"
            )
        return None

    def _best_checkpoint(self, branch: str, through: int) -> tuple[_Checkpoint | None, str]:
        """The furthest valid checkpoint usable for `branch` through replay offset `through`:
        the branch's own, or an ancestor's at or before the fork (DESIGN §9)."""
        manifest = self.catalog.manifest(branch, refresh=True)
        here = Position(branch, through, manifest.generation, manifest.root)
        best: _Checkpoint | None = None
        unusable: list[tuple[int, str]] = []  # (offset, why) of checkpoints not used
        stale_definition = False
        for pos in [here, *chain(self.catalog, here)]:
            found, broken = self._checkpoints(pos.stream)
            unusable += [(o, p) for o, p in broken if o <= pos.offset]
            for cp, edited in found:
                if cp.offset > pos.offset:
                    continue
                if cp.definition_hash != self.definition_hash:
                    stale_definition = True
                    continue
                if cp.hash is None:
                    problem: str | None = (
                        f"checkpoint {cp.path} predates hash-chained checkpoints: not resumed from"
                    )
                else:
                    problem = self._problem(cp, edited)
                if problem is not None:
                    unusable.append((cp.offset, problem))
                elif best is None or cp.offset > best.offset:
                    best = cp
        notes: list[str] = []
        for offset, problem in unusable:
            if (best is None or offset > best.offset) and problem not in notes:
                notes.append(problem)
        if stale_definition and best is None:
            notes.append("the definition changed since the last checkpoint: rebuilt")
        elif notes:
            start = "resumed from " + best.describe() if best is not None else "rebuilt"
            notes.append(f"{start} instead")
        return best, "; ".join(notes)

    def _problem(self, cp: _Checkpoint, edited: str | None) -> str | None:
        """Why `cp` cannot be used (it was edited, or does not verify), or None."""
        parts = [p for p in (edited, self._valid(cp)) if p is not None]
        return "; and ".join(parts) if parts else None

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

    def _save(
        self,
        manifest: Manifest,
        state: pa.Table | list[Part],
        mode: str,
        prev: _Checkpoint | None,
    ) -> _Checkpoint:
        """Record a checkpoint of `branch` at the manifest's head: `state` is a table (written
        as one state file first) or the parts of a filter view (written already)."""
        branch = manifest.stream
        offset = manifest.next_offset - 1
        parts: list[dict[str, Any]] | None = None
        if isinstance(state, list):
            parts = [p.to_json() for p in state]
            path, digest = "", blake3.blake3(canonical({"parts": parts})).hexdigest()
        else:
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
            prev_hash=prev.hash if prev is not None else None,
            prev_path=prev.path if prev is not None else None,
            parts=parts,
        )
        cp = dataclasses.replace(cp, hash=cp.computed_hash())
        # The state digest is part of the name: a rebuild after an invalid checkpoint at the
        # same offset must not be shadowed by it.
        name = f"{offset + 1:020d}-{self.definition_hash[:16]}-{digest[:16]}.json"
        # If the same position was checkpointed already, that state is equivalent.
        path = f"{self.checkpoint_folder(branch)}/{name}"
        cp = dataclasses.replace(cp, path=path)
        try:
            self.catalog.store.put_if_absent(path, canonical(cp.body()))
        except FileExistsError:
            try:
                existing, edited = _parse_checkpoint(self.catalog.store.get(path), path)
            except IntegrityError:
                existing, edited = None, "unreadable"
            if existing is None or existing.hash is None or self._problem(existing, edited):
                self.catalog.store.put(path, canonical(cp.body()))  # replace an invalid one
            else:
                return existing
        return cp

    # --- refresh --------------------------------------------------------------------------

    def refresh(self, branch: str | None = None, *, dask: Any = None) -> RefreshReport:
        """Bring the view up to date on `branch` (default: the source stream).

        Only records after the furthest usable checkpoint are processed: the branch's own, or
        an ancestor's at or before the fork. Covers committed records (this process's unsealed
        head of the branch is sealed first). A filter view's refresh writes only the new
        records' output (one new part file), however large the view is.

        Args:
            branch: the stream to refresh the view on.
            dask: a `distributed.Client`: the new records' partial results (per-group partial
                aggregates, or a filter view's rows) are computed by Dask tasks, one per
                segment span of the scan plan, each verifying its segment's BLAKE3; they are
                checked to cover the new records exactly once and combined here, exactly as
                a local refresh combines them. Only incremental SQL views ("filter",
                "aggregate") can be refreshed this way.

        Raises:
            InvalidInputError: a reducer view opened without its reducer, or `dask=` for a
                view that is not an incremental SQL view.
        """
        started = time.perf_counter()
        self.catalog.check_open()
        branch = self.source if branch is None else validate_stream_name(branch)
        if not self.catalog.exists(branch):
            raise self.catalog.not_found(branch)
        if self._plan is None and self._reducer is None:  # refuse before sealing anything
            raise InvalidInputError(
                f"materialization {self.name!r} uses a Python reducer; open it with "
                f"log.materialization({self.name!r}, reducer=...) to refresh"
            )
        if dask is not None and self.mode not in ("filter", "aggregate"):
            raise InvalidInputError(
                f"materialization {self.name!r} is a {self.mode!r} view: only incremental SQL "
                "views (filter, aggregate) are refreshed with dask=; refresh it without"
            )
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
        state: pa.Table | list[Part] | None = None
        if cp is not None and not full:
            try:
                state = self._resume(cp)
            except (IntegrityError, FileNotFoundError) as e:  # damaged state: rebuild
                unusable = f"the state of checkpoint {cp.describe()} is unusable ({e})"
                reason = f"{reason}; {unusable}: rebuilt"
                cp, start, state = None, 0, None
        if dask is not None and start <= through:
            assert self._plan is not None
            partials, processed = dask_partials(
                dask, self.catalog, manifest, start, through, self._plan.partial_sql
            )
            reason = f"{reason}; partials of {len(partials)} segment spans computed on Dask"
            new = self._run(lambda: self._gathered(self._plan, state, partials))
        else:
            reader = plan_at(self.catalog, branch, manifest).reader(start=start, end=through + 1)
            new, processed = self._apply(state, reader)
        if mode == "filter":
            parts = [*(state if isinstance(state, list) else []), self._write_part(manifest, new)]
            new_state: pa.Table | list[Part] = merge_tail(
                self.catalog,
                parts,
                self.part_policy,
                folder=self._folder,
                branch=branch,
                offset=through,
                key=self.definition.get("key"),
            )
        else:
            new_state = new
        self._save(manifest, new_state, mode, cp)
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

    def _resume(self, cp: _Checkpoint) -> pa.Table | list[Part]:
        """The state a refresh builds on: a table, or a filter view's parts (each checked
        intact; a state file written before parts becomes the first part)."""
        if self.mode != "filter":
            return self._load_state(cp)
        parts = cp.state_parts()
        if parts is None:  # one state file (written before parts): verified, then referenced
            rows = self._load_state(cp).num_rows
            size = self.catalog.store.head(cp.state_path).size
            return [Part(cp.state_path, cp.state_blake3, size, rows)]
        for part in parts:
            local_part(self.catalog, part)  # intact (a `stat` once verified in this process)
        return parts

    def _write_part(self, manifest: Manifest, table: pa.Table) -> Part:
        return write_part(
            self.catalog, self._folder, manifest.stream, manifest.next_offset - 1, table
        )

    def _apply(
        self, state: pa.Table | list[Part] | None, reader: pa.RecordBatchReader
    ) -> tuple[pa.Table, int]:
        """The next state (a filter view: the new records' output) and the records read."""
        if self._plan is None:
            assert not isinstance(state, list)
            return self._reduce(state, reader)
        plan = self._plan
        records = reader.read_all()
        return self._run(lambda: self._fold(plan, state, records)), records.num_rows

    def _reduce(self, state: pa.Table | None, reader: pa.RecordBatchReader) -> tuple[pa.Table, int]:
        if self._reducer is None:
            raise InvalidInputError(
                f"materialization {self.name!r} uses a Python reducer; open it with "
                f"log.materialization({self.name!r}, reducer=...) to refresh"
            )
        processed = 0
        for batch in reader:
            processed += batch.num_rows
            out = self._call_reducer(state, pa.Table.from_batches([batch]))
            state = _as_table(out, f"reducer of {self.name!r}")
        if state is None:
            state = _as_table(self._call_reducer(None, empty_table(reader.schema)), "reducer")
        return state, processed

    def _call_reducer(self, state: pa.Table | None, batch: pa.Table) -> Any:
        assert self._reducer is not None
        try:
            return self._reducer(state, batch)
        except Exception as e:  # the user's code: say whose, keep the error tree
            raise InvalidInputError(
                f"the reducer of materialization {self.name!r} raised {e!r}; nothing was saved"
            ) from e

    def _run(self, compute: Callable[[], pa.Table]) -> pa.Table:
        """`compute()`, with DuckDB errors as `InvalidInputError` naming this view."""
        import duckdb

        try:
            return compute()
        except duckdb.Error as e:
            raise InvalidInputError(f"materialization {self.name!r}: {e}") from e

    def _fold(
        self, plan: SqlPlan, state: pa.Table | list[Part] | None, records: pa.Table
    ) -> pa.Table:
        """The full query's result, a filter view's new rows, or the combined aggregate state."""
        con = sandbox()
        try:
            con.register("records", records)
            sql = plan.query if plan.mode == "full" else plan.partial_sql
            new: pa.Table = con.sql(sql).to_arrow_table()
        finally:
            con.close()
        if plan.mode != "aggregate" or state is None:
            return new
        assert not isinstance(state, list)
        return _combine(plan, state, new)

    def _gathered(
        self, plan: SqlPlan | None, state: pa.Table | list[Part] | None, partials: list[pa.Table]
    ) -> pa.Table:
        """A filter view's new rows (the partials in replay order), or the aggregate state
        combined with every partial."""
        assert plan is not None
        new = combine_parts(partials, None)
        if plan.mode == "filter":
            return new
        assert not isinstance(state, list)
        return _combine(plan, empty_table(new.schema) if state is None else state, new)

    # --- reading --------------------------------------------------------------------------

    def read(self, branch: str | None = None) -> pa.Table:
        """The view on `branch` as of its last refresh, as an Arrow table.

        Raises:
            NotFoundError: the view was never refreshed on that branch.
            IntegrityError: its latest checkpoint or state was edited or damaged (a refresh
                rebuilds it).
        """
        self.catalog.check_open()
        branch = self.source if branch is None else validate_stream_name(branch)
        found, problems = self._checkpoints(branch)
        mine = [(c, self._problem(c, e)) for c, e in found]
        mine = [(c, p) for c, p in mine if c.definition_hash == self.definition_hash]
        invalid = [(c.offset, p) for c, p in mine if p is not None]
        own = [c for c, p in mine if p is None]
        if not own and not problems and not invalid:
            raise NotFoundError(
                f"materialization {self.name!r} has not been refreshed on {branch!r}; call "
                f"refresh(branch={branch!r}) first"
            )
        cp = max(own, key=lambda c: (c.offset, c.created_at)) if own else None
        newer = [p for o, p in [*problems, *invalid] if cp is None or o > cp.offset]
        if newer:
            raise IntegrityError(
                f"materialization {self.name!r} on {branch!r}: {newer[0]}; refresh(branch="
                f"{branch!r}) rebuilds it"
            )
        assert cp is not None
        parts = cp.state_parts()
        if parts is not None:  # a filter view's parts, each read verified
            tables = [read_part(self.catalog, p) for p in parts]
            return combine_parts(tables, self.definition.get("key"))
        state = self._load_state(cp)
        if self._plan is None or self._plan.mode != "aggregate":
            return state
        return self._final(self._plan, state)

    def _final(self, plan: SqlPlan, state: pa.Table) -> pa.Table:
        import duckdb

        con = sandbox()
        try:
            con.register("__state", state)
            out = con.sql(plan.final_sql).to_arrow_table()
            # Name columns as the original query would (unaliased aggregates included).
            empty = empty_table(live_plan(self.catalog, self.source).schema)
            con.register("records", empty)
            names = list(con.sql(plan.query).columns)
        except duckdb.Error as e:
            raise InvalidInputError(f"materialization {self.name!r}: {e}") from e
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


def _combine(plan: SqlPlan, state: pa.Table, new: pa.Table) -> pa.Table:
    """An aggregate view's state combined with new partials (`plan.combine_sql`)."""
    con = sandbox()
    try:
        con.register("__state", state)
        con.register("__new", new)
        out = con.sql(plan.combine_sql).to_arrow_table()
    finally:
        con.close()
    order = new.column_names
    combined: pa.Table = out.select([*order, *(c for c in out.column_names if c not in order)])
    return combined


def _one_select(query: str) -> None:
    """Refuse SQL that is not exactly one SELECT statement (DuckDB runs every statement of a
    `sql()` call, so `SELECT 1; COPY ... TO ...` would run the COPY)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise InvalidInputError(f"the materialization query is not valid SQL: {e}") from e
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in statements) or "none"
        raise InvalidInputError(
            f"a materialization query must be exactly one SELECT statement, not: {kinds}"
        )


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
    if key is not None and (
        isinstance(key, str)
        or not isinstance(key, list | tuple)
        or not all(isinstance(k, str) and k for k in key)
    ):
        raise InvalidInputError(f"key must be a list of column names, not {key!r}")
    if not isinstance(version, str | int) or isinstance(version, bool):
        raise InvalidInputError(f"version must be a string, not {version!r}")
    if query is not None:
        _one_select(query)
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

    con = sandbox()
    try:
        con.register("records", empty_table(live_plan(catalog, source).schema))
        return list(con.sql(query).columns)  # binding the query catches unknown columns
    except duckdb.Error as e:
        raise InvalidInputError(f"the materialization query does not run on {source!r}: {e}") from e
    finally:
        con.close()


def load(catalog: Catalog, name: str, reducer: Reducer | None) -> Materialization:
    """Open the existing definition `name`."""
    path = f"{materialization_folder(validate_stream_name(name))}/definition.json"
    try:
        return Materialization(catalog, _stored_definition(catalog, path), reducer)
    except FileNotFoundError:
        raise NotFoundError(f"there is no materialization {name!r} in {catalog.uri}") from None


_DEFINITION_FIELDS = {"format", "name", "source", "kind", "query", "reducer", "key", "version"}


def _stored_definition(catalog: Catalog, path: str) -> dict[str, Any]:
    """A stored definition, checked before use (`IntegrityError` saying what is wrong)."""
    raw = catalog.store.get(path)
    try:
        definition = json.loads(raw)
    except (ValueError, RecursionError):
        raise IntegrityError(f"materialization definition {path} is not valid JSON") from None
    if not isinstance(definition, dict) or set(definition) != _DEFINITION_FIELDS:
        raise IntegrityError(f"materialization definition {path} is not a definition")
    try:
        validate_stream_name(definition["name"])
        validate_stream_name(definition["source"])
        if definition["kind"] == "sql":
            _one_select(definition["query"])
        elif definition["kind"] != "reducer":
            raise InvalidInputError(f"unknown kind {definition['kind']!r}")
        key = definition["key"]
        if key is not None and not (isinstance(key, list) and all(isinstance(k, str) for k in key)):
            raise InvalidInputError(f"key must be a list of names, not {key!r}")
    except (InvalidInputError, TypeError) as e:
        raise IntegrityError(f"materialization definition {path} is not usable: {e}") from None
    return definition


def list_definitions(catalog: Catalog) -> pa.Table:
    """One row per materialization definition."""
    rows = []
    for entry in catalog.store.list("materializations"):
        if entry.endswith("/"):
            path = f"materializations/{entry}definition.json"
            try:
                definition = _stored_definition(catalog, path)
            except (FileNotFoundError, IntegrityError):
                continue  # `log.materialization(name)` says what is wrong with it
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
        path = f"materializations/{entry}definition.json"
        try:
            definition = _stored_definition(catalog, path)
        except FileNotFoundError:
            continue
        except IntegrityError as e:  # fails the queries naming this view only
            name = decode_stream_name(entry[:-1])
            if name is not None:
                out[name] = (blake3.blake3(str(e).encode()).hexdigest()[:24], _raiser(e))
            continue
        view = Materialization(catalog, definition, None)
        branches = view.branches()
        parts = [view.definition_hash]
        for branch in branches:
            parts += [branch, *catalog.store.list(view.checkpoint_folder(branch))]
        key = blake3.blake3("\0".join(parts).encode()).hexdigest()[:24]
        out[view.name] = (key, functools.partial(_branches_table, view, branches))
    return out


def _raiser(error: IntegrityError) -> Callable[[], pa.Table]:
    def make() -> pa.Table:
        raise error

    return make


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
