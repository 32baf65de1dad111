"""What a benchmark's stage cost the disk and the memory of its tasks, from /proc.

Used by :mod:`mrk8s.bench.shuffle_bench` around each stage of the local backend, whose
workers are child processes of the benchmark. Linux only; elsewhere every
figure is None.

- Disk bytes: the sum over the benchmark process and its descendants of
  ``read_bytes`` and ``write_bytes`` in ``/proc/PID/io`` (bytes the process
  caused to be fetched from or sent to the storage layer: a read served by
  the page cache counts nothing, a write counts when it dirties the page
  cache, before writeback). Beside them, the same for the whole device
  (``/proc/diskstats`` of the disk holding the shuffle directory), which
  also counts everything else running on the machine.
- CPU seconds: the same sum of ``utime + stime`` (``/proc/PID/stat``): what
  the stage's work cost the CPUs, which the machine's other work changes far
  less than it changes the stage's seconds.
- Task memory: every :data:`SAMPLE_SECONDS`, ``RssAnon`` and ``RssFile`` of
  each descendant (``/proc/PID/status``); the peak anonymous memory of a stage
  is the largest ``RssAnon`` any worker had in it. Anonymous memory is what a
  task holds (heap, Arrow buffers, decoded rows); file-backed pages
  (``RssFile``: memory-mapped map outputs, shared libraries) are page cache
  the kernel can drop and re-read at will, shared with every other reader of
  the file, so they are reported separately and not counted as the task's.
  ``VmHWM``, the peak the commit records give, counts both.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

#: How often worker memory is sampled.
SAMPLE_SECONDS = 0.02

_IO_FIELDS = ("read_bytes", "write_bytes", "cancelled_write_bytes")

#: Clock ticks per second of ``/proc/PID/stat``'s CPU times.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: What :meth:`StageMonitor.stop` reports.
FIGURES = (
    "disk_read_bytes",
    "disk_write_bytes",
    "disk_cancelled_write_bytes",
    "cpu_seconds",
    "device_read_bytes",
    "device_write_bytes",
    "peak_anon_max",
    "peak_file_max",
    "memory_samples",
)


def descendants(root: int) -> list[int]:
    """Process ids of every live descendant of ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def process_io(pid: int) -> dict[str, int] | None:
    """``/proc/PID/io``'s storage counters and the CPU ticks of ``/proc/PID/stat``
    (``cpu_ticks``), or None if the process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    out = {k: int(fields[k]) for k in _IO_FIELDS if k in fields}
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        out["cpu_ticks"] = int(stat[11]) + int(stat[12])  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        pass
    return out


def process_memory(pid: int) -> dict[str, int] | None:
    """``RssAnon`` and ``RssFile`` of ``pid`` in bytes, or None if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        return None
    return out


def device_io(path: str) -> tuple[int, int] | None:
    """Bytes read from and written to the disk holding ``path`` since boot (diskstats)."""
    try:
        dev = os.stat(path).st_dev
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
        with open("/proc/diskstats") as f:
            for line in f:
                parts = line.split()
                if parts[2] == name:
                    return int(parts[5]) * 512, int(parts[9]) * 512
    except OSError:
        return None
    return None


class StageMonitor:
    """Measures one stage: call :meth:`start`, run it, then :meth:`stop` for the figures."""

    def __init__(self, path: str, root: int | None = None) -> None:
        self.path = path
        self.root = os.getpid() if root is None else root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io_start: dict[int, dict[str, int]] = {}
        self._io_last: dict[int, dict[str, int]] = {}
        self._peak: dict[str, int] = {}
        self._device_start: tuple[int, int] | None = None
        self.samples = 0

    def _tree(self) -> list[int]:
        return [self.root, *descendants(self.root)]

    def start(self) -> None:
        self._device_start = device_io(self.path)
        for pid in self._tree():
            io = process_io(pid)
            if io is not None:
                self._io_start[pid] = io
                self._io_last[pid] = io
        self._thread = threading.Thread(target=self._sample, name="bench-monitor", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        workers: list[int] = []
        listed = 0.0
        while True:
            now = time.monotonic()
            if now - listed > 0.5:  # listing /proc is the costly part
                workers, listed = descendants(self.root), now
            self._take(workers)
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def _take(self, workers: list[int]) -> None:
        for pid in workers:
            mem = process_memory(pid)
            if mem is None:
                continue
            for key, value in mem.items():
                self._peak[key] = max(self._peak.get(key, 0), value)
            io = process_io(pid)
            if io is not None:
                self._io_last[pid] = io
        self.samples += 1

    def stop(self) -> dict[str, Any]:
        """The stage's disk bytes and the peak memory of its tasks (see the module doc)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._take(descendants(self.root))
        for pid in self._tree():
            io = process_io(pid)
            if io is not None:
                self._io_last[pid] = io
        fields = (*_IO_FIELDS, "cpu_ticks")
        totals = dict.fromkeys(fields, 0)
        for pid, last in self._io_last.items():
            first = self._io_start.get(pid, dict.fromkeys(fields, 0))
            for k in fields:
                totals[k] += last.get(k, 0) - first.get(k, 0)
        device_end = device_io(self.path)
        device = (
            (device_end[0] - self._device_start[0], device_end[1] - self._device_start[1])
            if device_end and self._device_start
            else (None, None)
        )
        seen = bool(self._io_last)
        return {
            "disk_read_bytes": totals["read_bytes"] if seen else None,
            "disk_write_bytes": totals["write_bytes"] if seen else None,
            "disk_cancelled_write_bytes": totals["cancelled_write_bytes"] if seen else None,
            "cpu_seconds": round(totals["cpu_ticks"] / _TICKS, 2) if seen else None,
            "device_read_bytes": device[0],
            "device_write_bytes": device[1],
            "peak_anon_max": self._peak.get("RssAnon"),
            "peak_file_max": self._peak.get("RssFile"),
            "memory_samples": self.samples,
        }
