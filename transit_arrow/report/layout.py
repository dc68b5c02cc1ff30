"""A small layered layout for lineage DAGs (left to right).

Lineage graphs are nearly trees: every branch has one parent, and a merge has several parents
of which one, its first, is its *home* (the text tree lists it there too). So the layout is a
tidy tree over the home edges, with layers from the whole DAG:

- **layer** (column) = longest path from a node without a drawn parent, so every edge, merge
  edges included, points right;
- **row**: leaves of the home tree get consecutive rows in depth-first order (children in
  creation order), and a parent sits halfway between its first and last child. Subtrees so
  occupy disjoint row ranges, which keeps nodes of one column at least one row apart and
  makes the home edges cross nothing; only the extra edges of merges cross the picture.

Why not a library: see docs/report.md ("Layout").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Placement", "tree_layout"]


@dataclass(frozen=True)
class Placement:
    """Where each node goes: a column (`layer`) and a row (may be a half row)."""

    layer: dict[str, int]
    row: dict[str, float]

    @property
    def columns(self) -> int:
        """How many columns the picture has."""
        return 1 + max(self.layer.values(), default=-1)

    @property
    def rows(self) -> float:
        """How many rows it spans."""
        return 1 + max(self.row.values(), default=-1.0)


def tree_layout(
    names: Sequence[str], home: Mapping[str, str], layer: Mapping[str, int]
) -> Placement:
    """Place `names` (tops first in the order given, children in the order given).

    Args:
        names: every node, in the order children should appear under their home parent and
            tops from the top of the picture down.
        home: each node's home parent (absent for tops); must form a forest over `names`.
        layer: each node's column, greater than its home parent's.
    """
    children: dict[str, list[str]] = defaultdict(list)
    known = set(names)
    for name in names:
        parent = home.get(name)
        if parent is not None and parent in known and parent != name:
            children[parent].append(name)
    row: dict[str, float] = {}
    visiting: set[str] = set()
    next_row = 0

    def place(top: str) -> None:
        # Iterative post-order: a deep lineage must not hit the recursion limit.
        nonlocal next_row
        visiting.add(top)
        stack = [(top, iter(children.get(top, [])))]
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is not None:
                if child not in visiting:  # a forest has no repeats; guard anyway
                    visiting.add(child)
                    stack.append((child, iter(children.get(child, []))))
                continue
            stack.pop()
            kids = [k for k in children.get(node, []) if k in row]
            if kids:
                row[node] = (row[kids[0]] + row[kids[-1]]) / 2
            else:
                row[node] = next_row
                next_row += 1

    for name in names:
        if home.get(name) not in known or home.get(name) == name:
            place(name)
    for name in names:  # what a cycle left unplaced (a lineage has none): its own row
        if name not in visiting:
            place(name)
    return Placement(layer={n: layer.get(n, 0) for n in names}, row=row)
