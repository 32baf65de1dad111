"""The shuffle server: one node's map outputs, read-only, over HTTP ranged reads.

Started by ``mrk8s shuffle-server --root DIR --port P`` (a DaemonSet on
Kubernetes, see ``manifests/``), it lets reducers on other nodes read the
map outputs that tasks on this node wrote to ``DIR`` (the node's hostPath
shuffle directory). The client is :mod:`shuffle.httpfs`.

What it serves: ``GET /<path under root>`` (and ``HEAD``), the whole file
(200) or one byte range (``Range: bytes=a-b``, ``a-`` or ``-n``; 206 with
``Content-Range``). Bodies go out with ``os.sendfile`` (the kernel copies
from the page cache to the socket; no Python buffer), the headers held back
to leave in the body's first packet. Connections are kept alive (HTTP/1.1),
each served by its own thread. A path is opened one segment at a time from
the root without following symlinks; only a path with a symlink in it is
resolved whole and checked.

What it refuses, before touching the disk:

- a missing or wrong bearer token, when one is configured: 401 with
  ``WWW-Authenticate`` (compared with :func:`hmac.compare_digest`, in
  constant time);
- any method but GET and HEAD: 405 with ``Allow: GET, HEAD``;
- a path that is not a plain relative path once percent-decoded: ``..`` or
  ``.`` segments, empty segments, backslashes, NUL or other control
  characters, a ``%`` left after decoding (double encoding), a query: 400;
- a path that resolves (symlinks followed) outside the root: 403;
- a directory or a file that is not there: 404;
- a malformed ``Range`` (not ``bytes=``, several ranges, last before first):
  400; an unsatisfiable one (starts at or past the end, ``-0``): 416 with
  ``Content-Range: bytes */SIZE``.

Why the standard library's :class:`http.server.ThreadingHTTPServer` and not a
web framework: the server runs in the worker image, whose only job is tasks;
its protocol is two methods and one header, and a thread per connection is
what ``sendfile`` wants (the kernel does the copying, the GIL is released).
An ASGI stack (uvicorn) would add a dependency to every node and serve
files through Python buffers.

SIGTERM stops it gracefully (:func:`serve`): it stops accepting, lets the
responses being sent finish, and closes idle keep-alive connections.
Each request is logged at debug level. This module imports nothing of the
project but :mod:`shuffle.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import os
import re
import select
import signal
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shuffle.errors import UserError

logger = logging.getLogger(__name__)

#: The methods served; every other one gets 405 with this list.
ALLOWED = "GET, HEAD"

#: A connection that sends nothing for this long is closed (a reducer reuses
#: its connections within milliseconds; an idle one only holds a thread).
IDLE_SECONDS = 60.0

#: Pending connections the kernel queues before accept: a reduce stage opens
#: one per reader thread of every reducer at once (the default of 5 made
#: clients past the fifth wait a second for a SYN retry).
LISTEN_BACKLOG = 256

#: Marks data the kernel may hold for the next write on the socket (Linux; 0 elsewhere).
_MSG_MORE = getattr(socket, "MSG_MORE", 0)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ServerConfigError(UserError):
    """The shuffle server cannot start as asked (no such root, bad token file, port taken)."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What ``mrk8s shuffle-server`` serves and how."""

    #: The directory served (a node's shuffle directory).
    root: str
    #: Address to listen on (all interfaces by default, as a DaemonSet pod wants).
    host: str = "0.0.0.0"
    #: TCP port; 0 picks a free one (tests).
    port: int = 7070
    #: Bearer token every request must carry; None serves without authentication.
    token: str | None = None


class RequestRefused(Exception):
    """A request the server answers with an error status (never a bug)."""

    def __init__(self, status: HTTPStatus, why: str, headers: dict[str, str] | None = None):
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or {}


def path_under_root(raw: str) -> str:
    """The relative file path a request line names, or :class:`RequestRefused` (400).

    ``raw`` is the request target as sent. It is decoded once; anything that
    still looks encoded, or that is not a plain path of named segments, is
    refused rather than normalised, so that no spelling of ``..`` gets by.
    """
    if "?" in raw or "#" in raw:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "a query or fragment in the path")
    if not raw.startswith("/"):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "the path must start with /")
    try:
        decoded = urllib.parse.unquote(raw[1:], errors="strict")
    except UnicodeDecodeError as exc:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "a path that is not UTF-8") from exc
    if "%" in decoded:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "a path encoded twice")
    if "\\" in decoded or _CONTROL.search(decoded):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "a backslash or control character")
    segments = decoded.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "an empty, . or .. path segment")
    return decoded


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, end)`` (end exclusive) a ``Range`` header asks of a ``size``-byte file.

    None means the whole file (no header). Malformed: 400; unsatisfiable: 416.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        raise RequestRefused(
            HTTPStatus.BAD_REQUEST,
            f"Range {header!r}: only one range, bytes=A-B, bytes=A- or bytes=-N, is served",
        )
    first, last = match.groups()
    unsatisfiable = RequestRefused(
        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
        f"Range {header!r} is outside the file's {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )
    if not first:
        if not last:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"Range {header!r} names no bytes")
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, f"Range {header!r} ends before it starts")
    if start >= size:
        raise unsatisfiable
    return start, min(end, size)


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests answered in turn until the client or the server closes it."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IDLE_SECONDS
    # The headers and a small body are two writes: with Nagle's algorithm the
    # body waited for the client's delayed ACK, 40 ms a request (measured: 45 ms
    # for a 1-byte range, 2.2 ms for 256 KiB, one connection; see README).
    disable_nagle_algorithm = True
    server_version = "mrk8s-shuffle-server"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up do_<METHOD>: every method but GET and
        # HEAD is answered here, with 405 (not the default 501).
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        # A body we do not read would be taken for the next request: close after.
        self.close_connection = True
        self._refuse(
            RequestRefused(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} is not served: the shuffle server is read-only",
                {"Allow": ALLOWED},
            )
        )

    def _serve(self, *, body: bool) -> None:
        try:
            self._check_token()
            relative = path_under_root(self.path)
            with self.server.open(relative) as f:
                size = os.fstat(f.fileno()).st_size
                wanted = parse_range(self.headers.get("Range"), size)
                start, end = wanted if wanted is not None else (0, size)
                self.send_response(HTTPStatus.OK if wanted is None else HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if wanted is not None:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                if body and end > start:
                    self._send_headers_then(f.fileno(), start, end - start)
                else:
                    self.end_headers()
        except RequestRefused as refused:
            self._refuse(refused)

    def _send_headers_then(self, fd: int, offset: int, count: int) -> None:
        """The headers, then ``count`` bytes of ``fd`` from ``offset``, in as few packets as fit.

        The headers go with ``MSG_MORE`` (Linux), so the kernel holds them until
        the body's first bytes join them: one packet and one wake-up of the
        client instead of two (sent alone, they cost the server a fifth of its
        time per request, measured with py-spy on 1-byte ranges). The body goes
        with ``os.sendfile`` straight from the page cache, as many bytes a call as
        the socket takes; when it takes none, this waits until it can, for at most
        the connection's timeout (``socket.sendfile`` did the same through a
        selector built anew for every response).
        """
        sock = self.connection
        if self.request_version != "HTTP/0.9":  # (HTTP/0.9 answers have no headers)
            # (send_header's buffer; read through vars(): __getattr__ below confuses mypy)
            head: list[bytes] = vars(self)["_headers_buffer"]
            sock.sendall(b"".join([*head, b"\r\n"]), _MSG_MORE)
            head.clear()
        out = sock.fileno()
        writable: select.poll | None = None
        timeout = sock.gettimeout()
        while count > 0:
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                if writable is None:
                    writable = select.poll()
                    writable.register(out, select.POLLOUT)
                if not writable.poll(None if timeout is None else timeout * 1000):
                    why = "the client took nothing for the connection's timeout"
                    raise TimeoutError(why) from None
                continue
            if sent == 0:
                # The file is shorter than when it was measured: the client sees a
                # short body and the closed connection.
                self.close_connection = True
                return
            offset += sent
            count -= sent

    def _check_token(self) -> None:
        token = self.server.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        # compare_digest on bytes: constant time whatever the contents.
        ok = hmac.compare_digest(value.strip().encode(), token.encode())
        if scheme.lower() != "bearer" or not ok:
            raise RequestRefused(
                HTTPStatus.UNAUTHORIZED,
                "a bearer token is required" if not given else "wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="mrk8s-shuffle"'},
            )

    def _refuse(self, refused: RequestRefused) -> None:
        text = f"{refused.status.value} {refused.status.phrase}: {refused.why}\n".encode()
        self.send_response(refused.status)
        for name, value in refused.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)
        logger.debug("refused %s %r: %s", self.command, self.path, refused.why)

    def log_message(self, format: str, *args: Any) -> None:
        # Called for every request: format nothing unless it is logged.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """The listening socket, the root, the token and the open connections."""

    request_queue_size = LISTEN_BACKLOG
    # Threads are joined on close (graceful stop), and must not keep a stopped
    # server alive when a client holds a connection open: their sockets time out.
    daemon_threads = False
    block_on_close = True

    def __init__(self, settings: ServerSettings) -> None:
        self.root = os.path.realpath(settings.root)
        self.token = settings.token
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.stopping = False
        super().__init__((settings.host, settings.port), _Handler)

    def open(self, relative: str) -> Any:
        """Open a regular file under the root, symlinks resolved and checked."""
        fd = _open_beneath(self.root, relative)
        if fd is None:
            fd = self._open_resolved(relative)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RequestRefused(HTTPStatus.NOT_FOUND, "not a regular file")
        return os.fdopen(fd, "rb")

    def _open_resolved(self, relative: str) -> int:
        """A path with a symlink in it: resolved, then refused unless it stays under the root."""
        full = os.path.realpath(os.path.join(self.root, relative))
        if os.path.commonpath([self.root, full]) != self.root:
            raise RequestRefused(HTTPStatus.FORBIDDEN, "the path leads outside the served root")
        try:
            # O_NOFOLLOW: the resolved path's last part cannot be swapped for a link.
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise RequestRefused(HTTPStatus.NOT_FOUND, "no such file") from exc
        except PermissionError as exc:
            raise RequestRefused(HTTPStatus.FORBIDDEN, "the file is not readable") from exc
        return fd

    @property
    def url(self) -> str:
        """The base URL the server listens on (its real port, if it was given 0)."""
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (a reducer that failed) is routine;
        # anything else is a bug of ours, logged with its traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("connection from %s ended early", client_address, exc_info=True)
        else:
            logger.exception("error serving %s", client_address)

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            if self.stopping:
                _stop_reading(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def stop(self) -> None:
        """Stop accepting; let responses in progress finish; close idle connections.

        Shutting down a connection's reading side wakes a thread waiting for
        the next request (it sees the end of the stream and closes) and leaves
        a response being written untouched. Call from any thread but the one
        in :meth:`serve_forever`.
        """
        self.shutdown()
        with self._lock:
            self.stopping = True
            for conn in self._connections:
                _stop_reading(conn)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_beneath(root: str, relative: str) -> int | None:
    """A descriptor of ``root/relative`` opened one segment at a time from the root,
    following no symlink; None when a segment is a symlink (the caller resolves it).

    Every request used to resolve its whole absolute path (``os.path.realpath``:
    an ``lstat`` and string work per segment of the root too), a third of the
    server's own time per request. Here each segment of the part below the root
    is one ``openat`` with ``O_NOFOLLOW``, so no segment can lead elsewhere.
    Missing files and directories raise :class:`RequestRefused` as ``open`` does.
    """
    *dirs, name = relative.split("/")
    try:
        parent = os.open(root, _DIR_FLAGS)
        try:
            for segment in dirs:
                child = os.open(segment, _DIR_FLAGS, dir_fd=parent)
                os.close(parent)
                parent = child
            return os.open(name, _FILE_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        # ENOTDIR: a segment is a file, or a symlink (O_DIRECTORY | O_NOFOLLOW).
        if isinstance(exc, NotADirectoryError):
            return None
        raise RequestRefused(HTTPStatus.NOT_FOUND, "no such file") from exc
    except PermissionError as exc:
        raise RequestRefused(HTTPStatus.FORBIDDEN, "the file is not readable") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last segment is a symlink
            return None
        raise


def _stop_reading(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RD)


def make_server(settings: ServerSettings) -> _Server:
    """A bound server (not yet serving) for ``settings``, or :class:`ServerConfigError`."""
    if not os.path.isdir(settings.root):
        raise ServerConfigError(
            f"--root {settings.root}: no such directory; give the node's shuffle directory "
            "(the hostPath the task pods write map outputs to)"
        )
    if settings.token is not None and not settings.token:
        raise ServerConfigError(
            "the configured token is empty: put the token in the file (the Secret's key "
            "'token'), or configure none to serve without authentication"
        )
    try:
        return _Server(settings)
    except OSError as exc:
        raise ServerConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}): "
            "choose another --port or --host"
        ) from exc


def serve(settings: ServerSettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (the main thread only).

    ``on_ready`` gets the base URL once the socket listens (``--port 0`` picks one).
    """
    server = make_server(settings)
    url = server.url

    def stop(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping the shuffle server", signum)
        # shutdown() waits for serve_forever() to return: not from its own thread.
        threading.Thread(target=server.stop, name="shuffle-server-stop").start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            on_ready(url)
        server.serve_forever()
    finally:
        server.server_close()  # joins the connection threads
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("shuffle server on %s stopped", url)
