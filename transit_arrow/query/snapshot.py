"""The log's streams and their replay plans at one moment, the input of every query view."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pyarrow as pa

from ..engine.catalog import Catalog
from ..engine.read import ReplayPlan, live_plan, plan_at
from ..errors import (
    IntegrityError,
    NotFoundError,
    SchemaMismatchError,
    StorageError,
    TransitError,
)
from ..record import evolve_schema, full_schema

__all__ = ["StreamPlan", "plan_for_sql", "records_schema", "take_snapshot"]

At = datetime | str | None
"""A point in time for `at=` (a datetime, naive meaning UTC, or an ISO 8601 string)."""


StreamPlan = ReplayPlan
"""A stream's replay as the query layer sees it (the read schema without columns SQL cannot
tell apart); see `plan_for_sql`."""


def plan_for_sql(plan: ReplayPlan) -> ReplayPlan:
    """`plan` with the read schema SQL can hold (see `_sql_names`)."""
    return dataclasses.replace(plan, schema=_sql_names(plan.schema))


def _sql_names(schema: pa.Schema) -> pa.Schema:
    """`schema` without the columns whose names differ from an earlier one's only by case:
    SQL cannot tell them apart (and DuckDB would read the earlier column's values for both)."""
    seen: set[str] = set()
    fields = []
    for f in schema:
        if f.name.lower() not in seen:
            seen.add(f.name.lower())
            fields.append(f)
    return pa.schema(fields)


def take_snapshot(
    catalog: Catalog, at: At = None, names: list[str] | None = None
) -> tuple[list[ReplayPlan], dict[str, TransitError]]:
    """Every readable stream's plan (of `names` only, when given), sorted by name, and the error
    of each stream whose history cannot be read or whose segment files do not match their
    commits (so one damaged stream never fails queries about the others). With `at`, each
    stream as of that time (streams created later are left out, and unsealed records are not
    part of any past)."""
    catalog.check_open()
    plans = []
    broken: dict[str, TransitError] = {}
    latest = {}  # every stream's latest manifest, for the local metadata cache
    for name in catalog.names() if names is None else sorted(names):
        try:
            if at is None:
                plan = live_plan(catalog, name)
                latest[name] = plan.manifest
            else:
                plan = plan_at(catalog, name, catalog.manifest_as_of(name, at))
        except NotFoundError:
            if at is None:
                raise
            continue  # created after `at`
        except (IntegrityError, StorageError) as e:
            broken[name] = e
            continue
        try:
            # Views read local segment files directly: only verified ones (a missing file
            # would also make DuckDB refuse the whole batch of views over it).
            plan.check_files()
        except (IntegrityError, StorageError) as e:
            broken[name] = e
            continue
        plans.append(plan_for_sql(plan))
    if names is None and at is None:
        # The next fresh handle then costs a few `stat`s per unchanged stream.
        catalog.save_metadata_cache(latest)
    return plans, broken


def records_schema(plans: list[StreamPlan]) -> pa.Schema:
    """The schema of the cross-branch relation: `_branch`, `_own` (whether the row is the
    branch's own record, appended to it or produced by its merge, rather than inherited from
    its parent or base; see `engine.replay.own_start`), the system columns (with
    `_origin_stream` / `_origin_offset`, so that queries over it work on any log), then every
    user column of every stream, widened as schema evolution would.

    A column that two streams (of unrelated roots) give types no widening reconciles is left
    out (no type holds both without loss), and so are columns spelled like an earlier one but
    for case.
    """
    user: dict[str, pa.Field[Any]] = {}
    conflicts: set[str] = set()
    spelling: dict[str, str] = {}  # SQL names are case-insensitive: the first spelling wins
    for plan in plans:
        for f in plan.schema:
            if f.name.startswith("_") or f.name in conflicts:
                continue
            if spelling.setdefault(f.name.lower(), f.name) != f.name:
                continue
            old = user.get(f.name)
            try:
                merged = evolve_schema(pa.schema([old]) if old else None, pa.schema([f]))
            except SchemaMismatchError:
                del user[f.name]
                conflicts.add(f.name)
                continue
            user[f.name] = merged.field(0)
    system = full_schema(pa.schema(list(user.values())), origin=True)
    return pa.schema(
        [
            pa.field("_branch", pa.string(), nullable=False),
            pa.field("_own", pa.bool_(), nullable=False),
            *system,
        ]
    )
