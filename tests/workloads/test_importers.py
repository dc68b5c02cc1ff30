"""Importers on real files: an inspect_ai eval log (mockllm, offline) and OTLP GenAI spans."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

import transit_arrow as ta
from transit_arrow.workloads import Evals
from transit_arrow.workloads.importers import import_inspect_log, import_otel_spans

DATA = Path(__file__).parent / "data"
HAS_INSPECT = importlib.util.find_spec("inspect_ai") is not None
NEEDS_INSPECT = pytest.mark.skipif(
    not HAS_INSPECT, reason='inspect_ai is not installed (pip install "transit-arrow[evals]")'
)


def check_inspect_import(log: ta.Log, path: Path) -> None:
    result = import_inspect_log(log, path)
    assert (result.task, result.model, result.prefix) == (
        "arithmetic",
        "mockllm/model",
        "inspect/arithmetic",
    )
    assert (result.samples, result.attempts, result.evaluations, result.tool_calls) == (2, 4, 4, 4)
    evals = Evals(log, prefix=result.prefix)
    assert sorted(evals.tasks()) == ["add-10-4", "add-2-3"]
    task = evals.task("add-10-4").read().to_pylist()[0]
    assert (task["content"], task["target"]) == ("What is 10 + 4? Use the add tool.", "14")
    assert json.loads(task["metadata"])["source"] == "inspect_ai"
    epoch = evals.trace("inspect/arithmetic/add-10-4/epoch-2")
    records = epoch.read()
    assert records.column("kind").to_pylist() == [
        "task",
        "message",
        "tool_call",
        "tool_result",
        "answer",
        "evaluation",
    ]
    [call] = epoch.tool_calls().to_pylist()
    assert (call["tool_name"], json.loads(call["arguments"]), call["output"]) == (
        "add",
        {"x": 10, "y": 4},
        "14",
    )
    last = records.to_pylist()[-1]
    assert (last["evaluator"], last["score"], last["passed"]) == ("match", 0.0, False)
    assert last["subject_ref"] == f"{epoch.name}@4" and records.to_pylist()[4]["content"] == "15"
    final = {r["stream"].rsplit("/", 2)[-2:][0]: r for r in evals.final_scores().to_pylist()}
    assert len(evals.final_scores()) == 4 and final
    [rate] = evals.pass_rate_by_model().to_pylist()
    assert (rate["attempts"], rate["pass_rate_first_try"]) == (4, 0.75)
    [at1] = evals.pass_at_k(1).to_pylist()
    assert at1["pass_at_k"] == pytest.approx((0.5 + 1.0) / 2)
    lineage = log.lineage().filter(pc.field("name") == epoch.name).to_pylist()[0]
    assert (lineage["parent_stream"], lineage["reason"]) == (
        "inspect/arithmetic/add-10-4",
        "epoch 2",
    )


def test_inspect_json_log(log: ta.Log) -> None:
    check_inspect_import(log, DATA / "inspect_eval.json")


@NEEDS_INSPECT
def test_inspect_eval_log(log: ta.Log) -> None:
    check_inspect_import(log, DATA / "inspect_eval.eval")


@NEEDS_INSPECT
def test_inspect_eval_produced_offline_now(tmp_path: Path) -> None:
    """Runs a real inspect_ai eval with the mockllm model (no network) and imports its log."""
    script = DATA / "make_inspect_log.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with ta.open(tmp_path / "log") as log:
        check_inspect_import(log, tmp_path / "out" / "inspect_eval.eval")


def test_eval_logs_need_inspect_ai_when_it_is_missing(log: ta.Log) -> None:
    if HAS_INSPECT:
        pytest.skip("inspect_ai is installed here")
    with pytest.raises(ImportError, match=r"transit-arrow\[evals\]"):
        import_inspect_log(log, DATA / "inspect_eval.eval")


def test_inspect_import_refuses_bad_files_and_repeats(log: ta.Log, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"not": "a log"}')
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "log.txt").write_text("x")
    for path in ("bad.json", "broken.json", "log.txt", "missing.json"):
        with pytest.raises(ta.InvalidInputError):
            import_inspect_log(log, tmp_path / path)
    assert log.streams().num_rows == 0
    import_inspect_log(log, DATA / "inspect_eval.json")
    before = log.streams().num_rows
    with pytest.raises(ta.AlreadyExistsError, match="imported before"):
        import_inspect_log(log, DATA / "inspect_eval.json")
    assert log.streams().num_rows == before


def test_otel_genai_spans(log: ta.Log) -> None:
    result = import_otel_spans(log, DATA / "otel_genai_traces.json")
    assert (result.traces, result.spans, result.model_calls, result.tool_calls) == (2, 11, 5, 3)
    assert result.evaluations == 2
    evals = Evals(log, prefix="otel")
    weather = evals.trace("otel/4bf92f3577b34da6a3ce929d0e0e4736/weather-agent")
    assert weather.model == "gpt-4o-mini-2024-07-18"
    rows = weather.read().to_pylist()
    assert [r["kind"] for r in rows] == ["task", "tool_call", "tool_result", "answer", "evaluation"]
    assert rows[0]["content"] == "What's the weather in Paris?"
    assert rows[1]["tool_call_id"] == rows[2]["tool_call_id"] == "call_VSPygqKTWdrhaFErNvMV18Yl"
    assert (rows[1]["tokens"], rows[1]["latency_ms"]) == (115, 810.0)
    assert rows[3]["content"] == "It is 18 °C and sunny in Paris right now."
    assert str(rows[3]["_timestamp"]) == "2025-12-02 00:00:01.420000+00:00"
    assert (rows[4]["evaluator"], rows[4]["score"], rows[4]["passed"]) == (
        "answer_relevancy",
        0.92,
        True,
    )
    assert rows[4]["subject_ref"] == f"{weather.name}@3"

    travel = evals.trace("otel/0af7651916cd43dd8448eb211c80319c/travel-agent")
    calls = travel.tool_calls().to_pylist()
    assert [(c["tool_name"], c["is_error"]) for c in calls] == [
        ("search_flights", True),
        ("search_flights", False),
    ]
    assert calls[0]["output"] == "TimeoutError" and calls[0]["latency_ms"] == 5000.0
    retry_text = travel.read().filter(pc.field("kind") == "tool_call").column("content")
    assert retry_text.to_pylist() == [None, "The search timed out; trying again."]
    final = {r["model"]: r for r in evals.final_scores().to_pylist()}
    assert final["claude-sonnet-4-5-20250929"]["passed"] is False


def test_otel_bad_input_and_ndjson(log: ta.Log, tmp_path: Path) -> None:
    doc = json.loads((DATA / "otel_genai_traces.json").read_text())
    lines = [json.dumps({"resourceSpans": [rs]}) for rs in doc["resourceSpans"]]
    (tmp_path / "spans.ndjson").write_text("\n".join(lines) + "\n")
    (tmp_path / "plain.json").write_text(
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "GET"}]}]}]})
    )
    (tmp_path / "other.json").write_text('{"traces": []}')
    for name in ("plain.json", "other.json", "missing.json"):
        with pytest.raises(ta.InvalidInputError):
            import_otel_spans(log, tmp_path / name)
    assert log.streams().num_rows == 0
    assert import_otel_spans(log, tmp_path / "spans.ndjson", prefix="lines").traces == 2
    with pytest.raises(ta.AlreadyExistsError):
        import_otel_spans(log, tmp_path / "spans.ndjson", prefix="lines")
