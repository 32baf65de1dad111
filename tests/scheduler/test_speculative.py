"""Speculative execution on the local backend, with real worker processes.

A straggler is made deterministic by its attempt number (see
``tasks_for_tests.straggler``): attempt 1 of one task is slow and its later
attempts are quick (or fail, or are slow too); marker files in the test's
temporary directory name the process of each attempt and record each cleanup.
The knobs are scaled down (``speculative_min_seconds`` = 0.3) so that each
test takes a second or two; no test waits for a 20 s straggler.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from scheduler.backends.local import LocalExecutor
from scheduler.errors import JobFailedError
from scheduler.stage import TaskEvent
from tests.scheduler import tasks_for_tests as tasks
from tests.scheduler.util import of_kind, runs, spec

pytestmark = pytest.mark.timeout(60)

FAST = {"speculative_min_seconds": 0.3, "speculative_factor": 2.0}
CLEANUP = tasks.entry("remove_attempt")


@pytest.fixture
def warm_executor(make_executor, tmp_path):
    """Build an executor whose workers have all started and run a task already.

    Otherwise a worker still starting up on a loaded machine makes its first
    attempt the straggler, whatever the test meant.
    """

    def make(num_workers: int) -> LocalExecutor:
        executor = make_executor(num_workers)
        warm = tmp_path / "warm"
        warm.mkdir()
        executor.run_stage(spec(warm, "echo", num_workers), indexes=range(num_workers))
        assert len(executor.worker_pids()) == num_workers
        return executor

    return make


def straggling(tmp_path: Path, num_tasks: int, **kwargs):
    """A stage of ``straggler`` tasks, speculative with the fast knobs unless told otherwise."""
    options = {"speculative": True, **FAST, "cleanup_entrypoint": CLEANUP, **kwargs}
    return spec(tmp_path, "straggler", num_tasks, **options)


def histories(events: list[TaskEvent]) -> dict[tuple[int, int], list[str]]:
    """The kinds of event of each (index, attempt), in order."""
    out: dict[tuple[int, int], list[str]] = defaultdict(list)
    for e in events:
        out[(e.index, e.attempt)].append(e.kind)
    return dict(out)


def cleaned(tmp_path: Path) -> dict[tuple[int, int], dict]:
    """The cleanups that ran: (index, attempt) -> what remove_attempt recorded."""
    out = {}
    for path in tmp_path.glob("cleaned-*"):
        _, index, attempt = path.name.split("-")
        out[(int(index), int(attempt))] = json.loads(path.read_text())
    return out


def test_a_straggler_gets_a_second_attempt_that_wins(tmp_path, warm_executor):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    stage = straggling(tmp_path, 4, payload={"slow": 1, "first_seconds": 20})
    pool = executor.worker_pids()

    started = time.monotonic()
    results = executor.run_stage(stage, indexes=range(4), on_event=events.append)
    elapsed = time.monotonic() - started

    assert elapsed < 10, "the stage waited for the straggler"
    assert sorted(results) == [0, 1, 2, 3]
    assert results[1]["attempt"] == 2
    assert {results[i]["attempt"] for i in (0, 2, 3)} == {1}
    assert runs(tmp_path) == {0: [1], 1: [2], 2: [1], 3: [1]}
    # Every attempt started and ended exactly once; the extra one says it is speculative.
    assert histories(events) == {
        (0, 1): ["started", "finished"],
        (1, 1): ["started", "cancelled"],
        (1, 2): ["speculated", "started", "finished"],
        (2, 1): ["started", "finished"],
        (3, 1): ["started", "finished"],
    }
    (cancelled,) = (e for e in events if e.kind == "cancelled")
    (speculated,) = (e for e in events if e.kind == "speculated")
    assert cancelled.worker != speculated.worker
    # The slow worker is gone, replaced, and cleaned up after once it was dead.
    slow_pid = int((tmp_path / "slow-1-1").read_text())
    assert slow_pid in pool
    assert not psutil.pid_exists(slow_pid)
    assert slow_pid not in executor.worker_pids()
    assert len(executor.worker_pids()) == 2
    cleanups = cleaned(tmp_path)
    assert list(cleanups) == [(1, 1)]
    assert cleanups[(1, 1)]["loser_alive"] is False
    assert cleanups[(1, 1)]["pid"] in executor.worker_pids()


def test_the_executor_runs_the_next_stage_after_a_cancellation(tmp_path, warm_executor):
    executor = warm_executor(2)
    executor.run_stage(
        straggling(tmp_path, 3, payload={"slow": 0, "first_seconds": 20}), indexes=range(3)
    )
    events: list[TaskEvent] = []

    results = executor.run_stage(
        spec(tmp_path, "echo", 4, payload={"tag": "next"}), indexes=range(4), on_event=events.append
    )

    assert {r["tag"] for r in results.values()} == {"next"}
    assert of_kind(events, "failed") == []
    assert len(executor.worker_pids()) == 2


def test_speculation_is_off_by_default(tmp_path, warm_executor):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    stage = spec(
        tmp_path,
        "straggler",
        4,
        payload={"slow": 1, "first_seconds": 0.8},
        cleanup_entrypoint=CLEANUP,
        **FAST,
    )

    started = time.monotonic()
    results = executor.run_stage(stage, indexes=range(4), on_event=events.append)

    assert time.monotonic() - started >= 0.8
    assert results[1]["attempt"] == 1
    assert of_kind(events, "speculated") == []
    assert of_kind(events, "cancelled") == []
    assert cleaned(tmp_path) == {}


def test_no_speculation_when_tasks_take_similar_time(tmp_path, warm_executor):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    # Five tasks on two workers: the last one runs alone while a worker is idle.
    stage = straggling(
        tmp_path, 5, payload={"slow": None, "seconds": 0.3}, speculative_min_seconds=0.1
    )

    results = executor.run_stage(stage, indexes=range(5), on_event=events.append)

    assert {r["attempt"] for r in results.values()} == {1}
    assert of_kind(events, "speculated") == []
    assert of_kind(events, "cancelled") == []
    assert sorted(of_kind(events, "started")) == [(i, 1) for i in range(5)]


@pytest.mark.parametrize("later", ["user_error", "sigkill"])
def test_a_failing_speculative_attempt_does_not_fail_the_stage(tmp_path, warm_executor, later):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    stage = straggling(tmp_path, 3, payload={"slow": 1, "first_seconds": 1.0, "later": later})

    results = executor.run_stage(stage, indexes=range(3), on_event=events.append)

    assert results[1]["attempt"] == 1
    assert histories(events)[(1, 1)] == ["started", "finished"]
    assert histories(events)[(1, 2)] == ["speculated", "started", "failed"]
    (failed,) = (e for e in events if e.kind == "failed")
    assert failed.error is not None
    assert failed.error.user_error is (later == "user_error")
    # One extra attempt only: the idle worker did not try the straggler a third time.
    assert [a for i, a in of_kind(events, "started") if i == 1] == [1, 2]
    assert of_kind(events, "cancelled") == []
    assert cleaned(tmp_path) == {}
    assert len(executor.worker_pids()) == 2


def test_a_failing_first_attempt_does_not_fail_the_stage(tmp_path, warm_executor):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    # The first attempt fails (a user error, never retried) while the speculative one runs.
    payload = {"slow": 1, "first_seconds": 0.4, "first": "user_error", "later_seconds": 1.0}
    stage = straggling(tmp_path, 3, payload=payload)

    results = executor.run_stage(stage, indexes=range(3), on_event=events.append)

    assert results[1]["attempt"] == 2
    assert histories(events)[(1, 1)] == ["started", "failed"]
    assert histories(events)[(1, 2)] == ["speculated", "started", "finished"]
    assert of_kind(events, "cancelled") == []


def test_the_stage_fails_when_both_attempts_fail(tmp_path, warm_executor):
    executor = warm_executor(2)
    events: list[TaskEvent] = []
    payload = {"slow": 1, "first_seconds": 0.8, "first": "user_error", "later": "user_error"}
    stage = straggling(tmp_path, 3, payload=payload)

    with pytest.raises(JobFailedError) as info:
        executor.run_stage(stage, indexes=range(3), on_event=events.append)

    assert info.value.user_error is True
    assert str(info.value) == (
        "attempt 1 of task 1 found a bad record\n(the task failed on all 2 attempts)"
    )
    assert sorted(of_kind(events, "failed")) == [(1, 1), (1, 2)]
    assert runs(tmp_path)[1] == [2, 1]


def test_never_more_than_one_extra_attempt_per_task(tmp_path, warm_executor):
    executor = warm_executor(3)
    events: list[TaskEvent] = []
    # Every attempt of task 1 is slow; two workers are idle while it runs.
    payload = {"slow": 1, "first_seconds": 1.0, "later_seconds": 1.0}
    stage = straggling(tmp_path, 3, payload=payload)

    results = executor.run_stage(stage, indexes=range(3), on_event=events.append)

    assert [a for i, a in of_kind(events, "started") if i == 1] == [1, 2]
    assert of_kind(events, "speculated") == [(1, 2)]
    # Attempt 1 started first and usually wins; either way, one wins and one is cancelled.
    winner = results[1]["attempt"]
    (loser,) = {1, 2} - {winner}
    assert of_kind(events, "finished").count((1, winner)) == 1
    assert of_kind(events, "cancelled") == [(1, loser)]
    assert list(cleaned(tmp_path)) == [(1, loser)]
    assert cleaned(tmp_path)[(1, loser)]["loser_alive"] is False
    assert len(executor.worker_pids()) == 3


def test_a_failing_cleanup_does_not_fail_the_stage(tmp_path, warm_executor, caplog):
    executor = warm_executor(2)
    stage = straggling(
        tmp_path,
        3,
        payload={"slow": 0, "first_seconds": 20},
        cleanup_entrypoint=tasks.entry("fail_to_remove_attempt"),
    )

    with caplog.at_level(logging.WARNING, logger="scheduler.backends.local"):
        results = executor.run_stage(stage, indexes=range(3))

    assert results[0]["attempt"] == 2
    assert "could not remove the files of cancelled attempt 1 of task 0 of stage-straggler" in (
        caplog.text
    )
    assert "PermissionError: cannot remove the files of attempt 1 of task 0" in caplog.text
    assert len(executor.worker_pids()) == 2
