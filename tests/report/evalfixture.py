"""Build eval-like logs: tasks as roots, model attempts, retries and critiques as branches,
best attempts merged back (the shapes of the logs the report is for)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import transit_arrow as ta

MODELS = ("small", "medium", "large")
POLICIES = ("concat", "interleave", "pin")
_EPOCH = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class EvalLog:
    """What `build_eval_log` made, to compare the report against."""

    path: Path
    tasks: list[str]
    streams: list[str] = field(default_factory=list)
    merges: dict[str, str] = field(default_factory=dict)  # merge -> policy
    own: dict[str, int] = field(default_factory=dict)  # stream -> records appended to it
    checkpoints: list[str] = field(default_factory=list)


def _attempts(rng: random.Random, model: str, n: int, t0: datetime) -> list[dict[str, Any]]:
    skill = {"small": 0.3, "medium": 0.55, "large": 0.8}.get(model, 0.5)
    rows = []
    for i in range(n):
        score = round(min(1.0, max(0.0, rng.gauss(skill, 0.2))), 3)
        rows.append(
            {
                "_timestamp": t0 + timedelta(seconds=i),
                "model": model,
                "attempt": i,
                "passed": score >= 0.5,
                "score": score,
                "tokens": rng.randint(200, 4000),
                "latency_ms": round(rng.uniform(100, 3000), 1),
            }
        )
    return rows


def build_eval_log(
    path: Path,
    *,
    tasks: int = 10,
    records: int = 3,
    seed: int = 7,
    checkpoint_every: int = 4,
) -> EvalLog:
    """An eval log: per task a root `task-N` (its setup record), a branch per model
    (`task-N/<model>`) holding attempts, retries (`.../retry-1`) of some model branches,
    critiques of some retries (`.../retry-1/critique`), and a merge `task-N/best` of the model
    branches whose policy cycles through concat, interleave and pin (pin merges record a
    winner and scores in their policy params and append the chosen reconciliation).
    """
    rng = random.Random(seed)
    out = EvalLog(path=path, tasks=[f"task-{i}" for i in range(tasks)])
    with ta.open(path, durability="memory") as log:
        for t, task in enumerate(out.tasks):
            t0 = _EPOCH + timedelta(hours=t)
            root = log.create_stream(task)
            root.append({"_timestamp": t0, "model": "setup", "attempt": -1, "tokens": 0})
            out.streams.append(task)
            out.own[task] = 1
            heads = []
            for m, model in enumerate(MODELS):
                name = f"{task}/{model}"
                branch = log.branch(name, at=f"{task}@0", actor=model, reason="attempt")
                branch.append(_attempts(rng, model, records, t0 + timedelta(minutes=m + 1)))
                out.streams.append(name)
                out.own[name] = records
                heads.append(name)
                if (t + m) % 2 == 0:  # a retry after a failed attempt
                    retry = log.branch(
                        f"{name}/retry-1",
                        at=f"{name}@{records - 1}",
                        actor="agent",
                        reason="tool timeout",
                        labels={"model": model, "try": "2"},
                    )
                    retry.append(_attempts(rng, model, 2, t0 + timedelta(minutes=m + 10)))
                    out.streams.append(retry.name)
                    out.own[retry.name] = 2
                    if (t + m) % 4 == 0:  # a critique of the retry
                        critique = log.branch(
                            f"{retry.name}/critique", at=f"{retry.name}@{records}"
                        )
                        critique.append(
                            {
                                "_timestamp": t0 + timedelta(minutes=m + 20),
                                "model": "judge",
                                "attempt": 0,
                                "critique": "missing edge case",
                                "score": 0.2,
                            }
                        )
                        out.streams.append(critique.name)
                        out.own[critique.name] = 1
            policy = POLICIES[t % len(POLICIES)]
            params: dict[str, Any] | None = None
            if policy == "pin":
                scores = {h: round(rng.random(), 3) for h in heads}
                winner = max(scores, key=lambda h: scores[h])
                params = {"winner": winner, "scores": scores}
            best = log.merge(
                f"{task}/best",
                parents=heads,
                policy=policy,
                policy_params=params,
                actor="judge",
                reason="keep the best attempt",
                labels={"task": task},
            )
            out.streams.append(best.name)
            out.merges[best.name] = policy
            merged = 0 if policy == "pin" else records * len(heads)
            if policy == "pin":
                best.append(_attempts(rng, "large", 1, t0 + timedelta(minutes=30)))
                merged += 1
            out.own[best.name] = merged
            if checkpoint_every and t % checkpoint_every == 0:
                root.flush()
                cp = root.checkpoint(kind="eval-start")
                out.checkpoints.append(cp.stream)
    return out
