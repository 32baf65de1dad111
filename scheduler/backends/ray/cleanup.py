"""Removing a job's node-local map outputs from every node of a Ray cluster.

Called by ``mrk8s clean JOB_ID --ray-address ADDR`` for the map outputs a
Ray job kept on its nodes' own disks (``shuffle.nodelocal``), which the
machine running ``mrk8s clean`` cannot reach by itself. For every alive
node, one small task pinned to that node (no CPU reserved) removes
``BASE/NODE_ID/JOB_ID`` under each base directory the job's commit records
name. Nodes that have left the cluster took their disks, and so their map
outputs, with them; the caller reports them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from scheduler.errors import JobFailedError


def _remove_here(bases: Sequence[str], node_id: str, job_id: str) -> list[str]:
    removed = []
    for base in bases:
        path = os.path.join(base, node_id, job_id)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_job(address: str, bases: Sequence[str], job_id: str) -> dict[str, list[str]]:
    """On every alive node of the cluster at ``address``: the job's directories removed.

    ``job_id`` must be a plain name (it is one path component on each node).
    """
    if not job_id or os.sep in job_id or job_id in (".", ".."):
        raise ValueError(f"not a job id: {job_id!r}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as exc:
            raise JobFailedError(
                f"cannot connect to the Ray cluster at {address} ({exc}): check that it "
                "runs (ray status) and that --ray-address names it",
                user_error=True,
            ) from exc
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        remove = ray.remote(num_cpus=0, max_retries=0)(_remove_here)
        calls = {
            node: remove.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            ).remote(list(bases), node, job_id)
            for node in nodes
        }
        results = ray.get(list(calls.values()), timeout=120)
        return {node: list(removed) for node, removed in zip(calls, results, strict=True)}
    finally:
        if started:
            ray.shutdown()
