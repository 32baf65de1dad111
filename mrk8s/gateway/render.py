"""The Kubernetes manifests of a gateway job, as the declarative mode commits them to git.

Called by :mod:`mrk8s.gateway.gitops` when a job is submitted to a
declarative queue; the reconciler (:mod:`mrk8s.gateway.reconciler`) applies
what this renders, once git has it. Two shapes, both three objects:

- ``k8s``: the job's owner ConfigMap, its code ConfigMap and the driver Job
  of ``mrk8s submit``, all three rendered by
  :mod:`scheduler.backends.k8s.driverjob` (the same functions ``mrk8s
  submit`` calls), so a job from git runs exactly as a submitted one;
- ``ray``: the owner and code ConfigMaps again, and a KubeRay ``RayJob``
  (``ray.io/v1``) whose entrypoint is ``mrk8s run ... --backend ray
  --ray-address auto``, shaped like ``manifests/ray/rayjob.yaml``, with the
  code mounted at the same place as the driver's.

What git cannot hold: an ``ownerReference`` needs the owner's ``uid``, which
exists only once the owner is created. The manifests therefore carry none;
the reconciler creates the owner first and adds the reference to the other
objects as it applies them, so deleting the owner still deletes the job.

Nothing here talks to a cluster; ``kubernetes`` is imported because
``driverjob`` is (the ``k8s`` extra).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from mrk8s.gateway.gitconfig import GitTarget

#: The Ray version the RayJob's cluster runs (``rayVersion``), as in manifests/ray/rayjob.yaml.
RAY_VERSION = "2.60.0"
#: Names of the objects, one per role, for the reconciler and the tests.
OWNER, CODE, RUN = "owner", "code", "run"


def run_args(target: GitTarget, job_id: str, spec: dict[str, Any], backend: str) -> list[str]:
    """``mrk8s run``'s arguments after the script, as the driver (or Ray's head) gets them."""
    args = [
        *spec["input_paths"],
        *("-o", spec["output_dir"], "--output-format", "text"),
        *("--shuffle-dir", target.shuffle_dir),
        *("--reducers", str(spec["reducers"]), "--workers", str(spec["workers"])),
        *("--job-id", job_id, "--backend", backend),
    ]
    if backend == "k8s":
        args += ["--namespace", target.namespace, "--image", target.image]
        args += [f"--ttl={target.ttl}s"]
        for secret in target.env_from_secret:
            args += ["--env-from-secret", secret]
    else:
        args += ["--ray-address", "auto"]
    if spec.get("memory_per_worker"):
        args += ["--memory-per-worker", spec["memory_per_worker"]]
    if target.storage_options:
        args += ["--storage-options", json.dumps(dict(target.storage_options), sort_keys=True)]
    args.append("-q")
    if spec.get("args"):
        args += ["--", *spec["args"]]
    return args


def manifests(
    target: GitTarget, job_id: str, spec: dict[str, Any], script_name: str, script: bytes
) -> list[dict[str, Any]]:
    """The job's objects, owner first (the order the reconciler applies them in)."""
    from scheduler.backends.k8s import driverjob

    code = driverjob.Package(directory="", files={script_name: script})
    # A placeholder owner reference, removed below: git cannot know the owner's uid.
    placeholder = {"apiVersion": "v1", "kind": "ConfigMap", "name": "", "uid": ""}
    owner = driverjob.owner_configmap(job_id)
    code_map = _without_owner(driverjob.code_configmap(job_id, code, placeholder))
    if not code_map.get("binaryData"):
        code_map.pop("binaryData", None)
    backend = spec["request"]["backend"]
    args = run_args(target, job_id, spec, backend)
    if backend == "k8s":
        run = driverjob.driver_job(
            job_id,
            image=target.image,
            script=script_name,
            run_args=args,
            package_=code,
            owner_ref=placeholder,
            ttl=target.ttl,
            env_secrets=target.env_from_secret,
        )
        return [_with_namespace(o, target) for o in (owner, code_map, _without_owner(run))]
    entrypoint = shlex.join(["mrk8s", "run", f"{driverjob.CODE_DIR}/{script_name}", *args])
    job = rayjob(target, job_id, spec, entrypoint, code)
    return [_with_namespace(o, target) for o in (owner, code_map, job)]


def rayjob_name(job_id: str) -> str:
    from scheduler.backends.k8s import names

    return names.object_name("mrk8s", job_id, suffix="-ray")


def rayjob(
    target: GitTarget, job_id: str, spec: dict[str, Any], entrypoint: str, code: Any
) -> dict[str, Any]:
    """A KubeRay RayJob running ``entrypoint`` on the head of a cluster of ``workers`` pods."""
    from scheduler.backends.k8s import driverjob, names

    labels = {**names.job_labels(job_id), names.STAGE_LABEL: "driver"}
    items = [{"key": key, "path": rel} for rel, key in driverjob._keys(code).items()]
    env = [{"name": "HOME", "value": "/tmp"}]
    env_from = [{"secretRef": {"name": name}} for name in target.env_from_secret]
    memory = spec.get("memory_per_worker") or "1GiB"
    # A worker pod holds one worker actor: its budget plus a GiB for Ray and Python.
    worker_memory = f"{_mebibytes(memory) + 1024}Mi"

    def pod(name: str, resources: dict[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "metadata": {"labels": labels},
            "spec": {
                "enableServiceLinks": False,
                "securityContext": driverjob.pod_security_context(),
                "containers": [
                    {
                        "name": name,
                        "image": target.image,
                        "env": env,
                        "envFrom": env_from,
                        "resources": resources,
                        "securityContext": {
                            **driverjob.container_security_context(),
                            # Ray writes its session under /tmp and its own files elsewhere.
                            "readOnlyRootFilesystem": False,
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
                    }
                ],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {
                        "name": "code",
                        "projected": {
                            "sources": [
                                {
                                    "configMap": {
                                        "name": driverjob.code_name(job_id),
                                        "items": items,
                                    }
                                }
                            ]
                        },
                    },
                ],
            },
        }

    code_mount = {"name": "code", "mountPath": driverjob.CODE_DIR, "readOnly": True}
    workers = int(spec["workers"])
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": rayjob_name(job_id),
            "labels": labels,
            "annotations": {names.JOB_ID_ANNOTATION: job_id},
        },
        "spec": {
            "entrypoint": entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": target.ttl,
            # A failed run is not retried by KubeRay: resuming is the gateway's call.
            "backoffLimit": 0,
            "rayClusterSpec": {
                "rayVersion": target.ray_version,
                "headGroupSpec": {
                    # No tasks on the head: it runs the driver and Ray's control plane.
                    "rayStartParams": {"num-cpus": "0"},
                    "template": pod(
                        "ray-head",
                        {
                            "requests": {"cpu": "1", "memory": "2Gi"},
                            "limits": {"memory": "2Gi"},
                        },
                        [code_mount],
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {"num-cpus": "1"},
                        "template": pod(
                            "ray-worker",
                            {
                                "requests": {"cpu": "1", "memory": worker_memory},
                                "limits": {"memory": worker_memory},
                            },
                            [],
                        ),
                    }
                ],
            },
        },
    }


def _mebibytes(size: str) -> int:
    from mrk8s.engine.settings import parse_size

    return max(1, parse_size(size, "memory_per_worker") >> 20)


def _without_owner(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].pop("ownerReferences", None)
    return obj


def _with_namespace(obj: dict[str, Any], target: GitTarget) -> dict[str, Any]:
    obj["metadata"]["namespace"] = target.namespace
    return obj
