"""Tests for shuffle.codec: the generic key encoding, msgpack values, typed columns."""

from __future__ import annotations

import collections
import datetime
import enum
import math
import random
import struct
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shuffle import codec
from shuffle.codec import (
    decode_key,
    decode_keys,
    decode_values,
    encode_key,
    encode_keys,
    encode_values,
    generic_key_array,
    records_to_table,
    table_key_encoding,
    table_value_encoding,
)
from shuffle.errors import CorruptSegmentError, KeyEncodingError
from tests.shuffle.columns import integer_extremes

Single = collections.namedtuple("Single", "x")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def same(a: object, b: object) -> bool:
    """Equal and of exactly the same types all the way down (bool is not int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        assert isinstance(b, tuple | list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)  # type: ignore[arg-type]
    return a == b


# ------------------------------------------------------------ random values

ALPHABET = ["a", "b", "z", "\x00", "\x01", "é", "\uffff", "\U0001f600", "A", " "]


def random_str(rng: random.Random, max_len: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def random_bytes(rng: random.Random, max_len: int = 6) -> bytes:
    return bytes(
        rng.choice([0, 1, 0x7F, 0x80, 0xFE, 0xFF, 0x30]) for _ in range(rng.randint(0, max_len))
    )


def random_int(rng: random.Random) -> int:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randint(-5, 5)
    if kind == 1:
        return rng.choice([INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX + 1, INT64_MIN - 1])
    if kind == 2:
        return rng.randint(INT64_MIN, INT64_MAX)
    if kind == 3:
        return rng.randint(-(2**200), 2**200)
    if kind == 4:
        return rng.choice([1, -1]) * (int(2 ** rng.randint(60, 2100)) + rng.randint(-3, 3))
    return rng.randint(-(2**70), 2**70)


def random_float(rng: random.Random) -> float:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice([0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, 1.0, -1.0, 1e308])
    if kind == 1:
        return rng.uniform(-10, 10)
    if kind == 2:
        value: float = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        return value
    return float(rng.randint(-100, 100))


def random_scalar(rng: random.Random) -> object:
    kind = rng.randrange(7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return random_int(rng)
    if kind == 3:
        return random_float(rng)
    if kind == 4:
        return random_str(rng)
    if kind == 5:
        return random_bytes(rng)
    return rng.randint(-3, 3)


def random_key(rng: random.Random, depth: int = 0) -> object:
    if depth >= 3 or rng.random() < 0.5:
        return random_scalar(rng)
    kind = rng.randrange(3)
    items = [random_key(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 0:
        return tuple(items)
    if kind == 1:
        return items
    # dict keys must be hashable: scalars or tuples of scalars
    keys = [random_scalar(rng) for _ in range(rng.randint(0, 4))]
    keys += [tuple(random_scalar(rng) for _ in range(2))]
    return {k: random_key(rng, depth + 1) for k in keys if not _is_nan(k)}


def _is_nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


# ------------------------------------------------------------ exact encodings


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        (None, b"\x01"),
        (False, b"\x02\x00"),
        (True, b"\x02\x01"),
        (0, b"\x10\x80" + bytes(7)),
        (-1, b"\x10" + b"\x7f" + b"\xff" * 7),
        (1, b"\x10\x80" + bytes(6) + b"\x01"),
        (INT64_MIN, b"\x10" + bytes(8)),
        (INT64_MAX, b"\x10" + b"\xff" * 8),
        (2**63, b"\x11\x08\x80" + bytes(7)),
        (-(2**63) - 1, b"\x0f" + bytes([0xFF - 8]) + b"\x7f" + b"\xff" * 6 + b"\xfe"),
        (1.0, b"\x20\xbf\xf0" + bytes(6)),
        (-1.0, b"\x20\x40\x0f" + b"\xff" * 6),
        (0.0, b"\x20\x80" + bytes(7)),
        (-0.0, b"\x20\x80" + bytes(7)),
        ("", b"\x30"),
        ("a\x00b", b"\x30a\x00b"),
        ("é", b"\x30\xc3\xa9"),
        (b"", b"\x40"),
        (b"\x00\xff", b"\x40\x00\xff"),
        ((), b"\x50\x00"),
        ([], b"\x51\x00"),
        ({}, b"\x60\x00"),
        (("a",), b"\x50\x30a\x00\x00\x00"),
        (("a\x00",), b"\x50\x30a\x00\xff\x00\x00\x00"),
        ((b"x", None), b"\x50\x40x\x00\x00\x01\x00"),
        ([True], b"\x51\x02\x01\x00"),
        (
            {"b": 1, "a": None},
            b"\x60\x30a\x00\x00\x01\x30b\x00\x00\x10\x80" + bytes(6) + b"\x01\x00",
        ),
    ],
)
def test_encode_key_exact(key: object, encoded: bytes) -> None:
    assert encode_key(key) == encoded


def test_nan_has_one_encoding_and_sorts_after_inf() -> None:
    nans = [math.nan, -math.nan, struct.unpack(">d", b"\x7f\xf0\x00\x00\x00\x00\x00\x01")[0]]
    assert len({encode_key(x) for x in nans}) == 1
    assert math.isnan(decode_key(encode_key(math.nan)))  # type: ignore[arg-type]
    assert encode_key(math.inf) < encode_key(math.nan)


def test_negative_zero_decodes_as_zero() -> None:
    assert same(decode_key(encode_key(-0.0)), 0.0)
    assert math.copysign(1, decode_key(encode_key(-0.0))) == 1  # type: ignore[arg-type]


def test_huge_ints_use_long_length_and_keep_order() -> None:
    values = [-(2**3000), -(2**2100), -(2**2000), -(2**64), 2**64, 2**2000, 2**2100, 2**3000]
    encoded = [encode_key(v) for v in values]
    assert encoded == sorted(encoded)
    assert encode_key(2**3000)[1] == 0xFF  # the 8-byte length form
    assert [decode_key(e) for e in encoded] == values


# ------------------------------------------------------------ round trips and order


def test_round_trip_random_nested_values() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        key = random_key(rng)
        encoded = encode_key(key)
        decoded = decode_key(encoded)
        expected = _normalise(key)
        assert same(decoded, expected), (key, decoded)
        assert encode_key(decoded) == encoded


def _normalise(key: object) -> object:
    """What a round trip gives back: -0.0 becomes 0.0 at any depth."""
    if isinstance(key, float) and key == 0.0:
        return 0.0
    if isinstance(key, tuple):
        return tuple(_normalise(x) for x in key)
    if isinstance(key, list):
        return [_normalise(x) for x in key]
    if isinstance(key, dict):
        return {_normalise(k): _normalise(v) for k, v in key.items()}
    return key


def test_round_trip_keeps_exact_types() -> None:
    key = (True, 1, 1.0, "1", b"1", [1, (2,)], {"k": (None, [False])})
    decoded = decode_key(encode_key(key))
    assert same(decoded, key)
    assert type(decode_key(encode_key(True))) is bool
    assert encode_key(True) != encode_key(1)
    assert encode_key((1,)) != encode_key([1])


def test_equal_dicts_encode_equally_whatever_their_order() -> None:
    assert encode_key({"a": 1, "b": 2, 3: None}) == encode_key({3: None, "b": 2, "a": 1})


def _check_sorted_like_python(keys: list[object]) -> None:
    assert sorted(keys, key=encode_key) == sorted(keys)  # type: ignore[type-var]


def test_order_of_ints_matches_python() -> None:
    rng = random.Random(1)
    _check_sorted_like_python([random_int(rng) for _ in range(3000)])


def test_order_of_floats_matches_python() -> None:
    rng = random.Random(2)
    floats = [random_float(rng) for _ in range(3000)]
    floats += [math.inf, -math.inf, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308]
    _check_sorted_like_python([x for x in floats if not math.isnan(x)])


def test_order_of_strs_matches_python() -> None:
    rng = random.Random(3)
    strs: list[object] = [random_str(rng, 8) for _ in range(3000)]
    strs += ["", "\x00", "\x00\x00", "a", "a\x00", "a\x00b", "a\x01", "ab", "\U0010ffff", "\ud7ff"]
    _check_sorted_like_python(strs)


def test_order_of_bytes_matches_python() -> None:
    rng = random.Random(4)
    values: list[object] = [random_bytes(rng, 8) for _ in range(3000)]
    values += [b"", b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00"]
    _check_sorted_like_python(values)


def test_order_of_tuples_of_mixed_length_matches_python() -> None:
    rng = random.Random(5)
    # Python compares position by position, so each position keeps one type.
    makers: list[Callable[[], object]] = [
        lambda: random_str(rng, 3),
        lambda: rng.randint(-3, 3),
        lambda: random_bytes(rng, 2),
    ]
    tuples: list[object] = []
    for _ in range(3000):
        length = rng.randint(0, 4)
        tuples.append(tuple(makers[i % 3]() for i in range(length)))
    tuples += [(), ("a",), ("a", 1), ("a", 1, b""), ("b",), ("a\x00",), ("a", -(2**80))]
    _check_sorted_like_python(tuples)


def test_order_of_nested_tuples_and_lists_matches_python() -> None:
    rng = random.Random(6)
    keys: list[object] = [
        [
            tuple(rng.randint(0, 2) for _ in range(rng.randint(0, 2)))
            for _ in range(rng.randint(0, 3))
        ]
        for _ in range(2000)
    ]
    _check_sorted_like_python(keys)


def test_prefix_order() -> None:
    assert encode_key(("a",)) < encode_key(("a", 1)) < encode_key(("b",))
    assert encode_key(("a",)) < encode_key(("a\x00",)) < encode_key(("a\x01",))
    assert encode_key([]) < encode_key([None]) < encode_key([False])


def test_types_are_ordered_by_tag() -> None:
    keys: list[object] = [None, False, True, -(2**70), -1, 2**70, -1.5, 1.5, "", "a", b"", b"a"]
    keys += [(), [], {}]
    encoded = [encode_key(k) for k in keys]
    assert encoded == sorted(encoded)


def test_subclasses_and_numpy_scalars_encode_as_their_base_type() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    Point = collections.namedtuple("Point", "x y")
    assert encode_key(Colour.RED) == encode_key(1)
    assert encode_key(Point(1, 2)) == encode_key((1, 2))
    assert encode_key(np.int32(7)) == encode_key(7)
    assert encode_key(np.uint64(2**64 - 1)) == encode_key(2**64 - 1)
    assert encode_key(np.float32(0.5)) == encode_key(0.5)
    assert encode_key(np.bool_(True)) == encode_key(True)
    assert encode_key(collections.OrderedDict(a=1)) == encode_key({"a": 1})


# ------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ({1, 2}, r"key \{1, 2\} .*key of type set is not supported"),
        (object(), r"key of type object is not supported"),
        (datetime.date(2024, 1, 2), r"type datetime\.date is not supported"),
        ((1, {2}), r"key \(1, \{2\}\) .*contains a value of type set \(\{2\}\)"),
        ([1, [frozenset()]], r"contains a value of type frozenset"),
        ({"k": bytearray(b"x")}, r"contains a value of type bytearray"),
    ],
)
def test_unsupported_key_names_type_and_fix(key: object, pattern: str) -> None:
    with pytest.raises(KeyEncodingError, match=pattern) as caught:
        encode_key(key)
    assert "keys must be None, bool, int, float, str, bytes, or tuples/lists/dicts" in str(
        caught.value
    )
    assert "convert it, e.g. with str()" in str(caught.value)
    assert not caught.value.retryable


def test_error_repr_is_truncated() -> None:
    with pytest.raises(KeyEncodingError) as caught:
        encode_key({str(i) * 50 for i in range(100)})
    assert len(str(caught.value)) < 400


def test_lone_surrogate_key_is_rejected_with_a_fix() -> None:
    for key in ["\ud800", ("a", "x\udcff")]:
        with pytest.raises(KeyEncodingError, match=r"UTF-8.*lone surrogate.*'replace'"):
            encode_key(key)
    with pytest.raises(KeyEncodingError, match="lone surrogate"):
        encode_keys(["ok", "\ud800"])


def test_self_containing_key_is_rejected() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(KeyEncodingError, match="nested too deeply"):
        encode_key(loop)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x99", b"\x10\x00", b"\x50\x30a", b"\x50\x30a\x00\x01\x00", b"\x01\x01", b"\x02\x07"],
)
def test_malformed_encoding_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptSegmentError):
        decode_key(data)


# ------------------------------------------------------------ record batches


@pytest.mark.parametrize(
    ("keys", "arrow_type"),
    [
        (["b", "a", ""], pa.string()),
        ([1, -(2**63), 2**63 - 1], pa.int64()),
        ([1.5, -0.0, math.inf], pa.float64()),
        ([True, False], pa.bool_()),
        ([b"x", b""], pa.binary()),
    ],
)
def test_encode_keys_typed(keys: list[object], arrow_type: pa.DataType) -> None:
    array, encoding = encode_keys(keys)
    assert encoding == "typed"
    assert array.type == arrow_type
    assert all(same(a, b) for a, b in zip(decode_keys(array, encoding), keys, strict=True))


@pytest.mark.parametrize(
    "keys",
    [
        [1, 2**63],  # past int64
        [1, True],  # bool is not int
        [1, 1.0],
        ["a", None],  # no None in typed keys
        [None],
        [("a", 1)],
        ["a", b"a"],
        [Single(1)],
    ],
)
def test_encode_keys_generic(keys: list[object]) -> None:
    array, encoding = encode_keys(keys)
    assert encoding == "generic"
    assert array.type == pa.binary()
    assert array.to_pylist() == [encode_key(k) for k in keys]
    decoded = decode_keys(array, encoding)
    assert decoded == [tuple(k) if isinstance(k, tuple) else k for k in keys]


def test_str_subclass_is_not_typed() -> None:
    class Name(str):
        pass

    array, encoding = encode_keys([Name("a"), "b"])
    assert encoding == "generic"
    assert same(decode_keys(array, encoding), ["a", "b"])


def test_encode_keys_empty() -> None:
    array, encoding = encode_keys([])
    assert len(array) == 0
    assert decode_keys(array, encoding) == []


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [
        (["a", None, "b"], pa.string()),
        ([1, None], pa.int64()),
        ([None, 2.5], pa.float64()),
        ([True, None, False], pa.bool_()),
        ([b"x", None], pa.binary()),
        ([None, None], pa.null()),
        ([], pa.null()),
    ],
)
def test_encode_values_typed(values: list[object], arrow_type: pa.DataType) -> None:
    array, encoding = encode_values(values)
    assert encoding == "typed"
    assert array.type == arrow_type
    assert all(same(a, b) for a, b in zip(decode_values(array, encoding), values, strict=True))


def test_encode_values_msgpack_round_trip() -> None:
    values: list[object] = [
        (1, "a"),
        [1, (2, (3,))],
        {"k": (1, 2), (1, "t"): [b"\x00"], 3: None},
        b"raw",
        None,
        2**100,
        -(2**100),
        2**64 - 1,
        (),
        [[], {}],
        1.5,
        True,
        "text",
    ]
    array, encoding = encode_values(values)
    assert encoding == "msgpack"
    assert array.type == pa.binary()
    decoded = decode_values(array, encoding)
    assert all(same(a, b) for a, b in zip(decoded, values, strict=True)), decoded


def test_encode_values_random_round_trip() -> None:
    rng = random.Random(7)
    values = [random_key(rng) for _ in range(2000)]
    array, encoding = encode_values(values)
    assert encoding == "msgpack"
    decoded = decode_values(array, encoding)
    assert all(same(a, b) for a, b in zip(decoded, values, strict=True))


def test_values_of_subclasses_and_numpy_types() -> None:
    Point = collections.namedtuple("Point", "x y")
    values = [Point(1, 2), np.int64(3), np.float64(0.5), np.bool_(False), collections.Counter(a=2)]
    array, encoding = encode_values(values)
    assert encoding == "msgpack"
    assert same(decode_values(array, encoding), [(1, 2), 3, 0.5, False, {"a": 2}])


def test_big_int_values_go_msgpack() -> None:
    array, encoding = encode_values([1, 2**70, None])
    assert encoding == "msgpack"
    assert decode_values(array, encoding) == [1, 2**70, None]


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ([1, {2}], r"value \{2\} .*value of type set is not supported"),
        ([(1, object())], r"contains a value of type object"),
        ([[datetime.datetime(2024, 1, 1)]], r"contains a value of type datetime\.datetime"),
        (["\ud800", 1], r"lone surrogate"),
    ],
)
def test_unsupported_value_names_type(values: list[object], pattern: str) -> None:
    with pytest.raises(KeyEncodingError, match=pattern):
        encode_values(values)


def test_unsupported_value_hint_says_value() -> None:
    with pytest.raises(KeyEncodingError, match="values must be None, bool, int, float, str"):
        encode_values([{1}])


def test_records_to_table_and_metadata() -> None:
    table = records_to_table([("a", 1), "b"], [1, 2])
    assert table.column_names == ["key", "value"]
    assert table.schema.metadata == {b"mrk8s.key": b"generic", b"mrk8s.value": b"typed"}
    assert table_key_encoding(table.schema) == "generic"
    assert table_value_encoding(table.schema) == "typed"
    assert decode_keys(table["key"], "generic") == [("a", 1), "b"]
    assert decode_values(table["value"], "typed") == [1, 2]

    table = records_to_table(["x"], [(1, 2)])
    assert table.schema.field("key").type == pa.string()
    assert table_key_encoding(table.schema) == "typed"
    assert table_value_encoding(table.schema) == "msgpack"
    assert decode_values(table["value"], "msgpack") == [(1, 2)]


def test_records_to_table_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        records_to_table(["a", "b"], [1])


def test_plain_tables_are_typed() -> None:
    schema = pa.schema([("key", pa.string()), ("value", pa.int64())])
    assert table_key_encoding(schema) == "typed"
    assert table_value_encoding(schema) == "typed"


def test_unknown_encoding_in_metadata() -> None:
    schema = pa.schema([("key", pa.binary())], metadata={b"mrk8s.key": b"zstd-magic"})
    with pytest.raises(KeyEncodingError, match=r"unknown key encoding 'zstd-magic'"):
        table_key_encoding(schema)
    with pytest.raises(KeyEncodingError, match="unknown value encoding"):
        decode_values(pa.array([b""]), "generic")


# ------------------------------------------------------------ reconciling segments


def _typed_columns() -> list[pa.Array]:
    strings = pa.array(["", "a", None, "héllo\x00", "a" * 40, "\U0001f600"])
    raw = pa.array([b"", b"\x00\xff", None, b"x" * 20])
    columns = [
        strings,
        strings.cast(pa.large_string()),
        strings.cast(pa.string_view()),
        raw,
        raw.cast(pa.large_binary()),
        raw.cast(pa.binary_view()),
        pa.array([b"ab", None, b"\x00\x00"], pa.binary(2)),
        pa.array([True, None, False]),
        pa.array([None, None], pa.null()),
        pa.array([1.5, None, -0.0, 0.0, math.nan, -math.inf, math.inf, 1e-310], pa.float64()),
        pa.array([1.5, None, -0.0, 3.25e38], pa.float32()),
        pa.array(np.array([1.5, -0.0, 65504], dtype=np.float16)),
        pa.array([2**64 - 1, 2**63, 2**63 - 1, 0, None], pa.uint64()),
        pa.array(["b", "a", None, "b"]).dictionary_encode(),
        pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 1]), pa.array([7, None])),
        pa.array([[1, 2], None, []], pa.list_(pa.int64())),
        pa.array([{"x": 1, "y": "a"}, None]),
    ]
    columns.extend(integer_extremes())
    return columns


@pytest.mark.parametrize("column", _typed_columns(), ids=lambda c: str(c.type))
def test_generic_key_array_matches_encode_key(column: pa.Array) -> None:
    expected = [encode_key(v) for v in column.to_pylist()]
    assert generic_key_array(column, "typed").to_pylist() == expected
    # sliced (non-zero offset) and chunked forms of the same column
    if len(column) > 2:
        assert (
            generic_key_array(column.slice(1, len(column) - 2), "typed").to_pylist()
            == (expected[1:-1])
        )
        chunked = pa.chunked_array([column.slice(0, 1), column.slice(1)])
        assert generic_key_array(chunked, "typed").to_pylist() == expected


def test_generic_key_array_random_ints_and_strings() -> None:
    rng = random.Random(8)
    ints = [rng.randint(INT64_MIN, INT64_MAX) for _ in range(500)]
    strs = [random_str(rng, 10) for _ in range(500)]
    for column in [pa.array(ints), pa.array(strs)]:
        expected = [encode_key(v) for v in column.to_pylist()]
        assert generic_key_array(column, "typed").to_pylist() == expected


def test_generic_key_array_of_generic_is_identity_with_none_for_nulls() -> None:
    column = pa.array([encode_key(("a", 1)), None])
    assert generic_key_array(column, "generic").to_pylist() == [encode_key(("a", 1)), b"\x01"]
    assert generic_key_array(pa.chunked_array([], pa.binary()), "generic").to_pylist() == []


def test_generic_key_array_unsupported_type() -> None:
    column = pa.array([datetime.date(2024, 1, 1)])
    with pytest.raises(KeyEncodingError, match=r"datetime\.date"):
        generic_key_array(column, "typed")


def test_typed_sort_order_equals_generic_order() -> None:
    rng = random.Random(9)
    columns = [
        pa.array([rng.randint(INT64_MIN, INT64_MAX) for _ in range(300)]),
        pa.array([random_str(rng, 6) for _ in range(300)]),
        pa.array([random_bytes(rng, 6) for _ in range(300)]),
        pa.array([random_float(rng) for _ in range(300)] + [math.nan, -0.0]),
        pa.array([rng.randint(0, 2**64 - 1) for _ in range(300)], pa.uint64()),
        pa.array([rng.random() < 0.5 for _ in range(30)]),
    ]
    for column in columns:
        ordered = column.take(pc.sort_indices(column))
        encoded = generic_key_array(ordered, "typed").to_pylist()
        assert encoded == sorted(encoded), column.type


def test_constants() -> None:
    assert codec.KEY == "key"
    assert codec.VALUE == "value"
