"""The incremental forms eval users write stay incremental and equal a DuckDB full recompute.

`count(*) FILTER (WHERE ...)`, `count_if`, `sum/avg(CASE ...)`, `stddev`/`variance` (sample
and population, with and without FILTER), `GROUP BY` over expressions (and ordinals, `GROUP BY
ALL`): for each form, a Hypothesis property splits random records into random chunks, folds them
through the plan's partial / combine / final queries exactly as a refresh does, and compares
with DuckDB running the query over all the records at once. An end-to-end test runs the same
forms through `Log.materialize` refreshes on a stream and a branch.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transit_arrow as ta
from transit_arrow.materialize.plan import SqlPlan, plan_sql

SCHEMA = pa.schema(
    [
        ("_offset", pa.int64()),
        ("model", pa.string()),
        ("passed", pa.bool_()),
        ("score", pa.float64()),
        ("tokens", pa.int64()),
    ]
)

#: name -> query; every one must plan as "aggregate".
FORMS: dict[str, str] = {
    "count_filter": (
        "SELECT model, count(*) FILTER (WHERE passed) AS passed_n, count(*) AS n "
        "FROM records GROUP BY model"
    ),
    "count_if": "SELECT model, count_if(passed) AS c, count_if(score > 0.5) AS hi FROM records "
    "GROUP BY model",
    "sum_avg_case": (
        "SELECT model, sum(CASE WHEN passed THEN 1 ELSE 0 END) AS wins, "
        "avg(CASE WHEN passed THEN 1.0 ELSE 0.0 END) AS win_rate, "
        "sum(CASE WHEN score > 0.5 THEN tokens END) AS hi_tokens FROM records GROUP BY model"
    ),
    "filters_everywhere": (
        "SELECT model, sum(tokens) FILTER (WHERE passed) AS s, avg(score) FILTER (WHERE NOT "
        "passed) AS a, min(score) FILTER (WHERE tokens > 0) AS lo, max(tokens) FILTER (WHERE "
        "passed) AS hi, arg_max(score, _offset) FILTER (WHERE passed) AS last_ok, "
        "bool_or(score > 0.9) FILTER (WHERE tokens < 0) AS b FROM records GROUP BY model"
    ),
    "variance": (
        "SELECT model, stddev(score) AS sd, stddev_samp(score) AS sds, stddev_pop(score) AS sdp, "
        "variance(score) AS v, var_samp(tokens) AS vs, var_pop(tokens) AS vp FROM records "
        "GROUP BY model"
    ),
    "variance_filtered": (
        "SELECT model, stddev(score) FILTER (WHERE passed) AS sd, var_pop(tokens) FILTER "
        "(WHERE score > 0.3) AS vp FROM records GROUP BY model"
    ),
    "variance_no_group": "SELECT stddev_pop(score), var_samp(score), count(*) FROM records",
    "group_expression": (
        "SELECT lower(model) AS m, score > 0.5 AS high, count(*) AS n, avg(tokens) AS t "
        "FROM records WHERE tokens <> 3 GROUP BY lower(model), score > 0.5 "
        "HAVING count(*) > 1 ORDER BY m NULLS FIRST, high NULLS FIRST"
    ),
    "group_ordinal": (
        "SELECT coalesce(model, 'none') || '!' AS m, count_if(passed) AS c FROM records GROUP BY 1"
    ),
    "group_all": (
        "SELECT tokens % 3 AS bucket, model, count(*) FILTER (WHERE passed) AS n, "
        "stddev(score) AS sd FROM records GROUP BY ALL"
    ),
    "expression_over_key": (
        "SELECT upper(lower(model)) AS u, sum(tokens) AS s FROM records GROUP BY lower(model)"
    ),
}
ORDERED = {"group_expression"}

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["gpt", "GPT", "claude", "llama", None]),
            "passed": st.one_of(st.none(), st.booleans()),
            "score": st.one_of(
                st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.just(0.5)
            ),
            "tokens": st.one_of(st.none(), st.integers(min_value=-1000, max_value=1000)),
        }
    ),
    max_size=60,
)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    data = [{"_offset": i, **r} for i, r in enumerate(rows)]
    return pa.Table.from_pylist(data, schema=SCHEMA)


def _fold(plan: SqlPlan, query: str, table: pa.Table, cuts: list[int]) -> pa.Table:
    """What refreshes after each cut compute (as `materialize.core` runs the plan)."""
    state: pa.Table | None = None
    bounds = sorted({0, *(c for c in cuts if 0 < c < table.num_rows), table.num_rows})
    for a, b in itertools.pairwise(bounds):
        con = duckdb.connect()
        con.register("records", table.slice(a, b - a))
        new = con.sql(plan.partial_sql).to_arrow_table()
        if state is not None:
            order = new.column_names
            con.register("__state", state)
            con.register("__new", new)
            new = con.sql(plan.combine_sql).to_arrow_table()
            new = new.select([*order, *[c for c in new.column_names if c not in order]])
        state = new
        con.close()
    if state is None:  # no records at all: one refresh over nothing
        con = duckdb.connect()
        con.register("records", table)
        state = con.sql(plan.partial_sql).to_arrow_table()
        con.close()
    con = duckdb.connect()
    con.register("__state", state)
    out = con.sql(plan.final_sql).to_arrow_table()
    con.register("records", table.schema.empty_table())
    names = list(con.sql(query).columns)
    con.close()
    return out.rename_columns(names)


def _full(query: str, table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("records", table)
    out = con.sql(query).to_arrow_table()
    con.close()
    return out


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6 * max(1.0, abs(a), abs(b)) ** 0.5)
    return bool(a == b)


def assert_same(got: pa.Table, expected: pa.Table, ordered: bool) -> None:
    assert got.column_names == expected.column_names
    assert [f.type for f in got.schema] == [f.type for f in expected.schema]
    a, b = got.to_pylist(), expected.to_pylist()
    if not ordered:
        key = lambda r: [(v is None, str(v)) for v in r.values()]  # noqa: E731
        a, b = sorted(a, key=key), sorted(b, key=key)
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b, strict=True):
        assert all(_close(x[k], y[k]) for k in x), (x, y)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_is_planned_incrementally(form: str) -> None:
    plan = plan_sql(FORMS[form])
    assert plan.mode == "aggregate", plan.reason


@pytest.mark.parametrize("form", sorted(FORMS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=4))
def test_each_form_equals_a_full_recompute(
    form: str, rows: list[dict[str, Any]], cuts: list[int]
) -> None:
    query = FORMS[form]
    table = _table(rows)
    got = _fold(plan_sql(query), query, table, cuts)
    assert_same(got, _full(query, table), ordered=form in ORDERED)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("SELECT lower(model) AS m, count(*) FROM records GROUP BY m", "alias"),
        (
            "SELECT model, count(*) FILTER (WHERE passed) FROM records GROUP BY lower(model)",
            "outside",
        ),
        ("SELECT count(*) FROM records GROUP BY 3", "not a select item"),
        ("SELECT model, stddev(DISTINCT score) FROM records GROUP BY model", "decomposable"),
        ("SELECT model, count(*) FROM records GROUP BY ROLLUP (model)", "ROLLUP"),
    ],
)
def test_what_stays_a_full_recompute_says_why(query: str, why: str) -> None:
    plan = plan_sql(query)
    assert plan.mode == "full" and why in plan.reason, plan.reason


def test_plain_column_plans_keep_their_state_layout() -> None:
    """Existing definitions resume from their stored state: its columns must not change."""
    plan = plan_sql("SELECT g, count(*) AS n, avg(x) AS a FROM records GROUP BY g")
    assert plan.keys == ["g"]
    con = duckdb.connect()
    con.register("records", pa.table({"g": ["a"], "x": [1.0]}))
    assert con.sql(plan.partial_sql).columns == ["g", "__p0", "__p1_s", "__p1_c"]


def test_forms_through_refreshes_on_a_stream_and_a_branch(tmp_path: Path) -> None:
    data = [
        {
            "model": ["gpt", "GPT", "claude", None][i % 4],
            "passed": (None if i % 11 == 0 else i % 3 == 0),
            "score": (i * 37 % 101) / 100,
            "tokens": i % 17 - 5,
        }
        for i in range(400)
    ]
    schema = pa.schema([f for f in SCHEMA if f.name != "_offset"])
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append(pa.Table.from_pylist(data[:100], schema=schema))
        views = {name: log.materialize(name, "s", query=q) for name, q in FORMS.items()}
        for chunk in range(1, 4):
            for view in views.values():
                report = view.refresh()
                assert report.incremental and report.mode == "aggregate", report.reason
            s.append(pa.Table.from_pylist(data[chunk * 100 : (chunk + 1) * 100], schema=schema))
        log.branch("b", at="s@250")
        log.stream("b").append(pa.Table.from_pylist(data[:30], schema=schema))
        for branch in ("s", "b"):
            records = log.stream(branch).read()
            for name, view in views.items():
                report = view.refresh(branch=branch)
                assert report.incremental
                if branch == "b":
                    assert report.reused_checkpoint is not None  # resumed from s@<=250
                assert_same(view.read(branch), _full(FORMS[name], records), name in ORDERED)
