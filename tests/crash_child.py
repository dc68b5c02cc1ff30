"""Children of `tests/test_crash.py`, forked from one pre-imported *zygote* process.

Not a test module (no `test_` prefix, so pytest does not collect it). Run as

    python tests/crash_child.py

The zygote imports everything a child needs once, prints `READY`, then reads one JSON command
per stdin line: `{"tag": T, "root": ..., "stream": ..., <settings>}`. For each it forks a
child (a real process, started in milliseconds) and prints `PID <tag> <pid>`; when a child
ends (the parent SIGKILLs it) the zygote reaps it and prints `EXIT <pid> <status>` (a
negative status is the signal). The parent kills children by pid; every line is written with
one `os.write` (atomic on a pipe), so every line a child wrote before the kill is whole.

A child opens the log and appends until it is killed, reporting each step as one line
prefixed by its tag:

    <tag> START                                                 log opened, stream handle taken
    <tag> CALL <call_id> <mode> <seq_first> <seq_last>          an append call is about to start
    <tag> ACK <mode> <first> <last> <seq_first> <seq_last> <reached> <call_id>   ... returned
    <tag> FAIL <call_id> <error type> <appended 0|1>            ... raised (not acknowledged)
    <tag> FLUSH <seq_next>                                      flush() is about to start
    <tag> FLUSHED <seq_next> <generation>                       ... and returned
    <tag> FLUSHFAIL <seq_next>                                  ... and raised (a store outage)
    <tag> OUTAGE on|off                                         the store starts / stops failing
    <tag> FENCED                                                fenced: it waits to be killed
    <tag> ERROR <message>                                       anything unexpected (exit 3)

Scenarios: "mixed" (every mode and input shape), "seal" (big heads sealed by flush()), "rows"
(per-record dict appends, mostly memory), "tiered" (every call waits for its commit),
"outage" (mixed, while the store's commits and segment uploads fail now and then: failed
calls report FAIL), "takeover" (mixed, opening with `take_over=True`; both the fencing and
the fenced writer report FAIL FencedError, then FENCED), and "threads" (`threads` threads each
appending single records `local` at once, sharing syncs; they report `TCALL <seq>` before and
`TACK <seq> <offset> <reached>` after each call instead of CALL and ACK).

Every record's payload is a pure function of its `writer_seq` (see `record`), so the parent can
check each visible record byte for byte without the child sending the data back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any

import pyarrow as pa
from faulty_store import Fault, FaultyStore, path_contains

import transit_arrow as ta
from transit_arrow.storage import LocalStore

#: The user schema of the crash streams.
SCHEMA = pa.schema([("writer_seq", pa.int64()), ("call_id", pa.int64()), ("blob", pa.binary())])
HEADERS_TYPE = pa.map_(pa.string(), pa.string())
MODES = ("local", "tiered", "memory")
KINDS = ("dict", "list", "table", "batch")

_POOL = random.Random(20240611).randbytes(1 << 16)


def _mix(seq: int) -> int:
    return int.from_bytes(
        hashlib.blake2b(seq.to_bytes(8, "little", signed=True), digest_size=8).digest(), "little"
    )


def blob_for(seq: int, profile: str) -> bytes:
    """The blob of record `seq`: 0..20 KiB ("mixed", mostly small) or 4..20 KiB ("big")."""
    h = _mix(seq)
    if profile == "big":
        size = 4096 + (h >> 8) % 16385
    else:
        bucket = h % 100
        if bucket < 5:
            return b""
        if bucket < 70:
            size = (h >> 8) % 100
        elif bucket < 95:
            size = 100 + (h >> 8) % 1900
        else:
            size = 2000 + (h >> 8) % 18481
    start = (h >> 32) % (len(_POOL) - size)
    return _POOL[start : start + size]


def headers_for(seq: int) -> dict[str, str] | None:
    """Some records carry `_headers`, to exercise the map column through heads and segments."""
    return {"seq": str(seq)} if seq % 7 == 3 else None


def extra_for(seq: int) -> str:
    """The `extra` column's value, for runs that append with the evolved schema."""
    return f"x{seq}"


def record(seq: int, call_id: int, profile: str, extra: bool = False) -> dict[str, Any]:
    """The record with writer sequence number `seq`, appended by call `call_id`.

    With `extra`, the record also has an `extra` string column, which the stream does not have
    at creation: the first such append evolves the schema (a new nullable column).
    """
    row: dict[str, Any] = {"writer_seq": seq, "call_id": call_id, "blob": blob_for(seq, profile)}
    if extra:
        row["extra"] = extra_for(seq)
    headers = headers_for(seq)
    if headers is not None:
        row["_headers"] = headers
    return row


def as_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as an Arrow table (with a `_headers` column, null where a row has none)."""
    headers = [list(r["_headers"].items()) if "_headers" in r else None for r in rows]
    columns = {
        "writer_seq": pa.array([r["writer_seq"] for r in rows], pa.int64()),
        "call_id": pa.array([r["call_id"] for r in rows], pa.int64()),
        "blob": pa.array([r["blob"] for r in rows], pa.binary()),
        "_headers": pa.array(headers, HEADERS_TYPE),
    }
    if "extra" in rows[0]:
        columns["extra"] = pa.array([r["extra"] for r in rows], pa.string())
    return pa.table(columns)


class Reporter:
    """Writes one child's event lines, each prefixed by its tag, with one `os.write` each."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, line: str) -> None:
        data = f"{self.tag} {line}\n".encode()
        while data:
            data = data[os.write(1, data) :]


class Fenced(Exception):
    """The child's writer was fenced: stop appending."""


class Appender:
    """Drives the appends of one child run as the settings ask."""

    def __init__(
        self, stream: ta.Stream, cfg: dict[str, Any], emit: Reporter, store: FaultyStore | None
    ) -> None:
        self.stream = stream
        self.cfg = cfg
        self.emit = emit
        self.store = store
        self.rng = random.Random(cfg["seed"])
        self.profile: str = cfg["profile"]
        self.seq: int = cfg["seq"]
        self.call: int = cfg["call"]
        self.extra: bool = cfg.get("extra", False)
        self.outage = False

    def append(self, mode: str, n: int, kind: str) -> None:
        rows = [
            record(s, self.call, self.profile, self.extra) for s in range(self.seq, self.seq + n)
        ]
        data: Any
        if kind == "dict":
            assert n == 1
            data = rows[0]
        elif kind == "list":
            data = rows
        elif kind == "table":
            data = as_table(rows)
        else:
            data = as_table(rows).combine_chunks().to_batches()[0]
        first, last = self.seq, self.seq + n - 1
        self.emit(f"CALL {self.call} {mode} {first} {last}")
        call = self.call
        self.seq += n
        self.call += 1
        before = self.stream.next_offset
        try:
            ack = self.stream.append(data, durability=mode)  # type: ignore[arg-type]
        except (ta.StorageError, ta.FencedError) as e:
            if not self._tolerated(e):
                raise
            # A refusal appends nothing; a `tiered` append that failed waiting appended its
            # records (in memory): the parent's model needs to know which.
            appended = int(self.stream.next_offset != before)
            self.emit(f"FAIL {call} {type(e).__name__} {appended}")
            if isinstance(e, ta.FencedError):
                raise Fenced from e
            return
        self.emit(
            f"ACK {mode} {ack.first_offset} {ack.last_offset} {first} {last} {ack.durability} "
            f"{call}"
        )

    def _tolerated(self, error: Exception) -> bool:
        scenario = self.cfg["scenario"]
        if isinstance(error, ta.FencedError):
            return scenario == "takeover" or self.cfg.get("fenceable", False)
        return scenario == "outage"

    def flush(self) -> None:
        self.emit(f"FLUSH {self.seq}")
        try:
            generation = self.stream.flush()
        except (ta.StorageError, ta.FencedError) as e:
            if not self._tolerated(e):
                raise
            self.emit(f"FLUSHFAIL {self.seq}")
            if isinstance(e, ta.FencedError):
                raise Fenced from e
            return
        self.emit(f"FLUSHED {self.seq} {generation}")

    def random_kind(self, n_max: int) -> tuple[str, int]:
        kind = self.rng.choices(KINDS, weights=(5, 2, 2, 1))[0]
        return kind, 1 if kind == "dict" else self.rng.randint(1, n_max)

    def toggle_outage(self) -> None:
        """Start or end a store outage (commits and segment uploads fail) now and then."""
        assert self.store is not None
        if not self.outage and self.rng.random() < self.cfg["outage_on"]:
            self.store.arm(Fault("error", path_contains("put_if_absent", "/commits/"), times=None))
            self.store.arm(Fault("error", path_contains("put", "/segments/"), times=None))
            self.outage = True
            self.emit("OUTAGE on")
        elif self.outage and self.rng.random() < self.cfg["outage_off"]:
            self.store.disarm()
            self.outage = False
            self.emit("OUTAGE off")

    def step(self) -> None:
        """One round of the configured scenario."""
        cfg, rng = self.cfg, self.rng
        scenario = cfg["scenario"]
        if scenario in ("mixed", "outage", "takeover"):
            if scenario == "outage":
                self.toggle_outage()
            mode = rng.choices(MODES, weights=cfg["mode_weights"])[0]
            kind, n = self.random_kind(cfg["max_batch"])
            self.append(mode, n, kind)
            if rng.random() < cfg["flush_prob"]:
                self.flush()
        elif scenario == "seal":
            # Grow one big head with several calls, then seal it with flush().
            for _ in range(rng.randint(2, 5)):
                mode = "memory" if rng.random() < 0.3 else "local"
                self.append(mode, rng.randint(20, 80), rng.choice(("list", "table", "batch")))
            self.flush()
        elif scenario == "rows":
            # Per-record appends (the row-buffer fast path): buffered rows roll into pending
            # heads that the sealer encodes while `local` appends sync them.
            mode = "local" if rng.random() < cfg["local_prob"] else "memory"
            self.append(mode, 1, "dict")
        elif scenario == "tiered":
            kind, n = self.random_kind(cfg["max_batch"])
            self.append("tiered", n, kind)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")


class _LogLines(logging.Handler):
    """Reports the library's log records as `LOG <level> <message>` lines."""

    def __init__(self, report: Reporter) -> None:
        super().__init__()
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        self.report(f"LOG {record.levelname} {record.getMessage()}".replace("\n", " | "))


def run_threads(stream: ta.Stream, cfg: dict[str, Any], emit: Reporter) -> None:
    """Scenario "threads": `cfg["threads"]` threads append single records `local` at once
    (thread `t` appends seqs `seq + t`, `seq + t + threads`, ...) until the child is killed."""
    count = cfg["threads"]

    def work(t: int) -> None:
        try:
            seq = cfg["seq"] + t
            while True:
                emit(f"TCALL {seq}")
                row = record(seq, seq, cfg["profile"])
                ack = stream.append(row, durability="local")
                emit(f"TACK {seq} {ack.first_offset} {ack.durability}")
                seq += count
        except BaseException as e:
            emit(f"ERROR {type(e).__name__}: {e}".replace("\n", " | "))
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3)

    for t in range(count):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    while True:
        time.sleep(1)


def run_child(cfg: dict[str, Any]) -> None:
    """The forked child: open the log, append until killed."""
    emit = Reporter(cfg["tag"])
    library = logging.getLogger("transit_arrow")
    library.addHandler(_LogLines(emit))
    library.propagate = False
    try:
        store: FaultyStore | None = None
        target: Any = cfg["root"]
        if cfg["scenario"] == "outage":
            store = FaultyStore(LocalStore(cfg["root"]))
            target = store
        log = ta.open(
            target,
            local_dir=cfg.get("local_dir"),
            segment_max_records=cfg["segment_max_records"],
            segment_max_bytes=cfg["segment_max_bytes"],
            segment_max_age=cfg["segment_max_age"],
        )
        if "seal_retries" in cfg:  # a test knob: how soon waiting calls give up on the store
            log.catalog.options = dataclasses.replace(
                log.catalog.options, seal_retries=cfg["seal_retries"]
            )
        stream = log.stream(cfg["stream"], take_over=cfg.get("take_over", False))
        emit("START")
        if cfg["scenario"] == "threads":
            run_threads(stream, cfg, emit)
        appender = Appender(stream, cfg, emit, store)
        deadline = time.monotonic() + cfg["max_seconds"]
        try:
            while time.monotonic() < deadline:
                appender.step()
        except Fenced:
            emit("FENCED")
            while True:
                time.sleep(1)
    except BaseException as e:
        emit(f"ERROR {type(e).__name__}: {e}".replace("\n", " | "))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    emit("ERROR the child ran out of time without being killed")
    os._exit(4)  # never close the log: the parent expected to kill us


def _reap(signum: int, frame: Any) -> None:
    """SIGCHLD: report every child that ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        line = f"EXIT {pid} {code}\n".encode()
        os.write(1, line)


def main() -> None:
    signal.signal(signal.SIGCHLD, _reap)
    os.write(1, b"READY\n")
    while True:
        line = sys.stdin.readline()
        if not line:
            os._exit(0)  # the parent is done
        cfg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(0)
            run_child(cfg)
        os.write(1, f"PID {cfg['tag']} {pid}\n".encode())


if __name__ == "__main__":
    main()
