"""What the report needs from a log, as structural types.

The report package sits above the engine: it never imports `transit_arrow.log` and friends.
It receives the log as a parameter whose type is `ReportSource`, the few public `Log` methods
it calls, so any object with those methods (a `Log`, a test double, a remote client) works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa

__all__ = ["Connection", "ReportSource", "VerifyCheck", "VerifyResult"]


class VerifyCheck(Protocol):
    """One check of a verification (`transit_arrow.VerifyEntry`)."""

    @property
    def stream(self) -> str:
        """The stream the check is about."""

    @property
    def check(self) -> str:
        """What was checked: "commits", "pin", "checkpoint" or "segment"."""

    @property
    def ok(self) -> bool:
        """Whether it passed."""

    @property
    def object(self) -> str:
        """The file or folder checked."""

    @property
    def detail(self) -> str:
        """A readable description."""

    @property
    def expected(self) -> str | None:
        """The hash the chain records (on failure)."""

    @property
    def found(self) -> str | None:
        """The hash the bytes give."""


class VerifyResult(Protocol):
    """The result of `Log.verify` (`transit_arrow.VerifyReport`)."""

    @property
    def target(self) -> str:
        """What was verified: "stream" or "stream@gN"."""

    @property
    def deep(self) -> bool:
        """Whether segment files were re-hashed."""

    @property
    def ok(self) -> bool:
        """True when every check passed."""

    @property
    def entries(self) -> Sequence[VerifyCheck]:
        """Every check made."""


class Connection(Protocol):
    """The part of a DuckDB connection the report uses."""

    def sql(self, query: str, /) -> Any:
        """Run `query`; the result has `fetchall()`."""


class ReportSource(Protocol):
    """The public `Log` methods the report and the lineage picture call.

    `transit_arrow.Log` satisfies it; so does any object with the same methods.
    """

    @property
    def uri(self) -> str:
        """The log's URI."""

    def lineage(self) -> pa.Table:
        """The lineage table, one row per stream (`Log.lineage`)."""

    def streams(self) -> pa.Table:
        """One row per stream with its committed offset, generation and root."""

    def checkpoints(self) -> pa.Table:
        """Every recorded checkpoint."""

    def verify(self, target: Any, *, deep: bool = False) -> VerifyResult:
        """Verify a stream (by name) or a checkpoint."""

    def duckdb(self) -> Connection:
        """A new DuckDB connection where every stream is a view."""
