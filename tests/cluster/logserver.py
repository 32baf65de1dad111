"""A node's kubelet log endpoint, as the node agent that runs pods as local processes serves it.

The API server answers `GET /api/v1/namespaces/NS/pods/NAME/log` by asking
the pod's node: `GET https://<InternalIP>:<kubeletEndpoint port>/containerLogs/NS/NAME/CONTAINER`.
This is that endpoint, on the node's own loopback address. It serves TLS with
a certificate for that address signed by the cluster CA (the API server
checks it: `--kubelet-certificate-authority`), and it accepts only clients
with a certificate from the same CA (the API server's kubelet client
certificate). A real kubelet would also ask the API server whether that user
may read the logs (a SubjectAccessReview); this one trusts any client the CA
vouches for.

Query parameters honoured: `follow` (stream until the container exits),
`tailLines`, `limitBytes`. `timestamps` is accepted and ignored (the logs
are the process's raw output, without a runtime's per-line timestamps).
Logs stay readable after the pod finished, until the cluster is removed.
"""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# (namespace, pod, container) -> (the log file, whether the container still runs)
Lookup = Callable[[str, str, str], tuple[Path, Callable[[], bool]] | None]


def tail(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of data."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: " + format, self.server.node, *args)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._plain(404, f"no such endpoint {url.path}\n")
            return
        _, namespace, pod, container = parts
        found = self.server.lookup(namespace, pod, container)
        if found is None:
            self._plain(404, f"no container {container} of pod {namespace}/{pod} on this node\n")
            return
        path, is_running = found
        query = urllib.parse.parse_qs(url.query)
        follow = query.get("follow", ["false"])[0] == "true"
        limit = int(query["limitBytes"][0]) if "limitBytes" in query else None
        data = path.read_bytes() if path.exists() else b""
        if "tailLines" in query:
            data = tail(data, int(query["tailLines"][0]))
        if limit is not None:
            data = data[:limit]
        if not follow:
            self._send(200, data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = len(data)
        offset = path.stat().st_size if path.exists() else 0
        self._chunk(data)
        while limit is None or sent < limit:
            running = is_running()
            with path.open("rb") as f:
                f.seek(offset)
                more = f.read()
            if more:
                if limit is not None:
                    more = more[: limit - sent]
                offset += len(more)
                sent += len(more)
                self._chunk(more)
            elif not running:
                break
            else:
                time.sleep(0.2)
        self.wfile.write(b"0\r\n\r\n")  # the last chunk

    def _chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the response
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _plain(self, status: int, text: str) -> None:
        self._send(status, text.encode())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, node: str, ip: str, lookup: Lookup) -> None:
        super().__init__((ip, 0), _Handler)
        self.node = node
        self.lookup = lookup


def serve(
    *, node: str, ip: str, cert: Path, key: Path, client_ca: Path, lookup: Lookup
) -> tuple[int, Callable[[], None]]:
    """Serve node's logs on ip at a free port; return the port and a function that stops it."""
    server = _Server(node, ip, lookup)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=f"logs-{node}", daemon=True)
    thread.start()
    return int(server.server_address[1]), server.shutdown
