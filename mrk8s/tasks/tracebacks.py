"""Show users their own frames: tracebacks with mrk8s's frames removed.

Called wherever user code raised (importing a job script, a mapper, a
reducer, ...) to build the text that :class:`mrk8s.UserCodeError` carries.
"""

from __future__ import annotations

import os
import traceback

#: The directory holding the three packages (this file is mrk8s/tasks/tracebacks.py).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMEWORK_DIRS = tuple(
    os.path.join(_ROOT, name) + os.sep for name in ("mrk8s", "scheduler", "shuffle")
)


def is_framework_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(FRAMEWORK_DIRS) or filename.startswith("<frozen")


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside mrk8s to the last (framework frames
    before and after dropped; any between stay, to show how the user's code was
    reached)."""
    frames = list(traceback.extract_tb(exc.__traceback__))
    user = [i for i, f in enumerate(frames) if not is_framework_file(f.filename)]
    # From the first user frame to the last: what mrk8s did past the user's last
    # line (e.g. refusing an import of an mrjob module it does not provide) is ours.
    frames = frames[user[0] : user[-1] + 1] if user else frames[-1:]
    shown = [f for f in frames if not f.filename.startswith("<frozen")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)]
    lines += traceback.format_exception_only(exc)
    return "".join(lines)


def last_user_line(exc: BaseException) -> str | None:
    """``FILE, line N`` of the last frame outside mrk8s the exception passed, or None."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not is_framework_file(frame.filename):
            return f"{frame.filename}, line {frame.lineno}"
    return None
