"""shuffle.storecount: the requests a store sends, counted by kind, against the
S3 server's own access log (a real moto server on loopback, see tests/s3.py)."""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shuffle import store as store_mod
from shuffle import storecount
from shuffle.store import FsspecStore
from tests.s3 import S3Bucket, request_kind, server_log

pytestmark = pytest.mark.timeout(120)


def server_counts(seen: list[tuple[str, str]]) -> dict[str, int]:
    return dict(collections.Counter(request_kind(m, t) for m, t in seen))


def kinds(counted: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counted.items() if k in storecount.KINDS}


def test_the_kinds_of_the_server_log_are_read_right() -> None:
    assert request_kind("PUT", "/b/k") == "put"
    assert request_kind("PUT", "/b/k?partNumber=2&uploadId=x") == "multipart_part"
    assert request_kind("POST", "/b/k?uploads") == "multipart_create"
    assert request_kind("POST", "/b/k?uploadId=x") == "multipart_complete"
    assert request_kind("POST", "/b?delete") == "delete"
    assert request_kind("GET", "/b?list-type=2&prefix=k/") == "list"
    assert request_kind("GET", "/b/k") == "get"
    assert request_kind("HEAD", "/b") == "head"


def test_every_request_of_an_s3fs_store_is_counted_as_the_server_saw_it(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parts of S3's smallest size, so that a multipart upload stays small here.
    monkeypatch.setattr(store_mod, "UPLOAD_PART_BYTES", 5 << 20)
    monkeypatch.delenv("MRK8S_S3_CLIENT", raising=False)
    store = FsspecStore(f"{s3_bucket.url}/job", s3_bucket.storage_options)
    assert storecount.is_watched(store.fs) and store.is_counted
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 << 20))  # 3 parts of at most 5 MiB

    steps: list[tuple[str, Callable[[], object], dict[str, int]]] = [
        ("write_bytes", lambda: store.write_bytes("c/a.json", b"x" * 100), {"put": 1}),
        (
            "put_file",
            lambda: store.put_file(str(big), "s0/map.arrow"),
            {"multipart_create": 1, "multipart_part": 3, "multipart_complete": 1},
        ),
        ("read_range", lambda: store.read_range("s0/map.arrow", 100, 1000), {"get": 1}),
        ("view_range", lambda: store.view_range("s0/map.arrow", 5 << 20, 10), {"get": 1}),
        ("read_bytes", lambda: store.read_bytes("c/a.json"), {"head": 1, "get": 1}),
        ("exists", lambda: store.exists("c/a.json"), {"head": 1}),
        ("absent", lambda: store.exists("c/b.json"), {"head": 1, "list": 1}),
        ("list", lambda: store.list("c"), {"list": 1}),
        ("size", lambda: store.size("s0/map.arrow"), {"head": 1}),
        ("remove", lambda: store.remove("", recursive=True), {"list": 1, "delete": 1}),
    ]
    storecount.take()
    for name, step, expected in steps:
        with server_log(s3_bucket) as seen:
            step()
        counted = storecount.take()
        assert server_counts(seen) == expected, (name, seen)
        assert kinds(counted) == expected, (name, counted)
        if name == "write_bytes":
            assert counted[storecount.BYTES_WRITTEN] == 100
        if name == "put_file":
            assert counted[storecount.BYTES_WRITTEN] == 11 << 20
        if name == "read_range":
            assert counted[storecount.BYTES_READ] == 1000


def test_arrows_client_is_not_counted_and_says_so(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow's client sends its requests from C++, unseen: nothing is counted for
    it, and the store says its count is incomplete rather than zero."""
    monkeypatch.setenv("MRK8S_S3_CLIENT", "arrow")
    store = FsspecStore(f"{s3_bucket.url}/job", s3_bucket.storage_options)
    assert not storecount.is_watched(store.fs) and not store.is_counted
    storecount.take()
    with server_log(s3_bucket) as seen:
        store.write_bytes("c/a.json", b"{}")
    assert seen  # the server saw requests...
    assert storecount.take() == {}  # ...that nobody counted


def test_local_and_memory_stores_send_no_requests(tmp_path: Path) -> None:
    for store in (FsspecStore(str(tmp_path)), FsspecStore("memory://storecount-test")):
        assert store.is_counted and not storecount.is_watched(store.fs)
        storecount.take()
        store.write_bytes("a", b"x")
        store.read_bytes("a")
        store.remove("", recursive=True)
        assert storecount.take() == {}


def test_the_tally_starts_again_after_a_take() -> None:
    storecount.take()
    storecount.add(storecount.GET, 2)
    storecount.add(storecount.BYTES_READ, 10)
    assert storecount.peek() == {"get": 2, "bytes_read": 10}
    assert storecount.take() == {"get": 2, "bytes_read": 10}
    assert storecount.take() == {}
