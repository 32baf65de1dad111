"""shuffle/sort.py: the stable key order, against numpy's and Arrow's own sorts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shuffle.sort import int_order, key_order, stable_argsort_small


@pytest.mark.parametrize("upper", [1, 2, 300, 1 << 16, (1 << 16) + 1, 700_000, 1 << 32])
def test_stable_argsort_small_equals_numpy_stable_sort(upper: int) -> None:
    rng = np.random.default_rng(upper % 1000)
    values = rng.integers(0, upper, size=50_000, dtype=np.int64)
    values[:10] = upper - 1  # the largest value occurs, and repeats
    expected = np.argsort(values, kind="stable")
    assert np.array_equal(stable_argsort_small(values, upper), expected)


@pytest.mark.parametrize(
    ("distinct", "rows"), [(3, 120_000), (5_000, 120_000), (90_000, 120_000), (300, 3_000)]
)
def test_key_order_of_repeated_strings_is_arrows_stable_order(distinct: int, rows: int) -> None:
    rng = np.random.default_rng(distinct)
    words = [f"w{int(i)}" for i in rng.integers(0, distinct, size=rows)]
    column = pa.array(words)
    expected = np.asarray(pc.array_sort_indices(column))
    assert np.array_equal(key_order(column), expected)


def test_key_order_puts_nulls_first_like_the_generic_encoding() -> None:
    column = pa.array([3, None, 1, None, 2])
    assert key_order(column).tolist() == [1, 3, 2, 4, 0]


def _int_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 60_000
    wide = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=n, dtype=np.int64)
    wide[:3] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]
    repeats = rng.choice(rng.integers(-(1 << 40), 1 << 40, size=300), size=n)  # wide span, ties
    return {
        "distinct int64 over the whole range": wide,
        "int64 repeats over a wide span": repeats,
        "int8, every value": rng.integers(-128, 128, size=n, dtype=np.int8),
        "int32 near its ends": rng.choice(np.array([-(2**31), 2**31 - 1, 5], np.int32), size=n),
        "uint64 above 2**63": rng.integers(2**63, 2**64 - 1, size=n, dtype=np.uint64) | 1,
        "uint64 repeats": rng.choice(np.array([2**64 - 1, 2**63, 1], np.uint64), size=n),
        "uint16 small span": rng.integers(100, 400, size=n, dtype=np.uint16),
        "already sorted": np.arange(n, dtype=np.int64) * 1_000_003,
        "reversed": np.arange(n, dtype=np.int64)[::-1] * 1_000_003,
        "all equal": np.full(n, -5, dtype=np.int64),
        "one row": np.array([3], dtype=np.int64),
    }


@pytest.mark.parametrize("case", list(_int_cases()))
def test_int_order_is_a_stable_ascending_sort(case: str) -> None:
    values = _int_cases()[case]
    expected = sorted(range(len(values)), key=lambda i: (int(values[i]), i))
    assert int_order(values).tolist() == expected


@pytest.mark.parametrize("case", ["int64 repeats over a wide span", "uint64 above 2**63"])
def test_key_order_of_integers_is_arrows_stable_order(case: str) -> None:
    column = pa.array(_int_cases()[case])
    expected = np.asarray(pc.array_sort_indices(column))
    assert np.array_equal(key_order(column), expected)
