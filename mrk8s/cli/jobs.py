"""Housekeeping for jobs in a shuffle directory: ``mrk8s status`` and ``mrk8s clean``.

Called by the CLI. Everything here is read from the job's directory (its
plan, commit records and failure records), so it works for a job that is
running, finished with ``--keep-shuffle``, or stopped halfway, from any
machine that can read the shuffle store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mrk8s.errors import UsageError
from mrk8s.tasks.plan import JobPlan
from mrk8s.tasks.run import PLAN_FILE
from shuffle import commit, nodelocal
from shuffle.store import FsspecStore, join


@dataclass
class StageStatus:
    """Progress of one stage, from its commit and failure records."""

    step: int
    stage: str
    tasks: int
    committed: int
    attempts_max: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.committed == self.tasks:
            return "done"
        return "failing" if self.failures else ("running" if self.committed else "pending")


def open_job(
    job_id: str, shuffle_dir: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[FsspecStore, JobPlan]:
    store = FsspecStore(join(shuffle_dir, job_id), storage_options)
    if not store.exists(PLAN_FILE):
        known = [n for n in FsspecStore(shuffle_dir, storage_options).list("") if n]
        hint = f" (jobs there: {', '.join(known[:10])})" if known else ""
        raise UsageError(
            f"no job {job_id!r} in {shuffle_dir}{hint}: check the job id, or give the "
            "--shuffle-dir the job ran with"
        )
    return store, JobPlan.loads(store.read_bytes(PLAN_FILE).decode())


def status(store: FsspecStore, plan: JobPlan) -> list[StageStatus]:
    failures = commit.failures(store)
    out = []
    for sp in plan.steps:
        for stage, n in (("map", len(sp.splits)), ("reduce", sp.num_reducers)):
            if not n:
                continue
            done = commit.committed_indexes(store, sp.index, stage)
            attempts = [r.attempt for i in done if (r := commit.read(store, sp.index, stage, i))]
            out.append(
                StageStatus(
                    step=sp.index,
                    stage=stage,
                    tasks=n,
                    committed=len(done),
                    attempts_max=max(attempts, default=0),
                    failures=[f for f in failures if f["step"] == sp.index and f["stage"] == stage],
                )
            )
    return out


def render(plan: JobPlan, stages: list[StageStatus]) -> str:
    lines = [f"job {plan.job_id}  ({plan.job_dir})"]
    lines.append(f"{'stage':<18}{'state':<9}{'done':>12}{'attempts':>10}{'failures':>10}")
    for st in stages:
        name = f"step {st.step + 1}/{len(plan.steps)} {st.stage}"
        done = f"{st.committed}/{st.tasks}"
        lines.append(
            f"{name:<18}{st.state:<9}{done:>12}{st.attempts_max:>10}{len(st.failures):>10}"
        )
    for st in stages:
        for f in st.failures[-5:]:
            first = str(f["error"].get("message", "")).splitlines()[:1]
            lines.append(
                f"  step {st.step + 1} {st.stage} task {f['index']} attempt {f['attempt']}: "
                f"{first[0] if first else f['error'].get('kind', '?')}"
            )
    return "\n".join(lines)


def node_local_dirs(store: FsspecStore, plan: JobPlan) -> dict[str, str]:
    """The job's directory on each node that holds committed node-local map outputs."""
    dirs: dict[str, str] = {}
    for step, sp in enumerate(plan.steps):
        for i in range(len(sp.splits)):
            rec = commit.read(store, step, "map", i)
            if rec is not None and nodelocal.is_node_local(rec.data_path):
                dirs[rec.node] = nodelocal.job_directory(rec.data_path, plan.job_id)
    return dirs


@dataclass
class Cleaned:
    """What :func:`clean` removed of a job's node-local map outputs, and what it could not."""

    removed: list[str] = field(default_factory=list)
    #: node -> the job's directory there, left in place, and why.
    left: dict[str, tuple[str, str]] = field(default_factory=dict)


def clean(store: FsspecStore, plan: JobPlan, *, ray_address: str | None = None) -> Cleaned:
    """Remove the job's shuffle data, any staged (uncommitted) output, and its
    node-local map outputs (a Ray job's): those on this machine directly, those
    on other machines through the Ray cluster at ``ray_address``."""
    import os
    import shutil

    on_nodes = node_local_dirs(store, plan)
    options = {**plan.storage_options, **store.storage_options}
    FsspecStore(plan.staging_url, options).remove("", recursive=True)
    store.remove("", recursive=True)
    cleaned = Cleaned()
    elsewhere: dict[str, str] = {}
    for node, directory in sorted(on_nodes.items()):
        if os.path.isdir(directory):  # this machine's disk (a local or simulated cluster)
            shutil.rmtree(directory, ignore_errors=True)
            cleaned.removed.append(directory)
        else:
            elsewhere[node] = directory
    if not elsewhere:
        return cleaned
    if ray_address is None:
        why = "it is on another machine: pass --ray-address to remove it through the Ray cluster"
        cleaned.left = {node: (d, why) for node, d in elsewhere.items()}
        return cleaned
    from scheduler.backends.ray.cleanup import remove_job

    # Every alive node is asked (one may hold only uncommitted attempts).
    bases = sorted({os.path.dirname(os.path.dirname(d)) for d in on_nodes.values()})
    by_node = remove_job(ray_address, bases, plan.job_id)
    for node, directory in elsewhere.items():
        if node not in by_node:
            why = "its node has left the Ray cluster, and took its disk with it"
            cleaned.left[node] = (directory, why)
    cleaned.removed += sorted({d for dirs in by_node.values() for d in dirs})
    return cleaned
