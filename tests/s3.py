"""A real S3 protocol server on loopback for tests: moto in server mode.

Started once per test run on a free port (``s3_server``); every test that
uses ``s3_bucket`` gets a fresh, empty bucket and the storage options that
point a real s3fs client at the server, with dummy credentials. Nothing is
patched: requests go over HTTP to the server, as they would to S3.
"""

from __future__ import annotations

import contextlib
import logging
import re
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


#: Colour codes werkzeug puts around a request line in its log.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+"')


@contextlib.contextmanager
def server_log(bucket: S3Bucket) -> Iterator[list[tuple[str, str]]]:
    """The requests the server answered for ``bucket`` while the block ran, from its
    own access log (one line per request): (method, path and query) each."""
    name = bucket.url.removeprefix("s3://")
    seen: list[tuple[str, str]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _REQUEST_LINE.search(_ANSI.sub("", record.getMessage()))
            if match is None:
                return
            method, target = match.groups()
            path = target.split("?", 1)[0]
            if path == f"/{name}" or path.startswith(f"/{name}/"):
                seen.append((method, target))

    logger = logging.getLogger("werkzeug")
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


def request_kind(method: str, target: str) -> str:
    """What S3 operation a logged request was, in shuffle.storecount's names."""
    path, _, query = target.partition("?")
    keys = {part.split("=", 1)[0] for part in query.split("&") if part}
    is_bucket = path.strip("/").count("/") == 0
    if method == "PUT":
        return "multipart_part" if "partNumber" in keys else "put"
    if method == "POST":
        if "uploads" in keys:
            return "multipart_create"
        if "uploadId" in keys:
            return "multipart_complete"
        return "delete" if "delete" in keys else "other"
    if method == "DELETE":
        return "multipart_abort" if "uploadId" in keys else "delete"
    if method == "HEAD":
        return "head"
    if method == "GET":
        return "list" if is_bucket or "list-type" in keys else "get"
    return "other"
