"""Tests for shuffle.partition: stable hashing, hash partitions, range boundaries and cuts."""

from __future__ import annotations

import bisect
import itertools
import math
import random
import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shuffle import codec, partition
from shuffle.codec import encode_key, generic_key_array
from shuffle.errors import KeyEncodingError
from shuffle.partition import (
    boundaries_from_sample,
    hash_bytes,
    hash_keys,
    hash_partition,
    partition_of,
    range_cuts,
    range_partition,
)
from tests.shuffle.columns import integer_extremes


def reference_hashes(column: pa.Array | pa.ChunkedArray) -> list[int]:
    """The oracle: hash the generic encoding of each Python value, in pure Python."""
    return [hash_bytes(encode_key(v)) for v in column.to_pylist()]


def check_typed_and_generic_agree(column: pa.Array | pa.ChunkedArray) -> None:
    expected = reference_hashes(column)
    typed = hash_keys(column, "typed")
    assert typed.dtype == np.uint64
    assert typed.tolist() == expected
    generic = hash_keys(generic_key_array(column, "typed"), "generic")
    assert generic.tolist() == expected


# ------------------------------------------------------------ the reference hash


def test_hash_bytes_definition_on_tiny_inputs() -> None:
    # Independent restatement of the documented definition.
    mask = 2**64 - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    assert hash_bytes(b"") == mix(0)
    assert hash_bytes(b"\x01") == mix(1 ^ partition.LENGTH_MULT)
    word0 = int.from_bytes(b"abcdefgh", "little")
    word1 = int.from_bytes(b"i", "little")
    s = (word0 + word1 * partition.P) & mask
    assert hash_bytes(b"abcdefghi") == mix(s ^ ((9 * partition.LENGTH_MULT) & mask))


def test_trailing_zero_bytes_change_the_hash() -> None:
    assert hash_bytes(b"a") != hash_bytes(b"a\x00")
    assert hash_bytes(b"") != hash_bytes(b"\x00")


def test_pinned_hashes_do_not_move() -> None:
    # Computed once. If this fails, every key now lands in another partition:
    # old map outputs and any user partitioner that mirrors this would break.
    pinned = {
        "apple": 0xD7939B82A5603BA1,
        42: 0x9915D32CFDEF7091,
        ("a", 1): 0xD011DE8D1BEBA85C,
        b"": 0xD6967248FBE68CC3,
        "a much longer key that spans several words": 0x88B3D8095DB920A7,
    }
    for key, expected in pinned.items():
        assert hash_bytes(encode_key(key)) == expected, key
    assert hash_keys(pa.array(["apple"]), "typed").tolist() == [pinned["apple"]]
    assert hash_keys(pa.array([42]), "typed").tolist() == [pinned[42]]
    assert [partition_of(k, 1000) for k in pinned] == [842, 597, 812, 838, 533]


# ------------------------------------------------------------ typed == generic


def _columns() -> list[pa.Array]:
    rng = random.Random(11)
    words = ["".join(rng.choices("ab\x00é", k=rng.randint(0, 30))) for _ in range(300)]
    words[7] = None  # type: ignore[call-overload]
    raw = [bytes(rng.choices(range(256), k=rng.randint(0, 25))) for _ in range(300)]
    raw[3] = None  # type: ignore[call-overload]
    columns = [
        pa.array(words),
        pa.array(words, pa.large_string()),
        pa.array(words).cast(pa.string_view()),
        pa.array(raw),
        pa.array(raw, pa.large_binary()),
        pa.array(raw).cast(pa.binary_view()),
        pa.array([b"abc", None, b"\x00\x00\x00", b"xyz"], pa.binary(3)),
        pa.array([b"", b""], pa.binary(0)),
        pa.array(["", "", None]),
        pa.array([True, False, None]),
        pa.array([None, None], pa.null()),
        pa.array([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, None, 1e-310, 2.5]),
        pa.array([0.0, -0.0, None, 1.5, -3.25e38], pa.float32()),
        pa.array(np.array([0.0, -0.0, 65504, -1.5], dtype=np.float16)),
        pa.array([0, 2**63 - 1, 2**63, 2**64 - 1, None, 5], pa.uint64()),
        pa.array([rng.randint(-(2**63), 2**63 - 1) for _ in range(300)] + [None]),
        pa.array(["b", "a", None, "b"]).dictionary_encode(),
        pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 1]), pa.array([7, None])),
        pa.DictionaryArray.from_arrays(
            pa.array([None, None], pa.int32()), pa.array([], pa.int64())
        ),
        pa.array([[1, 2], None, []], pa.list_(pa.int64())),
    ]
    columns.extend(integer_extremes())
    return columns


@pytest.mark.parametrize("column", _columns(), ids=lambda c: str(c.type))
def test_typed_and_generic_hashes_agree(column: pa.Array) -> None:
    check_typed_and_generic_agree(column)
    if len(column) > 2:
        check_typed_and_generic_agree(column.slice(1, len(column) - 2))
        check_typed_and_generic_agree(column.slice(len(column) - 1))
        check_typed_and_generic_agree(
            pa.chunked_array([column.slice(0, 1), column.slice(1, 0), column.slice(1)])
        )


def test_values_around_word_boundaries() -> None:
    # Tagged lengths 1..40 cross every word boundary; a shared prefix makes a
    # wrong mask or shift show up as a collision or a mismatch.
    words = ["x" * n for n in range(40)] + ["\x00" * n for n in range(1, 40)]
    column = pa.array(words)
    check_typed_and_generic_agree(column)
    assert len(set(hash_keys(column, "typed").tolist())) == len(words)


def test_mostly_long_and_mostly_short_columns() -> None:
    rng = random.Random(12)
    # Most values long: the dense passes. One long among short: the sparse ones.
    mostly_long = [
        "".join(rng.choices(string.ascii_letters, k=rng.randint(20, 200))) for _ in range(400)
    ]
    mostly_short = ["ab"] * 400 + ["y" * 300]
    for words in [mostly_long, mostly_short]:
        check_typed_and_generic_agree(pa.array(words))
        check_typed_and_generic_agree(pa.array(words).slice(3))


def test_values_longer_than_the_vectorised_words() -> None:
    words = ["s"] * 50 + ["L" * n for n in (4095, 4096, 4097, 5000, 9000, 70000)] + ["q" * 10]
    words[20] = "z" * 4103
    check_typed_and_generic_agree(pa.array(words))
    raw = [b"\xff" * 4097, b"", b"\x00" * 8191]
    check_typed_and_generic_agree(pa.array(raw))


def test_same_key_in_typed_and_generic_columns_gets_the_same_partition() -> None:
    keys = ["apple", "banana", "", "é"]
    typed, encoding = codec.encode_keys(keys)
    assert encoding == "typed"
    # Another map task also saw a tuple key, so its column is generic.
    generic, encoding = codec.encode_keys([*keys, ("t", 1)])
    assert encoding == "generic"
    assert (
        hash_partition(typed, "typed", 7).tolist()
        == hash_partition(generic, "generic", 7)[:4].tolist()
    )


def test_empty_columns() -> None:
    assert hash_keys(pa.array([], pa.string()), "typed").tolist() == []
    assert hash_keys(pa.chunked_array([], pa.int64()), "typed").tolist() == []
    assert hash_partition(pa.array([], pa.binary()), "generic", 3).tolist() == []


def test_bad_encoding_and_bad_generic_column() -> None:
    with pytest.raises(KeyEncodingError, match="unknown key encoding 'msgpack'"):
        hash_keys(pa.array([b"x"]), "msgpack")
    with pytest.raises(KeyEncodingError, match="generic key column must be binary, not int64"):
        hash_keys(pa.array([1]), "generic")


def test_unsupported_typed_column() -> None:
    with pytest.raises(KeyEncodingError, match="datetime"):
        hash_keys(pa.array([np.datetime64("2024-01-01", "us")]), "typed")


# ------------------------------------------------------------ hash partitions


def test_hash_partition_matches_partition_of() -> None:
    rng = random.Random(13)
    keys = [rng.randint(-1000, 1000) for _ in range(500)]
    parts = hash_partition(pa.array(keys), "typed", 13)
    assert parts.dtype == np.int32
    assert parts.tolist() == [partition_of(k, 13) for k in keys]
    assert hash_partition(pa.array(keys), "typed", 1).tolist() == [0] * 500


@pytest.mark.parametrize("num_partitions", [0, -1, 2**31])
def test_bad_partition_count(num_partitions: int) -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        hash_partition(pa.array(["a"]), "typed", num_partitions)


def _chi_square(parts: np.ndarray, num_partitions: int) -> float:
    counts = np.bincount(parts, minlength=num_partitions)
    expected = len(parts) / num_partitions
    return float(((counts - expected) ** 2 / expected).sum())


def test_partition_balance_on_random_strings() -> None:
    rng = random.Random(14)
    keys: set[str] = set()
    while len(keys) < 100_000:
        keys.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 14))))
    column = pa.array(sorted(keys))
    for num_partitions in (16, 97):
        # chi-square with R-1 degrees of freedom has mean R-1 and sd sqrt(2(R-1));
        # 4x the mean is many standard deviations away, yet catches a broken hash.
        chi = _chi_square(hash_partition(column, "typed", num_partitions), num_partitions)
        assert chi < 4 * num_partitions, chi


def test_partition_balance_on_structured_keys() -> None:
    columns = [
        pa.array(np.arange(100_000)),
        pa.array(np.arange(100_000) * 1024),
        pa.array([str(i) for i in range(100_000)]),
        pa.array(np.arange(100_000) / 8.0),
    ]
    for column in columns:
        chi = _chi_square(hash_partition(column, "typed", 16), 16)
        assert chi < 64, (column.type, chi)


# ------------------------------------------------------------ range partitions


@pytest.mark.parametrize(
    ("sample", "num_partitions", "expected"),
    [
        ([b"d", b"a", b"c", b"b"], 2, [b"c"]),
        ([b"a", b"b", b"c", b"d"], 4, [b"b", b"c", b"d"]),
        ([b"a", b"b", b"c"], 2, [b"b"]),
        ([b"a", b"b", b"c", b"d", b"e", b"f"], 3, [b"c", b"e"]),
        ([b"a", b"b"], 4, [b"a", b"b", b"b"]),
        ([b"x"], 1, []),
        ([b"x", b"x", b"x", b"y"], 2, [b"x"]),
        ([], 3, [b"", b""]),
    ],
)
def test_boundaries_from_sample(
    sample: list[bytes], num_partitions: int, expected: list[bytes]
) -> None:
    assert boundaries_from_sample(sample, num_partitions) == expected


def test_boundaries_split_a_uniform_sample_evenly() -> None:
    sample = [encode_key(i) for i in range(1000)]
    boundaries = boundaries_from_sample(sample, 4)
    assert boundaries == [encode_key(250), encode_key(500), encode_key(750)]


def oracle_cuts(keys: list[object], boundaries: list[bytes]) -> list[int]:
    encoded = [encode_key(k) for k in keys]
    return [0] + [sum(e < b for e in encoded) for b in boundaries] + [len(keys)]


def oracle_partition(key: object, boundaries: list[bytes]) -> int:
    encoded = encode_key(key)
    return sum(b <= encoded for b in boundaries)


def _sorted_typed(values: list[object], arrow_type: pa.DataType | None = None) -> pa.Array:
    column = pa.array(values, arrow_type)
    return column.take(pc.array_sort_indices(column, null_placement="at_start"))


def test_range_cuts_against_oracle() -> None:
    rng = random.Random(15)
    for trial in range(60):
        kind = trial % 4
        n = rng.choice([0, 1, 2, 7, 100, 1000])
        if kind == 0:
            column = _sorted_typed([rng.randint(-50, 50) for _ in range(n)])
            encoding = "typed"
        elif kind == 1:
            column = _sorted_typed(
                ["".join(rng.choices("abc", k=rng.randint(0, 4))) for _ in range(n)]
            )
            encoding = "typed"
        elif kind == 2:
            keys = [(rng.choice("ab"), rng.randint(0, 3)) for _ in range(n)]
            column = pa.array(sorted(encode_key(k) for k in keys), pa.binary())
            encoding = "generic"
        else:
            column = _sorted_typed(
                [rng.choice([None, 1.5, -0.0, 0.0, math.inf, 2.0]) for _ in range(n)]
            )
            encoding = "typed"
        keys_back = codec.decode_keys(column, encoding)
        pool = [encode_key(k) for k in keys_back] + [encode_key(rng.randint(-60, 60)), b"", b"\xff"]
        num_partitions = rng.randint(1, 9)
        boundaries = sorted(rng.choice(pool) for _ in range(num_partitions - 1))
        cuts = range_cuts(column, encoding, boundaries)
        assert cuts == oracle_cuts(keys_back, boundaries), (column, boundaries)
        chunked = pa.chunked_array([column.slice(0, n // 3), column.slice(n // 3)], column.type)
        assert range_cuts(chunked, encoding, boundaries) == cuts
        parts = range_partition(column, encoding, boundaries)
        assert parts.dtype == np.int32
        assert parts.tolist() == [oracle_partition(k, boundaries) for k in keys_back]
        # On sorted data the cuts and the per-row partitions say the same thing.
        assert np.bincount(parts, minlength=len(boundaries) + 1).tolist() == [
            b - a for a, b in itertools.pairwise(cuts)
        ]


def test_range_cuts_exact() -> None:
    column = pa.array(["a", "b", "b", "c", "d"])
    boundaries = [encode_key("b"), encode_key("c")]
    assert range_cuts(column, "typed", boundaries) == [0, 1, 3, 5]
    assert range_cuts(column, "typed", []) == [0, 5]
    assert range_cuts(pa.array([], pa.string()), "typed", boundaries) == [0, 0, 0, 0]


def test_range_cuts_probes_only_log_n_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = codec.encode_key

    def counting(key: object) -> bytes:
        nonlocal calls
        calls += 1
        return real(key)

    n = 100_000
    column = pa.array(np.arange(n))
    boundaries = [real(i) for i in range(0, n, n // 10)][1:]
    monkeypatch.setattr(codec, "encode_key", counting)
    cuts = range_cuts(column, "typed", boundaries)
    assert cuts == [0, *range(10_000, n, 10_000), n]
    assert calls <= len(boundaries) * (math.log2(n) + 2)


def test_range_boundaries_must_be_sorted() -> None:
    with pytest.raises(ValueError, match="sorted"):
        range_cuts(pa.array([1]), "typed", [encode_key(2), encode_key(1)])
    with pytest.raises(ValueError, match="sorted"):
        range_partition(pa.array([1]), "typed", [encode_key(2), encode_key(1)])


def test_range_partition_of_mixed_generic_keys() -> None:
    keys = [None, True, -1, 2**70, 0.5, "a", b"a", ("a",), ["a"]]
    column = pa.array([encode_key(k) for k in reversed(keys)])
    boundaries = [encode_key(0), encode_key("a")]
    parts = range_partition(column, "generic", boundaries).tolist()
    assert parts == [oracle_partition(k, boundaries) for k in reversed(keys)]
    assert bisect.bisect_right(boundaries, encode_key("a")) == 2
