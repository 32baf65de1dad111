"""The straggler rules of scheduler.speculation, checked exactly on small inputs."""

from __future__ import annotations

import pytest

from scheduler import speculation
from scheduler.speculation import Policy
from scheduler.stage import StageSpec

pytestmark = pytest.mark.timeout(60)

POLICY = Policy(factor=2.0, min_seconds=1.0, min_finished=2)


def test_no_threshold_until_enough_tasks_have_finished():
    assert speculation.threshold(POLICY, [], num_tasks=10) is None
    assert speculation.threshold(POLICY, [3.0], num_tasks=10) is None
    assert speculation.threshold(POLICY, [3.0, 5.0], num_tasks=10) == 8.0


def test_the_threshold_is_factor_times_the_median():
    assert speculation.threshold(POLICY, [1.0, 2.0, 30.0], num_tasks=10) == 4.0
    assert speculation.threshold(POLICY, [1.0, 2.0, 3.0, 30.0], num_tasks=10) == 5.0


def test_the_threshold_is_never_below_min_seconds():
    assert speculation.threshold(POLICY, [0.01, 0.02], num_tasks=10) == 1.0


def test_a_small_run_needs_all_tasks_but_one_finished():
    # Two tasks: the first to finish is the whole median.
    assert speculation.threshold(POLICY, [2.0], num_tasks=2) == 4.0
    assert speculation.threshold(POLICY, [], num_tasks=2) is None
    # One task has nothing to compare with.
    assert speculation.threshold(POLICY, [], num_tasks=1) is None


def test_pick_takes_the_task_running_longest_past_the_threshold():
    running = {3: 10.0, 5: 4.0, 7: 9.0}

    assert speculation.pick(running, threshold=4.0, now=12.0) == 5
    assert speculation.pick(running, threshold=4.0, now=8.0) == 5
    assert speculation.pick(running, threshold=4.0, now=7.9) is None
    assert speculation.pick({}, threshold=0.0, now=1.0) is None


def test_pick_breaks_ties_by_lowest_index():
    assert speculation.pick({4: 1.0, 2: 1.0}, threshold=1.0, now=5.0) == 2


def test_seconds_until_next_straggler():
    running = {3: 10.0, 5: 4.0}

    assert speculation.seconds_until_next(running, threshold=4.0, now=6.5) == 1.5
    assert speculation.seconds_until_next(running, threshold=4.0, now=9.0) == 0.0
    assert speculation.seconds_until_next({}, threshold=4.0, now=9.0) is None


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"speculative_factor": 0.5}, "speculative_factor must be at least 1.0, not 0.5"),
        ({"speculative_min_seconds": -1.0}, "speculative_min_seconds must be >= 0, not -1.0"),
        ({"speculative_min_finished": 0}, "speculative_min_finished must be >= 1, not 0"),
    ],
)
def test_a_stage_spec_rejects_bad_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        StageSpec("map", 1, "m:f", {}, speculative=True, **knobs)


def test_a_stage_spec_carries_its_policy():
    stage = StageSpec(
        "map",
        1,
        "m:f",
        {},
        speculative_factor=3.0,
        speculative_min_seconds=0.5,
        speculative_min_finished=4,
    )

    assert stage.speculative is False
    assert stage.cleanup_entrypoint == ""
    assert stage.speculation_policy() == Policy(factor=3.0, min_seconds=0.5, min_finished=4)
