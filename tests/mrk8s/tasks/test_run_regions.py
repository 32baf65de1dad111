"""How a map task sizes its map output's regions from the step's last map task here."""

from __future__ import annotations

import pytest

from mrk8s.tasks import run


@pytest.fixture(autouse=True)
def fresh_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "_LAST_MAP_RUNS", {})


def test_the_first_map_task_of_a_step_has_no_expectation() -> None:
    assert run._expected_runs("job", 0, 1 << 20) is None


def test_runs_scale_with_the_split_and_stay_per_job_and_step() -> None:
    run._remember_runs("job", 0, 3.5, 100)
    assert run._expected_runs("job", 0, 100) == 3.5
    assert run._expected_runs("job", 0, 50) == 1.75
    assert run._expected_runs("job", 1, 100) is None
    assert run._expected_runs("other", 0, 100) is None
    run._remember_runs("job", 0, None, 100)  # not in place: nothing learnt
    assert run._expected_runs("job", 0, 100) == 3.5


def test_the_history_is_bounded_oldest_out() -> None:
    for step in range(run._LAST_MAP_RUNS_KEPT + 3):
        run._remember_runs("job", step, 2.0, 10)
    assert len(run._LAST_MAP_RUNS) == run._LAST_MAP_RUNS_KEPT
    assert run._expected_runs("job", 0, 10) is None
    assert run._expected_runs("job", run._LAST_MAP_RUNS_KEPT + 2, 10) == 2.0
