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
from shuffle import commit
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


def clean(store: FsspecStore, plan: JobPlan) -> None:
    """Remove the job's shuffle data and any staged (uncommitted) output."""
    options = {**plan.storage_options, **store.storage_options}
    FsspecStore(plan.staging_url, options).remove("", recursive=True)
    store.remove("", recursive=True)
