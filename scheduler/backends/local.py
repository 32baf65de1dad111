"""The local backend: a pool of long-lived worker processes on this machine.

Called by the driver for ``--backend local`` (the default). Each worker is a
separate Python process (``python -m scheduler.backends._local_worker``) that
receives task messages over a pipe and runs the same task function that
``mrk8s worker`` runs; nothing is pickled and the driver's ``__main__`` is
never re-imported. A worker that dies (killed, out of memory) is replaced and
its task retried on another worker, up to the stage's ``max_attempts``.
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
import subprocess
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import scheduler
from scheduler.errors import JobFailedError
from scheduler.stage import EventSink, StageSpec, TaskError, TaskEvent

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(scheduler.__file__)))


class _Worker:
    """One worker process and the two pipe ends the driver holds."""

    def __init__(self, number: int, env: Mapping[str, str]) -> None:
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
        self.task: tuple[int, int] | None = None  # (index, attempt) while busy

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_conn.send_bytes(json.dumps(message).encode())

    def recv(self) -> dict[str, Any]:
        return dict(json.loads(self.recv_conn.recv_bytes()))

    def stop(self, *, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                with contextlib.suppress(OSError):
                    self.send_conn.send_bytes(b"null")
        for conn in (self.send_conn, self.recv_conn):
            conn.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalExecutor:
    """Runs stages on ``num_workers`` local processes (default: CPU count).

    State: the live workers, created on first use and reused across stages
    and steps, so the user's script and the plan are loaded once per worker.
    """

    name = "local"

    def __init__(self, num_workers: int | None = None, *, env: Mapping[str, str] | None = None):
        self.num_workers = max(1, num_workers or os.cpu_count() or 1)
        base = dict(os.environ if env is None else env)
        path = base.get("PYTHONPATH", "")
        base["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        self._env = base
        self._workers: list[_Worker] = []
        self._spawned = 0
        self.node = socket.gethostname()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def _spawn(self) -> _Worker:
        self._spawned += 1
        worker = _Worker(self._spawned, self._env)
        self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        worker.stop(kill=True)
        self._workers.remove(worker)

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
        emit = on_event or (lambda event: None)
        queue: collections.deque[tuple[int, int]] = collections.deque((i, 1) for i in indexes)
        results: dict[int, dict[str, Any]] = {}
        for w in [w for w in self._workers if w.proc.poll() is not None]:
            self._replace(w)  # died while idle (killed between stages, out of memory)
        while len(self._workers) < min(self.num_workers, len(queue)):
            self._spawn()
        try:
            while queue or any(w.task for w in self._workers):
                for w in self._workers:
                    if w.task is None and queue:
                        index, attempt = queue.popleft()
                        w.task = (index, attempt)
                        emit(TaskEvent(stage.name, index, attempt, "started", worker=w.name))
                        # If the worker has just died, sending fails: wait() below then finds
                        # its pipe closed and handles it as a lost worker (retry on a new one).
                        with contextlib.suppress(OSError):
                            w.send(
                                {
                                    "entrypoint": stage.entrypoint,
                                    "payload": dict(stage.payload),
                                    "index": index,
                                    "attempt": attempt,
                                }
                            )
                busy = {w.recv_conn: w for w in self._workers if w.task is not None}
                for conn in wait(list(busy)):
                    assert isinstance(conn, Connection)
                    w = busy[conn]
                    assert w.task is not None
                    index, attempt = w.task
                    try:
                        message = w.recv()
                    except (EOFError, OSError):
                        code = w.proc.wait()
                        error = TaskError(
                            "WorkerLostError",
                            f"worker process {w.name} (pid {w.proc.pid}) died with exit code "
                            f"{code} while running task {index} of {stage.name}",
                            retryable=True,
                            user_error=False,
                        )
                        self._replace(w)
                        self._spawn()
                    else:
                        w.task = None
                        if message.get("ok"):
                            result = dict(message["result"])
                            results[index] = result
                            emit(
                                TaskEvent(
                                    stage.name, index, attempt, "finished", result, worker=w.name
                                )
                            )
                            continue
                        error = TaskError.from_json(message["error"])
                    emit(
                        TaskEvent(stage.name, index, attempt, "failed", error=error, worker=w.name)
                    )
                    may_retry = error.retryable or (stage.retry_user_errors and error.user_error)
                    if may_retry and attempt < stage.max_attempts:
                        logger.warning(
                            "task %d of %s failed (attempt %d of %d), retrying: %s",
                            index,
                            stage.name,
                            attempt,
                            stage.max_attempts,
                            error.message.splitlines()[0],
                        )
                        queue.append((index, attempt + 1))
                        continue
                    raise JobFailedError.from_task_error(
                        error, stage=stage.name, index=index, attempt=attempt
                    )
        except BaseException:
            # Fail fast: stop what is still running (tasks are idempotent, and their
            # half-written files are never committed).
            for w in list(self._workers):
                if w.task is not None:
                    self._replace(w)
            raise
        return results
