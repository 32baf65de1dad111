"""shuffle/sort.py: the stable key order, against numpy's and Arrow's own sorts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shuffle.sort import key_order, stable_argsort_small


@pytest.mark.parametrize("upper", [1, 2, 300, 1 << 16, (1 << 16) + 1, 700_000, 1 << 32])
def test_stable_argsort_small_equals_numpy_stable_sort(upper: int) -> None:
    rng = np.random.default_rng(upper % 1000)
    values = rng.integers(0, upper, size=50_000, dtype=np.int64)
    values[:10] = upper - 1  # the largest value occurs, and repeats
    expected = np.argsort(values, kind="stable")
    assert np.array_equal(stable_argsort_small(values, upper), expected)


@pytest.mark.parametrize("distinct", [3, 5_000, 90_000])
def test_key_order_of_repeated_strings_is_arrows_stable_order(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    words = [f"w{int(i)}" for i in rng.integers(0, distinct, size=120_000)]
    column = pa.array(words)
    expected = np.asarray(pc.array_sort_indices(column))
    assert np.array_equal(key_order(column), expected)


def test_key_order_puts_nulls_first_like_the_generic_encoding() -> None:
    column = pa.array([3, None, 1, None, 2])
    assert key_order(column).tolist() == [1, 3, 2, 4, 0]
