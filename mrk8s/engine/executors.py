"""The executor that runs a job's tasks: the backend named by ``--backend``.

Light to import (no pyarrow), so that ``mrk8s run`` can start local workers
before it loads anything heavy.
"""

from __future__ import annotations

from mrk8s.errors import UsageError
from scheduler import backends
from scheduler.stage import Executor

#: What each local worker loads before its first task (``LocalExecutor``'s ``preload``).
LOCAL_PRELOAD = ("mrk8s.tasks.run:warm_up",)


def make_executor(backend: str, workers: int | None) -> Executor:
    """The executor of ``backend`` with ``workers`` workers (None: one per CPU); not entered."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give at least 1")
    if backend not in backends.REGISTRY:
        raise UsageError(
            f"--backend {backend!r} is not known: choose one of {', '.join(backends.names())}"
        )
    try:
        cls = backends.load(backend)
    except ImportError as exc:
        raise UsageError(str(exc)) from exc
    if backend == "local":
        executor: Executor = cls(workers, preload=LOCAL_PRELOAD)
    else:
        executor = cls(workers)
    return executor
