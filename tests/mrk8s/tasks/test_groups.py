"""Tests for mrk8s.tasks.groups.Grouper: sorted tables into (key, values) groups.

The oracle is itertools.groupby over the same rows as one Python list.
"""

from __future__ import annotations

import itertools
import random

import pyarrow as pa
import pytest

from mrk8s.tasks.groups import Grouper
from shuffle import codec


def tables_of(rows: list[tuple[object, object]], cuts: list[int]) -> list[pa.Table]:
    """The rows as tables cut at ``cuts`` (so a key's rows may span several tables)."""
    bounds = [0, *cuts, len(rows)]
    return [
        codec.records_to_table([k for k, _ in rows[a:b]], [v for _, v in rows[a:b]])
        for a, b in itertools.pairwise(bounds)
    ]


@pytest.mark.parametrize("seed", range(4))
def test_groups_match_groupby_across_table_boundaries(seed: int) -> None:
    rng = random.Random(seed)
    n = 2000
    keys = sorted(rng.randrange(rng.choice([5, 300, 5000])) for _ in range(n))
    rows: list[tuple[object, object]] = [(k, f"v{i}") for i, k in enumerate(keys)]
    cuts = [*sorted(rng.sample(range(1, n), 12)), n, n]  # empty tables too

    got = [(k, list(vs)) for k, vs in Grouper(tables_of(rows, cuts))]

    want = [(k, [v for _, v in g]) for k, g in itertools.groupby(rows, key=lambda r: r[0])]
    assert got == want


def test_values_left_unread_are_skipped_and_values_are_iterators() -> None:
    rows: list[tuple[object, object]] = [
        ("a", 1), ("a", 2), ("b", 3), ("c", 4), ("c", 5), ("c", 6), ("d", 7),
    ]  # fmt: skip
    firsts = []
    for key, values in Grouper(tables_of(rows, [2, 4, 5])):
        assert iter(values) is values
        firsts.append((key, next(values)))  # the rest left unread
    assert firsts == [("a", 1), ("b", 3), ("c", 4), ("d", 7)]


def test_no_tables_or_only_empty_ones_give_no_groups() -> None:
    assert list(Grouper([])) == []
    assert list(Grouper(tables_of([], []))) == []
