"""The manifests of the Kubernetes backend, checked offline (no cluster).

The real API server checks them too (every job of tests/scheduler/k8s/
creates them with ``fieldValidation=Strict``); these tests pin what issue 21
asks of each stage Job, field by field.
"""

from __future__ import annotations

import pytest

from scheduler.backends.k8s import indexmap, names, render
from scheduler.stage import StageSpec


def spec(**changes: object) -> StageSpec:
    fields: dict[str, object] = {
        "name": "step 1/1 map",
        "num_tasks": 10,
        "entrypoint": "mod:fn",
        "payload": {},
        "command": ("mrk8s", "worker", "--job", "s3://b/j", "--step", "0", "--stage", "map"),
        "max_attempts": 4,
        "job_id": "Word_Count-1",
        "step": 0,
        "kind": "map",
    }
    fields.update(changes)
    return StageSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("indexes", "text"),
    [([0, 1, 2, 3], "0-3"), ([2], "2"), ([0, 2, 3, 4, 9], "0,2-4,9"), ([], "")],
)
def test_index_map_round_trip(indexes: list[int], text: str):
    assert indexmap.encode(indexes) == text
    assert indexmap.decode(text) == indexes


def test_an_index_map_with_tasks_per_pod_gives_each_completion_index_its_batch():
    text = indexmap.encode([1, 2, 5, 7, 8], 2)
    assert text == "1-2,5,7-8/2"
    assert indexmap.decode(text) == [1, 2, 5, 7, 8]
    assert (indexmap.per_pod(text), indexmap.pods(text)) == (2, 3)
    assert [indexmap.batch(text, k) for k in range(3)] == [[1, 2], [5, 7], [8]]
    assert indexmap.task_index(text, 1) == 5
    with pytest.raises(ValueError, match="outside the index map"):
        indexmap.batch(text, 3)
    with pytest.raises(ValueError, match="1 or more"):
        indexmap.per_pod("0-3/0")


@pytest.mark.parametrize(
    ("workers", "per_pod", "tasks", "expected"),
    [(None, None, 10, 1), (3, None, 10, 4), (4, None, 4, 1), (2, None, 1, 1), (3, 5, 10, 5)],
)
def test_tasks_per_pod_defaults_to_one_pod_per_worker(
    workers: int | None, per_pod: int | None, tasks: int, expected: int
):
    settings = render.PodSettings(workers=workers, tasks_per_pod=per_pod)
    assert render.tasks_per_pod(settings, tasks) == expected


def test_a_stage_job_of_batches_has_one_completion_per_pod():
    settings = render.PodSettings(workers=2)

    job = render.stage_job(spec(), range(7), settings)

    s = job["spec"]
    assert job["metadata"]["annotations"][indexmap.ANNOTATION] == "0-6/4"
    assert (s["completions"], s["parallelism"]) == (2, 2)
    # Attempts of a pod: its batch shares them (a retried pod skips what committed).
    assert s["backoffLimitPerIndex"] == 3
    (container,) = s["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}[indexmap.ENV] == "0-6/4"


def test_index_map_maps_completion_indexes_and_refuses_nonsense():
    assert [indexmap.task_index("1,4-5", k) for k in range(3)] == [1, 4, 5]
    with pytest.raises(ValueError, match="outside the index map"):
        indexmap.task_index("1,4-5", 3)
    with pytest.raises(ValueError, match="ascend"):
        indexmap.decode("5,1")
    with pytest.raises(ValueError, match="sorted and distinct"):
        indexmap.encode([3, 1])


def test_a_stage_job_is_an_indexed_job_of_the_pending_tasks_only():
    settings = render.PodSettings(namespace="ns", image="img:1", workers=3, cpu="500m",
                                  memory=768 << 20, ttl_seconds=120, tasks_per_pod=1)  # fmt: skip
    owner = {"metadata": {"name": names.owner_name("Word_Count-1"), "uid": "u-1"}}

    job = render.stage_job(spec(), [1, 2, 5, 7, 8], settings, owner=owner)

    meta, s = job["metadata"], job["spec"]
    assert meta["name"] == names.stage_job_name("Word_Count-1", 0, "map")
    assert meta["labels"] == names.stage_labels("Word_Count-1", 0, "map")
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
         "uid": "u-1", "blockOwnerDeletion": True}
    ]  # fmt: skip
    assert meta["annotations"][indexmap.ANNOTATION] == "1-2,5,7-8"
    assert s["completionMode"] == "Indexed"
    assert (s["completions"], s["parallelism"]) == (5, 3)
    assert (s["backoffLimitPerIndex"], s["maxFailedIndexes"]) == (3, 0)
    assert s["podReplacementPolicy"] == "Failed"
    assert s["ttlSecondsAfterFinished"] == 120
    assert s["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob",
         "onExitCodes": {"containerName": "task", "operator": "In", "values": [2]}},
    ]  # fmt: skip
    pod = s["template"]["spec"]
    assert s["template"]["metadata"]["labels"] == meta["labels"]
    assert pod["restartPolicy"] == "Never"
    assert pod["priorityClassName"] == "mrk8s"
    assert pod["serviceAccountName"] == "mrk8s-worker"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == list(spec().command)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "768Mi"},
        "limits": {"cpu": "500m", "memory": "768Mi"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env[indexmap.ENV]["value"] == "1-2,5,7-8"
    assert env["TMPDIR"]["value"] == render.SCRATCH
    assert env["MRK8S_INDEX_FAILURES"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-index-failure-count']"
    )
    assert env["MRK8S_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": render.SCRATCH}]
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]


def test_retry_user_errors_drops_the_fail_job_rule_and_workers_default_to_all_tasks():
    job = render.stage_job(spec(retry_user_errors=True), range(4), render.PodSettings())

    assert [r["action"] for r in job["spec"]["podFailurePolicy"]["rules"]] == ["Ignore"]
    assert job["spec"]["parallelism"] == 4


def test_a_stage_job_needs_a_command_and_a_task():
    with pytest.raises(ValueError, match="no container command"):
        render.stage_job(spec(command=()), [0], render.PodSettings())
    with pytest.raises(ValueError, match="at least one task"):
        render.stage_job(spec(), [], render.PodSettings())
