"""The buffers between record functions and the shuffle (mrk8s.tasks.records), on real objects.

Each test checks what the buffers hand on against an independent computation
over the same pairs (``collections.Counter``, plain dict grouping).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mrk8s.errors import JobDefinitionError
from mrk8s.tasks import records
from mrk8s.tasks.records import CombiningBuffer, RecordBuffer, WordCounts
from mrk8s.tasks.usercode import Where
from shuffle.errors import MRError
from tests.util import make_words

WHERE = Where(0, 1, "map", 0, "test input")


class Collected:
    """A record sink that keeps every (key, value) it is handed, in order."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Any, Any]] = []
        self.calls = 0

    def __call__(self, keys: list[Any], values: list[Any]) -> None:
        self.calls += 1
        self.pairs.extend(zip(keys, values, strict=True))


def test_word_counts_equal_counter_over_batches_and_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small batches and sums, so that one test goes through every path many times.
    monkeypatch.setattr(records, "COUNT_BATCH", 997)
    monkeypatch.setattr(records, "COUNT_COMPACT_ROWS", 1500)
    words = make_words(60_000, vocab=3000, seed=4).split()
    # Words Arrow cannot hold (lone surrogates) and other code points, mixed in.
    words[100:100] = ["bad\udc80", "ok\u00e9", "bad\udc80", "\ud800", "emoji\U0001f600"]
    rng = random.Random(1)
    counts = WordCounts()
    at = 0
    while at < len(words):
        step = rng.randint(1, 3000)
        counts.update(words[at : at + step])
        at += step
    pairs = list(counts.take())
    assert len(pairs) == len({w for w, _ in pairs}), "a word came out twice"
    assert dict(pairs) == Counter(words)
    assert list(counts.take()) == []  # taken: the counts start again
    counts.update(["again", "again"])
    assert list(counts.take()) == [("again", 2)]


def test_word_counts_held_bytes_grow_and_reset() -> None:
    counts = WordCounts()
    assert counts.held_bytes() == 0
    counts.update(make_words(300_000, vocab=50_000, seed=2).split())
    held = counts.held_bytes()
    assert held > 0
    list(counts.take())
    assert counts.held_bytes() == 0 < held


COMBINE_EVERYTHING = 1 << 40


def _listing_combiner(key: Any, values: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    yield key, sorted(f"{type(v).__name__}:{v!r}" for v in values)


def _group(pairs: list[tuple[Any, Any]]) -> dict[tuple[str, Any], list[str]]:
    grouped: defaultdict[tuple[str, Any], list[str]] = defaultdict(list)
    for key, value in pairs:
        grouped[(type(key).__name__, key)].append(f"{type(value).__name__}:{value!r}")
    return {k: sorted(v) for k, v in grouped.items()}


def test_combining_keeps_types_of_keys_and_values_apart() -> None:
    """True and 1.0 equal 1, numpy.str_ equals str: the combiner still sees each as it came."""
    chunk = records.PAIR_CHUNK
    words = make_words(12 * chunk, vocab=500, seed=7).split()[: 12 * chunk]
    pairs: list[tuple[Any, Any]] = [(w, 1) for w in words]  # whole chunks of (str, 1)...
    rng = random.Random(3)
    odd: list[tuple[Any, Any]] = []
    for w in rng.sample(words, 30):
        odd += [(w, True), (w, 1.0), (np.str_(w), 1), (w.encode(), 1), (w, 2), ((w, 1), 1)]
    # ...with one odd pair in each of chunks 1-10 (every other pair of it equal to 1), and
    # the rest of them crowded into chunk 11 (the buffer cuts chunks every PAIR_CHUNK pairs).
    for i, pair in enumerate(odd[:10]):
        pairs[(i + 1) * chunk + rng.randrange(chunk)] = pair
    pairs[11 * chunk : 11 * chunk + len(odd) - 10] = odd[10:]

    out = Collected()
    inner = RecordBuffer(out, WHERE, "mapper")
    buf = CombiningBuffer(inner, _listing_combiner, WHERE, COMBINE_EVERYTHING)
    buf.extend(iter(pairs))
    buf.flush()

    got: dict[tuple[str, Any], list[str]] = {}
    for key, listed in out.pairs:
        k = (type(key).__name__, key)
        # A key seen once with the value 1 goes on as it came, without the combiner.
        got[k] = ["int:1"] if listed == 1 else listed
        assert listed == 1 or isinstance(listed, list)
    assert got == _group(pairs)


def test_combining_with_a_small_limit_combines_often_and_loses_nothing() -> None:
    words = make_words(50_000, vocab=20_000, seed=5).split()

    def total(key: str, values: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield key, sum(values)

    out = Collected()
    buf = CombiningBuffer(RecordBuffer(out, WHERE, "mapper"), total, WHERE, limit_bytes=200_000)
    buf.run(lambda _, line: ((w, 1) for w in line.split()), ((None, w) for w in words))
    buf.flush()
    summed: Counter[str] = Counter()
    for key, n in out.pairs:
        summed[key] += n
    assert summed == Counter(words)
    assert len(out.pairs) > len(set(words)), "the limit never made the buffer combine early"


def test_run_counts_calls_and_takes_any_iterable() -> None:
    out = Collected()
    buf = RecordBuffer(out, WHERE, "mapper")

    def listing(key: Any, line: str) -> list[tuple[str, int]]:  # not a generator
        return [(w, len(w)) for w in line.split()]

    lines = ["a bb", "", "ccc a"]
    assert buf.run(listing, [(None, line) for line in lines]) == 3
    assert buf.run(None, [("k", 1), ("k", 2)]) == 2  # no mapper: each item is the pair
    assert buf.run(listing, []) == 0
    buf.flush()
    assert out.pairs == [("a", 1), ("bb", 2), ("ccc", 3), ("a", 1), ("k", 1), ("k", 2)]


def test_run_names_a_function_that_returns_no_iterable() -> None:
    out = Collected()
    buf = RecordBuffer(out, WHERE, "mapper")
    assert buf.run(lambda key, value: None, [(None, "x")]) == 1  # None: yields nothing
    with pytest.raises(JobDefinitionError, match="mapper returned int, not an iterable"):
        buf.run(lambda key, value: 5, [(None, "x")])
    buf.flush()
    assert out.pairs == []


@pytest.mark.parametrize("bad", [("only-one",), ("a", 1, "extra"), 7, None])
def test_a_record_that_is_not_a_pair_is_named(bad: object) -> None:
    buf = RecordBuffer(Collected(), WHERE, "mapper")

    def mapper(key: Any, value: Any) -> Iterator[Any]:
        yield "fine", 1
        yield bad

    with pytest.raises(MRError) as info:
        buf.run(mapper, [(None, "x")])
        buf.flush()
    assert f"mapper yielded {bad!r}, not a (key, value) pair" in str(info.value)


def test_a_long_generator_is_checked_as_it_runs() -> None:
    """However many pairs one call yields, at most PAIR_CHUNK wait unchecked."""
    out = Collected()
    buf = RecordBuffer(out, WHERE, "mapper_raw")
    waiting: list[int] = []
    n = 40 * records.PAIR_CHUNK + 5

    def many(_key: Any, _value: Any) -> Iterator[tuple[int, int]]:
        for i in range(n):
            waiting.append(len(buf._pending))
            yield i, i

    assert buf.run(many, [(None, None)]) == 1
    buf.flush()
    assert max(waiting) < records.PAIR_CHUNK
    assert out.pairs == [(i, i) for i in range(n)]
    assert out.calls >= n // records.RECORD_CHUNK
