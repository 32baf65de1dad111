"""What a pod sees on the node agent that runs pods as local processes, read back through the API.

The environment, volumes and working directory a kubelet would give, and the
status a kubelet reports: here the agent's side of the contract is under
test, read back through the real API server (pod status, `pods/log`).
"""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any

import kubernetes.client
import pytest

from tests.cluster import kube

pytestmark = pytest.mark.cluster

CODE = """
import os, sys
open('/scratch/note.txt', 'w').write('kept')
print(os.getcwd() == os.path.realpath(os.environ['SCRATCH']), os.path.exists('note.txt'))
print(os.environ['GREETING'], os.environ['POD_NAME'], os.environ['LITERAL'])
sys.exit(3)
"""


@pytest.mark.timeout(60)
def test_a_pod_gets_env_volumes_and_working_dir_and_its_exit_code_is_reported(
    api: Any, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "seer"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "containers": [
                    {
                        "name": "main",
                        "image": "python",
                        "command": ["python", "-c", CODE],
                        "workingDir": "/scratch",
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                        "env": [
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {"name": "GREETING", "value": "hello-$(POD_NAME)"},
                            {"name": "LITERAL", "value": "$$(POD_NAME)"},
                            {"name": "SCRATCH", "value": "/scratch"},
                        ],
                    }
                ],
            },
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("seer", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = kube.wait_until(finished, timeout=45, what="the pod to finish")

    assert pod.status.phase == "Failed"
    assert pod.status.pod_ip == pod.status.host_ip and pod.status.host_ip.startswith("127.0.0.")
    (status,) = pod.status.container_statuses
    terminated = status.state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert status.state.running is None
    assert terminated.started_at <= terminated.finished_at
    assert terminated.finished_at <= datetime.datetime.now(datetime.UTC)
    log = core.read_namespaced_pod_log("seer", namespace)
    assert log == "True True\nhello-seer seer $(POD_NAME)\n"


@pytest.mark.timeout(60)
def test_following_a_running_pods_log_streams_until_it_exits(api: Any, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(api)
    code = (
        "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.3)\n"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "talker"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "main", "image": "python", "command": ["python", "-c", code]}
                ],
            },
        },
    )

    def running() -> bool:
        return bool(core.read_namespaced_pod("talker", namespace).status.phase == "Running")

    kube.wait_until(running, timeout=45, what="the pod to run")
    stream = core.read_namespaced_pod_log("talker", namespace, follow=True, _preload_content=False)
    try:
        followed = b"".join(stream.stream()).decode()
    finally:
        stream.release_conn()
    assert followed == "".join(f"line {i}\n" for i in range(5))

    def succeeded() -> bool:
        return bool(core.read_namespaced_pod("talker", namespace).status.phase == "Succeeded")

    kube.wait_until(succeeded, timeout=10, what="the pod to succeed")


@pytest.mark.timeout(60)
def test_a_pod_waits_for_a_config_map_that_does_not_exist_yet(api: Any, namespace: str) -> None:
    # A kubelet keeps such a pod in ContainerCreating until the config map appears.
    core = kubernetes.client.CoreV1Api(api)
    code = "import os\nprint(open('/config/greeting').read(), os.environ['GREETING'])\n"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "patient"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [
                    {"name": "config", "projected": {"sources": [{"configMap": {"name": "late"}}]}}
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "python",
                        "command": ["python", "-c", code],
                        "volumeMounts": [{"name": "config", "mountPath": "/config"}],
                        "env": [
                            {
                                "name": "GREETING",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "late", "key": "greeting"}
                                },
                            }
                        ],
                    }
                ],
            },
        },
    )

    def creating() -> bool:
        status = core.read_namespaced_pod("patient", namespace).status
        waiting = status.container_statuses and status.container_statuses[0].state.waiting
        return bool(waiting and waiting.reason == "ContainerCreating")

    kube.wait_until(creating, timeout=30, what="the pod to wait in ContainerCreating")
    time.sleep(1.5)
    assert core.read_namespaced_pod("patient", namespace).status.phase == "Pending"
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "late"}, "data": {"greeting": "hi"}}
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("patient", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = kube.wait_until(finished, timeout=30, what="the pod to finish")
    assert pod.status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("patient", namespace) == "hi hi\n"


@pytest.mark.timeout(60)
def test_a_secret_volume_holds_the_secrets_keys_as_files(api: Any, namespace: str) -> None:
    # As the shuffle server and task pods mount the token Secret (manifests/).
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "token"}, "stringData": {"token": "t0k", "other": "x"}}
    )
    code = (
        "import os, stat\n"
        "for p in ('/sec/token', '/sec/other', '/proj/renamed'):\n"
        "    print(os.path.basename(p), open(p).read(), oct(stat.S_IMODE(os.stat(p).st_mode)))\n"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "keeper"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [
                    {"name": "sec", "secret": {"secretName": "token", "defaultMode": 0o400}},
                    {
                        "name": "proj",
                        "projected": {
                            "sources": [
                                {
                                    "secret": {
                                        "name": "token",
                                        "items": [{"key": "token", "path": "renamed"}],
                                    }
                                }
                            ]
                        },
                    },
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "python",
                        "command": ["python", "-c", code],
                        "volumeMounts": [
                            {"name": "sec", "mountPath": "/sec", "readOnly": True},
                            {"name": "proj", "mountPath": "/proj", "readOnly": True},
                        ],
                    }
                ],
            },
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("keeper", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = kube.wait_until(finished, timeout=45, what="the pod to finish")
    log = core.read_namespaced_pod_log("keeper", namespace)
    assert pod.status.phase == "Succeeded", log
    # (The paths themselves are the volumes' directories: mountPaths are substituted.)
    assert log == "token t0k 0o400\nother x 0o400\nrenamed t0k 0o644\n"


@pytest.mark.timeout(60)
def test_config_map_items_land_at_nested_paths_with_binary_data_decoded(
    api: Any, namespace: str
) -> None:
    # As a kubelet projects them: each item at its path (parent directories made),
    # `binaryData` values as their decoded bytes.
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "code"},
            "data": {"main": "print('main')\n"},
            "binaryData": {"blob": base64.b64encode(bytes([0, 255, 1])).decode()},
        },
    )
    code = (
        "import os\n"
        "print(open('/code/pkg/sub/main.py').read().strip())\n"
        "print(list(open('/code/data/blob.bin', 'rb').read()))\n"
    )
    items = [{"key": "main", "path": "pkg/sub/main.py"}, {"key": "blob", "path": "data/blob.bin"}]
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "reader"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [
                    {
                        "name": "code",
                        "projected": {"sources": [{"configMap": {"name": "code", "items": items}}]},
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "python",
                        "command": ["python", "-c", code],
                        "volumeMounts": [{"name": "code", "mountPath": "/code"}],
                    }
                ],
            },
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("reader", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = kube.wait_until(finished, timeout=45, what="the pod to finish")
    log = core.read_namespaced_pod_log("reader", namespace)
    assert pod.status.phase == "Succeeded", log
    assert log == "print('main')\n[0, 255, 1]\n"
