"""``mrk8s worker``: one task of a job from nothing but the job's URL and an index.

Run here exactly as a pod of an Indexed Job runs it: a fresh process, the
index from $JOB_COMPLETION_INDEX, and an exit code that tells a user error
(2, do not retry) from anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mrk8s
from shuffle import commit
from shuffle.store import FsspecStore

pytestmark = pytest.mark.timeout(120)

JOB = """
from mrk8s import MapReduce

class WordCount(MapReduce):
    def mapper(self, _, line):
        if line == "explode":
            raise RuntimeError("bad line")
        for w in line.split():
            yield w, 1

    def reducer(self, w, ones):
        yield w, sum(ones)
"""


def worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mrk8s.cli", "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd="/",
    )


@pytest.fixture
def kept_job(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    src = tmp_path / "in.txt"
    src.write_text("a b\nb c\n" * 100)
    mrk8s.run(
        str(script),
        [str(src)],
        output=str(tmp_path / "out"),
        shuffle_dir=str(tmp_path / "shuffle"),
        job_id="j1",
        keep_shuffle=True,
        workers=1,
    )
    return str(tmp_path / "shuffle" / "j1"), tmp_path


def test_worker_reruns_a_map_task_from_the_index_variable(kept_job: tuple[str, Path]) -> None:
    job_dir, _ = kept_job
    store = FsspecStore(job_dir)
    before = commit.read(store, 0, "map", 1)
    assert before is not None
    store.remove(commit.record_path(0, "map", 1))

    proc = worker(
        "--job", job_dir, "--step", "0", "--stage", "map", env={"JOB_COMPLETION_INDEX": "1"}
    )

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["index"] == 1
    after = commit.read(store, 0, "map", 1)
    assert after is not None
    assert after.records_out == before.records_out
    assert after.partition_index.keys() == before.partition_index.keys()


def test_worker_runs_its_batch_and_skips_what_committed(kept_job: tuple[str, Path]) -> None:
    job_dir, _ = kept_job
    store = FsspecStore(job_dir)
    store.remove(commit.record_path(0, "map", 1))

    started = time.monotonic()
    proc = worker(
        "--job", job_dir, "--step", "0", "--stage", "map",
        env={"JOB_COMPLETION_INDEX": "0", "MRK8S_INDEX_MAP": "0-1/2", "MRK8S_ATTEMPT": "2"},
    )  # fmt: skip
    wall = time.monotonic() - started

    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["index"] for line in lines] == [0, 1]
    assert lines[0]["skipped"] == "committed by attempt 1"
    assert "skipped" not in lines[1]
    assert "task 1 of step 0 map (2 of 2 in this pod)" in proc.stderr
    assert [commit.read(store, 0, "map", i).attempt for i in (0, 1)] == [1, 2]  # type: ignore[union-attr]
    # Each line says when its task began in the process's life and how long it took:
    # the second began after the first ended, and both within the process's wall time.
    first, second = lines
    assert 0 < first["after_process_start"] < wall
    assert second["after_process_start"] >= first["after_process_start"] + first["seconds"] - 0.02
    assert second["after_process_start"] + second["seconds"] < wall


def test_worker_is_idempotent_for_a_committed_task(kept_job: tuple[str, Path]) -> None:
    job_dir, _ = kept_job
    store = FsspecStore(job_dir)
    before = commit.read(store, 0, "reduce", 0)
    proc = worker("--job", job_dir, "--step", "0", "--stage", "reduce", "--index", "0")
    assert proc.returncode == 0, proc.stderr
    assert commit.read(store, 0, "reduce", 0) == before


def test_worker_exit_codes(kept_job: tuple[str, Path]) -> None:
    job_dir, tmp_path = kept_job
    no_index = worker("--job", job_dir, "--step", "0", "--stage", "map")
    assert no_index.returncode != 0
    assert "JOB_COMPLETION_INDEX" in no_index.stderr
    missing = worker(
        "--job", str(tmp_path / "nope"), "--step", "0", "--stage", "map", "--index", "0"
    )
    assert missing.returncode == 1  # not a user error: the pod may be retried

    # A user error in the mapper: exit 2, so a pod failure policy fails the job at once.
    (tmp_path / "in.txt").write_text("explode\n" * 3)
    store = FsspecStore(job_dir)
    store.remove(commit.record_path(0, "map", 0))
    user = worker("--job", job_dir, "--step", "0", "--stage", "map", "--index", "0")
    assert user.returncode == 2, user.stderr
    assert "mapper raised RuntimeError: bad line" in user.stderr
