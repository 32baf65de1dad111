"""The worker process itself: its allocator, its memory between tasks, its peak
RSS, and the name of the node it runs on.

Called by :mod:`mrk8s.tasks` around every task, in whatever process a
backend runs tasks in (a local worker, ``mrk8s worker`` in a pod).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sys
from collections.abc import Mapping

import pyarrow as pa


def node_name(environ: Mapping[str, str] = os.environ) -> str:
    """Where this task's data lives: $MRK8S_NODE (set from the downward API) or the hostname."""
    return environ.get("MRK8S_NODE") or socket.gethostname()


_READY = False


def prepare() -> None:
    """Once per worker process: use the C library's allocator for Arrow buffers.

    Arrow's default (mimalloc) keeps freed pages mapped for reuse, which in a
    long-lived worker shows as RSS well above what is in use; the system
    allocator hands large blocks back at once, so --memory-per-worker holds.
    """
    global _READY
    if not _READY:
        # Arrow's own switch, if the user set it, wins (e.g. mimalloc, which keeps
        # freed pages mapped: faster when page faults are dear, more RSS).
        if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            pa.set_memory_pool(pa.system_memory_pool())
        _READY = True


def release_memory() -> None:
    """Between tasks: hand freed heap pages back to the OS (Linux glibc).

    A long-lived worker otherwise keeps the high-water mark of its largest
    task as resident memory, which the next task's peak would include.
    """
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> None:
    """Restart this process's peak-RSS counter (Linux), so each task measures its own."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    """Peak resident memory in bytes since the last reset (Linux: VmHWM), else the
    process's lifetime peak."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
