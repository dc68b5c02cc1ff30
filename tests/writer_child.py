"""Child process of `tests/test_concurrency.py`: a transit-arrow writer driven over a pipe.

Not a test module (no `test_` prefix). Run as `python tests/writer_child.py`. It imports
everything, prints `{"ready": pid}`, then executes one JSON command per stdin line and answers
each with one JSON line on stdout: `{"ok": true, ...}`, or `{"ok": false, "type": <exception
class>, "message": ...}` when the command raised.

Commands (`op`):

- `open`: `uri`, `storage_options`, `local_dir`, `options` (extra `transit_arrow.open` args).
- `append`: `stream`, `seqs` [first, end), `durability`, `take_over` -> `ack`.
- `append_until_error`: `stream`, `start`, `timeout`, `interval`: append one record every
  `interval` seconds until a call raises (or `timeout`) -> `acks`, `error`, `seconds`.
- `flush`, `close`: on `stream` / the log.
- `read`: `stream` -> `offsets`, `seqs`.
- `commit_race`: `uri`, `storage_options`, `stream`, `until`, `start_at`: from
  wall-clock time `start_at`, repeatedly create the next commit of `stream` at the CommitLog
  level until generation `until` exists -> `won` (generations this process created),
  `conflicts` (how many `CommitConflictError`s it got), `writer`.
- `exit`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid
from typing import Any

import transit_arrow as ta
from transit_arrow.commit import CommitLog, writer_identity
from transit_arrow.names import encode_stream_name
from transit_arrow.storage import store_from_uri


def rows(first: int, end: int) -> list[dict[str, Any]]:
    """The records with `seq` in [first, end) (their payload is a function of `seq`)."""
    return [{"seq": i, "v": f"r{i}"} for i in range(first, end)]


class Child:
    """The state one child keeps between commands."""

    def __init__(self) -> None:
        self.log: ta.Log | None = None
        self.streams: dict[str, ta.Stream] = {}

    def stream(self, name: str, take_over: bool = False) -> ta.Stream:
        assert self.log is not None, "open first"
        if name not in self.streams or take_over:
            self.streams[name] = self.log.stream(name, take_over=take_over)
        return self.streams[name]

    def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.log = ta.open(
            cmd["uri"],
            storage_options=cmd.get("storage_options"),
            local_dir=cmd["local_dir"],
            **cmd.get("options", {}),
        )
        return {}

    def append(self, cmd: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(cmd["stream"], cmd.get("take_over", False))
        first, end = cmd["seqs"]
        ack = stream.append(rows(first, end), durability=cmd.get("durability", "local"))
        return {"ack": list(ack)}

    def append_until_error(self, cmd: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(cmd["stream"])
        acks = []
        seq = cmd["start"]
        t0 = time.monotonic()
        error = None
        while time.monotonic() - t0 < cmd["timeout"]:
            try:
                acks.append(list(stream.append(rows(seq, seq + 1))))
            except ta.TransitError as e:
                error = {"type": type(e).__name__, "message": str(e)}
                break
            seq += 1
            time.sleep(cmd["interval"])
        return {"acks": acks, "error": error, "seconds": time.monotonic() - t0}

    def flush(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"generation": self.stream(cmd["stream"]).flush()}

    def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.log is not None
        self.log.close()
        return {}

    def read(self, cmd: dict[str, Any]) -> dict[str, Any]:
        table = self.stream(cmd["stream"]).read()
        return {
            "offsets": table.column("_offset").to_pylist(),
            "seqs": table.column("seq").to_pylist(),
        }

    def commit_race(self, cmd: dict[str, Any]) -> dict[str, Any]:
        store = store_from_uri(cmd["uri"], cmd.get("storage_options"))
        name = cmd["stream"]
        commits = CommitLog(store, name, f"streams/{encode_stream_name(name)}")
        writer = writer_identity(uuid.uuid4().hex, 0)
        won: list[int] = []
        conflicts = 0
        time.sleep(max(0.0, cmd["start_at"] - time.time()))
        while True:
            latest = commits.generations()[-1]
            if latest >= cmd["until"]:
                break
            root = json.loads(store.get(commits.path(latest)))["root"]
            try:
                commits.create(latest + 1, root, [], writer)
            except ta.CommitConflictError:
                conflicts += 1
            else:
                won.append(latest + 1)
        return {"won": won, "conflicts": conflicts, "writer": writer["id"]}


def main() -> None:
    child = Child()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            # Skip interpreter teardown (s3fs's event loop thread takes a second to stop);
            # every command already finished, and stdout was flushed.
            os._exit(0)
        try:
            answer = {"ok": True, **getattr(child, cmd["op"])(cmd)}
        except Exception as e:
            traceback.print_exc()
            answer = {"ok": False, "type": type(e).__name__, "message": str(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
