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


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FsspecStore]:
    if request.param == "local":
        local = FsspecStore(str(tmp_path / "store"))
        assert local.is_local
        yield local
        return
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        yield FsspecStore(f"{bucket.url}/store", bucket.storage_options)
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
