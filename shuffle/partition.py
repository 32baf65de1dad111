"""Which partition each key goes to: stable vectorised hashing and range cuts.

The map side calls :func:`hash_partition` (or :func:`range_cuts` /
:func:`range_partition` for a sorted, TeraSort-style job) on each batch's key
column; the driver calls :func:`boundaries_from_sample` once on a sample of
keys. Python's ``hash()`` is salted per process and never decides a partition
here.

Every key is hashed through its *generic encoding* (``shuffle.codec``): the
hash of a key is :func:`hash_bytes` of ``encode_key(key)``, whether the key
arrives in a typed column or a generic one. One map task may emit the key
``"a"`` in a typed string column and another in a generic binary column (it
also saw a tuple key); both must land in the same partition. Typed columns are
hashed without materialising the encodings: the tag byte and the payload are
folded in arithmetically, and tests check that the result equals hashing the
encoded bytes.

The hash of a byte string ``b`` of length ``L``, cut into 8-byte
little-endian words ``w[0], w[1], ...`` (the last one zero-padded), is::

    s = sum(w[k] * P**k for k in range(ceil(L / 8)))  mod 2**64
    hash = splitmix64_finalizer(s ^ (L * LENGTH_MULT mod 2**64))

Working on words rather than bytes makes numpy touch each value about
``L / 8`` times instead of ``L`` times: the typical key (up to 15 bytes) costs
two gathers from an unaligned 64-bit view of the data buffer. A key of up to
8 encoded bytes never collides with another of the same length, because
``s`` is then the word itself and the finalizer is a bijection; the length is
mixed in because zero padding would otherwise hide trailing zero bytes.

These numbers decide where data lands: changing any of them moves every key
to another partition, which breaks re-reading old map outputs
(``tests/shuffle/test_partition.py`` pins a few hashes for this reason).

This module knows key columns, partitions and boundaries; it must not know
files, stores, backends or the record API's mapper functions.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shuffle import codec
from shuffle.errors import KeyEncodingError

#: The polynomial's base: odd, with well-spread bits (xxHash's PRIME64_2).
P: Final = 0xC2B2AE3D27D4EB4F
#: Odd multiplier that mixes the length in (the 64-bit golden ratio).
LENGTH_MULT: Final = 0x9E3779B97F4A7C15
_MASK: Final = 2**64 - 1
# splitmix64's finalizer (Steele, Lea and Flood 2014): every input bit
# affects every output bit, so the top bits that hash_partition uses are
# uniform even for sequential keys.
_MIX_1: Final = 0xBF58476D1CE4E5B9
_MIX_2: Final = 0x94D049BB133111EB

#: Words hashed with one vectorised step per word index; the words of longer
#: values beyond this index are summed value by value (few values are that
#: long, and each costs one numpy call per 4 KiB rather than a Python loop step).
_WORDS_VECTORISED: Final = 512
#: Zero padding around a batch's data: one word before (a typed column's first
#: load starts a byte early), and after it enough for the dense passes of
#: :func:`_add_later_words`, which load word k of every value, ended or not.
_PAD_BEFORE: Final = 8
_PAD_AFTER: Final = 8 * (_WORDS_VECTORISED + 1)

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

#: _LOW_BYTES[i] keeps the low i bytes of a word (a value's last, partial word).
_LOW_BYTES: Final = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)
#: The same, but also clearing byte 0, where a typed column's tag goes.
_LOW_BYTES_BUT_FIRST: Final = _LOW_BYTES & np.uint64(_MASK ^ 0xFF)


def _mix_scalar(s: int, length: int) -> int:
    z = (s ^ (length * LENGTH_MULT)) & _MASK
    z = ((z ^ (z >> 30)) * _MIX_1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX_2) & _MASK
    return z ^ (z >> 31)


def hash_bytes(data: bytes) -> int:
    """The 64-bit hash of one byte string (pure Python; the reference definition).

    ``hash_bytes(codec.encode_key(k))`` is the hash :func:`hash_keys` gives ``k``.
    """
    s = 0
    power = 1
    for start in range(0, len(data), 8):
        s = (s + int.from_bytes(data[start : start + 8], "little") * power) & _MASK
        power = (power * P) & _MASK
    return _mix_scalar(s, len(data))


_HASH_NONE: Final = hash_bytes(bytes([codec.TAG_NONE]))
_HASH_FALSE: Final = hash_bytes(bytes([codec.TAG_BOOL, 0]))
_HASH_TRUE: Final = hash_bytes(bytes([codec.TAG_BOOL, 1]))


#: P**k mod 2**64 for the vectorised word indices.
_POWERS: Final = np.array([pow(P, k, 2**64) for k in range(_WORDS_VECTORISED)], dtype=np.uint64)


def _power(k: int) -> np.uint64:
    return np.uint64(_POWERS[k])


def _finish(sums: _U64, lengths: _I64 | int) -> _U64:
    """The vectorised twin of :func:`_mix_scalar`; works in place on ``sums``."""
    z = sums
    # Lengths are never negative, so viewing them as uint64 is exact and free.
    z ^= np.asarray(lengths, dtype=np.int64).view(np.uint64) * np.uint64(LENGTH_MULT)
    scratch = np.empty_like(z)
    # In-place with one scratch array: allocating a fresh array per step
    # costs more than the arithmetic.
    np.right_shift(z, np.uint64(30), out=scratch)
    z ^= scratch
    z *= np.uint64(_MIX_1)
    np.right_shift(z, np.uint64(27), out=scratch)
    z ^= scratch
    z *= np.uint64(_MIX_2)
    np.right_shift(z, np.uint64(31), out=scratch)
    z ^= scratch
    return z


def _binary_buffers(array: pa.Array) -> tuple[npt.NDArray[np.uint8], _I64]:
    """The data bytes and absolute offsets (n + 1 of them) of a binary-like array."""
    kind = array.type
    n = len(array)
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        data_buffer = array.buffers()[1]
        offsets = (np.arange(n + 1, dtype=np.int64) + array.offset) * width
    else:
        if not (
            pa.types.is_binary(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_large_string(kind)
        ):
            # View types: one cast to the offsets layout.
            array = array.cast(pa.large_binary())
            kind = array.type
        _, offsets_buffer, data_buffer = array.buffers()
        large = pa.types.is_large_binary(kind) or pa.types.is_large_string(kind)
        offset_type = np.int64 if large else np.int32
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
            array.offset : array.offset + n + 1
        ].astype(np.int64)
    if data_buffer is None:
        return np.zeros(0, dtype=np.uint8), offsets
    return np.frombuffer(data_buffer, dtype=np.uint8), offsets


def _hash_binary(array: pa.Array, tag: int | None) -> _U64:
    """Hash each value's bytes, preceded by the byte ``tag`` when given.

    With a tag (a typed str or bytes column) each value is hashed as if it were
    its generic encoding ``tag + payload``: words are loaded one byte early and
    the tag is written into byte 0 of the first word.
    """
    data, offsets = _binary_buffers(array)
    first, last = int(offsets[0]), int(offsets[-1])
    padded = np.zeros(_PAD_BEFORE + (last - first) + _PAD_AFTER, dtype=np.uint8)
    padded[_PAD_BEFORE : _PAD_BEFORE + last - first] = data[first:last]
    # words[i] is the little-endian word made of padded[i : i + 8].
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    shift = 0 if tag is None else 1
    starts = offsets[:-1] + (_PAD_BEFORE - first - shift)
    lengths = np.diff(offsets)
    if shift:
        lengths += 1
    sums = words[starts].astype(np.uint64, copy=False)
    # mode="clip" turns every length past 8 into index 8 (keep all 8 bytes).
    if tag is None:
        sums &= np.take(_LOW_BYTES, lengths, mode="clip")
    else:
        sums &= np.take(_LOW_BYTES_BUT_FIRST, lengths, mode="clip")
        sums |= np.uint64(tag)
    if len(lengths) and int(lengths.max()) > 8:
        _add_later_words(sums, words, starts, lengths)
    return _finish(sums, lengths)


def _add_later_words(sums: _U64, words: _U64, starts: _I64, lengths: _I64) -> None:
    """Add ``w[k] * P**k`` for the words k >= 1 of each value into ``sums``."""
    n = len(lengths)
    longest = int(lengths.max())
    active: _I64 | None = None  # None: still touching every row
    for k in range(1, min((longest + 7) // 8, _WORDS_VECTORISED)):
        # words[8k:][start] is the word k of the value at start.
        shifted = words[8 * k :]
        if active is None and 2 * int(np.count_nonzero(lengths > 8 * k)) >= n:
            # Most values have a word k: one dense pass, in which values that
            # have ended are masked to zero rather than skipped (the padding
            # after the data keeps their loads in bounds). The mask table is
            # indexed by length: zero up to 8k bytes, then _LOW_BYTES.
            masks = np.concatenate([np.zeros(8 * k, dtype=np.uint64), _LOW_BYTES])
            word = shifted[starts].astype(np.uint64, copy=False)
            word &= np.take(masks, lengths, mode="clip")
            word *= _power(k)
            sums += word
            continue
        if active is None:
            active = np.flatnonzero(lengths > 8 * k)
        else:
            active = active[lengths[active] > 8 * k]
        word = shifted[starts[active]].astype(np.uint64, copy=False)
        word &= np.take(_LOW_BYTES, lengths[active] - 8 * k, mode="clip")
        word *= _power(k)
        sums[active] += word
    for row in np.flatnonzero(lengths > 8 * _WORDS_VECTORISED):
        tail = _long_tail_sum(words, int(starts[row]), int(lengths[row]))
        sums[row] = (int(sums[row]) + tail) & _MASK


def _long_tail_sum(words: _U64, start: int, length: int) -> int:
    """sum(w[k] * P**k) over the words k >= _WORDS_VECTORISED of one long value."""
    count = (length + 7) // 8
    tail = words[start + 8 * _WORDS_VECTORISED : start + 8 * count : 8].astype(np.uint64)
    tail[-1] &= _LOW_BYTES[length - 8 * (count - 1)]
    block = _WORDS_VECTORISED
    total = 0
    for begin in range(0, len(tail), block):
        piece = tail[begin : begin + block]
        # A uint64 sum wraps modulo 2**64, as the definition wants.
        piece_sum = int(np.sum(piece * _POWERS[: len(piece)], dtype=np.uint64))
        total = (total + piece_sum * pow(P, _WORDS_VECTORISED + begin, 2**64)) & _MASK
    return total


def _hash_words(words: _U64, tag: int) -> _U64:
    """Hash the 9-byte encoding ``tag + 8 big-endian bytes of words`` (int64, float).

    Its word 0 is the tag then the first 7 bytes, word 1 the last byte.
    """
    swapped = words.byteswap()  # its little-endian bytes are words' big-endian bytes
    sums = swapped << np.uint64(8)
    sums |= np.uint64(tag)
    swapped >>= np.uint64(56)
    swapped *= np.uint64(P)
    sums += swapped
    return _finish(sums, 9)


def _hash_big_uint64(values: _U64) -> _U64:
    """Hash the 10-byte encoding of uint64 values past int64: 0x11, 8, 8 bytes."""
    swapped = values.byteswap()
    sums = swapped << np.uint64(16)
    sums |= np.uint64(codec.TAG_POS_BIGINT | (8 << 8))
    swapped >>= np.uint64(48)
    swapped *= np.uint64(P)
    sums += swapped
    return _finish(sums, 10)


def _numbers(array: pa.Array) -> npt.NDArray[Any]:
    """An int or float column as numpy, nulls as 0 (their hash is replaced later)."""
    if array.null_count:
        array = array.fill_null(0)
    values: npt.NDArray[Any] = array.to_numpy()  # zero-copy without nulls
    return values


def _hash_integers(array: pa.Array) -> _U64:
    values = _numbers(array)
    if values.dtype != np.uint64:
        words = values.astype(np.int64, copy=False).view(np.uint64) ^ np.uint64(1 << 63)
        return _hash_words(words, codec.TAG_INT)
    hashes = _hash_words(values ^ np.uint64(1 << 63), codec.TAG_INT)
    big = values > np.uint64(codec.INT64_MAX)
    if big.any():
        hashes[big] = _hash_big_uint64(values[big])
    return hashes


def _is_binary_like(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or getattr(pa.types, "is_binary_view", lambda _: False)(kind)
    )


def _is_string_like(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or getattr(pa.types, "is_string_view", lambda _: False)(kind)
    )


def _hash_array(array: pa.Array, encoding: str) -> _U64:
    kind = array.type
    if len(array) == 0:
        return np.zeros(0, dtype=np.uint64)
    if encoding == codec.GENERIC:
        if not (_is_binary_like(kind) or _is_string_like(kind)):
            raise KeyEncodingError(
                f"a generic key column must be binary, not {kind}; "
                "was its schema metadata (mrk8s.key) set by hand?"
            )
        hashes = _hash_binary(array, None)
    elif pa.types.is_dictionary(kind):
        dictionary = array.dictionary
        if len(dictionary) == 0:
            return np.full(len(array), _HASH_NONE, dtype=np.uint64)
        hashes = _hash_array(dictionary, codec.TYPED)[array.indices.fill_null(0).to_numpy()]
    elif pa.types.is_null(kind):
        return np.full(len(array), _HASH_NONE, dtype=np.uint64)
    elif _is_string_like(kind):
        hashes = _hash_binary(array, codec.TAG_STR)
    elif _is_binary_like(kind):
        hashes = _hash_binary(array, codec.TAG_BYTES)
    elif pa.types.is_integer(kind):
        hashes = _hash_integers(array)
    elif pa.types.is_floating(kind):
        hashes = _hash_words(codec.float_words(_numbers(array)), codec.TAG_FLOAT)
    elif pa.types.is_boolean(kind):
        flags = array.fill_null(False).to_numpy(zero_copy_only=False)
        hashes = np.where(flags, np.uint64(_HASH_TRUE), np.uint64(_HASH_FALSE))
    else:
        # Rare key types (lists, structs...): encode, then hash the bytes.
        return _hash_array(codec.generic_key_array(array, codec.TYPED), codec.GENERIC)
    if array.null_count:
        hashes[array.is_null().to_numpy(zero_copy_only=False)] = _HASH_NONE
    return hashes


def hash_keys(column: pa.Array | pa.ChunkedArray, encoding: str) -> _U64:
    """The stable 64-bit hash of each key in a column, as a uint64 array.

    Equals ``[hash_bytes(encode_key(k)) for k in keys]``: a key hashes the same
    in a typed and in a generic column. Nulls mean None.
    """
    if encoding not in codec.KEY_ENCODINGS:
        raise KeyEncodingError(
            f"unknown key encoding {encoding!r}; this mrk8s knows {', '.join(codec.KEY_ENCODINGS)}"
        )
    if isinstance(column, pa.ChunkedArray):
        parts = [_hash_array(chunk, encoding) for chunk in column.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return _hash_array(column, encoding)


def hash_partition(
    column: pa.Array | pa.ChunkedArray, encoding: str, num_partitions: int
) -> npt.NDArray[np.int32]:
    """The partition of each key, as int32: ``((hash >> 32) * num_partitions) >> 32``.

    A multiply-shift range reduction (Lemire, 2019) of the top 32 bits of
    :func:`hash_keys`, not ``hash % num_partitions``: numpy's 64-bit modulo
    costs more than hashing an int column, and the bias (partitions differ by
    at most one of the 2**32 hash slices) is far below noise.
    """
    _check_partitions(num_partitions)
    hashes = hash_keys(column, encoding)
    hashes >>= np.uint64(32)
    hashes *= np.uint64(num_partitions)
    hashes >>= np.uint64(32)
    return hashes.astype(np.int32)


def partition_of(key: object, num_partitions: int) -> int:
    """The hash partition of one key (pure Python; equals :func:`hash_partition`)."""
    _check_partitions(num_partitions)
    return ((hash_bytes(codec.encode_key(key)) >> 32) * num_partitions) >> 32


def _check_partitions(num_partitions: int) -> None:
    if not 1 <= num_partitions <= 2**31 - 1:
        raise ValueError(f"num_partitions must be between 1 and 2**31 - 1, not {num_partitions!r}")


# ---------------------------------------------------------------- range (TeraSort)


def boundaries_from_sample(sample: Sequence[bytes], num_partitions: int) -> list[bytes]:
    """The ``num_partitions - 1`` sorted boundaries at even quantiles of a sample.

    ``sample`` holds generic-encoded keys. Boundary ``i`` (1-based) is the
    sorted sample's element at index ``i * len(sample) // num_partitions``;
    partition ``p`` then holds keys ``k`` with ``boundaries[p-1] <= k <
    boundaries[p]``. A sample with fewer distinct keys than partitions repeats
    boundaries (some partitions stay empty). An empty sample gives boundaries
    of ``b""``, which puts every key in the last partition.
    """
    _check_partitions(num_partitions)
    ordered = sorted(sample)
    if not ordered:
        return [b""] * (num_partitions - 1)
    count = len(ordered)
    return [ordered[i * count // num_partitions] for i in range(1, num_partitions)]


def _check_boundaries(boundaries: Sequence[bytes]) -> None:
    if any(a > b for a, b in itertools.pairwise(boundaries)):
        raise ValueError("range boundaries must be sorted ascending")


def range_cuts(
    sorted_keys: pa.Array | pa.ChunkedArray, encoding: str, boundaries: Sequence[bytes]
) -> list[int]:
    """Row offsets ``[0, c1, ..., n]`` splitting a sorted key column by range.

    ``sorted_keys`` must be sorted ascending in generic order, which for a
    typed column is Arrow's sort order with nulls first (``null_placement=
    "at_start"``). Rows ``[cuts[p], cuts[p+1])`` belong to partition ``p``.
    Each cut is a binary search that encodes only the rows it probes, so the
    cost is ``O(len(boundaries) * log n)`` Python steps.
    """
    _check_boundaries(boundaries)
    n = len(sorted_keys)

    def probe(row: int) -> bytes:
        value = sorted_keys[row].as_py()
        if encoding == codec.GENERIC:
            return codec.encode_key(None) if value is None else bytes(value)
        return codec.encode_key(value)

    cuts = [0]
    low = 0
    for boundary in boundaries:
        # Boundaries ascend, so each search starts where the previous ended.
        high = n
        while low < high:
            middle = (low + high) // 2
            if probe(middle) < boundary:
                low = middle + 1
            else:
                high = middle
        cuts.append(low)
    cuts.append(n)
    return cuts


def range_partition(
    column: pa.Array | pa.ChunkedArray, encoding: str, boundaries: Sequence[bytes]
) -> npt.NDArray[np.int32]:
    """The range partition of each key of an unsorted column, as int32.

    Encodes every key, so it is much slower than :func:`range_cuts` on a sorted
    column; for the rare caller that cannot sort first.
    """
    _check_boundaries(boundaries)
    encoded = codec.generic_key_array(column, encoding).to_pylist()
    return np.fromiter(
        (bisect.bisect_right(boundaries, key) for key in encoded),
        dtype=np.int32,
        count=len(encoded),
    )
