"""Errors raised by the scheduler layer (see :mod:`shuffle.errors` for the tree)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shuffle.errors import MRError, UserError

if TYPE_CHECKING:
    from scheduler.stage import TaskError


class TaskFailedError(MRError):
    """A task failed for a reason that is not the user's (retryable)."""


class WorkerLostError(TaskFailedError):
    """The process running a task died (killed, out of memory, ...)."""


class JobFailedError(MRError):
    """A stage could not complete: a task failed on every allowed attempt.

    ``user_error`` tells a mistake of the user's (bad input, an exception in
    their code) from an infrastructure failure; ``kind`` is the class name of
    the task's own error.
    """

    retryable = False

    def __init__(
        self, message: str, *, user_error: bool = False, kind: str = "", **context: object
    ) -> None:
        super().__init__(message, **context)
        self.user_error = user_error
        self.kind = kind

    @classmethod
    def from_task_error(
        cls, error: TaskError, *, stage: str, index: int, attempt: int
    ) -> JobFailedError:
        if error.user_error:
            # The task's message already names the step, stage, task and split.
            message = error.message
            if attempt > 1:
                message += f"\n(the task failed on all {attempt} attempts)"
            return cls(message, user_error=True, kind=error.kind)
        return cls(
            f"{error.message}\n(task failed on all {attempt} attempts; giving up)",
            user_error=False,
            kind=error.kind,
            stage=stage,
            task=index,
        )


class ClusterError(UserError):
    """The cluster cannot be used as configured: no kubeconfig, an API server that
    cannot be reached, a missing namespace, missing rights (not retried: fix the
    configuration, then run the same command again)."""
