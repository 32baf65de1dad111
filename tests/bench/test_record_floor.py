"""Tests for bench.record_floor: the arithmetic of the budget, and a real (small) measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import record_floor


def _last(rows: int, shuffle_bytes: int, disk_mbs: float) -> dict[str, object]:
    large = {"rows": rows, "shuffle_bytes": shuffle_bytes, "reduce_cpu_seconds": 0.8}
    return {"runs": {"large-sorted": [large]}, "disk": {"cold_read_mb_per_s": disk_mbs}}


def test_the_budget_and_the_best_ratio_on_a_fixed_input() -> None:
    # 1e6 rows of 100 bytes; half of 1000 MB/s is 500 MB/s: 0.2 s, on 2 CPUs 400 ns a row.
    got = record_floor.judge(_last(10**6, 10**8, 1000.0), 300.0, 100.0, cpus=2)
    assert got["target_reduce_seconds"] == 0.2
    assert got["budget_ns_per_row"] == 400.0
    assert got["floor_ns_per_row"] == 400.0
    # 2 CPUs x 100 bytes / 400 ns = 0.5 bytes/ns = 500 MB/s: exactly the target.
    assert got["best_reduce_read_mb_per_s"] == 500.0
    assert got["best_read_to_disk_ratio"] == 0.5
    assert got["measured_ns_per_row"] == 800.0


def test_a_small_run_calls_the_reducer_for_every_row(tmp_path: Path) -> None:
    table = tmp_path / "beyond_memory.json"
    table.write_text(json.dumps(_last(10**6, 10**8, 1000.0)))
    out = tmp_path / "floor.json"
    assert (
        record_floor.main(
            ["--rows", "30000", "--repeat", "1", "--table", str(table), "--out", str(out)]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert got["rows"] == 30000
    assert 0 < got["reducer_calls_ns_per_row"] < got["floor_ns_per_row"]


def test_a_missing_table_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        record_floor.main(["--table", str(tmp_path / "nothing.json")])
    assert "run python -m bench.beyond_memory first" in capsys.readouterr().err
