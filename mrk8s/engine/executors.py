"""The executor that runs a job's tasks: the backend named by ``--backend``.

Light to import (no pyarrow, no Ray), so that ``mrk8s run`` can start local
workers before it loads anything heavy. A backend's optional library is
imported only when that backend is chosen (the registry in
:mod:`scheduler.backends`); a missing one is a usage error that names the
install command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mrk8s.errors import UsageError
from scheduler import backends
from scheduler.stage import Executor

if TYPE_CHECKING:
    from mrk8s.engine.settings import KubernetesSettings

#: What each worker loads before its first task (``LocalExecutor``'s and
#: ``RayExecutor``'s ``preload``).
LOCAL_PRELOAD = ("mrk8s.tasks.run:warm_up",)


#: Options a backend does not implement, and what to do instead.
UNSUPPORTED = {
    ("ray", "speculative"): (
        "--speculative is not implemented on --backend ray: run without it (a slow task "
        "then runs to its end; a lost worker or node is still retried), or run on "
        "--backend local, which gives stragglers a second attempt"
    ),
    ("k8s", "speculative"): (
        "--speculative is not implemented on --backend k8s: run without it (a slow task "
        "then runs to its end; a failed or evicted pod still runs again), or run on "
        "--backend local, which gives stragglers a second attempt"
    ),
}


def check_options(backend: str, *, speculative: bool = False) -> None:
    """Refuse, before anything starts, an option that ``backend`` does not implement."""
    if speculative and (backend, "speculative") in UNSUPPORTED:
        raise UsageError(UNSUPPORTED[backend, "speculative"])


def make_executor(
    backend: str,
    workers: int | None,
    *,
    ray_address: str | None = None,
    script: str | None = None,
    kubernetes: KubernetesSettings | None = None,
    memory_per_worker: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Executor:
    """The executor of ``backend`` with ``workers`` workers (None: one per CPU); not entered.

    Ray: ``ray_address`` names an existing cluster (None starts a local Ray);
    the directory of ``script`` is shipped to a cluster's workers, within
    ``$MRK8S_RAY_SHIP_LIMIT`` bytes (a size such as 200MiB); node-local map
    outputs go under ``$MRK8S_RAY_LOCAL_DIR`` on every node.

    Kubernetes: ``kubernetes`` says how to reach the cluster and shape the
    pods (``memory_per_worker`` is each pod's memory request and limit);
    ``workers`` None runs every task of a stage at once.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give at least 1")
    if backend not in backends.REGISTRY:
        raise UsageError(
            f"--backend {backend!r} is not known: choose one of {', '.join(backends.names())}"
        )
    if ray_address is not None and backend != "ray":
        raise UsageError(f"--ray-address is for --backend ray, not --backend {backend}")
    try:
        cls = backends.load(backend)
    except ImportError as exc:
        raise UsageError(str(exc)) from exc
    executor: Executor
    if backend == "local":
        executor = cls(workers, preload=LOCAL_PRELOAD)
    elif backend == "ray":
        from mrk8s.engine.settings import parse_size

        options: dict[str, object] = {}
        limit = environ.get("MRK8S_RAY_SHIP_LIMIT")
        if limit:
            options["ship_limit"] = parse_size(limit)
        executor = cls(
            workers,
            address=ray_address,
            working_dir=os.path.dirname(os.path.abspath(script)) if script else None,
            local_dir=environ.get("MRK8S_RAY_LOCAL_DIR") or None,
            preload=LOCAL_PRELOAD,
            **options,
        )
    elif backend == "k8s":
        from mrk8s.engine.settings import DEFAULT_MEMORY, KubernetesSettings
        from scheduler.backends.k8s.render import PodSettings

        k8s = kubernetes or KubernetesSettings()
        pods = PodSettings(
            namespace=k8s.namespace,
            image=k8s.image,
            workers=workers,
            cpu=k8s.cpu,
            memory=memory_per_worker or DEFAULT_MEMORY,
            ttl_seconds=k8s.ttl_seconds,
            env_secrets=k8s.env_secrets,
            node_local=k8s.node_local,
            tasks_per_pod=k8s.tasks_per_pod,
        )
        executor = cls(pods, kubeconfig=k8s.kubeconfig, context=k8s.context)
    else:
        executor = cls(workers)
    return executor
