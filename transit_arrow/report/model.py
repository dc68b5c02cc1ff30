"""The provenance report's data: streams, metrics, merges, verification (DESIGN §11).

`collect(...)` reads the lineage table, asks DuckDB for each stream's records and metrics,
verifies every stream and checkpoint, and returns the report's data (`ReportData`): lists of
summaries, also readable as Arrow tables (`streams_table()`, `metrics_table()`, ...).
`build.build_report` is the public entry point; `html.py` renders the data.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from typing import Any, TypeVar, get_args, get_type_hints

import pyarrow as pa

from ..errors import InvalidInputError, TransitError
from .dag import Node, matches_prefix, plural, stream_names
from .graph import LineageGraph
from .source import Connection, ReportSource, VerifyResult

__all__ = [
    "METRIC_SCOPES",
    "CheckpointFactory",
    "CheckpointSummary",
    "MergeSummary",
    "MetricSpec",
    "MetricValue",
    "ReportData",
    "StreamSummary",
    "Verification",
    "arrow_schema",
    "collect",
    "metric_sql",
]

METRIC_SCOPES = ("own", "all", "both")
MetricSpec = str | tuple[str, str]
CheckpointFactory = Callable[[dict[str, Any]], object]
R = TypeVar("R", bound="ReportData")

# Column aggregates: `("mean", "score")` is `avg("score")`.
AGGREGATES = {
    "count": "count({c})",
    "distinct": "count(DISTINCT {c})",
    "sum": "sum({c})",
    "mean": "avg({c})",
    "avg": "avg({c})",
    "min": "min({c})",
    "max": "max({c})",
    "median": "median({c})",
    "p90": "quantile_cont({c}, 0.9)",
    "p95": "quantile_cont({c}, 0.95)",
    "p99": "quantile_cont({c}, 0.99)",
    "rate": "avg(CASE WHEN {c} THEN 1.0 WHEN NOT {c} THEN 0.0 END)",
    "any": "bool_or({c})",
    "all": "bool_and({c})",
}


def sql_name(name: str) -> str:
    """`name` as a quoted SQL identifier (a `"` inside is doubled)."""
    return '"' + name.replace('"', '""') + '"'


def sql_text(text: str) -> str:
    """`text` as a SQL string literal (a `'` inside is doubled)."""
    return "'" + text.replace("'", "''") + "'"


def metric_sql(name: object, spec: object) -> str:
    """The SQL aggregate expression of a metric: the string itself, or for a column
    aggregate `(aggregate, column)` (e.g. `("mean", "score")`, `("rate", "passed")`) the
    expression it stands for (`avg("score")`); see `AGGREGATES`.

    Raises:
        InvalidInputError: a name that is not a non-empty string, or a spec that is neither a
            non-empty string nor an `(aggregate, column)` pair of a known aggregate.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"a metric name must be a non-empty string, not {name!r}")
    if isinstance(spec, str):
        if not spec.strip():
            raise InvalidInputError(f"metric {name!r}: the SQL expression is empty")
        return spec
    if (
        isinstance(spec, tuple | list)
        and len(spec) == 2
        and all(isinstance(part, str) and part for part in spec)
    ):
        aggregate, column = spec
        template = AGGREGATES.get(aggregate.lower())
        if template is None:
            raise InvalidInputError(
                f"metric {name!r}: unknown aggregate {aggregate!r}; use one of "
                f"{', '.join(AGGREGATES)} or a SQL expression"
            )
        return template.format(c=sql_name(column))
    raise InvalidInputError(
        f"metric {name!r} must be a SQL aggregate expression (a string, e.g. 'avg(score)') or "
        f"an (aggregate, column) pair such as ('mean', 'score'), not {spec!r}"
    )


@dataclass(frozen=True)
class StreamSummary:
    """One stream of the report.

    Attributes:
        records: records in its replay (`next_offset`).
        own: its own records (offsets from `own_start`); for a merge, the merged records
            plus those appended to it since.
        inherited: records its replay inherits from its parent or base.
        merged: for a concat or interleave merge, the records it took from its parents
            after the base (None otherwise).
        uncommitted: records an open writer holds that no commit covers yet (not verified).
    """

    name: str
    kind: str
    group: str
    derives_from: str
    records: int
    own: int
    inherited: int
    merged: int | None
    own_start: int
    first_own: str | None
    last_own: str | None
    generation: int
    committed_offset: int
    uncommitted: int
    root: str
    created_at: str | None
    actor: str | None
    reason: str | None
    labels: str
    verified: bool | None
    stats_error: str | None = None


@dataclass(frozen=True)
class MetricValue:
    """One metric of one stream over its own records ("own") or its whole replay ("all").

    `value` is the number (None when the result is not a number, or on error), `text` what
    the report shows (the value, or the error), `error` DuckDB's message when the SQL failed.
    """

    stream: str
    metric: str
    scope: str
    value: float | None
    text: str
    error: str | None


@dataclass(frozen=True)
class MergeSummary:
    """A merge: its policy and what it did with its parents, and why."""

    name: str
    group: str
    policy: str
    policy_version: str | None
    params: str
    parents: str
    base: str | None
    winner: str | None
    outcome: str
    scores: str | None
    actor: str | None
    reason: str | None
    labels: str
    created_at: str | None


@dataclass(frozen=True)
class Verification:
    """The verification of a stream (as the report saw it) or of a checkpoint.

    Attributes:
        target: `stream@gN`, the generation verified.
        kind: "stream" or "checkpoint".
        ok: True, False, or None when it was not run (`error` says why).
        checked: what was checked, e.g. "3 commit chains, 4 pins, 2 segment files".
        failures: one line per failed check (file, expected and found hashes).
        claim: the `{stream, generation, head_offset, root}` JSON that `transit verify
            --checkpoint` re-verifies later.
    """

    stream: str
    target: str
    kind: str
    generation: int
    root: str
    ok: bool | None
    deep: bool
    checked: str
    failures: str
    claim: str
    command: str
    error: str | None = None


@dataclass(frozen=True)
class CheckpointSummary:
    """A recorded checkpoint and its verification."""

    stream: str
    kind: str
    generation: int
    head_offset: int
    root: str
    created_at: str
    verification: Verification


def _table(rows: Sequence[Any], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=schema)


_ARROW_TYPES: dict[object, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def arrow_schema(cls: type) -> pa.Schema:
    """The Arrow schema of a summary dataclass: one nullable column per field, typed from its
    annotation (`str`, `int`, `float`, `bool`, optionally `| None`)."""
    hints = get_type_hints(cls)
    columns = []
    for f in fields(cls):
        kinds = [t for t in get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
        columns.append(pa.field(f.name, _ARROW_TYPES[kinds[0]]))
    return pa.schema(columns)


@dataclass
class ReportData:
    """The data of a provenance report (`build.Report` adds HTML), as lists of summaries and
    as Arrow tables.

    Attributes:
        uri: the log's URI.
        title: the report's heading.
        scope: which streams it covers, in words.
        created_at: when it was built (UTC, RFC 3339).
        graph: the lineage DAG of the streams covered (with context parents), coloured by
            verification status.
        streams: one summary per stream covered, in name order.
        metrics: each metric of each stream, per scope.
        metric_names: the metrics asked for, in the order given.
        metric_sql: the SQL of each metric.
        metric_scopes: "own", "all", or both.
        merges: one summary per merge covered.
        verifications: one per stream covered (the generation the report saw).
        checkpoints: the recorded checkpoints of the streams covered, verified.
        deep: whether verification re-hashed segment files.
        rebuild: the `transit report` command that rebuilds it.
    """

    uri: str
    title: str
    scope: str
    created_at: str
    graph: LineageGraph
    streams: list[StreamSummary]
    metrics: list[MetricValue]
    metric_names: list[str]
    metric_sql: dict[str, str]
    metric_scopes: tuple[str, ...]
    merges: list[MergeSummary]
    verifications: list[Verification]
    checkpoints: list[CheckpointSummary]
    deep: bool
    rebuild: str
    version: str = field(default="")

    @property
    def ok(self) -> bool:
        """True when every stream and checkpoint verified (checks not run do not count)."""
        return not self.failures

    @property
    def failures(self) -> list[Verification]:
        """The verifications that failed."""
        checks = self.verifications + [c.verification for c in self.checkpoints]
        return [v for v in checks if v.ok is False]

    def metric(self, stream: str, metric: str, scope: str = "own") -> MetricValue:
        """The value of `metric` for `stream` over its own records or all (`scope`)."""
        for value in self.metrics:
            if (value.stream, value.metric, value.scope) == (stream, metric, scope):
                return value
        raise InvalidInputError(f"the report has no {scope} metric {metric!r} of {stream!r}")

    def streams_table(self) -> pa.Table:
        """One row per stream: kind, records (own, inherited, merged), time span of its own
        records, generation, root and verification status."""
        return _table(self.streams, arrow_schema(StreamSummary))

    def metrics_table(self, *, wide: bool = False) -> pa.Table:
        """The metrics: one row per stream, metric and scope; `wide`: one row per stream,
        one column per metric (and scope, `name (all)`), values as numbers (errors null)."""
        long = _table(self.metrics, arrow_schema(MetricValue))
        if not wide:
            return long
        columns: dict[str, list[Any]] = {"stream": [s.name for s in self.streams]}
        values = {(m.stream, m.metric, m.scope): m.value for m in self.metrics}
        for name in self.metric_names:
            for scope in self.metric_scopes:
                column = name if scope == "own" or len(self.metric_scopes) == 1 else f"{name} (all)"
                columns[column] = [values.get((s, name, scope)) for s in columns["stream"]]
        return pa.table(
            {
                k: pa.array(v, pa.string() if k == "stream" else pa.float64())
                for k, v in columns.items()
            }
        )

    def merges_table(self) -> pa.Table:
        """One row per merge: policy, parents with pinned offsets, base, winner, outcome,
        params and scores, actor, reason, labels."""
        return _table(self.merges, arrow_schema(MergeSummary))

    def verification_table(self) -> pa.Table:
        """One row per stream and checkpoint verified: OK/FAIL, what was checked, the claim
        and the command that re-verifies it."""
        rows = self.verifications + [c.verification for c in self.checkpoints]
        return _table(rows, arrow_schema(Verification))

    def commands(self) -> list[str]:
        """The shell commands that reproduce the report's checks: each claim (stream as the
        report saw it, and recorded checkpoints) with `transit verify --checkpoint`."""
        return [v.command for v in self.verifications] + [
            c.verification.command for c in self.checkpoints
        ]

    def to_dict(self) -> dict[str, Any]:
        """The report's data as JSON-serialisable values."""
        return {
            "title": self.title,
            "uri": self.uri,
            "scope": self.scope,
            "created_at": self.created_at,
            "ok": self.ok,
            "deep": self.deep,
            "streams": [asdict(s) for s in self.streams],
            "metrics": {"sql": self.metric_sql, "values": [asdict(m) for m in self.metrics]},
            "merges": [asdict(m) for m in self.merges],
            "verifications": [asdict(v) for v in self.verifications],
            "checkpoints": [asdict(c) for c in self.checkpoints],
            "graph": self.graph.to_dict(),
            "rebuild": self.rebuild,
        }

    def __repr__(self) -> str:
        kinds = Counter(s.kind for s in self.streams)
        status = "all OK" if self.ok else f"{len(self.failures)} FAILED"
        counts = ", ".join(plural(kinds[k], k) for k in ("root", "branch", "merge") if kinds[k])
        return (
            f"<{type(self).__name__} {self.title!r}: {plural(len(self.streams), 'stream')} "
            f"({counts or 'none'}), {plural(len(self.metric_names), 'metric')}, "
            f"{plural(len(self.checkpoints), 'checkpoint')}; verification {status}>"
        )


# --- building ---------------------------------------------------------------------------------


def _check_options(
    metrics: object, metrics_scope: object, deep: object, verify: object, title: object
) -> dict[str, str]:
    if not isinstance(deep, bool) or not isinstance(verify, bool):
        raise InvalidInputError("deep and verify must be True or False")
    if metrics_scope not in METRIC_SCOPES:
        raise InvalidInputError(
            f"metrics_scope must be one of {', '.join(METRIC_SCOPES)}, not {metrics_scope!r}"
        )
    if title is not None and not isinstance(title, str):
        raise InvalidInputError(f"title must be a string, not {title!r}")
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidInputError(
            "metrics must map metric names to SQL aggregate expressions, e.g. "
            f"{{'mean_score': 'avg(score)'}}, not {type(metrics).__name__}"
        )
    return {name: metric_sql(name, spec) for name, spec in metrics.items()}


def _scope_text(streams: Sequence[str] | str | None, prefix: str | None) -> str:
    if prefix is not None:
        return f"streams under {prefix}"
    if streams is not None:
        names = [streams] if isinstance(streams, str) else list(streams)
        return "streams " + ", ".join(names) + " and what derives from them"
    return "every stream"


def _rebuild(
    uri: str,
    streams: Sequence[str] | str | None,
    prefix: str | None,
    metrics: Mapping[str, MetricSpec] | None,
    options: Mapping[str, Any],
) -> str:
    """The `transit report` command that builds the same report."""
    args = ["transit", "report", uri]
    if prefix is not None:
        args += ["--prefix", prefix]
    elif streams is not None:
        args += stream_names(streams)
    for name, spec in (metrics or {}).items():
        args += ["--metric", f"{name}={spec if isinstance(spec, str) else ':'.join(spec)}"]
    if options["metrics_scope"] != "own":
        args += ["--metrics-scope", options["metrics_scope"]]
    if options["deep"]:
        args.append("--deep")
    if options["title"] is not None:
        args += ["--title", options["title"]]
    return shlex.join([*args, "-o", "report.html"])


def _version() -> str:
    try:
        return metadata.version("transit-arrow")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        text: str = moment.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | int | float | Decimal):
        return float(value)
    return None


def _format(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class _Builder:
    """Collects a report's parts from one log."""

    def __init__(self, log: ReportSource, deep: bool, factory: CheckpointFactory | None) -> None:
        self.log = log
        self.deep = deep
        self.factory = factory
        self.uri = log.uri
        self.committed = {r["name"]: r for r in log.streams().to_pylist()}
        self._con: Connection | None = None
        self._con_error: str | None = None

    @property
    def con(self) -> Connection | None:
        if self._con is None and self._con_error is None:
            try:
                self._con = self.log.duckdb()
            except Exception as e:  # the report still shows what the lineage table says
                self._con_error = _first_line(e)
        return self._con

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of `sql` (raises `QueryFailed` with the first line of the error)."""
        con = self.con
        if con is None:
            raise QueryFailed(self._con_error or "no DuckDB connection")
        try:
            return [tuple(r) for r in con.sql(sql).fetchall()]
        except Exception as e:  # DuckDB's own error types, and QueryError
            raise QueryFailed(_first_line(e)) from e

    # --- streams and metrics ----------------------------------------------------------------

    def batch(
        self, nodes: Sequence[Node], aggregates: Sequence[str], own: bool
    ) -> dict[str, tuple[Any, ...]] | None:
        """`aggregates` of every node's own records (`own`) or whole replay, in one query
        over `transit_records`: {stream: values}. Streams without such records are absent;
        None when the query fails."""
        if not nodes or not aggregates:
            return {}
        scope = ", ".join(
            f"({sql_text(n.name)}, {n.own_start if own else 0}, {n.next_offset})" for n in nodes
        )
        query = (
            f"WITH __ta_scope(__ta_stream, __ta_lo, __ta_hi) AS (VALUES {scope}) "
            f"SELECT __ta_stream, {', '.join(aggregates)} FROM __ta_scope "
            "JOIN transit_records AS records ON records._branch = __ta_stream "
            "AND records._offset >= __ta_lo AND records._offset < __ta_hi GROUP BY __ta_stream"
        )
        try:
            return {row[0]: row[1:] for row in self.rows(query)}
        except QueryFailed:
            return None

    def measure(
        self, nodes: Sequence[Node], sql: Mapping[str, str], scopes: Sequence[str]
    ) -> tuple[dict[str, tuple[Any, Any]], list[MetricValue]]:
        """The time span of each node's own records, and its metrics per scope.

        One grouped query per scope answers for every stream. When it fails (a metric names a
        column that some streams lack, or whose types conflict across them), each metric
        gets a grouped query of its own; a metric whose query still fails, and a stream with
        no records in range, are asked on the stream's own view, so that a failing metric
        only fills its own cells with the error.
        """
        span = ["min(records._timestamp)", "max(records._timestamp)"]
        stats: dict[str, tuple[Any, Any]] = {}
        values: list[MetricValue] = []
        for scope in scopes:
            own = scope == "own"
            by_metric: dict[str, dict[str, Any] | None] = {}
            found = self.batch(nodes, (span if own else []) + [f"({q})" for q in sql.values()], own)
            if found is not None:
                skip = len(span) if own else 0
                if own:
                    stats.update({k: (v[0], v[1]) for k, v in found.items()})
                for i, name in enumerate(sql):
                    by_metric[name] = {k: v[skip + i] for k, v in found.items()}
            else:
                if own:
                    spans = self.batch(nodes, span, True) or {}
                    stats.update({k: (v[0], v[1]) for k, v in spans.items()})
                for name, query in sql.items():
                    one = self.batch(nodes, [f"({query})"], own)
                    by_metric[name] = None if one is None else {k: v[0] for k, v in one.items()}
            for node in nodes:
                missing = {
                    n: q
                    for n, q in sql.items()
                    if by_metric[n] is None or node.name not in (by_metric[n] or {})
                }
                asked = self.metrics_of(node, missing, node.own_start if own else 0)
                for name in sql:
                    value, error = (
                        asked[name] if name in asked else ((by_metric[name] or {})[node.name], None)
                    )
                    text = f"error: {error}" if error is not None else _format(value)
                    values.append(MetricValue(node.name, name, scope, _number(value), text, error))
        return stats, values

    def metrics_of(
        self, node: Node, sql: Mapping[str, str], start: int
    ) -> dict[str, tuple[Any, str | None]]:
        """{metric: (value, error)} over the node's records from `start`, from its own view:
        all metrics in one query, or one query per metric when that fails."""
        if not sql:
            return {}
        source = (
            f"(SELECT * FROM {sql_name(node.name)} WHERE _offset >= {start} AND _offset < "
            f"{node.next_offset}) AS records"
        )
        select = ", ".join(f"({q}) AS {sql_name(n)}" for n, q in sql.items())
        try:
            row = self.rows(f"SELECT {select} FROM {source}")[0]
            return {name: (value, None) for name, value in zip(sql, row, strict=True)}
        except QueryFailed:
            pass
        out: dict[str, tuple[Any, str | None]] = {}
        for name, query in sql.items():
            try:
                out[name] = (self.rows(f"SELECT ({query}) FROM {source}")[0][0], None)
            except QueryFailed as e:
                out[name] = (None, str(e))
        return out

    def stream(
        self, node: Node, group: str, verified: bool | None, span: tuple[Any, Any] | None
    ) -> StreamSummary:
        """The summary of one stream (`span`: first and last timestamp of its own records)."""
        end = node.next_offset
        info = self.committed.get(node.name, {})
        committed = int(info.get("committed_offset", end))
        first, last = span if span is not None else (None, None)
        return StreamSummary(
            name=node.name,
            kind=node.kind,
            group=group,
            derives_from=_derives(node),
            records=end,
            own=node.own,
            inherited=node.inherited,
            merged=_merged(node),
            own_start=node.own_start,
            first_own=_iso(first),
            last_own=_iso(last),
            generation=int(info.get("generation", node.generation)),
            committed_offset=committed,
            uncommitted=max(0, end - committed),
            root=str(info.get("root", node.root)),
            created_at=node.created_at,
            actor=node.actor,
            reason=node.reason,
            labels=", ".join(f"{k}={v}" for k, v in node.labels),
            verified=verified,
            stats_error=self._con_error,
        )

    # --- verification -------------------------------------------------------------------

    def claim(self, node: Node) -> dict[str, Any]:
        """What the report saw of a stream, as a checkpoint claim `transit verify` takes."""
        info = self.committed.get(node.name, {})
        return {
            "stream": node.name,
            "generation": int(info.get("generation", node.generation)),
            "head_offset": int(info.get("committed_offset", node.next_offset)) - 1,
            "root": str(info.get("root", node.root)),
        }

    def verify(self, claim: dict[str, Any], kind: str, run: bool) -> Verification:
        """Verify `claim` (a stream's state as the report read it, or a recorded checkpoint)."""
        text = json.dumps(claim, sort_keys=True, separators=(",", ":"))
        base = self.base(
            claim["stream"],
            target=f"{claim['stream']}@g{claim['generation']}",
            kind=kind,
            generation=claim["generation"],
            root=claim["root"],
            claim=text,
            args=["--checkpoint", text],
        )
        if not run:
            return Verification(**base, ok=None, checked="", failures="", error="not run")
        if self.factory is not None:
            return self.run(self.factory(claim), base)
        if kind == "stream":  # without a checkpoint type: the stream's latest state
            return self.run(claim["stream"], base)
        return Verification(
            **base,
            ok=None,
            checked="",
            failures="",
            error="not run: build_report needs checkpoint_factory to verify checkpoints",
        )

    def verify_damaged(self, name: str, run: bool) -> Verification:
        """Verify, by name, a stream the lineage table leaves out because it is damaged."""
        info = self.committed.get(name, {})
        generation = info.get("generation")
        base = self.base(
            name,
            target=name,
            kind="stream",
            generation=-1 if generation is None else int(generation),
            root=str(info.get("root") or ""),
            claim="",
            args=[name],
        )
        if not run:
            return Verification(**base, ok=None, checked="", failures="", error="not run")
        return self.run(name, base)

    def base(
        self,
        stream: str,
        *,
        target: str,
        kind: str,
        generation: int,
        root: str,
        claim: str,
        args: list[str],
    ) -> dict[str, Any]:
        """The fields of a `Verification` other than its outcome, with its command."""
        command = shlex.join(["transit", "verify", self.uri, *args])
        return {
            "stream": stream,
            "target": target,
            "kind": kind,
            "generation": generation,
            "root": root,
            "deep": self.deep,
            "claim": claim,
            "command": command + (" --deep" if self.deep else ""),
        }

    def run(self, target: object, base: dict[str, Any]) -> Verification:
        """`log.verify(target)` as a `Verification` (a refusal is a failure, with its reason)."""
        try:
            result = self.log.verify(target, deep=self.deep)
        except TransitError as e:
            return Verification(**base, ok=False, checked="", failures="", error=_first_line(e))
        checked, failures = _checked(result), _failed(result)
        return Verification(**base, ok=result.ok, checked=checked, failures=failures)


class QueryFailed(Exception):
    """A report query failed; the message is the first line of DuckDB's."""


def _derives(node: Node) -> str:
    if node.kind == "branch" and node.parent is not None:
        return str(node.parent)
    if node.kind == "merge":
        return ", ".join(str(p) for p in node.merge_parents)
    return ""


def _merged(node: Node) -> int | None:
    """Records a concat or interleave merge took from its parents (after the base)."""
    if node.kind != "merge" or node.policy not in ("concat", "interleave"):
        return None
    base = node.base.offset if node.base is not None else -1
    return sum(max(0, p.offset - base) for p in node.merge_parents)


_CHECK_NOUNS = {
    "commits": "commit chain",
    "pin": "pinned reference",
    "checkpoint": "checkpoint root",
    "segment": "segment file",
}


def _checked(result: VerifyResult) -> str:
    counts = Counter(e.check for e in result.entries)
    parts = []
    for check, noun in _CHECK_NOUNS.items():
        n = counts.pop(check, 0)
        if n:
            parts.append(f"{n} {noun}{'s' if n != 1 else ''}")
    parts += [f"{n} {check}" for check, n in sorted(counts.items())]
    return ", ".join(parts) + ("" if result.deep else " (segment files not re-hashed)")


def _failed(result: VerifyResult) -> str:
    lines = []
    for e in result.entries:
        if not e.ok:
            line = f"{e.check} {e.stream}: {e.detail} [{e.object}]"
            if e.expected or e.found:
                line += f" (expected {e.expected}, found {e.found})"
            lines.append(line)
    return "\n".join(lines)


def _merge(node: Node, group: str) -> MergeSummary:
    policy = node.policy or "?"
    params = dict(node.policy_params)
    base = str(node.base) if node.base is not None else None
    winner = node.winner
    parents = ", ".join(f"{p} (g{p.generation})" for p in node.merge_parents)
    after = f" after the base {base}" if base else ""
    if policy == "fast_forward":
        outcome = f"fast-forward to {winner}: it contains every other parent"
    elif policy == "concat":
        taken = "; ".join(f"{p.stream} {_span(p.offset, node.base)}" for p in node.merge_parents)
        outcome = f"combined: the parents' records{after}, in this order: {taken}"
    elif policy == "interleave":
        outcome = f"combined: the parents' records{after}, ordered by timestamp"
    elif policy == "pin":
        appended = node.own
        outcome = (
            f"pinned the parents; the replay is the base prefix, then {appended} record"
            f"{'s' if appended != 1 else ''} appended as the reconciliation"
        )
    elif policy.startswith("custom:"):
        outcome = (
            f"resolver {policy[7:]} (version {node.policy_version}) wrote {node.own} records{after}"
        )
    else:
        outcome = policy
    if winner is not None and policy != "fast_forward":
        outcome = f"winner {winner} (recorded); " + outcome
    scores = params.get("scores")
    return MergeSummary(
        name=node.name,
        group=group,
        policy=policy,
        policy_version=node.policy_version,
        params=json.dumps(params, sort_keys=True) if params else "",
        parents=parents,
        base=base,
        winner=winner,
        outcome=outcome,
        scores=json.dumps(scores, sort_keys=True) if isinstance(scores, dict) else None,
        actor=node.actor,
        reason=node.reason,
        labels=", ".join(f"{k}={v}" for k, v in node.labels),
        created_at=node.created_at,
    )


def _span(offset: int, base: Any) -> str:
    first = base.offset + 1 if base is not None else 0
    if offset < first:
        return "(none)"
    return f"@{first}..{offset} ({offset - first + 1})"


def collect(
    report_type: type[R],
    log: ReportSource,
    *,
    streams: Sequence[str] | str | None,
    prefix: str | None,
    metrics: Mapping[str, MetricSpec] | None,
    metrics_scope: str,
    deep: bool,
    verify: bool,
    title: str | None,
    checkpoint_factory: CheckpointFactory | None,
) -> R:
    """Read, query and verify what a report of `log` shows (see `build.build_report`)."""
    if streams is not None and prefix is not None:
        raise InvalidInputError("pass streams or prefix, not both")
    sql = _check_options(metrics, metrics_scope, deep, verify, title)
    scopes = ("own", "all") if metrics_scope == "both" else (metrics_scope,)
    full = LineageGraph.from_table(log.lineage(), title=f"lineage of {log.uri}")
    builder = _Builder(log, deep, checkpoint_factory)
    # A damaged stream is left out of the lineage table (it cannot be read) but still listed
    # by `streams()`: the report verifies it by name, which says what is wrong.
    damaged = [n for n in builder.committed if n not in full.nodes]
    if streams is not None:
        asked = stream_names(streams)
        readable = [n for n in asked if n not in damaged]
        damaged = [n for n in damaged if n in asked]
        graph = full.select(streams=readable) if readable else full.subset([])
    else:
        graph = full.select(prefix=prefix)
        damaged = [n for n in damaged if prefix is None or matches_prefix(n, prefix)]
    groups = graph.group_map()
    selected = graph.selected

    verifications = [builder.verify(builder.claim(n), "stream", verify) for n in selected]
    verifications += [builder.verify_damaged(n, verify) for n in damaged]
    status = {v.stream: v.ok for v in verifications if v.ok is not None}
    spans, values = builder.measure(selected, sql, scopes)
    summaries = [
        builder.stream(n, groups[n.name], status.get(n.name), spans.get(n.name)) for n in selected
    ]
    merges = [_merge(n, groups[n.name]) for n in selected if n.kind == "merge"]

    names = {n.name for n in selected} | set(damaged)
    checkpoints = []
    for row in log.checkpoints().to_pylist():
        if row["stream"] in names:
            check = builder.verify(dict(row), "checkpoint", verify)
            checkpoints.append(
                CheckpointSummary(
                    stream=row["stream"],
                    kind=row["kind"],
                    generation=row["generation"],
                    head_offset=row["head_offset"],
                    root=row["root"],
                    created_at=row["created_at"],
                    verification=check,
                )
            )
    return report_type(
        uri=log.uri,
        title=title or "Provenance report",
        scope=_scope_text(streams, prefix),
        created_at=_iso(datetime.now(UTC)) or "",
        graph=graph.with_status(status),
        streams=summaries,
        metrics=values,
        metric_names=list(sql),
        metric_sql=sql,
        metric_scopes=scopes,
        merges=merges,
        verifications=verifications,
        checkpoints=checkpoints,
        deep=deep,
        rebuild=_rebuild(
            log.uri,
            streams,
            prefix,
            metrics,
            {"metrics_scope": metrics_scope, "deep": deep, "title": title},
        ),
        version=_version(),
    )
