"""Helpers shared by the tests of the local backend (test_local, test_speculative).

Stages are built from the task functions of :mod:`tests.scheduler.tasks_for_tests`,
which log their runs in the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from scheduler.stage import StageSpec, TaskEvent
from tests.scheduler import tasks_for_tests as tasks

WORKER_MODULE = "scheduler.backends._local_worker"


def worker_processes() -> list[psutil.Process]:
    """Children of this process that are local workers, or dead and never reaped."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or WORKER_MODULE in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def spec(tmp_path: Path, task: str, num_tasks: int = 1, **kwargs: Any) -> StageSpec:
    payload = {"dir": str(tmp_path), **kwargs.pop("payload", {})}
    return StageSpec(
        name=kwargs.pop("name", f"stage-{task}"),
        num_tasks=num_tasks,
        entrypoint=tasks.entry(task),
        payload=payload,
        **kwargs,
    )


def runs(tmp_path: Path) -> dict[int, list[int]]:
    """Attempts that ran, per task index, from the tasks' own log files."""
    out = {}
    for path in tmp_path.glob("ran-*"):
        lines = path.read_text().splitlines()
        out[int(path.name.removeprefix("ran-"))] = [int(line.split()[0]) for line in lines]
    return out


def of_kind(events: list[TaskEvent], kind: str) -> list[tuple[int, int]]:
    return [(e.index, e.attempt) for e in events if e.kind == kind]
