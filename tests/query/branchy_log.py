"""A log with every kind of replay the query layer must reproduce.

`main` (root) -> `retry` (branch at main@9) -> `retry/deep.er-1` (branch at retry@12, with
unsealed records), `critique` (branch at main@14), `merged/concat` and `merged.interleave`
(merges of retry and critique). `main` starts with an int32 column `x` that later widens to
int64; `retry` adds a column `score`. Segments hold 4 records, so forks fall inside segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

import transit_arrow as ta

STREAMS = ["critique", "main", "merged.interleave", "merged/concat", "retry", "retry/deep.er-1"]
TOOLS = ["search", "python", "browser"]


@dataclass
class Branchy:
    """The log, and generations / times recorded while building it."""

    log: ta.Log
    early_generation: int  # a generation of main with fewer records than now
    early_records: int
    between: str  # an ISO time after main's early generation, before the branches existed


def rows(n: int, start: int, who: str) -> list[dict[str, object]]:
    return [
        {"key": f"k{i % 4}", "x": i, "tool": TOOLS[i % 3], "who": who}
        for i in range(start, start + n)
    ]


def build(log: ta.Log) -> Branchy:
    import time
    from datetime import UTC, datetime

    main = log.create_stream("main", metadata={"actor": "alice", "reason": "the task"})
    first = pa.table(
        {
            "key": [f"k{i % 4}" for i in range(6)],
            "x": pa.array(range(6), pa.int32()),
            "tool": [TOOLS[i % 3] for i in range(6)],
            "who": ["main"] * 6,
        }
    )
    main.append(first)
    early = main.flush()
    early_records = main.next_offset
    time.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    main.append(pa.Table.from_pylist(rows(14, 6, "main")))  # x int64: the schema widens
    retry = log.branch("retry", at="main@9", actor="agent-1", reason="retry step 10")
    retry.append([{**r, "score": r["x"] / 10} for r in rows(6, 100, "retry")])
    critique = log.branch("critique", at="main@14", actor="agent-2", reason="critique")
    critique.append(rows(5, 200, "critique"))
    deep = retry.branch("retry/deep.er-1", at=12, actor="agent-3", reason="deeper")
    deep.append(rows(3, 300, "deep"))
    deep.flush()
    main.append(rows(3, 20, "main"))
    main.flush()
    log.merge(
        "merged/concat", ["retry", "critique"], policy="concat", actor="judge", reason="combine"
    )
    log.merge("merged.interleave", ["retry", "critique"], policy="interleave", reason="weave")
    deep.append(rows(2, 400, "deep-unsealed"))  # stays in the head: 2 < 4 records
    return Branchy(log, early, early_records, between)
