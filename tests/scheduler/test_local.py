"""The local backend: stages of indexed tasks on real, long-lived worker processes.

No mocks: every test starts real workers (``python -m
scheduler.backends._local_worker``) that import the task functions of
:mod:`tests.scheduler.tasks_for_tests`. Dying, raising and printing tasks
check retries, error reporting and the pipe protocol; every test ends by
checking that no worker process is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from scheduler.backends.local import LocalExecutor
from scheduler.errors import JobFailedError
from scheduler.stage import TaskEvent
from tests.scheduler import tasks_for_tests as tasks
from tests.scheduler.util import of_kind, runs, spec, worker_processes

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


# -- running tasks ---------------------------------------------------------------------


def test_every_index_runs_once_and_results_are_keyed_by_index(tmp_path, make_executor):
    executor = make_executor(2)
    stage = spec(tmp_path, "echo", num_tasks=5, payload={"tag": "first"})

    results = executor.run_stage(stage, indexes=range(5))

    assert sorted(results) == [0, 1, 2, 3, 4]
    for i, result in results.items():
        assert result == {"index": i, "attempt": 1, "pid": result["pid"], "tag": "first"}
    assert runs(tmp_path) == {i: [1] for i in range(5)}


def test_only_the_given_indexes_run(tmp_path, make_executor):
    executor = make_executor(2)
    stage = spec(tmp_path, "echo", num_tasks=6)

    results = executor.run_stage(stage, indexes=[1, 4])

    assert sorted(results) == [1, 4]
    assert runs(tmp_path) == {1: [1], 4: [1]}


def test_no_indexes_runs_nothing(tmp_path, make_executor):
    executor = make_executor(2)

    assert executor.run_stage(spec(tmp_path, "echo", num_tasks=3), indexes=[]) == {}
    assert runs(tmp_path) == {}


def test_workers_are_reused_across_stages(tmp_path, make_executor):
    executor = make_executor(2)

    first = executor.run_stage(spec(tmp_path, "echo", 4, payload={"tag": "a"}), indexes=range(4))
    pids = executor.worker_pids()
    second = executor.run_stage(spec(tmp_path, "echo", 4, payload={"tag": "b"}), indexes=range(4))

    assert len(pids) == 2
    assert executor.worker_pids() == pids
    assert {r["pid"] for r in first.values()} <= set(pids)
    assert {r["pid"] for r in second.values()} <= set(pids)
    assert {r["tag"] for r in second.values()} == {"b"}


def test_workers_import_tasks_from_the_repository_root(tmp_path, make_executor, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MRK8S_TEST_MARKER"] = "from-the-driver"
    executor = make_executor(1, env=env)

    result = executor.run_stage(spec(tmp_path, "environment"), indexes=[0])[0]

    assert result["pythonpath"].split(os.pathsep)[0] == str(REPO)
    assert result["marker"] == "from-the-driver"
    assert result["module_file"] == str(REPO / "tests" / "scheduler" / "tasks_for_tests.py")
    assert result["cwd"] == str(tmp_path)


def test_workers_get_one_compute_thread_per_cpu_they_share(tmp_path, make_executor):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    shared = make_executor(2, env=env).run_stage(spec(tmp_path, "environment"), indexes=[0])
    chosen = make_executor(2, env={**env, "OMP_NUM_THREADS": "3"}).run_stage(
        spec(tmp_path, "environment"), indexes=[0]
    )

    cpus = len(os.sched_getaffinity(0))  # the CPUs this process (and so each worker) may use
    assert shared[0]["omp_num_threads"] == str(max(1, cpus // 2))
    assert chosen[0]["omp_num_threads"] == "3"  # the user's setting wins


def test_start_spawns_every_worker_and_preloads_run_before_the_first_task(tmp_path, make_executor):
    executor = make_executor(2, preload=[tasks.entry("preload")])

    executor.start()
    pids = executor.worker_pids()
    results = executor.run_stage(spec(tmp_path, "preloaded", 2), indexes=range(2))

    assert len(pids) == 2
    for result in results.values():
        assert result["pid"] in pids
        assert result["preloaded"] == [f"preloaded in {result['pid']}"]


def test_a_failing_preload_leaves_the_worker_running_tasks(tmp_path, make_executor):
    broken = ["no_such_module_anywhere", tasks.entry("no_such_function")]
    executor = make_executor(1, preload=broken)

    results = executor.run_stage(spec(tmp_path, "echo", 2), indexes=range(2))

    assert sorted(results) == [0, 1]
    assert runs(tmp_path) == {0: [1], 1: [1]}


def test_events_report_start_and_finish_of_every_task(tmp_path, make_executor):
    executor = make_executor(2)
    events: list[TaskEvent] = []

    results = executor.run_stage(
        spec(tmp_path, "echo", 3, name="the stage"), indexes=range(3), on_event=events.append
    )

    assert sorted(of_kind(events, "started")) == [(0, 1), (1, 1), (2, 1)]
    assert sorted(of_kind(events, "finished")) == [(0, 1), (1, 1), (2, 1)]
    assert len(events) == 6
    assert {e.stage for e in events} == {"the stage"}
    for i in range(3):
        started, finished = (e for e in events if e.index == i)
        assert (started.kind, finished.kind) == ("started", "finished")
        assert started.worker == finished.worker
        assert started.worker.startswith("local-")
        assert finished.result == results[i]
        assert finished.error is None


def test_printing_to_stdout_does_not_break_the_protocol(tmp_path, make_executor, capfd):
    executor = make_executor(2)

    results = executor.run_stage(spec(tmp_path, "chatty", 3), indexes=range(3))

    assert sorted(results) == [0, 1, 2]
    assert all(r["attempt"] == 1 for r in results.values())
    out, err = capfd.readouterr()
    assert "chatty" not in out
    # Two workers share the driver's stderr, so their lines may interleave.
    for i in range(3):
        assert f"chatty print from task {i}" in err
        assert f"chatty fd 1 from task {i}" in err


# -- failures and retries ----------------------------------------------------------------


@pytest.mark.parametrize(("how", "exit_code"), [("exit", 9), ("sigkill", -signal.SIGKILL)])
def test_a_task_whose_worker_dies_is_retried_on_a_new_worker(
    tmp_path, make_executor, how, exit_code
):
    executor = make_executor(2)
    events: list[TaskEvent] = []
    stage = spec(tmp_path, "die_on_first_attempt", 3, payload={"how": how}, max_attempts=2)

    results = executor.run_stage(stage, indexes=range(3), on_event=events.append)

    assert sorted(results) == [0, 1, 2]
    for i, result in results.items():
        dead_pid = int((tmp_path / f"died-{i}").read_text())
        assert result["attempt"] == 2
        assert result["pid"] != dead_pid
        assert not psutil.pid_exists(dead_pid)
    assert set(executor.worker_pids()) >= {r["pid"] for r in results.values()}
    assert len(executor.worker_pids()) == 2
    assert runs(tmp_path) == {0: [2], 1: [2], 2: [2]}

    failed = [e for e in events if e.kind == "failed"]
    assert sorted((e.index, e.attempt) for e in failed) == [(0, 1), (1, 1), (2, 1)]
    for e in failed:
        assert e.error is not None
        assert e.error.kind == "WorkerLostError"
        assert (e.error.retryable, e.error.user_error) == (True, False)
        assert f"died with exit code {exit_code} while running task {e.index} of" in (
            e.error.message
        )
        retry = next(x for x in events if (x.index, x.attempt, x.kind) == (e.index, 2, "started"))
        assert retry.worker != e.worker
    assert sorted(of_kind(events, "finished")) == [(0, 2), (1, 2), (2, 2)]


def test_a_task_that_always_dies_fails_the_job_after_max_attempts(tmp_path, make_executor):
    executor = make_executor(2)
    events: list[TaskEvent] = []
    stage = spec(tmp_path, "always_die", 1, name="step 1/1 map", max_attempts=3)

    with pytest.raises(JobFailedError) as info:
        executor.run_stage(stage, indexes=[0], on_event=events.append)

    err = info.value
    assert err.user_error is False
    assert err.kind == "WorkerLostError"
    assert "died with exit code 9 while running task 0 of step 1/1 map" in str(err)
    assert "(stage=step 1/1 map, task=0)" in str(err)
    assert "task failed on all 3 attempts; giving up" in str(err)
    assert runs(tmp_path) == {0: [1, 2, 3]}
    assert of_kind(events, "started") == [(0, 1), (0, 2), (0, 3)]
    assert of_kind(events, "failed") == [(0, 1), (0, 2), (0, 3)]
    assert of_kind(events, "finished") == []


def test_the_executor_runs_stages_after_a_failed_stage(tmp_path, make_executor):
    executor = make_executor(2)
    with pytest.raises(JobFailedError):
        executor.run_stage(spec(tmp_path, "always_die", 1, max_attempts=1), indexes=[0])

    results = executor.run_stage(spec(tmp_path, "echo", 3), indexes=range(3))

    assert sorted(results) == [0, 1, 2]
    assert len(executor.worker_pids()) == 2


def test_a_worker_killed_between_stages_is_replaced(tmp_path, make_executor):
    executor = make_executor(2)
    executor.run_stage(spec(tmp_path, "echo", 2), indexes=range(2))
    victim = executor.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.Process(victim).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed worker did not die"
        time.sleep(0.01)
    events: list[TaskEvent] = []

    results = executor.run_stage(
        spec(tmp_path, "echo", 4, payload={"tag": "after"}),
        indexes=range(4),
        on_event=events.append,
    )

    assert sorted(results) == [0, 1, 2, 3]
    # The task never reached the dead worker, so it used no attempt.
    assert {r["attempt"] for r in results.values()} == {1}
    assert of_kind(events, "failed") == []
    assert victim not in executor.worker_pids()
    assert len(executor.worker_pids()) == 2


def test_a_user_error_fails_at_once_without_retry(tmp_path, make_executor):
    executor = make_executor(2)
    events: list[TaskEvent] = []
    stage = spec(tmp_path, "raise_user_error", 1, max_attempts=3)

    with pytest.raises(JobFailedError) as info:
        executor.run_stage(stage, indexes=[0], on_event=events.append)

    err = info.value
    assert err.user_error is True
    assert err.kind == "BadRecordError"
    assert str(err) == "record 7 of task 0 is not valid JSON: fix the input file"
    assert runs(tmp_path) == {0: [1]}
    assert [(e.kind, e.attempt) for e in events] == [("started", 1), ("failed", 1)]
    error = events[1].error
    assert error is not None
    assert (error.retryable, error.user_error) == (False, True)


def test_a_user_error_is_retried_when_the_stage_allows_it(tmp_path, make_executor):
    executor = make_executor(2)
    stage = spec(tmp_path, "raise_user_error", 1, max_attempts=3, retry_user_errors=True)

    with pytest.raises(JobFailedError) as info:
        executor.run_stage(stage, indexes=[0])

    err = info.value
    assert err.user_error is True
    assert str(err) == (
        "record 7 of task 0 is not valid JSON: fix the input file\n"
        "(the task failed on all 3 attempts)"
    )
    assert runs(tmp_path) == {0: [1, 2, 3]}


def test_an_unexpected_exception_is_an_internal_error_and_is_retried(tmp_path, make_executor):
    executor = make_executor(1)
    events: list[TaskEvent] = []
    stage = spec(tmp_path, "zero_division_on_first_attempt", 1, max_attempts=2)

    results = executor.run_stage(stage, indexes=[0], on_event=events.append)

    assert results[0]["attempt"] == 2
    # The worker process survives an exception in a task.
    assert runs(tmp_path)[0] == [1, 2]
    assert len({line.split()[1] for line in (tmp_path / "ran-0").read_text().splitlines()}) == 1
    (failed,) = (e for e in events if e.kind == "failed")
    assert failed.error is not None
    assert failed.error.kind == "ZeroDivisionError"
    assert (failed.error.retryable, failed.error.user_error) == (True, False)
    message = failed.error.message
    assert message.startswith("internal error in mrk8s (a bug):\nTraceback (most recent call last)")
    assert "in _divide" in message
    assert message.endswith("ZeroDivisionError: division by zero")


def test_a_failed_task_is_retried_on_another_worker_where_possible(tmp_path, make_executor):
    executor = make_executor(2)
    stage = spec(tmp_path, "zero_division_on_first_attempt", 1, max_attempts=2)

    results = executor.run_stage(stage, indexes=[0])

    assert results[0]["attempt"] == 2
    pids = [line.split()[1] for line in (tmp_path / "ran-0").read_text().splitlines()]
    assert len(pids) == 2
    assert pids[0] != pids[1], "the retry ran on the worker it had just failed on"


def test_an_unexpected_exception_on_every_attempt_fails_with_its_traceback(tmp_path, make_executor):
    executor = make_executor(1)
    stage = spec(tmp_path, "raise_zero_division", 1, name="reduce", max_attempts=2)

    with pytest.raises(JobFailedError) as info:
        executor.run_stage(stage, indexes=[0])

    err = info.value
    assert err.user_error is False
    assert err.kind == "ZeroDivisionError"
    assert str(err).startswith("internal error in mrk8s (a bug): (stage=reduce, task=0)\n")
    assert "ZeroDivisionError: division by zero" in str(err)
    assert "task failed on all 2 attempts; giving up" in str(err)
    assert runs(tmp_path) == {0: [1, 2]}


# -- shutting down -------------------------------------------------------------------------


def test_close_stops_every_worker(tmp_path, make_executor):
    executor = make_executor(3)
    executor.run_stage(spec(tmp_path, "echo", 3), indexes=range(3))
    pids = executor.worker_pids()
    assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)

    executor.close()

    assert executor.worker_pids() == []
    assert not any(psutil.pid_exists(p) for p in pids)


def test_leaving_the_with_block_stops_every_worker(tmp_path):
    with LocalExecutor(2) as executor:
        executor.run_stage(spec(tmp_path, "echo", 2), indexes=range(2))
        pids = executor.worker_pids()

    assert len(pids) == 2
    assert not any(psutil.pid_exists(p) for p in pids)
    assert worker_processes() == []


def test_leaving_the_with_block_after_a_failure_stops_every_worker(tmp_path):
    with pytest.raises(JobFailedError), LocalExecutor(2) as executor:
        executor.run_stage(spec(tmp_path, "echo", 2), indexes=range(2))
        pids = executor.worker_pids()
        executor.run_stage(spec(tmp_path, "raise_user_error", 2), indexes=range(2))

    assert len(pids) == 2
    assert not any(psutil.pid_exists(p) for p in pids)
    assert worker_processes() == []
