"""The ``mrk8s`` command as a user runs it: a subprocess, real files.

Each user mistake gets exit code 2 and one clear paragraph, with no mrk8s
traceback; user code that raises shows the user's own frames and where the
failure happened (step, stage, task, input split).
"""

from __future__ import annotations

import collections
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLIResult
from tests.util import WORDCOUNT, parse_text_output

pytestmark = pytest.mark.timeout(120)

Run = Callable[..., CLIResult]


def script(tmp_path: Path, source: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def no_framework_traceback(stderr: str) -> None:
    for package in ("mrk8s/", "scheduler/", "shuffle/"):
        assert f"{package}" not in "\n".join(
            line for line in stderr.splitlines() if line.strip().startswith("File ")
        ), stderr


@pytest.fixture
def text_input(tmp_path: Path) -> Path:
    p = tmp_path / "in.txt"
    p.write_text("b a\nc a\n\nboom a\n")
    return p


def test_run_prints_sorted_results_per_reducer(cli: Run, tmp_path: Path, text_input: Path) -> None:
    res = cli("run", script(tmp_path, WORDCOUNT), str(text_input), "--reducers", "2")
    assert res.returncode == 0, res.stderr
    records = parse_text_output(res.stdout)
    assert dict(records) == dict(collections.Counter(text_input.read_text().split()))
    assert "map" in res.stderr and "reduce" in res.stderr  # progress lines on stderr


def test_python_script_run_equals_mrk8s_run(cli: Run, tmp_path: Path, text_input: Path) -> None:
    import subprocess
    import sys

    job = script(tmp_path, WORDCOUNT)
    via_cli = cli("run", job, str(text_input), "-q")
    direct = subprocess.run(
        [sys.executable, job, str(text_input), "-q", "--shuffle-dir", str(tmp_path / "s2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == via_cli.stdout
    assert via_cli.stdout


def test_reads_stdin_when_no_input_is_given(cli: Run, tmp_path: Path) -> None:
    res = cli("run", script(tmp_path, WORDCOUNT), "-q", stdin="x y\ny\n")
    assert res.returncode == 0, res.stderr
    assert sorted(parse_text_output(res.stdout)) == [("x", 1), ("y", 2)]


def test_job_options_after_inputs_or_after_double_dash(
    cli: Run, tmp_path: Path, text_input: Path
) -> None:
    job = script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class Min(MapReduce):
            def configure_args(self, parser):
                parser.add_argument("--min-count", type=int, default=1)

            def mapper(self, _, line):
                for w in line.split():
                    yield w, 1

            def reducer(self, w, ones):
                n = sum(ones)
                if n >= self.options.min_count:
                    yield w, n
        """,
    )
    after = cli("run", job, str(text_input), "--min-count", "2", "-q")
    dashed = cli("run", job, str(text_input), "-q", "--", "--min-count", "2")
    assert after.returncode == 0, after.stderr
    assert parse_text_output(after.stdout) == [("a", 3)]
    assert dashed.stdout == after.stdout
    helped = cli("run", job, "--help")
    assert "--min-count" in helped.stdout


def test_output_dir_gets_parts_summary_and_success(
    cli: Run, tmp_path: Path, text_input: Path
) -> None:
    out = tmp_path / "out"
    res = cli("run", script(tmp_path, WORDCOUNT), str(text_input), "-o", str(out), "-r", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reducers"] == [3]
    assert summary["stages"]["step0-map"]["records_in"] == 4


# -- errors ---------------------------------------------------------------------


def test_missing_input_path(cli: Run, tmp_path: Path) -> None:
    res = cli("run", script(tmp_path, WORDCOUNT), str(tmp_path / "nope.txt"))
    assert res.returncode == 2
    assert "nope.txt' does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_script_without_job_class(cli: Run, tmp_path: Path, text_input: Path) -> None:
    res = cli("run", script(tmp_path, "import os\n"), str(text_input))
    assert res.returncode == 2
    assert "defines no MapReduce subclass" in res.stderr
    assert "Traceback" not in res.stderr


def test_script_with_two_job_classes_needs_job_class(
    cli: Run, tmp_path: Path, text_input: Path
) -> None:
    two = WORDCOUNT.replace("if __name__", "class Other(WordCount):\n    pass\n\nif __name__")
    job = script(tmp_path, two)
    res = cli("run", job, str(text_input))
    assert res.returncode == 2
    assert "several MapReduce subclasses (Other, WordCount)" in res.stderr
    assert "--job-class" in res.stderr
    ok = cli("run", job, str(text_input), "--job-class", "Other", "-q")
    assert ok.returncode == 0, ok.stderr
    wrong = cli("run", job, str(text_input), "--job-class", "Nope")
    assert wrong.returncode == 2
    assert "no MapReduce subclass named 'Nope'" in wrong.stderr


def test_mapper_exception_shows_user_traceback_and_split(
    cli: Run, tmp_path: Path, text_input: Path
) -> None:
    job = script(
        tmp_path,
        """
        from mrk8s import MapReduce

        def parse(line):
            if line.startswith("boom"):
                raise ValueError(f"cannot parse {line!r}")
            return line.split()

        class Fails(MapReduce):
            def mapper(self, _, line):
                for w in parse(line):
                    yield w, 1

            def reducer(self, w, ones):
                yield w, sum(ones)
        """,
    )
    res = cli("run", job, str(text_input), "--split-size", "4")
    assert res.returncode == 2
    assert "mapper raised ValueError: cannot parse 'boom a'" in res.stderr
    assert "step=1 of 1, stage=map, task=" in res.stderr
    assert f"input={text_input} [bytes " in res.stderr
    assert f'File "{job}", line 6, in parse' in res.stderr
    assert "in mapper" in res.stderr
    no_framework_traceback(res.stderr)
    assert "attempt" not in res.stderr  # user errors are not retried by default


def test_reducer_exception_names_partition(cli: Run, tmp_path: Path, text_input: Path) -> None:
    job = script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class Fails(MapReduce):
            def mapper(self, _, line):
                for w in line.split():
                    yield w, 1

            def reducer(self, w, ones):
                return sum(ones) / 0
        """,
    )
    res = cli("run", job, str(text_input), "-r", "1")
    assert res.returncode == 2
    assert "reducer raised ZeroDivisionError: division by zero" in res.stderr
    assert "stage=reduce, task=0, partition=0" in res.stderr
    no_framework_traceback(res.stderr)


def test_key_that_cannot_be_serialised(cli: Run, tmp_path: Path, text_input: Path) -> None:
    job = script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class SetKeys(MapReduce):
            def mapper(self, _, line):
                yield set(line.split()), 1

            def reducer(self, k, v):
                yield k, sum(v)
        """,
    )
    res = cli("run", job, str(text_input))
    assert res.returncode == 2
    assert "mapper yielded a key or value the shuffle cannot carry" in res.stderr
    assert "set" in res.stderr
    assert "Traceback" not in res.stderr


def test_non_empty_output_needs_overwrite(cli: Run, tmp_path: Path, text_input: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    job = script(tmp_path, WORDCOUNT)
    res = cli("run", job, str(text_input), "-o", str(out))
    assert res.returncode == 2
    assert "is not empty" in res.stderr and "--overwrite" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    again = cli("run", job, str(text_input), "-o", str(out), "--overwrite", "-q")
    assert again.returncode == 0, again.stderr
    assert "keep.txt" not in [p.name for p in out.iterdir()]
    assert (out / "_SUCCESS").exists()


def test_failed_job_leaves_nothing_at_output(cli: Run, tmp_path: Path, text_input: Path) -> None:
    job = script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class Fails(MapReduce):
            def mapper(self, _, line):
                yield line, 1

            def reducer(self, k, v):
                raise RuntimeError("no")
        """,
    )
    out = tmp_path / "out"
    res = cli("run", job, str(text_input), "-o", str(out))
    assert res.returncode == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_option_values(cli: Run, tmp_path: Path, text_input: Path) -> None:
    job = script(tmp_path, WORDCOUNT)
    res = cli("run", job, str(text_input), "--memory-per-worker", "lots")
    assert res.returncode == 2
    assert "'lots' is not a size" in res.stderr
    res = cli("run", job, str(text_input), "--reducers", "0")
    assert res.returncode == 2
    assert "--reducers 0" in res.stderr
    res = cli("run", job, str(text_input), "--storage-options", "[1]")
    assert res.returncode == 2
    assert "not a JSON object" in res.stderr
    res = cli("run", job, str(text_input), "--backend", "mars")
    assert res.returncode == 2
    assert "--backend 'mars' is not known" in res.stderr
    res = cli("run", job, str(text_input), "--workers", "0")
    assert res.returncode == 2
    assert "--workers 0: give at least 1" in res.stderr


# -- start-up ------------------------------------------------------------------------------


def test_importing_mrk8s_and_its_command_line_loads_no_pyarrow() -> None:
    """What lets ``mrk8s run`` start its workers before it spends time on pyarrow."""
    import subprocess
    import sys

    code = "import sys, mrk8s, mrk8s.cli; print(sorted({'pyarrow', 'numpy'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"

    from mrk8s import MapReduce, Step
    from mrk8s.job import MapReduce as Defined
    from mrk8s.job import Step as DefinedStep

    assert (MapReduce, Step) == (Defined, DefinedStep)
    import mrk8s

    with pytest.raises(AttributeError, match="no attribute 'Mapreduce'"):
        getattr(mrk8s, "Mapreduce")  # noqa: B009


def test_local_workers_are_running_before_the_job_script_loads(
    cli: Run, tmp_path: Path, text_input: Path
) -> None:
    mark = tmp_path / "workers-at-load.txt"
    source = f"""
        import psutil
        WORKER = "scheduler.backends._local_worker"
        me = psutil.Process()
        if WORKER not in me.cmdline():  # the driver, not a worker loading the script
            kids = [p for p in me.children() if WORKER in p.cmdline()]
            with open({str(mark)!r}, "a") as f:
                f.write(f"{{len(kids)}}\\n")
        """
    job = script(tmp_path, textwrap.dedent(source) + WORDCOUNT)
    res = cli("run", job, str(text_input), "--workers", "2", "-q")
    assert res.returncode == 0, res.stderr
    assert dict(parse_text_output(res.stdout)) == dict(
        collections.Counter(text_input.read_text().split())
    )
    assert mark.read_text().split() == ["2"]  # loaded once in the driver, both workers up
