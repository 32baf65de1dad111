"""``mrk8s submit``: the driver of a job as a Job of its own in the cluster.

The user's machine creates three objects and may then disconnect:

1. the job's owner ConfigMap (:func:`names.owner_name`), which owns the rest;
2. a ConfigMap holding the job script and the files beside it
   (:func:`package`: ``.git``, virtual environments and caches left out, at
   most :data:`CODE_LIMIT` bytes as stored, since a ConfigMap holds at most
   1 MiB), mounted read-only at :data:`CODE_DIR` in the driver pod;
3. the driver Job: one pod, ``restartPolicy: Never``, under the
   ``mrk8s-driver`` service account of ``manifests/``, running
   ``mrk8s run CODE_DIR/SCRIPT ...`` (the user's own ``run`` arguments) with
   the pod's in-cluster credentials; its working directory is the code, so
   paths relative to the script's directory work as they did locally.

The pod meets Pod Security "restricted" (non-root as the image's UID, no
privilege escalation, no capabilities, RuntimeDefault seccomp, read-only root
filesystem with an emptyDir at ``/tmp``), like every pod of the backend, so
it is admitted in the ``mrk8s`` namespace of ``manifests/``. Deleting the
owner (``mrk8s cancel``) deletes the driver, its code and everything the
driver created. Nothing is left half-made: if creating one object fails, the
owner is deleted again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import client, names, render
from scheduler.backends.k8s.connect import Connection, api_errors
from scheduler.ship import EXCLUDES
from shuffle.errors import UserError

#: The UID (and GID) of the worker image (manifests/Dockerfile) that every pod runs as.
RUN_AS_USER = render.RUN_AS_USER
#: Where the driver pod sees the job's code.
CODE_DIR = "/mrk8s/code"
#: The most a job's code may take in its ConfigMap (text as is, other files base64):
#: a ConfigMap holds at most 1 MiB, and its keys and metadata need some of it.
CODE_LIMIT = 900 << 10
DRIVER_ACCOUNT = "mrk8s-driver"
PRIORITY_CLASS = "mrk8s"
#: How long a finished driver Job (and so its pod and log) stays for inspection.
DEFAULT_TTL = 3600
_KEY = re.compile(r"[^-._a-zA-Z0-9]+")


class CodeTooLargeError(UserError):
    """The script's directory does not fit in the ConfigMap that carries it."""


class JobExistsError(UserError):
    """A job with this id already has objects in the namespace."""


@dataclass(frozen=True)
class Package:
    """The job's code: each file's path relative to the script's directory, and its bytes."""

    directory: str
    files: dict[str, bytes]

    @property
    def stored_size(self) -> int:
        """Bytes the files take in the ConfigMap (binary files grow by a third in base64)."""
        return sum(
            len(data) if _is_text(data) else 4 * ((len(data) + 2) // 3)
            for data in self.files.values()
        )


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def package(script: str, limit: int = CODE_LIMIT) -> Package:
    """The files of the script's directory to ship; :class:`CodeTooLargeError` past ``limit``."""
    directory = os.path.dirname(os.path.abspath(script))
    files: dict[str, bytes] = {}
    for root, dirs, filenames in os.walk(directory):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in EXCLUDES and not os.path.isfile(os.path.join(root, d, "pyvenv.cfg"))
        )
        for filename in sorted(filenames):
            path = os.path.join(root, filename)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    files[os.path.relpath(path, directory)] = f.read()
    found = Package(directory, files)
    if found.stored_size > limit:
        largest = sorted(files.items(), key=lambda kv: -len(kv[1]))[:3]
        named = ", ".join(f"{name} ({len(data) >> 10} KiB)" for name, data in largest)
        raise CodeTooLargeError(
            f"the job script's directory {directory} holds {found.stored_size >> 10} KiB "
            f"(largest: {named}), more than the {limit >> 10} KiB that `mrk8s submit` carries "
            "to the driver pod in a ConfigMap (which holds at most 1 MiB): move the script "
            "and the modules it imports into a directory of their own (data belongs in the "
            "inputs, e.g. an s3:// URL, not beside the script)"
        )
    return found


def driver_job_name(job_id: str) -> str:
    return names.object_name("mrk8s", job_id, suffix="-driver")


def code_name(job_id: str) -> str:
    return names.object_name("mrk8s", job_id, suffix="-code")


def _metadata(job_id: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {**names.job_labels(job_id), **labels},
        "annotations": {names.JOB_ID_ANNOTATION: job_id},
    }


def owner_configmap(job_id: str) -> dict[str, Any]:
    """The owner object of the job: deleting it deletes everything of the job."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job_id, names.owner_name(job_id)),
        "data": {"job-id": job_id},
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


def _keys(package_: Package) -> dict[str, str]:
    """A ConfigMap key for each file (keys allow only ``[-._a-zA-Z0-9]``)."""
    return {
        rel: f"f{i:04d}-{_KEY.sub('-', rel)}"[:253] for i, rel in enumerate(sorted(package_.files))
    }


def code_configmap(job_id: str, package_: Package, owner_ref: dict[str, Any]) -> dict[str, Any]:
    import base64

    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for rel, key in _keys(package_).items():
        content = package_.files[rel]
        if _is_text(content):
            data[key] = content.decode("utf-8")
        else:
            binary[key] = base64.b64encode(content).decode("ascii")
    metadata = _metadata(job_id, code_name(job_id))
    metadata["ownerReferences"] = [owner_ref]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": data,
        "binaryData": binary,
        "immutable": True,
    }


def pod_security_context() -> dict[str, Any]:
    """The pod-level security context of every mrk8s pod (Pod Security "restricted")."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def driver_job(
    job_id: str,
    *,
    image: str,
    script: str,
    run_args: list[str],
    package_: Package,
    owner_ref: dict[str, Any],
    ttl: int = DEFAULT_TTL,
    env_secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The driver's Job: ``mrk8s run CODE_DIR/<script> <run_args>`` in one pod.

    ``script`` is the script's path relative to its package's directory; the
    keys of each Secret in ``env_secrets`` become the driver's environment.
    """
    labels = {**names.job_labels(job_id), names.STAGE_LABEL: "driver"}
    metadata = _metadata(job_id, driver_job_name(job_id), **{names.STAGE_LABEL: "driver"})
    metadata["ownerReferences"] = [owner_ref]
    items = [{"key": key, "path": rel} for rel, key in _keys(package_).items()]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            # A failed driver is not run again by itself: rerunning with the same --job-id
            # resumes from the commit records, and that is the user's call.
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": ttl,
            "template": {
                "metadata": {"labels": labels, "annotations": {names.JOB_ID_ANNOTATION: job_id}},
                "spec": {
                    "serviceAccountName": DRIVER_ACCOUNT,
                    "restartPolicy": "Never",
                    "priorityClassName": PRIORITY_CLASS,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [
                        {
                            "name": "driver",
                            "image": image,
                            "command": ["mrk8s", "run", f"{CODE_DIR}/{script}", *run_args],
                            "workingDir": CODE_DIR,
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                # See client.py: the token's directory, named where a node
                                # agent that maps mount paths in env values can see it.
                                {
                                    "name": client.SERVICE_ACCOUNT_ENV,
                                    "value": client.SERVICE_ACCOUNT_DIR,
                                },
                            ],
                            # Storage credentials, as the task pods get them (--env-from-secret).
                            "envFrom": [{"secretRef": {"name": name}} for name in env_secrets],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"memory": "2Gi"},
                            },
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": "code", "mountPath": CODE_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "code",
                            "projected": {
                                "sources": [
                                    {"configMap": {"name": code_name(job_id), "items": items}}
                                ]
                            },
                        },
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


@dataclass(frozen=True)
class Submitted:
    job_id: str
    namespace: str
    owner: str
    driver_job: str
    code: str
    files: int


def submit(
    connection: Connection,
    *,
    job_id: str,
    image: str,
    script: str,
    run_args: list[str],
    ttl: int = DEFAULT_TTL,
    env_secrets: tuple[str, ...] = (),
) -> Submitted:
    """Create the owner, the code and the driver Job (see the module docstring)."""
    code = package(script)
    rel_script = os.path.relpath(os.path.abspath(script), code.directory)
    core = kubernetes.client.CoreV1Api(connection.api)
    batch = kubernetes.client.BatchV1Api(connection.api)
    namespace = connection.namespace
    with api_errors(connection, f"submitting job {job_id!r}"):
        try:
            owner = core.create_namespaced_config_map(
                namespace, owner_configmap(job_id), field_validation="Strict"
            ).to_dict()
        except ApiException as exc:
            if exc.status == 409:
                raise JobExistsError(
                    f"job {job_id!r} already exists in namespace {namespace!r}: give another "
                    f"--job-id, or remove it first with `mrk8s cancel {job_id} -n {namespace}`"
                ) from exc
            raise
        ref = owner_reference(owner)
        try:
            core.create_namespaced_config_map(
                namespace, code_configmap(job_id, code, ref), field_validation="Strict"
            )
            body = driver_job(
                job_id,
                image=image,
                script=rel_script,
                run_args=run_args,
                package_=code,
                owner_ref=ref,
                ttl=ttl,
                env_secrets=env_secrets,
            )
            batch.create_namespaced_job(namespace, body, field_validation="Strict")
        except BaseException:
            core.delete_namespaced_config_map(
                names.owner_name(job_id), namespace, propagation_policy="Background"
            )
            raise
    return Submitted(
        job_id,
        namespace,
        names.owner_name(job_id),
        driver_job_name(job_id),
        code_name(job_id),
        len(code.files),
    )
