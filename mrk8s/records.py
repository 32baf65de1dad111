"""Buffers between a user's record functions and the shuffle.

Called by the task bodies: a :class:`RecordBuffer` gathers the ``(key,
value)`` pairs a mapper, combiner or reducer yields and hands them on in
chunks (to be encoded as Arrow tables, or written as output lines); a
:class:`CombiningBuffer` runs the combiner over a mapper's pairs grouped in
a dict (in-mapper combining) before they reach the shuffle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
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

#: Rough Python memory of one pair held for in-mapper combining (a list slot,
#: a share of the dict entry and key); sizes the dict within the sort buffer.
COMBINE_BYTES_PER_RECORD = 128


def emit(buf: RecordBuffer, where: Where, what: str, fn: Callable[[], Any] | None) -> None:
    """Run an ``*_init``/``*_final`` hook and gather what it yields, if anything."""
    if fn is not None:
        with guarded(where, what):
            buf.extend(as_records(fn(), what=what))


RecordSink = Callable[[list[Any], list[Any]], None]


def as_tables(sink: Callable[[pa.Table], None]) -> RecordSink:
    """A record sink that encodes each chunk as a key/value Arrow table."""
    return lambda keys, values: sink(codec.records_to_table(keys, values))


class RecordBuffer:
    """Gathers ``(key, value)`` pairs and hands them on in chunks of RECORD_CHUNK."""

    def __init__(self, sink: RecordSink, where: Where, what: str) -> None:
        self.sink = sink
        self.where = where
        self.what = what
        self.keys: list[Any] = []
        self.values: list[Any] = []

    def extend(self, records: Iterable[Record]) -> None:
        keys, values = self.keys, self.values
        for record in records:
            try:
                key, value = record
            except (TypeError, ValueError):
                raise self.not_a_pair(record) from None
            keys.append(key)
            values.append(value)
            if len(keys) >= RECORD_CHUNK:
                self.flush()
                keys, values = self.keys, self.values

    def not_a_pair(self, record: object) -> MRError:
        return self.where.wrap(
            TypeError(
                f"{self.what} yielded {record!r}, not a (key, value) pair: write `yield key, value`"
            ),
            self.what,
        )

    def flush(self) -> None:
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

    Every ``limit`` records (and at the end) the combiner runs once per key
    over that key's values and its output goes on to ``inner``. This spares
    the shuffle from encoding and sorting every raw pair; a combiner may run
    any number of times, so the result is the same.
    """

    def __init__(
        self, inner: RecordBuffer, combiner: Callable[..., Any], where: Where, limit: int
    ) -> None:
        super().__init__(inner.sink, where, "mapper")
        self.inner = inner
        self.combiner = combiner
        self.limit = max(1, limit)
        self._groups: defaultdict[Any, list[Any]] = defaultdict(list)
        self._originals: dict[Any, Any] = {}
        self._pending = 0

    def extend(self, records: Iterable[Record]) -> None:
        # The hot loop of a record-API map task: one dict operation per pair, and
        # the pending count kept in a local (attribute writes cost more).
        groups = self._groups
        pending = self._pending
        limit = self.limit
        try:
            for record in records:
                try:
                    key, value = record
                except (TypeError, ValueError):
                    raise self.not_a_pair(record) from None
                if type(key) is str:
                    groups[key].append(value)
                else:
                    dk = _group_key(key)
                    self._originals.setdefault(dk, key)
                    groups[dk].append(value)
                pending += 1
                if pending >= limit:
                    self._pending = pending
                    self.flush()
                    groups, pending = self._groups, 0
        finally:
            self._pending = pending

    def flush(self) -> None:
        groups, originals = self._groups, self._originals
        self._groups, self._originals, self._pending = defaultdict(list), {}, 0
        with guarded(self.where, "combiner"):
            for dk, values in groups.items():
                key = dk if type(dk) is str else originals[dk]
                self.inner.extend(as_records(self.combiner(key, iter(values)), what="combiner"))
        self.inner.flush()
