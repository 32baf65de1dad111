"""A tally of the object-store requests this process sent, by kind, and their bytes.

Requests are counted where they leave the process: an event handler on the
botocore client of every s3fs filesystem a :class:`shuffle.store.FsspecStore`
opens (:func:`watch`), called once per HTTP attempt (a retry counts again, as
S3 bills it). Task code (``mrk8s.tasks.run``) takes the tally around each task
and reports it as the task's ``store`` counter group; the driver sums the
groups like any counter.

What is not seen: Arrow's own S3 client (:mod:`shuffle.s3native`) sends its
requests from C++ with no hook Python can reach, so a store on it is marked
unobserved (:func:`is_observed`) and nothing is counted for it; local disk and
``http(s)://`` stores send no object-store requests. This module knows
nothing of jobs or tasks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

#: Request kinds, named by what S3 bills (see mrk8s/bench/cost.py).
PUT = "put"
MULTIPART_CREATE = "multipart_create"
MULTIPART_PART = "multipart_part"
MULTIPART_COMPLETE = "multipart_complete"
MULTIPART_ABORT = "multipart_abort"
GET = "get"
HEAD = "head"
LIST = "list"
DELETE = "delete"
COPY = "copy"
OTHER = "other"
KINDS = (
    PUT,
    MULTIPART_CREATE,
    MULTIPART_PART,
    MULTIPART_COMPLETE,
    MULTIPART_ABORT,
    GET,
    HEAD,
    LIST,
    DELETE,
    COPY,
    OTHER,
)
#: Bytes sent in request bodies (PUT, parts; every attempt) and received in
#: GET bodies (answers that succeeded).
BYTES_WRITTEN = "bytes_written"
BYTES_READ = "bytes_read"

#: S3 API operations (botocore's names) by kind.
OPERATIONS = {
    "PutObject": PUT,
    "CreateMultipartUpload": MULTIPART_CREATE,
    "UploadPart": MULTIPART_PART,
    "CompleteMultipartUpload": MULTIPART_COMPLETE,
    "AbortMultipartUpload": MULTIPART_ABORT,
    "GetObject": GET,
    "HeadObject": HEAD,
    "HeadBucket": HEAD,
    "ListObjectsV2": LIST,
    "ListObjects": LIST,
    "ListMultipartUploads": LIST,
    "DeleteObject": DELETE,
    "DeleteObjects": DELETE,
    "CopyObject": COPY,
    "UploadPartCopy": COPY,
}

#: The counter group a task reports its requests in.
COUNTER_GROUP = "store"


class _Tally:
    """Counts by name, safe across threads (s3fs sends from its own I/O thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + amount

    def take(self) -> dict[str, int]:
        """What was counted since the last take; the tally starts again from zero."""
        with self._lock:
            out, self._counts = self._counts, {}
        return out

    def peek(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _reset(self) -> None:
        # A forked child starts with no requests of its own; the lock may have
        # been held by another thread of the parent at the fork.
        self._lock = threading.Lock()
        self._counts = {}


_TALLY = _Tally()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TALLY._reset)


def take() -> dict[str, int]:
    """Requests (by kind) and bytes counted in this process since the last take."""
    return _TALLY.take()


def peek() -> dict[str, int]:
    """The same without starting again."""
    return _TALLY.peek()


def add(name: str, amount: int = 1) -> None:
    """Count ``amount`` of ``name`` (a kind, or a bytes figure)."""
    _TALLY.add(name, amount)


def is_observed(fs: Any) -> bool:
    """Whether the requests ``fs`` sends are counted here (s3fs) or none are sent
    (local disk, memory); False for clients whose requests cannot be seen."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if not any(p in ("s3", "s3a") for p in protocols):
        return True
    return _is_s3fs(fs)


def is_watched(fs: Any) -> bool:
    """Whether :func:`watch` counts the requests of ``fs`` (an s3fs filesystem)."""
    return bool(getattr(fs, "_mrk8s_watched", False))


def _is_s3fs(fs: Any) -> bool:
    return type(fs).__module__.split(".")[0] == "s3fs"


def watch(fs: Any) -> None:
    """Count every request ``fs`` sends from now on, if it is an s3fs filesystem
    (others: nothing to do). Idempotent; s3fs caches filesystems, so one
    registration serves every store on the same options."""
    if not _is_s3fs(fs) or getattr(fs, "_mrk8s_watched", False):
        return
    if fs.session is None:
        # The session s3fs would make itself, made here so that the handlers are
        # on it before any client exists (s3fs makes one client per bucket
        # region, all from this session).
        import aiobotocore.session

        fs.session = aiobotocore.session.AioSession(**fs.kwargs)
    _register(fs.session)
    client = getattr(fs, "_s3", None)
    if client is not None:  # already connected: its events were copied from the session
        _register_client(client)
    fs._mrk8s_watched = True


def _register(session: Any) -> None:
    session.register("before-send.s3", _on_send, unique_id=_SEND_ID)
    session.register("after-call.s3.GetObject", _on_get, unique_id=_GET_ID)


def _register_client(client: Any) -> None:
    client.meta.events.register("before-send.s3", _on_send, unique_id=_SEND_ID)
    client.meta.events.register("after-call.s3.GetObject", _on_get, unique_id=_GET_ID)


#: Handlers registered under these ids are registered once, however often asked.
_SEND_ID = "mrk8s-storecount-send"
_GET_ID = "mrk8s-storecount-get"


def _on_send(request: Any, event_name: str = "", **_: Any) -> None:
    """botocore's ``before-send`` event: once per HTTP attempt, retries included."""
    operation = event_name.rsplit(".", 1)[-1]
    kind = OPERATIONS.get(operation, OTHER)
    _TALLY.add(kind)
    if kind in (PUT, MULTIPART_PART):
        _TALLY.add(BYTES_WRITTEN, _content_length(request.headers))


def _on_get(http_response: Any = None, parsed: Mapping[str, Any] | None = None, **_: Any) -> None:
    """botocore's ``after-call`` of GetObject: the bytes of the body coming back."""
    length = (parsed or {}).get("ContentLength")
    if length is None and http_response is not None:
        length = _content_length(http_response.headers)
    _TALLY.add(BYTES_READ, int(length or 0))


def _content_length(headers: Any) -> int:
    try:
        return int(headers.get("Content-Length") or 0)
    except (TypeError, ValueError):
        return 0
