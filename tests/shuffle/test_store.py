"""Tests for shuffle.store: every byte mrk8s moves goes through an FsspecStore.

Each behaviour runs on local disk and on fsspec's memory:// filesystem (the
non-local code path, as an object store takes it). The oracle is the bytes
the test wrote, and the directory listing: after any write, finished or
failed, nothing but the published files may be there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shuffle.errors import StoreError
from shuffle.store import (
    UPLOAD_PART_BYTES,
    FsspecStore,
    ShortReadError,
    UserErrorPermission,
    join,
)

DATA = bytes(range(256)) * 64  # 16 KiB, every byte value, no two offsets alike mod 256


class Boom(Exception):
    pass


def test_open_write_publishes_only_on_clean_exit(store: FsspecStore) -> None:
    with store.open_write("out/part-00000") as f:
        f.write(DATA[:100])
        assert not store.exists("out/part-00000")
        f.write(DATA[100:])
        assert not store.exists("out/part-00000")

    assert store.read_bytes("out/part-00000") == DATA
    assert store.list("out") == ["part-00000"]


def test_an_exception_inside_open_write_leaves_no_file_and_no_temp_file(
    store: FsspecStore,
) -> None:
    store.makedirs("out")
    error = Boom("user code failed")
    with pytest.raises(Boom) as caught, store.open_write("out/part-00000") as f:
        f.write(DATA)
        raise error

    assert caught.value is error
    assert not store.exists("out/part-00000")
    assert store.list("out") == []
    if store.is_local:
        assert os.listdir(store.local_path("out")) == []


def test_a_failed_rewrite_keeps_the_previous_file(store: FsspecStore) -> None:
    store.write_bytes("commits/s0-map-00000.json", b"first")
    with pytest.raises(Boom), store.open_write("commits/s0-map-00000.json") as f:
        f.write(b"second, half written")
        raise Boom
    assert store.read_bytes("commits/s0-map-00000.json") == b"first"
    assert store.list("commits") == ["s0-map-00000.json"]


def test_open_write_of_more_than_fits_in_memory(store: FsspecStore) -> None:
    # Past the 8 MiB kept in memory before a non-local write spools to disk.
    big = DATA * 600
    with store.open_write("big.bin") as f:
        for start in range(0, len(big), 1 << 20):
            f.write(big[start : start + (1 << 20)])
    assert store.size("big.bin") == len(big)
    assert store.read_bytes("big.bin") == big


def test_write_bytes_then_read_whole_and_by_range(store: FsspecStore) -> None:
    store.write_bytes("a/b/c.bin", DATA)

    assert store.exists("a/b/c.bin")
    assert store.size("a/b/c.bin") == len(DATA)
    assert store.read_bytes("a/b/c.bin") == DATA
    for offset, length in [(0, len(DATA)), (0, 1), (1000, 5000), (len(DATA) - 1, 1), (7, 0)]:
        assert store.read_range("a/b/c.bin", offset, length) == DATA[offset : offset + length]
        view = store.view_range("a/b/c.bin", offset, length)
        assert view.to_pybytes() == DATA[offset : offset + length]
    with store.open_read("a/b/c.bin") as f:
        f.seek(300)
        assert f.read(10) == DATA[300:310]


def test_a_short_read_says_what_was_wanted_and_what_came(store: FsspecStore) -> None:
    store.write_bytes("m.arrow", DATA)
    offset = len(DATA) - 3
    with pytest.raises(ShortReadError) as caught:
        store.read_range("m.arrow", offset, 10)
    assert isinstance(caught.value, StoreError)
    assert str(caught.value) == (
        f"short read from {store.url('m.arrow')}: wanted 10 bytes at offset {offset}, got 3; "
        "the file was truncated or is being rewritten"
    )


def test_a_short_view_is_refused_like_a_short_read(store: FsspecStore) -> None:
    store.write_bytes("m.arrow", DATA)
    with pytest.raises(ShortReadError, match=r"short read from .*m\.arrow: wanted 10 bytes"):
        store.view_range("m.arrow", len(DATA) - 3, 10)


def test_a_local_view_is_a_mapping_that_outlives_the_file(tmp_path: Path) -> None:
    store = FsspecStore(str(tmp_path))
    store.write_bytes("m.arrow", DATA)
    view = store.view_range("m.arrow", 100, 5000)
    store.remove("m.arrow")  # a finished job's shuffle directory goes away like this
    assert not store.exists("m.arrow")
    assert view.to_pybytes() == DATA[100:5100]


def test_reading_a_missing_file_raises_file_not_found(store: FsspecStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nope")
    with pytest.raises(FileNotFoundError):
        store.read_range("nope", 0, 1)
    with pytest.raises(FileNotFoundError):
        store.view_range("nope", 0, 1)
    with pytest.raises(FileNotFoundError):
        store.open_read("nope")
    assert not store.exists("nope")


def test_list_gives_sorted_names_of_files_and_directories(store: FsspecStore) -> None:
    for path in ["job/s0/map-00001.arrow", "job/s0/map-00000.arrow", "job/commits/x.json"]:
        store.write_bytes(path, b"x")

    assert store.list("job") == ["commits", "s0"]
    assert store.list("job/s0") == ["map-00000.arrow", "map-00001.arrow"]
    assert store.list("job/missing") == []
    assert store.list("") == ["job"]


def test_remove_a_file_a_directory_and_nothing(store: FsspecStore) -> None:
    for path in ["d/one", "d/two", "d/sub/three", "keep"]:
        store.write_bytes(path, b"x")

    store.remove("d/one")
    assert store.list("d") == ["sub", "two"]
    store.remove("d", recursive=True)
    assert not store.exists("d/two")
    assert not store.exists("d/sub/three")
    store.remove("d/never-was")
    store.remove("never-was", recursive=True)
    assert store.list("") == ["keep"]


def test_rename_moves_a_file_and_replaces_the_target(store: FsspecStore) -> None:
    store.write_bytes("out/_tmp/part-00000", DATA)
    store.write_bytes("out/part-00001", b"old")
    store.write_bytes("out/_tmp/part-00001", b"new")

    store.rename("out/_tmp/part-00000", "out/part-00000")
    store.rename("out/_tmp/part-00001", "out/part-00001")

    assert store.read_bytes("out/part-00000") == DATA
    assert store.read_bytes("out/part-00001") == b"new"
    assert store.list("out/_tmp") == []


def test_put_file_publishes_a_local_file_and_removes_it(store: FsspecStore, tmp_path: Path) -> None:
    local = tmp_path / "spill-123"
    local.write_bytes(DATA)

    store.put_file(str(local), "s0/map-00000-a0.arrow")

    assert store.read_bytes("s0/map-00000-a0.arrow") == DATA
    assert not local.exists()
    assert store.list("s0") == ["map-00000-a0.arrow"]


def test_an_upload_to_s3_goes_in_parts_of_bounded_size(s3_bucket: Any, tmp_path: Path) -> None:
    """What keeps a worker's memory flat: s3fs would read a file under 100 MiB
    whole, and hold ten 50 MiB parts of a larger one."""
    store = FsspecStore(f"{s3_bucket.url}/store", s3_bucket.storage_options)
    local = tmp_path / "map-output"
    data = DATA * (2 * UPLOAD_PART_BYTES // len(DATA)) + b"tail"  # two full parts and a bit
    local.write_bytes(data)

    store.put_file(str(local), "s0/map-00000-a1.arrow")

    assert store.read_bytes("s0/map-00000-a1.arrow") == data
    # S3 (and moto) give a multipart object the ETag "<md5 of the parts' md5s>-<parts>".
    import s3fs  # (Arrow's client, with MRK8S_S3_CLIENT=arrow, reports no ETag)

    info = s3fs.S3FileSystem(**s3_bucket.storage_options).info
    etag = info(f"{s3_bucket.url}/store/s0/map-00000-a1.arrow")["ETag"]
    parts = int(etag.strip('"').rsplit("-", 1)[1])  # s3fs: 3; Arrow's client: its own size
    assert parts >= 3 and len(data) / parts <= UPLOAD_PART_BYTES, etag


def test_put_file_from_another_filesystem_copies_then_publishes(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second local filesystem (/dev/shm) apart from tmp_path's")
    spill_dir = Path(tempfile.mkdtemp(prefix="mrk8s-test-", dir=shm))
    try:
        local = spill_dir / "spill"
        local.write_bytes(DATA)
        store = FsspecStore(str(tmp_path / "shuffle"))

        store.put_file(str(local), "s0/map.arrow")

        assert store.read_bytes("s0/map.arrow") == DATA
        assert not local.exists()
        assert store.list("s0") == ["map.arrow"]
    finally:
        shutil.rmtree(spill_dir)


def test_urls_and_local_paths(store: FsspecStore) -> None:
    assert store.url("a/b.json") == f"{store.root_url}/a/b.json"
    assert store.url("") == store.root_url
    if store.is_local:
        assert store.local_path("a/b.json") == os.path.join(store.root_url, "a", "b.json")
    else:
        assert store.root_url.split("://")[0] in ("memory", "s3")
        assert store.local_path("a/b.json") is None


def test_join_uses_one_slash_between_parts() -> None:
    assert join("s3://bucket/", "/job/", "s0/", "map.arrow") == "s3://bucket/job/s0/map.arrow"
    assert join("/data", "x") == "/data/x"


def _write_and_read(root: str) -> dict[str, list[str]]:
    """Try to write a new file and read an unreadable one; name what each raised."""
    store = FsspecStore(root)
    actions: dict[str, Callable[[], Any]] = {
        "write": lambda: store.write_bytes("new.bin", b"1"),
        "read": lambda: store.open_read("secret.bin").close(),
    }
    out = {}
    for name, action in actions.items():
        try:
            action()
        except Exception as exc:
            out[name] = [type(exc).__name__, str(exc)]
        else:
            out[name] = ["no error", ""]
    return out


def _as_nobody(fn: Callable[[str], Any], arg: str) -> Any:
    """``fn(arg)`` in a forked child that has given up root for uid/gid 65534."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(fn(arg)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        reply = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(reply)


@pytest.mark.timeout(30)
def test_permission_denied_names_the_location_and_the_fix() -> None:
    # Not under tmp_path: its parents are private to the test's user, and the
    # unprivileged child below must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="mrk8s-test-readonly-"))
    try:
        (root / "secret.bin").write_bytes(b"x")
        (root / "secret.bin").chmod(0)
        root.chmod(0o555)
        if not os.access(root, os.W_OK):
            results = _write_and_read(str(root))
        elif os.geteuid() == 0 and hasattr(os, "fork"):
            # Root ignores the mode bits; try as an unprivileged user instead.
            results = _as_nobody(_write_and_read, str(root))
        else:
            pytest.skip("chmod does not make a directory read-only for this user")
    finally:
        root.chmod(0o755)
        shutil.rmtree(root)

    fix = (
        "choose a location you can write to, or fix its permissions, then rerun the same "
        "command to resume"
    )
    assert results == {
        "write": [
            UserErrorPermission.__name__,
            f"permission denied while trying to write {root}/new.bin: {fix}",
        ],
        "read": [
            UserErrorPermission.__name__,
            f"permission denied while trying to open {root}/secret.bin: {fix}",
        ],
    }
