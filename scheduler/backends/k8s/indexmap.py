"""Which task indexes an Indexed Job runs: completion index k -> task index.

A stage's Job runs only the tasks the driver asks for (the others have
committed). Its ``completions`` is the number of those tasks (of pods, below),
and every pod maps its ``$JOB_COMPLETION_INDEX`` k to the k-th of them, through the map
this module writes into the pod's environment (:data:`ENV`) and the Job's
annotation (:data:`ANNOTATION`, for ``mrk8s logs`` and a driver that
re-attaches). The map is a compact list of ranges, ``0-3,7,9-12``, so a
stage of 100,000 tasks with a few missing still fits an environment
variable. A Job for every task of a stage has the identity map, ``0-N``.

A pod may run several tasks, one after another in one process (the
interpreter, imports and storage client built once): the map then ends in
``/N``, the tasks per pod, and completion index k runs the k-th batch of N
tasks of the list. ``0-5/2`` is three pods: tasks 0 and 1, 2 and 3, 4 and 5.
Without the suffix every pod runs one task.

Imports nothing beyond the standard library: ``mrk8s worker`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The environment variable of a stage Job's pods that holds the map.
ENV = "MRK8S_INDEX_MAP"
#: The Job annotation that holds the same map.
ANNOTATION = "mrk8s.io/task-indexes"


def encode(indexes: Sequence[int], per_pod: int = 1) -> str:
    """Sorted, distinct task indexes as ``a-b,c,...`` (the order is the completion order),
    with ``/per_pod`` when a pod runs more than one of them."""
    if per_pod < 1:
        raise ValueError(f"tasks per pod must be 1 or more, not {per_pod}")
    ordered = sorted(set(indexes))
    if [int(i) for i in indexes] != ordered:
        raise ValueError(f"task indexes must be sorted and distinct: {list(indexes)[:10]}")
    parts: list[str] = []
    start = prev = None
    for i in ordered:
        if start is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts) + (f"/{per_pod}" if per_pod > 1 else "")


def per_pod(text: str) -> int:
    """The tasks each pod runs (1 without a ``/N`` suffix); ValueError if malformed."""
    _, slash, n = text.partition("/")
    if not slash:
        return 1
    if not n.strip().isdigit() or int(n) < 1:
        raise ValueError(f"index map {text!r}: the tasks per pod after '/' must be 1 or more")
    return int(n)


def pods(text: str) -> int:
    """How many pods (completion indexes) the map needs."""
    return -(-len(decode(text)) // per_pod(text))


def decode(text: str) -> list[int]:
    """The task indexes of a map, in completion order; ValueError if malformed."""
    per_pod(text)  # checks the suffix
    out: list[int] = []
    for part in text.partition("/")[0].split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        low, high = int(first), int(last) if dash else int(first)
        if high < low or (out and low <= out[-1]):
            raise ValueError(f"index map {text!r}: ranges must ascend ({part!r})")
        out.extend(range(low, high + 1))
    return out


def batch(text: str, completion_index: int) -> list[int]:
    """The task indexes that completion index ``completion_index`` runs, in order."""
    indexes, n = decode(text), per_pod(text)
    if not 0 <= completion_index * n < len(indexes):
        raise ValueError(
            f"completion index {completion_index} is outside the index map {text!r} "
            f"({len(indexes)} tasks, {n} per pod)"
        )
    return indexes[completion_index * n : (completion_index + 1) * n]


def task_index(text: str, completion_index: int) -> int:
    """The (first) task index that completion index ``completion_index`` runs."""
    return batch(text, completion_index)[0]
