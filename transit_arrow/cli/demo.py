"""`transit demo`: the main job, end to end, on generated agent-eval traces.

For each task the demo writes what an agent-eval harness writes (with `transit_arrow.workloads`
helpers, over plain streams): the task as a root stream, two attempts by two models as
branches, a retry anchored at a failing evaluation, a critique anchored at an answer, and a
best-of merge that keeps the attempt with the best final score. Then it refreshes a
materialized metric incrementally (once halfway, once at the end), runs SQL across every
branch, checkpoints and deep-verifies every merge, and writes the HTML report (`Log.report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IntegrityError
from ..log import Log
from ..log import open as open_log
from ..workloads.evals import Evals, Task, Trace
from .render import human_bytes, plural, text_table

__all__ = ["DEFAULT_RECORDS", "PREFIX", "DemoReport", "format_report", "run_demo", "trace_events"]

DEFAULT_RECORDS = 2_000
PREFIX = "evals"
_RECORDS_PER_TASK = 160  # the events of one task, over its attempts, retry and critique
_MAX_TASKS = 40
_PASS = 0.7  # an evaluation passes at this score
_MODELS = ("model-small", "model-large")
_CRITIC = "critic-model"

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
    """What one `transit demo` run did (counts are for this run unless named total)."""

    uri: str
    directory: str
    created_log: bool
    records: int
    trace_records: int
    tasks: int
    first_task: str
    last_task: str
    attempts: int
    retries: int
    critiques: int
    merges: int
    winners: dict[str, int]
    streams_created: int
    total_streams: int
    total_segments: int
    bytes_on_disk: int
    segment_bytes: int
    metric: str
    refreshes: list[dict[str, Any]]
    metric_rows: list[dict[str, Any]]
    sql: str
    sql_rows: list[dict[str, Any]]
    pass_rates: list[dict[str, Any]]
    pass_at_k: list[dict[str, Any]]
    checkpoints_verified: int
    example_task: str
    example_merge: str
    report_path: str | None
    report_note: str
    seconds: float

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


def _steps(events: list[dict[str, Any]], trace: str) -> list[dict[str, Any]]:
    """Trace records from generated events: messages, and tool calls paired with results."""
    rows: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if event["role"] == "tool":
            call_id = f"{trace}#{i}"
            rows.append(
                {
                    "kind": "tool_call",
                    "role": "assistant",
                    "tool_name": event["tool"],
                    "tool_call_id": call_id,
                    "arguments": json.dumps({"query": f"step {event['step']}"}),
                }
            )
            rows.append(
                {
                    "kind": "tool_result",
                    "role": "tool",
                    "tool_call_id": call_id,
                    "output": event["text"],
                    "is_error": not event["ok"],
                    "latency_ms": event["latency_ms"],
                    "tokens": event["tokens"],
                }
            )
        else:
            role = "user" if event["role"] == "user" else "assistant"
            rows.append(
                {
                    "kind": "message",
                    "role": role,
                    "content": event["text"],
                    "tokens": event["tokens"],
                    "latency_ms": event["latency_ms"] or None,
                }
            )
    return rows


class _Job:
    """The demo's eval harness: what it wrote, for the report."""

    def __init__(self, evals: Evals, rng: np.random.Generator) -> None:
        self.evals = evals
        self.rng = rng
        self.records = 0
        self.attempts = self.retries = self.critiques = self.merges = 0
        self.winners: dict[str, int] = {}
        self.merge_names: list[str] = []

    def _run(
        self, trace: Trace, events: list[dict[str, Any]], skill: float
    ) -> tuple[float, int, int]:
        """The trace's steps, an answer and an evaluation: (score, answer, evaluation offset)."""
        errors = sum(not e["ok"] for e in events)
        score = float(np.clip(self.rng.normal(skill, 0.15) - 0.03 * errors, 0.0, 1.0))
        rows = _steps(events, trace.name)
        tokens = int(self.rng.integers(40, 400))
        answer_text = f"answer of {trace.name}"
        rows.append(
            {"kind": "answer", "role": "assistant", "content": answer_text, "tokens": tokens}
        )
        first, answer = trace.append_records(rows)
        self.records += answer - first + 1
        evaluation = trace.evaluate(
            score=round(score, 3),
            passed=score >= _PASS,
            evaluator="rubric-judge",
            subject=answer,
            rationale=f"{errors} failed tool calls",
        )
        self.records += 1
        return score, answer, evaluation

    def task(self, task_id: str, events: list[dict[str, Any]]) -> Task:
        """One task: attempts, a retry, a critique, and the best-of merge."""
        n = len(events)
        cuts = [0, n * 4 // 10, n * 7 // 10, n * 85 // 100, n]
        parts = [events[a:b] for a, b in itertools.pairwise(cuts)]
        task = self.evals.create_task(
            task_id,
            input=f"{task_id}: {events[0]['text'] if events else 'solve the task'}",
            target="a correct, cited answer",
            metadata={"suite": "transit-demo", "steps": n},
        )
        self.records += 1
        small = task.attempt(model=_MODELS[0], actor="harness")
        large = task.attempt(model=_MODELS[1], actor="harness")
        self.attempts += 2
        candidates: list[Trace] = [small, large]
        score, answer, evaluation = self._run(small, parts[0], 0.62)
        if score < _PASS:
            retry = small.retry(
                at=evaluation, reason=f"evaluation {score:.2f} < {_PASS}: retry from the decision"
            )
            self.retries += 1
            self._run(retry, parts[2], 0.7)
            candidates.append(retry)
        if self.rng.random() < 0.5:
            critique = small.critique(
                "The answer does not cite the retrieved source; cite it and recheck the numbers.",
                critic=_CRITIC,
                at=answer,
            )
            self.critiques += 1
            self.records += 1
            self._run(critique, parts[3], 0.75)
            candidates.append(critique)
        self._run(large, parts[1], 0.74)
        best = task.best_of(candidates, reason="keep the attempt with the best final score")
        self.merges += 1
        self.merge_names.append(best.name)
        winner = next(t for t in candidates if t.name == best.winner)
        key = f"{winner.role} by {winner.model}"
        self.winners[key] = self.winners.get(key, 0) + 1
        return task


def _folder_bytes(directory: Path) -> tuple[int, int]:
    """Total bytes of the files under `directory`, and of its Parquet segments."""
    total = parquet = 0
    for folder, _, files in os.walk(directory):
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            total += size
            parquet += size if name.endswith(".parquet") else 0
    return total, parquet


def _store_bytes(log: Log, prefix: str = "") -> tuple[int, int]:
    """Total bytes of the objects of a (remote) log under `prefix`, and of its segments."""
    total = parquet = 0
    for entry in log.store.list(prefix):
        path = f"{prefix}/{entry}" if prefix else entry
        if entry.endswith("/"):
            sub_total, sub_parquet = _store_bytes(log, path.rstrip("/"))
            total += sub_total
            parquet += sub_parquet
            continue
        size = log.store.head(path).size
        total += size
        parquet += size if entry.endswith(".parquet") else 0
    return total, parquet


_SQL = f"""SELECT model,
       count(DISTINCT _branch) AS branches,
       count(*) FILTER (WHERE kind = 'tool_call') AS tool_calls,
       round(avg(CAST(is_error AS DOUBLE)) FILTER (WHERE kind = 'tool_result'), 3)
           AS tool_error_rate,
       CAST(sum(tokens) AS BIGINT) AS tokens
FROM transit_records
WHERE _branch LIKE '{PREFIX}/%' AND _stream = _branch AND _origin_stream IS NULL
  AND kind <> 'task'
GROUP BY model ORDER BY model"""


def _write_report(log: Log, directory: str | Path) -> tuple[str | None, str]:
    """Write the HTML provenance report (`Log.report`) next to the log's folder's data."""
    root = log.store.local_path("")
    path = Path(root) / "report.html" if root is not None else Path("transit-demo-report.html")
    log.report(prefix=PREFIX).save(path)
    return str(path), "lineage DAG, per-branch metrics, merge winners and verification"


def run_demo(
    directory: str | Path,
    records: int = DEFAULT_RECORDS,
    *,
    progress: Callable[[int], object] | None = None,
    storage_options: dict[str, Any] | None = None,
    local_dir: str | Path | None = None,
) -> DemoReport:
    """Run the demo's eval job on the log at `directory`; running again adds more tasks.

    Args:
        directory: the log's folder (created when missing or empty), or any URI
            `transit_arrow.open` takes.
        records: how many generated trace events to write, spread over tasks of about 160
            events (at most 40 tasks).
        progress: called with the number of events written after each task.
        storage_options: passed to `transit_arrow.open` (for a remote log).
        local_dir: passed to `transit_arrow.open`.

    Raises:
        NotALogError: `directory` is neither empty nor a log.
        IntegrityError: a checkpoint does not verify.
    """
    started = time.perf_counter()
    if isinstance(records, bool) or not isinstance(records, int) or records < 1:
        raise ValueError(f"records must be an int >= 1, not {records!r}")
    options: dict[str, Any] = {"storage_options": storage_options, "local_dir": local_dir}
    with open_log(directory, **options) as log:
        created = log.streams().num_rows == 0
        streams_before = log.streams().num_rows
        evals = Evals(log, PREFIX)
        first = len(evals.tasks())
        n_tasks = max(1, min(_MAX_TASKS, records // _RECORDS_PER_TASK))
        events = trace_events(records, first_task=first, seed=first).to_pylist()
        job = _Job(evals, np.random.default_rng(first))
        metric = evals.materialize_metric()
        refreshes = []
        names = []
        for i in range(n_tasks):
            chunk = events[i * records // n_tasks : (i + 1) * records // n_tasks]
            names.append(f"task-{first + i:04d}")
            job.task(names[-1], chunk)
            if progress is not None:
                progress(len(chunk))
            if i == (n_tasks - 1) // 2:
                refreshes.append(dataclasses.asdict(metric.refresh()))
        refreshes.append(dataclasses.asdict(metric.refresh()))
        sql_rows = log.sql(_SQL).to_arrow_table().to_pylist()
        failed = []
        for name in job.merge_names:
            verdict = log.verify(log.stream(name).checkpoint(kind="demo"), deep=True)
            if not verdict.ok:
                failed.append(str(verdict))
        if failed:
            raise IntegrityError("demo checkpoints do not verify:\n" + "\n".join(failed))
        report_path, report_note = _write_report(log, directory)
        streams = log.streams()
        root = log.store.local_path("")
        if root is not None:
            on_disk, segment_bytes = _folder_bytes(Path(root))
        else:
            on_disk, segment_bytes = _store_bytes(log)
        return DemoReport(
            uri=log.uri,
            directory=str(directory),
            created_log=created,
            records=records,
            trace_records=job.records,
            tasks=n_tasks,
            first_task=names[0],
            last_task=names[-1],
            attempts=job.attempts,
            retries=job.retries,
            critiques=job.critiques,
            merges=job.merges,
            winners=dict(sorted(job.winners.items())),
            streams_created=streams.num_rows - streams_before,
            total_streams=streams.num_rows,
            total_segments=int(pc.sum(streams.column("segments")).as_py() or 0),
            bytes_on_disk=on_disk,
            segment_bytes=segment_bytes,
            metric=metric.name,
            refreshes=refreshes,
            metric_rows=metric.read()
            .sort_by([("model", "ascending"), ("role", "ascending")])
            .to_pylist(),
            sql=_SQL,
            sql_rows=sql_rows,
            pass_rates=evals.pass_rate_by_model().to_pylist(),
            pass_at_k=evals.pass_at_k(1).to_pylist(),
            checkpoints_verified=len(job.merge_names),
            example_task=evals.task_stream(names[0]),
            example_merge=job.merge_names[0],
            report_path=report_path,
            report_note=report_note,
            seconds=round(time.perf_counter() - started, 3),
        )


def _rounded(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    )


def format_report(r: DemoReport) -> str:
    """A human-readable account of a demo run: what it did, and where to look further."""
    local = r.uri.startswith("file://")
    first, second = r.refreshes[0], r.refreshes[-1]
    winners = ", ".join(f"{role} {n}" for role, n in r.winners.items())
    lines = [
        f"transit demo: {r.uri} ({'new log' if r.created_log else 'existing log'})",
        f"  ingested   {plural(r.tasks, 'eval task')} ({r.first_task}..{r.last_task}), "
        f"{plural(r.records, 'generated trace event')} -> "
        f"{plural(r.trace_records, 'trace record')}",
        f"             each task a root stream '{PREFIX}/<task>': "
        f"{plural(r.attempts, 'attempt')} by {' and '.join(_MODELS)}, "
        f"{r.retries:,} {'retry' if r.retries == 1 else 'retries'} anchored at a failing "
        "evaluation, "
        f"{plural(r.critiques, 'critique')} anchored at an answer (all branches: no copy)",
        f"  merged     {plural(r.merges, 'best-of merge')} (policy custom:best_of; "
        f"winner and compared scores recorded); winners: {winners}",
        f"  metric     '{r.metric}' refreshed incrementally: "
        f"{plural(first['records_processed'], 'evaluation')} halfway, then only the "
        f"{second['records_processed']} new ones (resumed from {second['reused_checkpoint']})",
        f"  verified   {plural(r.checkpoints_verified, 'checkpoint')} of the merges, deep "
        "(commit chains of every ancestor and BLAKE3 of every segment): all OK",
        f"  report     {r.report_path or '-'} ({r.report_note})",
        f"  {'on disk' if local else 'stored':<10} {human_bytes(r.bytes_on_disk)} "
        f"({human_bytes(r.segment_bytes)} in {plural(r.total_segments, 'segment')}; "
        f"{plural(r.total_streams, 'stream')}, {r.streams_created} new)",
        f"  time       {r.seconds:.2f} s",
        "",
        "pass rate by model (root attempts; with retries and critiques):",
        *("  " + line for line in text_table(_rounded(r.pass_rates)).splitlines()),
        "",
        "SQL across every branch (transit_records, own records of each branch):",
        *("  " + line for line in text_table(_rounded(r.sql_rows)).splitlines()),
        "",
        f"materialized metric '{r.metric}' (per model and role):",
        *("  " + line for line in text_table(_rounded(r.metric_rows)).splitlines()),
        "",
        "next:",
        f"  transit lineage {r.directory}",
        f"  transit read {r.directory} {r.example_merge} --limit 5 "
        "--columns _offset,kind,model,score,_origin_stream",
        f"  transit sql {r.directory} "
        f"\"SELECT _branch, count(*) FROM transit_records WHERE _branch LIKE '{r.example_task}%'"
        ' GROUP BY _branch"',
        f"  transit materialize read {r.directory} {r.metric}",
        f"  transit verify {r.directory} {r.example_merge} --deep",
    ]
    if r.report_path:
        lines.append(f"  open {r.report_path}")
    if not local:
        lines.append("  (with the same --storage-option and --local-dir flags)")
    return "\n".join(lines)
