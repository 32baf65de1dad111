"""Faults a job must survive with the exact answer: killed workers, a killed
driver, damaged map outputs. Every fault here is real: processes are sent
SIGKILL, files on disk are truncated or have bytes flipped.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import mrk8s
from mrk8s.engine.driver import Driver
from mrk8s.engine.settings import RunSettings
from scheduler.backends.local import LocalExecutor
from scheduler.stage import EventSink, StageSpec
from shuffle import commit
from shuffle.store import FsspecStore
from tests.util import make_words, parse_text_output

pytestmark = pytest.mark.timeout(180)

# A word count whose tasks announce themselves (pid files in $FAULT_DIR) and,
# until the test has killed one, dawdle so that they can be killed mid-task.
JOB = """
import os, time
from mrk8s import MapReduce

FAULT_DIR = os.environ.get("FAULT_DIR", "")

def announce(stage):
    if FAULT_DIR:
        with open(os.path.join(FAULT_DIR, f"{stage}-{os.getpid()}-{time.time_ns()}.pid"), "w") as f:
            f.write(str(os.getpid()))
        if not os.path.exists(os.path.join(FAULT_DIR, f"killed-{stage}")):
            time.sleep(float(os.environ.get("FAULT_SLEEP", "1.0")))

class WordCount(MapReduce):
    def mapper_init(self):
        announce("map")

    def mapper(self, _, line):
        for w in line.split():
            yield w, 1

    def combiner(self, w, ones):
        yield w, sum(ones)

    def reducer_init(self):
        announce("reduce")

    def reducer(self, w, ones):
        yield w, sum(ones)
"""


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, str]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    src = tmp_path / "words.txt"
    text = make_words(40_000, vocab=800, seed=31)
    src.write_text(text)
    return script, src, text


def settings(tmp_path: Path, script: Path, src: Path, **extra: Any) -> RunSettings:
    base: dict[str, Any] = {
        "script": str(script),
        "inputs": (str(src),),
        "output": str(tmp_path / "out"),
        "shuffle_dir": str(tmp_path / "shuffle"),
        "workers": 2,
        "reducers": 3,
        "max_split_bytes": 32 << 10,
    }
    base.update(extra)
    return RunSettings(**base)


def output(tmp_path: Path) -> dict[object, object]:
    out = tmp_path / "out"
    text = "".join(p.read_text() for p in sorted(out.glob("part-*")))
    return dict(parse_text_output(text))


def kill_first(fault_dir: Path, stage: str, stop: threading.Event) -> None:
    """SIGKILL the first process that announces a task of ``stage``."""
    while not stop.is_set():
        pids = sorted(fault_dir.glob(f"{stage}-*.pid"))
        if pids:
            time.sleep(0.2)  # well inside the task (it sleeps FAULT_SLEEP)
            (fault_dir / f"killed-{stage}").write_text("")
            os.kill(int(pids[0].read_text()), signal.SIGKILL)
            return
        time.sleep(0.02)


@pytest.mark.parametrize("stage", ["map", "reduce"])
def test_worker_killed_mid_stage_is_retried(
    tmp_path: Path, job: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    script, src, text = job
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    monkeypatch.setenv("FAULT_DIR", str(fault_dir))
    stop = threading.Event()
    killer = threading.Thread(target=kill_first, args=(fault_dir, stage, stop), daemon=True)
    killer.start()
    try:
        result = Driver(settings(tmp_path, script, src)).run()
    finally:
        stop.set()
        killer.join()
    assert (fault_dir / f"killed-{stage}").exists(), "the test never killed a worker"
    assert output(tmp_path) == dict(collections.Counter(text.split()))
    # The killed attempt's half-written file did not reach the output.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_SUCCESS",
        "part-00000",
        "part-00001",
        "part-00002",
        "summary.json",
    ]
    stats = result.summary["stages"][f"step0-{stage}"]
    assert stats["failed_attempts"] == 1
    assert stats["attempts_max"] == 2
    assert stats["attempts"] == stats["tasks"] + 1


class CorruptingExecutor(LocalExecutor):
    """The local backend, plus one act of vandalism before the first reduce stage:
    ``damage`` is applied to one committed map output (after its commit, before
    any reducer reads it)."""

    def __init__(self, job_dir: str, damage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_dir = job_dir
        self.damage = damage
        self.damaged: str | None = None

    def run_stage(
        self,
        stage: StageSpec,
        *,
        indexes: Sequence[int],
        placement: Mapping[int, str] | None = None,
        on_event: EventSink | None = None,
    ) -> dict[int, dict[str, Any]]:
        if stage.payload["stage"] == "reduce" and self.damaged is None:
            record = commit.read(FsspecStore(self.job_dir), 0, "map", 1)
            assert record is not None
            path = Path(self.job_dir) / record.data_path
            data = bytearray(path.read_bytes())
            if self.damage == "truncate":
                data = data[: len(data) // 2]
            else:
                for i in range(len(data) // 3, len(data) // 3 + 8):
                    data[i] ^= 0xFF
            path.write_bytes(bytes(data))
            self.damaged = record.data_path
        return super().run_stage(stage, indexes=indexes, placement=placement, on_event=on_event)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_map_output_is_recomputed(
    tmp_path: Path, job: tuple[Path, Path, str], damage: str
) -> None:
    script, src, text = job
    s = settings(tmp_path, script, src, job_id="damaged")
    executor = CorruptingExecutor(str(tmp_path / "shuffle" / "damaged"), damage, num_workers=2)
    with executor:
        result = Driver(s).run(executor)
    assert executor.damaged is not None
    assert output(tmp_path) == dict(collections.Counter(text.split()))
    reduce_stats = result.summary["stages"]["step0-reduce"]
    assert reduce_stats["recomputed_map_tasks"] >= 1
    assert reduce_stats["failed_attempts"] == 0  # the reducers recovered by themselves


def commit_files(job_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (job_dir / "commits").glob("s0-*.json")
    }


def test_killed_driver_resumes_without_rerunning_committed_tasks(
    tmp_path: Path, job: tuple[Path, Path, str]
) -> None:
    script, src, text = job
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    (fault_dir / "killed-reduce").write_text("")  # only map tasks dawdle
    env = {**os.environ, "FAULT_DIR": str(fault_dir), "FAULT_SLEEP": "0.6"}
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "run", str(script), str(src),
        "-o", str(tmp_path / "out"), "--job-id", "resumable", "--workers", "2",
        "--reducers", "3", "--split-size", "16KiB", "--shuffle-dir", str(tmp_path / "shuffle"),
        "--keep-shuffle",
    ]  # fmt: skip
    job_dir = tmp_path / "shuffle" / "resumable"
    log = tmp_path / "first-run.log"
    with log.open("w") as err:
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while len(list((job_dir / "commits").glob("s0-map-*.json"))) < 3:
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "map tasks never committed"
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    time.sleep(0.5)  # the workers die with their driver
    before = commit_files(job_dir)
    n_maps = len(json.loads((job_dir / "plan.json").read_text())["steps"][0]["splits"])
    assert 3 <= len(before) < n_maps, "the driver was not killed mid-map"
    assert not (tmp_path / "out").exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    assert again.returncode == 0, again.stderr
    assert "resuming job resumable" in again.stderr
    assert output(tmp_path) == dict(collections.Counter(text.split()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    maps = summary["stages"]["step0-map"]
    assert maps["tasks_skipped"] >= len(before)
    assert maps["tasks_run"] + maps["tasks_skipped"] == n_maps
    # No task that had committed ran again: its commit record was not rewritten.
    after = commit_files(job_dir)
    assert {name: after[name] for name in before} == before


def test_resumed_job_leaves_committed_records_untouched(
    tmp_path: Path, job: tuple[Path, Path, str]
) -> None:
    """Rerunning a finished job whose shuffle was kept reuses every map output
    untouched; only the reducers run again, since their parts went to the output."""
    script, src, text = job
    first = mrk8s.run(
        str(script), [str(src)], output=str(tmp_path / "out"),
        shuffle_dir=str(tmp_path / "shuffle"), job_id="kept", keep_shuffle=True, workers=2,
    )  # fmt: skip
    job_dir = tmp_path / "shuffle" / "kept"
    before = commit_files(job_dir)
    second = mrk8s.run(
        str(script), [str(src)], output=str(tmp_path / "out"), overwrite=True,
        shuffle_dir=str(tmp_path / "shuffle"), job_id="kept", keep_shuffle=True, workers=2,
    )  # fmt: skip
    after = commit_files(job_dir)
    maps_before = {k: v for k, v in before.items() if k.startswith("s0-map-")}
    assert {k: v for k, v in after.items() if k.startswith("s0-map-")} == maps_before
    assert second.summary["stages"]["step0-map"]["tasks_run"] == 0
    assert second.summary["stages"]["step0-map"]["tasks_skipped"] == len(maps_before)
    reducers = first.summary["stages"]["step0-reduce"]["tasks"]
    assert second.summary["stages"]["step0-reduce"]["tasks_run"] == reducers
    assert output(tmp_path) == dict(collections.Counter(text.split()))


STRAGGLER = """
import os, time
from mrk8s import MapReduce

MARK = os.environ["STRAGGLER_MARK"]

class Straggler(MapReduce):
    def mapper(self, _, line):
        if line == "slow" and not os.path.exists(MARK):
            open(MARK, "w").close()
            time.sleep(60)  # only the first attempt of this task straggles
        yield line, 1

    def reducer(self, k, ones):
        yield k, sum(ones)
"""


def test_speculative_attempt_beats_a_straggler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "straggler.py"
    script.write_text(textwrap.dedent(STRAGGLER))
    monkeypatch.setenv("STRAGGLER_MARK", str(tmp_path / "straggled"))
    lines = [f"line{i:04d}" for i in range(400)]
    lines[150] = "slow"
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = mrk8s.run(
        str(script), [str(src)], output=str(tmp_path / "out"), workers=2, reducers=2,
        shuffle_dir=str(tmp_path / "shuffle"), max_split_bytes=256, speculative=True,
    )  # fmt: skip
    assert time.monotonic() - started < 45, "the straggler was waited for"
    assert (tmp_path / "straggled").exists()
    assert dict(result.records()) == dict(collections.Counter(lines))
    maps = result.summary["stages"]["step0-map"]
    assert maps["attempts"] == maps["tasks"] + 1  # exactly one speculative attempt
