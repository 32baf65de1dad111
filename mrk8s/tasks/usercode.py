"""Telling the user's mistakes from ours, and saying where they happened.

Called by the task bodies (:mod:`mrk8s.tasks.run`) around every call into user
code. An exception whose traceback passes through the user's own files
becomes a :class:`mrk8s.UserCodeError` carrying the user's frames and the
task's step, stage, index and input; one that never leaves mrk8s (or the
installed libraries it calls) is our bug and keeps its full traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mrk8s.errors import UserCodeError
from mrk8s.tasks.tracebacks import is_framework_file, user_traceback
from shuffle.errors import MRError


@dataclass(frozen=True)
class Where:
    """Where a task is, for error messages."""

    step: int
    num_steps: int
    stage: str
    index: int
    detail: str

    def wrap(self, exc: BaseException, what: str) -> MRError:
        if isinstance(exc, MRError):
            exc.context.update(self.context())
            return exc
        return UserCodeError(
            f"{what} raised {type(exc).__name__}: {exc}",
            user_traceback=user_traceback(exc),
            **self.context(),
        )

    def context(self) -> dict[str, object]:
        return {
            "step": f"{self.step + 1} of {self.num_steps}",
            "stage": self.stage,
            "task": self.index,
            "input" if self.stage == "map" else "partition": self.detail,
        }


def _has_user_frame(exc: BaseException) -> bool:
    """Whether the exception passed through code outside mrk8s and the Python install."""
    installed = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    for frame in traceback.extract_tb(exc.__traceback__):
        name = os.path.abspath(frame.filename)
        if not is_framework_file(name) and not name.startswith(installed):
            return True
    return False


@contextlib.contextmanager
def guarded(where: Where, what: str) -> Iterator[None]:
    """Attribute exceptions raised by user code in the block to the user's ``what``.

    An exception whose traceback never leaves mrk8s (or the installed libraries
    it calls) is our bug, and propagates unchanged as an internal error.
    """
    try:
        yield
    except MRError as exc:
        raise where.wrap(exc, what) from None
    except Exception as exc:
        if not _has_user_frame(exc):
            raise
        raise where.wrap(exc, what) from exc


def call(where: Where, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    with guarded(where, what):
        return fn(*args)
