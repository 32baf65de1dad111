"""What an S3 client asked of the loopback server, counted at the server.

    python -m bench.s3_traffic --port 9000 --log requests.tsv   # moto, logging each request

The server is moto in server mode, started as ``python -m moto.server`` starts
it (the same application, request handler and threaded werkzeug server),
with one addition: a WSGI middleware that appends a line per request to
``--log``: method, path, query string, ``Range`` header, status, bytes of the
request body and of the response body. Werkzeug's own access log has method,
path and status but neither the range nor any size, so it cannot tell a
ranged GET from a whole one, nor count bytes. The middleware does a few
dictionary look-ups and one short write per request; moto's own handling of
a request takes milliseconds.

:func:`read_log` parses the log, :func:`kind` names each request's S3
operation, and :func:`report` sums the requests of one run (those under a key
prefix) into counts by kind and by role, bytes written and read, and each per
GiB shuffled. Used by ``bench/compare_shuffle.py`` for ``mrk8s-s3`` and
``s3-lower-bound``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

#: The kinds :func:`kind` names, in the order reports list them.
KINDS = (
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "GetObject",
    "GetObject (ranged)",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "DeleteObject",
    "DeleteObjects",
    "CreateBucket",
    "other",
)

_FIELDS = 8


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server saw it."""

    method: str
    bucket: str
    key: str
    query: dict[str, str]
    range: str
    status: int
    bytes_in: int
    bytes_out: int
    first_deleted: str
    """For a multi-object delete, the first key in its body (to tell whose it was)."""


def kind(r: Request) -> str:
    """The S3 operation of ``r`` (one of :data:`KINDS`)."""
    q = r.query
    if not r.key:
        if r.method == "GET" and ("list-type" in q or "prefix" in q or not q):
            return "ListObjects"
        if r.method == "POST" and "delete" in q:
            return "DeleteObjects"
        if r.method == "HEAD":
            return "HeadBucket"
        if r.method == "PUT" and not q:
            return "CreateBucket"
        return "other"
    if r.method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return "UploadPart"
        return "PutObject" if not q else "other"
    if r.method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return "other"
    if r.method == "GET":
        if q:
            return "other"
        return "GetObject (ranged)" if r.range else "GetObject"
    if r.method == "HEAD":
        return "HeadObject"
    if r.method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return "other"


#: What :func:`role` names.
ROLES = ("map_outputs", "commit_records", "other")

_MAP_OUTPUT = re.compile(r"(^|/)s\d+/map-[^/]*\.arrow$")


def role(r: Request) -> str:
    """What the request was for, by the object's name: ``map_outputs``
    (``.../s{step}/map-*.arrow``, mrk8s' layout, which the lower bound follows),
    ``commit_records`` (``.../commits/...``), or ``other`` (seeds, plan, code,
    summary, listings, clean-up)."""
    if _MAP_OUTPUT.search(r.key):
        return "map_outputs"
    if "/commits/" in f"/{r.key}" or "/commits/" in f"/{r.query.get('prefix', '')}":
        return "commit_records"
    return "other"


def belongs_to(r: Request, prefix: str) -> bool:
    """Whether ``r`` touched a key under ``prefix`` (``bucket/some/prefix/``): its key,
    a listing's ``prefix`` parameter, or a multi-object delete's first key."""
    bucket, _, under = prefix.partition("/")
    if r.bucket != bucket:
        return False
    names = (r.key, r.query.get("prefix", ""), r.first_deleted)
    return any(name.startswith(under) or name == under.rstrip("/") for name in names if name)


def read_log(path: str) -> list[Request]:
    """The requests in a log written by :func:`serve`, in the order they finished."""
    requests = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != _FIELDS:
                raise ValueError(f"{path}:{number}: not a request line: {line[:200]!r}")
            method, target, query, byte_range, status, bytes_in, bytes_out, first = fields
            bucket, _, key = urllib.parse.unquote(target.lstrip("/")).partition("/")
            requests.append(
                Request(
                    method=method,
                    bucket=bucket,
                    key=key,
                    query=dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
                    range=byte_range,
                    status=int(status),
                    bytes_in=int(bytes_in),
                    bytes_out=int(bytes_out),
                    first_deleted=first,
                )
            )
    return requests


def report(requests: Iterable[Request], prefix: str, size: int) -> dict[str, Any]:
    """The S3 traffic of one run (the requests under ``prefix``), for a run's JSON row:
    requests by kind (:func:`kind`), and by role (:func:`role`) and kind.

    ``size`` is the bytes shuffled; ``..._per_gib`` divides by it. Bytes
    written are request bodies (PUTs and parts), bytes read response bodies of
    GETs; both as the server counted them.
    """
    mine = [r for r in requests if belongs_to(r, prefix)]
    kinds = Counter(kind(r) for r in mine)
    roles: dict[str, Counter[str]] = {name: Counter() for name in ROLES}
    for r in mine:
        roles[role(r)][kind(r)] += 1
    written = sum(r.bytes_in for r in mine if kind(r) in ("PutObject", "UploadPart"))
    read = sum(r.bytes_out for r in mine if kind(r).startswith("GetObject"))
    gib = size / 2**30
    return {
        "s3_requests": sum(kinds.values()),
        "s3_requests_by_kind": {k: kinds[k] for k in KINDS if kinds[k]},
        "s3_requests_by_role": {
            name: {k: counts[k] for k in KINDS if counts[k]} for name, counts in roles.items()
        },
        "s3_requests_failed": sum(1 for r in mine if r.status >= 400),
        "s3_bytes_written": written,
        "s3_bytes_read": read,
        "s3_requests_per_gib": round(len(mine) / gib, 1),
        "s3_bytes_written_per_gib": round(written / gib),
        "s3_bytes_read_per_gib": round(read / gib),
    }


# -- the server ------------------------------------------------------------------


class RequestLog:
    """WSGI middleware: one tab-separated line per request to ``out`` (see :func:`read_log`)."""

    def __init__(self, app: Callable[..., Any], out: IO[str]) -> None:
        self.app = app
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        query = environ.get("QUERY_STRING", "")
        # A body sent in aws-chunked encoding says its own length here.
        sent = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH")
        first = ""
        if method == "POST" and "delete" in urllib.parse.parse_qs(query, keep_blank_values=True):
            first = _first_deleted(environ)
        seen: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            seen["length"] = next((v for k, v in headers if k.lower() == "content-length"), None)
            return start_response(status, headers, *args)

        body = self.app(environ, start)
        if method == "HEAD":
            seen["length"] = 0
        if seen.get("length") is not None:
            self._write(environ, method, query, sent, seen["status"], int(seen["length"]), first)
            return body
        return self._counted(body, environ, method, query, sent, seen, first)

    def _counted(
        self,
        body: Iterable[bytes],
        environ: dict[str, Any],
        method: str,
        query: str,
        sent: str | None,
        seen: dict[str, Any],
        first: str,
    ) -> Iterator[bytes]:
        n = 0
        try:
            for chunk in body:
                n += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self._write(environ, method, query, sent, seen.get("status", "0"), n, first)

    def _write(
        self,
        environ: dict[str, Any],
        method: str,
        query: str,
        sent: str | None,
        status: str,
        length: int,
        first: str,
    ) -> None:
        path = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        path = path.split("?", 1)[0]
        line = "\t".join(
            (
                method,
                path,
                query,
                environ.get("HTTP_RANGE", ""),
                status,
                str(int(sent or 0)),
                str(length),
                first,
            )
        )
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def _first_deleted(environ: dict[str, Any]) -> str:
    """The first ``<Key>`` of a multi-object delete's body; the body is put back."""
    import io

    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(data)
    match = re.search(rb"<Key>([^<]*)</Key>", data)
    return urllib.parse.quote(match.group(1).decode(), safe="/") if match else ""


def command(port: int, log: str) -> list[str]:
    """The command that serves moto on loopback ``port``, logging requests to ``log``."""
    return [sys.executable, "-m", "bench.s3_traffic", "--port", str(port), "--log", log]


def serve(port: int, log: str, host: str = "127.0.0.1") -> None:
    """moto's server as ``python -m moto.server`` runs it, with :class:`RequestLog`."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server does
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # RequestLog logs each request
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as moto.server does
    with open(log, "a", encoding="utf-8") as out:
        run_simple(
            host,
            port,
            RequestLog(app, out),
            threaded=True,
            request_handler=MotoRequestHandler,
        )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--log", required=True, help="file to append one line per request to")
    args = p.parse_args(argv)
    serve(args.port, args.log, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
