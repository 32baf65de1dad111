"""Wait until what the worker actors printed has reached the driver.

Ray forwards a worker's stdout and stderr to the driver asynchronously: each
node's log monitor tails the workers' files and publishes the lines, and a
thread of the driver prints them. A driver that exits as soon as its last task
returns loses the lines still on their way, the user's own prints from the
final tasks among them (the job gateway keeps a Ray job's driver log as the
job's log). So before the executor kills its actors, each writes a marker to
stdout and stderr after everything its tasks wrote, and the driver waits,
for a bounded time, until every marker has arrived. The markers themselves
are not printed.

This hooks Ray's driver-side dispatcher of worker output (the one
``ray.init(log_to_driver=True)`` installs). When it is missing (a Ray that
changed it, a ``ray://`` client, output not sent to this driver), draining
is skipped and says so in the debug log.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

logger = logging.getLogger(__name__)

#: The most seconds :func:`drain` waits for the markers.
DRAIN_SECONDS = 10.0

_PRINTER = "ray_print_logs"


def _dispatcher() -> Any | None:
    worker_module = getattr(getattr(ray, "_private", None), "worker", None)
    dispatcher = getattr(worker_module, "global_worker_stdstream_dispatcher", None)
    handlers = getattr(dispatcher, "handlers", None)
    if dispatcher is None or not hasattr(dispatcher, "_lock") or not isinstance(handlers, list):
        return None
    if not any(name == _PRINTER for name, _ in handlers):
        return None  # worker output does not come to this driver
    return dispatcher


def drain(actors: Sequence[Any], timeout: float = DRAIN_SECONDS) -> bool:
    """Ask each actor (with a ``mark_output(marker)`` method) to write a marker,
    and wait until all of them came through; True when they did."""
    if not actors:
        return True
    dispatcher = _dispatcher()
    if dispatcher is None:
        logger.debug("worker output is not forwarded to this driver: not draining it")
        return True
    marker = f"mrk8s-output-marker-{secrets.token_hex(8)}"
    expected = 2 * len(actors)  # stdout and stderr of each (fewer if some are dead)
    seen = 0
    arrived = threading.Event()
    lock = threading.Lock()

    def count_markers(data: dict[str, Any]) -> None:
        nonlocal seen
        found = sum(marker in line for line in data.get("lines") or [])
        if found:
            with lock:
                seen += found
                if seen >= expected:
                    arrived.set()

    def hide_markers(handler: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
        def handle(data: dict[str, Any]) -> None:
            lines = data.get("lines") or []
            kept = [line for line in lines if marker not in line]
            if len(kept) == len(lines):
                handler(data)  # no marker: as Ray would
            elif kept:
                handler({**data, "lines": kept})

        return handle

    # The markers are counted once, by a handler of ours, whatever number of
    # handlers Ray has; each of Ray's gets the lines without them.
    with dispatcher._lock:
        original = list(dispatcher.handlers)
        wrapped = [("mrk8s-count-markers", count_markers)]
        wrapped += [(name, hide_markers(h)) for name, h in original]
        dispatcher.handlers = list(wrapped)
    started = time.monotonic()
    try:
        calls = [actor.mark_output.remote(marker) for actor in actors]
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=timeout)
        alive = 0
        for ref in ready:
            try:
                ray.get(ref)
                alive += 1
            except Exception:  # a dead actor writes no marker
                pass
        with lock:
            expected = 2 * alive
            if seen >= expected:
                arrived.set()
        left = max(0.0, timeout - (time.monotonic() - started))
        done = arrived.wait(left)
        if not done:
            logger.info(
                "the workers' last output did not all reach the driver within %.0f s "
                "(%d of %d markers); some of it may be missing here",
                timeout, seen, expected,
            )  # fmt: skip
        return done
    finally:
        with dispatcher._lock:
            # Ray's own handlers back, and any added meanwhile kept.
            added = [pair for pair in dispatcher.handlers if pair not in wrapped]
            dispatcher.handlers = original + added
