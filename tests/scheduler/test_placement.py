"""Reducer placement and locality, checked exactly on tiny inputs.

``placement.assign`` is a pure function, so each case lists the whole expected
answer: which node each partition's reducer goes to, given the bytes each node
holds of it and the nodes' capacities.
"""

from __future__ import annotations

import pytest

from scheduler import placement


def test_each_partition_goes_to_the_node_holding_most_of_its_bytes():
    partition_bytes = {
        0: {"a": 10, "b": 90},
        1: {"a": 70, "b": 30},
        2: {"c": 5},
    }

    assert placement.assign(partition_bytes, {"a": 2, "b": 2, "c": 2}) == {0: "b", 1: "a", 2: "c"}


def test_capacity_is_respected_and_bigger_partitions_choose_first():
    # Everything lives on "a", which takes one reducer: the biggest partition gets it,
    # even though it is listed last; the others go where there is room.
    partition_bytes = {0: {"a": 10}, 1: {"a": 20}, 2: {"a": 30, "b": 1}}

    out = placement.assign(partition_bytes, {"a": 1, "b": 1, "c": 1})

    assert out == {2: "a", 1: "b", 0: "c"}


def test_a_full_node_sends_the_partition_to_its_next_best_node():
    partition_bytes = {0: {"a": 50, "b": 40}, 1: {"a": 30, "b": 20, "c": 10}}

    assert placement.assign(partition_bytes, {"a": 1, "b": 1, "c": 1}) == {0: "a", 1: "b"}


def test_without_room_on_its_nodes_a_partition_goes_where_most_room_is_left():
    partition_bytes = {0: {"a": 9}, 1: {"a": 8}}

    assert placement.assign(partition_bytes, {"a": 1, "b": 1, "c": 3}) == {0: "a", 1: "c"}


def test_more_partitions_than_capacity_are_all_placed_evenly():
    partition_bytes = {p: {"a": 10 - p} for p in range(5)}

    out = placement.assign(partition_bytes, {"a": 1, "b": 1})

    assert out == {0: "a", 1: "b", 2: "a", 3: "b", 4: "a"}


def test_ties_are_broken_by_partition_then_node_name():
    # Equal totals: partition 0 chooses first; equal bytes: "a" before "b".
    partition_bytes = {1: {"b": 5, "a": 5}, 0: {"b": 5, "a": 5}}

    assert placement.assign(partition_bytes, {"b": 1, "a": 1}) == {0: "a", 1: "b"}


def test_the_answer_does_not_depend_on_the_order_of_the_input():
    partition_bytes = {0: {"a": 3, "b": 3, "c": 3}, 1: {"c": 3}, 2: {}, 3: {"b": 1, "a": 1}}
    capacity = {"a": 1, "b": 2, "c": 1}
    reversed_bytes = {p: dict(reversed(n.items())) for p, n in reversed(partition_bytes.items())}
    reversed_capacity = dict(reversed(capacity.items()))

    out = placement.assign(partition_bytes, capacity)

    assert out == {0: "a", 1: "c", 3: "b", 2: "b"}
    assert placement.assign(reversed_bytes, reversed_capacity) == out


def test_partitions_with_no_bytes_go_to_the_least_loaded_node():
    partition_bytes = {0: {"a": 100}, 1: {"a": 50}, 2: {}, 3: {"a": 0, "b": 0}}

    out = placement.assign(partition_bytes, {"a": 2, "b": 2, "c": 2})

    # 0 and 1 fill up "a"; the empty partitions then spread over "b" and "c", and a
    # node listed with zero bytes is no reason to prefer it.
    assert out == {0: "a", 1: "a", 2: "b", 3: "c"}


def test_a_node_holding_no_bytes_of_a_partition_is_not_preferred():
    partition_bytes = {0: {"a": 10}, 1: {"a": 10, "b": 0}}

    out = placement.assign(partition_bytes, {"a": 1, "b": 1, "c": 2})

    assert out == {0: "a", 1: "c"}


def test_bytes_on_a_node_without_capacity_do_not_attract_the_reducer():
    # "gone" held the map output but takes no reducers (it left the cluster).
    assert placement.assign({0: {"gone": 100, "b": 1}}, {"a": 1, "b": 1}) == {0: "b"}


def test_empty_capacity_places_nothing():
    assert placement.assign({0: {"a": 10}, 1: {}}, {}) == {}


def test_no_partitions_places_nothing():
    assert placement.assign({}, {"a": 1}) == {}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({0: "a", 1: "b"}, 1.0),
        ({0: "b", 1: "a"}, 0.0),
        ({0: "a", 1: "a"}, 0.75),
        ({0: "a"}, 0.75),  # partition 1 placed nowhere: none of its bytes are local
        ({0: "a", 1: "b", 7: "a"}, 1.0),  # a partition without bytes counts for nothing
    ],
)
def test_locality_is_the_fraction_of_bytes_read_on_the_reducers_node(where, expected):
    partition_bytes = {0: {"a": 3}, 1: {"b": 1}}

    assert placement.locality(where, partition_bytes) == expected


def test_locality_of_a_split_partition_counts_only_the_local_share():
    partition_bytes = {0: {"a": 1, "b": 3}, 1: {"a": 2, "c": 2}}

    assert placement.locality({0: "b", 1: "a"}, partition_bytes) == 5 / 8


def test_locality_without_shuffle_bytes_is_one():
    assert placement.locality({0: "a"}, {0: {"a": 0}}) == 1.0
    assert placement.locality({}, {}) == 1.0


def test_assigned_placement_reads_most_bytes_locally():
    partition_bytes = {0: {"a": 6, "b": 2}, 1: {"a": 1, "b": 7}, 2: {"c": 4}}

    out = placement.assign(partition_bytes, {"a": 1, "b": 1, "c": 1})

    assert out == {0: "a", 1: "b", 2: "c"}
    assert placement.locality(out, partition_bytes) == 17 / 20


# -- capacity: each node's share of the reducers, by its slots --------------------------


def test_capacity_follows_uneven_node_slots():
    # 12 reducers over nodes running 4, 1 and 1 tasks at once: 8, 2 and 2.
    assert placement.capacity(12, {"big": 4, "a": 1, "b": 1}) == {"a": 2, "b": 2, "big": 8}


def test_capacity_rounds_up_so_every_reducer_has_a_place():
    out = placement.capacity(7, {"a": 2, "b": 1, "c": 1})

    assert out == {"a": 4, "b": 2, "c": 2}
    assert sum(out.values()) >= 7


def test_capacity_gives_nothing_to_nodes_without_slots():
    assert placement.capacity(4, {"a": 2, "idle": 0}) == {"a": 4}
    assert placement.capacity(4, {}) == {}


def test_skewed_partition_takes_its_node_and_the_rest_spread_by_capacity():
    # Partition 0 holds nearly everything, all on "big"; the small ones are spread
    # over every node, but "big" holds a bit more of each of them too. With
    # capacities from uneven slots (big: 4, a: 1, b: 1 -> 4, 1, 1 of 6 reducers),
    # the skewed partition goes first to "big", and "big" fills up to its share
    # before the small partitions go to "a" and "b".
    partition_bytes = {0: {"big": 10_000}} | {p: {"big": 30, "a": 20, "b": 10} for p in range(1, 6)}
    capacity = placement.capacity(6, {"big": 4, "a": 1, "b": 1})

    out = placement.assign(partition_bytes, capacity)

    assert capacity == {"a": 1, "b": 1, "big": 4}
    assert out == {0: "big", 1: "big", 2: "big", 3: "big", 4: "a", 5: "b"}
    # Local: all of partition 0, "big"'s 30 of partitions 1-3, "a"'s 20 of 4, "b"'s 10 of 5.
    total = 10_000 + 5 * 60
    assert placement.locality(out, partition_bytes) == (10_000 + 3 * 30 + 20 + 10) / total


def test_skewed_partitions_on_one_node_overflow_to_the_nodes_with_most_room():
    # Every byte is on "a", which has room for 2 of 5 reducers: the two biggest
    # stay there, the rest go to the nodes with the most room left.
    partition_bytes = {p: {"a": size} for p, size in enumerate([5, 900, 40, 300, 7])}
    capacity = placement.capacity(5, {"a": 1, "b": 2, "c": 1})

    out = placement.assign(partition_bytes, capacity)

    assert capacity == {"a": 2, "b": 3, "c": 2}
    assert out == {1: "a", 3: "a", 2: "b", 4: "b", 0: "c"}


# -- random placement: the baseline of the locality benchmark ------------------------------


def test_random_assign_respects_capacity_and_is_seeded():
    capacity = {"a": 2, "b": 1, "c": 3}

    out = placement.random_assign(range(6), capacity, seed=3)

    assert sorted(out) == list(range(6))
    assert {n: list(out.values()).count(n) for n in capacity} == capacity
    assert placement.random_assign(range(6), capacity, seed=3) == out
    others = [placement.random_assign(range(6), capacity, seed=s) for s in range(10)]
    assert any(o != out for o in others)  # the seed matters


def test_random_assign_stops_when_capacity_runs_out():
    assert placement.random_assign(range(3), {"a": 1}) == {0: "a"}
