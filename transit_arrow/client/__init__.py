"""A client of `transit serve`: the `Log`/`Stream` API of `transit_arrow.open` over Arrow Flight.

`connect("grpc://host:port", token=...)` returns a `RemoteLog` whose methods have the
signatures of `Log`'s and whose streams (`RemoteStream`) have those of `Stream`, for the
operations a server can run: creating streams, appending (idempotent producers included),
reading, time travel, live tails, durable cursors, branches, merges, lineage, checkpoints,
verification, SQL and SQL materializations. It talks Flight only
(the protocol is in `docs/flight.md`), so it never touches the log's files: every process or
machine that can reach the server reads and writes the same streams.

Differences from a local `Log`, all due to the network:

- results the engine returns as objects come back as plain copies with the same fields and
  methods: `RemoteAck` (`Ack`), `RemoteCheckpoint` (`Checkpoint`), `RemoteVerifyReport`
  (`VerifyReport`), `RemoteRefreshReport` (`RefreshReport`), `RemoteTail` (`Tail`),
  `RemoteCursor` (`Cursor`);
- `RemoteLog.sql` returns a `pyarrow.Table` (not a DuckDB relation); `scan()` fetches the
  records and returns them as a polars `LazyFrame` (no pushdown to the server);
- materializations are SQL only (a Python reducer cannot run on the server);
- the server is the only writer of the streams it serves, so `take_over` fences writers of
  other processes that open the log directly; `RemoteStream.close()` releases nothing;
- every append is one Flight call (about 1 ms on loopback): send records in batches.

Errors: every failure the server reports arrives with a stable code (`error.code`) and is
raised as the `TransitError` subclass the server raised (`StreamNotFoundError`,
`SchemaMismatchError`, ...); `UnauthorizedError` for a missing or wrong token,
`UnavailableError` (a `StorageError`) when the server cannot be reached or is shutting down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import pyarrow as pa
import pyarrow.flight as flight

from .. import errors
from ..errors import InvalidInputError, LogClosedError, TransitError
from ..record import from_arrow
from ..typing import Durability
from .protocol import (
    AUTH_HEADER,
    AppendCommand,
    InternalError,
    ReadTicket,
    UnauthorizedError,
    UnavailableError,
    decode_error,
    error_from_detail,
    json_bytes,
    schema_from_text,
    schema_to_text,
    table_from_bytes,
    with_code,
)

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "RemoteAck",
    "RemoteCheckpoint",
    "RemoteCursor",
    "RemoteLog",
    "RemoteMaterialization",
    "RemoteRefreshReport",
    "RemoteStream",
    "RemoteStreamView",
    "RemoteTail",
    "RemoteVerifyEntry",
    "RemoteVerifyReport",
    "connect",
]

# Error classes the client can raise by the name the server sends.
_KNOWN: dict[str, type[TransitError]] = {
    name: getattr(errors, name) for name in errors.__all__ if name.endswith("Error")
}
_KNOWN.update(
    {
        kind.__name__: kind
        for kind in (UnauthorizedError, UnavailableError, InternalError, TransitError)
    }
)
_SCHEMES = ("grpc", "grpc+tcp", "grpc+tls")
_MAX_SCHEMA_RESTARTS = 10
_CALLER_SYSTEM = {
    "_timestamp": pa.timestamp("us", tz="UTC"),
    "_headers": pa.map_(pa.string(), pa.string()),
}


def connect(
    uri: str,
    *,
    token: str | None = None,
    tls_root_certs: bytes | str | None = None,
    timeout: float | None = None,
) -> RemoteLog:
    """Connect to a `transit serve` server and return the log it serves.

    Args:
        uri: `grpc://host:port`, or `grpc+tls://host:port` for a TLS server.
        token: the server's bearer token.
        tls_root_certs: PEM certificates to trust for TLS (default: the system's).
        timeout: seconds each call may take (live tails excepted); None: no limit.

    Raises:
        UnauthorizedError: the token is missing or wrong.
        UnavailableError: the server cannot be reached.
        InvalidInputError: `uri` is not a Flight URI.
    """
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise _invalid(f"not a Flight URI: {uri!r}; use grpc://host:port or grpc+tls://host:port")
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise _invalid("the token must be non-empty and hold no whitespace")
    roots = tls_root_certs.decode() if isinstance(tls_root_certs, bytes) else tls_root_certs
    try:
        client = (
            flight.FlightClient(uri, tls_root_certs=roots)
            if roots is not None
            else flight.FlightClient(uri)
        )
    except (pa.ArrowException, OSError) as e:
        raise _invalid(f"cannot use {uri!r}: {e}") from None
    channel = _Channel(client, uri, token, timeout)
    try:
        info = channel.call("ping", {})
    except BaseException:
        client.close()
        raise
    return RemoteLog(channel, info)


class _Channel:
    """A Flight client with the token, the timeout and error mapping."""

    def __init__(
        self, client: flight.FlightClient, uri: str, token: str | None, timeout: float | None
    ) -> None:
        self.client = client
        self.uri = uri
        self.closed = False
        # Bytes at run time (pyarrow-stubs say str).
        headers: list[Any] = []
        if token is not None:
            headers = [(AUTH_HEADER.encode(), f"Bearer {token}".encode())]
        self.options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        self.stream_options = flight.FlightCallOptions(headers=headers)  # no deadline

    def check(self) -> None:
        if self.closed:
            raise with_code(
                LogClosedError(f"the connection to {self.uri} is closed; connect again"),
                "unavailable",
            )

    def raw(self, kind: str, body: dict[str, Any]) -> bytes:
        """Run an action; its single result's bytes."""
        self.check()
        try:
            payload = json_bytes(body)
        except (TypeError, ValueError) as e:
            raise _invalid(f"{kind}: arguments are not JSON-serialisable: {e}") from None
        try:
            results = list(self.client.do_action(flight.Action(kind, payload), self.options))
        except flight.FlightError as e:
            raise decode_error(e, _KNOWN) from None
        if len(results) != 1:
            raise with_code(
                InternalError(f"action {kind!r} returned {len(results)} results, expected 1"),
                "internal",
            )
        return results[0].body.to_pybytes()

    def call(self, kind: str, body: dict[str, Any]) -> Any:
        """Run an action whose result is JSON."""
        return json.loads(self.raw(kind, body))

    def table(self, kind: str, body: dict[str, Any]) -> pa.Table:
        """Run an action whose result is an Arrow table."""
        return table_from_bytes(self.raw(kind, body))

    def get(self, ticket: ReadTicket, *, live: bool = False) -> flight.FlightStreamReader:
        """Start a DoGet."""
        self.check()
        try:
            payload = ticket.to_ticket()
        except (TypeError, ValueError) as e:
            raise _invalid(f"read: arguments are not JSON-serialisable: {e}") from None
        try:
            return self.client.do_get(payload, self.stream_options if live else self.options)
        except flight.FlightError as e:
            raise decode_error(e, _KNOWN) from None

    def put(self, command: AppendCommand, batch: pa.RecordBatch) -> dict[str, Any]:
        """Upload one batch (one atomic append) and return its ack message."""
        self.check()
        message: dict[str, Any] = {}
        failure: flight.FlightError | None = None
        try:
            writer, acks = self.client.do_put(command.to_descriptor(), batch.schema, self.options)
        except flight.FlightError as e:
            raise decode_error(e, _KNOWN) from None
        try:
            writer.write_batch(batch)
            writer.done_writing()
            buffer = cast(flight.FlightMetadataReader, acks).read()
            if buffer is not None:
                message = json.loads(buffer.to_pybytes())
        except flight.FlightError as e:
            failure = e
        try:
            writer.close()  # raises the call's error, if any
        except flight.FlightError as e:
            failure = failure or e
        if "first_offset" in message:
            return message  # acknowledged: durable at its level, whatever happened after
        if isinstance(message.get("error"), dict):
            raise error_from_detail(message["error"], _KNOWN)
        if failure is not None:
            raise decode_error(failure, _KNOWN) from None
        raise error_from_detail(
            {"code": "internal", "message": f"the server sent no ack: {message!r}"}, _KNOWN
        )


def _chunks(reader: flight.FlightStreamReader) -> Iterator[flight.FlightStreamChunk]:
    """The chunks of a DoGet, with Flight errors raised as `TransitError`s."""
    try:
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                return
            yield chunk
    except flight.FlightError as e:
        raise decode_error(e, _KNOWN) from None
    finally:
        reader.cancel()


def _invalid(message: str) -> InvalidInputError:
    """A refusal the client makes itself, before any call (code `invalid_request`)."""
    return with_code(InvalidInputError(message), "invalid_request")


# --- results ---------------------------------------------------------------------------------


class RemoteAck(NamedTuple):
    """Acknowledgement of one `append` call (the fields of `transit_arrow.Ack`).

    Attributes:
        first_offset: offset of the first appended record.
        last_offset: offset of the last appended record.
        durability: the level actually reached ("memory", "local" or "tiered").
    """

    first_offset: int
    last_offset: int
    durability: Durability

    @property
    def records(self) -> int:
        """How many records the call appended."""
        return self.last_offset - self.first_offset + 1


@dataclass(frozen=True)
class RemoteCheckpoint:
    """A checkpoint (the fields and JSON of `transit_arrow.Checkpoint`).

    Attributes:
        stream: the stream's name.
        generation: the commit generation the claim is about.
        head_offset: the last committed offset at that generation (-1 when empty).
        root: the BLAKE3 root of the commit chain at that generation.
        kind: a free label ("manual", "eval-start", ...).
        created_at: when the checkpoint was taken (RFC 3339).
    """

    stream: str
    generation: int
    head_offset: int
    root: str
    kind: str = "manual"
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no whitespace), as `Checkpoint.to_json`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemoteCheckpoint:
        """Inverse of `to_dict` (raises `InvalidInputError` on missing fields)."""
        try:
            return cls(
                stream=str(data["stream"]),
                generation=int(data["generation"]),
                head_offset=int(data["head_offset"]),
                root=str(data["root"]),
                kind=str(data.get("kind", "manual")),
                created_at=str(data.get("created_at", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise _invalid(f"not a checkpoint: {data!r} ({e})") from e

    @classmethod
    def from_json(cls, text: str | bytes) -> RemoteCheckpoint:
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise _invalid(f"checkpoint is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise _invalid(f"not a checkpoint: {data!r}")
        return cls.from_dict(data)


@dataclass
class RemoteVerifyEntry:
    """One check of a verification (the fields of `transit_arrow.VerifyEntry`)."""

    stream: str
    check: str
    ok: bool
    object: str
    detail: str
    expected: str | None = None
    found: str | None = None


@dataclass
class RemoteVerifyReport:
    """The result of `RemoteLog.verify` (the fields and methods of `VerifyReport`)."""

    target: str
    deep: bool
    entries: list[RemoteVerifyEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(e.ok for e in self.entries)

    @property
    def failures(self) -> list[RemoteVerifyEntry]:
        """The entries that failed."""
        return [e for e in self.entries if not e.ok]

    def to_arrow(self) -> pa.Table:
        """The entries as an Arrow table."""
        return pa.Table.from_pylist([asdict(e) for e in self.entries], schema=_REPORT_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "target": self.target,
            "deep": self.deep,
            "ok": self.ok,
            "entries": [asdict(e) for e in self.entries],
        }

    def __str__(self) -> str:
        lines = [f"verify {self.target}: {'OK' if self.ok else 'FAILED'}"]
        for e in self.entries:
            line = f"  {'ok  ' if e.ok else 'FAIL'} {e.check:<10} {e.stream}: {e.detail}"
            if not e.ok:
                line += f" [{e.object}]"
                if e.expected or e.found:
                    line += f" (expected {e.expected}, found {e.found})"
            lines.append(line)
        return "\n".join(lines)


_REPORT_FIELDS: list[pa.Field[Any]] = [
    pa.field("stream", pa.string()),
    pa.field("check", pa.string()),
    pa.field("ok", pa.bool_()),
    pa.field("object", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("expected", pa.string()),
    pa.field("found", pa.string()),
]
_REPORT_SCHEMA = pa.schema(_REPORT_FIELDS)


@dataclass(frozen=True)
class RemoteRefreshReport:
    """What one materialization refresh did (the fields of `transit_arrow.RefreshReport`)."""

    branch: str
    records_processed: int
    from_offset: int | None
    to_offset: int
    reused_checkpoint: str | None
    incremental: bool
    seconds: float
    mode: str
    reason: str


# --- append input ----------------------------------------------------------------------------


def _refuse_unordered(column: str, value: Any) -> None:
    if isinstance(value, set | frozenset):
        raise _invalid(
            f"column {column!r} holds a {type(value).__name__}; sets have no order: pass a "
            "sorted list instead"
        )
    if isinstance(value, dict):
        for item in value.values():
            _refuse_unordered(column, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_unordered(column, item)


def _timestamp(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise _invalid(f"'_timestamp' {value!r} is not an ISO 8601 time") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _rows_table(rows: list[Any]) -> pa.Table:
    """Python records as a table the server turns back into records (`input: rows`)."""
    names: dict[str, None] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise _invalid(f"a list of records must hold dicts, not {type(row).__name__}")
        for key, value in row.items():
            if not isinstance(key, str) or not key:
                raise _invalid(f"column names must be non-empty strings, not {key!r}")
            _refuse_unordered(key, value)
            names[key] = None
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if name == "_timestamp":
            values = [_timestamp(v) for v in values]
        elif name == "_headers":
            values = [
                [(str(k), str(v)) for k, v in h.items()] if isinstance(h, Mapping) else h
                for h in values
            ]
        try:
            columns[name] = pa.array(values, type=_CALLER_SYSTEM.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise _invalid(
                f"cannot store column {name!r} (Python types: {', '.join(kinds)}): {e}"
            ) from e
    return pa.table(columns)


def _arrow_table(data: Any) -> pa.Table:
    try:
        return from_arrow(data)
    except InvalidInputError as e:  # refused here, before any call
        raise with_code(e, "invalid_request") from None


def _upload(data: Any) -> tuple[pa.RecordBatch, bool]:
    """What one `append(data)` uploads: one record batch, and whether it holds Python rows."""
    rows = False
    if isinstance(data, Mapping):
        table, rows = _rows_table([data]), True
    elif isinstance(data, bytes | bytearray | memoryview):
        table = pa.table({"payload": pa.array([bytes(data)], pa.binary())})
    elif isinstance(data, str):
        table = pa.table({"payload": pa.array([data], pa.string())})
    elif isinstance(data, list | tuple):
        if not data:
            raise _invalid("cannot append an empty list of records")
        table, rows = _rows_table(list(data)), True
    else:
        table = _arrow_table(data)
    batches = table.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema), rows
    if len(batches) > 1:
        raise _invalid(
            "an append through a server must fit in one record batch (each column under "
            "2 GiB); split it into several appends"
        )
    return batches[0], rows


# --- the log and its streams -----------------------------------------------------------------


def _datetime_text(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


class _RemoteReadable:
    """The read API shared by `RemoteStream` and `RemoteStreamView`."""

    def __init__(self, log: RemoteLog, channel: _Channel, name: str, pin: dict[str, Any]) -> None:
        self.log = log
        self.name = name
        self._channel = channel
        self._pin = pin  # {} (live), {"generation": g} or {"checkpoint": {...}}

    def _info(self) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._channel.call("stream_info", {"stream": self.name, **self._pin}),
        )

    @property
    def next_offset(self) -> int:
        """The offset after the last record (the next append's offset, for a live stream)."""
        return int(self._info()["next_offset"])

    @property
    def generation(self) -> int:
        """The generation this reads (the latest committed one, for a live stream)."""
        return int(self._info()["generation"])

    @property
    def root(self) -> str:
        """The commit root of `generation`."""
        return str(self._info()["root"])

    @property
    def schema(self) -> pa.Schema:
        """The schema of read results: system columns, then the user columns."""
        return schema_from_text(self._info()["schema"])

    def commits(self) -> pa.Table:
        """The commit log through this generation, as an Arrow table (one row per commit)."""
        return self._channel.table("commits", {"stream": self.name, **self._pin})

    def _ticket(self, start: int | None, end: int | None, columns: list[str] | None) -> ReadTicket:
        pin = self._pin
        return ReadTicket(
            stream=self.name,
            start=start,
            end=end,
            columns=columns,
            generation=pin.get("generation"),
            checkpoint=pin.get("checkpoint"),
        )

    def read(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """Read the replay's records with `start <= _offset < end` as one Arrow table."""
        reader = self._channel.get(self._ticket(start, end, columns))
        try:
            return reader.read_all()
        except flight.FlightError as e:
            raise decode_error(e, _KNOWN) from None

    def reader(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatchReader:
        """Like `read`, as a `RecordBatchReader` (batches arrive as the server sends them)."""
        reader = self._channel.get(self._ticket(start, end, columns))
        batches = (chunk.data for chunk in _chunks(reader) if chunk.data is not None)
        return pa.RecordBatchReader.from_batches(reader.schema, batches)

    def scan(self) -> pl.LazyFrame:
        """The replay as a polars LazyFrame (fetched whole first: no pushdown to the server)."""
        import polars as pl  # polars is heavy: imported only by callers that scan

        return cast(pl.DataFrame, pl.from_arrow(self.read())).lazy()


class RemoteStreamView(_RemoteReadable):
    """A read-only view of a remote stream at one generation (from `at` / `as_of`)."""

    def __init__(self, log: RemoteLog, channel: _Channel, name: str, pin: dict[str, Any]) -> None:
        super().__init__(log, channel, name, pin)
        self._info()  # the generation must exist, the checkpoint's root match (as `at` checks)

    def __repr__(self) -> str:
        return f"<RemoteStreamView {self.name!r} {self._pin} of {self.log.uri}>"


class RemoteStream(_RemoteReadable):
    """A stream of a remote log: `Stream`'s API over Flight. Get one from `RemoteLog`."""

    def __init__(self, log: RemoteLog, channel: _Channel, name: str) -> None:
        super().__init__(log, channel, name, {})

    def __repr__(self) -> str:
        return f"<RemoteStream {self.name!r} of {self.log.uri}>"

    def append(
        self,
        data: Any,
        *,
        durability: Durability | None = None,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> RemoteAck:
        """Append one call's records atomically and return the server's ack.

        Args:
            data: what `Stream.append` takes: a dict, a list of dicts, bytes/str, or any Arrow
                producer. Python records are converted by the server with the stream's types,
                as a local append converts them.
            durability: "memory", "local" or "tiered" (default: the server's setting); the
                ack says the level reached.
            producer, sequence: an idempotent producer's id and this call's number (the
                last acknowledged + 1): a retried pair is appended once, and acknowledged
                with the original offsets.

        Raises:
            InvalidInputError, SchemaMismatchError, FencedError: as `Stream.append`.
            UnavailableError: the server is unreachable or shutting down; the call may or may
                not have been appended (retry with a producer and sequence to be safe).
        """
        batch, rows = _upload(data)
        command = AppendCommand(
            stream=self.name,
            durability=durability,
            input="rows" if rows else "arrow",
            producer=producer,
            sequence=sequence,
        )
        ack = self._channel.put(command, batch)
        return RemoteAck(int(ack["first_offset"]), int(ack["last_offset"]), ack["durability"])

    def tail(
        self,
        start: int | None = None,
        *,
        timeout: float | None = None,
        end: int | None = None,
        columns: list[str] | None = None,
        durability: Durability | None = None,
    ) -> RemoteTail:
        """Record batches from offset `start` (default 0) on, as they are appended.

        Ends after `timeout` seconds without a new record (None: never), at `end` (an
        offset, exclusive), or on `close()`. The returned `RemoteTail`'s `position` is the
        offset to resume from, after an error too. Records are sent once they reached
        `durability` (default: the server's append default; `memory` shows records
        appended with `durability="memory"` at once, before they are synced).

        Raises (while iterating):
            UnavailableError: the server went away (resume with `tail(tail.position)`).
        """
        request = (timeout, end, columns, durability)
        return RemoteTail(self._channel, self.name, start or 0, request)

    def flush(self) -> int:
        """Seal the head into a segment and wait until it is committed; returns the generation."""
        return int(self._channel.call("flush", {"stream": self.name})["generation"])

    def close(self) -> None:
        """Nothing to release on the client (the server holds the writer lease)."""

    def branch(
        self,
        name: str,
        at: int | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> RemoteStream:
        """Fork this stream at offset `at` (default: its last record); see `RemoteLog.branch`."""
        if at is not None and (isinstance(at, bool) or not isinstance(at, int)):
            raise _invalid(f"at must be an offset, not {at!r}")
        position = self.name if at is None else f"{self.name}@{at}"
        return self.log.branch(name, position, actor=actor, reason=reason, labels=labels)

    def ancestry(self) -> pa.Table:
        """Every position this stream's history depends on, nearest first."""
        return self._channel.table("ancestry", {"stream": self.name})

    def at(
        self,
        checkpoint: RemoteCheckpoint | Any | None = None,
        *,
        generation: int | None = None,
    ) -> RemoteStreamView:
        """A read-only view at a generation, or at a checkpoint (whose root must match).

        Raises:
            NotFoundError: no such generation.
            IntegrityError: the stream's commit at the checkpoint's generation has another root.
        """
        if (checkpoint is None) == (generation is None):
            raise _invalid("pass exactly one of a checkpoint or generation=")
        if checkpoint is not None:
            if not callable(getattr(checkpoint, "to_dict", None)):
                raise _invalid(f"not a Checkpoint: {checkpoint!r}")
            pin: dict[str, Any] = {"checkpoint": checkpoint.to_dict()}
        else:
            pin = {"generation": generation}
        return RemoteStreamView(self.log, self._channel, self.name, pin)

    def as_of(self, timestamp: datetime | str) -> RemoteStreamView:
        """A read-only view of the latest generation committed at or before `timestamp`."""
        info = self._channel.call(
            "stream_info", {"stream": self.name, "as_of": _datetime_text(timestamp)}
        )
        return RemoteStreamView(
            self.log, self._channel, self.name, {"generation": info["generation"]}
        )

    def checkpoint(self, kind: str = "manual") -> RemoteCheckpoint:
        """Seal and commit what the server holds, then record and return a checkpoint."""
        data = self._channel.call("checkpoint", {"stream": self.name, "kind": kind})
        return RemoteCheckpoint.from_dict(data)


class RemoteTail:
    """A live tail of a remote stream (`Stream.tail`'s `Tail`): an iterator of record batches.

    `position` is the offset of the next record it will yield; `close()` (from any thread, or
    leaving a `with` block) ends it. A column added to the stream while it runs appears in
    later batches (the tail reconnects with the new schema, from `position`).
    """

    def __init__(
        self,
        channel: _Channel,
        name: str,
        start: int,
        request: tuple[float | None, int | None, list[str] | None, Durability | None],
    ) -> None:
        self.name = name
        self.position = start
        self._channel = channel
        self._request = request  # timeout, end, columns, durability
        self._reader: flight.FlightStreamReader | None = None
        self._closed = False
        self._batches = self._run()

    def __repr__(self) -> str:
        return f"<RemoteTail of {self.name!r} at offset {self.position}>"

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._batches)

    def __enter__(self) -> RemoteTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the tail (iteration stops); safe from any thread."""
        self._closed = True
        reader = self._reader
        if reader is not None:
            reader.cancel()

    def _run(self) -> Iterator[pa.RecordBatch]:
        timeout, end, columns, durability = self._request
        restarts = 0
        while not self._closed:
            ticket = ReadTicket(
                stream=self.name, start=self.position, end=end, columns=columns, follow=True,
                timeout=timeout, durability=durability,
            )  # fmt: skip
            self._reader = self._channel.get(ticket, live=True)
            ended = None
            try:
                for chunk in _chunks(self._reader):
                    meta = json.loads(chunk.app_metadata.to_pybytes()) if chunk.app_metadata else {}
                    self.position = int(meta.get("next", self.position))
                    if chunk.data is not None and chunk.data.num_rows:
                        restarts = 0
                        yield chunk.data
                    if "end" in meta:
                        ended = meta["end"]
                        break
            except TransitError:
                if self._closed:
                    return
                raise
            if ended != "schema":
                return
            restarts += 1
            if restarts > _MAX_SCHEMA_RESTARTS:
                raise with_code(
                    InternalError(f"tail of {self.name!r}: the schema keeps changing"), "internal"
                )


class RemoteCursor:
    """A durable cursor of a remote log (`Cursor`'s API): a consumer's position in a stream.

    Attributes:
        name: the cursor's name.
        stream: the stream it follows.
    """

    def __init__(self, log: RemoteLog, channel: _Channel, info: dict[str, Any]) -> None:
        self.log = log
        self._channel = channel
        self.name: str = info["name"]
        self.stream: str = info["stream"]
        self._info = info

    def __repr__(self) -> str:
        return f"<RemoteCursor {self.name!r} on {self.stream!r} at offset {self.position}>"

    @property
    def position(self) -> int:
        """The offset of the next record to process (0 before the first commit)."""
        return int(self._info["position"])

    @property
    def generation(self) -> int | None:
        """How many commits came before the last one this handle saw (None: never committed)."""
        value = self._info["generation"]
        return None if value is None else int(value)

    @property
    def committed_at(self) -> str | None:
        """When the position was committed (RFC 3339), None before the first commit."""
        value = self._info["committed_at"]
        return None if value is None else str(value)

    def refresh(self) -> int:
        """Read the latest committed position (another process may have moved it)."""
        self._info = self._channel.call("cursor", {"name": self.name, "stream": self.stream})
        return self.position

    def tail(self, *, timeout: float | None = None) -> RemoteTail:
        """The stream's records from `position` on, as they are appended (see `Stream.tail`).
        Commit `tail.position` once they are processed."""
        return RemoteTail(self._channel, self.stream, self.position, (timeout, None, None, None))

    def commit(self, offset: int) -> int:
        """Record that every record before `offset` is processed; return the new generation.

        Raises:
            CommitConflictError: another handle committed this cursor since this one last
                read it; nothing was changed (`refresh()`, then decide again).
            InvalidInputError: `offset` is not an offset of the stream (or its end).
        """
        body = {
            "name": self.name,
            "stream": self.stream,
            "offset": offset,
            "generation": self.generation,
        }
        self._info = self._channel.call("commit_cursor", body)
        return int(self._info["generation"])


class RemoteMaterialization:
    """A SQL materialization of a remote log (`Materialization`'s API over Flight)."""

    def __init__(self, log: RemoteLog, channel: _Channel, info: dict[str, Any]) -> None:
        self.log = log
        self._channel = channel
        self.name: str = info["name"]
        self.source: str = info["source"]
        self.mode: str = info["mode"]
        self.definition_hash: str = info["definition_hash"]

    def __repr__(self) -> str:
        return f"<RemoteMaterialization {self.name!r} of {self.source!r} ({self.mode})>"

    def refresh(self, branch: str | None = None) -> RemoteRefreshReport:
        """Bring the view up to date on `branch` (default: the source stream)."""
        data = self._channel.call("refresh", {"name": self.name, "branch": branch})
        return RemoteRefreshReport(**data)

    def read(self, branch: str | None = None) -> pa.Table:
        """The view's state as of its last refresh on `branch`."""
        return self._channel.table("materialization_read", {"name": self.name, "branch": branch})

    def scan(self, branch: str | None = None) -> pl.LazyFrame:
        """`read(branch)` as a polars LazyFrame."""
        import polars as pl  # polars is heavy: imported only by callers that scan

        return cast(pl.DataFrame, pl.from_arrow(self.read(branch))).lazy()


class RemoteLog:
    """A log served by `transit serve`, with `Log`'s API. Get one from `connect()`.

    Use it as a context manager or call `close()` (which closes the connection only: the
    server keeps running and keeps the log open).
    """

    def __init__(self, channel: _Channel, info: dict[str, Any]) -> None:
        self._channel = channel
        self.uri: str = channel.uri
        """The server's URI."""
        self.log_uri: str = info.get("uri", "")
        """The URI of the log the server serves."""
        self.server_info = info

    def __repr__(self) -> str:
        return f"<RemoteLog {self.log_uri} via {self.uri}>"

    def __enter__(self) -> RemoteLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the server keeps running)."""
        if not self._channel.closed:
            self._channel.closed = True
            self._channel.client.close()

    def _stream(self, info: dict[str, Any]) -> RemoteStream:
        return RemoteStream(self, self._channel, info["name"])

    def create_stream(
        self,
        name: str,
        *,
        schema: pa.Schema | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RemoteStream:
        """Create a root stream and return it (see `Log.create_stream`).

        Raises:
            AlreadyExistsError: a stream with this name exists.
            InvalidInputError: bad name, schema or metadata.
        """
        if schema is not None and not isinstance(schema, pa.Schema):
            raise _invalid(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
        body = {
            "name": name,
            "schema": None if schema is None else schema_to_text(schema),
            "metadata": metadata,
        }
        return self._stream(self._channel.call("create_stream", body))

    def stream(self, name: str, *, take_over: bool = False) -> RemoteStream:
        """Return the stream called `name`.

        Raises:
            StreamNotFoundError: no such stream (the message lists near names).
        """
        body = {"stream": name, "take_over": take_over}
        return self._stream(self._channel.call("stream_info", body))

    def streams(self) -> pa.Table:
        """One row per stream: name, kind, next_offset, generation, root, segments, created_at."""
        return self._channel.table("streams", {})

    def branch(
        self,
        name: str,
        at: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> RemoteStream:
        """Fork `at` ("parent@N", or "parent" for its last record) into a new stream `name`."""
        body = {"name": name, "at": at, "actor": actor, "reason": reason, "labels": labels}
        return self._stream(self._channel.call("branch", body))

    def merge(
        self,
        name: str,
        parents: list[str],
        *,
        base: str | None = None,
        policy: str = "pin",
        policy_params: dict[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> RemoteStream:
        """Create merge stream `name` of >= 2 parent heads (see `Log.merge`)."""
        body = {
            "name": name,
            "parents": parents,
            "base": base,
            "policy": policy,
            "policy_params": policy_params,
            "actor": actor,
            "reason": reason,
            "labels": labels,
        }
        return self._stream(self._channel.call("merge", body))

    def lineage(self) -> pa.Table:
        """The lineage table: one row per stream (see `Log.lineage`)."""
        return self._channel.table("lineage", {})

    def children(self, name: str) -> pa.Table:
        """Streams whose descriptor references `name` (as parent, merge parent or base)."""
        return self._channel.table("children", {"name": name})

    def checkpoints(self, name: str | None = None) -> pa.Table:
        """Recorded checkpoints (of one stream, or of all) as an Arrow table."""
        return self._channel.table("checkpoints", {"name": name})

    def verify(self, target: str | RemoteStream | Any, *, deep: bool = False) -> RemoteVerifyReport:
        """Recompute hashes for a stream (latest generation) or a checkpoint (see `Log.verify`).

        `target` is a stream name, a `RemoteStream`, or a checkpoint (`RemoteCheckpoint`, or
        any object with the checkpoint fields in `to_dict()`, such as a `Checkpoint`).
        """
        if isinstance(target, str):
            body: dict[str, Any] = {"stream": target}
        elif isinstance(target, RemoteStream):
            body = {"stream": target.name}
        elif callable(getattr(target, "to_dict", None)):
            body = {"checkpoint": target.to_dict()}
        else:
            raise _invalid("verify takes a stream name, a Stream or a Checkpoint")
        data = self._channel.call("verify", {**body, "deep": deep})
        entries = [RemoteVerifyEntry(**e) for e in data["entries"]]
        return RemoteVerifyReport(data["target"], data["deep"], entries)

    def sql(self, query: str, /, **params: Any) -> pa.Table:
        """Run DuckDB SQL over the log's views on the server and return the result table.

        Raises:
            TransitError: DuckDB rejected the query (code `invalid_request`; the message is
                DuckDB's).
        """
        return self._channel.table("sql", {"query": query, "params": params})

    def materialize(
        self,
        name: str,
        source: str,
        *,
        query: str | None = None,
        reducer: Any = None,
        key: list[str] | None = None,
        version: str = "1",
    ) -> RemoteMaterialization:
        """Define (or redefine) a SQL materialization of stream `source` (see `Log.materialize`).

        Raises:
            InvalidInputError: no query, or a Python `reducer` (it cannot run on the server).
        """
        if reducer is not None:
            raise _invalid(
                "a Python reducer cannot run on the server: define the materialization with "
                "SQL, or open the log locally"
            )
        if query is None:
            raise _invalid("pass query= (SQL over the relation 'records')")
        body = {"name": name, "source": source, "query": query, "key": key, "version": version}
        return RemoteMaterialization(self, self._channel, self._channel.call("materialize", body))

    def materialization(self, name: str, *, reducer: Any = None) -> RemoteMaterialization:
        """Open the stored materialization `name` (SQL ones only)."""
        if reducer is not None:
            raise _invalid("a Python reducer cannot run on the server")
        return RemoteMaterialization(
            self, self._channel, self._channel.call("materialization", {"name": name})
        )

    def cursor(self, name: str, stream: str) -> RemoteCursor:
        """The durable cursor `name` on `stream`, at its last committed position (see
        `Log.cursor`)."""
        info = self._channel.call("cursor", {"name": name, "stream": stream})
        return RemoteCursor(self, self._channel, info)

    def cursors(self) -> pa.Table:
        """One row per cursor and stream (see `Log.cursors`)."""
        return self._channel.table("cursors", {})

    def materializations(self) -> pa.Table:
        """One row per materialization: name, source, kind, mode, query, version, branches."""
        return self._channel.table("materializations", {})
