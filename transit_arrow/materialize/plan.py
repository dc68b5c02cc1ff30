"""Which SQL definitions can be maintained incrementally, and the rewritten queries that do it.

A definition is SQL over a relation named `records`. Two shapes are incremental:

- **filter / projection**: `SELECT <exprs> FROM records [WHERE ...]` (no aggregates, window
  functions, DISTINCT, ORDER BY or LIMIT): the new records' output is appended to the state.
- **decomposable GROUP BY**: grouping by plain columns, with aggregates count, sum, min, max,
  avg, bool_and, bool_or and arg_max(x, _offset) (the last value by offset). The state holds
  one row of *partial* aggregates per group; a refresh computes partials over the new records
  only and combines them with the state; the output is a final projection of the state (where
  HAVING, ORDER BY and LIMIT apply).

Everything else is recomputed in full, and the plan says why: never a wrong incremental answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

__all__ = ["SqlPlan", "plan_sql"]

_DIALECT = "duckdb"


@dataclass(frozen=True)
class SqlPlan:
    """How a SQL definition is maintained."""

    mode: str  # "filter", "aggregate" or "full"
    reason: str
    query: str
    partial_sql: str = ""  # over `records`: filter output, or per-group partials
    combine_sql: str = ""  # over `__state` and `__new` (same columns): the next state
    final_sql: str = ""  # over `__state`: the view's rows
    keys: list[str] = field(default_factory=list)


def _full(query: str, reason: str) -> SqlPlan:
    return SqlPlan("full", reason, query)


def _is_records(node: Any) -> bool:
    return (
        isinstance(node, exp.From)
        and isinstance(node.this, exp.Table)
        and node.this.name == "records"
        and not node.this.args.get("db")
    )


def plan_sql(query: str) -> SqlPlan:
    """Classify `query` and, when it is incremental, build the rewritten queries."""
    try:
        tree = sqlglot.parse_one(query, read=_DIALECT)
    except sqlglot.errors.ParseError as e:
        return _full(query, f"the SQL could not be analysed ({e.__class__.__name__})")
    if not isinstance(tree, exp.Select):
        return _full(query, "only a single SELECT is maintained incrementally")
    if not _is_records(tree.args.get("from_")) or tree.args.get("joins") or tree.args.get("with_"):
        return _full(query, "it reads something other than `records` alone (join, CTE, ...)")
    if tree.args.get("distinct"):
        return _full(query, "SELECT DISTINCT needs the whole input")
    if any(tree.find_all(exp.Window)):
        return _full(query, "window functions need the whole input")
    if any(isinstance(n, exp.Subquery | exp.Select) for n in tree.walk() if n is not tree):
        return _full(query, "subqueries are not decomposed")
    aggs = list(tree.find_all(exp.AggFunc))
    group = tree.args.get("group")
    unknown = list(tree.find_all(exp.Anonymous))
    if unknown:
        # DuckDB functions sqlglot does not model may be aggregates: never guess.
        return _full(query, f"{unknown[0].sql(_DIALECT)} is not a function the planner knows")
    if any(isinstance(n, exp.Filter) for n in tree.walk()):
        return _full(query, "aggregate FILTER clauses are not decomposed")
    if not aggs and not group:
        if tree.args.get("order") or tree.args.get("limit") or tree.args.get("offset"):
            return _full(query, "ORDER BY / LIMIT over all records needs the whole input")
        return SqlPlan(
            "filter",
            "filter/projection: new records' output is appended",
            query,
            partial_sql=query,
            combine_sql="SELECT * FROM __state UNION ALL BY NAME SELECT * FROM __new",
            final_sql="SELECT * FROM __state",
        )
    return _plan_aggregate(query, tree, aggs, group)


def _plan_aggregate(
    query: str, tree: exp.Select, aggs: list[exp.AggFunc], group: exp.Group | None
) -> SqlPlan:
    keys: list[str] = []
    for item in group.expressions if group is not None else []:
        if not isinstance(item, exp.Column):
            return _full(query, "GROUP BY is over an expression, not plain columns")
        if item.name in keys:
            return _full(query, f"GROUP BY repeats {item.name!r}")
        keys.append(item.name)
    if group is not None and (group.args.get("rollup") or group.args.get("cube")):
        return _full(query, "ROLLUP/CUBE are not decomposed")
    partials: list[str] = []
    combines: list[str] = []
    finals: dict[str, exp.Expression] = {}
    for i, agg in enumerate(aggs):
        spec = _decompose(agg, f"__p{i}")
        if spec is None:
            return _full(query, f"{agg.sql(_DIALECT)} is not a decomposable aggregate")
        partial, combine, final = spec
        partials += partial
        combines += combine
        finals[agg.sql(_DIALECT)] = final
    for node in tree.args["expressions"]:
        if not _only_keys(node, keys):
            return _full(query, f"{node.sql(_DIALECT)} uses a column outside GROUP BY")
    quoted = [exp.to_identifier(k, quoted=True).sql(_DIALECT) for k in keys]
    where = tree.args.get("where")
    group_sql = f" GROUP BY {', '.join(quoted)}" if keys else ""
    partial_sql = (
        f"SELECT {', '.join([*quoted, *partials])} FROM records"
        f"{' ' + where.sql(_DIALECT) if where else ''}{group_sql}"
    )
    combine_sql = (
        f"SELECT {', '.join([*quoted, *combines])} FROM "
        f"(SELECT * FROM __state UNION ALL SELECT * FROM __new){group_sql}"
    )
    final = tree.copy()
    final.set("where", None)
    final.set("group", None)
    final.set("from_", exp.From(this=exp.to_table("__state")))
    having = final.args.get("having")
    final.set("having", None)

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.AggFunc):
            return finals[node.sql(_DIALECT)].copy()
        if isinstance(node, exp.Column) and node.table:
            return exp.column(node.name, quoted=True)
        return node

    final = final.transform(replace)
    assert isinstance(final, exp.Select)
    if having is not None:
        final = final.where(having.this.transform(replace))
    return SqlPlan(
        "aggregate",
        f"decomposable aggregates grouped by {keys or 'nothing'}: partials over new records "
        "are combined with the state",
        query,
        partial_sql=partial_sql,
        combine_sql=combine_sql,
        final_sql=final.sql(_DIALECT),
        keys=keys,
    )


def _only_keys(node: exp.Expression, keys: list[str]) -> bool:
    """Whether every column `node` reads outside aggregates is a group key."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, exp.AggFunc):
            continue
        if isinstance(current, exp.Column) and current.name not in keys:
            return False
        stack.extend(current.iter_expressions())
    return True


def _decompose(agg: exp.AggFunc, name: str) -> tuple[list[str], list[str], exp.Expression] | None:
    """Partial select items, combine select items and the final expression for `agg`."""
    if any(isinstance(n, exp.Distinct) for n in agg.walk()):
        return None
    col = exp.to_identifier(name, quoted=True).sql(_DIALECT)
    ref = exp.column(name, quoted=True)
    text = agg.sql(_DIALECT)
    if isinstance(agg, exp.Count):
        return [f"{text} AS {col}"], [f"CAST(SUM({col}) AS BIGINT) AS {col}"], ref
    simple = {exp.Sum: "SUM", exp.Min: "MIN", exp.Max: "MAX"}
    simple.update({exp.LogicalAnd: "BOOL_AND", exp.LogicalOr: "BOOL_OR"})
    for kind, fn in simple.items():
        if type(agg) is kind:
            return [f"{text} AS {col}"], [f"{fn}({col}) AS {col}"], ref
    if isinstance(agg, exp.Avg):
        arg = agg.this.sql(_DIALECT)
        s = exp.to_identifier(f"{name}_s", quoted=True).sql(_DIALECT)
        c = exp.to_identifier(f"{name}_c", quoted=True).sql(_DIALECT)
        final: Any = sqlglot.parse_one(
            f"CASE WHEN {c} = 0 THEN NULL ELSE CAST({s} AS DOUBLE) / {c} END", read=_DIALECT
        )
        return (
            [f"SUM({arg}) AS {s}", f"COUNT({arg}) AS {c}"],
            [f"SUM({s}) AS {s}", f"CAST(SUM({c}) AS BIGINT) AS {c}"],
            final,
        )
    if isinstance(agg, exp.ArgMax):
        if agg.args.get("count") is not None or len(agg.expressions or []) > 0:
            return None  # the top-n form keeps several values
        by = agg.expression
        if not (isinstance(by, exp.Column) and by.name == "_offset"):
            return None
        arg = agg.this.sql(_DIALECT)
        o = exp.to_identifier(f"{name}_o", quoted=True).sql(_DIALECT)
        # arg_max skips NULL values, so the offset kept is that of the last non-NULL value.
        return (
            [f"{text} AS {col}", f"MAX(_offset) FILTER (WHERE ({arg}) IS NOT NULL) AS {o}"],
            [f"ARG_MAX({col}, {o}) AS {col}", f"MAX({o}) AS {o}"],
            ref,
        )
    return None
