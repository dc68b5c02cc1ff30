"""Which SQL definitions can be maintained incrementally, and the rewritten queries that do it.

A definition is SQL over a relation named `records`. Two shapes are incremental:

- **filter / projection**: `SELECT <exprs> FROM records [WHERE ...]` (no aggregates, window
  functions, DISTINCT, ORDER BY or LIMIT): the new records' output is appended to the state.
- **decomposable GROUP BY**: grouping by columns or expressions (`GROUP BY lower(model)`,
  ordinals, `GROUP BY ALL`), with aggregates count, count_if, sum, min, max, avg, bool_and,
  bool_or, arg_max(x, _offset) (the last value by offset), stddev/variance (samp and pop,
  combined from count, mean and the sum of squared deviations, Chan et al.), each optionally
  with `FILTER (WHERE ...)`, over any argument expression (`sum(CASE ...)`). The state holds
  one row of *partial* aggregates per group; a refresh computes partials over the new records
  only and combines them with the state; the output is a final projection of the state (where
  HAVING, ORDER BY and LIMIT apply). Plain-column keys keep their names in the state;
  expression keys are stored as `__k<i>`.

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
    aggs = _aggregates(tree)
    group = tree.args.get("group")
    unknown = list(tree.find_all(exp.Anonymous))
    if unknown:
        # DuckDB functions sqlglot does not model may be aggregates: never guess.
        return _full(query, f"{unknown[0].sql(_DIALECT)} is not a function the planner knows")
    if any(isinstance(n, exp.Filter) and not isinstance(n.this, exp.AggFunc) for n in tree.walk()):
        return _full(query, "a FILTER clause outside an aggregate is not decomposed")
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


def _aggregates(tree: exp.Expr) -> list[exp.Expr]:
    """The aggregate calls of `tree`, an aggregate with its FILTER clause as one unit."""
    out: list[exp.Expr] = []
    for node in tree.find_all(exp.Filter, exp.AggFunc):
        if (isinstance(node, exp.Filter) and isinstance(node.this, exp.AggFunc)) or (
            isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Filter)
        ):
            out.append(node)
    return out


def _group_keys(
    tree: exp.Select, group: exp.Group | None
) -> tuple[list[tuple[str, exp.Expr | None]], str | None]:
    """The group keys as (state column, expression or None for a plain column), or why not."""
    if group is None:
        return [], None
    grouping = (exp.Rollup, exp.Cube, exp.GroupingSets)
    if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")) or any(
        isinstance(e, grouping) for e in group.expressions
    ):
        return [], "ROLLUP/CUBE/GROUPING SETS are not decomposed"
    selects = tree.args["expressions"]
    items: list[exp.Expr] = list(group.expressions)
    if group.args.get("all"):
        items = [e.unalias() for e in selects if not _aggregates(e)]
    aliases = {e.alias: e.unalias() for e in selects if isinstance(e, exp.Alias)}
    keys: list[tuple[str, exp.Expr | None]] = []
    for item in items:
        if isinstance(item, exp.Literal) and item.is_int:  # GROUP BY 2: the second select item
            position = int(item.name)
            if not 1 <= position <= len(selects):
                return [], f"GROUP BY {position} is not a select item"
            item = selects[position - 1].unalias()
        if _aggregates(item):
            return [], f"GROUP BY {item.sql(_DIALECT)} holds an aggregate"
        if isinstance(item, exp.Column):  # `records.x` or `x`
            target = None if item.table else aliases.get(item.name)
            if target is not None and not (
                isinstance(target, exp.Column) and target.name == item.name
            ):
                # a column or the alias: DuckDB decides by the input's columns; never guess
                return [], f"GROUP BY {item.name!r} may name an alias; group by the expression"
            name: str = item.name
            plain: exp.Expr | None = None
        else:
            name, plain = f"__k{len(keys)}", item
        if any(k == name or (e is not None and plain is not None and e == plain) for k, e in keys):
            return [], f"GROUP BY repeats {item.sql(_DIALECT)}"
        keys.append((name, plain))
    return keys, None


def _plan_aggregate(
    query: str, tree: exp.Select, aggs: list[exp.Expr], group: exp.Group | None
) -> SqlPlan:
    keyed, problem = _group_keys(tree, group)
    if problem is not None:
        return _full(query, problem)
    keys = [name for name, _ in keyed]
    partials: list[str] = []
    combines: list[str] = []
    windows: list[str] = []
    finals: dict[str, exp.Expr] = {}
    for i, agg in enumerate(aggs):
        spec = _decompose(agg, f"__p{i}")
        if spec is None:
            return _full(query, f"{agg.sql(_DIALECT)} is not a decomposable aggregate")
        partial, combine, final, window = spec
        partials += partial
        combines += combine
        windows += window
        finals[agg.sql(_DIALECT)] = final
    where = tree.args.get("where")
    tree = _key_references(tree, {e.sql(_DIALECT): n for n, e in keyed if e is not None})
    for node in tree.args["expressions"]:
        if not _only_keys(node, keys):
            return _full(query, f"{node.sql(_DIALECT)} uses a column outside GROUP BY")
    quoted = [exp.to_identifier(k, quoted=True).sql(_DIALECT) for k in keys]
    selected = [
        f"{e.sql(_DIALECT)} AS {q}" if e is not None else q
        for (_, e), q in zip(keyed, quoted, strict=True)
    ]
    group_sql = f" GROUP BY {', '.join(quoted)}" if keys else ""
    partial_group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
    partial_sql = (
        f"SELECT {', '.join([*selected, *partials])} FROM records"
        f"{' ' + where.sql(_DIALECT) if where else ''}{partial_group}"
    )
    union = "SELECT * FROM __state UNION ALL SELECT * FROM __new"
    if windows:
        over = f"OVER (PARTITION BY {', '.join(quoted)})" if keys else "OVER ()"
        extra = ", ".join(w.format(over=over) for w in windows)
        union = f"SELECT *, {extra} FROM ({union})"
    combine_sql = f"SELECT {', '.join([*quoted, *combines])} FROM ({union}){group_sql}"
    final = tree.copy()
    final.set("where", None)
    final.set("group", None)
    final.set("from_", exp.From(this=exp.to_table("__state")))
    having = final.args.get("having")
    final.set("having", None)

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.AggFunc | exp.Filter) and node.sql(_DIALECT) in finals:
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


def _key_references(tree: exp.Select, expressions: dict[str, str]) -> exp.Select:
    """A copy of `tree` where key expressions outside aggregates (in the select list, HAVING,
    ORDER BY) are references to their state column."""
    tree = tree.copy()
    if not expressions:
        return tree
    found: list[tuple[exp.Expr, str]] = []

    def prune(node: exp.Expr) -> bool:
        if isinstance(node, exp.AggFunc | exp.Filter | exp.Where | exp.Group):
            return True
        name = expressions.get(node.sql(_DIALECT))
        if name is not None and node is not tree:
            found.append((node, name))
            return True
        return False

    for _ in tree.walk(prune=prune):
        pass
    for node, name in found:
        node.replace(exp.column(name, quoted=True))
    return tree


def _only_keys(node: exp.Expr, keys: list[str]) -> bool:
    """Whether every column `node` reads outside aggregates is a group key."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, exp.AggFunc | exp.Filter):
            continue
        if isinstance(current, exp.Column) and current.name not in keys:
            return False
        stack.extend(current.iter_expressions())
    return True


_VARIANCE = {
    exp.Stddev: ("samp", True),
    exp.StddevSamp: ("samp", True),
    exp.StddevPop: ("pop", True),
    exp.Variance: ("samp", False),
    exp.VariancePop: ("pop", False),
}


def _decompose(
    unit: exp.Expr, name: str
) -> tuple[list[str], list[str], exp.Expr, list[str]] | None:
    """Partial select items, combine select items, the final expression and window items
    (`{over}` to fill in) for one aggregate call (with its FILTER clause, if any)."""
    agg, condition = unit, None
    if isinstance(unit, exp.Filter):
        agg, condition = unit.this, unit.expression.this
    if not isinstance(agg, exp.AggFunc) or any(isinstance(n, exp.Distinct) for n in agg.walk()):
        return None
    where = f" FILTER (WHERE {condition.sql(_DIALECT)})" if condition is not None else ""
    col = exp.to_identifier(name, quoted=True).sql(_DIALECT)
    ref = exp.column(name, quoted=True)
    text = unit.sql(_DIALECT)

    def part(suffix: str) -> str:
        return exp.to_identifier(f"{name}_{suffix}", quoted=True).sql(_DIALECT)

    if isinstance(agg, exp.Count):
        return [f"{text} AS {col}"], [f"CAST(SUM({col}) AS BIGINT) AS {col}"], ref, []
    if isinstance(agg, exp.CountIf):
        return [f"{text} AS {col}"], [f"CAST(SUM({col}) AS HUGEINT) AS {col}"], ref, []
    simple = {exp.Sum: "SUM", exp.Min: "MIN", exp.Max: "MAX"}
    simple.update({exp.LogicalAnd: "BOOL_AND", exp.LogicalOr: "BOOL_OR"})
    for kind, fn in simple.items():
        if type(agg) is kind:
            return [f"{text} AS {col}"], [f"{fn}({col}) AS {col}"], ref, []
    if isinstance(agg, exp.Avg):
        arg = agg.this.sql(_DIALECT)
        s, c = part("s"), part("c")
        final: Any = sqlglot.parse_one(
            f"CASE WHEN {c} = 0 THEN NULL ELSE CAST({s} AS DOUBLE) / {c} END", read=_DIALECT
        )
        return (
            [f"SUM({arg}){where} AS {s}", f"COUNT({arg}){where} AS {c}"],
            [f"SUM({s}) AS {s}", f"CAST(SUM({c}) AS BIGINT) AS {c}"],
            final,
            [],
        )
    if type(agg) in _VARIANCE:
        return _variance(agg, where, part, *_VARIANCE[type(agg)])
    if isinstance(agg, exp.ArgMax):
        if agg.args.get("count") is not None or len(agg.expressions or []) > 0:
            return None  # the top-n form keeps several values
        by = agg.expression
        if not (isinstance(by, exp.Column) and by.name == "_offset"):
            return None
        arg = agg.this.sql(_DIALECT)
        o = part("o")
        also = f" AND ({condition.sql(_DIALECT)})" if condition is not None else ""
        # arg_max skips NULL values, so the offset kept is that of the last non-NULL value.
        return (
            [f"{text} AS {col}", f"MAX(_offset) FILTER (WHERE ({arg}) IS NOT NULL{also}) AS {o}"],
            [f"ARG_MAX({col}, {o}) AS {col}", f"MAX({o}) AS {o}"],
            ref,
            [],
        )
    return None


def _variance(
    agg: exp.AggFunc, where: str, part: Any, kind: str, root: bool
) -> tuple[list[str], list[str], exp.Expr, list[str]]:
    """stddev/variance from per-part count n, mean m and sum of squared deviations q, combined
    exactly as Chan et al.: q = sum(q_i + n_i * (m_i - m)^2) with m the combined mean (a window
    over the group), which stays accurate where a raw sum of squares would cancel."""
    x = f"CAST({agg.this.sql(_DIALECT)} AS DOUBLE)"
    n, m, q, g = part("n"), part("m"), part("q"), part("g")
    partial = [
        f"COUNT({x}){where} AS {n}",
        f"AVG({x}){where} AS {m}",
        f"COALESCE(VAR_POP({x}){where} * COUNT({x}){where}, 0) AS {q}",
    ]
    window = [f"SUM({n} * {m}) {{over}} / NULLIF(SUM({n}) {{over}}, 0) AS {g}"]
    combine = [
        f"CAST(SUM({n}) AS BIGINT) AS {n}",
        f"ANY_VALUE({g}) AS {m}",
        f"SUM({q} + CASE WHEN {n} > 0 THEN {n} * ({m} - {g}) * ({m} - {g}) ELSE 0 END) AS {q}",
    ]
    divisor = f"{n}" if kind == "pop" else f"({n} - 1)"
    least = 0 if kind == "pop" else 1
    value = f"CASE WHEN {n} <= {least} THEN NULL ELSE {q} / {divisor} END"
    final = sqlglot.parse_one(f"SQRT({value})" if root else value, read=_DIALECT)
    return partial, combine, final, window
