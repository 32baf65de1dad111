"""Fixtures shared by the data-plane tests: one store per filesystem we can run here.

``store`` is parametrized, so every test that takes it runs on a local
directory (``tmp_path``) and on fsspec's ``memory://`` filesystem: a real
fsspec implementation that sends the store down its non-local code paths
(no rename, no OS paths), the ones an object store takes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shuffle.store import FsspecStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FsspecStore]:
    if request.param == "local":
        local = FsspecStore(str(tmp_path / "store"))
        assert local.is_local
        yield local
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
