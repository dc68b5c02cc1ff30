"""Import OpenTelemetry GenAI spans (OTLP JSON) as eval traces: one task per trace.

Reads an OTLP/JSON export (`{"resourceSpans": [{"resource", "scopeSpans": [{"scope",
"spans": [...]}]}]}`, one JSON document or one per line, as the OpenTelemetry Collector's file
exporter writes) and maps the spans that follow the GenAI semantic conventions:

- a trace (`traceId`) -> a task root `<prefix>/<trace id>`: the first user message of
  `gen_ai.input.messages` (or the root span's name) as the input;
- its model calls and tools -> one attempt `.../<gen_ai.agent.name or 'run'>` by the first
  model that answered;
- a `chat` / `text_completion` span -> a `message` by the assistant (the trace's last one:
  the `answer`) with tokens and latency; tool-call parts of `gen_ai.output.messages` become
  `tool_call` records (the text said with them is their `content`);
- an `execute_tool` span -> a `tool_result` paired by `gen_ai.tool.call.id` (preceded by a
  `tool_call` when no model span announced it); an error status or `error.type` sets
  `is_error`;
- a `gen_ai.evaluation.result` event -> an `evaluation` by `gen_ai.evaluation.name` with its
  score, label (passed) and explanation, judging the answer.

Other spans (`invoke_agent`, HTTP, ...) only shape the task (agent name, conversation id). The
records keep the spans' start times as `_timestamp`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError
from ...log import Log
from .._common import check_prefix, refuse_existing
from ..evals import Evals, Trace

__all__ = ["OtelImport", "import_otel_spans"]

_MODEL_OPS = ("chat", "text_completion", "generate_content")
_PASS_LABELS = ("pass", "passed", "correct", "true", "yes", "relevant", "good")


@dataclass(frozen=True)
class OtelImport:
    """What `import_otel_spans` wrote."""

    prefix: str
    traces: int
    spans: int
    model_calls: int
    tool_calls: int
    evaluations: int
    streams: list[str]


@dataclass
class _Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    start: int
    end: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    error: bool
    resource: dict[str, Any]

    @property
    def operation(self) -> str:
        return str(self.attributes.get("gen_ai.operation.name") or "")

    @property
    def latency_ms(self) -> float:
        return max(0, self.end - self.start) / 1e6


def _value(value: Any) -> Any:
    """An OTLP `AnyValue` as a Python value."""
    if not isinstance(value, Mapping):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values") or [])
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {
        str(kv["key"]): _value(kv.get("value"))
        for kv in items
        if isinstance(kv, Mapping) and "key" in kv
    }


def _hex_id(value: Any) -> str:
    """A trace or span id as hex (OTLP/JSON writes hex; protobuf's JSON mapping base64)."""
    text = str(value or "")
    if len(text) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text


def _documents(path: Path) -> Iterator[Mapping[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read {path}: {e}") from None
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if whole is not None:
        yield from whole if isinstance(whole, list) else [whole]
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as e:
                raise InvalidInputError(f"{path}:{n} is not OTLP JSON: {e}") from None


def _spans(documents: Iterator[Mapping[str, Any]], source: str) -> list[_Span]:
    spans: list[_Span] = []
    found = False
    for doc in documents:
        if not isinstance(doc, Mapping) or "resourceSpans" not in doc:
            raise InvalidInputError(f"{source} is not OTLP JSON (no 'resourceSpans')")
        found = True
        for rs in doc["resourceSpans"] or []:
            resource = _attributes((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                for raw in ss.get("spans") or []:
                    attributes = _attributes(raw.get("attributes"))
                    status = raw.get("status") or {}
                    code = status.get("code")
                    error = code in (2, "STATUS_CODE_ERROR") or "error.type" in attributes
                    events = [
                        (
                            str(e.get("name")),
                            int(e.get("timeUnixNano") or 0),
                            _attributes(e.get("attributes")),
                        )
                        for e in raw.get("events") or []
                        if isinstance(e, Mapping)
                    ]
                    spans.append(
                        _Span(
                            trace_id=_hex_id(raw.get("traceId")),
                            span_id=_hex_id(raw.get("spanId")),
                            parent=_hex_id(raw.get("parentSpanId")),
                            name=str(raw.get("name") or ""),
                            start=int(raw.get("startTimeUnixNano") or 0),
                            end=int(raw.get("endTimeUnixNano") or 0),
                            attributes=attributes,
                            events=events,
                            error=error,
                            resource=resource,
                        )
                    )
    if not found:
        raise InvalidInputError(f"{source} holds no OTLP document")
    return spans


def _messages(value: Any) -> list[Mapping[str, Any]]:
    """`gen_ai.input.messages` / `gen_ai.output.messages` (JSON text or a list)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [{"role": "assistant", "parts": [{"type": "text", "content": value}]}]
    return [m for m in value if isinstance(m, Mapping)] if isinstance(value, list) else []


def _text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [
            str(p.get("content", ""))
            for p in parts
            if isinstance(p, Mapping) and p.get("type") == "text"
        ]
        return "\n".join(texts)
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _tool_parts(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    parts = message.get("parts")
    if isinstance(parts, list):
        return [p for p in parts if isinstance(p, Mapping) and p.get("type") == "tool_call"]
    calls = message.get("tool_calls")
    return [c for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []


def _time(nanos: int) -> datetime | None:
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def _task_input(spans: list[_Span]) -> str:
    for span in spans:
        for message in _messages(span.attributes.get("gen_ai.input.messages")):
            if message.get("role") == "user":
                return _text(message)
    return spans[0].name


def _model(spans: list[_Span]) -> str:
    """The model that answered first: a model span's response (else request) model."""
    ordered = [s for s in spans if s.operation in _MODEL_OPS] + spans
    for span in ordered:
        for key in ("gen_ai.response.model", "gen_ai.request.model"):
            if span.attributes.get(key):
                return str(span.attributes[key])
    return "unknown"


def _evaluations(attempt: Trace, span: _Span, subject: int | None) -> int:
    count = 0
    for name, when, attrs in span.events:
        if name != "gen_ai.evaluation.result":
            continue
        score = attrs.get("gen_ai.evaluation.score.value")
        label = str(attrs.get("gen_ai.evaluation.score.label") or "")
        value = float(score) if isinstance(score, int | float) else float(label in _PASS_LABELS)
        attempt.evaluate(
            score=value,
            passed=label.lower() in _PASS_LABELS if label else value >= 1.0,
            evaluator=str(attrs.get("gen_ai.evaluation.name") or "evaluator"),
            subject=subject,
            rationale=attrs.get("gen_ai.evaluation.explanation"),
            at_time=_time(when),
        )
        count += 1
    return count


def _write_trace(attempt: Trace, spans: list[_Span]) -> tuple[int, int, int]:
    """Append a trace's records; returns (model calls, tool calls, evaluations)."""
    model_spans = [s for s in spans if s.operation in _MODEL_OPS]
    last_model = model_spans[-1] if model_spans else None
    announced: set[str] = set()
    answer: int | None = None
    models = tools = evaluations = 0
    for span in spans:
        at = _time(span.start)
        attrs = span.attributes
        if span.operation in _MODEL_OPS:
            models += 1
            tokens = sum(
                int(attrs.get(k) or 0)
                for k in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
            )
            outputs = _messages(attrs.get("gen_ai.output.messages"))
            text = "\n".join(t for t in (_text(m) for m in outputs) if t)
            calls = [c for m in outputs for c in _tool_parts(m)]
            for i, call in enumerate(calls):
                call_id = str(call.get("id") or f"{span.span_id}-{i}")
                attempt.tool_call(
                    str(call.get("name") or "unknown"),
                    call.get("arguments"),
                    call_id=call_id,
                    content=(text or None) if i == 0 else None,
                    tokens=(tokens or None) if i == 0 else None,
                    latency_ms=span.latency_ms if i == 0 else None,
                    at_time=at,
                )
                announced.add(call_id)
            if calls:
                continue
            if span is last_model:
                answer = attempt.answer(
                    text, tokens=tokens or None, latency_ms=span.latency_ms, at_time=at
                )
            else:
                attempt.message(
                    "assistant", text, tokens=tokens or None, latency_ms=span.latency_ms, at_time=at
                )
        elif span.operation == "execute_tool":
            tools += 1
            call_id = str(attrs.get("gen_ai.tool.call.id") or span.span_id)
            if call_id not in announced:
                attempt.tool_call(
                    str(attrs.get("gen_ai.tool.name") or span.name),
                    attrs.get("gen_ai.tool.call.arguments"),
                    call_id=call_id,
                    at_time=at,
                )
                announced.add(call_id)
            result = attrs.get("gen_ai.tool.call.result")
            if result is None and span.error:
                result = attrs.get("error.type") or "error"
            attempt.tool_result(
                call_id, result, is_error=span.error, latency_ms=span.latency_ms, at_time=at
            )
    for span in spans:
        evaluations += _evaluations(attempt, span, answer)
    return models, tools, evaluations


def import_otel_spans(log: Log, path: str | Path, *, prefix: str = "otel") -> OtelImport:
    """Import the GenAI traces of an OTLP JSON file into `log` (see the module's table).

    Args:
        log: the log to write to.
        path: an OTLP/JSON file (one document, a list, or one document per line).
        prefix: the `Evals` prefix: traces go to `<prefix>/<trace id>`.

    Returns:
        What was written; query it with `Evals(log, prefix=prefix)`.

    Raises:
        InvalidInputError: not OTLP JSON, or no GenAI span in it (nothing is written).
        AlreadyExistsError: a trace's task stream exists (checked first: nothing is written).
    """
    check_prefix(prefix)
    source = Path(path)
    spans = _spans(_documents(source), str(source))
    traces: dict[str, list[_Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.span_id)):
        traces.setdefault(span.trace_id, []).append(span)
    genai = {
        t: group
        for t, group in traces.items()
        if any(s.operation in (*_MODEL_OPS, "execute_tool") for s in group)
    }
    if not genai:
        raise InvalidInputError(f"{source} has no GenAI span (gen_ai.operation.name)")
    evals = Evals(log, prefix=prefix)
    refuse_existing(log, (evals.task_stream(t) for t in genai), source)
    streams: list[str] = []
    models = tools = evaluations = 0
    for trace_id, group in genai.items():
        root = next((s for s in group if not s.parent), group[0])
        agent = root.attributes.get("gen_ai.agent.name")
        task = evals.create_task(
            trace_id,
            input=_task_input(group),
            metadata={
                "source": "opentelemetry",
                "root_span": root.name,
                "service": root.resource.get("service.name"),
                "conversation_id": root.attributes.get("gen_ai.conversation.id"),
                "agent": agent,
            },
            actor=str(root.resource.get("service.name") or "otel"),
            at_time=_time(root.start),
        )
        attempt = task.attempt(
            model=_model(group), name=str(agent or "run"), reason=f"trace {trace_id}"
        )
        streams += [task.name, attempt.name]
        counts = _write_trace(attempt, group)
        models += counts[0]
        tools += counts[1]
        evaluations += counts[2]
    return OtelImport(
        prefix=prefix,
        traces=len(genai),
        spans=sum(len(g) for g in genai.values()),
        model_calls=models,
        tool_calls=tools,
        evaluations=evaluations,
        streams=streams,
    )
