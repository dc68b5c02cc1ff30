"""Incremental materializations across branches (DESIGN §9)."""

from __future__ import annotations

from .core import (
    Materialization,
    Reducer,
    RefreshReport,
    define,
    list_definitions,
    load,
    materialized_tables,
)
from .parts import PartPolicy
from .plan import SqlPlan, plan_sql

__all__ = [
    "Materialization",
    "PartPolicy",
    "Reducer",
    "RefreshReport",
    "SqlPlan",
    "define",
    "list_definitions",
    "load",
    "materialized_tables",
    "plan_sql",
]
