"""The driver Job of ``mrk8s submit`` on the real test cluster, and in-cluster credentials.

The driver pod is run by the real Job controller in the ``mrk8s`` namespace of
``manifests/`` (which enforces Pod Security "restricted") as the
``mrk8s-driver`` service account, by the node agent that runs pods as local
processes. Here it runs a job on the local backend inside its pod (the k8s
executor is not needed for that): a script that imports a module shipped
beside it, reading an input shipped beside it, its output on stdout, so the
pod's log is the job's output, compared with a Counter. A second pod shows
that ``connect.connect()`` inside a pod uses the pod's service account token
(in-cluster config) and that RBAC then applies to it.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from scheduler.backends.k8s import client, connect, driverjob, names, objects
from tests.cluster import kube
from tests.cluster.controlplane import Cluster
from tests.manifests.kustomize import installed
from tests.util import make_words

pytestmark = pytest.mark.cluster

__all__ = ["installed"]  # the fixture, imported to be used here

SCRIPT = """\
from helpers.tokens import words

from mrk8s import MapReduce


class ShippedWordCount(MapReduce):
    def mapper(self, key, line):
        for word in words(line):
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


@pytest.mark.timeout(240)
def test_the_driver_pod_runs_the_shipped_script_as_the_driver_account(
    api: Any, cluster: Cluster, installed: str, tmp_path: Path
) -> None:
    code = tmp_path / "job"
    (code / "helpers").mkdir(parents=True)
    (code / "data").mkdir()
    (code / "wc.py").write_text(SCRIPT)
    (code / "helpers" / "__init__.py").write_text("")
    (code / "helpers" / "tokens.py").write_text(
        "def words(line):\n    return line.lower().split()\n"
    )
    text = make_words(3000)
    (code / "data" / "in.txt").write_text(text)
    job_id = f"InPod-{uuid.uuid4().hex[:4]}"

    with connect.connect(kubeconfig=str(cluster.kubeconfig), namespace=installed) as connection:
        submitted = driverjob.submit(
            connection,
            job_id=job_id,
            image="mrk8s:test",
            script=str(code / "wc.py"),
            # The local backend inside the pod; its shuffle in the pod's /tmp emptyDir.
            run_args=["data/in.txt", "-q", "--workers", "2", "--shuffle-dir", "/tmp/shuffle"],
        )
        assert submitted.files == 4
        finished = kube.wait_finished(api, installed, submitted.driver_job, timeout=180)
        state = objects.find(connection, job_id)
        (pod,) = objects.select_pods(state, stage="driver")
        log = objects.read_log(connection, pod.name)

    assert kube.condition(finished, "Complete"), log
    assert pod.phase == "Succeeded" and pod.exit_code == 0
    stored = kubernetes.client.CoreV1Api(api).read_namespaced_pod(pod.name, installed)
    assert stored.spec.service_account_name == "mrk8s-driver"
    assert stored.metadata.labels[names.STAGE_LABEL] == "driver"
    assert log is not None
    counts = Counter()
    for line in log.splitlines():
        key, value = line.split("\t")
        counts[json.loads(key)] += json.loads(value)
    assert counts == Counter(text.lower().split())


def _wait_log(api: Any, namespace: str, name: str) -> tuple[str, str]:
    core = kubernetes.client.CoreV1Api(api)

    def finished() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = kube.wait_until(finished, timeout=90, what=f"pod {name} to finish")
    return pod.status.phase, core.read_namespaced_pod_log(name, namespace)


IN_CLUSTER = """\
import kubernetes.client
from kubernetes.client.exceptions import ApiException
from scheduler.backends.k8s.connect import connect

with connect() as c:
    print(c.namespace, c.source.split(' ')[0])
    jobs = kubernetes.client.BatchV1Api(c.api).list_namespaced_job(c.namespace)
    print('jobs listed', type(jobs.items).__name__)
    try:
        kubernetes.client.CoreV1Api(c.api).list_namespaced_secret(c.namespace)
    except ApiException as e:
        print('secrets', e.status)
"""


@pytest.mark.timeout(180)
def test_inside_a_pod_connect_uses_the_pods_service_account(api: Any, installed: str) -> None:
    name = f"incluster-{uuid.uuid4().hex[:4]}"
    kubernetes.client.CoreV1Api(api).create_namespaced_pod(
        installed,
        {
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": "mrk8s-driver",
                "restartPolicy": "Never",
                "securityContext": driverjob.pod_security_context(),
                "containers": [
                    {
                        "name": "main",
                        "image": "mrk8s:test",
                        "command": ["python", "-c", IN_CLUSTER],
                        "env": [
                            {
                                "name": client.SERVICE_ACCOUNT_ENV,
                                "value": client.SERVICE_ACCOUNT_DIR,
                            }
                        ],
                        "securityContext": driverjob.container_security_context(),
                    }
                ],
            },
        },
    )

    phase, log = _wait_log(api, installed, name)

    assert (phase, log) == ("Succeeded", f"{installed} in-cluster\njobs listed list\nsecrets 403\n")


def test_the_package_leaves_out_vcs_venvs_and_caches_and_refuses_too_much(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("print(1)\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    for skipped in (".git/HEAD", "__pycache__/job.pyc", "env/pyvenv.cfg", "env/lib/x.py"):
        (tmp_path / skipped).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / skipped).write_text("x")

    found = driverjob.package(str(tmp_path / "job.py"))

    assert sorted(found.files) == ["blob.bin", "job.py"]
    # Binary files count as base64 (4 bytes for 3), text as it is.
    assert found.stored_size == 4 * ((1024 + 2) // 3) + len("print(1)\n")
    with pytest.raises(driverjob.CodeTooLargeError) as refused:
        driverjob.package(str(tmp_path / "job.py"), limit=1024)
    assert str(refused.value).startswith(
        f"the job script's directory {tmp_path} holds 1 KiB (largest: blob.bin (1 KiB), "
        "job.py (0 KiB)), more than the 1 KiB that `mrk8s submit` carries"
    )
