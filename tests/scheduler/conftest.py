"""Fixtures for the scheduler tests: local executors that leave no process behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scheduler.backends.local import LocalExecutor
from tests.scheduler.util import worker_processes


@pytest.fixture
def make_executor() -> Iterator[Callable[..., LocalExecutor]]:
    """Build LocalExecutors; close them all after the test and check nothing is left."""
    made: list[LocalExecutor] = []

    def make(num_workers: int = 2, **kwargs: Any) -> LocalExecutor:
        executor = LocalExecutor(num_workers, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
    assert worker_processes() == []
