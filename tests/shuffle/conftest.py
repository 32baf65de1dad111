"""Fixtures shared by the data-plane tests: one store per filesystem we can run here.

``store`` is parametrized, so every test that takes it runs on a local
directory (``tmp_path``), on fsspec's ``memory://`` filesystem (a real fsspec
implementation that sends the store down its non-local code paths: no
rename, no OS paths) and on S3 through s3fs against a real S3 protocol
server on loopback (see tests/s3.py).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shuffle.store import FsspecStore


@pytest.fixture(params=["local", "memory", "s3", "s3-arrow"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FsspecStore]:
    if request.param == "local":
        local = FsspecStore(str(tmp_path / "store"))
        assert local.is_local
        yield local
        return
    if request.param in ("s3", "s3-arrow"):
        bucket = request.getfixturevalue("s3_bucket")
        # s3-arrow: the same server through Arrow's own S3 client (shuffle.s3native).
        client = "arrow" if request.param == "s3-arrow" else "s3fs"
        request.getfixturevalue("monkeypatch").setenv("MRK8S_S3_CLIENT", client)
        s3 = FsspecStore(f"{bucket.url}/store", bucket.storage_options)
        assert type(s3.fs).__name__ == ("S3Wrapper" if client == "arrow" else "S3FileSystem")
        yield s3
        return
    top = f"mrk8s-test-{uuid.uuid4().hex}"
    remote = FsspecStore(f"memory://{top}/store")
    assert not remote.is_local
    try:
        yield remote
    finally:
        # The memory filesystem is process-global: leave nothing for the next test.
        with contextlib.suppress(FileNotFoundError):
            remote.fs.rm(f"/{top}", recursive=True)
