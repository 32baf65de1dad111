"""Show users their own frames: tracebacks with mrk8s's frames removed.

Called wherever user code raised (importing a job script, a mapper, a
reducer, ...) to build the text that :class:`mrk8s.UserCodeError` carries.
"""

from __future__ import annotations

import os
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
FRAMEWORK_DIRS = tuple(
    os.path.join(os.path.dirname(_HERE), name) + os.sep for name in ("mrk8s", "scheduler", "shuffle")
)


def is_framework_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(FRAMEWORK_DIRS) or filename.startswith("<frozen")


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside mrk8s on (framework frames dropped)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for i, frame in enumerate(frames):
        if not is_framework_file(frame.filename):
            frames = frames[i:]
            break
    else:
        frames = frames[-1:]
    frames = traceback.StackSummary.from_list([f for f in frames if not f.filename.startswith("<frozen")])
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(exc)
    return "".join(lines)
