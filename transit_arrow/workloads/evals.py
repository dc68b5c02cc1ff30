"""AI traces and evals: tasks as root streams, attempts, retries and critiques as branches.

The layout (see docs/workloads.md):

- a **task** (or episode) is a root stream `<prefix>/<task>` whose first record is the task
  (`kind='task'`: the input in `content`, the expected answer in `target`);
- an **attempt** is a branch of the task at its last record, `<prefix>/<task>/a1`, labelled
  with the model; it holds messages, tool calls and results (paired by `tool_call_id`), the
  answer and evaluator decisions (`subject_ref` = the judged position, `stream@offset`);
- a **retry** or a **critique** is a branch of an attempt anchored at the record that
  triggered it (by default the last evaluation, or the last answer for a critique):
  `<prefix>/<task>/a1/retry-1`, `<prefix>/<task>/a1/critique-1`;
- a **best-of merge** (`Task.best_of`, `merge_best`) is a merge of attempts with the policy
  `custom:best_of`: it replays the base and then the records of the parent with the best
  final score (ties: the first in declared order); the winner and every compared score are in
  the merge's `policy_params` and labels, so `log.lineage()` shows them;
- every evaluation is also appended to the ledger `<prefix>/_scores` (one row per decision),
  which the queries (`final_scores`, `pass_rate_by_model`, `pass_at_k`) and the incremental
  metric (`materialize_metric`) read.

Importing this module registers the merge policy `best_of` (`custom:best_of`).
"""

from __future__ import annotations

import contextvars
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import Materialization, register_merge_resolver
from ..errors import InvalidInputError, MergeConflictError, StreamNotFoundError
from ..log import Log
from ..record import empty_table
from ..stream import Stream
from ._common import (
    append_rows,
    check_offset,
    check_prefix,
    component,
    create_numbered,
    ensure_stream,
    json_text,
    labels_of,
    last_index,
    parse_position,
    require_str,
    run_sql,
    schema_of,
    timestamp,
)

__all__ = [
    "BEST_OF",
    "EVAL_SCHEMA",
    "SCORES_SCHEMA",
    "Evals",
    "Task",
    "Trace",
    "merge_best",
]

BEST_OF = "best_of"
"""The registered name of the best-of merge resolver (use it as `policy="custom:best_of"`)."""

WORKLOAD = "evals"

EVAL_SCHEMA = schema_of(
    ("kind", pa.string()),
    ("task_id", pa.string()),
    ("model", pa.string()),
    ("role", pa.string()),
    ("content", pa.string()),
    ("tool_name", pa.string()),
    ("tool_call_id", pa.string()),
    ("arguments", pa.string()),
    ("output", pa.string()),
    ("is_error", pa.bool_()),
    ("score", pa.float64()),
    ("passed", pa.bool_()),
    ("evaluator", pa.string()),
    ("subject_ref", pa.string()),
    ("rationale", pa.string()),
    ("target", pa.string()),
    ("tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("metadata", pa.string()),
)
"""The user columns of every trace stream (task, attempt, retry, critique, best-of merge)."""

SCORES_SCHEMA = schema_of(
    ("task_id", pa.string()),
    ("stream", pa.string()),
    ("role", pa.string()),
    ("attempt", pa.string()),
    ("model", pa.string()),
    ("score", pa.float64()),
    ("passed", pa.bool_()),
    ("evaluator", pa.string()),
    ("subject_ref", pa.string()),
    ("trace_offset", pa.int64()),
)
"""The user columns of the score ledger `<prefix>/_scores` (one row per evaluation)."""

_STREAM_ROLES = ("task", "attempt", "retry", "critique", "best_of")
_BULK_KINDS = ("message", "tool_call", "tool_result", "answer")


# --- the best_of merge policy ------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    """What `merge_best` decided before the merge runs its resolver."""

    parents: int
    winner: int


_CHOICE: contextvars.ContextVar[_Choice | None] = contextvars.ContextVar(
    "transit_arrow_best_of", default=None
)


def _last_score(table: pa.Table, score: str) -> float | None:
    """The last non-null, non-NaN value of column `score` (None without one)."""
    if score not in table.column_names:
        return None
    column = table.column(score)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise InvalidInputError(f"score column {score!r} is {column.type}, not a number")
    values = pc.drop_null(pc.cast(column, pa.float64()))
    values = values.filter(pc.invert(pc.is_nan(values)))
    return None if len(values) == 0 else float(values[-1].as_py())


def _best(scores: Sequence[float | None], higher_is_better: bool) -> int | None:
    """Index of the best score; ties go to the first in order; None when nothing scored."""
    best: int | None = None
    for i, value in enumerate(scores):
        if value is None:
            continue
        current = scores[best] if best is not None else None
        if current is None or (value > current if higher_is_better else value < current):
            best = i
    return best


def _resolve_best_of(base: pa.Table, parents: list[pa.Table], /) -> pa.Table:
    """The `best_of` merge resolver: the records of the parent with the best score.

    Called by `Log.merge(..., policy="custom:best_of")`. Through `merge_best` it takes the
    winner `merge_best` chose (from each parent's final score over its whole replay); used
    directly, it compares the last `score` value among each parent's records after the base,
    highest first, ties to the first parent in declared order.
    """
    choice = _CHOICE.get()
    if choice is not None:
        if choice.parents != len(parents):
            raise ValueError(f"best_of expected {choice.parents} parents, got {len(parents)}")
        return parents[choice.winner]
    scores = [_last_score(p, "score") for p in parents]
    winner = _best(scores, higher_is_better=True)
    if winner is None:
        raise ValueError("no parent has a 'score' value after the base; nothing to compare")
    return parents[winner]


register_merge_resolver(BEST_OF, _resolve_best_of, version="1")


def _pinned(log: Log, parent: object) -> tuple[str, int]:
    """A parent head ('name' or 'name@N') resolved to an explicit position."""
    text = require_str(parent, "a merge parent")
    if "@" in text:
        name, offset = parse_position(text)
        check_offset(log.stream(name), offset, f"parent {text!r}")
        return name, offset
    end = log.stream(text).next_offset
    if end == 0:
        raise MergeConflictError(f"parent {text!r} has no records; nothing to score")
    return text, end - 1


def _merge_best(
    log: Log,
    name: str,
    parents: Sequence[str],
    score: str = "score",
    higher_is_better: bool = True,
    *,
    reason: str,
    base: str | None = None,
    actor: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[Stream, str]:
    """`merge_best`, also returning the winner's stream name."""
    require_str(reason, "reason")
    require_str(score, "score")
    if not isinstance(higher_is_better, bool):
        raise InvalidInputError(f"higher_is_better must be a bool, not {higher_is_better!r}")
    if isinstance(parents, str) or not isinstance(parents, Sequence):
        raise InvalidInputError("parents must be a list like ['a', 'b@17']")
    positions = [_pinned(log, p) for p in parents]
    scores: list[float | None] = []
    for parent, offset in positions:
        replay = log.stream(parent)
        columns = [score] if score in replay.schema.names else None
        table = replay.read(end=offset + 1, columns=columns) if columns else pa.table({})
        scores.append(_last_score(table, score))
    winner = _best(scores, higher_is_better)
    if winner is None:
        described = ", ".join(f"{s}@{o}" for s, o in positions)
        raise MergeConflictError(
            f"none of {described} has a value of {score!r}; best_of needs at least one score"
        )
    pins = [f"{s}@{o}" for s, o in positions]
    params = {
        "score": score,
        "higher_is_better": higher_is_better,
        "winner": positions[winner][0],
        "winner_position": pins[winner],
        "scores": [{"parent": p, "score": v} for p, v in zip(pins, scores, strict=True)],
        "ties": "first in declared order",
    }
    all_labels = {**dict(labels or {}), "winner": positions[winner][0]}
    all_labels["best_score"] = repr(scores[winner])
    token = _CHOICE.set(_Choice(len(pins), winner))
    try:
        stream = log.merge(
            name,
            pins,
            base=base,
            policy=f"custom:{BEST_OF}",
            policy_params=params,
            actor=actor,
            reason=reason,
            labels=all_labels,
        )
    finally:
        _CHOICE.reset(token)
    return stream, positions[winner][0]


def merge_best(
    log: Log,
    name: str,
    parents: Sequence[str],
    score: str = "score",
    higher_is_better: bool = True,
    *,
    reason: str,
    base: str | None = None,
    actor: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Stream:
    """Merge `parents` into `name`, keeping the records of the parent with the best score.

    Each parent's score is the last non-null value of column `score` in its replay through
    its pinned position (its final score). The winner is the best one (highest, or lowest
    when `higher_is_better` is False); ties go to the first parent in declared order, and
    parents without a score never win. The merge (policy `custom:best_of`) replays the base
    prefix, then the winner's records after the base, with `_origin_stream`/`_origin_offset`.

    The decision is recorded in the merge's commit: `policy_params` holds `score`,
    `higher_is_better`, `winner`, `winner_position`, `scores` (every compared parent position
    and its score, in declared order) and `ties`; the labels hold `winner` and `best_score`.

    Args:
        log: the log.
        name: the new merge stream.
        parents: two or more parent heads ('a' = its last record, or 'b@17').
        score: the numeric column to compare.
        higher_is_better: False to keep the lowest score (a loss, a latency).
        reason: why the merge is made (recorded).
        base: the shared prefix ('p@N'); default: the parents' nearest common ancestor.
        actor: who merges (recorded).
        labels: more labels to record.

    Returns:
        The merge stream.

    Raises:
        MergeConflictError: no parent has a score, or the merge is refused (fewer than two
            parents, a bad base); nothing is written.
        InvalidInputError: a bad argument (a non-numeric score column, a bad position).
        StreamNotFoundError: a parent does not exist.
    """
    return _merge_best(
        log,
        name,
        parents,
        score,
        higher_is_better,
        reason=reason,
        base=base,
        actor=actor,
        labels=labels,
    )[0]


# --- traces ------------------------------------------------------------------------------------


class Trace:
    """One trace stream of an eval: a task, an attempt, a retry, a critique or a best-of merge.

    Get one from `Evals.create_task`, `Task.attempt`, `Trace.retry`, `Trace.critique`,
    `Task.best_of` or `Evals.trace(name)`. Each writing method appends one record (or two for
    an evaluation: the trace record and the ledger row) and returns what identifies it.
    """

    def __init__(
        self,
        evals: Evals,
        stream: Stream,
        *,
        role: str,
        task_id: str,
        model: str | None = None,
        attempt_name: str | None = None,
    ) -> None:
        self.evals = evals
        self.stream = stream
        self.role = role
        self.task_id = task_id
        self.model = model
        self.attempt_name = attempt_name
        self.winner: str | None = None  # for a best-of merge made here: the winner's name
        self._calls: dict[str, bool] | None = None  # tool_call_id -> answered

    def __repr__(self) -> str:
        return f"<Trace {self.role} {self.name!r}>"

    @property
    def name(self) -> str:
        """The stream's name."""
        return self.stream.name

    @property
    def log(self) -> Log:
        """The log the trace belongs to."""
        return self.evals.log

    # --- writing -------------------------------------------------------------------------

    def append_records(self, rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Append many records in one call (bulk ingest), checked like the single methods.

        Each row is a dict over `EVAL_SCHEMA`'s columns (plus an optional `_timestamp`) with
        a `kind` of 'message', 'tool_call', 'tool_result' or 'answer' (evaluations go through
        `evaluate`, which also writes the ledger). `task_id` and `model` default to the
        trace's; tool results must answer an open tool call of the replay or of an earlier
        row. Nothing is written when a row is refused.

        Returns:
            The first and last offsets written.
        """
        if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
            raise InvalidInputError("rows must be a non-empty list of dicts")
        calls = dict(self._known_calls())
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidInputError(f"row {i} is not a dict: {row!r}")
            kind = row.get("kind")
            if kind not in _BULK_KINDS:
                raise InvalidInputError(
                    f"row {i} has kind {kind!r}; append_records takes {', '.join(_BULK_KINDS)}"
                )
            value = row.get("tool_call_id")
            call_id = value if isinstance(value, str) else ""
            if kind == "tool_call":
                if not call_id or call_id in calls:
                    raise InvalidInputError(f"row {i}: tool_call_id {call_id!r} is missing or used")
                calls[call_id] = False
            elif kind == "tool_result":
                if calls.get(call_id) is not False:
                    raise InvalidInputError(f"row {i}: {call_id!r} is not an open tool call")
                calls[call_id] = True
            out.append(dict(row))
        first, last = _write(self, out)
        self._calls = calls
        return first, last

    def message(
        self,
        role: str,
        content: str,
        *,
        tokens: int | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        at_time: datetime | str | None = None,
    ) -> int:
        """Append a message (`kind='message'`) by `role` ('user', 'assistant', 'system', ...).

        Returns:
            Its offset.
        """
        row = {
            "kind": "message",
            "role": require_str(role, "role"),
            "content": require_str(content, "content", empty=True),
            "tokens": tokens,
            "latency_ms": latency_ms,
            "metadata": json_text(metadata),
            "_timestamp": timestamp(at_time),
        }
        return _write(self, [row])[0]

    def _known_calls(self) -> dict[str, bool]:
        if self._calls is None:
            table = self.stream.read(columns=["kind", "tool_call_id"])
            calls: dict[str, bool] = {}
            for kind, call_id in zip(
                table.column("kind").to_pylist(),
                table.column("tool_call_id").to_pylist(),
                strict=True,
            ):
                if kind == "tool_call" and call_id is not None:
                    calls[call_id] = False
                elif kind == "tool_result" and call_id in calls:
                    calls[call_id] = True
            self._calls = calls
        return self._calls

    def tool_call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        call_id: str | None = None,
        content: str | None = None,
        tokens: int | None = None,
        latency_ms: float | None = None,
        at_time: datetime | str | None = None,
    ) -> str:
        """Append a tool call (`kind='tool_call'`, role 'assistant') and return its call id.

        Args:
            tool_name: the tool.
            arguments: its arguments (a dict, stored as JSON text, or JSON text).
            call_id: the `tool_call_id` (default: a new random one); unique in the replay.
            content: text the model said with the call.
            tokens: tokens the call cost.
            latency_ms: how long the model took.
            at_time: when it happened (default: now).

        Raises:
            InvalidInputError: `call_id` is already used in this trace's replay.
        """
        require_str(tool_name, "tool_name")
        call_id = call_id if call_id is not None else f"call_{secrets.token_hex(8)}"
        require_str(call_id, "call_id")
        calls = self._known_calls()
        if call_id in calls:
            raise InvalidInputError(f"tool_call_id {call_id!r} is already used in {self.name!r}")
        row = {
            "kind": "tool_call",
            "role": "assistant",
            "tool_name": tool_name,
            "tool_call_id": call_id,
            "arguments": json_text(arguments),
            "content": content,
            "tokens": tokens,
            "latency_ms": latency_ms,
            "_timestamp": timestamp(at_time),
        }
        _write(self, [row])
        calls[call_id] = False
        return call_id

    def tool_result(
        self,
        call_id: str,
        output: Any,
        *,
        is_error: bool = False,
        latency_ms: float | None = None,
        at_time: datetime | str | None = None,
    ) -> int:
        """Append the result of tool call `call_id` (`kind='tool_result'`, role 'tool').

        Returns:
            Its offset.

        Raises:
            InvalidInputError: no unanswered tool call `call_id` in this trace's replay.
        """
        calls = self._known_calls()
        if calls.get(call_id) is not False:
            state = "was already answered" if call_id in calls else "is not a tool call"
            raise InvalidInputError(f"{call_id!r} {state} in {self.name!r}")
        if not isinstance(is_error, bool):
            raise InvalidInputError(f"is_error must be a bool, not {is_error!r}")
        row = {
            "kind": "tool_result",
            "role": "tool",
            "tool_call_id": call_id,
            "output": json_text(output),
            "is_error": is_error,
            "latency_ms": latency_ms,
            "_timestamp": timestamp(at_time),
        }
        offset = _write(self, [row])[0]
        calls[call_id] = True
        return offset

    def answer(
        self,
        content: str,
        *,
        tokens: int | None = None,
        latency_ms: float | None = None,
        at_time: datetime | str | None = None,
    ) -> int:
        """Append the attempt's answer (`kind='answer'`, role 'assistant'); returns its offset."""
        row = {
            "kind": "answer",
            "role": "assistant",
            "content": require_str(content, "content", empty=True),
            "tokens": tokens,
            "latency_ms": latency_ms,
            "_timestamp": timestamp(at_time),
        }
        return _write(self, [row])[0]

    def _subject(self, subject: int | str | None, kinds: Sequence[str]) -> str:
        """A judged position 'stream@offset' (default: the last record of one of `kinds`)."""
        if subject is None:
            table = self.stream.read(columns=["kind"])
            hits = [last_index(table.column("kind"), k) for k in kinds]
            found = [h for h in hits if h is not None]
            if found:
                return f"{self.name}@{max(found)}"
            if table.num_rows == 0:
                raise InvalidInputError(f"{self.name!r} has no record to judge")
            return f"{self.name}@{table.num_rows - 1}"
        if isinstance(subject, str):
            stream, offset = parse_position(subject)
            check_offset(self.log.stream(stream), offset, f"subject {subject!r}")
            return subject
        return f"{self.name}@{check_offset(self.stream, subject, 'subject')}"

    def evaluate(
        self,
        *,
        score: float,
        passed: bool,
        evaluator: str,
        subject: int | str | None = None,
        rationale: str | None = None,
        at_time: datetime | str | None = None,
    ) -> int:
        """Record an evaluator's decision (`kind='evaluation'`) and add it to the ledger.

        Args:
            score: the score (any scale; the ledger and `best_of` compare it).
            passed: whether the subject passes.
            evaluator: who decided (a scorer, a model, a person).
            subject: the judged position: an offset of this trace's replay or 'stream@N'
                (default: the last answer, else the last record).
            rationale: why.
            at_time: when (default: now).

        Returns:
            The evaluation's offset in this trace.
        """
        if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
            raise InvalidInputError(f"score must be a number, not {score!r}")
        if not isinstance(passed, bool):
            raise InvalidInputError(f"passed must be a bool, not {passed!r}")
        require_str(evaluator, "evaluator")
        ref = self._subject(subject, ("answer",))
        row = {
            "kind": "evaluation",
            "role": "evaluator",
            "score": float(score),
            "passed": passed,
            "evaluator": evaluator,
            "subject_ref": ref,
            "rationale": rationale,
            "_timestamp": timestamp(at_time),
        }
        ledger = self.evals.ledger()  # created before the trace record: nothing half-done
        offset = _write(self, [row])[0]
        _add_score(self.evals, self, float(score), passed, evaluator, ref, offset, ledger)
        return offset

    # --- branching -----------------------------------------------------------------------

    def _branch(
        self,
        role: str,
        at: int | None,
        kinds: Sequence[str],
        *,
        name: str | None,
        model: str | None,
        actor: str | None,
        reason: str,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[Trace, int]:
        if at is None:
            anchor = parse_position(self._subject(None, kinds))[1]
        else:
            anchor = check_offset(self.stream, at, "at")
        attempt = self.attempt_name or self.name
        labels = labels_of(
            {
                "workload": WORKLOAD,
                "prefix": self.evals.prefix,
                "role": role,
                "task_id": self.task_id,
                "model": model or self.model,
                "attempt": attempt,
                "trigger": f"{self.name}@{anchor}",
                **dict(extra or {}),
            }
        )

        def create(branch_name: str) -> Stream:
            return self.log.branch(
                branch_name,
                at=f"{self.name}@{anchor}",
                actor=actor,
                reason=reason,
                labels=labels,
            )

        if name is not None:
            stream = create(f"{self.name}/{component(require_str(name, 'name'))}")
        else:
            stream = create_numbered(f"{self.name}/{role}-", 1, create)
        trace = Trace(
            self.evals,
            stream,
            role=role,
            task_id=self.task_id,
            model=model or self.model,
            attempt_name=attempt,
        )
        return trace, anchor

    def retry(
        self,
        *,
        reason: str,
        at: int | None = None,
        model: str | None = None,
        name: str | None = None,
        actor: str | None = None,
    ) -> Trace:
        """Fork a retry anchored at the record that triggered it.

        Args:
            reason: why (recorded in the branch's metadata).
            at: the triggering offset (default: the last evaluation, else the last record).
            model: the retry's model (default: this trace's).
            name: the branch's last name component (default `retry-<n>`).
            actor: who retries.
        """
        require_str(reason, "reason")
        return self._branch(
            "retry", at, ("evaluation",), name=name, model=model, actor=actor, reason=reason
        )[0]

    def critique(
        self,
        content: str,
        *,
        critic: str,
        at: int | None = None,
        score: float | None = None,
        name: str | None = None,
        actor: str | None = None,
    ) -> Trace:
        """Fork a critique anchored at the judged record; its first record is the critique.

        The critique record (`kind='critique'`, role 'critic') names the judged position in
        `subject_ref`; the branch can then hold a revised answer and its evaluation.

        Args:
            content: the critique.
            critic: who critiques (recorded as `evaluator` and as the branch's actor).
            at: the judged offset (default: the last answer, else the last record).
            score: an optional score the critic gives the judged record (in `metadata` as
                `critic_score`: the `score` column holds evaluations only).
            name: the branch's last name component (default `critique-<n>`).
            actor: who forks (default: the critic).
        """
        require_str(content, "content")
        require_str(critic, "critic")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidInputError(f"score must be a number, not {score!r}")
        trace, anchor = self._branch(
            "critique",
            at,
            ("answer",),
            name=name,
            model=None,
            actor=actor or critic,
            reason=f"critique by {critic}",
            extra={"critic": critic},
        )
        row = {
            "kind": "critique",
            "role": "critic",
            "content": content,
            "evaluator": critic,
            "subject_ref": f"{self.name}@{anchor}",
            "metadata": None if score is None else json_text({"critic_score": float(score)}),
        }
        _write(trace, [row])
        return trace

    # --- reading -------------------------------------------------------------------------

    def read(self) -> pa.Table:
        """The trace's replay (inherited records first), as an Arrow table."""
        return self.stream.read()

    def tool_calls(self) -> pa.Table:
        """Tool calls of the replay paired with their results by `tool_call_id`.

        Columns: `tool_call_id`, `tool_name`, `arguments`, `call_offset`, `call_stream`,
        `output`, `is_error`, `result_offset`, `latency_ms` (of the result); a call without a
        result has nulls there.
        """
        table = self.stream.read(
            columns=[
                "_stream",
                "_offset",
                "kind",
                "tool_name",
                "tool_call_id",
                "arguments",
                "output",
                "is_error",
                "latency_ms",
            ]
        )
        return run_sql(
            {"replay": table},
            """
            SELECT c.tool_call_id, c.tool_name, c.arguments, c._offset AS call_offset,
                   c._stream AS call_stream, r.output, r.is_error,
                   r._offset AS result_offset, r.latency_ms
            FROM replay c
            LEFT JOIN replay r ON r.kind = 'tool_result' AND r.tool_call_id = c.tool_call_id
            WHERE c.kind = 'tool_call'
            ORDER BY c._offset
            """,
        )

    def final_score(self) -> float | None:
        """The score of this trace's last evaluation in its replay (None without one)."""
        table = self.stream.read(columns=["kind", "score"])
        index = last_index(table.column("kind"), "evaluation")
        return None if index is None else table.column("score")[index].as_py()


def _write(trace: Trace, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Append `rows` to `trace` (task_id and model default to the trace's)."""
    for row in rows:
        row.setdefault("task_id", trace.task_id)
        row.setdefault("model", trace.model)
    return append_rows(trace.stream, EVAL_SCHEMA, rows)


class Task(Trace):
    """A task's root stream: the task record, then attempts as branches of it."""

    def attempt(
        self,
        *,
        model: str,
        name: str | None = None,
        at: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Trace:
        """Fork an attempt of this task by `model`.

        Args:
            model: the model (or agent) making the attempt; labelled and on every record.
            name: the branch's last name component (default `a<n>`).
            at: where to fork (default: the task's last record).
            actor: who runs the attempt.
            reason: why (default: 'attempt by <model>').
        """
        require_str(model, "model")
        anchor = check_offset(self.stream, at, "at") if at is not None else None
        if anchor is None:
            anchor = self.stream.next_offset - 1
        labels = labels_of(
            {
                "workload": WORKLOAD,
                "prefix": self.evals.prefix,
                "role": "attempt",
                "task_id": self.task_id,
                "model": model,
            }
        )

        def create(branch_name: str) -> Stream:
            return self.log.branch(
                branch_name,
                at=f"{self.name}@{anchor}",
                actor=actor,
                reason=reason or f"attempt by {model}",
                labels=labels,
            )

        if name is not None:
            stream = create(f"{self.name}/{component(name)}")
        else:
            stream = create_numbered(f"{self.name}/a", 1, create)
        return Trace(self.evals, stream, role="attempt", task_id=self.task_id, model=model)

    def best_of(
        self,
        parents: Sequence[Trace | str],
        *,
        reason: str,
        name: str | None = None,
        score: str = "score",
        higher_is_better: bool = True,
        actor: str | None = None,
    ) -> Trace:
        """Merge attempts (or retries, critiques) into `<task>/<name>` (default `best`).

        The merge keeps the parent with the best final score (see `merge_best`); its final
        score (the winner's) is added to the ledger with role 'best_of'.
        """
        names = [p.name if isinstance(p, Trace) else p for p in parents]
        merge_name = f"{self.name}/{component(name if name is not None else 'best')}"
        stream, winner = _merge_best(
            self.log,
            merge_name,
            names,
            score,
            higher_is_better,
            reason=reason,
            actor=actor,
            labels=labels_of(
                {
                    "workload": WORKLOAD,
                    "prefix": self.evals.prefix,
                    "role": "best_of",
                    "task_id": self.task_id,
                }
            ),
        )
        trace = Trace(self.evals, stream, role="best_of", task_id=self.task_id)
        trace.winner = winner
        table = stream.read(columns=["kind", "score", "passed", "evaluator", "model"])
        index = last_index(table.column("kind"), "evaluation")
        if index is not None:
            row = table.slice(index, 1).to_pylist()[0]
            trace.model = row["model"]
            ref = f"{stream.name}@{index}"
            _add_score(
                self.evals, trace, row["score"], row["passed"], row["evaluator"], ref, index, None
            )
        return trace


# --- the evals of a log ------------------------------------------------------------------------


class Evals:
    """The eval traces of a log under one stream-name prefix.

    Args:
        log: the log.
        prefix: the streams' prefix (default 'evals'): tasks are `<prefix>/<task>`, the score
            ledger is `<prefix>/_scores`.
    """

    def __init__(self, log: Log, prefix: str = "evals") -> None:
        if not isinstance(log, Log):
            raise InvalidInputError(f"log must be a transit_arrow.Log, not {log!r}")
        self.log = log
        self.prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"<Evals {self.prefix!r} of {self.log.uri}>"

    @property
    def scores_stream(self) -> str:
        """The ledger's stream name, `<prefix>/_scores`."""
        return f"{self.prefix}/_scores"

    def task_stream(self, task_id: object) -> str:
        """The root stream name of task `task_id` (see `component` for the mapping)."""
        return f"{self.prefix}/{component(task_id)}"

    # --- tasks ---------------------------------------------------------------------------

    def create_task(
        self,
        task_id: str,
        *,
        input: str,
        target: Any = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
        at_time: datetime | str | None = None,
    ) -> Task:
        """Create task `task_id`'s root stream with its task record.

        Args:
            task_id: the task's id (kept as is in `task_id`; the stream name uses a safe form).
            input: the task's input (prompt, question).
            target: the expected answer (any JSON value; text as is).
            metadata: more about the task (JSON, in `metadata`).
            actor: who creates it.
            at_time: when (default: now).

        Raises:
            AlreadyExistsError: the task exists (nothing is written).
        """
        require_str(task_id, "task_id")
        row = {
            "kind": "task",
            "task_id": task_id,
            "role": "user",
            "content": require_str(input, "input", empty=True),
            "target": json_text(target),
            "metadata": json_text(metadata),
            "_timestamp": timestamp(at_time),
        }
        labels = labels_of(
            {"workload": WORKLOAD, "prefix": self.prefix, "role": "task", "task_id": task_id}
        )
        stream = self.log.create_stream(
            self.task_stream(task_id),
            schema=EVAL_SCHEMA,
            metadata={"actor": actor, "reason": "eval task", "labels": labels},
        )
        task = Task(self, stream, role="task", task_id=task_id)
        _write(task, [row])
        return task

    def task(self, task_id: str) -> Task:
        """Open task `task_id` (StreamNotFoundError if it does not exist)."""
        trace = self.trace(self.task_stream(task_id))
        if not isinstance(trace, Task):
            raise InvalidInputError(f"{trace.name!r} is a {trace.role}, not a task")
        return trace

    def _rows(self) -> list[dict[str, Any]]:
        """Lineage rows of this prefix's traces."""
        rows = []
        for row in self.log.lineage().to_pylist():
            labels = dict(row["labels"] or [])
            if labels.get("workload") == WORKLOAD and labels.get("prefix") == self.prefix:
                rows.append({**row, "labels": labels})
        return rows

    def tasks(self) -> list[str]:
        """The ids of this prefix's tasks, in stream-name order."""
        return [
            r["labels"]["task_id"]
            for r in self._rows()
            if r["labels"].get("role") == "task" and "task_id" in r["labels"]
        ]

    def traces(self) -> pa.Table:
        """One row per trace stream: name, role, task_id, model, attempt, kind, parent, winner."""
        out = []
        for r in self._rows():
            labels = r["labels"]
            if labels.get("role") not in _STREAM_ROLES:
                continue
            out.append(
                {
                    "name": r["name"],
                    "role": labels.get("role"),
                    "task_id": labels.get("task_id"),
                    "model": labels.get("model"),
                    "attempt": labels.get("attempt"),
                    "kind": r["kind"],
                    "parent": None
                    if r["parent_stream"] is None
                    else f"{r['parent_stream']}@{r['parent_offset']}",
                    "winner": labels.get("winner"),
                    "next_offset": r["next_offset"],
                }
            )
        return pa.Table.from_pylist(out, schema=_TRACES_SCHEMA)

    def trace(self, name: str) -> Trace:
        """Open the trace stream `name` (its role, task and model come from its labels)."""
        stream = self.log.stream(require_str(name, "name"))
        found = [r for r in self.log.lineage().to_pylist() if r["name"] == name]
        labels = dict(found[0]["labels"] or []) if found else {}
        if labels.get("workload") != WORKLOAD or labels.get("role") not in _STREAM_ROLES:
            raise InvalidInputError(f"stream {name!r} is not an eval trace (no evals labels)")
        cls = Task if labels["role"] == "task" else Trace
        return cls(
            self,
            stream,
            role=labels["role"],
            task_id=labels.get("task_id", ""),
            model=labels.get("model"),
            attempt_name=labels.get("attempt"),
        )

    # --- the ledger ----------------------------------------------------------------------

    def ledger(self) -> Stream:
        """The score ledger stream `<prefix>/_scores` (created when it does not exist)."""
        labels = {"workload": WORKLOAD, "prefix": self.prefix, "role": "scores"}
        return ensure_stream(
            self.log, self.scores_stream, SCORES_SCHEMA, labels=labels, reason="eval score ledger"
        )

    def scores(self) -> pa.Table:
        """The ledger: one row per evaluation (empty when nothing was evaluated)."""
        try:
            return self.log.stream(self.scores_stream).read()
        except StreamNotFoundError:
            return empty_table(SCORES_SCHEMA)

    def _query(self, sql: str) -> pa.Table:
        scores = self.scores()
        if "_offset" not in scores.column_names:
            scores = scores.append_column("_offset", pa.array([], pa.int64()))
        return run_sql({"scores": scores}, sql)

    def final_scores(self) -> pa.Table:
        """The final (last) evaluation of each evaluated trace.

        Columns: `task_id`, `stream`, `role`, `attempt` (the root attempt a retry or critique
        descends from), `model`, `score`, `passed`, `evaluations` (how many the trace had).
        """
        return self._query(f"{_FINAL} ORDER BY task_id, stream")

    def pass_rate_by_model(self) -> pa.Table:
        """Pass rates per model of the root attempts, first try and with retries/critiques.

        An attempt passes on the first try when its own final evaluation passed, and with
        retries when it or any retry or critique descending from it finally passed. Columns:
        `model`, `tasks`, `attempts`, `retries_and_critiques` (how many were evaluated),
        `pass_rate_first_try`, `pass_rate_with_retries`. Only evaluated traces count.
        """
        return self._query(
            f"""
            WITH final AS ({_FINAL}),
            tree AS (
                SELECT attempt, bool_or(passed) AS any_passed,
                       count(*) FILTER (WHERE role <> 'attempt') AS retries_and_critiques
                FROM final WHERE role IN ('attempt', 'retry', 'critique') GROUP BY attempt
            )
            SELECT f.model, count(DISTINCT f.task_id) AS tasks, count(*) AS attempts,
                   CAST(sum(t.retries_and_critiques) AS BIGINT) AS retries_and_critiques,
                   avg(CAST(f.passed AS DOUBLE)) AS pass_rate_first_try,
                   avg(CAST(t.any_passed AS DOUBLE)) AS pass_rate_with_retries
            FROM final f JOIN tree t ON t.attempt = f.stream
            WHERE f.role = 'attempt'
            GROUP BY f.model ORDER BY f.model
            """
        )

    def pass_at_k(self, k: int) -> pa.Table:
        """pass@k per model: the chance that at least one of k attempts at a task passes.

        Uses the unbiased estimator `1 - C(n-c, k) / C(n, k)` per task (n evaluated root
        attempts of the model, c of them passing on the first try), averaged over the tasks
        with n >= k. Columns: `model`, `k`, `tasks` (counted), `tasks_skipped` (n < k),
        `pass_at_k` (null when no task has k attempts).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be an int >= 1, not {k!r}")
        per_task = self._query(
            f"""
            WITH final AS ({_FINAL})
            SELECT model, task_id, count(*) AS n, count(*) FILTER (WHERE passed) AS c
            FROM final WHERE role = 'attempt' GROUP BY model, task_id ORDER BY model, task_id
            """
        ).to_pylist()
        by_model: dict[str, list[tuple[int, int]]] = {}
        for row in per_task:
            by_model.setdefault(row["model"], []).append((row["n"], row["c"]))
        out = []
        for model, tasks in sorted(by_model.items(), key=lambda kv: str(kv[0])):
            values = [1.0 - math.comb(n - c, k) / math.comb(n, k) for n, c in tasks if n >= k]
            out.append(
                {
                    "model": model,
                    "k": k,
                    "tasks": len(values),
                    "tasks_skipped": len(tasks) - len(values),
                    "pass_at_k": sum(values) / len(values) if values else None,
                }
            )
        return pa.Table.from_pylist(out, schema=_PASS_AT_K_SCHEMA)

    def materialize_metric(self, name: str | None = None) -> Materialization:
        """Define the incremental metric over the ledger: per model and role, the number of
        evaluations, mean and best score, and pass rate (`<prefix>-metric` by default).

        Refresh it with `.refresh()`: only ledger rows added since the last refresh are read.
        """
        self.ledger()
        view = name if name is not None else f"{self.prefix.replace('/', '-')}-metric"
        return self.log.materialize(
            view,
            self.scores_stream,
            query="""
                SELECT model, role, count(*) AS evaluations, avg(score) AS mean_score,
                       max(score) AS best_score, avg(CAST(passed AS DOUBLE)) AS pass_rate
                FROM records GROUP BY model, role
            """,
        )


_FINAL = """
    SELECT arg_max(task_id, _offset) AS task_id, stream, arg_max(role, _offset) AS role,
           arg_max(attempt, _offset) AS attempt, arg_max(model, _offset) AS model,
           arg_max(score, _offset) AS score, arg_max(passed, _offset) AS passed,
           count(*) AS evaluations
    FROM scores GROUP BY stream
"""

_TRACES_SCHEMA = schema_of(
    ("name", pa.string()),
    ("role", pa.string()),
    ("task_id", pa.string()),
    ("model", pa.string()),
    ("attempt", pa.string()),
    ("kind", pa.string()),
    ("parent", pa.string()),
    ("winner", pa.string()),
    ("next_offset", pa.int64()),
)

_PASS_AT_K_SCHEMA = schema_of(
    ("model", pa.string()),
    ("k", pa.int64()),
    ("tasks", pa.int64()),
    ("tasks_skipped", pa.int64()),
    ("pass_at_k", pa.float64()),
)


def _add_score(
    evals: Evals,
    trace: Trace,
    score: float | None,
    passed: bool | None,
    evaluator: str | None,
    ref: str,
    offset: int,
    ledger: Stream | None,
) -> None:
    row = {
        "task_id": trace.task_id,
        "stream": trace.name,
        "role": trace.role,
        "attempt": trace.attempt_name or (trace.name if trace.role == "attempt" else None),
        "model": trace.model,
        "score": score,
        "passed": passed,
        "evaluator": evaluator,
        "subject_ref": ref,
        "trace_offset": offset,
    }
    append_rows(ledger or evals.ledger(), SCORES_SCHEMA, [row])
