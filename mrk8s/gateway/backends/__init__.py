"""Where the gateway's jobs run: one backend per kind of cluster, behind one small interface.

The supervisor (:mod:`mrk8s.gateway.supervisor`) drives every job through a
:class:`Backend`: ``start`` it, ``poll`` it until it ends, ``cancel`` it, and
after a gateway restart ``reattach`` what the database says was running.
Everything a backend needs to find a job again is in the :class:`Handle` it
returns, which the supervisor stores in the job's row; a backend keeps no
state that a restart would lose.

Backends here:

- ``local`` (:mod:`.local`): ``mrk8s run`` in a subprocess of its own
  session on the gateway's machine (handle: pid and start time).
- ``k8s`` (:mod:`.k8s`): the driver Job of ``mrk8s submit`` in a Kubernetes
  cluster, followed by one watch per cluster on the jobs' Jobs and pods
  (handle: cluster, namespace and driver Job name). ``attach`` hands it a
  job whose objects someone else created (the declarative mode's reconciler).
- ``ray`` (:mod:`.ray`): ``mrk8s run --backend ray`` submitted as a Ray job
  through Ray's Job Submission API (handle: cluster and submission id).

A backend object serves one cluster: the supervisor keeps one per cluster
name of the config (:mod:`mrk8s.gateway.routing` picks the cluster of a
job, whose id starts with the cluster's name), the implicit ``local``
cluster when the config names none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol


@dataclass(frozen=True)
class Handle:
    """What identifies a started job's run on its cluster (stored in the job's row, as JSON).

    Each backend fills the fields it needs and leaves the others empty.
    """

    pid: int | None = None
    """The job's process (local backend): the leader of its own session."""
    started: float = 0.0
    """The process's start time, so that a reused pid is never taken for the job."""
    cluster: str = ""
    """The cluster (a name of the config) that runs the job (k8s, ray)."""
    namespace: str = ""
    """The Kubernetes namespace of the job's objects (k8s)."""
    name: str = ""
    """The run's object on its cluster: the driver Job's name (k8s), the submission id (ray)."""

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, "", 0.0)})

    @classmethod
    def from_json(cls, text: str) -> Handle:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> Handle | None:
        """The handle stored in a job's row (its ``handle`` column, else its pid); None if the
        job was never launched."""
        text = job.get("handle")
        if text:
            return cls.from_json(text)
        if job.get("pid") is not None:
            return cls(pid=int(job["pid"]), started=float(job.get("pid_started") or 0.0))
        return None


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its exit code, or None if it died without saying (killed)."""

    exit_code: int | None


class Backend(Protocol):
    """Start, follow, cancel and re-attach the runs of jobs; see the module docstring."""

    name: str

    def start(self, job: dict[str, Any]) -> Handle:
        """Launch (or, for a job started before, resume) the job's run."""
        ...

    def poll(self, job: dict[str, Any], handle: Handle) -> Outcome | None:
        """None while the run goes on; its outcome once it ended."""
        ...

    def cancel(self, job: dict[str, Any], handle: Handle) -> None:
        """Stop the run and everything it started; returns when they are gone."""
        ...

    def progress(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Tasks committed per stage, while the job runs (None: nothing to read yet)."""
        ...

    def summary(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The finished job's ``summary.json`` (None if it has none)."""
        ...

    def output(self, job: dict[str, Any]) -> Iterator[bytes]:
        """The finished job's output files (``part-*``, text format), in order, in chunks."""
        ...

    def close(self) -> None:
        """Let go of the cluster (watches, connections); the runs go on."""
        ...


#: Kinds of cluster (the request's ``backend``) the gateway can run jobs on; the others
#: named in the API are refused with the reason.
KNOWN = ("local", "k8s", "ray")
NOT_YET: dict[str, str] = {}
