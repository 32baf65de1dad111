"""Direct ranged reads of a node's map outputs: a small HTTP server in its reader actor.

Why: a reader actor's reply travels through Ray's object store (put on the
reader's node, pulled to the reducer's node in chunks, copied out), which
moved about 300 MB/s on the simulated three-node cluster, against about
2 GB/s for the same bytes over a plain socket (``sendfile`` on one side,
``readinto`` on the other). So each :class:`~scheduler.backends.ray.actors.NodeReader`
also serves its node's directory over HTTP (``GET`` with a ``Range``
header, the protocol of every object store and of ``shuffle-server``), and a
reducer asks the actor only for the server's address, once per node; the
actor call path stays as the fallback when the address cannot be reached.

Only the node's shuffle directory is served, only to a caller that presents
the reader's token (a random secret handed out by the actor, so only a
member of the Ray cluster can learn it), and only ``GET`` of byte ranges.
This module knows paths and byte ranges, not what a map output is.
"""

from __future__ import annotations

import http.client
import os
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Seconds a reducer waits to connect to (or hear from) a node's server
#: before it falls back to the actor call path.
TIMEOUT = 30.0

Address = tuple[str, int, str]  # (host, port, token)


class RangeServer:
    """Serves byte ranges of files under ``root`` to callers with ``token``; see the module."""

    def __init__(self, root: str, host: str) -> None:
        self.root = os.path.realpath(root)
        self.token = secrets.token_hex(16)
        self._httpd = _Server((host, 0), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="mrk8s-range-server", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> Address:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port), self.token

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def resolve_under(root: str, path: str) -> str:
    """The real path of ``path``, refused unless it is under ``root`` (a real path)."""
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep):
        raise PermissionError(f"{path} is not under this node's shuffle directory {root}")
    return real


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: socketserver's default backlog is 5: with a few reducers each fetching
    #: several segments at once, further connections were dropped and retried
    #: by the client's kernel a second later (most of a reduce stage's time).
    request_queue_size = 256


def _handler(server: RangeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the actor's log

        def _refuse(self, code: int, why: str) -> None:
            body = why.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # the name http.server calls
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                return self._refuse(403, "wrong or missing token")
            path = urllib.parse.unquote(self.path)
            try:
                real = resolve_under(server.root, path)
                start, end = _parse_range(self.headers.get("Range", ""))
                with open(real, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    end = min(end, size)
                    length = max(0, end - start)
                    self.send_response(206)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    self.wfile.flush()
                    sent = 0
                    while sent < length:
                        n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent,
                                        length - sent)  # fmt: skip
                        if n == 0:
                            break  # the file shrank under us: the reader sees a short body
                        sent += n
            except FileNotFoundError:
                self._refuse(404, f"no such file: {path}")
            except PermissionError as exc:
                self._refuse(403, str(exc))
            except ValueError as exc:
                self._refuse(416, str(exc))

    return Handler


def _parse_range(header: str) -> tuple[int, int]:
    """``bytes=A-B`` (inclusive, as HTTP has it) as a half-open ``(A, B + 1)``."""
    unit, _, spec = header.partition("=")
    first, _, last = spec.partition("-")
    if unit.strip() != "bytes" or not first.isdigit() or not last.isdigit():
        raise ValueError(f"only a Range of the form bytes=A-B is served, not {header!r}")
    return int(first), int(last) + 1


def fetch(address: Address, path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of ``path`` from the server at ``address`` (fewer at the end).

    Raises FileNotFoundError or PermissionError as the server answers, and
    OSError (including ``http.client`` errors) when it cannot be reached or
    the answer breaks off.
    """
    if end <= start:
        return b""
    host, port, token = address
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request(
            "GET",
            urllib.parse.quote(path),
            headers={"Range": f"bytes={start}-{end - 1}", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        if response.status == 404:
            raise FileNotFoundError(path)
        if response.status != 206:
            why = response.read().decode(errors="replace")
            if response.status == 403:
                raise PermissionError(why)
            raise OSError(f"range server {host}:{port} answered {response.status}: {why}")
        length = int(response.getheader("Content-Length") or 0)
        # read() of the whole body: one buffer filled straight from the socket.
        data = response.read()
        if len(data) != length:
            raise OSError(
                f"range server {host}:{port} broke off {path} after {len(data)} of {length} bytes"
            )
        return data
    except http.client.HTTPException as exc:
        raise OSError(f"range server {host}:{port}: {exc!r}") from exc
    finally:
        conn.close()
