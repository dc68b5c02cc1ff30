"""Helpers of the server tests: `transit serve` as a real subprocess, and plain Flight calls.

Every wait is bounded (`WAIT` seconds at most), and servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.flight as flight

TOKEN = "s3cret-token_for.tests"
WAIT = 30.0  # the longest any test waits for a process or a call
CLI = "from transit_arrow.cli import main; main()"
HERE = Path(__file__).resolve().parent


@dataclass
class Target:
    """A log under test and the prefix its stream names take (the remote log is shared)."""

    log: Any  # ta.Log or RemoteLog: the same API
    prefix: str
    remote: bool

    def name(self, short: str) -> str:
        return f"{self.prefix}{short}"


class Lines:
    """The stdout lines of a child process, read by a thread (so no wait can block forever and
    no line is lost between reading some lines live and the rest after the exit)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float = WAIT) -> str:
        """The next line ("" at EOF); fails after `timeout` seconds without one."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from pid {self.proc.pid} within {timeout} s") from None
        if line is None:
            self._queue.put(None)
            return ""
        return line

    def rest(self) -> list[str]:
        """Every line not read yet, up to EOF (the process must end within `WAIT`)."""
        out = []
        while line := self.next():
            out.append(line)
        return out


@dataclass
class ServerProcess:
    """`transit serve ROOT` in a child process on 127.0.0.1 (a random free port)."""

    root: Path
    token_file: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    address: str = ""
    code: str = CLI  # the program `python -c` runs (the CLI, or a variant of it)

    def start(self) -> ServerProcess:
        args = [sys.executable, "-c", self.code, "serve", str(self.root)]
        args += ["--host", "127.0.0.1", "--port", "0", "--token-file", str(self.token_file)]
        self.proc = subprocess.Popen(
            [*args, *self.extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = Lines(self.proc).next()
        if not line.startswith("serving "):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=WAIT)
            raise AssertionError(f"transit serve did not start: {line!r} {err}")
        self.address = line.split()[1]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send_term(self) -> None:
        """SIGTERM, without waiting."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> tuple[int, str]:
        """Wait for the exit: the exit status and stderr."""
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=WAIT)
        return self.proc.returncode, err

    def terminate(self) -> tuple[int, str]:
        """SIGTERM, then wait: the exit status and stderr."""
        self.send_term()
        return self.wait()

    def kill(self) -> None:
        """SIGKILL (no cleanup at all), then reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.communicate(timeout=WAIT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.kill()

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def options(token: str | None = TOKEN, timeout: float = WAIT) -> flight.FlightCallOptions:
    """Call options with `authorization: Bearer <token>` (none when `token` is None)."""
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return flight.FlightCallOptions(timeout=timeout, headers=headers)


def action(
    client: flight.FlightClient, kind: str, body: dict[str, Any], token: str | None = TOKEN
) -> bytes:
    """One DoAction, its single result's bytes."""
    payload = json.dumps(body).encode()
    results = list(client.do_action(flight.Action(kind, payload), options(token)))
    assert len(results) == 1
    return bytes(results[0].body.to_pybytes())


def upload(
    client: flight.FlightClient,
    descriptor: flight.FlightDescriptor,
    batches: list[pa.RecordBatch],
    token: str | None = TOKEN,
) -> tuple[list[dict[str, Any]], BaseException | None]:
    """One DoPut of `batches`; the messages the server sent, and the error it ended with."""
    writer, acks = client.do_put(descriptor, batches[0].schema, options(token))
    messages: list[dict[str, Any]] = []
    error: BaseException | None = None
    try:
        for batch in batches:
            writer.write_batch(batch)
        writer.done_writing()
        messages += drain_acks(acks)
    except flight.FlightError as e:
        error = e
    try:
        writer.close()
    except flight.FlightError as e:
        error = error or e
    return messages, error


def drain_acks(acks: flight.FlightMetadataReader) -> Iterator[dict[str, Any]]:
    while True:
        buffer = acks.read()
        if buffer is None:
            return
        yield json.loads(buffer.to_pybytes())


def detail(error: BaseException) -> dict[str, Any]:
    """The JSON error detail a Flight error carries."""
    assert isinstance(error, flight.FlightError), error
    return json.loads(error.extra_info)


def wait_until(predicate: Any, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Child:
    """`flight_child.py SCRIPT ARGS...`: a client in another process (see that module)."""

    def __init__(self, script: str, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "flight_child.py"), script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines = Lines(self.proc)

    def event(self) -> dict[str, Any]:
        """The next JSON line it prints."""
        line = self.lines.next()
        assert line, "the child exited"
        return dict(json.loads(line))

    def finish(self) -> list[dict[str, Any]]:
        """Wait for the exit (status 0 required); the JSON lines not read yet."""
        rest = self.lines.rest()
        _, err = self.proc.communicate(timeout=WAIT)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in rest if line.strip()]
