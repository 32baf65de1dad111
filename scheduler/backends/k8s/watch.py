"""Following Kubernetes objects: list, then watch from the list's resourceVersion.

A :class:`Follower` runs one thread per kind of object (Jobs, Pods) and
puts what it learns on a queue the executor reads: first the whole list
(``("LIST", items)``), then every ``ADDED``/``MODIFIED``/``DELETED`` event.
It asks for bookmarks (so a quiet watch still advances its
resourceVersion), watches again from the last resourceVersion when the
server ends a watch or the connection drops (with a short back-off), and
lists again when the server says the version is too old (``410 Gone``):
what the consumer does with an object is idempotent, so a replayed state
changes nothing. After :data:`GIVE_UP_SECONDS` of failing to reach the API
server, it puts ``("ERROR", exception)`` on the queue and stops.

The way client-go's reflector and kopf's watcher do it; raw JSON
(``_preload_content=False``), not the client's model classes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

logger = logging.getLogger(__name__)

#: How long one watch request lasts before the server ends it and we watch again.
WATCH_SECONDS = 60
#: Back-off between reconnects (seconds), doubled up to the maximum.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
#: Failing to reach the API server this long is reported to the consumer.
GIVE_UP_SECONDS = 120.0

Event = tuple[str, str, Any]  # (kind, "LIST" | "ADDED" | "MODIFIED" | "DELETED" | "ERROR", payload)


class _Gone(Exception):
    """The server no longer has the resourceVersion we watch from (410)."""


class Follower:
    """Follows the objects ``list_fn`` lists in ``namespace`` with ``selector``.

    ``list_fn`` is a namespaced list method of the kubernetes client (e.g.
    ``CoreV1Api.list_namespaced_pod``). Events go to ``out`` tagged with
    ``kind``. ``resource_version`` starts the first watch from that version
    instead of listing first (the consumer already has that state); the
    counters ``lists`` and ``watches`` say how often each was done.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        *,
        namespace: str,
        selector: str,
        kind: str,
        out: queue.Queue[Event],
        resource_version: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.list_fn = list_fn
        self.namespace = namespace
        self.selector = selector
        self.kind = kind
        self.out = out
        self.watch_seconds = watch_seconds
        self.lists = 0
        self.watches = 0
        self._version = resource_version
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"follow-{kind}", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (the thread ends at once: its open watch is closed)."""
        self._stop.set()
        response = self._response
        if response is not None:
            # Shut the socket down rather than close the response: close() waits for the
            # reader thread's read, which lasts until the server ends the watch.
            sock = getattr(getattr(response, "connection", None), "sock", None)
            with contextlib.suppress(Exception):  # the reader thread may be closing it
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._list()
                self._watch()
                backoff, failing_since = BACKOFF_FIRST, None
            except _Gone:
                logger.info("watch of %s: resourceVersion too old (410), listing again", self.kind)
                self._version = None
            except Exception as exc:
                if self._stop.is_set():
                    return
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > GIVE_UP_SECONDS:
                    self.out.put((self.kind, "ERROR", exc))
                    return
                logger.info("watch of %s broke (%s); watching again", self.kind, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _list(self) -> None:
        response = self.list_fn(
            self.namespace, label_selector=self.selector, _preload_content=False
        )
        data = json.loads(response.data)
        self.lists += 1
        self._version = data["metadata"]["resourceVersion"]
        self.out.put((self.kind, "LIST", data.get("items") or []))

    def _watch(self) -> None:
        try:
            response = self.list_fn(
                self.namespace,
                label_selector=self.selector,
                watch=True,
                resource_version=self._version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_seconds,
                _preload_content=False,
                _request_timeout=(15, self.watch_seconds + 30),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone() from exc
            raise
        self.watches += 1
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._version = version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.out.put((self.kind, kind, obj))
        finally:
            self._response = None
            response.release_conn()


def jobs_and_pods(
    api: Any,
    *,
    namespace: str,
    selector: str,
    out: queue.Queue[Event],
    watch_seconds: int = WATCH_SECONDS,
) -> list[Follower]:
    """Two followers (not started) of the Jobs and the pods ``selector`` picks in
    ``namespace``, both sending to ``out`` (kinds ``job`` and ``pod``); ``api`` is a
    kubernetes ``ApiClient``."""
    lists = {
        "job": kubernetes.client.BatchV1Api(api).list_namespaced_job,
        "pod": kubernetes.client.CoreV1Api(api).list_namespaced_pod,
    }
    return [
        Follower(
            fn,
            namespace=namespace,
            selector=selector,
            kind=kind,
            out=out,
            watch_seconds=watch_seconds,
        )
        for kind, fn in lists.items()
    ]
