"""Which cluster runs a job: its queue's clusters of the asked kind, one drawn by weight.

Called by :func:`mrk8s.gateway.submit.prepare` before a job is created. A
queue is served by the clusters its config names (with the weights it gives,
or theirs), else by every cluster; of those, the ones whose kind is the
request's ``backend`` are the candidates, and one is drawn with probability
proportional to its weight. The draw uses a :class:`random.Random` the
caller owns, so a test can give a seeded one and know every choice.

A queue's cap on running jobs counts the jobs of the queue on all of its
clusters (the supervisor holds it); the id of a job starts with the name of
the cluster chosen here.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping

from mrk8s.gateway.config import GatewayConfig, Queue


class NoCluster(Exception):
    """No cluster of the asked kind serves the queue (the message says which do)."""


def weights(config: GatewayConfig, queue: Queue, kind: str) -> dict[str, float]:
    """The candidate clusters of a job of ``kind`` in ``queue``, with their weights."""
    served: Mapping[str, float] = queue.clusters or {c.name: c.weight for c in config.clusters}
    out = {}
    for name, weight in served.items():
        cluster = config.cluster(name)
        if cluster is not None and cluster.kind == kind and weight > 0:
            out[name] = weight
    return out


def check_kind(config: GatewayConfig, kind: str) -> None:
    """:class:`NoCluster` unless some cluster of the config is of ``kind``."""
    if not any(c.kind == kind for c in config.clusters):
        have = ", ".join(f"{c.name} ({c.kind})" for c in config.clusters)
        raise NoCluster(
            f"backend {kind!r}: this gateway has no cluster of that kind (its clusters: "
            f"{have}); add one under clusters: in its config, or choose another backend"
        )


def choose(config: GatewayConfig, queue: Queue, kind: str, rng: random.Random) -> str:
    """The name of the cluster that runs a job of ``kind`` in ``queue``; :class:`NoCluster`."""
    candidates = weights(config, queue, kind)
    if not candidates:
        served = queue.clusters or {c.name: c.weight for c in config.clusters}
        kinds = ", ".join(f"{n} ({c.kind})" for n in served if (c := config.cluster(n)) is not None)
        raise NoCluster(
            f"no cluster of kind {kind!r} serves queue {queue.name!r} (it is served by: "
            f"{kinds or 'none'}): choose another backend or queue, or add a {kind} cluster "
            "to the queue in the gateway's config"
        )
    names = sorted(candidates)  # a fixed order, so a seed gives the same draws
    cumulative = list(itertools.accumulate(candidates[n] for n in names))
    pick = rng.random() * cumulative[-1]
    return names[min(bisect.bisect_right(cumulative, pick), len(names) - 1)]
