"""Progress for people: a bar on a terminal, plain lines otherwise.

The driver reports through a :class:`Progress` object whose default does
nothing; the CLI picks :func:`for_stream` (a tqdm bar when stderr is a
terminal, rate-limited plain lines when it is a file or a pipe). Other front
ends (the gateway, a KFP component) can pass their own.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from scheduler.stage import TaskEvent


class Progress:
    """Receives stage boundaries and task events; does nothing by default."""

    def stage_started(
        self, name: str, *, total_tasks: int, done_tasks: int, total_bytes: int
    ) -> None:
        """A stage begins; ``done_tasks`` were already committed (resumed)."""

    def task_event(self, event: TaskEvent) -> None:
        """A task attempt started, finished or failed."""

    def stage_finished(self, name: str) -> None:
        """Every task of the stage has committed."""

    def message(self, text: str) -> None:
        """A one-line note for the person watching."""


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class _Tally:
    def __init__(self, total_tasks: int, done_tasks: int, total_bytes: int) -> None:
        self.total = total_tasks
        self.done = done_tasks
        self.bytes = 0
        self.total_bytes = total_bytes
        self.started = time.monotonic()
        self.failures = 0

    def add(self, event: TaskEvent) -> None:
        if event.kind == "finished":
            self.done += 1
            self.bytes += int(event.result.get("bytes_in", 0))
        elif event.kind == "failed":
            self.failures += 1

    def rate(self) -> float:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return self.bytes / elapsed


class LineProgress(Progress):
    """Plain lines (for logs and pipes), at most one per ``interval`` seconds per stage."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 2.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._tally: _Tally | None = None
        self._name = ""
        self._last = 0.0

    def _line(self) -> None:
        t = self._tally
        assert t is not None
        extra = f", {t.failures} failed attempts" if t.failures else ""
        self.stream.write(
            f"mrk8s: {self._name}: {t.done}/{t.total} tasks, {_fmt_bytes(t.bytes)} in, "
            f"{_fmt_bytes(t.rate())}/s{extra}\n"
        )
        self.stream.flush()
        self._last = time.monotonic()

    def stage_started(
        self, name: str, *, total_tasks: int, done_tasks: int, total_bytes: int
    ) -> None:
        self._name = name
        self._tally = _Tally(total_tasks, done_tasks, total_bytes)
        self._last = time.monotonic()
        resumed = f" ({done_tasks} already done)" if done_tasks else ""
        self.stream.write(f"mrk8s: {name}: {total_tasks} tasks{resumed}\n")
        self.stream.flush()

    def task_event(self, event: TaskEvent) -> None:
        if self._tally is None:
            return
        self._tally.add(event)
        if time.monotonic() - self._last >= self.interval:
            self._line()

    def stage_finished(self, name: str) -> None:
        if self._tally is not None:
            self._line()
        self._tally = None

    def message(self, text: str) -> None:
        self.stream.write(f"mrk8s: {text}\n")
        self.stream.flush()


class BarProgress(Progress):
    """A tqdm bar per stage: tasks done / total, bytes read and the rate."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._tally: _Tally | None = None

    def stage_started(
        self, name: str, *, total_tasks: int, done_tasks: int, total_bytes: int
    ) -> None:
        from tqdm import tqdm

        self._tally = _Tally(total_tasks, done_tasks, total_bytes)
        self._bar = tqdm(
            total=total_tasks,
            initial=done_tasks,
            desc=name,
            unit="task",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def task_event(self, event: TaskEvent) -> None:
        if self._bar is None or self._tally is None:
            return
        self._tally.add(event)
        if event.kind == "finished":
            self._bar.update(1)
        self._bar.set_postfix_str(
            f"{_fmt_bytes(self._tally.bytes)} {_fmt_bytes(self._tally.rate())}/s", refresh=True
        )

    def stage_finished(self, name: str) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"mrk8s: {text}", file=self.stream)


def for_stream(stream: IO[str] | None = None) -> Progress:
    """A bar if ``stream`` (default stderr) is a terminal, else plain lines."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return BarProgress(stream)
    return LineProgress(stream)
