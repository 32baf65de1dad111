"""Several tasks per pod (``--tasks-per-pod``) on the real test cluster.

A stage's Job then has one completion index per batch; each pod runs its
batch one task after another in one process. What must hold as with one task
per pod: the exact output; a task that committed is not run again when its
pod is (a SIGKILLed batch pod's replacement skips the tasks its predecessor
committed, as their commit records' attempts show); per-task events; a user
error fails the job at once with the user's own traceback.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from scheduler.backends.k8s import indexmap, names  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from shuffle import commit  # noqa: E402
from shuffle.store import FsspecStore  # noqa: E402
from tests.cluster.kube import wait_until  # noqa: E402
from tests.scheduler.k8s.conftest import Space, executor_in  # noqa: E402
from tests.scheduler.k8s.test_faults import (  # noqa: E402
    counts,
    finished,
    job_script,
    run_in_thread,
    running_pid,
    stage_pods,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

#: 36 lines of 512 bytes, 6 lines per 3 KiB split: 6 map tasks with --split-size 3KiB.
SPLIT = 3 << 10

__all__ = ["job_script"]  # a fixture of test_faults, used here


@pytest.fixture
def six_splits(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    lines = [" ".join(f"w{(i * 7 + j) % 13}" for j in range(200))[:511] for i in range(36)]
    path.write_text("".join(line.rsplit(" ", 1)[0].ljust(511) + "\n" for line in lines))
    return path


def batched(space: Space, per_pod: int) -> Iterator[KubernetesExecutor]:
    yield from executor_in(space, tasks_per_pod=per_pod)


@pytest.fixture
def two_per_pod(space: Space) -> Iterator[KubernetesExecutor]:
    yield from batched(space, 2)


@pytest.fixture
def three_per_pod(space: Space) -> Iterator[KubernetesExecutor]:
    yield from batched(space, 3)


def map_job(space: Space, job_id: str) -> Any:
    batch = kubernetes.client.BatchV1Api(space.api)
    return batch.read_namespaced_job(names.stage_job_name(job_id, 0, "map"), space.namespace)


def test_six_map_tasks_two_per_pod_give_the_exact_output(
    two_per_pod: KubernetesExecutor, space: Space, job_script: Path, six_splits: Path
):
    url = space.upload(six_splits, "in/text.txt")
    thread, outcome = run_in_thread(
        two_per_pod, space, job_script, url, job_id="pairs", job_args={"sleep": 0.0},
        max_split_bytes=SPLIT, reducers=2,
    )  # fmt: skip
    result = finished(thread, outcome)

    assert dict(result.records(space.bucket.storage_options)) == counts(six_splits)
    job = map_job(space, "pairs")
    assert job.metadata.annotations[indexmap.ANNOTATION] == "0-5/2"
    assert job.spec.completions == 3
    pods = stage_pods(space, "pairs")
    assert sorted(int(p.metadata.labels[names.INDEX_LABEL]) for p in pods) == [0, 1, 2]
    store = FsspecStore(f"{space.bucket.url}/shuffle/pairs", space.bucket.storage_options)
    nodes = {i: commit.read(store, 0, "map", i).node for i in range(6)}  # type: ignore[union-attr]
    # A pod's two tasks ran where the pod ran.
    for pod in pods:
        first, second = indexmap.batch(job.metadata.annotations[indexmap.ANNOTATION],
                                       int(pod.metadata.labels[names.INDEX_LABEL]))  # fmt: skip
        assert nodes[first] == nodes[second] == pod.spec.node_name
    stats = result.summary["stages"]["step0-map"]
    # Per task: one "started" each (the driver follows each pod's commit records).
    assert (stats["tasks"], stats["attempts"], stats["failed_attempts"]) == (6, 6, 0)


def test_a_batch_pod_killed_mid_batch_reruns_only_its_uncommitted_tasks(
    three_per_pod: KubernetesExecutor, space: Space, job_script: Path, six_splits: Path
):
    url = space.upload(six_splits, "in/text.txt")
    thread, outcome = run_in_thread(
        three_per_pod, space, job_script, url, job_id="killbatch", job_args={"sleep": 0.25},
        max_split_bytes=SPLIT, reducers=2,
    )  # fmt: skip
    store = FsspecStore(f"{space.bucket.url}/shuffle/killbatch", space.bucket.storage_options)

    def first_task_committed() -> tuple[Any, list[int]] | None:
        for pod in stage_pods(space, "killbatch"):
            if not running_pid(pod):
                continue
            spec = map_job(space, "killbatch").metadata.annotations[indexmap.ANNOTATION]
            tasks = indexmap.batch(spec, int(pod.metadata.labels[names.INDEX_LABEL]))
            done = commit.committed_indexes(store, 0, "map")
            if tasks[0] in done and tasks[-1] not in done:
                return pod, tasks
        return None

    victim, tasks = wait_until(
        first_task_committed, timeout=120, interval=0.1, what="a batch pod past its first task"
    )
    os.kill(running_pid(victim), signal.SIGKILL)
    result = finished(thread, outcome)

    assert dict(result.records(space.bucket.storage_options)) == counts(six_splits)
    attempts = {i: commit.read(store, 0, "map", i).attempt for i in tasks}  # type: ignore[union-attr]
    ran_again = [i for i in tasks if attempts[i] == 2]
    # The first task committed in attempt 1 and was skipped; the rest ran in attempt 2.
    assert attempts[tasks[0]] == 1
    assert ran_again and ran_again == tasks[len(tasks) - len(ran_again) :]
    completion = int(victim.metadata.labels[names.INDEX_LABEL])
    pods = [
        p for p in stage_pods(space, "killbatch")
        if int(p.metadata.labels[names.INDEX_LABEL]) == completion
    ]  # fmt: skip
    assert len(pods) == 2
    again = next(p for p in pods if p.metadata.uid != victim.metadata.uid)
    log = kubernetes.client.CoreV1Api(space.api).read_namespaced_pod_log(
        again.metadata.name, space.namespace
    )
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # One line per task of the batch; the first said it was skipped.
    assert [line["index"] for line in lines] == tasks
    assert lines[0]["skipped"] == "committed by attempt 1"
    assert all("skipped" not in line for line in lines if line["index"] in ran_again)
    stats = result.summary["stages"]["step0-map"]
    assert stats["failed_attempts"] == 1


def test_a_user_error_in_a_batch_fails_the_job_at_once(
    space: Space, job_script: Path, tmp_path: Path, cli: Any
):
    poisoned = tmp_path / "poisoned.txt"
    poisoned.write_text("a b\n" * 600 + "c poison d\n" + "e f\n" * 200)
    url = space.upload(poisoned, "in/poisoned.txt")

    out = cli(
        "run", str(job_script), url, *space.cli_args(), "--job-id", "poisonbatch",
        "--split-size", "1KiB", "--max-attempts", "3", "--tasks-per-pod", "2",
    )  # fmt: skip

    assert out.returncode == 2, out.stderr
    assert "ValueError: poison in 'c poison d'" in out.stderr
    assert 'raise ValueError(f"poison in {line!r}")' in out.stderr
    assert "retrying" not in out.stderr
    job = map_job(space, "poisonbatch")
    assert job.metadata.annotations[indexmap.ANNOTATION].endswith("/2")
    failed = [c for c in job.status.conditions if c.type == "Failed" and c.status == "True"]
    assert [c.reason for c in failed] == ["PodFailurePolicy"]
    by_completion = collections.Counter(
        int(p.metadata.labels[names.INDEX_LABEL]) for p in stage_pods(space, "poisonbatch")
    )
    assert max(by_completion.values()) == 1  # not retried, although --max-attempts 3
