"""User-facing errors of mrk8s (the top layer's part of the hierarchy).

The root and the data-plane errors live in :mod:`shuffle.errors` so that the
lowest layer can raise them; this module re-exports them and adds the errors
a user meets while defining and running a job::

    MRError
    +-- UserError                 exit code 2, never retried
    |   +-- KeyEncodingError      (shuffle) a key/value the shuffle cannot carry
    |   +-- UsageError            a bad command-line option or argument
    |   +-- JobDefinitionError    the script has no job class, or two, or a bad step
    |   +-- InputError            no such input, or an input that cannot be read
    |   +-- OutputError           the output path is not empty, or not writable
    |   |   +-- ResultEncodingError   a result the output format cannot represent
    |   +-- UserCodeError         the user's own mapper/reducer/... raised
    |   +-- ClusterError          (scheduler) a cluster that cannot be used as configured
    +-- ShuffleError, CorruptSegmentError, StoreError   (shuffle) retryable
    +-- TaskFailedError, WorkerLostError                (scheduler) retryable
"""

from __future__ import annotations

from scheduler.errors import ClusterError, JobFailedError, TaskFailedError, WorkerLostError
from shuffle.errors import (
    CorruptSegmentError,
    KeyEncodingError,
    MRError,
    ShuffleError,
    StoreError,
    UserError,
)

__all__ = [
    "ClusterError",
    "CorruptSegmentError",
    "InputError",
    "JobDefinitionError",
    "JobFailedError",
    "KeyEncodingError",
    "MRError",
    "OutputError",
    "ResultEncodingError",
    "ShuffleError",
    "StoreError",
    "TaskFailedError",
    "UsageError",
    "UserCodeError",
    "UserError",
    "WorkerLostError",
]


class UsageError(UserError):
    """A command-line option or argument is wrong."""


class JobDefinitionError(UserError):
    """The job script does not define a usable job."""


class InputError(UserError):
    """An input path does not exist or cannot be read."""


class OutputError(UserError):
    """The output location is not usable (not empty, not writable, ...)."""


class ResultEncodingError(OutputError):
    """A key or value a job yields as its result cannot be written in the output format."""


class UserCodeError(UserError):
    """The user's own function raised; carries the user's traceback text.

    ``user_traceback`` holds the formatted frames of the user's code (framework
    frames removed); ``__str__`` renders it after the one-line summary.
    """

    def __init__(self, message: str, *, user_traceback: str = "", **context: object) -> None:
        super().__init__(message, **context)
        self.user_traceback = user_traceback

    def __str__(self) -> str:
        head = super().__str__()
        if self.user_traceback:
            return f"{head}\n{self.user_traceback.rstrip()}"
        return head
