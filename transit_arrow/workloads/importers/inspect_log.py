"""Import an inspect_ai eval log: samples as tasks, epochs as attempts, scores as evaluations.

Mapping (under `Evals(log, prefix=f"{prefix}/{task}")`, `task` = the eval's task name):

| inspect_ai                         | transit-arrow                                            |
|------------------------------------|----------------------------------------------------------|
| sample (by id)                     | task root `<prefix>/<task>/<sample id>`: input, target    |
| epoch N of the sample              | attempt `.../epoch-N` by the eval's model                 |
| message (system, user, assistant)  | `message` record (the last assistant message: `answer`)   |
| assistant tool call                | `tool_call` record with its `tool_call_id`                |
| tool message                       | `tool_result` paired by `tool_call_id` (`is_error` set)    |
| score of scorer S                  | `evaluation` by S, subject = the answer, also in the ledger |

Score values: 'C' = 1.0 (passed), 'P' = 0.5, 'I' and 'N' = 0.0; booleans and numbers as
numbers (passed when >= 1.0); a dict of values is averaged (passed when all pass).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError
from ...log import Log
from .._common import check_prefix, component, refuse_existing
from ..evals import Evals, Trace

__all__ = ["InspectImport", "import_inspect_log"]

_LETTERS = {"C": (1.0, True), "P": (0.5, False), "I": (0.0, False), "N": (0.0, False)}


@dataclass(frozen=True)
class InspectImport:
    """What `import_inspect_log` wrote."""

    task: str
    model: str
    prefix: str
    samples: int
    attempts: int
    evaluations: int
    tool_calls: int
    streams: list[str]

    @property
    def evals(self) -> str:
        """The `Evals` prefix the log was imported under (`Evals(log, prefix=...)`)."""
        return self.prefix


def _read(path: Path) -> dict[str, Any]:
    """The eval log as a JSON-like dict (`.json` directly; `.eval` through inspect_ai)."""
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InvalidInputError(f"{path} is not a JSON eval log: {e}") from None
    elif path.suffix == ".eval":
        try:
            from inspect_ai.log import read_eval_log  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ImportError(
                f'reading {path.name} (.eval logs) needs inspect_ai: pip install "transit-arrow'
                '[evals]" (or convert it: inspect log convert --to json)'
            ) from None
        try:
            data = read_eval_log(str(path)).model_dump(mode="json", exclude_none=True)
        except Exception as e:  # inspect_ai raises many kinds for a bad file
            raise InvalidInputError(f"{path} is not an inspect_ai eval log: {e}") from None
    else:
        raise InvalidInputError(f"{path}: an inspect_ai log ends in .eval or .json")
    if not isinstance(data, dict) or not isinstance(data.get("eval"), dict):
        raise InvalidInputError(f"{path} is not an inspect_ai eval log (no 'eval' header)")
    return data


def _text(content: Any) -> str:
    """Message content (a string, or a list of content parts) as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text") or part.get("reasoning") or part.get("refusal")
                parts.append(str(text) if text is not None else json.dumps(part, default=str))
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return json.dumps(content, default=str)


def _score(value: Any) -> tuple[float, bool]:
    """An inspect_ai score value as (score, passed)."""
    if isinstance(value, bool):
        return float(value), value
    if isinstance(value, int | float):
        return float(value), float(value) >= 1.0
    if isinstance(value, str):
        if value.upper() in _LETTERS:
            return _LETTERS[value.upper()]
        lowered = value.strip().lower()
        if lowered in ("yes", "true", "correct"):
            return 1.0, True
        try:
            number = float(lowered)
        except ValueError:
            return 0.0, False
        return number, number >= 1.0
    if isinstance(value, Mapping) and value:
        pairs = [_score(v) for v in value.values()]
        return sum(s for s, _ in pairs) / len(pairs), all(p for _, p in pairs)
    if isinstance(value, list) and value:
        pairs = [_score(v) for v in value]
        return sum(s for s, _ in pairs) / len(pairs), all(p for _, p in pairs)
    return 0.0, False


def _input(value: Any) -> str:
    """A sample's input (a string or a list of messages) as text."""
    if isinstance(value, list):
        return "\n".join(
            _text(m.get("content")) if isinstance(m, Mapping) else str(m) for m in value
        )
    return _text(value)


def _last_assistant(messages: list[Mapping[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant" and not messages[i].get("tool_calls"):
            return i
    return None


def _write_messages(attempt: Trace, sample: Mapping[str, Any], at: str | None) -> tuple[int, int]:
    """Append a sample's conversation; returns (answer offset or -1, tool calls)."""
    messages = [m for m in sample.get("messages") or [] if isinstance(m, Mapping)]
    final = _last_assistant(messages)
    answer, calls = -1, 0
    for i, msg in enumerate(messages):
        role = str(msg.get("role") or "unknown")
        content = _text(msg.get("content"))
        if role == "assistant" and msg.get("tool_calls"):
            for j, call in enumerate(msg["tool_calls"]):
                attempt.tool_call(
                    str(call.get("function") or "unknown"),
                    call.get("arguments"),
                    call_id=str(call.get("id") or f"{sample.get('id')}-{i}-{j}"),
                    content=content if j == 0 and content else None,
                    at_time=at,
                )
                calls += 1
        elif role == "tool" and msg.get("tool_call_id"):
            error = msg.get("error")
            attempt.tool_result(str(msg["tool_call_id"]), content, is_error=bool(error), at_time=at)
        elif i == final:
            usage = (sample.get("output") or {}).get("usage") or {}
            answer = attempt.answer(content, tokens=usage.get("total_tokens"), at_time=at)
        else:
            attempt.message(role, content, at_time=at)
    if sample.get("error"):
        attempt.message("error", _text(sample["error"].get("message", sample["error"])), at_time=at)
    return answer, calls


def import_inspect_log(log: Log, path: str | Path, *, prefix: str = "inspect") -> InspectImport:
    """Import an inspect_ai eval log into `log` (see the module's mapping table).

    Args:
        log: the log to write to.
        path: the eval log, `.json` (read directly) or `.eval` (read with inspect_ai).
        prefix: the streams' prefix; tasks go to `<prefix>/<task name>/<sample id>`.

    Returns:
        What was written; query it with `Evals(log, prefix=result.prefix)`.

    Raises:
        InvalidInputError: the file is not an inspect_ai eval log (nothing is written).
        AlreadyExistsError: a sample's task stream exists already, e.g. the log was imported
            before (checked first: nothing is written).
        ImportError: a `.eval` file and inspect_ai is not installed.
    """
    check_prefix(prefix)
    data = _read(Path(path))
    header = data["eval"]
    task_name = str(header.get("task") or "task")
    model = str(header.get("model") or "unknown")
    samples = [s for s in data.get("samples") or [] if isinstance(s, Mapping)]
    if not samples:
        raise InvalidInputError(f"{path} has no samples (a header-only log cannot be imported)")
    evals = Evals(log, prefix=f"{prefix}/{component(task_name)}")
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for sample in samples:
        by_id.setdefault(str(sample.get("id")), []).append(sample)
    refuse_existing(log, (evals.task_stream(i) for i in by_id), path)
    streams: list[str] = []
    attempts = evaluations = tool_calls = 0
    for sample_id, epochs in by_id.items():
        first = epochs[0]
        task = evals.create_task(
            sample_id,
            input=_input(first.get("input")),
            target=first.get("target"),
            metadata={
                "source": "inspect_ai",
                "eval_id": header.get("eval_id"),
                "run_id": header.get("run_id"),
                "task": task_name,
                "sample_metadata": first.get("metadata") or {},
            },
            actor="inspect_ai",
            at_time=header.get("created"),
        )
        streams.append(task.name)
        for sample in sorted(epochs, key=lambda s: int(s.get("epoch") or 1)):
            epoch = int(sample.get("epoch") or 1)
            attempt = task.attempt(
                model=model, name=f"epoch-{epoch}", actor="inspect_ai", reason=f"epoch {epoch}"
            )
            streams.append(attempt.name)
            attempts += 1
            when = sample.get("started_at")
            answer, calls = _write_messages(attempt, sample, when)
            tool_calls += calls
            for scorer, result in (sample.get("scores") or {}).items():
                if not isinstance(result, Mapping):
                    continue
                score, passed = _score(result.get("value"))
                attempt.evaluate(
                    score=score,
                    passed=passed,
                    evaluator=str(scorer),
                    subject=answer if answer >= 0 else None,
                    rationale=_text(result.get("explanation")) or None,
                    at_time=sample.get("completed_at") or when,
                )
                evaluations += 1
    return InspectImport(
        task=task_name,
        model=model,
        prefix=evals.prefix,
        samples=len(by_id),
        attempts=attempts,
        evaluations=evaluations,
        tool_calls=tool_calls,
        streams=streams,
    )
