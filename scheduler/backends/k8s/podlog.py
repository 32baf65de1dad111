"""Why a task's pod failed, from its exit code and its log.

``mrk8s worker`` ends a failed task with one line on stderr, ``mrk8s
worker: task I of step S STAGE failed (KIND): MESSAGE`` (MESSAGE may span
lines: a user's own traceback), and exits 2 for a user error, 1 otherwise.
:func:`task_error` turns a failed pod back into the
:class:`scheduler.stage.TaskError` the local backend would have had, so
the user sees the same text whichever backend ran the task. A pod that died
before it could say why (killed, out of memory, an image that does not
start) gets a message naming the pod, its exit code and the end of its log.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from typing import Any

from scheduler.stage import TaskError

#: The worker's user-error exit code (never retried).
USER_ERROR_EXIT = 2
#: Lines of a pod's log quoted when it did not say why it failed.
TAIL_LINES = 20

_FAILED = re.compile(r"^mrk8s worker: task (\d+) of step \d+ \w+ failed \((\w+)\): ", re.MULTILINE)


def terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    """The ``state.terminated`` of the pod's container ({} if it has none)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return ((status.get("state") or {}).get("terminated")) or {}
    return {}


def exit_code(pod: Mapping[str, Any], container: str) -> int | None:
    code = terminated(pod, container).get("exitCode")
    return None if code is None else int(code)


def failed_task(log: str) -> int | None:
    """The task the worker said failed (a pod running a batch names one of them)."""
    matches = list(_FAILED.finditer(log))
    return int(matches[-1].group(1)) if matches else None


def task_error(pod: Mapping[str, Any], container: str, log: str) -> TaskError:
    """The TaskError of a failed pod (see the module docstring)."""
    code = exit_code(pod, container)
    user_error = code == USER_ERROR_EXIT
    matches = list(_FAILED.finditer(log))
    if matches:
        last = matches[-1]
        message = log[last.end() :].rstrip()
        return TaskError(last.group(2), message, retryable=not user_error, user_error=user_error)
    name = (pod.get("metadata") or {}).get("name", "?")
    node = (pod.get("spec") or {}).get("nodeName") or "no node"
    state = terminated(pod, container)
    if code is None:
        what = f"pod {name} on {node} failed ({(pod.get('status') or {}).get('reason', '?')})"
    elif code > 128 and code - 128 in set(signal.Signals):
        what = f"pod {name} on {node} was killed by {signal.Signals(code - 128).name} (exit {code})"
        if code - 128 == signal.SIGKILL:
            what += ", e.g. for using more than its memory limit (--memory-per-worker)"
    else:
        what = f"pod {name} on {node} exited with code {code}"
    reason = state.get("reason") or ""
    if reason and reason not in ("Error", "Completed"):
        what += f" ({reason}: {state.get('message', '')})".replace(": )", ")")
    tail = "\n".join(log.rstrip().splitlines()[-TAIL_LINES:])
    message = what + (f"; the end of its log:\n{tail}" if tail else "; its log is empty")
    return TaskError("WorkerLostError", message, retryable=not user_error, user_error=user_error)


def is_disrupted(pod: Mapping[str, Any]) -> bool:
    """Whether the pod has a ``DisruptionTarget`` condition (evicted, preempted, drained)."""
    return any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )
