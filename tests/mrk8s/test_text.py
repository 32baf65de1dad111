"""mrk8s.text.split_words against Python's own str.split(), on generated lines."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from mrk8s.text import _plain_ascii, split_words

#: Letters (ASCII and not), every character str.split() splits on that matters
#: here (ASCII whitespace, the \x1c-\x1f separators, Unicode spaces and line
#: breaks), and a control character it does not split on (\x1b).
ALPHABET = list("ab zé中😀") + list("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u2000\u3000\u2028\x1b")
PLAIN = [c for c in ALPHABET if ord(c) < 0x80 and not 0x1C <= ord(c) <= 0x1F]


def words_of(lines: list[str | None]) -> list[str]:
    return [w for line in lines if line is not None for w in line.split()]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()], ids=str)
@pytest.mark.parametrize("alphabet", [ALPHABET, PLAIN], ids=["unicode", "plain-ascii"])
def test_same_words_as_str_split(kind: pa.DataType, alphabet: list[str]) -> None:
    rng = random.Random(7)
    for _ in range(500):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
            for _ in range(rng.randrange(8))
        ]
        array = pa.array(lines, kind)
        assert split_words(array).to_pylist() == words_of(lines), lines
        cut = rng.randrange(len(lines) + 1)  # a slice: offsets into shared buffers
        assert split_words(array.slice(cut)).to_pylist() == words_of(lines[cut:]), lines


def test_chunked_nulls_blank_lines_and_empty_input() -> None:
    chunks = [["  a b ", None, ""], [], ["\u3000c\x1cd", "   "], ["e"]]
    got = split_words(pa.chunked_array(chunks, pa.string()))
    assert isinstance(got, pa.ChunkedArray) and got.type == pa.string()
    assert got.to_pylist() == ["a", "b", "c", "d", "e"]
    assert split_words(pa.array([], pa.large_string())).to_pylist() == []
    large = split_words(pa.chunked_array(chunks, pa.large_string()))
    assert large.type == pa.large_string() and large.to_pylist() == ["a", "b", "c", "d", "e"]


def test_the_ascii_path_is_chosen_only_where_it_splits_as_python_does() -> None:
    assert _plain_ascii(pa.array(["a b\tc\x0b\x0c\r\n"]))
    assert _plain_ascii(pa.array(["", ""]))
    assert not _plain_ascii(pa.array(["a\x1fb"]))  # Python splits there, Arrow's ASCII splitter not
    assert not _plain_ascii(pa.array(["a\xa0b"]))
    # Only the slice's own bytes count.
    assert _plain_ascii(pa.array(["é", "a b"]).slice(1))
    assert not _plain_ascii(pa.array(["é", "a b"]).slice(0, 1))


def test_non_strings_are_refused() -> None:
    with pytest.raises(TypeError, match="split_words needs strings, got an array of int64"):
        split_words(pa.array([1, 2]))
