"""Artifacts: content-addressed payloads under the log root, verified on read."""

from __future__ import annotations

from pathlib import Path

import blake3
import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.workloads import ENVELOPE_TYPE, Envelope, get_artifact, put_artifact


def test_put_is_content_addressed_and_get_verifies(tmp_path: Path) -> None:
    payload = b"\x89PNG" + bytes(range(256)) * 400
    with ta.open(tmp_path / "log") as log:
        env = put_artifact(log, payload, media_type="image/png")
        digest = blake3.blake3(payload).hexdigest()
        assert env == Envelope(
            f"artifacts/{digest[:2]}/{digest}", len(payload), digest, "image/png"
        )
        assert put_artifact(log, bytearray(payload), media_type="image/png") == env
        assert get_artifact(log, env) == payload
        assert get_artifact(log, env.to_dict()) == payload
        # An envelope fits in a record as a struct column.
        stream = log.create_stream("shots")
        stream.append(pa.table({"step": [1], "image": pa.array([env.to_dict()], ENVELOPE_TYPE)}))
        stored = stream.read().column("image")[0].as_py()
        assert get_artifact(log, stored) == payload
    path = tmp_path / "log" / env.ref
    assert path.read_bytes() == payload
    damaged = bytearray(payload)
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with ta.open(tmp_path / "log") as log, pytest.raises(ta.IntegrityError) as caught:
        get_artifact(log, env)
    message = str(caught.value)
    assert env.ref in message and digest in message
    assert blake3.blake3(bytes(damaged)).hexdigest() in message


def test_bad_envelopes_and_inputs(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        env = put_artifact(log, b"x", media_type="text/plain; charset=utf-8")
        with pytest.raises(ta.InvalidInputError):
            put_artifact(log, "text is not bytes")  # type: ignore[arg-type]
        with pytest.raises(ta.InvalidInputError):
            put_artifact(log, b"x", media_type="plain")
        for bad in (
            {**env.to_dict(), "ref": "_transit.json"},
            {**env.to_dict(), "ref": "artifacts/../_transit.json"},
            {**env.to_dict(), "blake3": "0" * 64},
            {**env.to_dict(), "size": -1},
            {"ref": env.ref},
            "artifacts/xx",
        ):
            with pytest.raises(ta.InvalidInputError):
                get_artifact(log, bad)  # type: ignore[arg-type]
        with ta.open("memory://other") as other:
            missing = put_artifact(other, b"elsewhere")
        with pytest.raises(ta.NotFoundError):
            get_artifact(log, missing)
        size_lie = Envelope(env.ref, 2, env.blake3, env.media_type)
        with pytest.raises(ta.IntegrityError, match="size expected 2, found 1"):
            get_artifact(log, size_lie)


def test_artifacts_on_a_memory_store_and_gc_keeps_them() -> None:
    with ta.open("memory://artifacts-gc") as log:
        env = put_artifact(log, b"payload" * 1000, media_type="application/json")
        log.gc(min_age=0)
        assert get_artifact(log, env) == b"payload" * 1000
