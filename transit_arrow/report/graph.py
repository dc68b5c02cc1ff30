"""The lineage picture: `LineageGraph` (a `Dag` that draws itself) and `lineage_graph(log)`.

In Jupyter a `LineageGraph` displays as SVG (one collapsible picture per task above 40
streams). `to_svg()`, `to_mermaid()`, `to_dot()`, `to_text()` and `to_json()` export it; the
layout is `layout.py`'s, so nothing but Python is needed.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .dag import Dag
from .display import graph_html
from .source import ReportSource
from .svg import render_svg
from .text import render_tree, to_dot, to_mermaid

__all__ = ["LineageGraph", "lineage_graph"]


class LineageGraph(Dag):
    """The lineage DAG of a log, or of a part of it, as a picture.

    Build one with `lineage_graph(log, stream=..., prefix=...)` or
    `LineageGraph.from_table(log.lineage())`; `select(...)`, `group(name)` and `subset(...)`
    return parts of it. Nodes are streams (`nodes`), edges the derivations (`edges`): a
    branch from its parent at the fork offset, a merge from each parent at its pinned offset.
    """

    def _repr_html_(self) -> str:
        return graph_html(self)

    def to_svg(self, *, standalone: bool = True) -> str:
        """The whole graph as one SVG picture (an XML document when `standalone`, else an
        `<svg>` element for a page that includes `svg.SVG_CSS`)."""
        return render_svg(self, standalone=standalone)

    def to_mermaid(self, *, direction: str = "LR") -> str:
        """A Mermaid flowchart: one node per stream, branch edges solid and merge edges dotted,
        each labelled with its offset; one subgraph per group when there are several."""
        return to_mermaid(self, direction=direction)

    def to_dot(self) -> str:
        """A Graphviz DOT digraph, left to right; one cluster per group when there are several;
        every detail of a stream in its node's tooltip."""
        return to_dot(self)

    def to_text(self, *, width: int = 100) -> str:
        """A narrow indented tree: each merge listed once, under its first parent, with a
        note under the others (see `text.render_tree`)."""
        return render_tree(self, width=width)


def lineage_graph(
    log: ReportSource, *, stream: str | None = None, prefix: str | None = None
) -> LineageGraph:
    """The lineage DAG of `log`: all of it, the subtree of `stream` (it and everything derived
    from it), or the streams under `prefix` (`prefix` itself and `prefix/...`); the parents
    they derive from outside the selection are kept as context nodes.

    Raises:
        StreamNotFoundError: `stream` does not exist.
        InvalidInputError: both `stream` and `prefix`, or no stream under `prefix`.
    """
    if stream is not None and prefix is not None:
        raise InvalidInputError("pass stream or prefix, not both")
    if stream is not None and not isinstance(stream, str):
        raise InvalidInputError(f"stream must be a stream name, not {stream!r}")
    graph = LineageGraph.from_table(log.lineage(), title=f"lineage of {log.uri}")
    if stream is not None:
        return graph.select(streams=[stream])
    return graph.select(prefix=prefix)
