"""Child process of `tests/test_crash.py`: appends in a loop and reports every step on stdout.

Not a test module (no `test_` prefix, so pytest does not collect it). Run as

    python tests/crash_child.py ROOT STREAM

It imports everything first, then blocks reading one JSON line of settings from stdin (so the
parent can start the next child while it is still checking the previous crash). It then opens
the log and appends until it is SIGKILLed. Each event is one line written with one `os.write`
(atomic on a pipe), so every line the child wrote survives the kill intact:

    START                                                     log opened, stream handle taken
    CALL <call_id> <mode> <seq_first> <seq_last>              an append call is about to start
    ACK <mode> <first> <last> <seq_first> <seq_last> <reached> <call_id>   ... and returned
    FLUSH <seq_next>                                          flush() is about to start
    FLUSHED <seq_next> <generation>                           ... and returned
    ERROR <message>                                           an exception (exit status 3)

Scenarios: "mixed" (every mode and input shape), "seal" (big heads sealed by flush()), "rows"
(per-record dict appends, mostly memory), "tiered" (every call waits for its commit).

Every record's payload is a pure function of its `writer_seq` (see `record`), so the parent can
check each visible record byte for byte without the child sending the data back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import traceback
from typing import Any

import pyarrow as pa

import transit_arrow as ta

#: The user schema of the crash stream.
SCHEMA = pa.schema([("writer_seq", pa.int64()), ("call_id", pa.int64()), ("blob", pa.binary())])
HEADERS_TYPE = pa.map_(pa.string(), pa.string())
MODES = ("local", "tiered", "memory")
KINDS = ("dict", "list", "table", "batch")

_POOL = random.Random(20240611).randbytes(1 << 16)


def _mix(seq: int) -> int:
    return int.from_bytes(
        hashlib.blake2b(seq.to_bytes(8, "little"), digest_size=8).digest(), "little"
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


def emit(line: str) -> None:
    """Write one whole line to stdout with a single write (atomic on a pipe)."""
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


class Appender:
    """Drives the appends of one child run as the settings ask."""

    def __init__(self, stream: ta.Stream, cfg: dict[str, Any]) -> None:
        self.stream = stream
        self.cfg = cfg
        self.rng = random.Random(cfg["seed"])
        self.profile: str = cfg["profile"]
        self.seq: int = cfg["seq"]
        self.call: int = cfg["call"]
        self.extra: bool = cfg.get("extra", False)

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
        emit(f"CALL {self.call} {mode} {first} {last}")
        ack = self.stream.append(data, durability=mode)  # type: ignore[arg-type]
        emit(
            f"ACK {mode} {ack.first_offset} {ack.last_offset} {first} {last} {ack.durability} "
            f"{self.call}"
        )
        self.seq += n
        self.call += 1

    def flush(self) -> None:
        emit(f"FLUSH {self.seq}")
        generation = self.stream.flush()
        emit(f"FLUSHED {self.seq} {generation}")

    def random_kind(self, n_max: int) -> tuple[str, int]:
        kind = self.rng.choices(KINDS, weights=(5, 2, 2, 1))[0]
        return kind, 1 if kind == "dict" else self.rng.randint(1, n_max)

    def step(self) -> None:
        """One round of the configured scenario."""
        cfg, rng = self.cfg, self.rng
        scenario = cfg["scenario"]
        if scenario == "mixed":
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


def main() -> None:
    root, name = sys.argv[1], sys.argv[2]
    line = sys.stdin.readline()
    if not line.strip():
        os._exit(0)  # the parent went away before handing out work
    cfg = json.loads(line)
    try:
        log = ta.open(
            root,
            segment_max_records=cfg["segment_max_records"],
            segment_max_bytes=cfg["segment_max_bytes"],
            segment_max_age=cfg["segment_max_age"],
        )
        appender = Appender(log.stream(name), cfg)
        emit("START")
        deadline = time.monotonic() + cfg["max_seconds"]
        while time.monotonic() < deadline:
            appender.step()
    except BaseException as e:
        emit(f"ERROR {type(e).__name__}: {e}".replace("\n", " | "))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    emit("ERROR the child ran out of time without being killed")
    os._exit(4)  # never close the log: the parent expected to kill us


if __name__ == "__main__":
    main()
