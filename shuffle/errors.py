"""The root of mrk8s's error hierarchy, defined in the lowest layer.

``shuffle`` raises subclasses of :class:`MRError` without importing upward;
``scheduler`` and ``mrk8s`` add their own subclasses and ``mrk8s`` re-exports
the whole tree. The tree::

    MRError                       anything mrk8s raises on purpose
    +-- UserError                 the user can fix it (exit code 2, never retried)
    |   +-- KeyEncodingError      a key or value that cannot be put in the shuffle
    |   +-- (mrk8s) InputError, OutputError, JobDefinitionError, UsageError
    |   +-- (mrk8s) UserCodeError the user's own function raised
    +-- ShuffleError              the data plane failed (retryable)
    |   +-- CorruptSegmentError   a map output is truncated or damaged
    |   +-- StoreError            a store read or write failed
    +-- (scheduler) TaskFailedError, WorkerLostError

Every message names the bad value and the fix. Context (step, stage, task
index, split, attempt) is carried as attributes and rendered by ``__str__``.
"""

from __future__ import annotations


class MRError(Exception):
    """Base of every error mrk8s raises on purpose."""

    #: Whether a task that failed with this error may succeed if run again.
    retryable: bool = True

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, object] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        first, newline, rest = self.message.partition("\n")
        return f"{first} ({where}){newline}{rest}"


class UserError(MRError):
    """A mistake the user can fix: bad input, bad job definition, bad option."""

    retryable = False


class KeyEncodingError(UserError):
    """A key or value that the shuffle cannot carry."""


class ShuffleError(MRError):
    """The data plane failed; running the task again may succeed."""


class CorruptSegmentError(ShuffleError):
    """A map output segment is truncated or damaged; its map task must run again.

    ``data_path`` names the damaged map output (relative to the job directory)
    when the reader knows it, so that the caller can re-run the task that wrote it.
    """

    data_path: str = ""


class StoreError(ShuffleError):
    """A read or write through a store failed."""
