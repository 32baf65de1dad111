"""Names and labels every Kubernetes object of an mrk8s job carries.

One place for the conventions that the executor, the commands (`submit`,
`logs`, `status`, `cancel`) and `manifests/` share, so that
``kubectl get jobs,pods -l mrk8s.io/job-id=ID`` finds a job's objects and
deleting its owner object removes them all.

- Every object: ``app.kubernetes.io/name=mrk8s``, ``mrk8s.io/job-id=<label
  value of the job id>``; stage Jobs and their pods also ``mrk8s.io/step``
  and ``mrk8s.io/stage`` (``map`` or ``reduce``; ``driver`` for the driver
  Job of ``mrk8s submit``).
- The owner object of a job is the ConfigMap :func:`owner_name`; every Job
  the job creates names it in ``ownerReferences``, so deleting it (background
  propagation) deletes the Jobs and, through them, the pods.
- Object names are DNS-1123 labels of at most 63 characters (a Job's name
  becomes its pods' ``job-name`` label and hostname): lowercased, other
  characters replaced by ``-``, and shortened with a hash of the full name
  when too long, so two long job ids never collide.
"""

from __future__ import annotations

import hashlib
import re

APP_LABEL = "app.kubernetes.io/name"
APP = "mrk8s"
JOB_ID_LABEL = "mrk8s.io/job-id"
STEP_LABEL = "mrk8s.io/step"
STAGE_LABEL = "mrk8s.io/stage"
#: Set by the Job controller on an Indexed Job's pods (Kubernetes >= 1.28).
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: The full job id, unshortened, on every object (labels are capped at 63 characters).
JOB_ID_ANNOTATION = "mrk8s.io/job-id"

_MAX = 63
_INVALID_NAME = re.compile(r"[^a-z0-9-]+")
_INVALID_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def _shorten(text: str, limit: int, full: str) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-_.')}-{digest}"


def object_name(*parts: str, suffix: str = "") -> str:
    """A DNS-1123 label (<= 63 characters): ``parts`` joined by ``-``, then ``suffix``.

    When too long, the parts are shortened (with a hash of the whole name) and
    the suffix kept, so ``mrk8s-<long id>-s0-map`` still ends in ``-s0-map``.
    """
    full = "-".join(parts) + suffix
    tail = _INVALID_NAME.sub("-", suffix.lower())
    text = _INVALID_NAME.sub("-", "-".join(parts).lower()).strip("-") or "x"
    return (_shorten(text, _MAX - len(tail), full).strip("-") + tail).strip("-")


def label_value(text: str) -> str:
    """``text`` as a label value: at most 63 characters, alphanumeric at both ends."""
    value = _INVALID_LABEL.sub("-", text).strip("-_.")
    return _shorten(value, _MAX, text).strip("-_.")


def owner_name(job_id: str) -> str:
    """The ConfigMap that owns every object of job ``job_id``."""
    return object_name("mrk8s", job_id)


def stage_job_name(job_id: str, step: int, stage: str, group: str = "") -> str:
    """The Indexed Job running ``stage`` of ``step`` (one per node ``group`` when pinned)."""
    suffix = f"-s{step}-{stage}" + (f"-{group}" if group else "")
    return object_name("mrk8s", job_id, suffix=suffix)


def job_labels(job_id: str) -> dict[str, str]:
    """The labels every object of the job carries."""
    return {APP_LABEL: APP, JOB_ID_LABEL: label_value(job_id)}


def stage_labels(job_id: str, step: int, stage: str) -> dict[str, str]:
    """The labels of one stage's Job and of its pods."""
    return {**job_labels(job_id), STEP_LABEL: str(step), STAGE_LABEL: stage}


def job_selector(job_id: str) -> str:
    """A label selector for every object of the job (``kubectl get -l``)."""
    return f"{JOB_ID_LABEL}={label_value(job_id)}"
