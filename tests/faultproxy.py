"""A fault-injecting HTTP proxy on loopback, for S3 failure tests.

Sits in front of the S3 protocol server and forwards every request to it,
except that every ``every``-th request gets a fault instead, cycling through
``kinds``: ``503`` (S3's SlowDown), ``500`` (InternalError) or ``drop`` (the
connection is closed without an answer). Deterministic, bounded (at most
``max_faults``), and it only ever talks to the loopback address it was given.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class FaultCounter:
    every: int
    kinds: Sequence[str]
    max_faults: int
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cycle: Iterator[str] | None = None

    def next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every or sum(self.faults.values()) >= self.max_faults:
                return None
            if self._cycle is None:
                self._cycle = itertools.cycle(self.kinds)
            kind = next(self._cycle)
            self.faults[kind] = self.faults.get(kind, 0) + 1
            return kind


def _handler(upstream: str, counter: FaultCounter) -> type[http.server.BaseHTTPRequestHandler]:
    target = urlsplit(upstream)
    assert target.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                body = self._raw_chunks()  # forwarded as sent (Arrow's S3 client sends these)
            fault = counter.next_fault()
            if fault == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if fault is not None:
                status, code, message = _ERRORS[fault]
                payload = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                # A HEAD answer has no body but keeps the object's real Content-Length.
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        def _raw_chunks(self) -> bytes:
            """A chunked request body, framing and trailers included, read to its end."""
            out = bytearray()
            while True:
                line = self.rfile.readline()
                out += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.rfile.readline()
                        out += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(out)
                out += self.rfile.read(size + 2)  # the data and its CRLF

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler


@contextmanager
def fault_proxy(
    upstream: str,
    *,
    every: int = 7,
    kinds: Sequence[str] = ("503", "500", "drop"),
    max_faults: int = 1000,
) -> Iterator[tuple[str, FaultCounter]]:
    """Run the proxy on a free loopback port; yields its URL and the fault counter."""
    counter = FaultCounter(every, kinds, max_faults)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, counter))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()
