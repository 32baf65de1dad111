"""The worker process itself: its allocator, its memory between tasks, its peak
RSS, and the name of the node it runs on.

Called by :mod:`mrk8s.tasks.run` around every task, in whatever process a
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


def release_memory() -> None:
    """Between tasks: hand freed memory back to the OS.

    Arrow buffers come from Arrow's default pool (mimalloc in the wheels, or
    whatever ``ARROW_DEFAULT_MEMORY_POOL`` names); Python's own objects from
    glibc. Both keep freed pages for reuse, so a long-lived worker would keep
    the high-water mark of its largest task as resident memory, which the next
    task's peak would include. (An interleaved ``bench/compare_shuffle.py``
    run once had mimalloc, released between tasks, 15-25% faster than the
    C library's allocator, but that run may have carried Dask's
    ``MALLOC_TRIM_THRESHOLD_``, which slows the C library's allocator most;
    alternated alone at 1 GiB the two are level within noise, mimalloc at
    about 8 MB more peak RSS. See the README.)
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
