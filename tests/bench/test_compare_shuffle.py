"""``bench/compare_shuffle.py`` end to end at a tiny size: every run in a process of its own."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert [(r["contestant"], r["run"]) for r in runs] == [
        (name, run) for run in (1, 2) for name in run_order(names, run)
    ]
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


def test_every_run_has_every_contestant_and_orders_vary() -> None:
    names = [f"c{i}" for i in range(7)]
    orders = [run_order(names, run) for run in range(1, 7)]
    assert orders[0] == names
    assert all(sorted(order) == names for order in orders)
    assert run_order(names, 3) == orders[2]  # the same order on a rerun
    # What runs right before "c4": not the same contestant in every run.
    before = {order[order.index("c4") - 1] for order in orders if order[0] != "c4"}
    assert len(before) > 1
