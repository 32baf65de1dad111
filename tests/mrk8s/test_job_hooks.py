"""The job hooks adapters build on (mrk8s.mrjob uses them), tested on plain MapReduce jobs.

``mapper_raw`` (whole-file map tasks), ``text_line_writer`` (a job's own
output lines), ``job_files`` (files in every task's working directory),
``engine_steps``, and ``-r NAME`` on the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mrk8s
from mrk8s.cli.commands import _runner_names

pytestmark = pytest.mark.timeout(180)

HOOKS_JOB = """
import os
from mrk8s import MapReduce, Step


class Hooks(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--extra")

    def job_files(self):
        return [(self.options.extra, "extra.txt")]

    def engine_steps(self):
        return [Step(mapper_raw=self.sizes, reducer=self.total)]

    def sizes(self, path, url):
        with open("extra.txt") as f:  # shipped: in the task's working directory
            tag = f.read().strip()
        yield os.path.basename(url), (tag, os.path.getsize(path))

    def total(self, name, values):
        for tag, size in values:
            yield name, size

    def text_line_writer(self):
        return lambda key, value: f"{key}={value}"
"""


def test_mapper_raw_files_and_lines(tmp_path: Path) -> None:
    script = tmp_path / "hooks.py"
    script.write_text(HOOKS_JOB)
    (tmp_path / "tag.txt").write_text("t1\n")
    a, b = tmp_path / "a.txt", tmp_path / "b.gz"
    a.write_bytes(b"x\n" * 50_000)
    b.write_bytes(b"\x1f\x8b not really gzip")  # mapper_raw gets the bytes as stored
    out = tmp_path / "out"
    result = mrk8s.run(
        str(script),
        [str(a), str(b)],
        output=str(out),
        shuffle_dir=str(tmp_path / "shuffle"),
        workers=2,
        max_split_bytes=4096,  # would cut a.txt into many splits; mapper_raw keeps it whole
        job_args={"extra": str(tmp_path / "tag.txt")},
    )
    assert result.summary["stages"]["step0-map"]["tasks"] == 2
    lines = sorted(b"".join(p.read_bytes() for p in out.glob("part-*")).decode().splitlines())
    assert lines == [f"a.txt={a.stat().st_size}", f"b.gz={b.stat().st_size}"]


def test_mapper_raw_only_in_the_first_step(tmp_path: Path) -> None:
    script = tmp_path / "late_raw.py"
    script.write_text(
        "from mrk8s import MapReduce, Step\n\n"
        "class LateRaw(MapReduce):\n"
        "    def steps(self):\n"
        "        return [Step(reducer=self.r), Step(mapper_raw=self.m)]\n\n"
        "    def r(self, k, vs):\n        yield k, 1\n\n"
        "    def m(self, path, url):\n        yield url, 1\n"
    )
    (tmp_path / "in.txt").write_text("a\n")
    with pytest.raises(mrk8s.JobDefinitionError, match=r"steps\(\)\[1\] has a mapper_raw"):
        mrk8s.run(str(script), [str(tmp_path / "in.txt")], shuffle_dir=str(tmp_path / "s"))


def test_step_refuses_mapper_and_mapper_raw() -> None:
    with pytest.raises(mrk8s.JobDefinitionError, match="both mapper and mapper_raw"):
        mrk8s.Step(mapper=lambda k, v: [], mapper_raw=lambda p, u: [])


def test_runner_names_on_the_command_line() -> None:
    assert _runner_names(["job.py", "in", "-r", "inline"]) == ["job.py", "in", "--backend", "local"]
    assert _runner_names(["job.py", "--runner=local"]) == ["job.py", "--backend", "local"]
    assert _runner_names(["job.py", "-r", "4", "--", "-r", "x"]) == [
        "job.py",
        "-r",
        "4",
        "--",
        "-r",
        "x",
    ]
    with pytest.raises(mrk8s.UsageError, match="not an mrjob runner name"):
        _runner_names(["job.py", "-r", "fast"])
