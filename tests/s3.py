"""A real S3 protocol server on loopback for tests: moto in server mode.

Started once per test run on a free port (``s3_server``); every test that
uses ``s3_bucket`` gets a fresh, empty bucket and the storage options that
point a real s3fs client at the server, with dummy credentials. Nothing is
patched: requests go over HTTP to the server, as they would to S3.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class S3Bucket:
    url: str  # s3://bucket
    endpoint: str
    storage_options: dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="S3 tests need the s3 extra: pip install 'mrk8s[s3]'")
    server_mod = pytest.importorskip("moto.server", reason="S3 tests need moto[server]")
    # The server logs every request; the tests' output needs none of it.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    import s3fs

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    options = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    name = f"mrk8s-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield S3Bucket(f"s3://{name}", s3_server, options)
    finally:
        fs.rm(name, recursive=True)
        s3fs.S3FileSystem.clear_instance_cache()
