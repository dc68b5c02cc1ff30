"""Fixtures of the report tests: eval-like logs (built once per session) and a small family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from evalfixture import EvalLog, build_eval_log

import transit_arrow as ta
from transit_arrow.report import Report, build_report


@pytest.fixture(scope="session")
def eval_log(tmp_path_factory: pytest.TempPathFactory) -> EvalLog:
    """10 tasks: ~70 streams (roots, model branches, retries, critiques, best merges)."""
    return build_eval_log(tmp_path_factory.mktemp("eval") / "log", tasks=10)


@pytest.fixture(scope="session")
def big_eval_log(tmp_path_factory: pytest.TempPathFactory) -> EvalLog:
    """50 tasks by 3 models: 362 streams, 2 records per attempt branch."""
    return build_eval_log(tmp_path_factory.mktemp("big") / "log", tasks=50, records=2)


@pytest.fixture(scope="session")
def big_report(big_eval_log: EvalLog) -> Report:
    """The report of every stream of the big log, with a metric (built once)."""
    with ta.open(big_eval_log.path, create=False) as log:
        return build_report(
            log,
            metrics={"pass_rate": ("rate", "passed"), "mean_score": ("mean", "score")},
            checkpoint_factory=ta.Checkpoint.from_dict,
        )


@pytest.fixture
def log(eval_log: EvalLog) -> Iterator[ta.Log]:
    """The eval log, opened (read-only use)."""
    with ta.open(eval_log.path, create=False) as opened:
        yield opened


@pytest.fixture
def family(tmp_path: Path) -> Iterator[ta.Log]:
    """The README's shapes: events 0..5; retry = events@3 + 2 records; retry/2 = retry@4 + 1;
    best = concat of events and retry; pinned = pin of events and retry (1 record appended);
    ff = fast_forward of retry@4 and retry/2 (which contains it)."""
    with ta.open(tmp_path / "family") as log:
        events = log.create_stream("events")
        events.append([{"i": i, "ok": i % 2 == 0, "score": i / 10} for i in range(6)])
        retry = log.branch("retry", at="events@3", actor="agent", reason="tool timeout")
        retry.append([{"i": 10 + i, "ok": True, "score": 0.9} for i in range(2)])
        sub = log.branch("retry/2", at="retry@4", labels={"model": "small"})
        sub.append({"i": 20, "ok": False, "score": 0.1})
        log.merge("best", ["events", "retry"], policy="concat", actor="judge", reason="keep both")
        pinned = log.merge(
            "pinned",
            ["events", "retry"],
            policy="pin",
            policy_params={"winner": "retry", "scores": {"events": 0.5, "retry": 0.9}},
            reason="retry scored higher",
        )
        pinned.append({"i": 30, "ok": True, "score": 0.95})
        log.merge("ff", ["retry@4", "retry/2"], policy="fast_forward")
        events.flush()
        events.checkpoint(kind="eval-start")
        yield log
