"""What a pod sees on the node agent that runs pods as local processes, read back through the API.

The environment, volumes and working directory a kubelet would give, and the
status a kubelet reports: here the agent's side of the contract is under
test, read back through the real API server (pod status, `pods/log`).
"""

from __future__ import annotations

import datetime
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
