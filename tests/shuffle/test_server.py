"""The shuffle server (``mrk8s shuffle-server``) and its client, over real HTTP.

The server runs as a real subprocess started by the ``mrk8s shuffle-server``
command on a loopback port; requests go over real sockets (``http.client``,
or a raw socket for request lines that client refuses to send). Every body
is compared with the file's own bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mrk8s
from mrk8s.tasks.plan import JobPlan
from shuffle import commit, httpfs, nodelocal
from shuffle.errors import CorruptSegmentError, StoreError
from shuffle.store import FsspecStore
from tests.s3 import S3Bucket
from tests.util import WORDCOUNT, make_words, parse_text_output

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cr3t-t0ken"
SIZE = 1_000_003  # not a multiple of anything


@dataclass
class Server:
    """A running ``mrk8s shuffle-server`` process."""

    proc: subprocess.Popen[str]
    url: str
    host: str
    port: int
    root: Path
    log: Path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def start_server(
    root: Path, log: Path, *args: str, env: dict[str, str] | None = None, port: int = 0
) -> Server:
    """``mrk8s shuffle-server --root ROOT --port PORT`` on loopback, once it listens."""
    command = [sys.executable, "-m", "mrk8s.cli", "shuffle-server", "--root", str(root)]
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "-v", *args],
            stdout=out,
            stderr=out,
            text=True,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on " in text:
            url = text.split("listening on ", 1)[1].split()[0]
            host, port = url.removeprefix("http://").rstrip("/").split(":")
            return Server(proc, url, host, int(port), root, log)
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}: {text}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the server did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a data file, a subdirectory, and links in and out; a secret beside it."""
    top = tmp_path_factory.mktemp("served")
    root = top / "root"
    (root / "job" / "s0").mkdir(parents=True)
    data = random.Random(7).randbytes(SIZE)
    (root / "job" / "s0" / "data.bin").write_bytes(data)
    (root / "empty.bin").write_bytes(b"")
    (top / "secret.txt").write_text("the secret\n")
    (root / "out-link").symlink_to(top / "secret.txt")
    (root / "out-dir").symlink_to(top)
    (root / "in-link").symlink_to(root / "job" / "s0" / "data.bin")
    return root


@pytest.fixture(scope="module")
def server(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that requires the bearer token TOKEN (from a file, as a Secret is mounted)."""
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    running = start_server(
        tree, tmp_path_factory.mktemp("log") / "server.log", "--token-file", str(token_file)
    )
    yield running
    assert running.stop() == 0


def data_of(root: Path) -> bytes:
    return (root / "job" / "s0" / "data.bin").read_bytes()


def get(
    server: Server,
    path: str,
    *,
    method: str = "GET",
    token: str | None = TOKEN,
    body: str | None = None,
    **headers: str,
) -> tuple[int, dict[str, str], bytes]:
    conn = server.connect()
    try:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def raw_request(server: Server, request_line: bytes) -> bytes:
    """The server's answer to a request whose line ``http.client`` would refuse to send."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(
            request_line + b"\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# -- ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=0-", 0, SIZE),
        ("bytes=999990-", 999990, SIZE),
        ("bytes=-1", SIZE - 1, SIZE),
        ("bytes=-4096", SIZE - 4096, SIZE),
        ("bytes=-5000000", 0, SIZE),  # a suffix longer than the file: all of it
        ("bytes=500000-9999999", 500000, SIZE),  # an end past the file: up to its end
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE),
    ],
)
def test_every_form_of_range_is_byte_exact(
    server: Server, tree: Path, header: str, start: int, end: int
) -> None:
    status, headers, body = get(server, "/job/s0/data.bin", Range=header)
    assert status == 206
    assert body == data_of(tree)[start:end]
    assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert headers["Content-Length"] == str(end - start)


def test_no_range_is_the_whole_file_and_head_has_no_body(server: Server, tree: Path) -> None:
    status, headers, body = get(server, "/job/s0/data.bin")
    assert (status, body) == (200, data_of(tree))
    assert headers["Content-Length"] == str(SIZE)
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, body = get(server, "/job/s0/data.bin", method="HEAD", Range="bytes=5-9")
    assert (status, body) == (206, b"")
    assert headers["Content-Length"] == "5"
    assert headers["Content-Range"] == f"bytes 5-9/{SIZE}"
    assert get(server, "/empty.bin")[::2] == (200, b"")


def test_requests_share_one_kept_alive_connection(server: Server, tree: Path) -> None:
    conn = server.connect()
    try:
        socks = set()
        for start in range(0, 50_000, 10_000):
            conn.request(
                "GET",
                "/job/s0/data.bin",
                headers={
                    "Range": f"bytes={start}-{start + 9_999}",
                    "Authorization": f"Bearer {TOKEN}",
                },
            )
            response = conn.getresponse()
            assert response.read() == data_of(tree)[start : start + 10_000]
            socks.add(id(conn.sock))
        assert len(socks) == 1
    finally:
        conn.close()


@pytest.mark.parametrize(
    "header",
    ["bytes=5-2", "bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes=-", "bytes 0-1", "bytes=1.5-2"],
)
def test_a_malformed_range_is_400(server: Server, header: str) -> None:
    status, _, body = get(server, "/job/s0/data.bin", Range=header)
    assert status == 400
    assert b"Range" in body


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/job/s0/data.bin", f"bytes={SIZE}-"),
        ("/job/s0/data.bin", f"bytes={SIZE + 10}-{SIZE + 20}"),
        ("/job/s0/data.bin", "bytes=-0"),
        ("/empty.bin", "bytes=0-"),
    ],
)
def test_an_unsatisfiable_range_is_416_with_the_size(
    server: Server, tree: Path, path: str, header: str
) -> None:
    status, headers, _ = get(server, path, Range=header)
    assert status == 416
    size = (tree / path.lstrip("/")).stat().st_size
    assert headers["Content-Range"] == f"bytes */{size}"


# -- refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/job/../../secret.txt",
        "/job/s0/../../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/job/%2e%2e/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",  # encoded twice
        "/%252e%252e%252fsecret.txt",
        "/..%5csecret.txt",  # an encoded backslash
        "/job\\..\\..\\secret.txt",
        "/job/s0/data.bin%00.txt",  # an encoded NUL
        "/./job/s0/data.bin",
        "/job//s0/data.bin",
        "/job/s0/data.bin?x=1",
        "/%ff%fe",  # not UTF-8
        "relative/path",
    ],
)
def test_path_traversal_is_refused(server: Server, path: str) -> None:
    status, _, body = get(server, path)
    assert status == 400, body
    assert b"the secret" not in body


def test_a_nul_byte_in_the_request_line_is_refused(server: Server) -> None:
    answer = raw_request(server, b"GET /job/s0/data.bin\x00/../../secret.txt HTTP/1.1")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"the secret" not in answer


def test_symlinks_that_leave_the_root_are_refused(server: Server, tree: Path) -> None:
    for path in ("/out-link", "/out-dir/secret.txt"):
        status, _, body = get(server, path)
        assert status == 403, path
        assert b"the secret" not in body
    # A link that stays inside the root is followed.
    assert get(server, "/in-link")[::2] == (200, data_of(tree))


def test_directories_and_missing_files_are_404(server: Server) -> None:
    assert get(server, "/job/s0")[0] == 404
    assert get(server, "/job/s0/nothing.bin")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
def test_other_methods_are_405_and_change_nothing(server: Server, tree: Path, method: str) -> None:
    status, headers, _ = get(server, "/job/s0/data.bin", method=method, body="x" * 10)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert data_of(tree) == random.Random(7).randbytes(SIZE)


@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, "Bearer s3cr3t"]
)
def test_a_missing_or_wrong_token_is_401(server: Server, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer, body = get(server, "/job/s0/data.bin", token=None, **headers)
    assert status == 401
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert len(body) < 200  # the refusal, not the file


def test_the_right_token_is_200(server: Server, tree: Path) -> None:
    assert get(server, "/job/s0/data.bin", token=TOKEN)[::2] == (200, data_of(tree))


def test_without_a_token_configured_no_authentication_is_asked(tree: Path, tmp_path: Path) -> None:
    env = {"MRK8S_SHUFFLE_TOKEN": "", "MRK8S_SHUFFLE_TOKEN_FILE": ""}
    open_server = start_server(tree, tmp_path / "log", env=env)
    try:
        assert get(open_server, "/job/s0/data.bin", token=None)[::2] == (200, data_of(tree))
    finally:
        assert open_server.stop() == 0


def test_the_token_may_come_from_the_environment(tree: Path, tmp_path: Path) -> None:
    env = {"MRK8S_SHUFFLE_TOKEN": "from-env", "MRK8S_SHUFFLE_TOKEN_FILE": ""}
    env_server = start_server(tree, tmp_path / "log", env=env)
    try:
        assert get(env_server, "/empty.bin", token=None)[0] == 401
        assert get(env_server, "/empty.bin", token="from-env")[0] == 200
    finally:
        assert env_server.stop() == 0


def test_bad_settings_are_one_clear_paragraph(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mrk8s.cli", "shuffle-server", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = run("--root", str(tmp_path / "nope"), "--port", "0")
    assert missing.returncode == 2
    assert "no such directory" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = run("--root", str(tmp_path), "--port", "0", "--token-file", str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert "is empty" in empty.stderr and "Traceback" not in empty.stderr


# -- many readers, stopping ---------------------------------------------------------


def test_64_concurrent_ranged_reads_are_byte_exact(server: Server, tree: Path) -> None:
    data = data_of(tree)
    rng = random.Random(3)
    ranges = []
    for _ in range(256):
        start = rng.randrange(SIZE)
        ranges.append((start, min(SIZE, start + rng.randrange(1, 200_000))))
    together = threading.Barrier(64)

    def read(work: list[tuple[int, int]]) -> list[bool]:
        conn = server.connect()
        try:
            together.wait(timeout=30)  # all 64 connections open and reading at once
            out = []
            for start, end in work:
                conn.request(
                    "GET",
                    "/job/s0/data.bin",
                    headers={
                        "Range": f"bytes={start}-{end - 1}",
                        "Authorization": f"Bearer {TOKEN}",
                    },
                )
                out.append(conn.getresponse().read() == data[start:end])
            return out
        finally:
            conn.close()

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(read, [ranges[i::64] for i in range(64)]))
    assert [ok for r in results for ok in r] == [True] * len(ranges)


def test_a_burst_of_connections_is_queued_not_dropped(tmp_path: Path) -> None:
    # Reducers open many connections at once. With socketserver's default
    # backlog of 5, connections past it were dropped while the server was busy
    # and retried by the kernel a second or more later. Here nothing accepts
    # at all: every connection must still complete its handshake in the queue.
    from shuffle.server import ServerSettings, make_server

    listening = make_server(ServerSettings(root=str(tmp_path), host="127.0.0.1", port=0))
    address = listening.server_address[:2]
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
        listening.server_close()

    assert all(connected), f"{connected.count(False)} of 64 connections were not queued"


def test_sigterm_lets_a_response_finish_then_stops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    big = random.Random(1).randbytes(48 << 20)
    (root / "big.bin").write_bytes(big)
    running = start_server(root, tmp_path / "log")
    idle = running.connect()
    idle.request("GET", "/big.bin", headers={"Range": "bytes=0-0"})
    assert idle.getresponse().read() == big[:1]  # now an idle kept-alive connection
    busy = socket.create_connection((running.host, running.port), timeout=30)
    try:
        busy.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = busy.recv(1 << 16)  # the response has started...
        running.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # ...and the server is stopping while it is sent
        while chunk := busy.recv(1 << 20):
            received += chunk
    finally:
        busy.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == big
    assert running.proc.wait(timeout=30) == 0
    assert "stopped" in running.log.read_text()
    with pytest.raises(OSError):
        socket.create_connection((running.host, running.port), timeout=5).close()
    idle.close()


# -- the client ----------------------------------------------------------------------


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give up on an unreachable server in a fraction of a second."""
    monkeypatch.setattr(httpfs, "BACKOFF_SECONDS", 0.01)


def test_the_client_reads_ranges_in_pieces_byte_exact(
    server: Server, tree: Path, tmp_path: Path
) -> None:
    big = random.Random(5).randbytes(3 * httpfs.PIECE_BYTES + 12345)
    (tree / "job" / "s0" / "big.bin").write_bytes(big)
    try:
        fs = httpfs.ShuffleServerFileSystem(
            {"node-a": server.url}, token=TOKEN, skip_instance_cache=True
        )
        assert fs.info("node-a/job/s0/big.bin")["size"] == len(big)
        for start, end in [
            (0, len(big)),
            (1, 2),
            (5, httpfs.PIECE_BYTES * 2 + 7),
            (len(big) - 3, len(big)),
        ]:
            assert fs.cat_file("node-a/job/s0/big.bin", start, end) == big[start:end]
        with fs.open("node-a/job/s0/big.bin", "rb") as f:
            f.seek(httpfs.PIECE_BYTES - 10)
            assert f.read(100) == big[httpfs.PIECE_BYTES - 10 : httpfs.PIECE_BYTES + 90]
        # A range past the end of the file comes back short, not padded.
        assert fs.cat_file("node-a/job/s0/big.bin", len(big) - 5, len(big) + 100) == big[-5:]
        # The same ranges read into one Arrow buffer, piece by piece in place.
        for start, end in [
            (0, len(big)),
            (1, 2),
            (5, httpfs.PIECE_BYTES * 2 + 7),
            (httpfs.PIECE_BYTES, 2 * httpfs.PIECE_BYTES),
            (len(big) - 5, len(big) + 100),
            (httpfs.PIECE_BYTES * 2 + 3, len(big) + 3 * httpfs.PIECE_BYTES),
        ]:
            got = fs.read_buffer("node-a/job/s0/big.bin", start, end)
            assert got.to_pybytes() == big[start:end], (start, end)
    finally:
        (tree / "job" / "s0" / "big.bin").unlink()


def map_output(root: Path, job: str = "job", index: int = 0) -> Path:
    path = Path(nodelocal.map_output_path(str(root), job, 0, index, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_node_local_map_output_is_read_by_its_absolute_path_on_its_node(
    server: Server, tree: Path
) -> None:
    """The record names the file on node-a; node-b's reducer asks node-a's server for it."""
    path = map_output(tree)
    path.write_bytes(b"0123456789" * 1000)
    try:
        env = {"MRK8S_SHUFFLE_SERVERS": f'{{"node-a": "{server.url}"}}'}
        token_file = tree.parent / "token-for-client"
        token_file.write_text(TOKEN)
        env["MRK8S_SHUFFLE_TOKEN_FILE"] = str(token_file)
        assert httpfs.install_from_env(env)
        store, name = nodelocal.segment_store(None, "node-a", str(path), here="node-b")  # type: ignore[arg-type]
        assert name == str(path)
        assert store.read_range(name, 10, 25) == (b"0123456789" * 1000)[10:35]
        assert store.view_range(name, 0, 10).to_pybytes() == b"0123456789"
        # This node's own map outputs are read from disk, not through a server.
        local, _ = nodelocal.segment_store(None, "node-b", str(path), here="node-b")  # type: ignore[arg-type]
        assert local.is_local
    finally:
        nodelocal.set_remote_opener(None)
        path.unlink()


def test_a_wrong_token_is_a_clear_store_error(server: Server, tree: Path) -> None:
    path = map_output(tree, index=1)
    path.write_bytes(b"x" * 100)
    try:
        with httpfs.installed({"node-a": server.url}, token="wrong"):
            store, name = nodelocal.segment_store(None, "node-a", str(path), here="node-b")  # type: ignore[arg-type]
            with pytest.raises(StoreError, match=r"refused to read .* \(401\).*token"):
                store.read_range(name, 0, 10)
    finally:
        path.unlink()


def test_a_server_that_is_gone_makes_the_map_output_lost(
    tree: Path, tmp_path: Path, fast_retries: None
) -> None:
    path = map_output(tree, index=2)
    path.write_bytes(b"y" * 100)
    gone = start_server(tree, tmp_path / "log")
    assert gone.stop() == 0
    try:
        with httpfs.installed({"node-a": gone.url, "node-c": gone.url}):
            for node in ("node-a", "node-x"):  # a server that stopped; a node with none
                store, name = nodelocal.segment_store(None, node, str(path), here="node-b")  # type: ignore[arg-type]
                with pytest.raises(
                    CorruptSegmentError, match=f"map output .* on node {node}"
                ) as exc:
                    store.read_range(name, 0, 10)
                assert exc.value.data_path.endswith("map-00002-a1.arrow")
    finally:
        path.unlink()


def test_a_file_gone_from_its_node_makes_the_map_output_lost(server: Server, tree: Path) -> None:
    path = map_output(tree, index=3)  # never written
    with httpfs.installed({"node-a": server.url}, token=TOKEN):
        store, name = nodelocal.segment_store(None, "node-a", str(path), here="node-b")  # type: ignore[arg-type]
        with pytest.raises(CorruptSegmentError, match="the file is gone from the node"):
            store.read_range(name, 0, 10)


def test_a_restarted_server_is_retried(tree: Path, tmp_path: Path) -> None:
    """A connection refused for a moment (the server pod restarting) is retried, not lost."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fs = httpfs.ShuffleServerFileSystem(
        {"node-a": f"http://127.0.0.1:{port}/"}, skip_instance_cache=True
    )
    later: list[Server] = []

    def start_late() -> None:
        time.sleep(0.5)
        command = [sys.executable, "-m", "mrk8s.cli", "shuffle-server", "--root", str(tree)]
        with (tmp_path / "log").open("w") as out:
            proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)],
                stdout=out,
                stderr=out,
                text=True,
                env={**os.environ, "MRK8S_SHUFFLE_TOKEN": "", "MRK8S_SHUFFLE_TOKEN_FILE": ""},
            )
        later.append(Server(proc, "", "127.0.0.1", port, tree, tmp_path / "log"))  # type: ignore[arg-type]

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        assert fs.cat_file("node-a/job/s0/data.bin", 100, 200) == data_of(tree)[100:200]
    finally:
        starter.join()
        for s in later:
            assert s.stop() == 0


def test_a_kept_connection_the_server_closed_is_replaced_at_once(
    tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server closes idle connections (and a restarted one has none of the old ones):
    the pooled connection fails on its next request, which goes again on a new one
    without a retry's backoff."""
    env = {"MRK8S_SHUFFLE_TOKEN": "", "MRK8S_SHUFFLE_TOKEN_FILE": ""}
    first = start_server(tree, tmp_path / "first.log", env=env)
    fs = httpfs.ShuffleServerFileSystem({"node-a": first.url}, skip_instance_cache=True)
    try:
        assert fs.cat_file("node-a/job/s0/data.bin", 0, 10) == data_of(tree)[:10]
        assert first.stop() == 0
        second = start_server(tree, tmp_path / "second.log", env=env, port=first.port)
        try:
            with caplog.at_level("DEBUG", logger="shuffle.httpfs"):
                assert fs.cat_file("node-a/job/s0/data.bin", 10, 20) == data_of(tree)[10:20]
        finally:
            assert second.stop() == 0
    finally:
        fs.close()
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_bad_server_settings_in_the_environment_are_clear(tmp_path: Path) -> None:
    with pytest.raises(httpfs.ServerConfigError, match="not a JSON object"):
        httpfs.install_from_env({"MRK8S_SHUFFLE_SERVERS": "node-a=http://x"})
    with pytest.raises(httpfs.ServerConfigError, match="not an http"):
        httpfs.install_from_env({"MRK8S_SHUFFLE_SERVERS": '{"node-a": "ftp://x/"}'})
    with pytest.raises(httpfs.ServerConfigError, match="cannot read the shuffle servers' token"):
        httpfs.install_from_env(
            {
                "MRK8S_SHUFFLE_SERVERS": '{"node-a": "http://127.0.0.1:1/"}',
                "MRK8S_SHUFFLE_TOKEN_FILE": str(tmp_path / "none"),
            }
        )
    assert not httpfs.install_from_env({})


def test_a_store_path_below_a_node_dir() -> None:
    path = nodelocal.map_output_path("/var/lib/mrk8s/shuffle", "j-1", 2, 17, 3)
    assert nodelocal.path_in_node_dir(path) == "j-1/s2/map-00017-a3.arrow"
    with pytest.raises(ValueError, match="not the path of a node-local map output"):
        nodelocal.path_in_node_dir("/etc/passwd")
    assert isinstance(httpfs.NodeStore("mrk8s-http://n", {"servers": {}}), FsspecStore)


# -- a real job's reduce across two "nodes" ------------------------------------------


@dataclass
class NodeLocalJob:
    """A word count planned in a job directory every "node" reaches (a local directory,
    or a bucket on the loopback S3 server), its map outputs on node-a's disk."""

    job_url: str
    storage_options: dict[str, Any]
    disk_a: Path
    disk_b: Path
    expected: Counter[str]
    maps: int
    reducers: int
    #: Environment of every task: on S3 map outputs stay on the node only if asked.
    env: dict[str, str]

    @property
    def store(self) -> FsspecStore:
        return FsspecStore(self.job_url, self.storage_options)

    def worker(self, stage: str, index: int, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "mrk8s.cli", "worker", "--job", self.job_url]
        proc = subprocess.run(
            [*command, "--step", "0", "--stage", stage, "--index", str(index)],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, **self.env, **env},
            cwd="/",
        )
        assert proc.returncode == 0, proc.stderr

    def on_node(self, node: str, disk: Path, **env: str) -> dict[str, str]:
        return {"MRK8S_NODE": node, nodelocal.NODE_DIR_ENV: str(disk), **env}

    def output(self) -> Counter[str]:
        plan = JobPlan.loads(self.store.read_bytes("plan.json").decode())
        staging = FsspecStore(plan.staging_url, self.storage_options)
        counts: Counter[str] = Counter()
        for index in range(self.reducers):
            text = staging.read_bytes(f"part-{index:05d}").decode()
            for key, value in parse_text_output(text):
                assert key not in counts
                counts[key] = value  # type: ignore[index,assignment]
        return counts


def plan_node_local_job(
    tmp_path: Path,
    top: str,
    storage_options: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> NodeLocalJob:
    """A word count run once under ``top`` (for its plan), then its tasks forgotten and
    the map tasks run again as ``mrk8s worker`` processes on "node-a"."""
    options = storage_options or {}
    script = tmp_path / "wordcount.py"
    script.write_text(WORDCOUNT)
    text = make_words(30_000, vocab=2000, seed=11)
    source = tmp_path / "in.txt"
    source.write_text(text)
    mrk8s.run(
        str(script),
        [str(source)],
        output=f"{top}/out",
        shuffle_dir=f"{top}/shuffle",
        job_id="wc",
        keep_shuffle=True,
        workers=1,
        reducers=2,
        max_split_bytes=len(text) // 2 + 1,
        storage_options=options,
    )
    job = NodeLocalJob(
        f"{top}/shuffle/wc",
        options,
        tmp_path / "disk-a",
        tmp_path / "disk-b",
        Counter(text.split()),
        0,
        2,
        {"MRK8S_STORAGE_OPTIONS": json.dumps(options), **(env or {})},
    )
    store = job.store
    plan = JobPlan.loads(store.read_bytes("plan.json").decode())
    job.maps = len(plan.steps[0].splits)
    assert job.maps == 2
    # Forget every task (and the shared map outputs): what follows runs them again.
    store.remove(commit.COMMITS_DIR, recursive=True)
    store.remove("s0", recursive=True)
    for index in range(job.maps):
        job.worker("map", index, job.on_node("node-a", job.disk_a))
    for record in commit.read_stage(store, 0, "map", job.maps):
        assert record.node == "node-a"
        assert record.data_path.startswith(str(job.disk_a) + "/")
    assert not store.exists("s0")  # nothing went to the job directory
    return job


@pytest.fixture
def node_local_job(tmp_path: Path) -> NodeLocalJob:
    return plan_node_local_job(tmp_path, str(tmp_path))


def reduce_through_server(job: NodeLocalJob, tmp_path: Path) -> Server:
    """Both reducers on node-b, reading node-a's map outputs through its server."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    node_a = start_server(job.disk_a, tmp_path / "server.log", "--token-file", str(token_file))
    try:
        servers = json.dumps({"node-a": node_a.url})
        env = job.on_node(
            "node-b",
            job.disk_b,
            MRK8S_SHUFFLE_SERVERS=servers,
            MRK8S_SHUFFLE_TOKEN_FILE=str(token_file),
        )
        for index in range(job.reducers):
            job.worker("reduce", index, env)
    finally:
        assert node_a.stop() == 0
    return node_a


def test_a_reducer_on_another_node_reads_map_outputs_through_the_server(
    node_local_job: NodeLocalJob, tmp_path: Path
) -> None:
    job = node_local_job
    node_a = reduce_through_server(job, tmp_path)
    assert job.output() == job.expected
    # Every map output was read over HTTP by both reducers, and none was recomputed.
    served = [line for line in node_a.log.read_text().splitlines() if '"GET /wc/s0/map-' in line]
    assert len(served) >= job.maps * job.reducers
    assert all('" 206 ' in line for line in served)
    assert not job.disk_b.exists()


def test_a_reducer_recomputes_the_map_outputs_of_a_node_whose_server_is_gone(
    node_local_job: NodeLocalJob, tmp_path: Path
) -> None:
    job = node_local_job
    gone = start_server(job.disk_a, tmp_path / "server.log")
    assert gone.stop() == 0
    env = job.on_node("node-b", job.disk_b, MRK8S_SHUFFLE_SERVERS=json.dumps({"node-a": gone.url}))
    for index in range(job.reducers):
        job.worker("reduce", index, env)
    assert job.output() == job.expected
    records = commit.read_stage(job.store, 0, "map", job.maps)
    assert {r.node for r in records} == {"node-b"}  # recomputed where the reducer ran
    assert all(r.attempt == 2 for r in records)


def test_map_outputs_stay_on_the_node_with_the_job_directory_on_s3(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """Kubernetes' node-local mode: plan, commit records and output in the bucket every
    pod reaches, map outputs on each node's disk (asked for with $MRK8S_NODE_LOCAL_SHUFFLE),
    read across nodes through the shuffle server."""
    options = {"client_kwargs": {"endpoint_url": s3_bucket.endpoint}}
    job = plan_node_local_job(tmp_path, s3_bucket.url, options, {nodelocal.NODE_LOCAL_ENV: "1"})
    node_a = reduce_through_server(job, tmp_path)
    assert job.output() == job.expected
    served = [line for line in node_a.log.read_text().splitlines() if '"GET /wc/s0/map-' in line]
    assert len(served) >= job.maps * job.reducers


def test_map_outputs_of_a_remote_job_directory_stay_on_the_node_only_if_asked() -> None:
    """The Ray backend gives every worker a node directory: with --shuffle-dir s3://...
    its map outputs still go to the bucket, as before."""
    assert nodelocal.output_dir(False, {nodelocal.NODE_DIR_ENV: "/x"}) is None
    assert nodelocal.output_dir(True, {nodelocal.NODE_DIR_ENV: "/x"}) == "/x"
    assert (
        nodelocal.output_dir(False, {nodelocal.NODE_DIR_ENV: "/x", nodelocal.NODE_LOCAL_ENV: "1"})
        == "/x"
    )
    assert nodelocal.output_dir(True, {}) is None
