"""The Flight protocol as a plain `pyarrow.flight.FlightClient` sees it (docs/flight.md): auth,
stable error codes, every endpoint, upload acks and failures."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flight_helpers import (
    TOKEN,
    WAIT,
    ServerProcess,
    action,
    detail,
    drain_acks,
    options,
    upload,
)

import transit_arrow as ta
from transit_arrow.client import connect
from transit_arrow.client.protocol import ACTIONS, ERROR_CODES, UnauthorizedError
from transit_arrow.server.flight import (
    READ_CACHE_BYTES,
    TransitFlightServer,
    default_read_cache_bytes,
    retain_freed_memory,
)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> flight.FlightClient:
    c = flight.FlightClient(server.address)
    action(c, "create_stream", {"name": "proto"})
    messages, error = upload(
        c,
        flight.FlightDescriptor.for_path("proto"),
        [pa.record_batch({"x": [1, 2, 3], "s": ["a", "b", "c"]})],
    )
    assert error is None and messages[0]["last_offset"] == 2
    return c


def state(c: flight.FlightClient) -> list[tuple[str, int]]:
    table = pa.ipc.open_stream(action(c, "streams", {})).read_all()
    return list(zip(table["name"].to_pylist(), table["next_offset"].to_pylist(), strict=True))


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", f"{TOKEN[:-1]}"])
def test_calls_without_the_token_are_refused_before_touching_the_log(
    client: flight.FlightClient, server: ServerProcess, token: str | None
) -> None:
    before = state(client)
    batch = pa.record_batch({"x": [9]})
    calls = [
        lambda: action(client, "create_stream", {"name": "intruder"}, token=token),
        lambda: action(client, "streams", {}, token=token),
        lambda: upload(client, flight.FlightDescriptor.for_path("proto"), [batch], token=token),
        lambda: client.do_get(flight.Ticket(b"proto"), options(token)).read_all(),
        lambda: list(client.list_flights(b"", options(token))),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_path("proto"), options(token)),
        lambda: list(client.list_actions(options(token))),
    ]
    for call in calls:
        try:
            result = call()
        except flight.FlightUnauthenticatedError as e:
            error: BaseException = e
        else:  # an upload reports its error instead of raising it
            assert isinstance(result, tuple), result
            error = result[1]
        assert isinstance(error, flight.FlightUnauthenticatedError), error
        assert detail(error)["code"] == "unauthorized"
        assert str(error).startswith("[unauthorized]")
    assert state(client) == before
    with pytest.raises(UnauthorizedError) as info:
        connect(server.address, token=token or "none")
    assert info.value.code == "unauthorized"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "body", "code", "error"),
    [
        ("stream_info", {"stream": "missing"}, "not_found", "StreamNotFoundError"),
        ("create_stream", {"name": "proto"}, "conflict", "AlreadyExistsError"),
        ("create_stream", {"name": "bad name!"}, "invalid_request", "InvalidInputError"),
        ("create_stream", {"name": 7}, "invalid_request", "InvalidInputError"),
        ("create_stream", {"name": "x", "colour": "red"}, "invalid_request", "InvalidInputError"),
        ("no_such_action", {}, "invalid_request", "InvalidInputError"),
        ("stream_info", {"stream": "proto", "generation": 99}, "not_found", "NotFoundError"),
        ("sql", {"query": "SELEC 1"}, "invalid_request", "QueryError"),
        ("merge", {"name": "m", "parents": ["proto"]}, "conflict", "MergeConflictError"),
    ],
)
def test_errors_carry_a_stable_code(
    client: flight.FlightClient, kind: str, body: dict[str, object], code: str, error: str | None
) -> None:
    before = state(client)
    with pytest.raises(flight.FlightError) as info:
        action(client, kind, body)
    got = detail(info.value)
    assert got["code"] == code in ERROR_CODES
    if error is not None:
        assert got["error"] == error
    assert got["message"] and str(info.value).startswith(f"[{code}] ")
    assert state(client) == before


def test_verify_of_a_forged_checkpoint_reports_integrity(client: flight.FlightClient) -> None:
    real = json.loads(action(client, "checkpoint", {"stream": "proto"}))
    forged = {**real, "root": "f" * 64}
    report = json.loads(action(client, "verify", {"checkpoint": forged}))
    assert not report["ok"]
    assert json.loads(action(client, "verify", {"checkpoint": real}))["ok"]
    with pytest.raises(flight.FlightError) as info:
        client.do_get(
            flight.Ticket(json.dumps({"stream": "proto", "checkpoint": forged}).encode()),
            options(),
        ).read_all()
    assert detail(info.value)["code"] == "integrity"


@pytest.mark.parametrize(
    ("ticket", "code"),
    [
        (b"missing-stream", "not_found"),
        (b'{"stream": "proto", "start": -1}', "invalid_request"),
        (b'{"stream": "proto", "follow": true, "generation": 1}', "invalid_request"),
        (b'{"stream": "proto", "columns": ["nope"]}', "invalid_request"),
        (b'{"stream": ', "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
    ],
)
def test_bad_tickets(client: flight.FlightClient, ticket: bytes, code: str) -> None:
    with pytest.raises(flight.FlightError) as info:
        client.do_get(flight.Ticket(ticket), options()).read_all()
    assert detail(info.value)["code"] == code


def test_plain_flight_client_endpoints(client: flight.FlightClient) -> None:
    infos = {tuple(i.descriptor.path): i for i in client.list_flights(b"pro", options())}
    info = infos[(b"proto",)]
    assert info.schema.names[:4] == ["_stream", "_offset", "_timestamp", "_headers"]
    assert info.total_records >= 3
    table = client.do_get(info.endpoints[0].ticket, options()).read_all()
    assert table.column("x").to_pylist()[:3] == [1, 2, 3]
    assert table.schema == info.schema

    ranged = json.dumps({"stream": "proto", "start": 1, "end": 3, "columns": ["_offset", "s"]})
    descriptor = flight.FlightDescriptor.for_command(ranged.encode())
    info = client.get_flight_info(descriptor, options())
    assert info.schema.names == ["_offset", "s"] and info.total_records == 2
    assert client.get_schema(descriptor, options()).schema == info.schema
    got = client.do_get(info.endpoints[0].ticket, options()).read_all()
    assert got.to_pylist() == [{"_offset": 1, "s": "b"}, {"_offset": 2, "s": "c"}]
    assert client.do_get(flight.Ticket(b"proto"), options()).read_all().num_rows >= 3

    assert {a.type for a in client.list_actions(options())} == set(ACTIONS)
    ping = json.loads(action(client, "ping", {}))
    assert ping["ok"] and ping["protocol"] == 1
    lineage = pa.ipc.open_stream(action(client, "lineage", {})).read_all()
    assert "proto" in lineage.column("name").to_pylist()


@pytest.mark.parametrize("durability", ["memory", "local"])
def test_upload_of_many_batches_is_acknowledged_batch_by_batch(
    client: flight.FlightClient, durability: str
) -> None:
    stream = f"many-{durability}"
    batches = [pa.record_batch({"n": list(range(i * 10, i * 10 + 10))}) for i in range(200)]
    big = 150_000  # 1.2 MB batches: appended as received, not folded
    batches += [
        pa.record_batch({"n": pa.array(range(2000 + i * big, 2000 + (i + 1) * big))})
        for i in range(3)
    ]
    command = {"stream": stream, "create": True, "durability": durability}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    messages, error = upload(client, descriptor, batches)
    assert error is None, error
    assert sum(m["batches"] for m in messages) == 203
    assert {m["durability"] for m in messages} == {durability}
    assert messages[0]["first_offset"] == 0 and messages[-1]["last_offset"] == 2000 + 3 * big - 1
    for before, after in itertools.pairwise(messages):
        assert after["first_offset"] == before["last_offset"] + 1
    table = client.do_get(flight.Ticket(stream.encode()), options()).read_all()
    assert table.column("n").to_pylist() == list(range(2000 + 3 * big))


def test_a_bad_batch_stops_the_upload_after_the_good_ones(client: flight.FlightClient) -> None:
    """Each batch is atomic: those before the bad one are appended and acknowledged, the bad
    one and those after it are not."""
    stamp = pa.timestamp("ns", tz="UTC")
    good = [
        pa.record_batch({"v": [i], "_timestamp": pa.array([i * 1000], stamp)}) for i in range(3)
    ]
    bad = pa.record_batch({"v": [99], "_timestamp": pa.array([1], stamp)})  # sub-microsecond
    later = [
        pa.record_batch({"v": [i], "_timestamp": pa.array([i * 1000], stamp)}) for i in range(3)
    ]
    command = {"stream": "partial", "create": True}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    messages, error = upload(client, descriptor, [*good, bad, *later])
    assert error is not None and detail(error)["code"] == "invalid_request"
    acks = [m for m in messages if "error" not in m]
    assert sum(m["batches"] for m in acks) == 3
    assert messages[-1]["error"]["code"] == "invalid_request"
    table = client.do_get(flight.Ticket(b"partial"), options()).read_all()
    assert table.column("v").to_pylist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"stream": "nope-missing"}, "not_found"),
        ({"stream": "proto", "durability": "forever"}, "invalid_request"),
        ({"stream": "proto", "input": "pickle"}, "invalid_request"),
        ({"stream": "proto", "producer": "p"}, "invalid_request"),
        ({"stream": "proto", "x": 1}, "invalid_request"),
    ],
)
def test_bad_uploads(client: flight.FlightClient, command: dict[str, object], code: str) -> None:
    before = state(client)
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    _, error = upload(client, descriptor, [pa.record_batch({"x": [5]})])
    assert error is not None and detail(error)["code"] == code
    assert state(client) == before


def test_inflight_uploads_per_connection_are_bounded(tmp_path: Path) -> None:
    """With a limit of 1, a second concurrent upload on the same connection waits for the
    first, and is refused `unavailable` when it waits too long."""
    with ta.open(tmp_path / "log") as log:
        server = TransitFlightServer(
            log, "grpc://127.0.0.1:0", token=TOKEN, max_inflight_appends=1, admission_wait=0.5
        )
        try:
            c = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
            action(c, "create_stream", {"name": "b"})
            batch = pa.record_batch({"x": [1]})
            writer, acks = c.do_put(flight.FlightDescriptor.for_path("b"), batch.schema, options())
            writer.write_batch(batch)  # the first upload stays open
            time.sleep(0.2)
            _, error = upload(c, flight.FlightDescriptor.for_path("b"), [batch])
            assert error is not None and detail(error)["code"] == "unavailable"
            assert "in progress on this connection" in detail(error)["message"]
            other = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")  # another connection
            assert upload(other, flight.FlightDescriptor.for_path("b"), [batch])[1] is None
            writer.done_writing()
            assert [m["batches"] for m in drain_acks(acks)] == [1]
            writer.close()
            assert upload(c, flight.FlightDescriptor.for_path("b"), [batch])[1] is None
        finally:
            server.shutdown()


def test_tls(tmp_path: Path, token_file: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=WAIT,
    )  # fmt: skip
    ta.open(tmp_path / "log").close()
    extra = ["--tls-cert", str(cert), "--tls-key", str(key)]
    proc = ServerProcess(tmp_path / "log", token_file, extra).start()
    try:
        assert proc.address.startswith("grpc+tls://127.0.0.1:")
        with connect(proc.address, token=TOKEN, tls_root_certs=cert.read_bytes()) as log:
            log.create_stream("secure").append({"x": 1})
            assert log.stream("secure").read().num_rows == 1
        port = proc.address.rsplit(":", 1)[1]
        with pytest.raises(ta.StorageError) as info:  # plaintext to a TLS server
            connect(f"grpc://127.0.0.1:{port}", token=TOKEN, timeout=5)
        assert info.value.code == "unavailable"  # type: ignore[attr-defined]
    finally:
        code, err = proc.terminate()
    assert code == 0, err


def test_concurrent_clients_on_one_connection(client: flight.FlightClient) -> None:
    action(client, "create_stream", {"name": "shared-conn"})
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(10):
                batch = pa.record_batch({"who": [i], "k": [k]})
                _, error = upload(client, flight.FlightDescriptor.for_path("shared-conn"), [batch])
                assert error is None, error
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    table = client.do_get(flight.Ticket(b"shared-conn"), options()).read_all()
    assert table.column("_offset").to_pylist() == list(range(40))
    assert sorted(zip(table["who"].to_pylist(), table["k"].to_pylist(), strict=True)) == [
        (i, k) for i in range(4) for k in range(10)
    ]


class _PoolSpy:
    """Stands for pyarrow's memory pool (only its backend name is asked)."""

    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name


def test_retain_freed_memory_sets_jemalloc_decay_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`retain_freed_memory` turns jemalloc's decay off (freed pages kept for reuse); with
    another pool it changes nothing."""
    decays: list[int] = []
    pool = _PoolSpy("jemalloc")
    monkeypatch.setattr(pa, "jemalloc_set_decay_ms", decays.append)
    monkeypatch.setattr(pa, "default_memory_pool", lambda: pool)
    assert retain_freed_memory() and decays == [-1]
    pool.backend_name = "system"
    assert not retain_freed_memory() and decays == [-1]


def test_long_read_with_large_batches_arrives_whole_and_in_order(tmp_path: Path) -> None:
    """A DoGet whose first batch is large starts decoding ahead before sending it; the
    batches still arrive whole and in offset order, and a reader that stops after the first
    batch leaves the server serving."""
    with ta.open(tmp_path / "log") as log:
        stream = log.create_stream("big")
        for part in range(3):
            rows = range(part * 20_000, (part + 1) * 20_000)
            stream.append({"k": list(rows), "text": [f"{k:0100d}" for k in rows]})
            stream.flush()  # one segment each: three batches of ~2 MB
        expected = stream.read()
        server = TransitFlightServer(log, "grpc://127.0.0.1:0", token=TOKEN)
        try:
            c = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
            got = c.do_get(flight.Ticket(b"big"), options()).read_all()
            assert got.equals(expected)
            reader = c.do_get(flight.Ticket(b"big"), options())
            first = reader.read_chunk().data
            assert first.column("_offset").to_pylist() == list(range(first.num_rows))
            assert first.get_total_buffer_size() >= 1 << 20
            reader.cancel()
            assert c.do_get(flight.Ticket(b"big"), options()).read_all().equals(expected)
        finally:
            server.shutdown()


def test_a_server_has_a_bounded_read_cache_unless_told_not_to(tmp_path: Path) -> None:
    """By default a server keeps up to 512 MB (or an eighth of the machine's memory) of
    decoded row groups, and a second read of a branch is served from them; 0 turns it off."""
    assert 0 < default_read_cache_bytes() <= READ_CACHE_BYTES
    with ta.open(tmp_path / "log") as log:
        stream = log.create_stream("s")
        stream.append({"k": list(range(5000)), "v": [f"v{k}" for k in range(5000)]})
        stream.flush()
        expected = stream.read()
        server = TransitFlightServer(log, "grpc://127.0.0.1:0", token=TOKEN)
        try:
            cache = log.catalog.decoded
            assert cache is not None and cache.max_bytes == default_read_cache_bytes()
            c = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
            assert c.do_get(flight.Ticket(b"s"), options()).read_all().equals(expected)
            assert (cache.hits, len(cache)) == (0, 1)
            assert c.do_get(flight.Ticket(b"s"), options()).read_all().equals(expected)
            assert cache.hits == 1
        finally:
            server.shutdown()
    with ta.open(tmp_path / "log") as log:
        server = TransitFlightServer(log, "grpc://127.0.0.1:0", token=TOKEN, read_cache_bytes=0)
        try:
            assert log.catalog.decoded is None
        finally:
            server.shutdown()


def test_uploads_and_reads_reuse_their_worker_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One upload after another (each on its own stream) and one large read after another
    run on the same worker threads: a thread per upload spread the memory a server keeps
    over every allocator arena in turn (docs/flight.md, "Memory")."""
    started: list[str] = []
    start_thread = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start_thread(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)

    def new(prefix: str) -> int:
        return sum(name.startswith(prefix) for name in started)

    with ta.open(tmp_path / "log") as log:
        server = TransitFlightServer(log, "grpc://127.0.0.1:0", token=TOKEN)
        try:
            c = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
            batches = [pa.record_batch({"x": list(range(k, k + 100))}) for k in range(0, 500, 100)]
            for i in range(4):
                command = {"stream": f"u{i}", "durability": "local", "create": True}
                descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
                messages, error = upload(c, descriptor, batches)
                assert error is None and sum(m["batches"] for m in messages) == 5
                assert log.stream(f"u{i}").read().num_rows == 500
            # an appender and a syncer (`local`) at a time: two threads for all four uploads
            assert new("transit-append") <= 2, started
            stream = log.stream("u0")
            for k in range(3):
                rows = range(200_000)
                stream.append(pa.table({"x": list(rows), "s": [f"{k}-{j}" for j in rows]}))
            stream.flush()
            expected = stream.read()
            started.clear()
            for _ in range(3):
                assert c.do_get(flight.Ticket(b"u0"), options()).read_all().equals(expected)
            assert new("transit-read-ahead") <= 1, started
        finally:
            server.shutdown()
