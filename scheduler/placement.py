"""Reducer placement: a small pure function, no I/O.

Called by the driver between the map and reduce stages. Input: for each
reduce partition, the bytes each node holds of it (from the map commit
records), and how many reducers each node may take. Output: the node for
each reducer, chosen to maximise the bytes read locally.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping


def assign(
    partition_bytes: Mapping[int, Mapping[str, int]],
    capacity: Mapping[str, int],
) -> dict[int, str]:
    """Place each partition's reducer on the node holding most of its bytes.

    Greedy: partitions with the most bytes choose first; a partition goes to
    the node with most of its bytes that still has room, else to the node with
    the most room left. ``capacity`` lists every node; a partition with no
    bytes anywhere goes to the least-loaded node. Deterministic for equal input.
    """
    if not capacity:
        return {}
    room = dict(capacity)
    order = sorted(partition_bytes, key=lambda p: (-sum(partition_bytes[p].values()), p))
    out: dict[int, str] = {}
    for p in order:
        by_node = partition_bytes[p]
        # A node listed with 0 bytes holds none of the partition: no reason to prefer it.
        ranked = sorted((n for n in by_node if by_node[n] > 0), key=lambda n: (-by_node[n], n))
        node = next((n for n in ranked if room.get(n, 0) > 0), None)
        if node is None:
            node = max(sorted(room), key=lambda n: room[n])
        out[p] = node
        room[node] = room.get(node, 0) - 1
    return out


def locality(
    placement: Mapping[int, str], partition_bytes: Mapping[int, Mapping[str, int]]
) -> float:
    """Fraction of shuffle bytes a placement reads from the reducer's own node."""
    total = sum(sum(nodes.values()) for nodes in partition_bytes.values())
    if total == 0:
        return 1.0
    local = sum(partition_bytes[p].get(n, 0) for p, n in placement.items() if p in partition_bytes)
    return local / total


def capacity(num_partitions: int, slots: Mapping[str, int]) -> dict[str, int]:
    """How many of ``num_partitions`` reducers each node may take: its share by slots.

    ``slots`` is how many tasks each node runs at once (its workers). A node's
    share is ``ceil(num_partitions * slots / total slots)``, so the shares add
    up to at least ``num_partitions`` and a node with twice the workers takes
    about twice the reducers, however the data lies. Nodes without slots get none.
    """
    total = sum(n for n in slots.values() if n > 0)
    if total == 0:
        return {}
    return {
        node: math.ceil(num_partitions * n / total) for node, n in sorted(slots.items()) if n > 0
    }


def random_assign(
    partitions: Iterable[int], capacity: Mapping[str, int], *, seed: int = 0
) -> dict[int, str]:
    """Each partition on a random node with room, ignoring where its bytes are.

    The baseline that locality-aware placement is measured against
    (``bench/compare_ray.py``); seeded, so a run can be repeated.
    """
    rng = random.Random(seed)
    room = {n: c for n, c in sorted(capacity.items()) if c > 0}
    out: dict[int, str] = {}
    for p in partitions:
        if not room:
            break
        node = rng.choice(sorted(room))
        out[p] = node
        room[node] -= 1
        if room[node] == 0:
            del room[node]
    return out
