"""Client processes of the server tests: `python flight_child.py SCRIPT ADDRESS TOKEN ARGS...`.

Not a test module. Each script talks to a `transit serve` process through `connect()` only
(another process, possibly in another folder: a second machine) and prints JSON lines on
stdout, one per event, flushed at once so a parent can follow them live:

- `append STREAM WRITER COUNT BATCH`: appends COUNT records `{"writer", "seq"}` in calls of
  BATCH records (durability `local`); prints `{"ack": [first, last], "seq": [a, b]}` per call.
  On a server error it prints `{"error": code, "seq": first unacknowledged seq}` and exits 0.
- `upload STREAM COUNT BATCH`: one plain Flight DoPut (durability `local`) of COUNT records
  `{"seq"}` in batches of BATCH, reading the acks while it writes; prints each ack message as
  it arrives (`{"first_offset", "last_offset", "durability", "batches"}`), then
  `{"error": exception name}` when the call fails (once or twice) and `{"done": true}`.
- `tour STREAM`: the README tour under names starting with STREAM; prints what it saw.
- `lineage STREAM N`: waits until STREAM has N records, branches it, appends to the branch,
  merges both; prints the names and replay lengths.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

import transit_arrow as ta
from transit_arrow.client import connect


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def append(log: Any, stream: str, writer: str, count: int, batch: int) -> None:
    s = log.stream(stream)
    seq = 0
    while seq < count:
        rows = [{"writer": writer, "seq": k} for k in range(seq, min(count, seq + batch))]
        try:
            ack = s.append(rows, durability="local")
        except ta.TransitError as e:
            emit(error=getattr(e, "code", None), seq=seq, message=str(e))
            return
        emit(ack=[ack.first_offset, ack.last_offset], seq=[seq, seq + len(rows) - 1])
        seq += len(rows)


def upload(address: str, token: str, stream: str, count: int, batch: int) -> None:
    client = flight.FlightClient(address)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    command = {"stream": stream, "durability": "local", "create": True}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, acks = client.do_put(descriptor, pa.schema([("seq", pa.int64())]), options)

    def read_acks() -> None:
        try:
            while (message := acks.read()) is not None:
                emit(**json.loads(message.to_pybytes()))
        except flight.FlightError as e:
            emit(error=type(e).__name__)

    reader = threading.Thread(target=read_acks)
    reader.start()
    with contextlib.suppress(flight.FlightError, OSError, pa.ArrowException):
        for first in range(0, count, batch):
            writer.write_batch(pa.record_batch({"seq": range(first, min(count, first + batch))}))
        writer.done_writing()
    reader.join()
    try:
        writer.close()  # the call's status
    except (flight.FlightError, OSError, pa.ArrowException) as e:
        emit(error=type(e).__name__)
    emit(done=True)


def tour(log: Any, name: str) -> None:
    runs = log.create_stream(name)
    ack = runs.append({"task": "t1", "step": 0, "score": 0.4})
    runs.append([{"task": "t1", "step": 1, "score": 0.7}])
    runs.append(pa.table({"task": ["t2"], "step": [0], "score": [0.9]}))
    emit(ack=list(ack), read=runs.read(start=0, end=100).num_rows)
    emit(reader=runs.reader().read_all().num_rows, commits=runs.commits().num_rows)
    emit(streams=sorted(r for r in log.streams().column("name").to_pylist() if r.startswith(name)))
    retry = log.branch(f"{name}/retry", at=f"{name}@1", actor="agent", reason="tool timeout")
    retry.append({"task": "t1", "step": 42, "score": 0.95})
    best = log.merge(f"{name}/best", parents=[name, f"{name}/retry"], policy="concat")
    emit(retry=retry.read().column("step").to_pylist(), best=best.read().num_rows)
    emit(lineage=sorted(r for r in log.lineage().column("name").to_pylist() if r.startswith(name)))
    cp = runs.checkpoint(kind="eval-start")
    emit(checkpoint=cp.to_dict(), verified=log.verify(cp, deep=True).ok)
    emit(at_checkpoint=runs.at(cp).read().num_rows, at_generation=runs.at(generation=0).next_offset)
    sql = log.sql(f'SELECT task, count(*) AS n FROM "{name}" GROUP BY task ORDER BY task')
    emit(sql=sql.to_pylist())
    mv = log.materialize(
        f"{name}-per-task", name, query="SELECT task, count(*) AS n FROM records GROUP BY task"
    )
    emit(refresh=mv.refresh().records_processed, mv=sorted(mv.read().column("task").to_pylist()))


def lineage(log: Any, stream: str, wanted: int) -> None:
    s = log.stream(stream)
    deadline = time.monotonic() + 20
    while s.next_offset < wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"{stream} never reached {wanted} records")
        time.sleep(0.01)
    at = wanted - 1
    branch = log.branch(f"{stream}/side", at=f"{stream}@{at}", reason="concurrent branch")
    branch.append([{"writer": "side", "seq": k} for k in range(3)])
    merged = log.merge(
        f"{stream}/merged", [f"{stream}/side", stream], base=f"{stream}@{at}", policy="concat"
    )
    emit(branch=branch.name, fork=at, branch_records=branch.read().num_rows)
    emit(merge=merged.name, merge_records=merged.read().num_rows)


def main() -> None:
    script, address, token, *args = sys.argv[1:]
    if script == "upload":
        upload(address, token, args[0], int(args[1]), int(args[2]))
        return
    with connect(address, token=token, timeout=30) as log:
        if script == "append":
            append(log, args[0], args[1], int(args[2]), int(args[3]))
        elif script == "tour":
            tour(log, args[0])
        elif script == "lineage":
            lineage(log, args[0], int(args[1]))
        else:
            raise SystemExit(f"unknown script {script!r}")


if __name__ == "__main__":
    main()
