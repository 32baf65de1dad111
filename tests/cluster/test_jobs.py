"""Indexed Jobs on the test cluster: what the real Job controller does with the pods' outcomes.

Each test checks what the control plane decided (the Job's conditions and
status, written by kube-controller-manager's Job controller; the pods it made;
the logs the API server fetched from the node), not what the node agent did.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from tests.cluster import kube

pytestmark = pytest.mark.cluster


@pytest.mark.timeout(180)
def test_indexed_job_runs_each_index_once_and_its_logs_stay_readable(
    api: Any, namespace: str
) -> None:
    code = (
        "import os, sys; "
        "print('index', os.environ['JOB_COMPLETION_INDEX'], sys.argv[1], os.environ['NODE_NAME'])"
    )
    kube.create_job(
        api,
        namespace,
        kube.python_job(
            "squares", code, completions=8, parallelism=4, args=("$(JOB_COMPLETION_INDEX)",)
        ),
    )
    done = kube.wait_finished(api, namespace, "squares", timeout=150)

    assert kube.condition(done, "Complete"), done.status.conditions
    assert done.status.succeeded == 8
    assert done.status.completed_indexes == "0-7"
    assert not done.status.failed
    pods = kube.pods(api, namespace, "squares")
    assert sorted(kube.index(p) for p in pods) == list(range(8))  # each index exactly once
    core = kubernetes.client.CoreV1Api(api)
    for pod in pods:
        assert pod.status.phase == "Succeeded"
        i = kube.index(pod)
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        assert log == f"index {i} {i} {pod.spec.node_name}\n"
        tail = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=1)
        assert tail == log


@pytest.mark.timeout(120)
def test_pod_failure_policy_fails_the_job_at_once_on_exit_code_2(api: Any, namespace: str) -> None:
    # Index 1 exits 2 at once; the others would take a minute.
    code = (
        "import os, sys, time\n"
        "if os.environ['JOB_COMPLETION_INDEX'] == '1': sys.exit(2)\n"
        "time.sleep(60)\n"
    )
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [2]},
            }
        ]
    }
    body = kube.python_job(
        "fail-fast", code, completions=4, backoffLimit=6, podFailurePolicy=policy
    )
    kube.create_job(api, namespace, body)
    done = kube.wait_finished(api, namespace, "fail-fast", timeout=45)

    failed = kube.condition(done, "Failed")
    assert failed is not None, done.status.conditions
    assert failed.reason == "PodFailurePolicy"
    assert "exit code 2" in failed.message and "FailJob" in failed.message
    assert not done.status.succeeded  # it failed well before the sleepers could finish
    exited = [
        p
        for p in kube.pods(api, namespace, "fail-fast")
        if p.status.container_statuses
        and p.status.container_statuses[0].state.terminated
        and p.status.container_statuses[0].state.terminated.exit_code == 2
    ]
    assert [kube.index(p) for p in exited] == [1]


@pytest.mark.timeout(150)
def test_backoff_limit_per_index_exhausts_only_the_failing_index(api: Any, namespace: str) -> None:
    code = "import os, sys\nsys.exit(1 if os.environ['JOB_COMPLETION_INDEX'] == '2' else 0)\n"
    body = kube.python_job("per-index", code, completions=4, backoffLimitPerIndex=1)
    kube.create_job(api, namespace, body)
    done = kube.wait_finished(api, namespace, "per-index", timeout=120)

    failed = kube.condition(done, "Failed")
    assert failed is not None and failed.reason == "FailedIndexes", done.status.conditions
    assert done.status.failed_indexes == "2"
    assert done.status.completed_indexes == "0,1,3"
    assert done.status.succeeded == 3
    attempts = [p for p in kube.pods(api, namespace, "per-index") if kube.index(p) == 2]
    assert len(attempts) == 2  # the first run and its one retry
    assert {p.status.phase for p in attempts} == {"Failed"}


@pytest.mark.timeout(150)
def test_an_evicted_pod_is_ignored_and_its_index_runs_again(api: Any, namespace: str) -> None:
    # Each pod runs until a file of its own appears; the test evicts index 0's first pod.
    code = (
        "import os, sys, time\n"
        "marker = os.path.join(sys.argv[1], os.environ['HOSTNAME'])\n"
        "while not os.path.exists(marker): time.sleep(0.1)\n"
    )
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    import tempfile

    with tempfile.TemporaryDirectory() as markers:
        body = kube.python_job(
            "evicted",
            code,
            completions=3,
            args=(markers,),
            backoffLimit=0,  # any failure that counted would fail the Job
            podFailurePolicy=policy,
        )
        kube.create_job(api, namespace, body)
        core = kubernetes.client.CoreV1Api(api)

        def running_first() -> Any:
            first = [p for p in kube.pods(api, namespace, "evicted") if kube.index(p) == 0]
            return first[0] if first and first[0].status.phase == "Running" else None

        victim = kube.wait_until(running_first, timeout=60, what="index 0's pod to run")
        core.create_namespaced_pod_eviction(
            victim.metadata.name,
            namespace,
            {"metadata": {"name": victim.metadata.name, "namespace": namespace}},
        )

        def replaced() -> Any:
            again = [
                p
                for p in kube.pods(api, namespace, "evicted")
                if kube.index(p) == 0 and p.metadata.uid != victim.metadata.uid
            ]
            return again[0] if again else None

        replacement = kube.wait_until(replaced, timeout=60, what="a new pod for index 0")
        hostnames = {p.spec.hostname for p in kube.pods(api, namespace, "evicted")}
        for hostname in hostnames:
            open(f"{markers}/{hostname}", "w").close()  # every pod may finish now
        done = kube.wait_finished(api, namespace, "evicted", timeout=60)

    assert kube.condition(done, "Complete"), done.status.conditions
    assert done.status.succeeded == 3
    assert not done.status.failed  # the eviction was ignored, not counted against backoffLimit 0
    assert replacement.metadata.uid != victim.metadata.uid
    # The evicted pod is gone: the node agent finished it and deleted it as a kubelet does.
    with pytest.raises(kubernetes.client.exceptions.ApiException) as gone:
        core.read_namespaced_pod(victim.metadata.name, namespace)
    assert gone.value.status == 404
