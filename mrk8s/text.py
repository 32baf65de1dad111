"""Columnar text helpers for ``map_batch``: Python's ``str.split()``, vectorised.

    from mrk8s.text import split_words

    def map_batch(self, table):
        words = split_words(table["line"])   # one string array of every word

:func:`split_words` gives exactly the words ``line.split()`` gives, line by
line, flattened: the same whitespace (Unicode's, plus the four ASCII
separators ``\\x1c``-``\\x1f`` that Python also splits on), no empty words for
blank lines or leading and trailing whitespace. Arrow's
``utf8_split_whitespace`` does the splitting; on a batch that is plain ASCII
without those four separators it uses ``ascii_split_whitespace``, which
splits on the same characters there in about 40% less time (measured on
the 128 MiB word-count corpus: 1.05 CPU-s against 1.72, and 1.25 with the
check that chooses it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["split_words"]


def split_words(lines: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Every word of every string in ``lines`` (string or large_string), in order,
    as ``str.split()`` would cut them; nulls have none. Chunked in, chunked out."""
    if isinstance(lines, pa.ChunkedArray):
        # Words have their lines' type (a split keeps string or large_string).
        return pa.chunked_array([_split(chunk) for chunk in lines.chunks], type=lines.type)
    return _split(lines)


def _split(lines: pa.Array) -> pa.Array:
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        raise TypeError(f"split_words needs strings, got an array of {lines.type}")
    ascii_only = _plain_ascii(lines)
    trim = pc.ascii_trim_whitespace if ascii_only else pc.utf8_trim_whitespace
    split = pc.ascii_split_whitespace if ascii_only else pc.utf8_split_whitespace
    # Trimmed first: Arrow makes an empty word of leading or trailing whitespace
    # (and, given a string that ends in whitespace, its UTF-8 splitter reads past
    # the end); a blank line would still give one "", so it goes too.
    trimmed = trim(lines)
    trimmed = trimmed.filter(pc.greater(pc.binary_length(trimmed), 0))
    return pc.list_flatten(split(trimmed))


def _plain_ascii(lines: pa.Array) -> bool:
    """No byte >= 0x80 and none of 0x1c-0x1f in the strings' bytes (nulls' included,
    which can only make this say no)."""
    if len(lines) == 0:
        return True
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=width)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    if start == end:
        return True
    data = np.frombuffer(lines.buffers()[2], dtype=np.uint8)[start:end]
    if int(data.max()) >= 0x80:
        return False
    # 0x1c-0x1f are the only bytes that Python splits on and Arrow's ASCII splitter
    # does not (both take \t \n \v \f \r and space). XOR with 0x1c maps exactly
    # those four to 0-3: one SIMD pass and a min, not four comparisons.
    return int(np.bitwise_xor(data, np.uint8(0x1C)).min()) >= 4
