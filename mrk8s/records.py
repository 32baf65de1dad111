"""Buffers between a user's record functions and the shuffle.

Called by the task bodies: a :class:`RecordBuffer` gathers the ``(key,
value)`` pairs a mapper, combiner or reducer yields and hands them on in
chunks (to be encoded as Arrow tables, or written as output lines); a
:class:`CombiningBuffer` runs the combiner over a mapper's pairs grouped in
a dict (in-mapper combining) before they reach the shuffle.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa

from mrk8s.job import Record, as_records
from mrk8s.usercode import Where, guarded
from shuffle import codec
from shuffle.errors import KeyEncodingError, MRError

#: Records gathered from a record function before they become one Arrow table:
#: large enough to amortise the conversion, small enough that the Python objects
#: held meanwhile stay a few MB.
RECORD_CHUNK = 32_768

#: Rough Python memory held for in-mapper combining: per distinct key (its
#: str, dict entry, count or list) and per value kept in a list; sizes the
#: dict within the sort buffer.
COMBINE_BYTES_PER_KEY = 160
COMBINE_BYTES_PER_RECORD = 40


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
#: chunk of pairs happens in C (``zip``, ``map``, ``Counter.update``), where a
#: Python loop over single pairs would cost several times as much.
PAIR_CHUNK = 2048

_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def _split_pairs(chunk: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """``(keys, values)`` of a chunk of pairs, or None if some item is not a pair
    (does not have two items, which is what ``key, value = item`` needs)."""
    try:
        if set(map(len, chunk)) != {2}:
            return None
        return list(map(_FIRST, chunk)), list(map(_SECOND, chunk))
    except (TypeError, KeyError, IndexError):  # no len(), or not indexable by position
        return None


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
        pending = self._pending
        pending.extend(records)
        if len(pending) >= PAIR_CHUNK:
            self._drain()

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


class CombiningBuffer(RecordBuffer):
    """In-mapper combining: groups a mapper's pairs by key in a dict.

    When the buffered keys and values exceed ``limit_bytes`` (and at the end)
    the combiner runs once per key over that key's values and its output
    goes on to ``inner``. This spares the shuffle from encoding and sorting
    every raw pair; a combiner may run any number of times, so the result is
    the same.

    The commonest mapper of all yields ``(word, 1)``: a chunk of pairs whose
    keys are all str and whose values are all the int 1 is only counted (in
    C, by ``Counter.update``), and the combiner later gets that many 1s. Any
    other pairs are kept in per-key lists. The values of a key reach the
    combiner in no particular order, as in any MapReduce.
    """

    def __init__(
        self, inner: RecordBuffer, combiner: Callable[..., Any], where: Where, limit_bytes: int
    ) -> None:
        super().__init__(inner.sink, where, "mapper")
        self.inner = inner
        self.combiner = combiner
        self.limit_bytes = max(1, limit_bytes)
        self._ones: Counter[str] = Counter()
        self._groups: defaultdict[Any, list[Any]] = defaultdict(list)
        self._originals: dict[Any, Any] = {}
        self._listed = 0

    def _held_bytes(self) -> int:
        return (len(self._ones) + len(self._groups)) * COMBINE_BYTES_PER_KEY + (
            self._listed * COMBINE_BYTES_PER_RECORD
        )

    def _take(self, keys: list[Any], values: list[Any]) -> None:
        if (
            values.count(1) == len(values)  # cheap: equal to 1 (True and 1.0 are, too)...
            and set(map(type, values)) == {int}  # ...then exactly ints
            and set(map(type, keys)) == {str}
        ):
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

    def _combine(self) -> None:
        ones, groups, originals = self._ones, self._groups, self._originals
        self._ones, self._groups, self._originals = Counter(), defaultdict(list), {}
        self._listed = 0
        combiner, inner = self.combiner, self.inner
        # A combiner may run any number of times for a key, zero included: a key
        # seen once, with the value 1, goes on as it came.
        once: list[str] = []
        with guarded(self.where, "combiner"):
            for key, n in ones.items():
                listed = groups.pop(key, None)
                if listed is None:
                    if n == 1:
                        once.append(key)
                        continue
                    values: Iterator[Any] = repeat(1, n)
                else:
                    values = chain(repeat(1, n), listed)
                inner.extend(as_records(combiner(key, values), what="combiner"))
            for dk, listed in groups.items():
                key = dk if type(dk) is str else originals[dk]
                inner.extend(as_records(combiner(key, iter(listed)), what="combiner"))
        if once:
            inner.extend(zip(once, repeat(1)))
        inner.flush()
