"""SVG pictures of a `Dag`: boxes per stream, left to right, laid out by `layout.py`.

Each stream is a `<g class="node ...">` with `data-stream` (its name), a `<title>` tooltip with
every fact about it, its name and a second line (kind, fork offset or policy, own records).
Branch edges are solid, merge edges dashed; each is labelled with its fork or pinned offset.
The pictures use no script, font or image from outside: they render offline.
"""

from __future__ import annotations

import hashlib
from html import escape

from .dag import Dag, Edge, Node, short_kind
from .layout import Placement, tree_layout

__all__ = ["SVG_CSS", "render_svg"]

NODE_W = 216
NODE_H = 40
COLUMN = NODE_W + 64
ROW = 52
MARGIN = 12
NAME_CHARS = 26  # what fits in a box at 12 px monospace, beside the status mark

SVG_CSS = """
.ta-lineage{font-family:ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
sans-serif;background:#fff}
.ta-lineage .node rect{fill:#fff;stroke:#5f6368;stroke-width:1.2}
.ta-lineage .node.root rect{fill:#e8f0fe;stroke:#3367d6}
.ta-lineage .node.merge rect{fill:#fef7e0;stroke:#b06000}
.ta-lineage .node.context rect{fill:#f1f3f4;stroke:#9aa0a6;stroke-dasharray:4 3}
.ta-lineage .node.fail rect{fill:#fce8e6;stroke:#c5221f;stroke-width:2}
.ta-lineage .node .name{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",
monospace;fill:#202124}
.ta-lineage .node .sub{font-size:10.5px;fill:#5f6368}
.ta-lineage .node .ok{fill:#188038}.ta-lineage .node .bad{fill:#c5221f}
.ta-lineage .edge{fill:none;stroke:#80868b;stroke-width:1.3}
.ta-lineage .edge.merge{stroke:#b06000;stroke-dasharray:5 3}
.ta-lineage .elabel{font-size:10px;fill:#3c4043;paint-order:stroke;stroke:#fff;stroke-width:3px}
"""


def _label(name: str) -> str:
    """`name`, cut at the start when it is too long for a box (the end tells more)."""
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]


def _uid(graph: Dag) -> str:
    digest = hashlib.sha1("\n".join(graph.nodes).encode(), usedforsecurity=False)
    return "ta" + digest.hexdigest()[:10]


def _node_svg(node: Node, x: float, y: float, status: bool | None) -> str:
    classes = ["node", "context" if node.context else node.kind]
    if status is False:
        classes.append("fail")
    mark = ""
    if status is not None:
        glyph, cls = ("✓", "ok") if status else ("✗", "bad")
        mark = f'<text x="{NODE_W - 7}" y="15" class="{cls}" text-anchor="end">{glyph}</text>'
    return (
        f'<g class="{" ".join(classes)}" data-stream="{escape(node.name)}" '
        f'transform="translate({x:.1f},{y:.1f})"><title>{escape(node.tooltip())}</title>'
        f'<rect width="{NODE_W}" height="{NODE_H}" rx="6"/>'
        f'<text x="8" y="16" class="name">{escape(_label(node.name))}</text>'
        f'<text x="8" y="32" class="sub">{escape(short_kind(node))}</text>{mark}</g>'
    )


def _edge_svg(edge: Edge, place: Placement, home: bool, uid: str) -> str:
    """A curve from the source's right side to the target's left side. A home edge that
    spans several columns curves into the target's row at once and runs straight along it
    (that row is free in the columns between: see layout.py); other edges curve directly."""
    x0 = MARGIN + place.layer[edge.source] * COLUMN + NODE_W
    y0 = MARGIN + place.row[edge.source] * ROW + NODE_H / 2
    x1 = MARGIN + place.layer[edge.target] * COLUMN
    y1 = MARGIN + place.row[edge.target] * ROW + NODE_H / 2
    bend = x0 + COLUMN - NODE_W if home else x1
    dx = (bend - x0) / 2
    path = (
        f"M{x0:.1f},{y0:.1f} C{x0 + dx:.1f},{y0:.1f} {bend - dx:.1f},{y1:.1f} {bend:.1f},{y1:.1f}"
    )
    if bend < x1:
        path += f" L{x1:.1f},{y1:.1f}"
    # The label sits in the gap before the column the curve ends in, where no box is.
    target_x = bend - (COLUMN - NODE_W) / 2
    t = min(
        (i / 40 for i in range(41)),
        key=lambda t: abs(_cubic(x0, x0 + dx, bend - dx, bend, t) - target_x),
    )
    lx, ly = _cubic(x0, x0 + dx, bend - dx, bend, t), _cubic(y0, y0, y1, y1, t) - 3
    return (
        f'<path class="edge {edge.kind}" d="{path}" marker-end="url(#{uid}-arrow)">'
        f"<title>{escape(edge.source)}@{edge.offset} → {escape(edge.target)} ({edge.kind})</title>"
        f'</path><text class="elabel" x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle">'
        f"@{edge.offset}</text>"
    )


def _cubic(a: float, b: float, c: float, d: float, t: float) -> float:
    """One coordinate of a cubic Bézier curve at `t`."""
    u = 1 - t
    return u * u * u * a + 3 * u * u * t * b + 3 * u * t * t * c + t * t * t * d


def render_svg(graph: Dag, *, standalone: bool = True) -> str:
    """The graph as one SVG picture.

    Args:
        graph: what to draw (its `status` colours the nodes: red and ✗ for FAIL, ✓ for OK).
        standalone: an XML document with its own stylesheet (for a .svg file); otherwise an
            inline `<svg>` element for an HTML page that includes `SVG_CSS` once.
    """
    order = graph.creation_order()
    home = graph.home()
    tops = [n for n in graph.nodes if n not in home]  # in name order
    place = tree_layout(tops + [n for n in order if n in home], home, graph.layers())
    uid = _uid(graph)
    width = 2 * MARGIN + max(place.columns - 1, 0) * COLUMN + NODE_W
    height = 2 * MARGIN + max(place.rows - 1, 0) * ROW + NODE_H
    edges = sorted(graph.edges, key=lambda e: home.get(e.target) == e.source)  # home on top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ta-lineage" id="{uid}" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{escape(graph.title)}: {len(graph.nodes)} streams">',
        f"<title>{escape(graph.title)}</title>",
        f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#80868b"/></marker></defs>',
    ]
    if standalone:
        parts.insert(1, f"<style>{SVG_CSS}</style>")
    parts += [_edge_svg(e, place, home.get(e.target) == e.source, uid) for e in edges]
    for name, node in graph.nodes.items():
        x = MARGIN + place.layer[name] * COLUMN
        y = MARGIN + place.row[name] * ROW
        parts.append(_node_svg(node, x, y, graph.status.get(name)))
    parts.append("</svg>")
    body = "\n".join(parts)
    if standalone:
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
    return body
