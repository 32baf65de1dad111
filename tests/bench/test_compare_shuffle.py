"""``bench/compare_shuffle.py`` end to end at a tiny size: every run in a process of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import compare_shuffle
from bench.order import run_order


def test_each_run_is_verified_and_summarised(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    argv = ["--sizes", "2MiB", "--repeat", "2", "--workers", "2",
            "--contestants", "mrk8s,pyarrow-lower-bound", "--out", str(out)]  # fmt: skip
    assert compare_shuffle.main(argv) == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    names = ["mrk8s", "pyarrow-lower-bound"]
    order = [(r["contestant"], r["run"]) for r in runs]
    # Run 1 in the given order, then each run holds every contestant once, in
    # the order bench.order picks (its own tests check how it picks).
    assert order[:2] == [("mrk8s", 1), ("pyarrow-lower-bound", 1)]
    assert sorted(order[2:]) == [("mrk8s", 2), ("pyarrow-lower-bound", 2)]
    assert order == [(name, run) for run in (1, 2) for name in run_order(names, run)]
    rows = (2 << 20) // (8 + compare_shuffle.PAYLOAD)
    for r in runs:
        assert "error" not in r, r
        assert r["verified"] is True and r["rows"] == rows
        assert r["seconds"] > 0
    (summary,) = result["summary"]
    assert set(summary["median_gib_per_s"]) == {"mrk8s", "pyarrow-lower-bound"}


def test_a_failing_contestant_is_reported_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    # A pool of 0 processes: the lower bound fails in its child process.
    argv = ["--sizes", "1MiB", "--repeat", "1", "--workers", "0",
            "--contestants", "pyarrow-lower-bound", "--out", str(out)]  # fmt: skip
    assert compare_shuffle.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert "pyarrow-lower-bound failed (exit 1)" in run["error"]
    assert "max_workers must be greater than 0" in run["error"]


@pytest.mark.parametrize("contestant", ["mrk8s-s3", "mrk8s-s3rver"])
def test_the_s3_contestants_shuffle_through_their_server(tmp_path: Path, contestant: str) -> None:
    if contestant == "mrk8s-s3rver" and not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("s3rver needs Node.js and npm")
    out = tmp_path / "compare.json"
    argv = ["--sizes", "2MiB", "--repeat", "1", "--workers", "2",
            "--contestants", contestant, "--out", str(out)]  # fmt: skip
    assert compare_shuffle.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert "error" not in run, run
    assert run["verified"] is True
    assert run["rows"] == (2 << 20) // (8 + compare_shuffle.PAYLOAD)


def test_the_sorted_contestants_hand_every_reducer_its_rows_in_key_order(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    names = ["mrk8s-sorted", "pyarrow-sorted-lower-bound", "pyarrow-sorted-lower-bound-reduce"]
    argv = ["--sizes", "2MiB", "--repeat", "1", "--workers", "2",
            "--contestants", ",".join(names), "--out", str(out)]  # fmt: skip
    assert compare_shuffle.main(argv) == 0
    runs = json.loads(out.read_text())["runs"]
    assert sorted(r["contestant"] for r in runs) == sorted(names)
    for r in runs:  # each reducer checks its keys' order, and fails the run if not
        assert "error" not in r, r
        assert r["verified"] is True


def test_target_ratios_take_the_faster_sorted_lower_bound() -> None:
    medians = {
        "mrk8s": 0.9,
        "pyarrow-lower-bound": 1.2,
        "mrk8s-sorted": 0.6,
        "pyarrow-sorted-lower-bound": 0.7,
        "pyarrow-sorted-lower-bound-reduce": 0.8,
        "dask-tasks": 0.25,
    }
    ratios = compare_shuffle.target_ratios(medians)
    assert ratios == {
        "hash / lower bound": {"ratio": 0.75, "target": 0.9, "met": False},
        "sorted / sorted lower bound": {"ratio": 0.75, "target": 0.8, "met": False},
        "sorted / Dask task shuffle": {"ratio": 2.4, "target": 2.0, "met": True},
    }  # no S3 contestant ran: no S3 ratio
    assert "sorted / sorted lower bound" not in compare_shuffle.target_ratios(
        {"mrk8s-sorted": 0.6, "pyarrow-sorted-lower-bound": 0.7}
    )
