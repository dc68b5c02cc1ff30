"""A log holding every kind of replay a scan plan must describe (tests of docs/scan_plan.md).

`main` (root; an int32 `x` widened to int64, a column added later) -> `retry` (branch at main@6,
adds `score`) -> `retry/deeper` (branch at retry@9); `critique` (branch at main@10); merges of
retry and critique with every policy (`m/pin` with its own records, `m/concat`,
`m/interleave`, `m/custom`), a fast-forward `m/ff`, and `m/concat-of-merges` (a concat of the
interleave and concat merges). Segments hold 4 records, so forks fall inside segments;
`retry/deeper` and `main` end with unsealed head records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import transit_arrow as ta

STREAMS = [
    "main",
    "retry",
    "retry/deeper",
    "critique",
    "m/pin",
    "m/ff",
    "m/concat",
    "m/interleave",
    "m/custom",
    "m/concat-of-merges",
]


def rows(n: int, start: int, who: str) -> list[dict[str, Any]]:
    return [{"key": f"k{i % 3}", "x": i, "who": who} for i in range(start, start + n)]


def _keep_odd(base: pa.Table, parents: list[pa.Table]) -> pa.Table:
    """A custom resolver: the parents' records with an odd `x`, in parent order."""
    table = pa.concat_tables(parents, promote_options="permissive")
    return table.filter(pc.equal(pc.bit_wise_and(table["x"], 1), 1))


def build(log: ta.Log) -> None:
    """Every kind of replay (segments of 4 records, so forks fall inside segments)."""
    ta.register_merge_resolver("keep-odd", _keep_odd, version="1")
    main = log.create_stream("main")
    main.append(pa.table({"key": ["a", "b", "c", "d", "e"], "x": pa.array(range(5), pa.int32())}))
    main.flush()
    main.append(rows(9, 5, "main"))  # `who` is new; x widens to int64
    retry = log.branch("retry", at="main@6")
    retry.append([{**r, "score": r["x"] / 10} for r in rows(6, 100, "retry")])
    deeper = retry.branch("retry/deeper", at=9)
    deeper.append(rows(5, 300, "deeper"))
    critique = log.branch("critique", at="main@10")
    critique.append(rows(5, 200, "critique"))
    main.append(rows(3, 20, "main"))
    for s in (main, retry, deeper, critique):
        s.flush()
    log.merge("m/pin", ["retry", "critique"], policy="pin")
    log.merge("m/ff", ["retry/deeper", "retry@9"], policy="fast_forward")
    log.merge("m/concat", ["retry", "critique"], policy="concat")
    log.merge("m/interleave", ["retry", "critique"], policy="interleave")
    log.merge("m/custom", ["retry", "critique"], policy="custom:keep-odd")
    log.merge("m/concat-of-merges", ["m/interleave", "m/concat"], policy="concat")
    log.stream("m/pin").append(rows(2, 500, "reconciled"))
    deeper.append(rows(2, 400, "unsealed"))  # stays in the head (2 < 4 records)
    main.append(rows(1, 30, "unsealed"))


def open_branchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ta.Log]:
    """The log of `build` on a local folder, for a module-scoped fixture (tests must not
    change it)."""
    path: Path = tmp_path_factory.mktemp("replay-kinds") / "log"
    with ta.open(path, segment_max_records=4) as log:
        build(log)
        yield log
