"""Job housekeeping and resume safety: ``mrk8s status``, ``mrk8s clean``,
refusing to resume a job whose script or input changed, ``--restart``, and
``--retry-user-errors``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLIResult
from tests.util import parse_text_output

pytestmark = pytest.mark.timeout(120)

Run = Callable[..., CLIResult]

JOB = """
from mrk8s import MapReduce

class Count(MapReduce):
    def mapper(self, _, line):
        yield line[-1:], 1

    def reducer(self, k, ones):
        yield k, sum(ones)
"""


@pytest.fixture
def job(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    src = tmp_path / "in.txt"
    src.write_text("".join(f"{i}\n" for i in range(1000)))
    return str(script), src


def test_status_and_clean_of_a_kept_job(cli: Run, tmp_path: Path, job: tuple[str, Path]) -> None:
    script, src = job
    ran = cli(
        "run",
        script,
        str(src),
        "-o",
        str(tmp_path / "out"),
        "--job-id",
        "j",
        "--keep-shuffle",
        "-q",
    )
    assert ran.returncode == 0, ran.stderr
    status = cli("status", "j")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("job j ")
    map_line = next(line for line in lines if line.startswith("step 1/1 map"))
    for stage_line in (map_line, next(x for x in lines if x.startswith("step 1/1 reduce"))):
        state, done, attempts, failures = stage_line.split()[3:]
        committed, total = done.split("/")
        assert (state, committed, attempts, failures) == ("done", total, "1", "0")

    cleaned = cli("clean", "j")
    assert cleaned.returncode == 0, cleaned.stderr
    gone = cli("status", "j")
    assert gone.returncode == 2
    assert "no job 'j'" in gone.stderr


def test_status_shows_failed_attempts(cli: Run, tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        textwrap.dedent(
            """
            from mrk8s import MapReduce

            class Bad(MapReduce):
                def mapper(self, _, line):
                    raise ValueError("always")

                def reducer(self, k, v):
                    yield k, v
            """
        )
    )
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    res = cli("run", str(script), str(src), "--job-id", "bad", "--keep-shuffle", "-q")
    assert res.returncode == 2
    status = cli("status", "bad")
    assert status.returncode == 0, status.stderr
    assert "failing" in status.stdout
    assert "mapper raised ValueError: always" in status.stdout


def test_resume_refuses_changed_input_or_script_unless_restart(
    cli: Run, tmp_path: Path, job: tuple[str, Path]
) -> None:
    script, src = job
    args = [
        "run",
        script,
        str(src),
        "-o",
        str(tmp_path / "out"),
        "--job-id",
        "r",
        "--keep-shuffle",
        "-q",
    ]
    assert cli(*args).returncode == 0
    src.write_text(src.read_text().replace("999\n", "998\n"))  # same size, new content
    changed = cli(*args, "--overwrite")
    assert changed.returncode == 2
    assert "its input changed since it started" in changed.stderr
    assert "--restart" in changed.stderr

    restarted = cli(*args, "--overwrite", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    counts = dict(
        parse_text_output("".join(p.read_text() for p in sorted((tmp_path / "out").glob("part-*"))))
    )
    assert counts["8"] == 101 and counts["9"] == 99

    Path(script).write_text(Path(script).read_text() + "\n# edited\n")
    edited = cli(*args, "--overwrite")
    assert edited.returncode == 2
    assert "its script changed since it started" in edited.stderr


def test_retry_user_errors_retries_then_fails(cli: Run, tmp_path: Path) -> None:
    script = tmp_path / "flaky.py"
    marks = tmp_path / "marks"
    marks.mkdir()
    script.write_text(
        textwrap.dedent(
            f"""
            import os, uuid
            from mrk8s import MapReduce

            class Flaky(MapReduce):
                def mapper(self, _, line):
                    open(os.path.join({str(marks)!r}, uuid.uuid4().hex), "w").close()
                    raise RuntimeError("user bug")

                def reducer(self, k, v):
                    yield k, v
            """
        )
    )
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    fast = cli("run", str(script), str(src), "--split-size", "1MiB", "-w", "1")
    assert fast.returncode == 2
    tasks_with_input = len(list(marks.iterdir()))
    assert tasks_with_input == 1  # one attempt: user errors are not retried by default
    for p in marks.iterdir():
        p.unlink()
    retried = cli(
        "run",
        str(script),
        str(src),
        "--split-size",
        "1MiB",
        "-w",
        "1",
        "--retry-user-errors",
        "--max-attempts",
        "3",
    )
    assert retried.returncode == 2
    assert len(list(marks.iterdir())) == 3
    assert "user bug" in retried.stderr
    assert "failed on all 3 attempts" in retried.stderr
