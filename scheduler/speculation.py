"""Speculative execution: which running task gets an extra attempt, and when.

A straggler is a task whose attempt has run far longer than the tasks of its
stage usually take (a slow disk, a noisy neighbour, a node about to fail).
When a stage asks for it (:attr:`scheduler.stage.StageSpec.speculative`) and
a worker has nothing else to do, a backend runs one extra attempt of the
worst straggler; the first attempt to succeed wins and the other is
cancelled.

These are pure functions over times the caller measures (no clocks, no
processes of their own), so every backend's scheduling loop can share them
and they are tested exactly on small inputs. Called today by
:mod:`scheduler.backends.local`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    """When a running attempt counts as a straggler (see ``StageSpec.speculative_*``).

    ``factor``: how many times the median duration of the finished tasks an
    attempt must exceed. ``min_seconds``: an attempt younger than this is
    never a straggler, however quick the others were (a second attempt costs a
    process and a re-read of the input). ``min_finished``: how many tasks must
    have finished before their median means anything.
    """

    factor: float = 2.0
    min_seconds: float = 5.0
    min_finished: int = 2

    def __post_init__(self) -> None:
        if self.factor < 1.0:
            raise ValueError(f"speculative_factor must be at least 1.0, not {self.factor}")
        if self.min_seconds < 0.0:
            raise ValueError(f"speculative_min_seconds must be >= 0, not {self.min_seconds}")
        if self.min_finished < 1:
            raise ValueError(f"speculative_min_finished must be >= 1, not {self.min_finished}")


def threshold(policy: Policy, durations: Sequence[float], *, num_tasks: int) -> float | None:
    """Seconds after which a running attempt is a straggler; None while it cannot be told.

    ``durations`` are those of the tasks of this run that have finished;
    ``num_tasks`` is how many tasks the run has. A run of fewer than
    ``min_finished + 1`` tasks needs all but one finished, so that a stage of
    two tasks can still speculate on its last one.
    """
    needed = max(1, min(policy.min_finished, num_tasks - 1))
    if len(durations) < needed:
        return None
    return max(policy.factor * statistics.median(durations), policy.min_seconds)


def pick(running: Mapping[int, float], *, threshold: float, now: float) -> int | None:
    """The straggler to speculate on: the task running longest beyond ``threshold``.

    ``running`` maps the index of each task that may still be speculated on to
    the time its attempt started (the same clock as ``now``). Ties go to the
    lowest index, so the choice is deterministic.
    """
    late = [(started, index) for index, started in running.items() if now - started >= threshold]
    return min(late)[1] if late else None


def seconds_until_next(
    running: Mapping[int, float], *, threshold: float, now: float
) -> float | None:
    """How long until some task in ``running`` becomes a straggler (0 if one is already).

    A scheduling loop waits at most this long for messages, so it speculates
    on time without polling; None means no running task can become one.
    """
    if not running:
        return None
    return max(0.0, min(started + threshold - now for started in running.values()))
