"""Stages of indexed tasks, their results, and the executor protocol.

A stage is N independent tasks with indexes 0..N-1 that run the same
function (the idea of a Kubernetes Indexed Job). The scheduler does not know
what the function does: it gets a dotted path (``module:function``) called as
``function(payload, index, attempt)`` in a worker, returning a JSON-able
dict, and, for container backends, the command that does the same.

Used by the driver in ``mrk8s`` (which builds stages) and implemented by the
backends in :mod:`scheduler.backends`.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

from scheduler import speculation
from shuffle.errors import MRError

TaskIndex = NewType("TaskIndex", int)

TaskFn = Callable[[Mapping[str, Any], int, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What to run: ``num_tasks`` calls of ``entrypoint`` with ``payload``.

    ``command`` is the same work as a container command (``--index`` is
    appended, or taken from ``$JOB_COMPLETION_INDEX``).

    Retries: a task is retried after a retryable failure (and after a user
    error if ``retry_user_errors``) until ``max_attempts`` of its attempts
    have failed.

    Speculative execution (off unless ``speculative``): when a worker is idle
    and no task is waiting, a task whose attempt has run at least
    ``speculative_factor`` times the median duration of the tasks already
    finished in this run, and at least ``speculative_min_seconds``, once
    ``speculative_min_finished`` tasks have finished, gets ONE extra attempt
    (a new attempt number) on that worker. The first attempt to succeed is the
    task's result; the other is cancelled. A failed attempt counts towards
    ``max_attempts`` as any other, but while the task's other attempt is still
    running it neither fails the stage nor starts a retry. A task is
    speculated on at most once per ``run_stage``, and never without an idle
    worker (so never on a pool of one).

    ``cleanup_entrypoint`` (``module:function``, optional) removes what a
    cancelled attempt wrote: it is called as ``function(payload, index,
    attempt)`` in a fresh worker (the same kind of process and environment as
    the tasks), after the cancelled attempt's process is gone, and before
    ``run_stage`` returns. Its failure is logged, never fatal. Beware that the
    cancelled attempt may have committed in the instant before it was
    stopped: the cleanup must not remove files that a commit record names.
    """

    name: str
    num_tasks: int
    entrypoint: str
    payload: Mapping[str, Any]
    command: tuple[str, ...] = ()
    #: Attempts of a task that may fail (retryably) before the stage fails.
    max_attempts: int = 3
    #: Retry a task after a user error too (by default a user error fails at once).
    retry_user_errors: bool = False
    #: Run one extra attempt of a straggling task on an idle worker.
    speculative: bool = False
    #: A straggler has run this many times the median duration of finished tasks.
    speculative_factor: float = 2.0
    #: ... and at least this many seconds (a second attempt re-reads its input).
    speculative_min_seconds: float = 5.0
    #: ... and this many tasks of the run have finished (all but one in smaller runs).
    speculative_min_finished: int = 2
    #: ``module:function(payload, index, attempt)`` removing a cancelled attempt's files.
    cleanup_entrypoint: str = ""
    #: ``module:function(payload, index, attempt)`` returning a finished task's result
    #: from storage, for backends whose tasks run where their return value cannot
    #: reach the driver (Kubernetes pods); it raises if the task has no result.
    result_entrypoint: str = ""
    #: The job, step and stage kind (``map``/``reduce``) the stage belongs to: opaque
    #: names for backends that name and label objects after them (Kubernetes).
    job_id: str = ""
    step: int = 0
    kind: str = ""

    def __post_init__(self) -> None:
        self.speculation_policy()  # reject bad knobs when the spec is built, not mid-stage

    def speculation_policy(self) -> speculation.Policy:
        """The ``speculative_*`` knobs as a :class:`scheduler.speculation.Policy`."""
        return speculation.Policy(
            factor=self.speculative_factor,
            min_seconds=self.speculative_min_seconds,
            min_finished=self.speculative_min_finished,
        )


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt failed, in a form that crosses process boundaries."""

    kind: str  # class name of the error
    message: str  # rendered, user-facing text
    retryable: bool
    user_error: bool

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskError:
        if isinstance(exc, MRError):
            from shuffle.errors import UserError

            return cls(type(exc).__name__, str(exc), exc.retryable, isinstance(exc, UserError))
        text = "".join(traceback.format_exception(exc)).rstrip()
        return cls(type(exc).__name__, f"internal error in mrk8s (a bug):\n{text}", True, False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "user_error": self.user_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskError:
        return cls(
            str(data["kind"]),
            str(data["message"]),
            bool(data["retryable"]),
            bool(data["user_error"]),
        )


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A progress event about one attempt of a task.

    Every attempt that a backend starts emits ``started`` and then exactly one
    of ``finished`` (its result is the task's), ``failed`` (``error`` says
    why) or ``cancelled`` (another attempt of the task won and its worker was
    stopped; or, on Kubernetes, its pod was evicted or preempted, which does
    not count as a failure: the task runs again). A speculative attempt emits
    ``speculated`` just before its ``started``, so each task has at most one
    ``finished``. When a stage
    fails, its still-running attempts are stopped without an event.
    """

    stage: str
    index: int
    attempt: int
    kind: str  # "started" | "speculated" | "finished" | "failed" | "cancelled" | "skipped"
    result: Mapping[str, Any] = field(default_factory=dict)
    error: TaskError | None = None
    worker: str = ""


EventSink = Callable[[TaskEvent], None]


class Executor(Protocol):
    """A backend: runs the indexed tasks of a stage and returns their results.

    Backends are context managers that release their processes, actors or
    Jobs on exit. ``run_stage`` runs the given ``indexes`` (others are already
    done), retrying retryable failures up to ``stage.max_attempts``, and
    raises :class:`scheduler.errors.JobFailedError` when a task cannot succeed.
    ``placement`` maps a task index to the node it should run on, if any.
    """

    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run_stage(
        self,
        stage: StageSpec,
        *,
        indexes: Sequence[int],
        placement: Mapping[int, str] | None = None,
        on_event: EventSink | None = None,
    ) -> dict[int, dict[str, Any]]: ...

    def nodes(self) -> dict[str, int]:
        """The nodes tasks can run on now, and how many tasks each runs at once.

        The capacity that reducer placement divides among the nodes; a node
        missing here is gone, with whatever was kept on its disk.
        """
        ...


_ENTRYPOINTS: dict[str, TaskFn] = {}


def resolve(entrypoint: str) -> TaskFn:
    """Import ``module:function`` once per process."""
    fn = _ENTRYPOINTS.get(entrypoint)
    if fn is None:
        module_name, _, attr = entrypoint.partition(":")
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
        _ENTRYPOINTS[entrypoint] = fn
    return fn


def run_task(
    entrypoint: str, payload: Mapping[str, Any], index: int, attempt: int
) -> dict[str, Any]:
    """Run one task in this process: the body every backend's worker shares."""
    return resolve(entrypoint)(payload, index, attempt)


def pending(num_tasks: int, done: Iterable[int]) -> list[int]:
    """Task indexes still to run."""
    finished = set(done)
    return [i for i in range(num_tasks) if i not in finished]
