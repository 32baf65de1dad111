"""Task functions that tests/scheduler runs inside real local worker processes.

Each is called by :func:`scheduler.stage.run_task` as
``fn(payload, index, attempt) -> dict`` in a worker started with the repository
root on ``PYTHONPATH``, so this module is imported there as
``tests.scheduler.tasks_for_tests``. Whatever must happen only once (dying on
the first attempt) is made deterministic with a marker file in
``payload["dir"]``, a temporary directory owned by the test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shuffle.errors import UserError

MODULE = __name__


def entry(name: str) -> str:
    """The ``module:function`` entry point of a task in this module."""
    return f"{MODULE}:{name}"


class BadRecordError(UserError):
    """A user mistake raised by a task: never retried unless the stage says so."""


def _ran(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Log the run in ``dir/ran-{index}`` (one line per attempt) and describe it."""
    with open(Path(payload["dir"]) / f"ran-{index}", "a") as f:
        f.write(f"{attempt} {os.getpid()}\n")
    return {"index": index, "attempt": attempt, "pid": os.getpid(), "tag": payload.get("tag")}


def echo(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Succeed, saying which task and attempt ran in which process."""
    return _ran(payload, index, attempt)


def die_on_first_attempt(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Kill this worker process the first time task ``index`` runs; succeed afterwards.

    ``payload["how"]`` is ``"exit"`` (``os._exit(9)``) or ``"sigkill"``. The
    marker file holds the PID of the process that died.
    """
    marker = Path(payload["dir"]) / f"died-{index}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        _die(payload["how"])
    return _ran(payload, index, attempt)


def always_die(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Kill this worker process on every attempt."""
    _ran(payload, index, attempt)
    _die(payload.get("how", "exit"))
    raise AssertionError("unreachable")


def _die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(9)


def raise_user_error(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Fail with a user error whose message names the task."""
    _ran(payload, index, attempt)
    raise BadRecordError(f"record 7 of task {index} is not valid JSON: fix the input file")


def _divide(n: int) -> float:
    return n / 0


def raise_zero_division(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Fail with an unexpected exception (one that is not an MRError)."""
    _ran(payload, index, attempt)
    return {"value": _divide(index)}


def zero_division_on_first_attempt(
    payload: Mapping[str, Any], index: int, attempt: int
) -> dict[str, Any]:
    """Raise ZeroDivisionError on attempt 1 only; the worker process survives it."""
    if attempt == 1:
        _ran(payload, index, attempt)
        _divide(index)
    return _ran(payload, index, attempt)


def chatty(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Write to stdout (through ``print`` and the raw file descriptor) and succeed."""
    print(f"chatty print from task {index}")
    print('{"ok": false, "error": "this line only looks like a reply"}')
    sys.stdout.flush()
    os.write(1, f"chatty fd 1 from task {index}\n".encode())
    return _ran(payload, index, attempt)


def environment(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Report what the worker process sees: its environment and where this module is."""
    return {
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "marker": os.environ.get("MRK8S_TEST_MARKER", ""),
        "module_file": __file__,
        "cwd": os.getcwd(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def environ(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """The worker's values of the environment variables named in ``payload["names"]``."""
    return {"env": {name: os.environ.get(name) for name in payload["names"]}}


#: What :func:`preload` did in this process, before any task ran.
PRELOADED: list[str] = []


def preload() -> None:
    """A worker preload: leaves a trace that :func:`preloaded` reports."""
    PRELOADED.append(f"preloaded in {os.getpid()}")


def preloaded(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """What ran in this worker before its tasks: what :func:`preload` left."""
    return {"preloaded": list(PRELOADED), "pid": os.getpid()}


# -- stragglers (speculative execution) ---------------------------------------------------


def straggler(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Task ``payload["slow"]`` straggles; the others sleep ``payload.get("seconds", 0)``.

    Each attempt of the slow task writes its PID to the marker
    ``slow-{index}-{attempt}``. Attempt 1 sleeps ``payload["first_seconds"]`` and
    then does ``payload.get("first", "ok")``;
    every later attempt sleeps ``payload.get("later_seconds", 0)`` and does
    ``payload.get("later", "ok")``. What an attempt does is ``"ok"`` (succeed),
    ``"user_error"`` (raise :class:`BadRecordError`) or ``"sigkill"``/``"exit"``
    (kill this worker). Keying on the attempt number, not on which run comes
    first, keeps the roles fixed even when a loaded machine starts attempt 1 late.
    """
    if index != payload["slow"]:
        time.sleep(payload.get("seconds", 0))
        return _ran(payload, index, attempt)
    (Path(payload["dir"]) / f"slow-{index}-{attempt}").write_text(str(os.getpid()))
    if attempt == 1:
        seconds, outcome = payload["first_seconds"], payload.get("first", "ok")
    else:
        seconds, outcome = payload.get("later_seconds", 0), payload.get("later", "ok")
    time.sleep(seconds)
    if outcome == "user_error":
        _ran(payload, index, attempt)
        raise BadRecordError(f"attempt {attempt} of task {index} found a bad record")
    if outcome != "ok":
        _die(outcome)
    return _ran(payload, index, attempt)


def remove_attempt(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """A cleanup entry point: record in ``cleaned-{index}-{attempt}`` that it ran, and how.

    It notes whether the process that ran the cancelled attempt (named by the
    marker ``slow-{index}-{attempt}`` of :func:`straggler`) was still alive when
    the cleanup started.
    """
    marker = Path(payload["dir"]) / f"slow-{index}-{attempt}"
    loser_alive = False
    if marker.exists():
        try:
            os.kill(int(marker.read_text()), 0)
            loser_alive = True
        except ProcessLookupError:
            pass
    report = {"pid": os.getpid(), "loser_alive": loser_alive}
    (Path(payload["dir"]) / f"cleaned-{index}-{attempt}").write_text(json.dumps(report))
    return report


def fail_to_remove_attempt(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """A cleanup entry point that fails."""
    raise PermissionError(f"cannot remove the files of attempt {attempt} of task {index}")
