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
from .plan import SqlPlan, plan_sql

__all__ = [
    "Materialization",
    "Reducer",
    "RefreshReport",
    "SqlPlan",
    "define",
    "list_definitions",
    "load",
    "materialized_tables",
    "plan_sql",
]
