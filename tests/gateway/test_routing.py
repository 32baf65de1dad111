"""Routing: a queue's clusters of the asked kind, one drawn by weight with a seeded RNG.

The choice function is checked on many draws against the weights (a
chi-square test at a fixed seed, so it cannot flake), and the config's
clusters and queues are read with clear errors. The end-to-end run through
two clusters is in ``test_k8s.py``.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mrk8s.errors import UsageError
from mrk8s.gateway import config, routing


def _config(**raw):
    base = {
        "clusters": [
            {"name": "east", "kind": "k8s", "weight": 1, "storage": "s3://b/east"},
            {"name": "west", "kind": "k8s", "weight": 1, "storage": "s3://b/west"},
            {"name": "here", "kind": "local", "weight": 2},
        ],
        "queues": {
            "prod": {"clusters": {"east": 3, "west": 1}},
            "dev": {"clusters": ["west", "here"]},
            "any": {},
        },
    }
    base.update(raw)
    return config.from_mapping(base, state_dir="st", environ={})


def chi_square(observed: Counter[str], weights: dict[str, float]) -> float:
    n = sum(observed.values())
    total = sum(weights.values())
    return sum((observed[k] - n * w / total) ** 2 / (n * w / total) for k, w in weights.items())


def test_draws_follow_the_queues_weights_over_many_submissions():
    c = _config()
    rng = random.Random(20261205)
    n = 8000
    prod = Counter(routing.choose(c, c.queue("prod"), "k8s", rng) for _ in range(n))
    assert set(prod) == {"east", "west"}
    # 3:1; chi-square with 1 degree of freedom, 99.9th percentile 10.83.
    assert chi_square(prod, {"east": 3, "west": 1}) < 10.83, prod
    assert abs(prod["east"] / n - 0.75) < 0.02

    # A queue with no clusters of its own: every cluster of the kind, with its own weight.
    anyq = Counter(routing.choose(c, c.queue("any"), "k8s", rng) for _ in range(n))
    assert chi_square(anyq, {"east": 1, "west": 1}) < 10.83, anyq
    # The kind decides first: only "here" is local.
    assert {routing.choose(c, c.queue("any"), "local", rng) for _ in range(50)} == {"here"}


def test_a_seed_gives_the_same_choices_and_another_seed_other_ones():
    c = _config()
    draws = [
        [routing.choose(c, c.queue("prod"), "k8s", random.Random(seed)) for _ in range(1)]
        for seed in range(200)
    ]
    again = [
        [routing.choose(c, c.queue("prod"), "k8s", random.Random(seed)) for _ in range(1)]
        for seed in range(200)
    ]
    assert draws == again
    assert {d[0] for d in draws} == {"east", "west"}


def test_a_listed_cluster_keeps_its_own_weight_and_zero_means_never():
    c = _config(
        queues={"dev": {"clusters": ["west", "here"]}, "off": {"clusters": {"east": 0, "west": 1}}}
    )
    assert routing.weights(c, c.queue("dev"), "k8s") == {"west": 1.0}
    assert routing.weights(c, c.queue("dev"), "local") == {"here": 2.0}
    rng = random.Random(1)
    assert {routing.choose(c, c.queue("off"), "k8s", rng) for _ in range(200)} == {"west"}


def test_no_cluster_of_the_kind_in_the_queue_says_which_serve_it():
    c = _config()
    with pytest.raises(routing.NoCluster, match=r"no cluster of kind 'local' serves queue 'prod'"):
        routing.choose(c, c.queue("prod"), "local", random.Random(0))
    with pytest.raises(routing.NoCluster, match=r"served by: east \(k8s\), west \(k8s\)"):
        routing.choose(c, c.queue("prod"), "local", random.Random(0))


def test_no_clusters_in_the_config_is_this_machine_only():
    c = config.from_mapping({}, state_dir="st", environ={})
    assert c.clusters == (config.Cluster("local"),)
    assert routing.choose(c, c.queue("default"), "local", random.Random(0)) == "local"
    with pytest.raises(routing.NoCluster, match="has no cluster of that kind"):
        routing.check_kind(c, "k8s")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"clusters": [{"name": "East", "kind": "k8s"}]}, "lowercase letters"),
        ({"clusters": [{"name": "e", "kind": "yarn"}]}, "kind 'yarn' is not one of"),
        ({"clusters": [{"name": "e", "kind": "k8s"}]}, "give storage, an object-store URL"),
        (
            {"clusters": [{"name": "e", "kind": "local", "kubeconfig": "k"}]},
            "unknown key.*kubeconfig",
        ),
        ({"clusters": [{"name": "e"}, {"name": "e"}]}, "a name appears twice"),
        ({"queues": {"q": {"clusters": {"nowhere": 1}}}}, "names 'nowhere', which is not one"),
        ({"queues": {"q": {"clusters": {"local": -1}}}}, "give a number of at least 0"),
        ({"queues": {"q": {"clusters": "local"}}}, "must be a list of cluster names"),
        ({"routing": {"seed": "x"}}, "routing.seed"),
    ],
)
def test_bad_clusters_and_queues_are_refused_naming_the_key(raw, message):
    with pytest.raises(UsageError, match=message):
        config.from_mapping(raw, state_dir="st", environ={})
