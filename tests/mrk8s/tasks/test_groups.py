"""Tests for mrk8s.tasks.groups.Grouper: sorted tables into (key, values) groups.

The oracle is itertools.groupby over the same rows as one Python list.
"""

from __future__ import annotations

import collections
import itertools
import random

import pyarrow as pa
import pytest

from mrk8s.tasks.groups import Grouper, key_starts, whole_key_pieces
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


# -- whole_key_pieces: pieces of whole keys for reduce_batch -------------------------


def int_tables(keys: list[int], cuts: list[int]) -> list[pa.Table]:
    """Rows (key, row number) as int64 tables cut at ``cuts``: 16 bytes a row."""
    bounds = [0, *cuts, len(keys)]
    return [
        pa.table({"key": pa.array(keys[a:b], pa.int64()), "value": pa.array(range(a, b))})
        for a, b in itertools.pairwise(bounds)
    ]


@pytest.mark.parametrize("seed", range(40))
def test_pieces_hold_whole_keys_in_order_within_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 3000)
    keys = sorted(rng.randrange(rng.choice([3, 40, 5000])) for _ in range(n))
    cuts = sorted(rng.choices(range(n + 1), k=rng.randrange(12)))  # empty tables too
    limit = rng.choice([1, 16 * 7, 16 * 100, 16 * 1000, 1 << 30])

    pieces = list(whole_key_pieces(int_tables(keys, cuts), limit))

    rows = [
        (k, v)
        for p in pieces
        for k, v in zip(p["key"].to_pylist(), p["value"].to_pylist(), strict=True)
    ]
    assert rows == list(zip(keys, range(n), strict=True))  # every row once, in order
    key_sets = [set(p["key"].to_pylist()) for p in pieces]
    for a, b in itertools.pairwise(key_sets):
        assert max(a) < min(b)  # no key in two pieces
    sizes = collections.Counter(keys)
    for p, ks in zip(pieces, key_sets, strict=True):
        assert p.num_rows
        assert p.num_rows * 16 <= limit or len(ks) == 1  # over the limit: one key alone
    # Greedy: a piece is cut only where the next key would not have fitted.
    for p, following in zip(pieces, key_sets[1:], strict=False):
        assert (p.num_rows + sizes[min(following)]) * 16 > limit


def test_a_key_spanning_tables_stays_whole_and_alone_when_too_large() -> None:
    keys = [1] * 3 + [2] * 50 + [3] * 2
    pieces = list(whole_key_pieces(int_tables(keys, [2, 10, 20, 30, 40, 54]), 16 * 8))
    assert [p["key"].to_pylist() for p in pieces] == [[1] * 3, [2] * 50, [3] * 2]


def test_pieces_keep_nulls_together_and_nans_together() -> None:
    nan = float("nan")
    column = pa.array([1.0, 1.0, 2.0, nan, nan, nan, None, None, None])
    assert key_starts(column).tolist() == [2, 3, 6]
    assert key_starts(pa.chunked_array([column.slice(0, 4), column.slice(4)])).tolist() == [2, 3, 6]
    table = pa.table({"key": column, "value": pa.array(range(9))})
    # Tables of one row each: the NaNs and the nulls each go on across tables.
    tables = [table.slice(i, 1) for i in range(9)]
    pieces = list(whole_key_pieces(tables, 1))
    assert [p["value"].to_pylist() for p in pieces] == [[0, 1], [2], [3, 4, 5], [6, 7, 8]]


def test_pieces_of_keys_in_two_encodings_are_unified_and_whole() -> None:
    # Two map tasks' runs may carry a key typed in one and in the generic encoding in another.
    typed = codec.records_to_table(["a", "b", "b"], [1, 2, 3])
    generic = codec.records_to_table(["b", ("t", 1)], [4, 5])
    assert codec.table_key_encoding(generic.schema) == "generic"
    pieces = list(whole_key_pieces([typed, generic], 1))
    got = [codec.decode_keys(p["key"], codec.table_key_encoding(p.schema)) for p in pieces]
    assert got == [["a"], ["b", "b", "b"], [("t", 1)]]


def test_no_tables_give_no_pieces() -> None:
    assert list(whole_key_pieces([], 100)) == []
    assert list(whole_key_pieces(int_tables([], []), 100)) == []
