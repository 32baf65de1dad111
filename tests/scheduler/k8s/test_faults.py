"""Faults on the real test cluster, each ending with the exact output (or the user's error).

- a task's process SIGKILLed: the Job controller replaces the pod (same
  index, its failure count 1), the new attempt writes its own output;
- a pod evicted through the Eviction API: the Job's pod failure policy
  ignores it (not a failure), the task runs again;
- a user error (exit 2): the Job fails at once and the user reads their own
  traceback, as on the local backend;
- the driver SIGKILLed mid-map and run again with the same --job-id: it
  re-attaches to the running map Job (no second one) and skips what
  committed.

The task's process is found through its pod's status: the node agent that
runs pods as local processes reports ``local://PID`` as the container id.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from mrk8s.engine.driver import Driver, JobResult  # noqa: E402
from scheduler.backends.k8s import indexmap, names, render  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from shuffle import commit  # noqa: E402
from shuffle.store import FsspecStore  # noqa: E402
from tests.cluster.kube import wait_until  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.scheduler.k8s.conftest import Space  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SLOW_COUNT = '''
import time
from mrk8s import MapReduce


class SlowCount(MapReduce):
    """Counts words, sleeping a little per line so that a task lasts long enough to hit."""

    def configure_args(self, parser):
        parser.add_argument("--sleep", type=float, default=0.0)

    def mapper(self, _, line):
        if "poison" in line:
            raise ValueError(f"poison in {line!r}")
        if "crash" in line:  # the process dies on every attempt: not the user's error
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.options.sleep)
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
'''

LINES = 240


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    directory = tmp_path / "job"
    directory.mkdir()
    script = directory / "slow_count.py"
    script.write_text(SLOW_COUNT)
    return script


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text("".join(f"w{i % 7} w{i % 11} x{i % 3}\n" for i in range(LINES)))
    return path


def counts(path: Path) -> dict[str, int]:
    return dict(collections.Counter(path.read_text().split()))


def run_in_thread(
    executor: KubernetesExecutor, space: Space, script: Path, url: str, **options: Any
) -> tuple[threading.Thread, dict[str, Any]]:
    settings = space.run_settings(script, [url], keep_shuffle=True, **options)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = Driver(settings).run(executor)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread, outcome: dict[str, Any]) -> JobResult:
    thread.join(240)
    assert not thread.is_alive(), "the job did not finish"
    if "error" in outcome:
        raise outcome["error"]
    result: JobResult = outcome["result"]
    return result


def stage_pods(space: Space, job_id: str, stage: str = "map") -> list[Any]:
    core = kubernetes.client.CoreV1Api(space.api)
    selector = ",".join(f"{k}={v}" for k, v in names.stage_labels(job_id, 0, stage).items())
    return core.list_namespaced_pod(space.namespace, label_selector=selector).items


def running_pid(pod: Any) -> int | None:
    for status in pod.status.container_statuses or []:
        if status.state.running and (status.container_id or "").startswith("local://"):
            return int(status.container_id.removeprefix("local://"))
    return None


def by_index(pods: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = collections.defaultdict(list)
    for pod in pods:
        out[int(pod.metadata.labels[names.INDEX_LABEL])].append(pod)
    return out


def test_a_killed_task_runs_again_as_a_new_pod_of_the_same_index(
    executor: KubernetesExecutor, space: Space, job_script: Path, text: Path
):
    url = space.upload(text, "in/text.txt")
    thread, outcome = run_in_thread(
        executor, space, job_script, url, job_id="kill", job_args={"sleep": 0.03},
        max_split_bytes=1 << 10, reducers=2,
    )  # fmt: skip

    victim = wait_until(
        lambda: next((p for p in stage_pods(space, "kill") if running_pid(p)), None),
        timeout=120,
        what="a running map pod",
    )
    os.kill(running_pid(victim), signal.SIGKILL)
    result = finished(thread, outcome)

    assert dict(result.records(space.bucket.storage_options)) == counts(text)
    index = int(victim.metadata.labels[names.INDEX_LABEL])
    pods = sorted(by_index(stage_pods(space, "kill"))[index], key=lambda p: p.metadata.name)
    assert len(pods) == 2
    killed = next(p for p in pods if p.metadata.uid == victim.metadata.uid)
    again = next(p for p in pods if p.metadata.uid != victim.metadata.uid)
    assert killed.status.container_statuses[0].state.terminated.exit_code == 137
    assert again.status.phase == "Succeeded"
    assert again.metadata.annotations[render.FAILURE_COUNT_ANNOTATION] == "1"
    store = FsspecStore(f"{space.bucket.url}/shuffle/kill", space.bucket.storage_options)
    record = commit.read(store, 0, "map", index)
    assert record is not None and record.attempt == 2
    assert record.data_path == f"s0/map-{index:05d}-a2.arrow"
    stats = result.summary["stages"]["step0-map"]
    assert stats["failed_attempts"] == 1
    assert stats["attempts"] == stats["tasks"] + 1


def test_an_evicted_pod_is_not_a_failure(
    executor: KubernetesExecutor, space: Space, job_script: Path, text: Path
):
    url = space.upload(text, "in/text.txt")
    thread, outcome = run_in_thread(
        executor, space, job_script, url, job_id="evict", job_args={"sleep": 0.03},
        max_split_bytes=1 << 10, reducers=2, max_attempts=1,
    )  # fmt: skip
    core = kubernetes.client.CoreV1Api(space.api)

    victim = wait_until(
        lambda: next((p for p in stage_pods(space, "evict") if running_pid(p)), None),
        timeout=120,
        what="a running map pod",
    )
    name = victim.metadata.name
    core.create_namespaced_pod_eviction(
        name, space.namespace, {"metadata": {"name": name, "namespace": space.namespace}}
    )
    result = finished(thread, outcome)

    # With max_attempts=1 any counted failure would have failed the job.
    assert dict(result.records(space.bucket.storage_options)) == counts(text)
    index = int(victim.metadata.labels[names.INDEX_LABEL])
    pods = by_index(stage_pods(space, "evict"))[index]
    again = [p for p in pods if p.metadata.uid != victim.metadata.uid]
    assert len(again) == 1
    assert again[0].metadata.annotations[render.IGNORED_FAILURE_COUNT_ANNOTATION] == "1"
    stats = result.summary["stages"]["step0-map"]
    assert stats["failed_attempts"] == 0
    assert stats["attempts"] == stats["tasks"] + 1


def _error_text(stderr: str) -> str:
    """The error paragraph without file paths (they differ between machines and backends)."""
    text = stderr[stderr.index("mrk8s: job failed:") :]
    text = re.sub(r'File "[^"]*slow_count.py"', 'File "slow_count.py"', text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("mrk8s: job "))


def test_a_user_error_fails_the_job_at_once_with_the_users_traceback(
    space: Space, job_script: Path, tmp_path: Path, cli: Any
):
    poisoned = tmp_path / "poisoned.txt"
    poisoned.write_text("a b\n" * 50 + "c poison d\n" + "e f\n" * 50)
    url = space.upload(poisoned, "in/poisoned.txt")

    out = cli(
        "run", str(job_script), url, *space.cli_args(), "--job-id", "poison",
        "--split-size", "1KiB", "--max-attempts", "3",
    )  # fmt: skip
    local = cli("run", str(job_script), str(poisoned), "--split-size", "1KiB")

    assert out.returncode == 2
    assert "ValueError: poison in 'c poison d'" in out.stderr
    assert "retrying" not in out.stderr  # the other pods were stopped, not failed
    assert 'raise ValueError(f"poison in {line!r}")' in out.stderr
    assert local.returncode == 2
    # The same paragraph as on the local backend, paths aside.
    assert _error_text(out.stderr) == _error_text(local.stderr)
    batch = kubernetes.client.BatchV1Api(space.api)
    job = batch.read_namespaced_job(names.stage_job_name("poison", 0, "map"), space.namespace)
    failed = [c for c in job.status.conditions if c.type == "Failed" and c.status == "True"]
    assert [c.reason for c in failed] == ["PodFailurePolicy"]
    pods = by_index(stage_pods(space, "poison"))
    bad = [i for i, ps in pods.items() if any(_exit_code(p) == 2 for p in ps)]
    assert len(bad) == 1
    assert len(pods[bad[0]]) == 1  # not retried, although --max-attempts 3


def _exit_code(pod: Any) -> int | None:
    for status in pod.status.container_statuses or []:
        if status.state.terminated:
            return int(status.state.terminated.exit_code)
    return None


def test_a_driver_killed_mid_map_reattaches_and_skips_committed_tasks(
    space: Space, job_script: Path, text: Path
):
    url = space.upload(text, "in/text.txt")
    out_url = f"{space.bucket.url}/out"
    command = [
        sys.executable, "-m", "mrk8s.cli", "run", str(job_script), url, *space.cli_args(),
        "--job-id", "restart", "--split-size", "1KiB", "--workers", "2", "-o", out_url, "-q",
        "--", "--sleep", "0.03",
    ]  # fmt: skip
    store = FsspecStore(f"{space.bucket.url}/shuffle/restart", space.bucket.storage_options)
    batch = kubernetes.client.BatchV1Api(space.api)
    map_job = names.stage_job_name("restart", 0, "map")

    first = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: commit.committed_indexes(store, 0, "map"), timeout=180, what="a map commit"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    before = batch.read_namespaced_job(map_job, space.namespace)
    committed = commit.committed_indexes(store, 0, "map")
    tasks = indexmap.decode(before.metadata.annotations[indexmap.ANNOTATION])
    assert len(committed) < len(tasks)  # killed mid-map
    assert not any(c.type == "Complete" for c in before.status.conditions or [])

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)

    assert again.returncode == 0, again.stderr
    import s3fs

    fs = s3fs.S3FileSystem(**space.bucket.storage_options)
    got: dict[str, int] = {}
    for part in sorted(fs.glob(f"{out_url}/part-*")):
        for line in fs.cat(part).decode().splitlines():
            key, _, value = line.partition("\t")
            got[json.loads(key)] = json.loads(value)
    assert got == counts(text)
    jobs = batch.list_namespaced_job(
        space.namespace, label_selector=names.job_selector("restart")
    ).items
    maps = [j for j in jobs if j.metadata.labels[names.STAGE_LABEL] == "map"]
    assert [j.metadata.uid for j in maps] == [before.metadata.uid]  # the same Job, not a new one
    summary = json.loads(fs.cat(f"{out_url}/summary.json"))
    assert summary["stages"]["step0-map"]["tasks_skipped"] >= len(committed)
    # Every map task ran exactly once: one pod per index.
    assert {i: len(ps) for i, ps in by_index(stage_pods(space, "restart")).items()} == {
        i: 1 for i in range(before.spec.completions)
    }


def test_ctrl_c_deletes_the_running_job_and_its_pods(space: Space, job_script: Path, text: Path):
    url = space.upload(text, "in/text.txt")
    command = [
        sys.executable, "-m", "mrk8s.cli", "run", str(job_script), url, *space.cli_args(),
        "--job-id", "interrupted", "--split-size", "1KiB", "--", "--sleep", "0.05",
    ]  # fmt: skip
    batch = kubernetes.client.BatchV1Api(space.api)
    core = kubernetes.client.CoreV1Api(space.api)
    selector = names.job_selector("interrupted")
    driver = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(
            lambda: any(running_pid(p) for p in stage_pods(space, "interrupted")),
            timeout=120,
            what="a running map pod",
        )
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()

    assert driver.returncode == 130
    assert stderr.splitlines()[-1].startswith("mrk8s: interrupted; job interrupted stopped")
    wait_until(
        lambda: (
            not batch.list_namespaced_job(space.namespace, label_selector=selector).items
            and not core.list_namespaced_pod(space.namespace, label_selector=selector).items
        ),
        timeout=90,
        what="the interrupted job's Job and pods to be gone",
    )


def test_a_task_that_fails_on_every_attempt_fails_the_job_after_max_attempts(
    space: Space, job_script: Path, tmp_path: Path, cli: Any
):
    crashing = tmp_path / "crashing.txt"
    crashing.write_text("a b\n" * 50 + "c crash d\n" + "e f\n" * 50)
    url = space.upload(crashing, "in/crashing.txt")

    out = cli(
        "run", str(job_script), url, *space.cli_args(), "--job-id", "crash",
        "--split-size", "1KiB", "--max-attempts", "2",
    )  # fmt: skip

    assert out.returncode == 1  # not a user error: a rerun may succeed
    assert "was killed by SIGKILL (exit 137)" in out.stderr
    assert "(task failed on all 2 attempts; giving up)" in out.stderr
    assert "--job-id crash" in out.stderr  # its finished tasks are kept to resume
    batch = kubernetes.client.BatchV1Api(space.api)
    job = batch.read_namespaced_job(names.stage_job_name("crash", 0, "map"), space.namespace)
    failed = [c for c in job.status.conditions if c.type == "Failed" and c.status == "True"]
    assert [c.reason for c in failed] == ["MaxFailedIndexesExceeded"]
    pods = by_index(stage_pods(space, "crash"))
    crashed = [i for i, ps in pods.items() if any(_exit_code(p) == 137 for p in ps)]
    assert len(crashed) == 1
    assert sorted(_exit_code(p) for p in pods[crashed[0]]) == [137, 137]  # two attempts
