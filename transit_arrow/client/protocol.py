"""The Arrow Flight protocol of `transit serve`, shared by the client and the server.

Everything here is plain JSON, Arrow IPC and `pyarrow.flight` (no engine import), so the client
can use it without the engine and other languages can reimplement it from `docs/flight.md`. It
lives with the client (layer "apps", docs/architecture.md) because the server (layer "surface")
may import downwards but the client may not import the server:

- **Tickets** (DoGet, `ReadTicket`): `{"stream", "start", "end", "columns", "generation",
  "checkpoint", "as_of", "follow", "timeout"}` as JSON; a ticket that is not a JSON object is
  a stream name.
- **DoPut descriptors** (`AppendCommand`): a command `{"stream", "durability", "create",
  "input", "producer", "sequence"}` as JSON, or a path naming the stream. Each record batch
  of the upload is one atomic append; the server answers with `ack` messages.
- **Actions** (DoAction): `ACTIONS` names them; the body is a JSON object and the single
  result is JSON, or an Arrow IPC stream for the actions in `TABLE_ACTIONS`.
- **Errors**: every failure carries one of `ERROR_CODES`; the message is prefixed with
  `[code]` and the Flight error's `extra_info` holds `{"code", "error", "message"}`.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast

import pyarrow as pa
import pyarrow.flight as flight

from ..errors import (
    AlreadyExistsError,
    CommitConflictError,
    FencedError,
    IntegrityError,
    InvalidInputError,
    LogClosedError,
    MergeConflictError,
    NotFoundError,
    SchemaMismatchError,
    StorageError,
    TransitError,
    WriterBusyError,
)
from ..typing import DURABILITY_LEVELS, Durability

__all__ = [
    "ACTIONS",
    "AUTH_HEADER",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "TABLE_ACTIONS",
    "AppendCommand",
    "Body",
    "ErrorCode",
    "InternalError",
    "ReadTicket",
    "UnauthorizedError",
    "UnavailableError",
    "code_for",
    "decode_error",
    "encode_error",
    "error_from_detail",
    "json_bytes",
    "schema_from_text",
    "schema_to_text",
    "table_from_bytes",
    "table_to_bytes",
    "with_code",
]

PROTOCOL_VERSION: Final = 1
AUTH_HEADER: Final = "authorization"
"""The header carrying `Bearer <token>` on every call."""

ErrorCode: TypeAlias = Literal[
    "unauthorized",
    "invalid_request",
    "not_found",
    "conflict",
    "integrity",
    "unavailable",
    "internal",
]
ERROR_CODES: Final[tuple[ErrorCode, ...]] = (
    "unauthorized",
    "invalid_request",
    "not_found",
    "conflict",
    "integrity",
    "unavailable",
    "internal",
)


class UnauthorizedError(TransitError, PermissionError):
    """The server refused the call: the bearer token is missing or wrong (nothing was done)."""


class UnavailableError(StorageError):
    """The server cannot be reached or is shutting down; retry (acknowledged data is safe)."""


class InternalError(TransitError):
    """The server failed unexpectedly; the message says how (its log has the traceback)."""


# Most specific first: the first class an exception is an instance of gives its code.
_CODES: tuple[tuple[type[BaseException], ErrorCode], ...] = (
    (UnauthorizedError, "unauthorized"),
    (InvalidInputError, "invalid_request"),
    (NotFoundError, "not_found"),
    (AlreadyExistsError, "conflict"),
    (CommitConflictError, "conflict"),
    (FencedError, "conflict"),
    (WriterBusyError, "conflict"),
    (MergeConflictError, "conflict"),
    (SchemaMismatchError, "conflict"),
    (IntegrityError, "integrity"),
    (InternalError, "internal"),
    (StorageError, "unavailable"),
    (LogClosedError, "unavailable"),
)

# What the client raises for a code when the server's class is not one it knows.
_DEFAULT_CLASS: dict[str, type[TransitError]] = {
    "unauthorized": UnauthorizedError,
    "invalid_request": InvalidInputError,
    "not_found": NotFoundError,
    "conflict": TransitError,
    "integrity": IntegrityError,
    "unavailable": UnavailableError,
    "internal": InternalError,
}

_FLIGHT_CLASS: dict[str, type[flight.FlightError]] = {
    "unauthorized": flight.FlightUnauthenticatedError,
    "unavailable": flight.FlightUnavailableError,
    "internal": flight.FlightInternalError,
}


def code_for(exc: BaseException) -> ErrorCode:
    """The stable error code of an exception (`internal` for anything unexpected)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return "internal"


def encode_error(code: ErrorCode, error: str, message: str) -> flight.FlightError:
    """The Flight error a server raises: `[code] message`, with JSON details in `extra_info`.

    Args:
        code: one of `ERROR_CODES`.
        error: the exception class name (the client raises that class when it knows it).
        message: a human-readable message.
    """
    detail = json_bytes({"code": code, "error": error, "message": message})
    kind = _FLIGHT_CLASS.get(code, flight.FlightServerError)
    return kind(f"[{code}] {message}", extra_info=detail)  # type: ignore[call-arg]  # (stubs)


def decode_error(exc: flight.FlightError, known: dict[str, type[TransitError]]) -> TransitError:
    """The `TransitError` a client raises for a Flight error.

    Args:
        exc: what pyarrow.flight raised.
        known: exception classes by name; the server's class is used when listed here,
            else the default class of the error code.

    The result has a `code` attribute (one of `ERROR_CODES`).
    """
    detail: dict[str, Any] = {}
    try:
        parsed = json.loads(exc.extra_info or b"")
        if isinstance(parsed, dict):
            detail = parsed
    except ValueError:
        pass
    code = detail.get("code")
    if code not in ERROR_CODES:
        if isinstance(exc, flight.FlightUnauthenticatedError | flight.FlightUnauthorizedError):
            code = "unauthorized"
        elif isinstance(
            exc,
            flight.FlightUnavailableError
            | flight.FlightTimedOutError
            | flight.FlightCancelledError,
        ):
            code = "unavailable"
        else:
            code = "internal"
    message = detail.get("message")
    return error_from_detail(
        {**detail, "code": code, "message": message if isinstance(message, str) else str(exc)},
        known,
    )


def error_from_detail(detail: dict[str, Any], known: dict[str, type[TransitError]]) -> TransitError:
    """The `TransitError` for an error detail `{"code", "error", "message"}`.

    See `decode_error`; an unknown code is treated as `internal`.
    """
    given = detail.get("code")
    code: ErrorCode = cast(ErrorCode, given) if given in ERROR_CODES else "internal"
    message = str(detail.get("message", ""))
    kind = known.get(str(detail.get("error")))
    if kind is None or not issubclass(kind, _DEFAULT_CLASS[code]):
        kind = _DEFAULT_CLASS[code]
    return with_code(kind(message), code)


E = TypeVar("E", bound=TransitError)


def with_code(error: E, code: ErrorCode) -> E:
    """`error` with a `code` attribute (every error the client raises has one)."""
    error.code = code  # type: ignore[attr-defined]
    return error


# --- JSON and Arrow encodings ----------------------------------------------------------------


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON (NaN and infinities refused)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def table_to_bytes(table: pa.Table) -> bytes:
    """An Arrow table as the bytes of an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(data: bytes | pa.Buffer) -> pa.Table:
    """Inverse of `table_to_bytes`."""
    return pa.ipc.open_stream(data).read_all()


def schema_to_text(schema: pa.Schema) -> str:
    """A schema as base64 of its Arrow IPC form (exact and portable)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    """Inverse of `schema_to_text` (`InvalidInputError` when it is not one)."""
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text, validate=True)))
    except (ValueError, pa.ArrowException) as e:
        raise InvalidInputError(f"not a base64 Arrow IPC schema: {e}") from None


class Body:
    """A JSON object of a request, read field by field with type checks.

    Every getter raises `InvalidInputError` (code `invalid_request`) naming the field when its
    value has the wrong type; `done()` refuses fields nobody read (typos fail loudly).
    """

    def __init__(self, data: bytes | pa.Buffer | None, what: str) -> None:
        self.what = what
        raw = b"" if data is None else bytes(data)
        try:
            value = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise InvalidInputError(f"{what}: not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise InvalidInputError(f"{what}: expected a JSON object, not {type(value).__name__}")
        self.data: dict[str, Any] = value
        self._read: set[str] = set()

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.data.get(key)

    def _bad(self, key: str, expected: str) -> InvalidInputError:
        return InvalidInputError(
            f"{self.what}: {key!r} must be {expected}, not {self.data.get(key)!r}"
        )

    def opt_str(self, key: str) -> str | None:
        """A string field, or None when absent/null."""
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def string(self, key: str) -> str:
        """A required string field."""
        value = self.opt_str(key)
        if value is None:
            raise InvalidInputError(f"{self.what}: {key!r} is required")
        return value

    def opt_int(self, key: str, minimum: int | None = None) -> int | None:
        """An integer field (at least `minimum`), or None."""
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        if minimum is not None and value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def opt_number(self, key: str) -> float | None:
        """A finite non-negative number field, or None."""
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number")
        if not math.isfinite(value) or value < 0:
            raise self._bad(key, "a finite number >= 0")
        return float(value)

    def bool(self, key: str, default: bool = False) -> bool:
        """A boolean field (`default` when absent/null)."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def opt_str_list(self, key: str) -> list[str] | None:
        """A list of strings, or None."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return value

    def opt_str_map(self, key: str) -> dict[str, str] | None:
        """An object of string values, or None."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of strings")
        return value

    def opt_dict(self, key: str) -> dict[str, Any] | None:
        """A JSON object field, or None."""
        value = self._get(key)
        if value is not None and not isinstance(value, dict):
            raise self._bad(key, "a JSON object")
        return value

    def opt_durability(self, key: str) -> Durability | None:
        """A durability level, or None."""
        value = self.opt_str(key)
        if value is not None and value not in DURABILITY_LEVELS:
            raise self._bad(key, f"one of {', '.join(DURABILITY_LEVELS)}")
        return value

    def done(self) -> None:
        """Refuse fields that were not read."""
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise InvalidInputError(f"{self.what}: unknown field(s) {unknown}")


# --- tickets and descriptors ------------------------------------------------------------------


@dataclass(frozen=True)
class ReadTicket:
    """What a DoGet ticket asks for: a range of one stream's replay, or a live tail.

    Attributes:
        stream: the stream's name.
        start: first offset (default 0); `end`: offset after the last one (default: the end).
        columns: the columns to return (default: all, system columns first).
        generation / checkpoint / as_of: read a past version (at most one of them).
        follow: keep the call open and send records as they are appended (a live tail),
            each batch with app metadata `{"next": offset}`, and a last empty batch with
            `{"next": offset, "end": reason}` (`timeout`, `end`, `schema` or `shutdown`).
        timeout: for `follow`, end after this many seconds without a new record.
        durability: for `follow`, the level a record must have reached before it is sent
            (`memory`, `local`, `tiered`; default: the server's append default, so a follower
            sees only what appenders are acknowledged for).
    """

    stream: str
    start: int | None = None
    end: int | None = None
    columns: list[str] | None = None
    generation: int | None = None
    checkpoint: dict[str, Any] | None = None
    as_of: str | None = None
    follow: bool = False
    timeout: float | None = None
    durability: Durability | None = None

    def to_json(self) -> dict[str, Any]:
        """The ticket's JSON object (null fields left out)."""
        out: dict[str, Any] = {"stream": self.stream}
        keys = ("start", "end", "columns", "generation", "checkpoint", "as_of", "timeout")
        for key in (*keys, "durability"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.follow:
            out["follow"] = True
        return out

    def to_ticket(self) -> flight.Ticket:
        """As a Flight ticket."""
        return flight.Ticket(json_bytes(self.to_json()))

    @classmethod
    def from_body(cls, body: Body) -> ReadTicket:
        """Read (and check) the ticket's fields from a request body."""
        ticket = cls(
            stream=body.string("stream"),
            start=body.opt_int("start", 0),
            end=body.opt_int("end", 0),
            columns=body.opt_str_list("columns"),
            generation=body.opt_int("generation", 0),
            checkpoint=body.opt_dict("checkpoint"),
            as_of=body.opt_str("as_of"),
            follow=body.bool("follow"),
            timeout=body.opt_number("timeout"),
            durability=body.opt_durability("durability"),
        )
        pinned = [k for k in ("generation", "checkpoint", "as_of") if body.data.get(k) is not None]
        if len(pinned) > 1:
            raise InvalidInputError(f"{body.what}: give at most one of {pinned}")
        if ticket.follow and pinned:
            raise InvalidInputError(f"{body.what}: 'follow' reads the live stream, not {pinned[0]}")
        for key in ("timeout", "durability"):
            if getattr(ticket, key) is not None and not ticket.follow:
                raise InvalidInputError(f"{body.what}: {key!r} needs 'follow'")
        return ticket

    @classmethod
    def from_ticket(cls, ticket: flight.Ticket | bytes) -> ReadTicket:
        """Parse a DoGet ticket: a JSON object, or else the bytes of a stream name."""
        raw = ticket.ticket if isinstance(ticket, flight.Ticket) else ticket
        data = bytes(raw)
        if not data.lstrip().startswith(b"{"):
            try:
                return cls(stream=data.decode())
            except UnicodeDecodeError:
                raise InvalidInputError("ticket: not JSON and not a UTF-8 stream name") from None
        body = Body(data, "ticket")
        out = cls.from_body(body)
        body.done()
        return out


@dataclass(frozen=True)
class AppendCommand:
    """What a DoPut appends to: the stream, and how.

    Attributes:
        stream: the stream's name.
        durability: the level each append waits for (default: the server's setting).
        create: create the stream when it does not exist.
        input: "arrow" (batches are appended as they are) or "rows" (they hold Python records
            the client converted: the server turns them back into records and appends those,
            so types follow the stream's schema exactly as a local `append(list_of_dicts)`).
        producer / sequence: idempotent producer id and the sequence number of the first
            batch (batch i has sequence + i); only when the engine supports it.
    """

    stream: str
    durability: Durability | None = None
    create: bool = False
    input: Literal["arrow", "rows"] = "arrow"
    producer: str | None = None
    sequence: int | None = None

    def to_descriptor(self) -> flight.FlightDescriptor:
        """As a Flight command descriptor."""
        out: dict[str, Any] = {"stream": self.stream}
        for key in ("durability", "producer", "sequence"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.create:
            out["create"] = True
        if self.input != "arrow":
            out["input"] = self.input
        return flight.FlightDescriptor.for_command(json_bytes(out))

    @classmethod
    def from_descriptor(cls, descriptor: flight.FlightDescriptor) -> AppendCommand:
        """Parse a DoPut descriptor (a JSON command, or a path naming the stream)."""
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            return cls(stream=stream_of_path(descriptor.path))
        body = Body(descriptor.command, "DoPut command")
        kind = body.opt_str("input") or "arrow"
        if kind not in ("arrow", "rows"):
            raise InvalidInputError(
                f"DoPut command: 'input' must be 'arrow' or 'rows', not {kind!r}"
            )
        command = cls(
            stream=body.string("stream"),
            durability=body.opt_durability("durability"),
            create=body.bool("create"),
            input=cast(Literal["arrow", "rows"], kind),
            producer=body.opt_str("producer"),
            sequence=body.opt_int("sequence", 0),
        )
        body.done()
        if (command.producer is None) != (command.sequence is None):
            raise InvalidInputError("DoPut command: give 'producer' and 'sequence' together")
        return command


def stream_of_path(path: list[bytes] | list[str] | None) -> str:
    """The stream a path descriptor names (segments joined by '/')."""
    parts = [p.decode() if isinstance(p, bytes) else p for p in path or []]
    if not parts:
        raise InvalidInputError("descriptor: an empty path names no stream")
    return "/".join(parts)


ACTIONS: Final[dict[str, str]] = {
    "ping": "{} -> {ok, uri, protocol, server, idempotent_producers, tail}: check the connection",
    "create_stream": "{name, schema?, metadata?} -> stream info: create a root stream",
    "stream_info": "{stream, generation?|checkpoint?|as_of?, take_over?} -> stream info",
    "streams": "{} -> table: one row per stream",
    "branch": "{name, at, actor?, reason?, labels?} -> stream info: fork 'parent@N'",
    "merge": "{name, parents, base?, policy?, policy_params?, actor?, reason?, labels?} "
    "-> stream info",
    "lineage": "{} -> table: the lineage table",
    "children": "{name} -> table: streams that fork from or merge a stream",
    "ancestry": "{stream} -> table: positions a stream's history depends on",
    "commits": "{stream, generation?|checkpoint?|as_of?} -> table: the commit log",
    "checkpoint": "{stream, kind?} -> checkpoint: seal, commit and record a checkpoint",
    "checkpoints": "{name?} -> table: recorded checkpoints",
    "verify": "{stream | checkpoint, deep?} -> verify report",
    "flush": "{stream} -> {generation}: seal the head and commit it",
    "sql": "{query, params?} -> table: DuckDB SQL over the log's views",
    "materialize": "{name, source, query, key?, version?} -> materialization info: define",
    "materialization": "{name} -> materialization info",
    "materializations": "{} -> table: every definition",
    "refresh": "{name, branch?} -> refresh report: bring a materialization up to date",
    "materialization_read": "{name, branch?} -> table: a materialization's state",
    "cursor": "{name, stream} -> cursor info: a durable cursor's committed position",
    "commit_cursor": "{name, stream, offset, generation} -> cursor info: commit a position "
    "(refused 'conflict' unless generation is the latest the caller saw)",
    "cursors": "{} -> table: every cursor",
}
"""Action types and what their bodies and results hold."""

TABLE_ACTIONS: Final = frozenset(
    {
        "streams",
        "lineage",
        "children",
        "ancestry",
        "commits",
        "checkpoints",
        "sql",
        "materializations",
        "materialization_read",
        "cursors",
    }
)
"""Actions whose result is an Arrow IPC stream (the others return JSON)."""
