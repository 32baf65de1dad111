"""A record an mrjob job's protocol cannot encode is a user error, not an mrk8s bug.

Under JSON protocols a ``set`` cannot be written: mrjob's own runners fail
the task on it. mrk8s must say which function yielded what key, which
protocol could not encode it and in which step, exit 2, and not retry (it
used to be "internal error in mrk8s (a bug)", retried three times).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mrjob.conftest import run_cli

pytestmark = pytest.mark.timeout(120)

JOB = """
from mrjob.job import MRJob
from mrjob.step import MRStep


class MRBad(MRJob):
    def steps(self):
        return [MRStep(mapper=self.first)] + [
            MRStep(mapper=self.second, reducer=self.total)
        ]

    def first(self, _, line):
        yield line.split()[0], {FIRST}

    def second(self, key, value):
        yield key, {SECOND}

    def total(self, key, values):
        yield key, {TOTAL}
"""


def _run(tmp_path: Path, first: str = "1", second: str = "value", total: str = "1") -> str:
    job = tmp_path / "mr_bad.py"
    job.write_text(
        JOB.replace("{FIRST}", first).replace("{SECOND}", second).replace("{TOTAL}", total)
    )
    (tmp_path / "in.txt").write_text("apple pie\nbanana split\n" * 20)
    proc = run_cli(["run", str(job), "in.txt", "-w", "1"], cwd=tmp_path, shuffle_dir=tmp_path / "s")
    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr and "a bug" not in proc.stderr
    assert "attempt 2" not in proc.stderr  # a user error is not retried
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("mrk8s: job failed:")]
    return line


def test_a_set_yielded_by_a_mapper_under_json(tmp_path: Path) -> None:
    line = _run(tmp_path, first="{len(line)}")
    assert "mapper yielded key 'apple' with value {9}" in line or "key 'banana'" in line
    assert "INTERNAL_PROTOCOL (JSONProtocol) cannot encode" in line
    assert "TypeError: Object of type set is not JSON serializable" in line
    assert "step=1 of 2, stage=map" in line
    assert "a list, not a set" in line


def test_a_set_in_a_later_step(tmp_path: Path) -> None:
    line = _run(tmp_path, second="frozenset([key])")
    assert "with value frozenset({" in line and "INTERNAL_PROTOCOL (JSONProtocol)" in line
    assert "step=2 of 2, stage=map" in line


def test_a_set_the_output_protocol_cannot_write(tmp_path: Path) -> None:
    # The part writer names it (tests/mrk8s/test_errors.py checks its words for one step).
    line = _run(tmp_path, total="set(values)")
    assert "reducer yielded a result that cannot be written" in line
    assert "key 'apple'" in line or "key 'banana'" in line
    assert "by the job's OUTPUT_PROTOCOL to output part part-0000" in line


def test_a_record_that_is_not_a_pair(tmp_path: Path) -> None:
    job = tmp_path / "mr_bad.py"
    job.write_text(JOB)
    source = JOB.replace("yield line.split()[0], {FIRST}", "yield line")
    source = source.replace("{SECOND}", "1").replace("{TOTAL}", "1")
    job.write_text(source)
    (tmp_path / "in.txt").write_text("apple pie\n")
    proc = run_cli(["run", str(job), "in.txt", "-w", "1"], cwd=tmp_path, shuffle_dir=tmp_path / "s")
    assert proc.returncode == 2, proc.stderr
    assert "mapper yielded 'apple pie', not a (key, value) pair" in proc.stderr
    assert "internal error" not in proc.stderr
