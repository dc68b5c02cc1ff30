"""Shared fixtures: local logs, and a real S3-compatible HTTP server (moto) on loopback."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import transit_arrow as ta


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ta.Log]:
    """A fresh log on a local folder."""
    with ta.open(tmp_path / "log") as log:
        yield log


@dataclass(frozen=True)
class S3Endpoint:
    """A moto S3 server on 127.0.0.1 and the storage options to reach it."""

    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "key": "testing",
            "secret": "testing",
            "region": "us-east-1",
        }

    def create_bucket(self) -> str:
        """Create a fresh bucket and return its name."""
        import boto3

        name = f"transit-{uuid.uuid4().hex[:20]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real moto S3 server (HTTP on loopback, random port) for the whole test session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_uri(s3_endpoint: S3Endpoint) -> str:
    """`s3://<fresh bucket>/log` on the moto server (one bucket per test)."""
    return f"s3://{s3_endpoint.create_bucket()}/log"
