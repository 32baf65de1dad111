"""Progress reporting: plain lines for logs, a bar for terminals."""

from __future__ import annotations

import io

from mrk8s.engine import progress
from scheduler.stage import TaskError, TaskEvent


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(report: progress.Progress) -> None:
    report.stage_started("step 1/1 map", total_tasks=3, done_tasks=1, total_bytes=3000)
    report.task_event(TaskEvent("step 1/1 map", 1, 1, "started"))
    report.task_event(TaskEvent("step 1/1 map", 1, 1, "finished", {"bytes_in": 2_500_000}))
    error = TaskError("WorkerLostError", "died", retryable=True, user_error=False)
    report.task_event(TaskEvent("step 1/1 map", 2, 1, "failed", error=error))
    report.task_event(TaskEvent("step 1/1 map", 2, 2, "finished", {"bytes_in": 500_000}))
    report.stage_finished("step 1/1 map")


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    report = progress.for_stream(out)
    assert isinstance(report, progress.LineProgress)
    feed(report)
    lines = out.getvalue().splitlines()
    assert lines[0] == "mrk8s: step 1/1 map: 3 tasks (1 already done)"
    assert lines[-1].startswith("mrk8s: step 1/1 map: 3/3 tasks, 3.0 MB in, ")
    assert lines[-1].endswith(", 1 failed attempts")


def test_bar_on_a_terminal() -> None:
    out = FakeTerminal()
    report = progress.for_stream(out)
    assert isinstance(report, progress.BarProgress)
    feed(report)
    text = out.getvalue()
    assert "step 1/1 map" in text
    assert "3/3" in text
    assert "3.0 MB" in text
