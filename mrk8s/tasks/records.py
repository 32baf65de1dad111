"""Buffers between a user's record functions and the shuffle.

Called by the task bodies: a :class:`RecordBuffer` gathers the ``(key,
value)`` pairs a mapper, combiner or reducer yields and hands them on in
chunks (to be encoded as Arrow tables, or written as output lines); a
:class:`CombiningBuffer` runs the combiner over a mapper's pairs grouped in
a dict (in-mapper combining) before they reach the shuffle.
"""

from __future__ import annotations

import inspect
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, count, islice, repeat, starmap
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mrk8s.errors import ResultEncodingError
from mrk8s.job import Record, as_records
from mrk8s.tasks.usercode import Where, guarded
from shuffle import codec
from shuffle.errors import KeyEncodingError, MRError

#: Records gathered from a record function before they become one Arrow table:
#: large enough to amortise the conversion, small enough that the Python objects
#: held meanwhile stay a few MB.
RECORD_CHUNK = 32_768

#: Rough memory held for in-mapper combining: per distinct key of a dict (its
#: object, entry and list), per value kept in a list and per word waiting to
#: be counted; sizes what is held within the sort buffer.
COMBINE_BYTES_PER_KEY = 160
COMBINE_BYTES_PER_RECORD = 40
COMBINE_BYTES_PER_WORD = 64

#: Words (the str keys of ``(word, 1)`` pairs) gathered before Arrow counts
#: them, and the ``(word, count)`` rows of per-batch counts that may pile up
#: before they are summed into one table (see :class:`WordCounts`).
COUNT_BATCH = 1 << 17
COUNT_COMPACT_ROWS = 1 << 21
_COUNT_COLUMNS = ["key", "n"]


def emit(buf: RecordBuffer, where: Where, what: str, fn: Callable[[], Any] | None) -> None:
    """Run an ``*_init``/``*_final`` hook and gather what it yields, if anything."""
    if fn is not None:
        with guarded(where, what):
            buf.extend(as_records(fn(), what=what))


RecordSink = Callable[[list[Any], list[Any]], None]


def as_tables(sink: Callable[[pa.Table], None]) -> RecordSink:
    """A record sink that encodes each chunk as a key/value Arrow table."""
    return lambda keys, values: sink(codec.records_to_table(keys, values))


#: Pairs taken from a record function at a time. Checking and splitting a
#: chunk of pairs happens in C (``map``, list comparisons), where a Python
#: loop over single pairs would cost several times as much.
PAIR_CHUNK = 2048

_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_ONES, _INTS, _STRS = [1] * PAIR_CHUNK, [int] * PAIR_CHUNK, [str] * PAIR_CHUNK


def _split_pairs(chunk: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """``(keys, values)`` of a chunk of pairs, or None if some item is not a pair
    (does not have two items, which is what ``key, value = item`` needs)."""
    try:
        if list(map(len, chunk)).count(2) != len(chunk):
            return None
        return list(map(_FIRST, chunk)), list(map(_SECOND, chunk))
    except (TypeError, KeyError, IndexError):  # no len(), or not indexable by position
        return None


def _word_ones(keys: list[Any], values: list[Any]) -> bool:
    """Whether a chunk of pairs is all ``(str, 1)``, exactly: the key's type
    is str and the value is the int 1 (``True`` and ``1.0`` equal 1 but are
    not). Each check builds a list in C and compares it with a constant one:
    a pointer test per item, cheaper than filling a set."""
    n = len(values)
    ones, ints, strs = (
        (_ONES, _INTS, _STRS) if n == PAIR_CHUNK else (_ONES[:n], _INTS[:n], _STRS[:n])
    )
    return values == ones and list(map(type, values)) == ints and list(map(type, keys)) == strs


class RecordBuffer:
    """Gathers ``(key, value)`` pairs and hands them on in chunks of RECORD_CHUNK.

    ``extend`` only collects what a user function yields (``list.extend``
    runs the generator in C); the pairs are checked and split a chunk at a
    time, when :data:`PAIR_CHUNK` of them are pending or at ``flush``.
    """

    def __init__(self, sink: RecordSink, where: Where, what: str) -> None:
        self.sink = sink
        self.where = where
        self.what = what
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self._pending: list[Any] = []

    def extend(self, records: Iterable[Record]) -> None:
        """Gather pairs, checking and splitting them every PAIR_CHUNK: however
        many a generator yields, no more than that many wait unchecked."""
        it = iter(records)
        while True:
            pending = self._pending
            pending.extend(islice(it, PAIR_CHUNK - len(pending)))
            if len(pending) < PAIR_CHUNK:
                return
            self._drain()

    def run(self, fn: Callable[..., Any] | None, calls: Iterable[tuple[Any, ...]]) -> int:
        """Call ``fn(*args)`` for each ``args`` of ``calls`` and gather what each
        call yields; returns the number of calls. With ``fn`` None (a step
        without a mapper) each ``args`` is itself the pair to gather.

        A generator function (a mapper, combiner or reducer with ``yield``) is
        called and drained by ``itertools`` in C: no Python loop runs per
        input record or key. Other functions go through :func:`as_records`,
        which names what they returned if it is not iterable.
        """
        calls_made = count()
        # zip takes a number before each call's arguments: one more than the calls.
        args = map(_SECOND, zip(calls_made, calls, strict=False))
        if fn is None:
            self.extend(args)
        elif inspect.isgeneratorfunction(fn):
            self.extend(chain.from_iterable(starmap(fn, args)))
        else:
            what = self.what
            self.extend(chain.from_iterable(as_records(fn(*a), what=what) for a in args))
        return next(calls_made) - 1

    def _drain(self) -> None:
        """Check and split the pending pairs."""
        chunk, self._pending = self._pending, []
        if not chunk:
            return
        split = _split_pairs(chunk)
        if split is None:
            raise self.not_a_pair(next(r for r in chunk if not _is_pair(r)))
        self._take(*split)

    def _take(self, keys: list[Any], values: list[Any]) -> None:
        self.keys.extend(keys)
        self.values.extend(values)
        if len(self.keys) >= RECORD_CHUNK:
            self._send()

    def not_a_pair(self, record: object) -> MRError:
        return self.where.wrap(
            TypeError(
                f"{self.what} yielded {record!r}, not a (key, value) pair: write `yield key, value`"
            ),
            self.what,
        )

    def flush(self) -> None:
        self._drain()
        self._send()

    def _send(self) -> None:
        if not self.keys:
            return
        keys, values = self.keys, self.values
        self.keys, self.values = [], []
        try:
            self.sink(keys, values)
        except KeyEncodingError as exc:
            exc.message = f"{self.what} yielded a key or value the shuffle cannot carry: " + (
                exc.message
            )
            raise self.where.wrap(exc, self.what) from None
        except ResultEncodingError as exc:
            exc.message = f"{self.what} yielded a result that cannot be written: {exc.message}"
            raise self.where.wrap(exc, self.what) from None


def _is_pair(record: object) -> bool:
    try:
        _, _ = record  # type: ignore[misc]
    except (TypeError, ValueError):
        return False
    return True


def _group_key(key: Any) -> Any:
    """A dict key that is equal only for keys the shuffle treats as equal.

    Python says ``1 == 1.0 == True``; the shuffle keeps them apart, so
    non-str keys are tagged with their type (and encoded when they are not
    plain ints or bytes, so that tuples holding 1 and 1.0 stay apart too).
    """
    kind = type(key)
    if kind is int or kind is bytes:
        return (kind, key)
    return (kind, codec.encode_key(key))


def _has_utf8(word: str) -> bool:
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class WordCounts:
    """Counts of str keys, kept by Arrow rather than in a Python dict.

    ``update`` gathers words; every COUNT_BATCH of them become one Arrow
    string array, counted by ``value_counts`` (a hash table small enough to
    stay in the CPU cache), and the per-batch counts are summed by a group-by
    whenever they reach COUNT_COMPACT_ROWS rows, or twice the rows of the
    last sum. A ``Counter`` of a million words misses the cache on almost
    every update and holds some 100 bytes a word; this took about a sixth
    less CPU over one 128 MiB map task of the Zipf word count (issue 3's
    notes give the measurement).
    A batch Arrow cannot take (a str with a lone surrogate, which has no
    UTF-8) is counted by a ``Counter`` instead.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._words: list[str] = []
        self._parts: list[pa.Table] = []
        self._rows = 0
        self._compacted = 0
        self._part_bytes = 0
        self._fallback: Counter[str] = Counter()

    def update(self, words: Iterable[str]) -> None:
        self._words.extend(words)
        if len(self._words) >= COUNT_BATCH:
            self._count()

    def held_bytes(self) -> int:
        # Summing the counts takes a group-by about twice their size again.
        return (
            3 * self._part_bytes
            + len(self._words) * COMBINE_BYTES_PER_WORD
            + len(self._fallback) * COMBINE_BYTES_PER_KEY
        )

    def _count(self) -> None:
        words, self._words = self._words, []
        if not words:
            return
        try:
            array = pa.array(words, pa.string())
        except UnicodeEncodeError:  # rare: count the words with no UTF-8 apart
            encodable: list[str] = []
            for word in words:
                if _has_utf8(word):
                    encodable.append(word)
                else:
                    self._fallback[word] += 1
            array = pa.array(encodable, pa.string())
        counts = pc.value_counts(array)
        self._add(pa.Table.from_arrays([counts.field(0), counts.field(1)], names=_COUNT_COLUMNS))
        if self._rows >= max(COUNT_COMPACT_ROWS, 2 * self._compacted):
            self._compact()

    def _add(self, part: pa.Table) -> None:
        self._parts.append(part)
        self._rows += part.num_rows
        self._part_bytes += part.nbytes

    def _compact(self) -> None:
        parts, self._parts = self._parts, []
        self._rows = self._part_bytes = 0
        if len(parts) == 1:
            self._add(parts[0])
        elif parts:
            # One thread: the other cores run other tasks.
            grouped = pa.concat_tables(parts).group_by("key", use_threads=False)
            summed = grouped.aggregate([("n", "sum")])
            self._add(pa.table({"key": summed["key"], "n": summed["n_sum"]}))
        self._compacted = self._rows

    def take(self) -> Iterator[tuple[str, int]]:
        """Every ``(word, count)`` so far, each word once; the counts start
        again from empty. Converted to Python a slice at a time."""
        self._count()
        self._compact()
        parts, fallback = self._parts, self._fallback
        self._reset()
        if parts:
            (table,) = parts
            for start in range(0, table.num_rows, RECORD_CHUNK):
                piece = table.slice(start, RECORD_CHUNK)
                yield from zip(piece["key"].to_pylist(), piece["n"].to_pylist(), strict=True)
        # No word without UTF-8 is also in the table: such a word equals no other.
        yield from fallback.items()


class CombiningBuffer(RecordBuffer):
    """In-mapper combining: groups a mapper's pairs by key.

    When the buffered keys and values exceed ``limit_bytes`` (and at the end)
    the combiner runs once per key over that key's values and its output
    goes on to ``inner``. This spares the shuffle from encoding and sorting
    every raw pair; a combiner may run any number of times, so the result is
    the same.

    The commonest mapper of all yields ``(word, 1)``: a chunk of pairs that
    are all exactly ``(str, 1)`` is only counted (by :class:`WordCounts`),
    and the combiner later gets that many 1s. Any other pairs are kept in
    per-key lists of a dict. The values of a key reach the combiner in no particular
    order, as in any MapReduce.

    The combiner's hooks run as they would around a combiner task of its own:
    ``init`` once before the first combine, ``final`` once after the last
    one (at :meth:`flush`), and what they yield goes on with its output.
    """

    def __init__(
        self,
        inner: RecordBuffer,
        combiner: Callable[..., Any],
        where: Where,
        limit_bytes: int,
        *,
        init: Callable[[], Any] | None = None,
        final: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(inner.sink, where, "mapper")
        self.inner = inner
        self.combiner = combiner
        self.init, self.final = init, final
        self._has_run = False
        self.limit_bytes = max(1, limit_bytes)
        self._ones = WordCounts()
        self._groups: defaultdict[Any, list[Any]] = defaultdict(list)
        self._originals: dict[Any, Any] = {}
        self._listed = 0

    def _held_bytes(self) -> int:
        return (
            self._ones.held_bytes()
            + len(self._groups) * COMBINE_BYTES_PER_KEY
            + self._listed * COMBINE_BYTES_PER_RECORD
        )

    def _take(self, keys: list[Any], values: list[Any]) -> None:
        if _word_ones(keys, values):
            self._ones.update(keys)
        else:
            self._add_listed(keys, values)
        if self._held_bytes() >= self.limit_bytes:
            self._combine()

    def _add_listed(self, keys: Iterable[Any], values: Iterable[Any]) -> None:
        groups = self._groups
        for key, value in zip(keys, values, strict=True):
            if type(key) is str:
                groups[key].append(value)
            else:
                dk = _group_key(key)
                self._originals.setdefault(dk, key)
                groups[dk].append(value)
            self._listed += 1

    def flush(self) -> None:
        self._drain()
        self._combine()
        emit(self.inner, self.where, "combiner_final", self.final)
        self.inner.flush()

    def _combine(self) -> None:
        if not self._has_run:
            self._has_run = True
            emit(self.inner, self.where, "combiner_init", self.init)
        ones, groups, originals = self._ones.take(), self._groups, self._originals
        self._groups, self._originals = defaultdict(list), {}
        self._listed = 0
        # A combiner may run any number of times for a key, zero included: a key
        # seen once, with the value 1, goes on as it came.
        once: list[str] = []

        def calls() -> Iterator[tuple[Any, Iterator[Any]]]:
            for key, n in ones:
                listed = groups.pop(key, None)
                if listed is None:
                    if n == 1:
                        once.append(key)
                        continue
                    yield key, repeat(1, n)
                else:
                    yield key, chain(repeat(1, n), listed)
            for dk, listed in groups.items():
                yield (dk if type(dk) is str else originals[dk]), iter(listed)

        with guarded(self.where, "combiner"):
            self.inner.run(self.combiner, calls())
        self.inner.extend(zip(once, repeat(1)))
        self.inner.flush()
