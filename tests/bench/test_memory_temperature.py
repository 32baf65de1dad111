"""Tests for bench.memory_temperature: its rates follow from its timings, it leaves no file."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench import memory_temperature


def test_each_rate_is_the_bytes_over_the_median_time_and_no_file_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        memory_temperature.main(
            ["--size", "2MiB", "--waits", "0,0.01", "--repeat", "3", "--dir", str(tmp_path)]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows, summary = lines[:-1], lines[-1]
    assert [r["wait_seconds"] for r in rows] == [0.0, 0.01]
    for row in rows:
        assert row["bytes"] == 2 << 20
        for kind, seconds in (
            ("page_cache_write", row["page_cache_write_seconds"]),
            ("anonymous_fill", row["anonymous_fill_seconds"]),
        ):
            assert len(seconds) == 3 and min(seconds) > 0
            rate = (2 << 20) / statistics.median(seconds) / 1e9
            # Seconds are given to the microsecond and rates to 3 places.
            assert row[f"{kind}_gb_per_s"] == pytest.approx(rate, rel=0.01, abs=0.002)
    writes = [r["page_cache_write_gb_per_s"] for r in rows]
    assert summary["warm_over_cold_page_cache_write"] == pytest.approx(
        max(writes) / min(writes), abs=0.01
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--size", "0"], "--size must be positive, got '0'"),
        (["--size", "lots"], "--size 'lots' is not a size"),
        (["--waits", "1,-2"], "--waits must name waits of 0 seconds or more, got '1,-2'"),
        (["--waits", "soon"], "--waits must be comma-separated seconds, e.g. 0,1,4; got 'soon'"),
        (["--repeat", "0"], "--repeat must be 1 or more, got 0"),
    ],
)
def test_a_bad_argument_is_refused_by_name(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        memory_temperature.main(args)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err
