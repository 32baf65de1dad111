"""The job plan as plain data: JSON round trips, the version check, split descriptions.

A plan is written as ``plan.json`` and read by workers anywhere, so every
record must come back equal after ``to_json -> json.dumps -> json.loads ->
from_json``, and a plan from another format version must be refused.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mrk8s.io.split import Split
from mrk8s.tasks.plan import PLAN_VERSION, JobId, JobPlan, StepPlan


def through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


SPLITS = (
    Split("file:///data/a.txt", "text", 0, 1024, None, 4096),
    Split("s3://bucket/b.txt.gz", "text", compression="gzip", size=77),
    Split("/data/c.parquet", "parquet", 2, 5, size=1 << 40),
)


def make_plan(**changes: Any) -> JobPlan:
    fields: dict[str, Any] = {
        "job_id": JobId("wordcount-20240101-abcdef"),
        "job_dir": "file:///tmp/shuffle/wordcount-20240101-abcdef",
        "script_name": "wordcount.py",
        "script_origin": "/home/me/wordcount.py",
        "script_sha256": "0" * 64,
        "job_class": "WordCount",
        "job_args": {"min_count": 2, "stop_words": ["a", "the"], "verbose": True, "x": None},
        "steps": (
            StepPlan(0, True, False, True, True, False, 4, "hash", SPLITS),
            StepPlan(1, False, True, False, False, True, 1, "range", ()),
            StepPlan(2, True, False, False, False, False, 0, "hash"),
        ),
        "output_url": "s3://bucket/out",
        "staging_url": "s3://bucket/out/_staging",
        "output_format": "jsonl",
        "memory_per_worker": 512 * 1024 * 1024,
        "storage_options": {"endpoint_url": "http://127.0.0.1:9000", "anon": False},
    }
    fields.update(changes)
    return JobPlan(**fields)


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: s.url)
def test_split_survives_a_json_round_trip(split):
    assert Split.from_json(through_json(split.to_json())) == split


def test_step_plan_survives_a_json_round_trip():
    step = make_plan().steps[0]

    back = StepPlan.from_json(through_json(step.to_json()))

    assert back == step
    assert isinstance(back.splits, tuple)
    assert all(isinstance(s, Split) for s in back.splits)


def test_step_plan_without_splits_in_its_json_has_none():
    data = through_json(make_plan().steps[1].to_json())
    del data["splits"]

    assert StepPlan.from_json(data).splits == ()


def test_job_plan_survives_a_json_round_trip():
    plan = make_plan()

    back = JobPlan.from_json(through_json(plan.to_json()))

    assert back == plan
    assert isinstance(back.steps, tuple)
    assert back.steps[0].splits == SPLITS


def test_job_plan_survives_dumps_and_loads():
    plan = make_plan(output_url="", storage_options={})

    text = plan.dumps()

    assert JobPlan.loads(text) == plan
    assert json.loads(text)["version"] == PLAN_VERSION


def test_a_changed_plan_is_not_equal_after_the_round_trip():
    # Guards the round-trip tests: equality does look at nested fields.
    plan = make_plan()
    data = through_json(plan.to_json())
    data["steps"][0]["splits"][1]["size"] = 78

    assert JobPlan.from_json(data) != plan


@pytest.mark.parametrize("version", [PLAN_VERSION + 1, 0, None, "1"])
def test_a_plan_of_another_version_is_refused(version):
    data = through_json(make_plan().to_json())
    data["version"] = version

    with pytest.raises(ValueError, match="planned by another mrk8s release") as info:
        JobPlan.from_json(data)

    assert f"plan version {version!r} is not {PLAN_VERSION}" in str(info.value)
    assert "--restart" in str(info.value)


def test_a_plan_without_a_version_is_refused():
    data = through_json(make_plan().to_json())
    del data["version"]

    with pytest.raises(ValueError, match="plan version None is not"):
        JobPlan.from_json(data)


def test_step_dir_is_under_the_job_dir():
    assert make_plan().step_dir(1) == "file:///tmp/shuffle/wordcount-20240101-abcdef/s1"


def test_has_reduce_means_a_reducer_or_a_reduce_batch():
    step0, step1, step2 = make_plan().steps

    assert (step0.has_reduce, step1.has_reduce, step2.has_reduce) == (True, True, False)


@pytest.mark.parametrize(
    ("split", "text"),
    [
        (Split("in.txt", "text", 0, 1024), "in.txt [bytes 0-1024)"),
        (Split("in.jsonl", "jsonl", 100, 200), "in.jsonl [bytes 100-200)"),
        (Split("in.parquet", "parquet", 2, 5), "in.parquet [row groups 2-5)"),
        (Split("in.txt.gz", "text", compression="gzip"), "in.txt.gz"),
        (Split("in.csv", "csv"), "in.csv"),
        (Split("s3://b/k.arrow", "shuffle", 0, -1), "s3://b/k.arrow"),
    ],
)
def test_split_describe_names_the_file_and_its_range(split, text):
    assert split.describe() == text
