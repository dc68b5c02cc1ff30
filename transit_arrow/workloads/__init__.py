"""Workload helpers: AI traces and evals, chat channels, artifacts (DESIGN §11).

Helpers over plain records and lineage metadata: whatever they write, a plain `append`,
`branch` or `merge` could also write. The data model is documented in docs/workloads.md.
Importing this package registers the `best_of` merge policy (`custom:best_of`).
"""

from __future__ import annotations

from .artifacts import ENVELOPE_TYPE, Envelope, get_artifact, put_artifact
from .chat import CHAT_SCHEMA, Channel, Classifier, Fork, Message, Thread
from .evals import EVAL_SCHEMA, SCORES_SCHEMA, Evals, Task, Trace, merge_best

__all__ = [
    "CHAT_SCHEMA",
    "ENVELOPE_TYPE",
    "EVAL_SCHEMA",
    "SCORES_SCHEMA",
    "Channel",
    "Classifier",
    "Envelope",
    "Evals",
    "Fork",
    "Message",
    "Task",
    "Thread",
    "Trace",
    "get_artifact",
    "merge_best",
    "put_artifact",
]
