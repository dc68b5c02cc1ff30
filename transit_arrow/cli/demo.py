"""`transit demo`: the tour a newcomer runs, end to end, on realistic AI-agent trace events.

It appends in batches and as single records, seals several segments, reopens the log, reads
everything back, checks it against what was written and summarizes it per tool.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IntegrityError, StreamNotFoundError
from ..log import Log
from ..log import open as open_log
from ..record import SYSTEM_COLUMNS
from ..storage import ObjectStore
from ..stream import Stream
from .render import human_bytes, plural, text_table

__all__ = ["DEFAULT_RECORDS", "STREAM", "DemoReport", "format_report", "run_demo", "trace_events"]

DEFAULT_RECORDS = 200_000
STREAM = "agent-traces"
_BATCH = 10_000
_MAX_SINGLES = 100
_SEGMENTS = 4  # aim for about this many size-triggered seals per run

_ROLES = ("user", "assistant", "tool")
_TOOLS = ("search", "python", "browser", "sql", "shell", "calculator")
_TOOL_WEIGHTS = (0.30, 0.25, 0.15, 0.12, 0.10, 0.08)
_TOOL_LATENCY_MS = (350.0, 900.0, 2200.0, 180.0, 600.0, 15.0)
_TOOL_FAILURE = (0.04, 0.12, 0.18, 0.07, 0.10, 0.01)
_VOCABULARY = (
    "the agent checks retrieved documents against the user question before answering "
    "quarterly revenue table migration schema index latency regression benchmark dataset "
    "summary citation source query result error retry timeout parse json response token "
    "budget plan step tool call output verify compare branch merge evaluator critique "
    "draft final answer confidence because however therefore next then first finally"
)
_WORDS = tuple(_VOCABULARY.split())


@dataclasses.dataclass(frozen=True)
class DemoReport:
    """What one `transit demo` run did (all counts are for this run unless named total)."""

    uri: str
    directory: str
    stream: str
    created_stream: bool
    records: int
    batches: int
    single_appends: int
    first_offset: int
    last_offset: int
    total_records: int
    segments_sealed: int
    total_segments: int
    commits: int
    generation: int
    bytes_on_disk: int
    segment_bytes: int
    seconds: float
    per_tool: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _sentences(rng: np.random.Generator, count: int) -> list[str]:
    """`count` pseudo-sentences of 200-300 characters."""
    out = []
    for _ in range(count):
        target = int(rng.integers(200, 301))
        words: list[str] = []
        length = 0
        while length < target:
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            words.append(word)
            length += len(word) + 1
        out.append(" ".join(words)[:target])
    return out


def trace_events(n: int, *, first_task: int = 0, seed: int = 0) -> pa.Table:
    """`n` synthetic AI-agent trace events: tasks of 4-30 steps by a user, an assistant, tools.

    Args:
        n: how many events.
        first_task: number of the first task (task ids are `task-<number>`).
        seed: random seed (the same seed gives the same events).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 31, size=n // 4 + 1)
    starts = np.cumsum(lengths) - lengths
    task = np.repeat(np.arange(len(lengths)), lengths)[:n]
    step = np.arange(n) - starts[task]
    role = np.where(step == 0, 0, rng.choice([1, 2], size=n, p=[0.45, 0.55]))
    is_tool = role == 2
    tool = rng.choice(len(_TOOLS), size=n, p=_TOOL_WEIGHTS)
    noise = rng.lognormal(0.0, 0.6, size=n)
    latency = np.where(is_tool, np.take(_TOOL_LATENCY_MS, tool), 800.0) * noise
    latency = np.where(role == 0, 0.0, np.round(latency, 1))
    tokens = np.where(is_tool, rng.integers(20, 800, n), rng.integers(40, 1500, n))
    ok = ~is_tool | (rng.random(n) >= np.take(_TOOL_FAILURE, tool))
    roles = pa.array(_ROLES).take(role)
    tools = pa.array(_TOOLS).take(pa.array(tool, pa.int64(), mask=~is_tool))
    pool = pa.array(_sentences(rng, 512))
    speaker = pc.if_else(pa.array(is_tool), tools, roles)
    text = pc.binary_join_element_wise(speaker, pool.take(rng.integers(len(pool), size=n)), ": ")
    number = pc.utf8_lpad(pc.cast(pa.array(task + first_task), pa.string()), 7, "0")
    return pa.table(
        {
            "task_id": pc.utf8_replace_slice(number, 0, 0, "task-"),
            "step": pa.array(step, pa.int64()),
            "role": roles,
            "tool": tools,
            "latency_ms": pa.array(latency, pa.float64()),
            "tokens": pa.array(tokens, pa.int64()),
            "ok": pa.array(ok, pa.bool_()),
            "text": text,
        }
    )


def _stream(log: Log) -> tuple[Stream, bool]:
    try:
        return log.stream(STREAM), False
    except StreamNotFoundError:
        metadata = {"actor": "transit demo", "reason": "synthetic AI-agent trace events"}
        return log.create_stream(STREAM, metadata=metadata), True


def _folder_bytes(directory: Path) -> tuple[int, int]:
    """Total bytes of the files under `directory`, and of its Parquet segments."""
    total = parquet = 0
    for folder, _, files in os.walk(directory):
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            total += size
            parquet += size if name.endswith(".parquet") else 0
    return total, parquet


def _store_bytes(store: ObjectStore, prefix: str = "") -> tuple[int, int]:
    """Total bytes of the objects of a (remote) store under `prefix`, and of its segments."""
    total = parquet = 0
    for entry in store.list(prefix):
        path = f"{prefix}/{entry}" if prefix else entry
        if entry.endswith("/"):
            sub_total, sub_parquet = _store_bytes(store, path.rstrip("/"))
            total += sub_total
            parquet += sub_parquet
            continue
        size = store.head(path).size
        total += size
        parquet += size if entry.endswith(".parquet") else 0
    return total, parquet


def _verify(table: pa.Table, written: pa.Table, first: int, total: int, commits: pa.Table) -> None:
    """Raise `IntegrityError` unless the read-back records are exactly the written ones."""
    n = written.num_rows
    if table.num_rows != n or total != first + n:
        raise IntegrityError(
            f"demo read back {table.num_rows} records from offset {first} (stream holds {total})"
            f"; it appended {n}"
        )
    offsets = table.column("_offset").to_numpy()
    if not np.array_equal(offsets, np.arange(first, first + n)):
        raise IntegrityError(f"demo offsets are not dense from {first} to {first + n - 1}")
    user = table.drop_columns(list(SYSTEM_COLUMNS))
    if not user.equals(written):
        raise IntegrityError("demo records read back differ from the records appended")
    roots = commits.column("root").to_pylist()
    prev = commits.column("prev_root").to_pylist()
    if prev[0] is not None or prev[1:] != roots[:-1]:
        raise IntegrityError("demo stream's commit log is not one hash chain")


def _per_tool(table: pa.Table) -> list[dict[str, Any]]:
    calls = table.filter(pc.is_valid(table.column("tool")))
    stats = calls.group_by("tool").aggregate(
        [
            ("tool", "count"),
            ("ok", "mean"),
            ("latency_ms", "mean"),
            ("latency_ms", "tdigest", pc.TDigestOptions(q=0.95)),
            ("tokens", "sum"),
        ]
    )
    rows = []
    for row in stats.sort_by([("tool_count", "descending")]).to_pylist():
        rows.append(
            {
                "tool": row["tool"],
                "calls": row["tool_count"],
                "ok_rate": round(row["ok_mean"], 3),
                "mean_latency_ms": round(row["latency_ms_mean"], 1),
                "p95_latency_ms": round(row["latency_ms_tdigest"][0], 1),
                "tokens": row["tokens_sum"],
            }
        )
    return rows


def run_demo(
    directory: str | Path,
    records: int,
    *,
    progress: Callable[[int], object] | None = None,
    storage_options: dict[str, Any] | None = None,
    local_dir: str | Path | None = None,
) -> DemoReport:
    """Append `records` trace events to the demo stream of the log at `directory`, then verify.

    The log is created when `directory` is missing or empty; running again appends more.

    Args:
        directory: the log's folder, or any URI `transit_arrow.open` takes.
        records: how many events to append (the last ones one `append(dict)` call each).
        progress: called with the number of records after each append.
        storage_options: passed to `transit_arrow.open` (for a remote log).
        local_dir: passed to `transit_arrow.open`.

    Raises:
        NotALogError: `directory` is neither empty nor a log.
        IntegrityError: what was read back differs from what was appended.
    """
    started = time.perf_counter()
    singles = min(_MAX_SINGLES, records // 10)
    bulk = records - singles
    # Small segments, so that even a short run seals several of them.
    segment_max_records = max(1, bulk // _SEGMENTS)
    batch = min(_BATCH, segment_max_records)
    options: dict[str, Any] = {"storage_options": storage_options, "local_dir": local_dir}
    with open_log(directory, segment_max_records=segment_max_records, **options) as log:
        stream, created = _stream(log)
        first = stream.next_offset
        generation_before = -1 if created else stream.generation
        events = trace_events(records, first_task=first, seed=first)
        batches = 0
        for start in range(0, bulk, batch):
            part = events.slice(start, min(batch, bulk - start))
            stream.append(part)
            batches += 1
            if progress is not None:
                progress(part.num_rows)
        for row in events.slice(bulk).to_pylist():
            stream.append(row)
            if progress is not None:
                progress(1)
        stream.flush()
    # Read back through a fresh handle: what is verified is what is on disk.
    with open_log(directory, create=False, **options) as log:
        stream = log.stream(STREAM)
        table = stream.read(start=first)
        commits = stream.commits()
        total = stream.next_offset
        total_segments = log.streams().filter(pc.field("name") == STREAM)["segments"][0].as_py()
        root = log.store.local_path("")
        if root is not None:
            on_disk, segment_bytes = _folder_bytes(Path(root))
        else:
            on_disk, segment_bytes = _store_bytes(log.store)
    _verify(table, events, first, total, commits)
    new = commits.filter(pc.field("generation") > generation_before)
    sealed = sum("add_segment" in (actions or []) for actions in new.column("actions").to_pylist())
    return DemoReport(
        uri=log.uri,
        directory=str(directory),
        stream=STREAM,
        created_stream=created,
        records=records,
        batches=batches,
        single_appends=singles,
        first_offset=first,
        last_offset=first + records - 1,
        total_records=total,
        segments_sealed=sealed,
        total_segments=total_segments,
        commits=new.num_rows,
        generation=commits.column("generation")[-1].as_py(),
        bytes_on_disk=on_disk,
        segment_bytes=segment_bytes,
        seconds=round(time.perf_counter() - started, 3),
        per_tool=_per_tool(table),
    )


def format_report(r: DemoReport) -> str:
    """A short human-readable account of a demo run."""
    rate = r.records / r.seconds if r.seconds else 0.0
    local = r.uri.startswith("file://")
    stream_note = "created" if r.created_stream else "existing"
    lines = [
        f"transit demo: {r.uri}",
        f"  appended   {plural(r.records, 'AI-agent trace event')} to {stream_note} stream "
        f"{r.stream!r}",
        f"             {plural(r.batches, 'batch append')} + "
        f"{plural(r.single_appends, 'single-record append')}, "
        f"offsets {r.first_offset:,}..{r.last_offset:,}",
        f"  sealed     {plural(r.segments_sealed, 'Parquet segment')} in "
        f"{plural(r.commits, 'commit')} (stream: {plural(r.total_segments, 'segment')}, "
        f"{plural(r.total_records, 'record')}, generation {r.generation})",
        f"  verified   read back {plural(r.records, 'record')} through a fresh handle: same "
        "values, dense offsets, commit roots chained",
        f"  {'on disk' if local else 'stored':<10} {human_bytes(r.bytes_on_disk)} "
        f"({human_bytes(r.segment_bytes)} in segments)",
        f"  time       {r.seconds:.2f} s ({rate:,.0f} records/s)",
        "",
    ]
    if r.per_tool:
        table = text_table(pa.Table.from_pylist(r.per_tool))
        lines.append("per tool (computed from the read-back table):")
        lines += ["  " + line for line in table.splitlines()]
        lines.append("")
    lines += [
        "next:",
        f"  transit streams {r.directory}",
        f"  transit read {r.directory} {r.stream} --limit 5 --columns _offset,task_id,role,tool",
    ]
    if not local:
        lines.append("  (with the same --storage-option and --local-dir flags)")
    return "\n".join(lines)
