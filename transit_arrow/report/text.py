"""Text exports of a lineage DAG: a narrow tree, Mermaid and Graphviz DOT."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Callable

from ..errors import InvalidInputError
from .dag import Dag, Node, natural_key, short_kind

__all__ = ["render_tree", "to_dot", "to_mermaid"]


def to_mermaid(graph: Dag, *, direction: str = "LR") -> str:
    """A Mermaid flowchart: one node per stream, branch edges solid and labelled with the
    fork offset, merge edges dotted and labelled with the pinned offset; one subgraph per
    group when there are several."""
    if direction not in ("LR", "TB", "TD", "RL", "BT"):
        raise InvalidInputError(f"direction must be LR, TB, RL or BT, not {direction!r}")
    ids = {name: f"n{i}" for i, name in enumerate(graph.nodes)}

    def node_line(node: Node, indent: str) -> str:
        label = f"{_mermaid_text(node.name)}<br/>{_mermaid_text(short_kind(node))}"
        klass = "fail" if graph.status.get(node.name) is False else _css_class(node)
        return f'{indent}{ids[node.name]}["{label}"]:::{klass}'

    lines = [f"flowchart {direction}"]
    lines += _node_blocks(
        graph,
        node_line,
        lambda i, g, members: [f'  subgraph g_{ids[members[0]]}["{_mermaid_text(g)}"]'],
        "  end",
    )
    for e in graph.edges:
        arrow = "-->" if e.kind == "branch" else "-.->"
        lines.append(f'  {ids[e.source]} {arrow}|"@{e.offset}"| {ids[e.target]}')
    lines += [
        "  classDef root fill:#e8f0fe,stroke:#3367d6",
        "  classDef branch fill:#fff,stroke:#5f6368",
        "  classDef merge fill:#fef7e0,stroke:#b06000",
        "  classDef context fill:#f1f3f4,stroke:#9aa0a6,stroke-dasharray:3 3",
        "  classDef fail fill:#fce8e6,stroke:#c5221f,stroke-width:2px",
    ]
    return "\n".join(lines) + "\n"


def to_dot(graph: Dag) -> str:
    """A Graphviz DOT digraph (left to right; one cluster per group when there are
    several; full details in each node's tooltip)."""
    lines = [
        f"digraph {_dot_id(graph.title)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]

    def node_line(node: Node, indent: str) -> str:
        fill, color = _DOT_COLORS["fail" if graph.status.get(node.name) is False else node.kind]
        style = "rounded,filled,dashed" if node.context else "rounded,filled"
        label = _dot_id(f"{node.name}\n{short_kind(node)}")
        return (
            f"{indent}{_dot_id(node.name)} [label={label}, tooltip={_dot_id(node.tooltip())}, "
            f'fillcolor="{fill}", color="{color}", style="{style}"];'
        )

    lines += _node_blocks(
        graph,
        node_line,
        lambda i, g, members: [
            f"  subgraph cluster_{i} {{",
            f'    label={_dot_id(g)}; style="rounded"; color="#dadce0";',
        ],
        "  }",
    )
    for e in graph.edges:
        style = "" if e.kind == "branch" else ', style=dashed, color="#b06000"'
        lines.append(f'  {_dot_id(e.source)} -> {_dot_id(e.target)} [label="@{e.offset}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_blocks(
    graph: Dag,
    node_line: Callable[[Node, str], str],
    opening: Callable[[int, str, list[str]], list[str]],
    closing: str,
) -> list[str]:
    """The node lines of a Mermaid or DOT graph: inside one block per group (`opening(i,
    group, members)` ... `closing`) when there are several groups; context nodes outside."""
    groups = graph.groups()
    lines: list[str] = []
    placed: set[str] = set()
    if len(groups) > 1:
        for i, (group, members) in enumerate(groups.items()):
            lines += opening(i, group, members)
            lines += [node_line(graph.nodes[m], "    ") for m in members]
            lines.append(closing)
            placed.update(members)
    return lines + [node_line(n, "  ") for n in graph.nodes.values() if n.name not in placed]


_DOT_COLORS = {
    "root": ("#e8f0fe", "#3367d6"),
    "branch": ("#ffffff", "#5f6368"),
    "merge": ("#fef7e0", "#b06000"),
    "fail": ("#fce8e6", "#c5221f"),
}


def _css_class(node: Node) -> str:
    return "context" if node.context else node.kind


def _mermaid_text(text: str) -> str:
    """`text` inside a quoted Mermaid label (entity codes for the characters it parses)."""
    for char, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def _dot_id(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# --- the text tree ----------------------------------------------------------------------------


def _pack(tokens: list[str], first: str, rest: str, width: int) -> list[str]:
    """Greedily pack `tokens` (joined by two spaces) into lines starting with `first` (the
    first line) or `rest`, each at most `width` wide where possible (a token wider than a line
    is wrapped at spaces)."""
    lines: list[str] = []
    current = first
    fresh = True
    for token in tokens:
        room = width - len(current) - (0 if fresh else 2)
        if len(token) <= room:
            current += token if fresh else "  " + token
            fresh = False
            continue
        if not fresh:
            lines.append(current)
            current, fresh = rest, True
        pieces = textwrap.wrap(token, max(20, width - len(rest))) or [token]
        for piece in pieces[:-1]:
            lines.append(current + piece)
            current = rest
        current += pieces[-1]
        fresh = False
    lines.append(current)
    return lines


def _tree_tokens(node: Node, at: int | None, top: bool) -> list[str]:
    """The tokens of a node's tree entry: name (with `@N` under a parent), kind, details."""
    name = node.name if at is None else f"{node.name} @{at}"
    if node.kind == "merge":
        kind = [f"merge({node.policy}) of " + ", ".join(p.stream for p in node.merge_parents)]
        if node.base is not None:
            kind[0] += f" (base {node.base})"
    elif top and node.kind == "branch":
        kind = [node.kind_text()]
    else:
        kind = [node.kind]
    return [name, *kind, *node.details()]


def render_tree(graph: Dag, *, width: int = 100) -> str:
    """The selected streams as an indented tree, at most `width` columns where possible.

    Top-level entries are the streams whose parent is not shown (roots, in name order; a
    branch or merge of a stream outside the selection says what it derives from). A branch is
    under its parent with `@N`, its fork offset. A merge is listed once, in full, under its
    first shown parent (`@N`: that parent's pinned offset), with its own branches; under each
    of its other parents a one-line note says where it is listed. Children are in creation
    order. Long entries continue on indented lines instead of growing wide.
    """
    selected = graph.subset([n.name for n in graph.selected], context=False)
    home = selected.home()
    children: dict[str, list[tuple[Node, int]]] = defaultdict(list)
    tops: list[Node] = []
    for name in selected.creation_order():
        node = selected.nodes[name]
        if name not in home:
            tops.append(node)
        for p in node.refs:
            if p.stream in selected.nodes:
                children[p.stream].append((node, p.offset))

    lines: list[str] = []

    def walk(name: str, prefix: str, path: frozenset[str]) -> None:
        items = children.get(name, [])
        for i, (node, at) in enumerate(items):
            last = i == len(items) - 1
            glyph, more = ("└── ", "    ") if last else ("├── ", "│   ")
            if home[node.name] != name or node.name in path:
                note = f"{node.name} @{at}  merge({node.policy}), listed under {home[node.name]}"
                lines.extend(_pack([note], prefix + glyph, prefix + more + "  ", width))
                continue
            below = "│   " if children.get(node.name) else "    "
            tokens = _tree_tokens(node, at, top=False)
            lines.extend(_pack(tokens, prefix + glyph, prefix + more + below, width))
            walk(node.name, prefix + more, path | {node.name})

    for node in sorted(tops, key=lambda n: natural_key(n.name)):
        below = "│   " if children.get(node.name) else "    "
        lines.extend(_pack(_tree_tokens(node, None, top=True), "", below, width))
        walk(node.name, "", frozenset({node.name}))
    return "\n".join(lines)
