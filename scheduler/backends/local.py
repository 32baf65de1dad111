"""The local backend: a pool of long-lived worker processes on this machine.

Called by the driver for ``--backend local`` (the default). Each worker is a
separate Python process (``python -m scheduler.backends._local_worker``) that
receives task messages over a pipe and runs the same task function that
``mrk8s worker`` runs; nothing is pickled and the driver's ``__main__`` is
never re-imported. A worker that dies (killed, out of memory) is replaced and
its task retried on another worker, up to the stage's ``max_attempts``.
With ``StageSpec.speculative``, an idle worker runs an extra attempt of a
straggler (chosen by :mod:`scheduler.speculation`); when one attempt wins,
the other's worker is killed and replaced, and the replacement first runs the
stage's ``cleanup_entrypoint`` for the cancelled attempt.
Workers write their own stdout to the driver's stderr, so a user's ``print``
never mixes with results on stdout.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import scheduler
from scheduler import speculation
from scheduler.errors import JobFailedError
from scheduler.stage import EventSink, StageSpec, TaskError, TaskEvent

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(scheduler.__file__)))


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(slots=True)
class _Assignment:
    """What a busy worker is doing: an attempt of a task, or the cleanup of a cancelled one."""

    index: int
    attempt: int
    started: float  # time.monotonic() when it was sent
    is_cleanup: bool = False


class _Worker:
    """One worker process and the two pipe ends the driver holds."""

    def __init__(self, number: int, env: Mapping[str, str], preload: Sequence[str]) -> None:
        child_in_r, parent_out_w = os.pipe()
        parent_in_r, child_out_w = os.pipe()
        self.number = number
        self.name = f"local-{number}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.backends._local_worker",
                str(child_in_r),
                str(child_out_w),
                *preload,
            ],
            pass_fds=(child_in_r, child_out_w),
            stdin=subprocess.DEVNULL,
            stdout=2,  # the user's prints go to our stderr, never to the results on stdout
            env=dict(env),
        )
        os.close(child_in_r)
        os.close(child_out_w)
        self.send_conn = Connection(parent_out_w, readable=False)
        self.recv_conn = Connection(parent_in_r, writable=False)
        self.task: _Assignment | None = None  # what it is doing while busy

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_conn.send_bytes(json.dumps(message).encode())

    def recv(self) -> dict[str, Any]:
        return dict(json.loads(self.recv_conn.recv_bytes()))

    def ask_to_exit(self) -> None:
        """Tell an idle worker to exit, without waiting for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send_conn.send_bytes(b"null")

    def stop(self, *, kill: bool = False) -> None:
        if not kill:
            self.ask_to_exit()
        elif self.proc.poll() is None:
            self.proc.kill()
        self.reap()

    def reap(self) -> None:
        """Close the pipes and wait for the process to end (killed after 10 s)."""
        for conn in (self.send_conn, self.recv_conn):
            conn.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalExecutor:
    """Runs stages on ``num_workers`` local processes (default: CPU count).

    State: the live workers, created on first use (or by :meth:`start`) and
    reused across stages and steps, so the user's script and the plan are
    loaded once per worker.

    ``preload``: what each new worker imports before it waits for its first
    task, as ``module`` or ``module:function`` (then called with no
    arguments); a failure there is left for the first task to report. Each
    worker's compute libraries get ``OMP_NUM_THREADS`` = CPUs / workers
    (at least 1) unless the environment sets it: Arrow and numpy's BLAS size
    their thread pools by it, and a pool per process on every CPU only makes
    the workers fight over the cores.
    """

    name = "local"

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        env: Mapping[str, str] | None = None,
        preload: Sequence[str] = (),
    ):
        cpus = cpu_count()
        self.num_workers = max(1, num_workers or cpus)
        base = dict(os.environ if env is None else env)
        path = base.get("PYTHONPATH", "")
        base["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        base.setdefault("OMP_NUM_THREADS", str(max(1, cpus // self.num_workers)))
        self._env = base
        self._preload = tuple(preload)
        self._workers: list[_Worker] = []
        self._spawned = 0
        self.node = socket.gethostname()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start all ``num_workers`` workers now, rather than at the first stage.

        A caller with work of its own to do first (imports, planning) calls
        this before it, so that the workers' start-up (Python, the preloads)
        runs alongside.
        """
        while len(self._workers) < self.num_workers:
            self._spawn()

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:  # all told first, so that they wind down side by side
            w.ask_to_exit()
        for w in workers:
            w.reap()

    def _spawn(self) -> _Worker:
        self._spawned += 1
        worker = _Worker(self._spawned, self._env, self._preload)
        self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        worker.stop(kill=True)
        self._workers.remove(worker)

    def nodes(self) -> dict[str, int]:
        """This machine, running ``num_workers`` tasks at once."""
        return {self.node: self.num_workers}

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for tests and monitoring)."""
        return [w.proc.pid for w in self._workers]

    def run_stage(
        self,
        stage: StageSpec,
        *,
        indexes: Sequence[int],
        placement: Mapping[int, str] | None = None,
        on_event: EventSink | None = None,
    ) -> dict[int, dict[str, Any]]:
        run = _StageRun(self, stage, indexes, on_event or (lambda event: None))
        for w in [w for w in self._workers if w.proc.poll() is not None]:
            self._replace(w)  # died while idle (killed between stages, out of memory)
        while len(self._workers) < min(self.num_workers, len(run.queue)):
            self._spawn()
        try:
            run.loop()
        except BaseException:
            # Fail fast: stop what is still running (tasks are idempotent, and their
            # half-written files are never committed).
            for w in list(self._workers):
                if w.task is not None:
                    self._replace(w)
            raise
        return run.results


class _StageRun:
    """One ``run_stage`` call: hands attempts to the pool's workers and collects results.

    State: ``queue`` of (index, attempt) waiting for a worker; ``results`` of
    the finished tasks; ``last_attempt``, the highest attempt number handed out
    per task; ``failures``, failed attempts per task (what ``max_attempts``
    bounds); ``speculated``, the tasks that got their one extra attempt;
    ``durations`` of the finished tasks, whose median tells a straggler. What
    each worker is doing lives on the worker (``_Worker.task``).
    """

    def __init__(
        self, pool: LocalExecutor, stage: StageSpec, indexes: Sequence[int], emit: EventSink
    ) -> None:
        self.pool = pool
        self.stage = stage
        self.emit = emit
        self.num_tasks = len(indexes)
        self.queue: collections.deque[tuple[int, int]] = collections.deque((i, 1) for i in indexes)
        self.results: dict[int, dict[str, Any]] = {}
        self.last_attempt: dict[int, int] = dict.fromkeys(indexes, 1)
        self.failures: collections.Counter[int] = collections.Counter()
        #: Workers (by name) each task has failed on: a retry goes elsewhere if it can.
        self.failed_on: dict[int, set[str]] = {}
        self.speculated: set[int] = set()
        self.durations: list[float] = []
        self.policy = stage.speculation_policy() if stage.speculative else None

    def loop(self) -> None:
        while self.queue or any(w.task is not None for w in self.pool._workers):
            self._dispatch()
            busy = {w.recv_conn: w for w in self.pool._workers if w.task is not None}
            for conn in wait(list(busy), self._timeout()):
                assert isinstance(conn, Connection)
                w = busy[conn]
                if w.task is None or w not in self.pool._workers:
                    continue  # its attempt was cancelled earlier in this round
                self._receive(w)

    # -- handing out work ------------------------------------------------------------

    def _start(self, w: _Worker, index: int, attempt: int, *, is_cleanup: bool = False) -> None:
        w.task = _Assignment(index, attempt, time.monotonic(), is_cleanup)
        if not is_cleanup:
            self.emit(TaskEvent(self.stage.name, index, attempt, "started", worker=w.name))
        # If the worker has just died, sending fails: wait() then finds its pipe
        # closed and handles it as a lost worker (retry on a new one).
        with contextlib.suppress(OSError):
            w.send(
                {
                    "entrypoint": self.stage.cleanup_entrypoint
                    if is_cleanup
                    else self.stage.entrypoint,
                    "payload": dict(self.stage.payload),
                    "index": index,
                    "attempt": attempt,
                }
            )

    def _idle(self) -> list[_Worker]:
        return [w for w in self.pool._workers if w.task is None]

    def _pick(self, w: _Worker) -> int | None:
        """Position in the queue of the task ``w`` should run next, if any.

        A retry avoids the workers its task already failed on, as long as some
        other worker could still run it.
        """
        for pos, (index, _) in enumerate(self.queue):
            if w.name not in self.failed_on.get(index, ()):
                return pos
        first = self.queue[0][0]
        elsewhere = [
            x for x in self.pool._workers if x is not w and x.name not in self.failed_on[first]
        ]
        return None if elsewhere else 0

    def _dispatch(self) -> None:
        for w in self._idle():
            if not self.queue:
                break
            pos = self._pick(w)
            if pos is None:
                continue
            index, attempt = self.queue[pos]
            del self.queue[pos]
            self._start(w, index, attempt)
        if self.policy is None or self.queue:
            return
        for w in self._idle():
            if not self._speculate(w):
                return

    def _speculate(self, w: _Worker) -> bool:
        """Start an extra attempt of the worst straggler on idle ``w``, if there is one."""
        assert self.policy is not None
        limit = speculation.threshold(self.policy, self.durations, num_tasks=self.num_tasks)
        if limit is None:
            return False
        running = self._speculable()
        index = speculation.pick(running, threshold=limit, now=time.monotonic())
        if index is None:
            return False
        self.last_attempt[index] += 1
        attempt = self.last_attempt[index]
        self.speculated.add(index)
        logger.info(
            "task %d of %s has run %.1f s (median of finished tasks %.1f s): "
            "speculative attempt %d on %s",
            index,
            self.stage.name,
            time.monotonic() - running[index],
            statistics.median(self.durations),
            attempt,
            w.name,
        )
        self.emit(TaskEvent(self.stage.name, index, attempt, "speculated", worker=w.name))
        self._start(w, index, attempt)
        return True

    def _speculable(self) -> dict[int, float]:
        """Running tasks that may still get an extra attempt, with their attempt's start."""
        return {
            w.task.index: w.task.started
            for w in self.pool._workers
            if w.task is not None and not w.task.is_cleanup and w.task.index not in self.speculated
        }

    def _timeout(self) -> float | None:
        """How long to wait for messages: until the next straggler could be speculated on."""
        if self.policy is None or self.queue or not self._idle():
            return None
        limit = speculation.threshold(self.policy, self.durations, num_tasks=self.num_tasks)
        if limit is None:
            return None  # the next finished task will wake us
        return speculation.seconds_until_next(
            self._speculable(), threshold=limit, now=time.monotonic()
        )

    # -- collecting results --------------------------------------------------------------

    def _receive(self, w: _Worker) -> None:
        job = w.task
        assert job is not None
        try:
            message = w.recv()
        except (EOFError, OSError):
            code = w.proc.wait()
            self.pool._replace(w)
            self.pool._spawn()
            what = "cleaning up after" if job.is_cleanup else "running"
            error = TaskError(
                "WorkerLostError",
                f"worker process {w.name} (pid {w.proc.pid}) died with exit code "
                f"{code} while {what} task {job.index} of {self.stage.name}",
                retryable=True,
                user_error=False,
            )
        else:
            w.task = None
            if message.get("ok"):
                if not job.is_cleanup:
                    self._finished(w, job, dict(message["result"]))
                return
            error = TaskError.from_json(message["error"])
        if job.is_cleanup:
            # What a cancelled attempt wrote is never committed, so it is only garbage.
            logger.warning(
                "could not remove the files of cancelled attempt %d of task %d of %s "
                "(cleanup %s): %s: %s",
                job.attempt,
                job.index,
                self.stage.name,
                self.stage.cleanup_entrypoint,
                error.kind,
                error.message,
            )
            return
        self._failed(w, job, error)

    def _running(self, index: int) -> list[_Worker]:
        return [
            w
            for w in self.pool._workers
            if w.task is not None and not w.task.is_cleanup and w.task.index == index
        ]

    def _finished(self, w: _Worker, job: _Assignment, result: dict[str, Any]) -> None:
        self.results[job.index] = result
        self.durations.append(time.monotonic() - job.started)
        self.emit(
            TaskEvent(self.stage.name, job.index, job.attempt, "finished", result, worker=w.name)
        )
        for other in self._running(job.index):
            self._cancel(other)

    def _cancel(self, w: _Worker) -> None:
        """Stop the losing attempt on ``w``, replace its worker, and clean up after it."""
        job = w.task
        assert job is not None
        w.task = None
        logger.info(
            "task %d of %s: attempt %d lost, cancelling it", job.index, self.stage.name, job.attempt
        )
        self.emit(TaskEvent(self.stage.name, job.index, job.attempt, "cancelled", worker=w.name))
        # Killed and reaped before the cleanup starts, so it writes nothing afterwards.
        self.pool._replace(w)
        fresh = self.pool._spawn()
        if self.stage.cleanup_entrypoint:
            self._start(fresh, job.index, job.attempt, is_cleanup=True)

    def _failed(self, w: _Worker, job: _Assignment, error: TaskError) -> None:
        index, stage = job.index, self.stage
        self.emit(TaskEvent(stage.name, index, job.attempt, "failed", error=error, worker=w.name))
        self.failures[index] += 1
        self.failed_on.setdefault(index, set()).add(w.name)
        if self._running(index):
            # The task's other attempt may still succeed: neither fail nor retry yet.
            logger.warning(
                "task %d of %s: attempt %d failed while another attempt runs: %s",
                index,
                stage.name,
                job.attempt,
                error.message.splitlines()[0],
            )
            return
        may_retry = error.retryable or (stage.retry_user_errors and error.user_error)
        if may_retry and self.failures[index] < stage.max_attempts:
            logger.warning(
                "task %d of %s failed (attempt %d of %d), retrying: %s",
                index,
                stage.name,
                self.failures[index],
                stage.max_attempts,
                error.message.splitlines()[0],
            )
            self.last_attempt[index] += 1
            self.queue.append((index, self.last_attempt[index]))
            if len(self.pool._workers) < self.pool.num_workers:
                self.pool._spawn()  # so that the retry can run on another worker
            return
        raise JobFailedError.from_task_error(
            error, stage=stage.name, index=index, attempt=self.failures[index]
        )
