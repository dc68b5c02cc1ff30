"""Eval traces: tasks, attempts, retries, critiques, best-of merges, ledger and queries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.compute as pc
import pytest

import transit_arrow as ta
from transit_arrow.workloads import EVAL_SCHEMA, Evals, Task, Trace, merge_best


def lineage_row(log: ta.Log, name: str) -> dict:
    rows = log.lineage().filter(pc.field("name") == name).to_pylist()
    assert len(rows) == 1, name
    row = rows[0]
    row["labels"] = dict(row["labels"] or [])
    return row


def streams(log: ta.Log) -> list[str]:
    return log.streams().column("name").to_pylist()


def attempt_with(task: Task, model: str, answer: str, score: float, passed: bool) -> Trace:
    attempt = task.attempt(model=model)
    attempt.answer(answer)
    attempt.evaluate(score=score, passed=passed, evaluator="exact")
    return attempt


@pytest.fixture
def evals(log: ta.Log) -> Evals:
    return Evals(log)


def test_task_is_a_root_and_attempts_branch_at_the_task_record(log: ta.Log, evals: Evals) -> None:
    task = evals.create_task("q/1 ?", input="What is 2 + 3?", target={"answer": 5})
    assert task.name == "evals/q-1" and task.task_id == "q/1 ?"
    row = task.read().to_pylist()[0]
    assert (row["kind"], row["content"], row["target"]) == (
        "task",
        "What is 2 + 3?",
        '{"answer":5}',
    )
    assert task.stream.schema.names[-len(EVAL_SCHEMA) :] == EVAL_SCHEMA.names

    a1 = task.attempt(model="small")
    a2 = task.attempt(model="large", name="big one")
    assert (a1.name, a2.name) == ("evals/q-1/a1", "evals/q-1/big-one")
    lin = lineage_row(log, a1.name)
    assert (lin["kind"], lin["parent_stream"], lin["parent_offset"]) == ("branch", task.name, 0)
    assert lin["labels"] == {
        "model": "small",
        "prefix": "evals",
        "role": "attempt",
        "task_id": "q/1 ?",
        "workload": "evals",
    }
    offset = a1.message("user", "hi", tokens=3)
    assert offset == 1
    record = a1.read().to_pylist()[1]
    assert (record["model"], record["task_id"], record["tokens"]) == ("small", "q/1 ?", 3)
    assert evals.tasks() == ["q/1 ?"]
    assert isinstance(evals.task("q/1 ?"), Task)
    with pytest.raises(ta.AlreadyExistsError):
        evals.create_task("q/1 ?", input="again")


def test_tool_calls_are_paired_by_id_and_checked(evals: Evals) -> None:
    attempt = evals.create_task("t", input="x").attempt(model="m")
    first = attempt.tool_call("search", {"q": "transit"}, call_id="c1")
    second = attempt.tool_call("python", "print(1)")
    assert first == "c1" and second.startswith("call_")
    attempt.tool_result("c1", {"hits": 3}, latency_ms=12.5)
    with pytest.raises(ta.InvalidInputError, match="already answered"):
        attempt.tool_result("c1", "again")
    with pytest.raises(ta.InvalidInputError, match="not a tool call"):
        attempt.tool_result("nope", "x")
    with pytest.raises(ta.InvalidInputError, match="already used"):
        attempt.tool_call("search", call_id="c1")
    before = attempt.stream.next_offset
    paired = attempt.tool_calls().to_pylist()
    assert [(p["tool_call_id"], p["output"], p["result_offset"]) for p in paired] == [
        ("c1", '{"hits":3}', 3),
        (second, None, None),
    ]
    # A retry inherits the open call and may answer it; the parent still may too.
    retry = attempt.retry(reason="tool timeout")
    retry.tool_result(second, "1", is_error=True)
    assert retry.tool_calls().column("is_error").to_pylist() == [False, True]
    assert attempt.stream.next_offset == before


def test_evaluation_points_at_the_judged_answer_and_fills_the_ledger(
    log: ta.Log, evals: Evals
) -> None:
    task = evals.create_task("t", input="x")
    attempt = task.attempt(model="m")
    answer = attempt.answer("42")
    attempt.message("assistant", "anything else?")
    evaluation = attempt.evaluate(score=0.5, passed=False, evaluator="judge", rationale="close")
    record = attempt.read().to_pylist()[evaluation]
    assert record["subject_ref"] == f"{attempt.name}@{answer}"
    assert (record["kind"], record["score"], record["passed"]) == ("evaluation", 0.5, False)
    explicit = attempt.evaluate(score=1, passed=True, evaluator="j2", subject=f"{task.name}@0")
    assert attempt.read().to_pylist()[explicit]["subject_ref"] == f"{task.name}@0"
    ledger = evals.scores().to_pylist()
    assert [(r["stream"], r["score"], r["trace_offset"]) for r in ledger] == [
        (attempt.name, 0.5, evaluation),
        (attempt.name, 1.0, explicit),
    ]
    assert attempt.final_score() == 1.0
    lin = lineage_row(log, evals.scores_stream)
    assert lin["labels"]["role"] == "scores"
    size = len(ledger)
    for bad in (
        {"score": "high", "passed": True, "evaluator": "j"},
        {"score": math.nan, "passed": True, "evaluator": "j"},
        {"score": 1.0, "passed": 1, "evaluator": "j"},
        {"score": 1.0, "passed": True, "evaluator": ""},
        {"score": 1.0, "passed": True, "evaluator": "j", "subject": 99},
        {"score": 1.0, "passed": True, "evaluator": "j", "subject": "nope@1"},
    ):
        with pytest.raises(ta.TransitError):
            attempt.evaluate(**bad)  # type: ignore[arg-type]
    assert evals.scores().num_rows == size
    assert attempt.stream.next_offset == explicit + 1


def test_retry_and_critique_are_anchored_at_their_trigger(log: ta.Log, evals: Evals) -> None:
    task = evals.create_task("t", input="x")
    attempt = task.attempt(model="m")
    answer = attempt.answer("wrong")
    failed = attempt.evaluate(score=0.0, passed=False, evaluator="exact")
    attempt.message("assistant", "after the evaluation")

    retry = attempt.retry(reason="wrong answer", model="m-bigger")
    lin = lineage_row(log, retry.name)
    assert retry.name == f"{attempt.name}/retry-1"
    assert (lin["parent_stream"], lin["parent_offset"], lin["reason"]) == (
        attempt.name,
        failed,
        "wrong answer",
    )
    assert lin["labels"]["trigger"] == f"{attempt.name}@{failed}"
    assert lin["labels"]["attempt"] == attempt.name and lin["labels"]["model"] == "m-bigger"
    assert retry.read().column("content").to_pylist()[-1] is None  # replay ends at the decision
    assert attempt.retry(reason="again").name == f"{attempt.name}/retry-2"

    critique = attempt.critique("cite your source", critic="judge-model", score=0.2)
    lin = lineage_row(log, critique.name)
    assert (lin["parent_offset"], lin["actor"]) == (answer, "judge-model")
    own = critique.read().to_pylist()[-1]
    assert (own["kind"], own["role"], own["evaluator"]) == ("critique", "critic", "judge-model")
    assert own["subject_ref"] == f"{attempt.name}@{answer}"
    assert own["score"] is None and json.loads(own["metadata"]) == {"critic_score": 0.2}
    with pytest.raises(ta.InvalidInputError):
        attempt.retry(reason="x", at=1000)
    with pytest.raises(ta.InvalidInputError):
        attempt.retry(reason="")


def test_best_of_keeps_the_best_final_score_and_records_why(log: ta.Log, evals: Evals) -> None:
    task = evals.create_task("t", input="x")
    a1 = attempt_with(task, "small", "6", 0.0, False)
    retry = a1.retry(reason="wrong")
    retry.answer("5")
    retry.evaluate(score=1.0, passed=True, evaluator="exact")
    a2 = attempt_with(task, "large", "5", 1.0, True)  # ties with the retry: declared order wins
    best = task.best_of([a1, retry, a2], reason="pick the best")
    assert best.name == "evals/t/best" and best.winner == retry.name
    table = best.read()
    assert table.column("content").to_pylist() == ["x", "6", None, "5", None]
    assert table.column("_origin_stream").to_pylist()[1:] == [a1.name, a1.name] + [retry.name] * 2

    lin = lineage_row(log, best.name)
    assert lin["policy"] == "custom:best_of" and lin["reason"] == "pick the best"
    params = json.loads(lin["policy_params"])
    assert params["winner"] == retry.name and params["score"] == "score"
    assert params["scores"] == [
        {"parent": f"{a1.name}@2", "score": 0.0},
        {"parent": f"{retry.name}@4", "score": 1.0},
        {"parent": f"{a2.name}@2", "score": 1.0},
    ]
    assert (lin["labels"]["winner"], lin["labels"]["best_score"]) == (retry.name, "1.0")
    final = {r["stream"]: r for r in evals.final_scores().to_pylist()}
    assert final[best.name]["role"] == "best_of" and final[best.name]["score"] == 1.0

    worst = merge_best(
        log, "evals/t/worst", [a1.name, a2.name], higher_is_better=False, reason="lowest"
    )
    assert worst.read().column("content").to_pylist() == ["x", "6", None]


def test_best_of_refuses_without_scores_and_writes_nothing(log: ta.Log, evals: Evals) -> None:
    task = evals.create_task("t", input="x")
    a1 = task.attempt(model="m")
    a1.answer("1")
    a2 = task.attempt(model="m")
    a2.answer("2")
    before = streams(log)
    with pytest.raises(ta.MergeConflictError, match="has a value of 'score'"):
        task.best_of([a1, a2], reason="r")
    with pytest.raises(ta.MergeConflictError):
        task.best_of([a1], reason="r")
    with pytest.raises(ta.InvalidInputError, match="not a number"):
        merge_best(log, "m", [a1.name, a2.name], score="content", reason="r")
    with pytest.raises(ta.StreamNotFoundError):
        merge_best(log, "m", [a1.name, "evals/nope"], reason="r")
    with pytest.raises(ta.InvalidInputError):
        merge_best(log, "m", [a1.name, f"{a2.name}@99"], reason="r")
    assert streams(log) == before


def test_plain_merge_with_the_registered_policy(log: ta.Log) -> None:
    root = log.create_stream("runs")
    root.append({"step": 0})
    low = log.branch("runs/low", at="runs@0")
    low.append([{"step": 1, "score": 0.2}])
    high = log.branch("runs/high", at="runs@0")
    high.append([{"step": 1, "score": 0.9}, {"step": 2}])
    merged = log.merge("runs/best", ["runs/low", "runs/high"], policy="custom:best_of")
    assert merged.read().column("_origin_stream").to_pylist() == [None, "runs/high", "runs/high"]
    assert low.next_offset == 2


def test_queries_final_scores_pass_rates_and_pass_at_k(evals: Evals) -> None:
    outcomes = {"t1": [True, False, False], "t2": [False, False, True], "t3": [True, True, True]}
    for task_id, results in outcomes.items():
        task = evals.create_task(task_id, input=task_id)
        for i, ok in enumerate(results):
            attempt = attempt_with(task, "m", "a", float(ok), ok)
            if i == 0 and task_id == "t2":
                retry = attempt.retry(reason="failed")
                retry.answer("b")
                retry.evaluate(score=1.0, passed=True, evaluator="exact")
        attempt_with(task, "other", "a", 0.0, False)
    final = evals.final_scores()
    assert final.num_rows == 13
    rates = {r["model"]: r for r in evals.pass_rate_by_model().to_pylist()}
    assert rates["m"]["attempts"] == 9 and rates["m"]["tasks"] == 3
    assert rates["m"]["retries_and_critiques"] == 1
    assert rates["m"]["pass_rate_first_try"] == pytest.approx(5 / 9)
    assert rates["m"]["pass_rate_with_retries"] == pytest.approx(6 / 9)
    assert rates["other"]["pass_rate_first_try"] == 0.0

    at2 = {r["model"]: r for r in evals.pass_at_k(2).to_pylist()}
    # n=3 per task; c = 1, 1, 3: pass@2 = 1 - C(n-c, 2)/C(n, 2)
    expected = ((1 - 1 / 3) + (1 - 1 / 3) + 1.0) / 3
    assert at2["m"]["pass_at_k"] == pytest.approx(expected) and at2["m"]["tasks"] == 3
    assert at2["other"] == {
        "model": "other",
        "k": 2,
        "tasks": 0,
        "tasks_skipped": 3,
        "pass_at_k": None,
    }
    with pytest.raises(ta.InvalidInputError):
        evals.pass_at_k(0)


def test_metric_is_refreshed_incrementally(evals: Evals) -> None:
    task = evals.create_task("t", input="x")
    attempt_with(task, "m", "a", 1.0, True)
    metric = evals.materialize_metric()
    first = metric.refresh()
    attempt_with(task, "m", "b", 0.0, False)
    second = metric.refresh()
    assert (first.records_processed, second.records_processed) == (1, 1)
    assert second.incremental and second.reused_checkpoint is not None
    [row] = metric.read().to_pylist()
    assert (row["evaluations"], row["pass_rate"], row["best_score"]) == (2, 0.5, 1.0)


def test_append_records_checks_every_row_first(evals: Evals) -> None:
    attempt = evals.create_task("t", input="x").attempt(model="m")
    rows = [
        {"kind": "tool_call", "tool_name": "s", "tool_call_id": "c1"},
        {"kind": "tool_result", "tool_call_id": "c1", "output": "ok"},
        {"kind": "message", "role": "assistant", "content": "done"},
    ]
    assert attempt.append_records(rows) == (1, 3)
    assert attempt.tool_calls().column("output").to_pylist() == ["ok"]
    for bad in (
        [{"kind": "evaluation", "score": 1.0}],
        [{"kind": "tool_result", "tool_call_id": "c1"}],
        [{"kind": "tool_call", "tool_call_id": "c1"}],
        [{"kind": "message", "content": "x"}, {"kind": "message", "colour": "red"}],
        [{"kind": "message", "tokens": "many"}],
        [],
    ):
        with pytest.raises(ta.InvalidInputError):
            attempt.append_records(bad)
    assert attempt.stream.next_offset == 4


def test_reopening_traces_from_another_process(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        evals = Evals(log, prefix="suite/v1")
        task = evals.create_task("t", input="x")
        attempt_with(task, "m", "a", 1.0, True).retry(reason="r")
    with ta.open(tmp_path / "log") as log:
        evals = Evals(log, prefix="suite/v1")
        trace = evals.trace("suite/v1/t/a1/retry-1")
        assert (trace.role, trace.model, trace.task_id) == ("retry", "m", "t")
        assert trace.attempt_name == "suite/v1/t/a1"
        assert [r["role"] for r in evals.traces().to_pylist()] == ["task", "attempt", "retry"]
        with pytest.raises(ta.InvalidInputError, match="not an eval trace"):
            evals.trace(evals.scores_stream)
        with pytest.raises(ta.InvalidInputError):
            Evals(log, prefix="/bad")
