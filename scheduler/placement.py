"""Reducer placement: a small pure function, no I/O.

Called by the driver between the map and reduce stages. Input: for each
reduce partition, the bytes each node holds of it (from the map commit
records), and how many reducers each node may take. Output: the node for
each reducer, chosen to maximise the bytes read locally.
"""

from __future__ import annotations

from collections.abc import Mapping


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
