"""``mrk8s logs``, ``status``, ``cancel`` and ``submit`` against the real test cluster.

The commands run as a user runs them (a subprocess, ``--kubeconfig`` of the
cluster's admin, ``-n``). The Jobs and pods they find are real objects with
the labels and owner of ``scheduler/backends/k8s/names.py``, run by the real
Job controller and the node agent that runs pods as local processes; the
tests create them as the k8s executor does, so the commands are checked
without it. What the commands print is compared with what the API says.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from scheduler.backends.k8s import driverjob, names
from tests.cluster import kube
from tests.cluster.controlplane import Cluster
from tests.conftest import EXAMPLES, CLIResult
from tests.manifests.kustomize import installed

pytestmark = pytest.mark.cluster

__all__ = ["installed"]  # the fixture, imported to be used here

TASK = "import os\nprint('{stage} task', os.environ['JOB_COMPLETION_INDEX'], flush=True)\n"


def _owner(api: Any, namespace: str, job_id: str) -> dict[str, Any]:
    created = kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
        namespace, driverjob.owner_configmap(job_id)
    )
    return driverjob.owner_reference(created.to_dict())


def _stage_job(
    api: Any, namespace: str, job_id: str, step: int, stage: str, tasks: int, owner: dict[str, Any]
) -> str:
    """A stage's Indexed Job as the executor makes it: names.py's name, labels and owner."""
    name = names.stage_job_name(job_id, step, stage)
    body = kube.python_job(name, TASK.format(stage=stage), completions=tasks)
    labels = names.stage_labels(job_id, step, stage)
    body["metadata"].update(labels=labels, ownerReferences=[owner])
    body["spec"]["template"]["metadata"] = {"labels": labels}
    kube.create_job(api, namespace, body)
    return name


@pytest.fixture
def k8s_cli(
    cli: Callable[..., CLIResult], cluster: Cluster, namespace: str
) -> Callable[..., CLIResult]:
    """``mrk8s ARGS --kubeconfig ADMIN -n NAMESPACE``."""

    def run(*args: str, timeout: float = 120) -> CLIResult:
        return cli(*args, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, timeout=timeout)

    return run


@pytest.fixture
def two_stages(api: Any, namespace: str) -> str:
    """A finished job with a map stage of 3 tasks and a reduce stage of 2, in step 1."""
    job_id = f"WordCount-{uuid.uuid4().hex[:4]}"
    owner = _owner(api, namespace, job_id)
    for stage, tasks in (("map", 3), ("reduce", 2)):
        name = _stage_job(api, namespace, job_id, 0, stage, tasks, owner)
        finished = kube.wait_finished(api, namespace, name, timeout=60)
        assert kube.condition(finished, "Complete")
    return job_id


@pytest.mark.timeout(180)
def test_logs_prints_a_tasks_output_found_by_its_labels(
    k8s_cli: Callable[..., CLIResult], two_stages: str
) -> None:
    one = k8s_cli("logs", two_stages, "--step", "1", "--stage", "map", "--index", "1")
    assert (one.returncode, one.stdout) == (0, "map task 1\n"), one.stderr

    reduce = k8s_cli("logs", two_stages, "--stage", "reduce")
    assert reduce.returncode == 0, reduce.stderr
    blocks = [b for b in reduce.stdout.split("==> ") if b]
    assert len(blocks) == 2
    for index, block in enumerate(blocks):
        header, text = block.split(" <==\n")
        assert f"step 1 reduce task {index}, Succeeded on node-" in header
        assert text == f"reduce task {index}\n"

    everything = k8s_cli("logs", two_stages)
    assert everything.stdout.count("==> ") == 5
    assert everything.stdout.index("map task 2") < everything.stdout.index("reduce task 0")

    missing = k8s_cli("logs", two_stages, "--stage", "map", "--index", "7")
    assert missing.returncode == 2
    assert f"job {two_stages} has no pod of stage map, index 7" in missing.stderr
    assert "step 1 map task 2" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.timeout(120)
def test_logs_follow_prints_a_running_task_until_it_ends(
    api: Any, namespace: str, k8s_cli: Callable[..., CLIResult]
) -> None:
    job_id = f"slow-{uuid.uuid4().hex[:4]}"
    owner = _owner(api, namespace, job_id)
    name = names.stage_job_name(job_id, 0, "map")
    code = (
        "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.4)\n"
    )
    body = kube.python_job(name, code, completions=1)
    labels = names.stage_labels(job_id, 0, "map")
    body["metadata"].update(labels=labels, ownerReferences=[owner])
    body["spec"]["template"]["metadata"] = {"labels": labels}
    kube.create_job(api, namespace, body)
    kube.wait_until(lambda: kube.pods(api, namespace, name), timeout=30, what="the pod")

    followed = k8s_cli("logs", job_id, "--stage", "map", "--index", "0", "--follow")

    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "".join(f"line {i}\n" for i in range(6))
    (pod,) = kube.pods(api, namespace, name)
    assert pod.status.phase in ("Running", "Succeeded")  # it printed its last line


@pytest.mark.timeout(240)
def test_status_adds_jobs_and_pods_by_phase_to_the_commit_records(
    api: Any,
    namespace: str,
    cli: Callable[..., CLIResult],
    k8s_cli: Callable[..., CLIResult],
    shuffle_dir: Path,
    tmp_path: Path,
) -> None:
    # A real job's commit records (local backend), and Kubernetes objects of the same id.
    data = tmp_path / "in.txt"
    data.write_text("a b a\n" * 100)
    job_id = f"counted-{uuid.uuid4().hex[:4]}"
    ran = cli(
        "run",
        str(EXAMPLES / "wordcount.py"),
        str(data),
        "--job-id",
        job_id,
        "--keep-shuffle",
        "-q",
        "-o",
        str(tmp_path / "out"),
    )
    assert ran.returncode == 0, ran.stderr
    owner = _owner(api, namespace, job_id)
    name = _stage_job(api, namespace, job_id, 0, "map", 2, owner)
    kube.wait_finished(api, namespace, name, timeout=60)

    shown = k8s_cli("status", job_id, "--shuffle-dir", str(shuffle_dir))

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"job {job_id}")
    assert any(line.startswith("step 1/1 map") and "done" in line for line in lines)
    assert f"kubernetes: namespace {namespace}, owner ConfigMap {names.owner_name(job_id)}" in lines
    (row,) = [line for line in lines if name in line]
    assert row.split() == [name, "complete", "2/2", "0", "0"]
    phases = sorted(p.status.phase for p in kube.pods(api, namespace, name))
    assert phases == ["Succeeded", "Succeeded"]
    assert lines[-1] == "  pods: Succeeded 2"

    # Without cluster options it is what it was: the commit records only.
    plain = cli("status", job_id, "--shuffle-dir", str(shuffle_dir))
    assert plain.returncode == 0 and "kubernetes" not in plain.stdout
    assert (
        plain.stdout
        == "\n".join(lines[: lines.index(next(x for x in lines if x.startswith("kubernetes")))])
        + "\n"
    )


@pytest.mark.timeout(240)
def test_cancel_deletes_the_owner_and_the_garbage_collector_takes_the_rest(
    api: Any, namespace: str, k8s_cli: Callable[..., CLIResult]
) -> None:
    job_id = f"doomed-{uuid.uuid4().hex[:4]}"
    owner = _owner(api, namespace, job_id)
    code = "import time\ntime.sleep(120)\n"
    name = names.stage_job_name(job_id, 0, "map")
    body = kube.python_job(name, code, completions=2)
    labels = names.stage_labels(job_id, 0, "map")
    body["metadata"].update(labels=labels, ownerReferences=[owner])
    body["spec"]["template"]["metadata"] = {"labels": labels}
    kube.create_job(api, namespace, body)
    kube.wait_until(
        lambda: (
            len([p for p in kube.pods(api, namespace, name) if p.status.phase == "Running"]) == 2
        ),
        timeout=60,
        what="two running pods",
    )

    cancelled = k8s_cli("cancel", job_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert (
        f"cancelled job {job_id} in namespace {namespace}: deleted ConfigMap "
        f"{names.owner_name(job_id)} (background propagation); Jobs deleted with it: {name}; "
        "pods: 2"
    ) in cancelled.stdout
    batch = kubernetes.client.BatchV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    selector = names.job_selector(job_id)
    kube.wait_until(
        lambda: (
            not batch.list_namespaced_job(namespace, label_selector=selector).items
            and not core.list_namespaced_pod(namespace, label_selector=selector).items
        ),
        timeout=90,
        what="the garbage collector to delete the Job and its pods",
    )
    again = k8s_cli("cancel", job_id)
    assert again.returncode == 2
    assert f"no job {job_id!r} in namespace {namespace!r}" in again.stderr


@pytest.mark.timeout(120)
def test_an_unknown_job_id_says_so_and_lists_the_jobs_there(
    k8s_cli: Callable[..., CLIResult], two_stages: str, cluster: Cluster
) -> None:
    for command in ("logs", "status", "cancel"):
        result = k8s_cli(command, "no-such-job")
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "no job 'no-such-job' in namespace" in result.stderr
        assert f"the jobs there are: {two_stages}" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_missing_kubeconfig_is_a_clear_usage_error(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    result = cli("logs", "x", "--kubeconfig", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert f"--kubeconfig {tmp_path / 'nope'} does not exist, and this is not a pod" in (
        result.stderr
    )
    assert "pass --kubeconfig PATH (and --context NAME)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_an_unknown_context_names_the_ones_there(
    cli: Callable[..., CLIResult], cluster: Cluster
) -> None:
    result = cli("status", "x", "--kubeconfig", str(cluster.kubeconfig), "--context", "prod")
    assert result.returncode == 2
    assert f"cannot use kubeconfig {cluster.kubeconfig} with --context prod" in result.stderr
    assert "its contexts are" in result.stderr


@pytest.mark.timeout(180)
def test_submit_creates_the_driver_job_its_code_and_owner_and_cancel_removes_them(
    api: Any, cluster: Cluster, installed: str, cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    code = tmp_path / "job"
    code.mkdir()
    shutil.copy(EXAMPLES / "wordcount.py", code / "wordcount.py")
    (code / "helpers").mkdir()
    (code / "helpers" / "words.txt").write_text("x y x\n")
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    job_id = f"submitted-{uuid.uuid4().hex[:4]}"

    submitted = cli(
        "submit",
        str(code / "wordcount.py"),
        "s3://bucket/in/",
        "-o",
        "s3://bucket/out",
        "--reducers",
        "3",
        "--job-id",
        job_id,
        "--image",
        "reg.example/mrk8s:9",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        installed,
        "--",
        "--top",
        "5",
    )

    assert submitted.returncode == 0, submitted.stderr
    assert f"submitted job {job_id} to namespace {installed}" in submitted.stdout
    assert f"mrk8s logs {job_id} -n {installed} --kubeconfig" in submitted.stdout
    batch = kubernetes.client.BatchV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    owner = core.read_namespaced_config_map(names.owner_name(job_id), installed)
    job = batch.read_namespaced_job(driverjob.driver_job_name(job_id), installed)
    stored = core.read_namespaced_config_map(driverjob.code_name(job_id), installed)
    for obj in (job, stored):
        (ref,) = obj.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid) == (
            "ConfigMap",
            owner.metadata.name,
            owner.metadata.uid,
        )
        assert obj.metadata.labels[names.JOB_ID_LABEL] == names.label_value(job_id)
    assert job.metadata.labels[names.STAGE_LABEL] == "driver"
    pod = job.spec.template.spec
    assert pod.service_account_name == "mrk8s-driver"
    assert pod.priority_class_name == "mrk8s"
    (container,) = pod.containers
    assert container.image == "reg.example/mrk8s:9"
    assert container.command == [
        "mrk8s",
        "run",
        "/mrk8s/code/wordcount.py",
        "s3://bucket/in/",
        "-o",
        "s3://bucket/out",
        "--reducers",
        "3",
        "--backend",
        "k8s",
        "--job-id",
        job_id,
        "--namespace",
        installed,
        "--image",
        "reg.example/mrk8s:9",
        "--",
        "--top",
        "5",
    ]
    # The code: the script and the file beside it, not .git.
    projected = pod.volumes[0].projected.sources[0].config_map
    paths = {item.key: item.path for item in projected.items}
    assert sorted(paths.values()) == ["helpers/words.txt", "wordcount.py"]
    by_path = {path: stored.data[key] for key, path in paths.items()}
    assert by_path["wordcount.py"] == (EXAMPLES / "wordcount.py").read_text()
    assert by_path["helpers/words.txt"] == "x y x\n"
    # The same id again is refused, and nothing is replaced.
    again = cli(
        "submit",
        str(code / "wordcount.py"),
        "--job-id",
        job_id,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        installed,
    )
    assert again.returncode == 2
    assert f"job {job_id!r} already exists in namespace {installed!r}" in again.stderr
    assert (
        core.read_namespaced_config_map(names.owner_name(job_id), installed).metadata.uid
        == owner.metadata.uid
    )

    cancelled = cli("cancel", job_id, "--kubeconfig", str(cluster.kubeconfig), "-n", installed)
    assert cancelled.returncode == 0, cancelled.stderr

    def gone() -> bool:
        jobs = batch.list_namespaced_job(installed, label_selector=names.job_selector(job_id))
        maps = core.list_namespaced_config_map(installed, label_selector=names.job_selector(job_id))
        return not jobs.items and not maps.items

    kube.wait_until(gone, timeout=90, what="the driver Job and the code to be collected")


def test_submit_refuses_another_backend_and_a_missing_script(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    other = cli(
        "submit",
        str(EXAMPLES / "wordcount.py"),
        "--backend",
        "ray",
        "--kubeconfig",
        str(tmp_path / "unused"),
    )
    assert other.returncode == 2
    assert (
        "mrk8s submit runs the job on Kubernetes (--backend k8s), not --backend ray" in other.stderr
    )
    missing = cli("submit", str(tmp_path / "nope.py"))
    assert missing.returncode == 2
    assert "no job script at" in missing.stderr
