"""Reading another node's map outputs from its shuffle server, as an fsspec filesystem.

The client of :mod:`shuffle.server` (on Kubernetes, the ``mrk8s
shuffle-server`` DaemonSet; on Ray, the server each node's reader actor runs,
read through ``scheduler/backends/ray/nodefs.py``). ``mrk8s-http://NODE/PATH`` is
the file ``PATH`` under the root of ``NODE``'s server; the servers' base URLs
are given as ``{node name: URL}``. Every read is ranged: a range is cut into
pieces of at most :data:`PIECE_BYTES`, with up to :data:`PIECES_IN_FLIGHT`
requests outstanding, each on a kept-alive connection from a small pool per
server (:class:`ConnectionPool`). Connection failures and 5xx answers are
retried with exponential backoff; a server that stays unreachable, a node
with no server, or a file the server no longer has makes the read raise
:class:`shuffle.errors.CorruptSegmentError` naming the map output, so that
the reducer recomputes it (as for a damaged map output).

:meth:`ShuffleServerFileSystem.read_buffer` (what
:meth:`shuffle.store.FsspecStore.view_range` calls) reads each piece's body
straight into its place in one Arrow buffer (``readinto``): no bytes object
per piece, no join, and memory from Arrow's pool, which keeps its pages
between reads instead of faulting fresh ones in for every segment. On the
simulated three-node Ray cluster that halved the reducers' CPU time spent
receiving (measured with ``python -m bench.shuffle_server``, see README).

Installed in task processes by :func:`install_from_env` (``mrk8s worker``
calls it at start-up) from what the Kubernetes backend puts in task pods:
``$MRK8S_SHUFFLE_SERVERS`` (JSON ``{node: base URL}``) and
``$MRK8S_SHUFFLE_TOKEN_FILE`` (the mounted Secret). It hooks
:func:`shuffle.nodelocal.set_remote_opener`, so a reducer's ordinary read
path reads the segments of other nodes through here and its own node's
straight from disk.

Why ``http.client`` and not fsspec's HTTP filesystem: that one needs aiohttp
(not otherwise in the worker image) and reads through an event loop in a
thread of its own; with the piece window here the standard library's
client is as fast (``bench/shuffle_server.py`` runs both) and keeps the data
plane free of a dependency. urllib3 would give pooling and retries, but it
is not a dependency of the core either, and both fit in 60 lines here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pyarrow as pa
from fsspec import AbstractFileSystem, register_implementation
from fsspec.spec import AbstractBufferedFile

from shuffle import nodelocal
from shuffle.errors import CorruptSegmentError, StoreError, UserError
from shuffle.store import FsspecStore

logger = logging.getLogger(__name__)

PROTOCOL = "mrk8s-http"

#: Set by the Kubernetes backend in task pods: JSON ``{node name: shuffle server URL}``.
SERVERS_ENV = "MRK8S_SHUFFLE_SERVERS"
#: Set with it: the file holding the servers' bearer token (a mounted Secret).
TOKEN_FILE_ENV = "MRK8S_SHUFFLE_TOKEN_FILE"

#: Largest piece of a range one request asks for: large enough that a
#: request's round trip (about 0.2 ms on loopback) vanishes, small enough that
#: a few in flight keep both ends busy without holding much memory.
PIECE_BYTES = 4 << 20

#: Requests one read keeps outstanding (as nodefs.py does with its reader calls).
PIECES_IN_FLIGHT = 4

#: Idle keep-alive connections kept per server (a reducer reads up to
#: mapfile.MAX_IN_FLIGHT segments at once, each with PIECES_IN_FLIGHT pieces).
MAX_IDLE_CONNECTIONS = 32

#: Attempts of one request when the connection fails or the server answers
#: 5xx, with a backoff doubling from BACKOFF_SECONDS: about 3 s in all, long
#: enough for a restarted server pod, short enough that a lost node is
#: noticed quickly.
ATTEMPTS = 5
BACKOFF_SECONDS = 0.2

#: Seconds to connect, and between bytes of an answer.
TIMEOUT_SECONDS = 30.0


class ServerConfigError(UserError):
    """``$MRK8S_SHUFFLE_SERVERS`` or the token file is not usable."""


class _Unreachable(Exception):
    """A request that failed every attempt (the server or its node is gone)."""


#: How a kept-alive connection that the server closed fails on its next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ConnectionPool:
    """Kept-alive connections to one server, handed out one per request."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServerConfigError(
                f"shuffle server URL {base_url!r} is not an http(s)://HOST:PORT/ URL"
            )
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was kept from an earlier request."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout), False

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        into: memoryview | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes | memoryview]:
        """One request and its whole answer; a connection that failed is not reused.

        With ``into``, a successful (2xx) answer's body is read straight into
        it and the body returned is the part of ``into`` filled; a body longer
        than ``into`` is an error (:class:`http.client.HTTPException`).
        A kept connection the server has closed meanwhile (it closes idle ones)
        fails before any answer: the request goes again at once on a new one.
        """
        while True:
            conn, reused = self._connection()
            try:
                conn.request(method, self.prefix + path, headers=dict(headers))
                response = conn.getresponse()
                body: bytes | memoryview
                if into is not None and 200 <= response.status < 300:
                    body = _read_into(response, into)
                else:
                    body = response.read()
                break
            except _STALE:
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise
        keep = not response.will_close
        if keep:
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
        if not keep:
            conn.close()
        return response.status, response.headers, body

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _read_into(response: http.client.HTTPResponse, into: memoryview) -> memoryview:
    """The whole body of ``response`` read into the start of ``into``; the part filled."""
    length = response.length
    if length is None or length > len(into):
        response.close()
        raise http.client.HTTPException(
            f"an answer of {length} bytes to a range of {len(into)} bytes"
        )
    filled = 0
    while filled < length:
        n = response.readinto(into[filled:length])
        if not n:
            raise http.client.IncompleteRead(bytes(into[:filled]), length - filled)
        filled += n
    return into[:filled]


#: What a failed attempt raises: the connection broke, was refused or timed out.
_RETRIED = (OSError, http.client.HTTPException)


class ShuffleServerFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only files of nodes' shuffle servers, addressed as ``NODE/path under root``.

    Parameters: ``servers`` maps node names to base URLs; ``token`` is the
    bearer token the servers require (None: send none).
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, servers: Mapping[str, str], token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.servers = dict(servers)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(
            max_workers=PIECES_IN_FLIGHT * 4, thread_name_prefix="mrk8s-http"
        )
        #: Bytes read through this filesystem (what a reducer fetched from other nodes).
        self.bytes_read = 0
        # A filesystem dropped without close() still closes its sockets and threads.
        self._finalizer = weakref.finalize(self, _close, self._pools, self._threads)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith(PROTOCOL + "://"):
            path = path[len(PROTOCOL) + 3 :]
        return path.rstrip("/")

    def _split(self, path: str) -> tuple[str, str]:
        node, _, rest = self._strip_protocol(path).partition("/")
        return node, "/" + urllib.parse.quote(rest)

    def _pool(self, node: str, path: str) -> ConnectionPool:
        with self._lock:
            pool = self._pools.get(node)
            if pool is None:
                url = self.servers.get(node)
                if url is None:
                    raise _lost(node, path, "no shuffle server is known for the node (is it gone?)")
                pool = self._pools[node] = ConnectionPool(url)
            return pool

    def _get(
        self,
        node: str,
        path: str,
        method: str,
        headers: Mapping[str, str],
        into: memoryview | None = None,
    ) -> Any:
        """Status, headers and body of one request, retried; errors become mrk8s errors."""
        pool = self._pool(node, path)
        delay = BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                status, answer, body = pool.request(
                    method, path, {**self._headers, **headers}, into
                )
                if status < 500:
                    break
                why = f"the server answered {status}"
            except _RETRIED as exc:
                why = f"{type(exc).__name__}: {exc}"
            if attempt == ATTEMPTS:
                raise _lost(node, path, f"its shuffle server is unreachable ({why})")
            logger.debug("%s %s on %s: %s; retrying in %.1f s", method, path, node, why, delay)
            time.sleep(delay)
            delay *= 2
        if status in (401, 403):
            raise StoreError(
                f"the shuffle server of node {node} refused to read {path} ({status}): "
                f"{bytes(body).decode(errors='replace').strip()}; give the task pods the servers' "
                f"token (${TOKEN_FILE_ENV}, the mrk8s-shuffle-token Secret)"
            )
        if status == 404:
            raise _lost(node, path, "the file is gone from the node")
        if status not in (200, 206, 416):
            raise StoreError(
                f"the shuffle server of node {node} answered {status} to {method} {path}: "
                f"{bytes(body).decode(errors='replace').strip()}"
            )
        return status, answer, body

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        node, remote = self._split(path)
        _, answer, _ = self._get(node, remote, "HEAD", {})
        return {
            "name": self._strip_protocol(path),
            "size": int(answer["Content-Length"]),
            "type": "file",
        }

    def _piece(self, node: str, remote: str, start: int, end: int) -> bytes:
        status, _, body = self._get(node, remote, "GET", {"Range": f"bytes={start}-{end - 1}"})
        # 416: the range starts past the end of the file; the caller sees a short read.
        return b"" if status == 416 else bytes(body)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        node, remote = self._split(path)
        begin = start or 0
        stop = end if end is not None else int(self.info(path)["size"])
        if stop - begin <= PIECE_BYTES:
            data = self._piece(node, remote, begin, stop) if stop > begin else b""
        else:
            data = b"".join(self._pieces(node, remote, begin, stop))
        self.bytes_read += len(data)
        return data

    def read_buffer(self, path: str, start: int, end: int) -> pa.Buffer:
        """Bytes ``[start, end)`` of ``path`` in one Arrow buffer (shorter at the end of
        the file), each piece read straight into its place (see the module docstring)."""
        node, remote = self._split(path)
        if end <= start:
            return pa.py_buffer(b"")
        buffer = pa.allocate_buffer(end - start, resizable=True)
        view = memoryview(buffer).cast("B")
        offsets = range(start, end, PIECE_BYTES)
        if len(offsets) == 1:
            filled = self._piece_into(node, remote, start, view)
        else:
            futures = [
                self._threads.submit(
                    self._piece_into,
                    node,
                    remote,
                    offset,
                    view[offset - start : min(end, offset + PIECE_BYTES) - start],
                )
                for offset in offsets
            ]
            try:
                filled = 0
                for future in futures:
                    n = future.result()
                    filled += n
                    if n < PIECE_BYTES:
                        break  # the file ended early: the caller sees a short read
            finally:
                for future in futures:
                    future.cancel()
                wait(futures)  # no thread may write into the buffer once it is handed out
        view.release()
        if filled < end - start:
            buffer.resize(filled)
        self.bytes_read += filled
        return buffer

    def _piece_into(self, node: str, remote: str, start: int, into: memoryview) -> int:
        """Bytes read into ``into`` from ``start`` (fewer only at the end of the file)."""
        status, _, body = self._get(
            node, remote, "GET", {"Range": f"bytes={start}-{start + len(into) - 1}"}, into
        )
        return 0 if status == 416 else len(body)

    def _pieces(self, node: str, remote: str, begin: int, stop: int) -> Iterator[bytes]:
        pending: deque[Future[bytes]] = deque()
        offset = begin
        try:
            while offset < stop or pending:
                while offset < stop and len(pending) < PIECES_IN_FLIGHT:
                    n = min(PIECE_BYTES, stop - offset)
                    pending.append(
                        self._threads.submit(self._piece, node, remote, offset, offset + n)
                    )
                    offset += n
                piece = pending.popleft().result()
                yield piece
                if len(piece) < PIECE_BYTES and (pending or offset < stop):
                    return  # the file ended early: the caller sees a short read
        finally:
            for future in pending:  # an error part-way: do not leave pieces behind
                future.cancel()

    def _open(
        self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any
    ) -> Any:
        if mode != "rb":
            raise PermissionError(f"{PROTOCOL}:// is read-only (asked to open {path} as {mode})")
        return _ServerFile(self, path, mode, block_size=block_size or PIECE_BYTES)

    def close(self) -> None:
        """Close the idle connections and the piece threads."""
        self._finalizer()


def _close(pools: dict[str, ConnectionPool], threads: ThreadPoolExecutor) -> None:
    for pool in pools.values():
        pool.close()
    threads.shutdown(wait=False, cancel_futures=True)


class _ServerFile(AbstractBufferedFile):  # type: ignore[misc]
    """A remote file opened for streaming: each cache miss is one ranged read."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self.fs.cat_file(self.path, start, end)
        return data


def _lost(node: str, path: str, why: str) -> CorruptSegmentError:
    error = CorruptSegmentError(
        f"map output {path} on node {node} cannot be read: {why}; its map task must run again"
    )
    error.data_path = path
    return error


class NodeStore(FsspecStore):
    """One node's map outputs through its server, named by their absolute paths on the node.

    A commit record names a node-local map output by its absolute path on
    its node (:func:`shuffle.nodelocal.map_output_path`); the server serves
    the node's shuffle directory, so the request asks for the part of the
    path below it. Messages and errors keep the record's path (``url``).
    """

    def _path(self, path: str) -> str:
        return super()._path(nodelocal.path_in_node_dir(path) if path.startswith("/") else path)


def parse_servers(raw: str) -> dict[str, str]:
    """``$MRK8S_SHUFFLE_SERVERS`` as ``{node: URL}``, or :class:`ServerConfigError`."""
    try:
        servers = json.loads(raw)
    except ValueError as exc:
        servers = exc
    if not isinstance(servers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in servers.items()
    ):
        raise ServerConfigError(
            f"${SERVERS_ENV} is not a JSON object of node names to shuffle server URLs: "
            f'{raw[:200]!r}; write e.g. \'{{"node-a": "http://10.0.0.5:7070/"}}\''
        )
    for url in servers.values():
        ConnectionPool(url)  # checks the URL
    return servers


def read_token_file(path: str) -> str:
    """The bearer token in ``path`` (a mounted Secret's key), or :class:`ServerConfigError`."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ServerConfigError(
            f"cannot read the shuffle servers' token file {path} ({exc.strerror or exc}): "
            f"mount the mrk8s-shuffle-token Secret there, or fix ${TOKEN_FILE_ENV}"
        ) from exc
    if not token:
        raise ServerConfigError(f"the shuffle servers' token file {path} is empty")
    return token


def opener(servers: Mapping[str, str], token: str | None) -> Callable[[str], FsspecStore]:
    """A :data:`shuffle.nodelocal.RemoteOpener` reading through the nodes' servers."""
    register_implementation(PROTOCOL, ShuffleServerFileSystem, clobber=True)
    options = {"servers": dict(servers), "token": token}

    def open_node(node: str) -> FsspecStore:
        return NodeStore(f"{PROTOCOL}://{node}", options)

    return open_node


def install_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Read other nodes' map outputs through their servers, if the environment names them.

    Returns whether ``$MRK8S_SHUFFLE_SERVERS`` was set (and the opener installed).
    """
    raw = environ.get(SERVERS_ENV)
    if not raw:
        return False
    servers = parse_servers(raw)
    token_file = environ.get(TOKEN_FILE_ENV)
    token = read_token_file(token_file) if token_file else None
    nodelocal.set_remote_opener(opener(servers, token))
    return True


@contextlib.contextmanager
def installed(servers: Mapping[str, str], token: str | None = None) -> Iterator[None]:
    """Within the block, this process reads other nodes' map outputs through ``servers``."""
    nodelocal.set_remote_opener(opener(servers, token))
    try:
        yield
    finally:
        nodelocal.set_remote_opener(None)
