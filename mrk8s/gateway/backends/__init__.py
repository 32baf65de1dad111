"""Where the gateway's jobs run: one backend per kind of cluster, behind one small interface.

The supervisor (:mod:`mrk8s.gateway.supervisor`) drives every job through a
:class:`Backend`: ``start`` it, ``poll`` it until it ends, ``cancel`` it, and
after a gateway restart ``reattach`` what the database says was running.
Everything a backend needs to find a job again is in the :class:`Handle` it
returns, which the supervisor stores in the job's row; a backend keeps no
state that a restart would lose.

Backends here:

- ``local`` (:mod:`.local`): ``mrk8s run`` in a subprocess of its own
  session on the gateway's machine.

Next (not built yet; each slots in as one module and one entry of
:data:`KNOWN`): ``k8s`` starts the driver Job of ``mrk8s submit`` and follows
it with a Kubernetes watch (handle = namespace and Job name); ``ray`` submits
a Ray job and follows its events (handle = Ray address and submission id).
A cluster registry (queues served by clusters with weights) picks which
cluster of a kind a job goes to; the job id starts with the cluster's name,
so the id alone tells which cluster holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Handle:
    """What identifies a started job's run on its cluster (stored in the job's row)."""

    pid: int
    """The job's process (local backend): the leader of its own session."""
    started: float
    """The process's start time, so that a reused pid is never taken for the job."""


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


#: Backends the gateway can run jobs on, by name; the others named in the API
#: are refused with the reason.
KNOWN = ("local",)
NOT_YET = {
    "k8s": "the Kubernetes backend is not served by the gateway yet (use mrk8s submit)",
    "ray": "the Ray backend is not served by the gateway yet (use mrk8s run --backend ray)",
}
