"""The lineage picture: the DAG built from `Log.lineage()`, selection, layout and exports."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from typing import Any

import pyarrow as pa
import pytest
from evalfixture import EvalLog

import transit_arrow as ta
from transit_arrow.report import LineageGraph, lineage_graph
from transit_arrow.report.dag import natural_key
from transit_arrow.report.layout import tree_layout
from transit_arrow.report.svg import COLUMN, MARGIN, NODE_H, NODE_W, ROW

SVG = "{http://www.w3.org/2000/svg}"


def _svg_nodes(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg.split("?>", 1)[-1])
    return [g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()]


def test_nodes_edges_and_own_records_match_the_data(family: ta.Log) -> None:
    graph = lineage_graph(family)
    assert list(graph.nodes) == ["best", "events", "ff", "pinned", "retry", "retry/2"]
    own = {n.name: (n.own_start, n.own, n.inherited, n.next_offset) for n in graph}
    assert own == {
        "events": (0, 6, 0, 6),
        "retry": (4, 2, 4, 6),
        "retry/2": (5, 1, 5, 6),
        "best": (4, 4, 4, 8),  # concat: events@4..5 and retry@4..5 after the base events@3
        "pinned": (4, 1, 4, 5),  # pin: the base, then the one reconciliation record
        "ff": (6, 0, 6, 6),  # fast_forward: retry/2's whole replay is inherited
    }
    # Own records are exactly the rows whose _stream is the stream (DESIGN §6: inherited
    # rows keep their origin), whatever the policy.
    for node in graph:
        [(count,)] = family.sql(
            f'SELECT count(*) FROM "{node.name}" WHERE _stream = $name', name=node.name
        ).fetchall()
        assert count == node.own, node.name
    edges = {(e.source, e.target, e.kind, e.offset) for e in graph.edges}
    assert edges == {
        ("events", "retry", "branch", 3),
        ("retry", "retry/2", "branch", 4),
        ("events", "best", "merge", 5),
        ("retry", "best", "merge", 5),
        ("events", "pinned", "merge", 5),
        ("retry", "pinned", "merge", 5),
        ("retry", "ff", "merge", 4),
        ("retry/2", "ff", "merge", 5),
    }
    assert graph.nodes["pinned"].winner == "retry"  # recorded in the policy params
    assert graph.nodes["ff"].winner == "retry/2"  # the parent a fast-forward replays
    assert graph.nodes["best"].winner is None


def test_groups_follow_lineage_and_names(family: ta.Log, log: ta.Log) -> None:
    # A merge `best` of `events` belongs to events' group, whatever its name.
    assert lineage_graph(family).groups() == {
        "events": ["best", "events", "ff", "pinned", "retry", "retry/2"]
    }
    groups = lineage_graph(log).groups()
    assert list(groups) == [f"task-{i}" for i in range(10)]  # natural order: 2 before 10
    assert all(all(m.split("/")[0] == g for m in members) for g, members in groups.items())
    assert sorted(["task-10", "task-9", "task-2/a"], key=natural_key) == [
        "task-2/a",
        "task-9",
        "task-10",
    ]


def test_select_a_subtree_or_a_prefix_keeps_parents_as_context(family: ta.Log) -> None:
    sub = lineage_graph(family, stream="retry")
    assert [n.name for n in sub.selected] == ["best", "ff", "pinned", "retry", "retry/2"]
    assert [n.name for n in sub if n.context] == ["events"]
    # Context nodes have no edges of their own: only edges into the selection are drawn.
    assert all(not sub.nodes[e.target].context for e in sub.edges)
    under = lineage_graph(family, prefix="retry")
    assert [n.name for n in under.selected] == ["retry", "retry/2"]
    assert lineage_graph(family, prefix="retry/").nodes.keys() == {"retry/2", "retry"}
    assert [n.name for n in lineage_graph(family, prefix="retry/").selected] == ["retry/2"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stream": "retyr"}, ta.StreamNotFoundError, "did you mean 'retry'"),
        ({"prefix": "nope"}, ta.InvalidInputError, "no stream is 'nope' or under nope/"),
        ({"stream": "retry", "prefix": "retry"}, ta.InvalidInputError, "not both"),
        ({"prefix": "/"}, ta.InvalidInputError, "non-empty"),
        ({"stream": 3}, ta.InvalidInputError, "stream name"),
    ],
)
def test_bad_selections_raise_transit_errors(
    family: ta.Log, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        lineage_graph(family, **kwargs)


def test_from_table_refuses_a_table_that_is_not_lineage() -> None:
    with pytest.raises(ta.InvalidInputError, match="not a lineage table"):
        LineageGraph.from_table(pa.table({"x": [1]}))


def test_layers_and_layout_keep_nodes_apart_and_edges_pointing_right(log: ta.Log) -> None:
    graph = lineage_graph(log)
    layers = graph.layers()
    for edge in graph.edges:
        assert layers[edge.target] > layers[edge.source], edge
    home = graph.home()
    place = tree_layout(list(graph.nodes), home, layers)
    by_column: dict[int, list[float]] = {}
    for name, column in place.layer.items():
        by_column.setdefault(column, []).append(place.row[name])
    for rows in by_column.values():
        rows.sort()
        assert all(b - a >= 1 for a, b in itertools.pairwise(rows)), rows
    # A parent sits between its first and last home child.
    for name in graph.nodes:
        kids = [k for k, parent in home.items() if parent == name]
        if kids:
            rows = [place.row[k] for k in kids]
            assert min(rows) <= place.row[name] <= max(rows)


def test_layout_of_a_deep_chain_does_not_recurse() -> None:
    names = [f"s{i}" for i in range(5000)]
    place = tree_layout(names, {names[i]: names[i - 1] for i in range(1, 5000)}, {})
    assert place.rows == 1 and set(place.row.values()) == {0}


def test_text_tree_lists_each_merge_once_and_stays_narrow(family: ta.Log) -> None:
    assert lineage_graph(family).to_text().splitlines() == [
        "events  root  next=6",
        '├── retry @3  branch  next=6  actor=agent  reason="tool timeout"',
        "│   ├── retry/2 @4  branch  next=6  labels=model=small",
        "│   │   └── ff @5  merge(fast_forward), listed under retry",
        "│   ├── best @5  merge(concat), listed under events",
        "│   ├── pinned @5  merge(pin), listed under events",
        "│   └── ff @4  merge(fast_forward) of retry, retry/2 (base retry@4)  next=6",
        "├── best @5  merge(concat) of events, retry (base events@3)  next=8  actor=judge  "
        'reason="keep both"',
        "└── pinned @5  merge(pin) of events, retry (base events@3)  next=5  "
        'reason="retry scored higher"',
    ]
    # Narrower: entries continue on indented lines, under the tree's glyphs.
    narrow = lineage_graph(family).to_text(width=60).splitlines()
    assert max(len(line) for line in narrow) <= 60
    assert narrow[1:3] == [
        "├── retry @3  branch  next=6  actor=agent",
        '│   │   reason="tool timeout"',
    ]


def test_text_of_a_big_log_is_narrow_and_merges_appear_once(big_eval_log: EvalLog) -> None:
    with ta.open(big_eval_log.path, create=False) as log:
        text = lineage_graph(log).to_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    for merge in big_eval_log.merges:
        full = [line for line in lines if f" {merge} @" in line and "listed under" not in line]
        notes = [line for line in lines if f" {merge} @" in line and "listed under" in line]
        assert len(full) == 1 and len(notes) == 2, merge  # 3 parents: listed once, 2 notes
    assert len(lines) < 2 * len(big_eval_log.streams)


def test_svg_has_one_node_per_stream_and_draws_status(family: ta.Log) -> None:
    graph = lineage_graph(family).with_status({"retry": False, "events": True})
    svg = graph.to_svg()
    nodes = _svg_nodes(svg)  # well-formed XML, or this raises
    assert sorted(n.get("data-stream") or "" for n in nodes) == sorted(graph.nodes)
    classes = {n.get("data-stream"): n.get("class", "").split() for n in nodes}
    assert "fail" in classes["retry"] and "merge" in classes["best"]
    assert "fail" not in classes["events"]
    assert svg.count('class="edge ') == len(graph.edges) == 8
    assert svg.count("edge merge") == 6 and ">@3</text>" in svg
    assert "<style>" in svg and "<style>" not in graph.to_svg(standalone=False)
    root = ET.fromstring(svg.split("?>", 1)[-1])
    # Geometry: 4 columns (events, retry, retry/2 and the merges, ff) and 4 rows (the leaves
    # retry/2, ff, best, pinned).
    assert float(root.get("width") or 0) == 2 * MARGIN + 3 * COLUMN + NODE_W
    assert float(root.get("height") or 0) == 2 * MARGIN + 3 * ROW + NODE_H


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """A lineage-like table (every row gets every column: from_pylist reads the first)."""
    base = {"generation": 0, "root": "ab" * 32, "created_at": "2026-01-01T00:00:00Z"}
    keys = {k for r in rows for k in r}
    return pa.Table.from_pylist([{**base, **dict.fromkeys(keys), **r} for r in rows])


def test_exports_escape_what_they_embed() -> None:
    nasty = '</title><script>alert("x")</script> & <b>'
    table = _table(
        [
            {"name": "a", "kind": "root", "next_offset": 2, "reason": nasty},
            {
                "name": 'b"<c>',
                "kind": "branch",
                "next_offset": 3,
                "parent_stream": "a",
                "parent_offset": 1,
                "actor": nasty,
            },
        ]
    )
    graph = LineageGraph.from_table(table)
    svg = graph.to_svg()
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg.split("?>", 1)[-1])  # still well-formed
    mermaid = graph.to_mermaid()
    assert '"b#quot;#lt;c#gt;<br/>' in mermaid and "<c>" not in mermaid
    dot = graph.to_dot()
    assert '"b\\"<c>" [label=' in dot
    for line in dot.splitlines():  # every quote inside a DOT string is escaped
        assert line.replace("\\\\", "").replace('\\"', "").count('"') % 2 == 0, line
    assert graph.to_text().splitlines()[0] == f"a  root  next=2  reason={json.dumps(nasty)}"


def test_mermaid_dot_and_json_describe_the_same_graph(log: ta.Log) -> None:
    graph = lineage_graph(log, prefix="task-3")
    mermaid = graph.to_mermaid().splitlines()
    assert mermaid[0] == "flowchart LR"
    assert sum(1 for line in mermaid if '["' in line) == len(graph.nodes)
    assert sum(1 for line in mermaid if "-->|" in line) == sum(
        1 for e in graph.edges if e.kind == "branch"
    )
    assert sum(1 for line in mermaid if "-.->|" in line) == sum(
        1 for e in graph.edges if e.kind == "merge"
    )
    dot = graph.to_dot()
    assert dot.startswith('digraph "') and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == len(graph.edges) and dot.count("style=dashed") == 3
    data = json.loads(graph.to_json())
    assert {n["name"] for n in data["nodes"]} == set(graph.nodes)
    assert {n["group"] for n in data["nodes"]} == {"task-3"}
    assert len(data["edges"]) == len(graph.edges)
    best = next(n for n in data["nodes"] if n["name"] == "task-3/best")
    assert best["kind"] == "merge" and len(best["merge_parents"]) == 3
    with pytest.raises(ta.InvalidInputError, match="direction"):
        graph.to_mermaid(direction="sideways")


def test_mermaid_and_dot_cluster_groups(log: ta.Log) -> None:
    graph = lineage_graph(log)
    assert graph.to_mermaid().count("  subgraph ") == 10
    assert graph.to_dot().count("subgraph cluster_") == 10


def test_repr_and_html_display(family: ta.Log, big_eval_log: EvalLog) -> None:
    graph = lineage_graph(family)
    assert repr(graph) == (
        f"<LineageGraph 'lineage of {family.uri}': 6 streams (1 root, 2 branches, 3 merges), "
        "8 edges, 1 group>"
    )
    html = graph._repr_html_()
    assert html.count("<svg") == 1 and html.count('class="node ') == 6
    with ta.open(big_eval_log.path, create=False) as log:
        big = lineage_graph(log)
    html = big._repr_html_()  # above 40 streams: one collapsible picture per task
    assert html.count("<details>") == 50 and html.count("<svg") == 50
    assert html.count('class="node ') == len(big_eval_log.streams)
