"""The reader actor's direct range server (``scheduler.backends.ray.rangeserver``), on loopback.

A real HTTP server on a real socket, read by the real client: ranges equal
the file's bytes, only the node's directory and only with the token, and a
burst of connections is queued rather than dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scheduler.backends.ray.rangeserver import RangeServer, _Server, fetch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RangeServer, Path, bytes]]:
    root = tmp_path / "node"
    (root / "job").mkdir(parents=True)
    data = os.urandom(3 * 2**20 + 17)
    path = root / "job" / "map-00000-a1.arrow"
    path.write_bytes(data)
    server = RangeServer(str(root), "127.0.0.1")
    try:
        yield server, path, data
    finally:
        server.close()


def test_ranges_equal_the_files_bytes(served: tuple[RangeServer, Path, bytes]):
    server, path, data = served

    assert fetch(server.address, str(path), 0, len(data)) == data
    assert fetch(server.address, str(path), 12345, 2**20 + 99) == data[12345 : 2**20 + 99]
    assert fetch(server.address, str(path), len(data) - 5, len(data) + 100) == data[-5:]
    assert fetch(server.address, str(path), 10, 10) == b""


def test_only_the_nodes_directory_and_only_with_the_token(
    served: tuple[RangeServer, Path, bytes], tmp_path: Path
):
    server, path, _ = served
    secret = tmp_path / "secret"
    secret.write_text("not yours")
    host, port, _token = server.address

    with pytest.raises(PermissionError, match="wrong or missing token"):
        fetch((host, port, "guessed"), str(path), 0, 10)
    for outside in (secret, path.parent / ".." / ".." / "secret"):
        with pytest.raises(PermissionError, match="not under this node's shuffle directory"):
            fetch(server.address, str(outside), 0, 4)
    with pytest.raises(FileNotFoundError):
        fetch(server.address, str(path.parent / "map-00009-a1.arrow"), 0, 4)


def test_an_unreachable_server_is_an_oserror(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(OSError):
            fetch(("127.0.0.1", port, "token"), str(tmp_path / "x"), 0, 10)


def test_a_burst_of_connections_is_queued_not_dropped(tmp_path: Path):
    # Reducers open many connections at once. With socketserver's default
    # backlog of 5, connections past it were dropped while the server was busy
    # and retried by the kernel a second or more later. Here nothing accepts
    # at all: every connection must still complete its handshake in the queue.
    server = _Server(("127.0.0.1", 0), lambda *a: None)  # type: ignore[arg-type]
    address = server.server_address[:2]
    try:

        def connect(_: int) -> bool:
            with socket.socket() as s:
                s.settimeout(3)
                try:
                    s.connect(address)
                except OSError:
                    return False
                return True

        with ThreadPoolExecutor(64) as pool:
            connected = list(pool.map(connect, range(64)))
    finally:
        server.server_close()

    assert all(connected), f"{connected.count(False)} of 64 connections were not queued"
