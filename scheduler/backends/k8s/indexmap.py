"""Which task indexes an Indexed Job runs: completion index k -> task index.

A stage's Job runs only the tasks the driver asks for (the others have
committed). Its ``completions`` is the number of those tasks, and every pod
maps its ``$JOB_COMPLETION_INDEX`` k to the k-th of them, through the map
this module writes into the pod's environment (:data:`ENV`) and the Job's
annotation (:data:`ANNOTATION`, for ``mrk8s logs`` and a driver that
re-attaches). The map is a compact list of ranges, ``0-3,7,9-12``, so a
stage of 100,000 tasks with a few missing still fits an environment
variable. A Job for every task of a stage has the identity map, ``0-N``.

Imports nothing beyond the standard library: ``mrk8s worker`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The environment variable of a stage Job's pods that holds the map.
ENV = "MRK8S_INDEX_MAP"
#: The Job annotation that holds the same map.
ANNOTATION = "mrk8s.io/task-indexes"


def encode(indexes: Sequence[int]) -> str:
    """Sorted, distinct task indexes as ``a-b,c,...`` (the order is the completion order)."""
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
    return ",".join(parts)


def decode(text: str) -> list[int]:
    """The task indexes of a map, in completion order; ValueError if malformed."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        low, high = int(first), int(last) if dash else int(first)
        if high < low or (out and low <= out[-1]):
            raise ValueError(f"index map {text!r}: ranges must ascend ({part!r})")
        out.extend(range(low, high + 1))
    return out


def task_index(text: str, completion_index: int) -> int:
    """The task index that completion index ``completion_index`` runs."""
    indexes = decode(text)
    if not 0 <= completion_index < len(indexes):
        raise ValueError(
            f"completion index {completion_index} is outside the index map {text!r} "
            f"({len(indexes)} tasks)"
        )
    return indexes[completion_index]
