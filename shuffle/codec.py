"""How record-API keys and values travel through the shuffle as Arrow columns.

A map task's ``(key, value)`` records are gathered into a two-column Arrow table
(:func:`records_to_table`). Keys and values of one simple type become typed
columns; anything else becomes a binary column:

* keys use the *generic encoding* (:func:`encode_key`): a reversible byte
  string whose byte-wise order is Python's order within one type, and a fixed
  type order across types. Sorting and range-partitioning a generic column is
  therefore sorting its bytes.
* values use msgpack, extended so that tuples stay tuples and big ints survive.

The schema metadata (``mrk8s.key`` / ``mrk8s.value``) says which encoding each
column uses; a table without it (a columnar user's table) is typed.

Two segments of the same shuffle may carry the same key once as a typed
``str`` and once generically (one map task saw only strings, another saw a
tuple too). :func:`generic_key_array` converts a typed column to the generic
encoding so the merge can compare them, and ``shuffle.partition`` hashes the
generic encoding so both land in the same partition.

Called by the map side when it buffers records, by the merge when it
reconciles segments, and by ``shuffle.partition``. It knows Arrow, numpy and
msgpack; it must not know files, stores, partitions or the scheduler.

Generic encoding (one tag byte, then a payload)::

    0x01 None       0x02 bool (0x00/0x01)
    0x0F int < -2**63       (inverted length + magnitude)
    0x10 int64              (8 bytes big-endian, sign bit flipped)
    0x11 int > 2**63 - 1    (length + magnitude)
    0x20 float              (8 bytes, IEEE-754 bits made order-preserving)
    0x30 str   0x40 bytes   0x50 tuple   0x51 list   0x60 dict

A top-level str or bytes is the tag plus the raw bytes, so a typed column
converts by prefixing one byte. Inside a container, str/bytes payloads escape
0x00 as 0x00 0xFF and end with 0x00 0x00; containers end with 0x00, which
sorts before every tag, so a shorter tuple sorts before its extensions.
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Sequence
from typing import Final, cast

import msgpack
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shuffle.errors import CorruptSegmentError, KeyEncodingError

KEY: Final = "key"
VALUE: Final = "value"

#: Schema metadata naming each column's encoding.
KEY_ENCODING_META: Final = b"mrk8s.key"
VALUE_ENCODING_META: Final = b"mrk8s.value"

TYPED: Final = "typed"
GENERIC: Final = "generic"
MSGPACK: Final = "msgpack"
KEY_ENCODINGS: Final = (TYPED, GENERIC)
VALUE_ENCODINGS: Final = (TYPED, MSGPACK)

TAG_NONE: Final = 0x01
TAG_BOOL: Final = 0x02
TAG_NEG_BIGINT: Final = 0x0F
TAG_INT: Final = 0x10
TAG_POS_BIGINT: Final = 0x11
TAG_FLOAT: Final = 0x20
TAG_STR: Final = 0x30
TAG_BYTES: Final = 0x40
TAG_TUPLE: Final = 0x50
TAG_LIST: Final = 0x51
TAG_DICT: Final = 0x60
#: Ends a container; below every tag so that ("a",) < ("a", 1).
END: Final = 0x00

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_INT32_MAX: Final = 2**31 - 1
_U64_MASK: Final = 2**64 - 1
_SIGN_BIT: Final = 1 << 63
#: The one NaN every NaN is encoded as (the quiet NaN Python prints as nan).
_CANONICAL_NAN_BITS: Final = 0x7FF8_0000_0000_0000
#: Big-int lengths up to 254 bytes take one byte; 0xFF announces an 8-byte length,
#: which still sorts after every one-byte length.
_LONG_LENGTH: Final = 0xFF
_INVERT: Final = bytes(range(255, -1, -1))
_U64_BE: Final = struct.Struct(">Q")
_STR_PREFIX: Final = bytes([TAG_STR])
_BYTES_PREFIX: Final = bytes([TAG_BYTES])
_INT_PREFIX: Final = bytes([TAG_INT])
_NONE_ENCODED: Final = bytes([TAG_NONE])
_TRUE_ENCODED: Final = bytes([TAG_BOOL, 1])
_FALSE_ENCODED: Final = bytes([TAG_BOOL, 0])
_ESCAPED_END: Final = b"\x00\x00"

_KEY_HINT: Final = (
    "keys must be None, bool, int, float, str, bytes, or tuples/lists/dicts of these; "
    "convert it, e.g. with str()"
)
_VALUE_HINT: Final = (
    "values must be None, bool, int, float, str, bytes, or tuples/lists/dicts of these; "
    "convert it, e.g. with str()"
)

# msgpack extension codes for what msgpack cannot say natively.
_EXT_TUPLE: Final = 1
_EXT_BIGINT: Final = 2

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 3
_REPR_LIMIT: Final = 100


class _Unencodable(Exception):
    """Raised deep inside an encoder; the public entry point turns it into a message."""

    def __init__(self, bad: object, reason: str | None = None) -> None:
        super().__init__(reason)
        self.bad = bad
        self.reason = reason


def _short_repr(obj: object) -> str:
    try:
        text = _repr.repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__qualname__} object>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _type_name(obj: object) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _unencodable_message(what: str, whole: object, exc: _Unencodable) -> str:
    start = f"cannot put {what} {_short_repr(whole)} into the shuffle"
    if exc.reason is not None:  # the reason carries its own fix
        return f"{start}: {exc.reason}"
    hint = _KEY_HINT if what == "key" else _VALUE_HINT
    bad = exc.bad
    if bad is whole:
        problem = f"{what} of type {_type_name(bad)} is not supported"
    else:
        problem = f"it contains a value of type {_type_name(bad)} ({_short_repr(bad)})"
    return f"{start}: {problem}; {hint}"


def _surrogate_reason(text: str) -> str:
    return (
        f"str {_short_repr(text)} cannot be encoded as UTF-8 (it contains a lone surrogate); "
        "fix the text, e.g. with s.encode('utf-8', 'replace').decode()"
    )


# --------------------------------------------------------------------------- keys


def encode_key(obj: object) -> bytes:
    """Return the sort-preserving, reversible generic encoding of one key.

    Raises KeyEncodingError for a key (or part of one) of an unsupported type.
    Subclasses of the supported types and numpy scalars are accepted and
    encoded as their base type; -0.0 is encoded as 0.0 and every NaN as one NaN.
    """
    # Fast paths for the overwhelmingly common top-level str, bytes and int keys.
    if type(obj) is str:
        try:
            return _STR_PREFIX + obj.encode("utf-8")
        except UnicodeEncodeError:
            raise KeyEncodingError(
                _unencodable_message("key", obj, _Unencodable(obj, _surrogate_reason(obj)))
            ) from None
    if type(obj) is bytes:
        return _BYTES_PREFIX + obj
    if type(obj) is int and INT64_MIN <= obj <= INT64_MAX:
        return _INT_PREFIX + (obj + _SIGN_BIT).to_bytes(8, "big")
    out = bytearray()
    try:
        _encode_into(out, obj, nested=False)
    except _Unencodable as exc:
        raise KeyEncodingError(_unencodable_message("key", obj, exc)) from None
    except RecursionError:
        raise KeyEncodingError(
            f"cannot put key {_short_repr(obj)} into the shuffle: it is nested too deeply "
            f"(or contains itself); {_KEY_HINT}"
        ) from None
    return bytes(out)


def _encode_into(out: bytearray, obj: object, *, nested: bool) -> None:
    if obj is None:
        out.append(TAG_NONE)
    elif isinstance(obj, str):
        try:
            payload = obj.encode("utf-8")
        except UnicodeEncodeError:
            raise _Unencodable(obj, _surrogate_reason(obj)) from None
        out.append(TAG_STR)
        _append_payload(out, payload, nested=nested)
    elif isinstance(obj, bool):  # before int: bool is a subclass of int
        out += _TRUE_ENCODED if obj else _FALSE_ENCODED
    elif isinstance(obj, int):
        _append_int(out, int(obj))
    elif isinstance(obj, float):
        out.append(TAG_FLOAT)
        out += _float_bits(float(obj)).to_bytes(8, "big")
    elif isinstance(obj, bytes):
        out.append(TAG_BYTES)
        _append_payload(out, bytes(obj), nested=nested)
    elif isinstance(obj, tuple):
        out.append(TAG_TUPLE)
        _encode_items(out, obj)
    elif isinstance(obj, list):
        out.append(TAG_LIST)
        _encode_items(out, obj)
    elif isinstance(obj, dict):
        out.append(TAG_DICT)
        # Sorted by encoded key so that equal dicts encode equally whatever
        # their insertion order.
        items = sorted((_encode_nested(k), _encode_nested(v)) for k, v in obj.items())
        for k, v in items:
            out += k
            out += v
        out.append(END)
    elif isinstance(obj, np.bool_ | np.integer | np.floating):
        _encode_into(out, obj.item(), nested=nested)
    else:
        raise _Unencodable(obj)


def _encode_items(out: bytearray, items: tuple[object, ...] | list[object]) -> None:
    """Encode a container's items and its end byte.

    Exact str and int64 items, by far the most common in composite keys such
    as ``(word, year)``, are encoded inline: this halves the cost of such keys.
    """
    for item in items:
        if type(item) is str:
            try:
                payload = item.encode("utf-8")
            except UnicodeEncodeError:
                raise _Unencodable(item, _surrogate_reason(item)) from None
            out.append(TAG_STR)
            out += payload.replace(b"\x00", b"\x00\xff")
            out += _ESCAPED_END
        elif type(item) is int and INT64_MIN <= item <= INT64_MAX:
            out.append(TAG_INT)
            out += (item + _SIGN_BIT).to_bytes(8, "big")
        else:
            _encode_into(out, item, nested=True)
    out.append(END)


def _encode_nested(obj: object) -> bytes:
    out = bytearray()
    _encode_into(out, obj, nested=True)
    return bytes(out)


def _append_payload(out: bytearray, payload: bytes, *, nested: bool) -> None:
    if nested:
        out += payload.replace(b"\x00", b"\x00\xff")
        out += _ESCAPED_END
    else:
        out += payload


def _length_prefix(n: int) -> bytes:
    if n < _LONG_LENGTH:
        return bytes([n])
    return bytes([_LONG_LENGTH]) + n.to_bytes(8, "big")


def _append_int(out: bytearray, value: int) -> None:
    if INT64_MIN <= value <= INT64_MAX:
        out.append(TAG_INT)
        # Adding 2**63 is flipping the sign bit of the two's complement.
        out += (value + _SIGN_BIT).to_bytes(8, "big")
        return
    magnitude = abs(value)
    body = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
    encoded = _length_prefix(len(body)) + body
    if value > 0:
        out.append(TAG_POS_BIGINT)
        out += encoded
    else:
        # A bigger magnitude is a smaller number: invert every byte.
        out.append(TAG_NEG_BIGINT)
        out += encoded.translate(_INVERT)


def _float_bits(value: float) -> int:
    """The order-preserving transform of a float's IEEE-754 bits."""
    if value != value:
        bits = _CANONICAL_NAN_BITS
    elif value == 0.0:
        bits = 0  # -0.0 == 0.0, so they must encode equally
    else:
        (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    return (bits ^ _U64_MASK) if bits & _SIGN_BIT else (bits | _SIGN_BIT)


def _float_from_bits(encoded: int) -> float:
    bits = (encoded ^ _SIGN_BIT) if encoded & _SIGN_BIT else (encoded ^ _U64_MASK)
    value: float = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    return value


def decode_key(data: bytes) -> object:
    """Reverse :func:`encode_key`. Raises CorruptSegmentError on malformed bytes."""
    try:
        tag = data[0]
        if tag == TAG_STR:
            return data[1:].decode("utf-8")
        if tag == TAG_BYTES:
            return bytes(data[1:])
        value, end = _decode_at(data, 0)
    except (IndexError, ValueError, struct.error) as exc:
        raise CorruptSegmentError(
            f"cannot decode generic key {_short_repr(bytes(data))}: {exc}; "
            "the map output holding it is damaged and its map task must run again"
        ) from exc
    if end != len(data):
        raise CorruptSegmentError(
            f"cannot decode generic key {_short_repr(bytes(data))}: "
            f"{len(data) - end} trailing bytes; the map output holding it is damaged"
        )
    return value


def _decode_at(data: bytes, pos: int) -> tuple[object, int]:
    tag = data[pos]
    pos += 1
    if tag == TAG_STR:
        payload, pos = _read_escaped(data, pos)
        return payload.decode("utf-8"), pos
    if tag == TAG_INT:
        return _U64_BE.unpack_from(data, pos)[0] - _SIGN_BIT, pos + 8
    if tag in (TAG_TUPLE, TAG_LIST):
        items: list[object] = []
        while data[pos] != END:
            item, pos = _decode_at(data, pos)
            items.append(item)
        return (tuple(items) if tag == TAG_TUPLE else items), pos + 1
    if tag == TAG_NONE:
        return None, pos
    if tag == TAG_BOOL:
        flag = data[pos]
        if flag > 1:
            raise ValueError(f"bad bool byte {flag:#04x}")
        return flag == 1, pos + 1
    if tag == TAG_FLOAT:
        return _float_from_bits(_U64_BE.unpack_from(data, pos)[0]), pos + 8
    if tag == TAG_BYTES:
        return _read_escaped(data, pos)
    if tag == TAG_DICT:
        result: dict[object, object] = {}
        while data[pos] != END:
            k, pos = _decode_at(data, pos)
            v, pos = _decode_at(data, pos)
            result[k] = v
        return result, pos + 1
    if tag in (TAG_POS_BIGINT, TAG_NEG_BIGINT):
        return _read_bigint(data, pos, negative=tag == TAG_NEG_BIGINT)
    raise ValueError(f"unknown tag {tag:#04x} at byte {pos - 1}")


def _checked(data: bytes, end: int) -> int:
    if end > len(data):
        raise ValueError("truncated")
    return end


def _read_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    zero = data.index(b"\x00", pos)
    if data[zero + 1] == 0x00:  # the common case: no escaped zero byte inside
        return data[pos:zero], zero + 2
    scan = pos
    while True:
        zero = data.index(b"\x00", scan)
        follower = data[zero + 1]
        if follower == 0x00:
            return data[pos:zero].replace(b"\x00\xff", b"\x00"), zero + 2
        if follower != 0xFF:
            raise ValueError(f"bad escape at byte {zero}")
        scan = zero + 2


def _read_bigint(data: bytes, pos: int, *, negative: bool) -> tuple[int, int]:
    def byte_at(i: int) -> int:
        b = data[i]
        return b ^ 0xFF if negative else b

    length = byte_at(pos)
    pos += 1
    if length == _LONG_LENGTH:
        raw = data[pos : pos + 8]
        if negative:
            raw = raw.translate(_INVERT)
        length = int.from_bytes(raw, "big")
        pos += 8
    body = data[pos : pos + length]
    end = _checked(data, pos + length)
    if negative:
        return -int.from_bytes(body.translate(_INVERT), "big"), end
    return int.from_bytes(body, "big"), end


# ------------------------------------------------------------- record batches

# Exactly these Python types make a typed column; checked with `type(x) is`,
# so bool never passes for int and a str subclass goes generic.
_TYPED_ARROW: Final[dict[type, pa.DataType]] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


def _all_int64(ints: Sequence[object]) -> bool:
    # min/max run in C; only called when every element is exactly int.
    checked = cast("Sequence[int]", ints)
    return min(checked) >= INT64_MIN and max(checked) <= INT64_MAX


def encode_keys(keys: Sequence[object]) -> tuple[pa.Array, str]:
    """Turn a batch of keys into an Arrow array and its encoding name.

    Returns a typed array and ``"typed"`` when every key has exactly one of the
    types str, int (within int64), float, bool or bytes; otherwise a binary
    array of generic encodings and ``"generic"`` (also for an empty batch).
    """
    types = set(map(type, keys))
    if len(types) == 1:
        (kind,) = types
        arrow_type = _TYPED_ARROW.get(kind)
        if arrow_type is not None and (kind is not int or _all_int64(keys)):
            try:
                return pa.array(keys, type=arrow_type), TYPED
            except UnicodeEncodeError:
                pass  # the generic path below names the bad string
    return pa.array([encode_key(k) for k in keys], type=pa.binary()), GENERIC


def decode_keys(array: pa.Array | pa.ChunkedArray, encoding: str) -> list[object]:
    """Reverse :func:`encode_keys` (also reads a columnar user's typed key column)."""
    _check(encoding, KEY_ENCODINGS, "key")
    if encoding == TYPED:
        result: list[object] = array.to_pylist()
        return result
    return [None if b is None else decode_key(b) for b in array.to_pylist()]


def _msgpack_default(obj: object) -> object:
    """Say in msgpack what strict_types msgpack will not: tuples, big ints, subclasses."""
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack_one(list(obj)))
    if isinstance(obj, int):
        value = int(obj)
        if INT64_MIN <= value < 2**64:
            return value
        size = (value.bit_length() + 8) // 8  # +1 bit for the sign
        return msgpack.ExtType(_EXT_BIGINT, value.to_bytes(size, "big", signed=True))
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, np.bool_ | np.integer | np.floating):
        return obj.item()  # numpy's 64-bit ints fit msgpack's range
    raise _Unencodable(obj)


def _pack_one(obj: object) -> bytes:
    packed: bytes = msgpack.packb(
        obj, default=_msgpack_default, strict_types=True, use_bin_type=True
    )
    return packed


def _ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_TUPLE:
        return tuple(cast("list[object]", _unpack_one(data)))
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise CorruptSegmentError(
        f"unknown msgpack extension type {code} in a shuffled value; "
        "the map output holding it is damaged or was written by a newer mrk8s"
    )


def _unpack_one(data: bytes) -> object:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def _find_unpackable(values: Sequence[object], cause: Exception) -> KeyEncodingError:
    for value in values:
        try:
            _pack_one(value)
        except _Unencodable as exc:
            return KeyEncodingError(_unencodable_message("value", value, exc))
        except UnicodeEncodeError:
            reason = (
                "it contains a str that cannot be encoded as UTF-8 (a lone surrogate); "
                "fix the text, e.g. with s.encode('utf-8', 'replace').decode()"
            )
            return KeyEncodingError(
                _unencodable_message("value", value, _Unencodable(value, reason))
            )
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            return KeyEncodingError(
                f"cannot put value {_short_repr(value)} into the shuffle: {exc}; {_VALUE_HINT}"
            )
    return KeyEncodingError(f"cannot put a value into the shuffle: {cause}; {_VALUE_HINT}")


def encode_values(values: Sequence[object]) -> tuple[pa.Array, str]:
    """Turn a batch of values into an Arrow array and its encoding name.

    Typed (``"typed"``) when the non-None values all have exactly one of the
    types str, int (within int64), float, bool or bytes, with None as null;
    all-None gives a null-typed array. Otherwise a binary array of msgpack
    bytes (``"msgpack"``) that keeps tuples, lists, dicts, bytes and big ints.
    """
    types = set(map(type, values))
    has_none = type(None) in types
    types.discard(type(None))
    if not types:
        return pa.nulls(len(values)), TYPED
    if len(types) == 1:
        (kind,) = types
        arrow_type = _TYPED_ARROW.get(kind)
        if arrow_type is not None:
            fits = True
            if kind is int:
                fits = _all_int64([v for v in values if v is not None] if has_none else values)
            if fits:
                try:
                    return pa.array(values, type=arrow_type), TYPED
                except UnicodeEncodeError:
                    pass  # the msgpack path below names the bad string
    packer = msgpack.Packer(default=_msgpack_default, strict_types=True, use_bin_type=True)
    try:
        packed = [packer.pack(v) for v in values]
    except (_Unencodable, UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
        raise _find_unpackable(values, exc) from None
    except RecursionError as exc:
        raise _find_unpackable(values, exc) from None
    return pa.array(packed, type=pa.binary()), MSGPACK


def decode_values(array: pa.Array | pa.ChunkedArray, encoding: str) -> list[object]:
    """Reverse :func:`encode_values`."""
    _check(encoding, VALUE_ENCODINGS, "value")
    if encoding == TYPED:
        result: list[object] = array.to_pylist()
        return result
    try:
        return [None if b is None else _unpack_one(b) for b in array.to_pylist()]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptSegmentError(
            f"cannot decode a msgpack value: {exc}; "
            "the map output holding it is damaged and its map task must run again"
        ) from exc


def records_to_table(keys: Sequence[object], values: Sequence[object]) -> pa.Table:
    """Build the ``key``/``value`` table of one batch of records, encodings in its metadata."""
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    key_array, key_encoding = encode_keys(keys)
    value_array, value_encoding = encode_values(values)
    schema = pa.schema(
        [pa.field(KEY, key_array.type), pa.field(VALUE, value_array.type)],
        metadata={
            KEY_ENCODING_META: key_encoding.encode(),
            VALUE_ENCODING_META: value_encoding.encode(),
        },
    )
    return pa.Table.from_arrays([key_array, value_array], schema=schema)


def _check(encoding: str, allowed: tuple[str, ...], what: str) -> None:
    if encoding not in allowed:
        raise KeyEncodingError(
            f"unknown {what} encoding {encoding!r}; this mrk8s knows {', '.join(allowed)} "
            "(was the data written by a newer version?)"
        )


def _read_meta(schema: pa.Schema, field: bytes, allowed: tuple[str, ...], what: str) -> str:
    metadata = schema.metadata or {}
    raw = metadata.get(field)
    if raw is None:
        return TYPED
    encoding = bytes(raw).decode("utf-8", "replace")
    _check(encoding, allowed, what)
    return encoding


def table_key_encoding(schema: pa.Schema) -> str:
    """The key encoding a table's schema declares; ``"typed"`` when it declares none."""
    return _read_meta(schema, KEY_ENCODING_META, KEY_ENCODINGS, "key")


def table_value_encoding(schema: pa.Schema) -> str:
    """The value encoding a table's schema declares; ``"typed"`` when it declares none."""
    return _read_meta(schema, VALUE_ENCODING_META, VALUE_ENCODINGS, "value")


# ------------------------------------------------------ reconciling segments


def generic_key_array(array: pa.Array | pa.ChunkedArray, encoding: str) -> pa.Array:
    """Return the generic encodings of a key column as a binary array.

    Equals ``[encode_key(v) for v in array.to_pylist()]``; nulls mean None. A
    column that is already generic is returned as it is (nulls filled with the
    encoding of None). Common typed columns are converted without a Python loop.
    """
    _check(encoding, KEY_ENCODINGS, "key")
    if isinstance(array, pa.ChunkedArray):
        chunks = [generic_key_array(chunk, encoding) for chunk in array.chunks]
        if not chunks:
            return pa.array([], type=pa.binary())
        if len({chunk.type for chunk in chunks}) > 1:
            chunks = [chunk.cast(pa.large_binary()) for chunk in chunks]
        return pa.concat_arrays(chunks)
    if encoding == GENERIC:
        return _fill_none(array)
    return _typed_to_generic(array)


def _fill_none(array: pa.Array) -> pa.Array:
    if array.null_count:
        return array.fill_null(pa.scalar(_NONE_ENCODED, type=array.type))
    return array


def _typed_to_generic(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_dictionary(kind):
        encoded = _typed_to_generic(array.dictionary).take(array.indices)
        return _fill_none(encoded)
    if pa.types.is_null(kind):
        return pa.array([_NONE_ENCODED] * len(array), type=pa.binary())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind):
        return _prefixed(array.cast(pa.large_binary()), _STR_PREFIX)
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or _is_binary_view(kind)
    ):
        return _prefixed(array.cast(pa.large_binary()), _BYTES_PREFIX)
    if pa.types.is_integer(kind):
        return _ints_to_generic(array)
    if pa.types.is_floating(kind):
        return _floats_to_generic(array)
    if pa.types.is_boolean(kind):
        flags = array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
        rows = np.empty((len(array), 2), dtype=np.uint8)
        rows[:, 0] = TAG_BOOL
        rows[:, 1] = flags
        return _rows_to_binary(rows, _row_lengths(array, 2))
    # Anything rarer (lists, structs, dates...) goes value by value; encode_key
    # raises a KeyEncodingError for the types it cannot carry.
    return pa.array([encode_key(v) for v in array.to_pylist()], type=pa.binary())


def _is_string_view(kind: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(kind))


def _is_binary_view(kind: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_binary_view", lambda _: False)(kind))


def _prefixed(array: pa.Array, prefix: bytes) -> pa.Array:
    joined = pc.binary_join_element_wise(
        pa.scalar(prefix, type=pa.large_binary()), array, pa.scalar(b"", type=pa.large_binary())
    )
    return _fill_none(joined).cast(pa.binary())


def _row_lengths(array: pa.Array, width: int) -> npt.NDArray[np.int64]:
    lengths = np.full(len(array), width, dtype=np.int64)
    if array.null_count:
        lengths[array.is_null().to_numpy(zero_copy_only=False)] = 1
    return lengths


def _rows_to_binary(rows: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]) -> pa.Array:
    """A binary array whose row i is the first lengths[i] bytes of rows[i].

    A row of length 1 is the encoding of None (a null), so its first byte is
    overwritten with the None tag here.
    """
    n, width = rows.shape
    short = lengths == 1
    if short.any():
        rows[short, 0] = TAG_NONE
    if (lengths == width).all():
        data = rows.reshape(-1)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    else:
        keep = np.arange(width)[None, :] < lengths[:, None]
        data = rows[keep]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] <= _INT32_MAX:
        return pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
        )
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _big_endian_bytes(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    return words.astype(">u8").view(np.uint8).reshape(len(words), 8)


def _ints_to_generic(array: pa.Array) -> pa.Array:
    values = array.fill_null(0).to_numpy()
    n = len(values)
    lengths = _row_lengths(array, 9)
    if values.dtype == np.uint64:
        big = values > np.uint64(INT64_MAX)
        rows = np.empty((n, 10), dtype=np.uint8)
        rows[:, 0] = TAG_INT
        small_words = values ^ np.uint64(_SIGN_BIT)
        rows[:, 1:9] = _big_endian_bytes(small_words)
        if big.any():
            # Values past int64 take the big-int form: tag, length 8, magnitude.
            rows[big, 0] = TAG_POS_BIGINT
            rows[big, 1] = 8
            rows[big, 2:10] = _big_endian_bytes(values[big])
            lengths[big & (lengths > 1)] = 10
        return _rows_to_binary(rows, lengths)
    words = values.astype(np.int64).view(np.uint64) ^ np.uint64(_SIGN_BIT)
    rows = np.empty((n, 9), dtype=np.uint8)
    rows[:, 0] = TAG_INT
    rows[:, 1:] = _big_endian_bytes(words)
    return _rows_to_binary(rows, lengths)


def float_words(values: npt.NDArray[np.floating]) -> npt.NDArray[np.uint64]:
    """The order-preserving 64-bit words of floats, as in the generic encoding.

    Shared with ``shuffle.partition``, which hashes these words.
    """
    doubles = values.astype(np.float64)
    bits = doubles.view(np.uint64).copy()
    bits[doubles == 0.0] = 0  # -0.0 encodes as 0.0
    bits[np.isnan(doubles)] = _CANONICAL_NAN_BITS
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, bits ^ np.uint64(_U64_MASK), bits | np.uint64(_SIGN_BIT))


def _floats_to_generic(array: pa.Array) -> pa.Array:
    values = array.fill_null(0).to_numpy()
    rows = np.empty((len(values), 9), dtype=np.uint8)
    rows[:, 0] = TAG_FLOAT
    rows[:, 1:] = _big_endian_bytes(float_words(values))
    return _rows_to_binary(rows, _row_lengths(array, 9))
