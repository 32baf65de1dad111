"""Map-output files: one file per map task attempt, one index per file.

Called by the map task (writer) and the reduce task (reader). The file is a
concatenation of self-contained Arrow IPC streams, one or more per non-empty
partition, all streams of a partition contiguous, each stream holding rows
sorted by key. The index, which lives in the commit record (not in the file),
maps a partition to its streams' ``(offset, length, rows, checksum)``, so a
reducer needs one range read per map output and can tell a damaged segment
from a good one.

An unsorted (hash) shuffle cuts each partition further into hash *buckets*,
one stream per non-empty (partition, bucket) of a run, in bucket order: a
reducer whose partition does not fit in memory reads it a range of buckets at
a time, and every key still lands in one range (see ``StreamRef.bucket``).

While a map task runs, each run (one per spill) is appended to a local spill
file; :meth:`MapOutputWriter.finish` moves that file into place. When there
were several runs and the store is remote, it first rewrites the streams
grouped by partition, so a reducer needs one range read per map output; on a
local store the copy would cost more than the extra reads it saves, and the
runs stay where they are. An unsorted shuffle on a local store writes every
byte once instead: each (partition, bucket) has a region of the published
file, sized from its first stream and the runs expected, and every run's
stream of it is joined to the one in the region as it comes; what does not
fit goes to regions at the end of the file, as further streams of that
partition (:class:`_Regions`). Room a region does not use is a hole of a
sparse file: no stream covers it, so no reducer reads it. Streams are
LZ4-compressed unless the first megabyte shows the data does not compress.
Arrow's IPC writer hands its buffers straight to the file (checksummed on
the way). A reducer reads the ranges it needs of local map outputs ahead of
use, a few at a time (:mod:`shuffle.readahead`: one ``preadv`` per range
into an Arrow buffer that the decoded rows then share, no further copy); it
used to map them, which left a reducer waiting on one page fault at a time
once the map outputs outgrew the page cache. This module knows partitions, buckets and
streams, not mappers.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, TypeAlias

import pyarrow as pa
import xxhash

from shuffle import readahead
from shuffle.errors import CorruptSegmentError
from shuffle.store import FsspecStore, ShortReadError, translate_errors

logger = logging.getLogger(__name__)

#: Rows per record batch inside a stream. Small enough that a reducer merging
#: many runs holds one modest batch per run; large enough to amortise Arrow's
#: per-batch overhead.
DEFAULT_BATCH_ROWS = 16_384

#: Segments up to this size are fetched with one range read; larger ones are
#: streamed, so a reducer's memory does not grow with a partition's size.
WHOLE_READ_LIMIT = 16 * 2**20

#: Segment fetches a reducer keeps in flight at once (object stores answer each
#: range GET in tens of milliseconds; a few concurrent ones hide that latency).
MAX_IN_FLIGHT = 8

#: Read buffer of one streamed run, unless the reader asks for less.
STREAM_BUFFER = 1 << 20

#: Streams of tables up to this many rows are serialised in memory, then
#: written at once (see ``MapOutputWriter._write_stream``). Rows, not bytes:
#: ``Table.nbytes`` of a slice took as long as serialising it.
SMALL_STREAM_ROWS = DEFAULT_BATCH_ROWS

#: The rows of one stream: a table, or one record batch (the pieces an
#: unsorted map task cuts from its tables, :class:`shuffle.sorter.MapSorter`).
Rows: TypeAlias = pa.Table | pa.RecordBatch

#: Copy buffer used when regrouping spilled runs by partition.
_COPY_CHUNK = 4 * 2**20

#: A writer given ``join_runs`` joins the runs' streams of each (partition,
#: bucket) into one stream when its streams average less than this: an unsorted
#: map task that spilled its fixed-size buffer four times over 256 reducers x 4
#: buckets wrote 4096 streams of ~32 KiB, and every stream costs its reducer a
#: schema, a decode and a checksum (README, "The shuffle beyond memory").
JOIN_STREAM_BYTES = 128 << 10

#: A writer placing runs in regions (``in_place``) gives each (partition,
#: bucket) room for this many runs of the size of its first stream, unless told
#: how many runs to expect: a map task of the default split (128 MiB) that
#: spills every 32 MiB (``mrk8s.tasks.run.UNSORTED_SPILL_BYTES``) writes four.
EXPECTED_RUNS = 4.0

#: Room beyond the expected bytes of a region: hash buckets fill evenly, not
#: exactly (a bucket of a few thousand rows per run varies by a few percent).
REGION_SLACK = 0.125

#: A region of a map output written in place with room for at least this much
#: starts on a page (4096 bytes), so a reducer reading it (the kernel reads whole
#: pages) reads nothing of the region before it; smaller ones start on 64 bytes,
#: so that many small regions share pages rather than take one each on disk.
_PAGE_ALIGNED_ROOM = 64 << 10

#: The end-of-stream marker of an Arrow IPC stream: continuation, zero length.
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"

#: Compression is judged on the first this-many bytes a writer serialises
#: (LZ4 looks back 64 KiB, so a megabyte shows what it will do, and every
#: probed byte of data that does not compress costs LZ4's time for nothing:
#: on 64 MiB map tasks of random rows, probing 4 MiB took 5% of the task's
#: CPU and 1 MiB 2.7%, medians of 7)...
COMPRESSION_PROBE_BYTES = 2**20

#: ...and dropped for the rest of the file unless it saved at least this share.
MIN_COMPRESSION_SAVING = 0.1


def stream_checksum(data: Any) -> int:
    """The checksum a commit record keeps for a stream: xxh3_64 of its bytes.

    Three times as fast as zlib's CRC32 here (about 9 GB/s against 2.8), and
    every byte of the shuffle goes through it twice (written, then read).
    """
    return int(xxhash.xxh3_64_intdigest(data))


def _stream_hasher() -> Any:
    """An incremental :func:`stream_checksum`: ``update(bytes)``, then ``intdigest()``."""
    return xxhash.xxh3_64()


@dataclass(frozen=True, slots=True)
class StreamRef:
    """Where one stream of one partition lies in a map-output file.

    ``bucket`` is 0 in a sorted shuffle (the stream is a run sorted by key). In
    an unsorted one it is the stream's hash bucket within the partition: every
    row of a key has the same bucket in every map output.
    """

    offset: int
    length: int
    rows: int
    checksum: int  # xxh3_64 of the stream's bytes (see stream_checksum)
    bucket: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> list[int]:
        head = [self.offset, self.length, self.rows, self.checksum]
        return [*head, self.bucket] if self.bucket else head

    @classmethod
    def from_json(cls, data: Sequence[int]) -> StreamRef:
        bucket = int(data[4]) if len(data) > 4 else 0
        return cls(int(data[0]), int(data[1]), int(data[2]), int(data[3]), bucket)


PartitionIndex = dict[int, list[StreamRef]]


def index_to_json(index: Mapping[int, Sequence[StreamRef]]) -> dict[str, list[list[int]]]:
    return {str(p): [r.to_json() for r in refs] for p, refs in sorted(index.items())}


def index_from_json(data: Mapping[str, Sequence[Sequence[int]]]) -> PartitionIndex:
    return {int(p): [StreamRef.from_json(r) for r in refs] for p, refs in data.items()}


class MapOutputWriter:
    """Collects a map task's runs and publishes one map-output file.

    State: a local spill file (in ``spill_dir``) holding every run written so
    far, and ``_runs``: per run, partition -> its StreamRefs within the spill
    file. Parameters: ``compression`` is an Arrow IPC codec name (``lz4``,
    ``zstd``) or None (kept only while the data compresses, see
    :data:`MIN_COMPRESSION_SAVING`); ``batch_rows`` bounds record batches
    inside a stream (0: one batch per table). ``join_runs`` says the streams
    need not stay sorted runs (an unsorted shuffle): when the runs' streams are
    small (:data:`JOIN_STREAM_BYTES`), :meth:`finish` joins each partition's
    and bucket's streams of every run into one stream.

    With ``in_place`` too (a local store), nothing is spilled and copied: each
    run's streams go straight into the published file, into regions
    (:class:`_Regions`), and are joined there as they come. ``expected_runs``
    (default :data:`EXPECTED_RUNS`) sizes the regions. The file is written in
    ``spill_dir`` and renamed into place: on another filesystem than the store
    it is copied instead, holes written out as zeros.
    """

    def __init__(
        self,
        *,
        spill_dir: str | None = None,
        compression: str | None = "lz4",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        join_runs: bool = False,
        in_place: bool = False,
        expected_runs: float | None = None,
    ) -> None:
        if spill_dir is not None:
            os.makedirs(spill_dir, exist_ok=True)
        fd, self._spill_path = tempfile.mkstemp(prefix="mrk8s-spill-", dir=spill_dir)
        # mkstemp makes the file private; a published map output must be readable by a
        # shuffle server running as another user, like any file the job writes.
        os.chmod(self._spill_path, 0o644)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self.compression = compression
        self._options = pa.ipc.IpcWriteOptions(compression=compression)
        self._probed = (0, 0)  # (Arrow bytes in, bytes out) while judging compression
        self._last_schema: tuple[pa.Schema | None, bytes] = (None, b"")
        self._batch_rows = batch_rows
        self._join_runs = join_runs
        self._runs: list[dict[int, list[StreamRef]]] = []
        # The last run, kept unwritten until finish() writes it straight into
        # the joined file (add_run(last=True)), and its bucket count.
        self._last: tuple[Iterable[tuple[int, Rows]], int] | None = None
        self._run_count = 0
        self.rows_written = 0
        self.bytes_written = 0
        #: Bytes of the published file that no stream covers (in place: the
        #: regions' unused room, never written, so a sparse file's holes).
        self.hole_bytes = 0
        self._regions: _Regions | None = None
        if join_runs and in_place:
            assert self._file is not None
            self._regions = _Regions(self._file.fileno(), expected_runs or EXPECTED_RUNS)

    @property
    def num_runs(self) -> int:
        """Runs added so far (a last run held for :meth:`finish` counts)."""
        return self._run_count

    @property
    def runs_placed(self) -> float | None:
        """In place: the bytes written, in runs the size of the first (a good
        ``expected_runs`` for the next map task of the same step); else None."""
        return None if self._regions is None else self._regions.runs_placed

    def add_run(
        self,
        streams: Mapping[int, Rows] | Iterable[tuple[int, Rows]],
        buckets: int = 1,
        *,
        last: bool = False,
    ) -> None:
        """Append one run: stream id -> its rows (sorted by key in a sorted shuffle).

        A stream id is ``partition * buckets + bucket``; with ``buckets=1`` it is
        the partition. ``streams`` is a mapping, or ``(id, rows)`` pairs in
        ascending id order (each written as soon as it comes). ``last`` says no
        run follows: when :meth:`finish` will join the runs' streams, this run
        is not spilled but written once, straight into the joined file, so
        ``streams`` (and the tables it holds) must stay valid until then.
        """
        assert self._last is None, "add_run after the last run"
        pairs = sorted(streams.items()) if isinstance(streams, Mapping) else streams
        self._run_count += 1
        if self._regions is not None:
            with translate_errors(self._spill_path, "write a map output"):
                self._regions.add_run(self._serialised(pairs, max(1, buckets)), last=last)
            return
        if last and self._runs and self._should_join():
            self._last = (pairs, max(1, buckets))
            return
        with translate_errors(self._spill_path, "write a map task's spill file"):
            self._add_run(pairs, max(1, buckets))

    def _add_run(self, streams: Iterable[tuple[int, Rows]], buckets: int) -> None:
        assert self._file is not None, "add_run after finish"
        refs: dict[int, list[StreamRef]] = {}
        for sid, table in _ascending_nonempty(streams):
            offset = self._file.tell()
            size, checksum = self._write_stream(table)
            if self._probing:
                self._judge_compression(table.nbytes, size)
            p, bucket = divmod(sid, buckets)
            refs.setdefault(p, []).append(StreamRef(offset, size, table.num_rows, checksum, bucket))
            self.rows_written += table.num_rows
            self.bytes_written += size
        self._runs.append(refs)

    def _write_stream(self, table: Rows) -> tuple[int, int]:
        """Append ``table`` as one IPC stream; its size and checksum.

        A stream of one batch is serialised in memory and written with one call: through
        the file object each Arrow buffer is a Python call (a dozen per stream),
        which cost 110-160 us per 32 KiB stream against 60 in memory (1024
        streams, one 32 MiB run, as a 256-reducer hash shuffle writes). A longer
        one goes straight into the file: Arrow hands the sink its own buffers,
        so nothing is copied on the way but into the page cache.
        """
        assert self._file is not None
        options = self._options
        batches = _batches(table, self._batch_rows)
        if table.num_rows <= SMALL_STREAM_ROWS:
            data = _stream_bytes(table.schema, batches, options)
            self._file.write(memoryview(data))
            return data.size, stream_checksum(data)
        sink = _ChecksummingSink(self._file)
        with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema, options=options) as w:
            for batch in batches:
                w.write_batch(batch)
        return sink.size, sink.checksum

    def _serialised(
        self, streams: Iterable[tuple[int, Rows]], buckets: int
    ) -> Iterator[tuple[tuple[int, int], _Stream]]:
        """``streams`` as ``((partition, bucket), stream)``, ascending, none empty.

        Uncompressed, a stream of a schema without dictionaries is its schema
        message (serialised once per schema) and each batch's message, which is
        what an IPC stream writer writes, byte for byte: 5.8 us per 32 KiB stream
        against 9.9 through a writer into memory (1024 streams, medians of 7).
        """
        for sid, table in _ascending_nonempty(streams):
            schema = self._schema_message(table.schema) if self.compression is None else b""
            batches = _batches(table, self._batch_rows)
            if schema:
                stream = _Stream(schema, [b.serialize() for b in batches], table.num_rows)
            else:
                data = _stream_bytes(table.schema, batches, self._options)
                stream = _Stream.of(data, table.num_rows)
            size = stream.size
            if self._probing:
                self._judge_compression(table.nbytes, size)
            self.rows_written += table.num_rows
            self.bytes_written += size
            yield divmod(sid, buckets), stream

    def _schema_message(self, schema: pa.Schema) -> bytes:
        """``schema``'s IPC message if streams of it can be joined (:func:`_joinable`), else b""."""
        last, message = self._last_schema
        if last is None or not (schema is last or schema.equals(last, check_metadata=True)):
            message = schema.serialize().to_pybytes()
            message = message if _joinable(message) else b""
            self._last_schema = (schema, message)
        return message

    @property
    def _probing(self) -> bool:
        """Still judging whether compression pays (``Table.nbytes`` is not free)."""
        return self.compression is not None and self._probed[0] < COMPRESSION_PROBE_BYTES

    def _judge_compression(self, raw: int, written: int) -> None:
        raw_total, written_total = self._probed[0] + raw, self._probed[1] + written
        self._probed = (raw_total, written_total)
        if raw_total >= COMPRESSION_PROBE_BYTES and written_total > raw_total * (
            1 - MIN_COMPRESSION_SAVING
        ):
            logger.debug(
                "%s saves %.0f%% of the first %d bytes: writing the rest uncompressed",
                self.compression,
                100 * (1 - written_total / raw_total),
                raw_total,
            )
            self.compression = None
            self._options = pa.ipc.IpcWriteOptions(compression=None)

    def finish(self, store: FsspecStore, path: str) -> PartitionIndex:
        """Publish the file at ``path`` in ``store``; return its partition index."""
        assert self._file is not None, "finish called twice"
        try:
            if self._regions is not None:
                with translate_errors(self._spill_path, "write a map output"):
                    placed = self._regions.finish()
                self.hole_bytes = self._regions.hole_bytes
                self._file.close()
                self._file = None
                store.put_file(self._spill_path, path)
                return placed
            self._file.close()
            self._file = None
            if self._last is not None or self._should_join():
                joined_path = self._spill_path + ".grouped"
                last = self._serialised(*self._last) if self._last is not None else ()
                self._last = None
                with translate_errors(joined_path, "write a map output"):
                    joined = _join(self._spill_path, joined_path, self._runs, last)
                os.unlink(self._spill_path)
                store.put_file(joined_path, path)
                return joined
            if len(self._runs) <= 1 or store.is_local:
                index: PartitionIndex = {}
                for run in self._runs:
                    for p, refs in run.items():
                        index.setdefault(p, []).extend(refs)
                store.put_file(self._spill_path, path)
                return dict(sorted(index.items()))
            grouped_path = self._spill_path + ".grouped"
            with translate_errors(grouped_path, "write a map output"):
                index = _regroup(self._spill_path, grouped_path, self._runs)
            os.unlink(self._spill_path)
            store.put_file(grouped_path, path)
            return index
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            for leftover in (self._spill_path, self._spill_path + ".grouped"):
                if os.path.exists(leftover):
                    os.unlink(leftover)

    def _should_join(self) -> bool:
        streams = sum(len(refs) for run in self._runs for refs in run.values())
        return (
            self._join_runs
            and len(self._runs) > 1
            and self.bytes_written < streams * JOIN_STREAM_BYTES
        )

    def abort(self) -> None:
        """Drop everything written so far (the task failed)."""
        self._last = None
        if self._file is not None:
            self._file.close()
            self._file = None
        for leftover in (self._spill_path, self._spill_path + ".grouped"):
            if os.path.exists(leftover):
                os.unlink(leftover)


@dataclass(slots=True)
class _Stream:
    """An Arrow IPC stream to write, in parts: its schema message and its batch
    messages (the end-of-stream marker is left to the writer, which may join
    other streams' batches after these). With ``schema`` empty, ``body`` is
    bytes that do not parse as a stream, kept as they are and joined to nothing."""

    schema: bytes
    body: list[Any]
    rows: int

    @classmethod
    def of(cls, data: Any, rows: int) -> _Stream:
        """A whole stream's bytes, cut into its parts."""
        view = memoryview(data).cast("B")
        head = _schema_length(bytes(view[:8]))
        if 0 < head <= len(view) - 8 and view[-8:] == _EOS:
            return cls(bytes(view[:head]), [view[head:-8]], rows)
        return cls(b"", [view], rows)

    @property
    def size(self) -> int:
        """Bytes of the stream written whole (:meth:`parts`)."""
        body = sum(len(b) for b in self.body)
        return len(self.schema) + body + len(_EOS) if self.schema else body

    def parts(self) -> list[Any]:
        """The stream whole, end-of-stream marker included."""
        return [self.schema, *self.body, _EOS] if self.schema else self.body


@dataclass(slots=True)
class _Region:
    """Room in the file for one (partition, bucket): ``[cursor, end)`` is free.

    ``start >= 0`` while a stream is open in it: the stream began there, its
    schema message is ``schema``, and ``hasher`` and ``rows`` cover what was
    written of it so far (the end-of-stream marker is written when it closes).
    """

    cursor: int
    end: int
    start: int = -1
    schema: bytes = b""
    rows: int = 0
    hasher: Any = None


class _Regions:
    """A map output written in place, a region of the file per (partition, bucket).

    The first stream of a (partition, bucket) gets a region at the end of what
    is allocated so far, with room for ``expected_runs`` streams of its size
    (plus :data:`REGION_SLACK`); the first run's streams come in ascending
    order, so the regions lie in (partition, bucket) order. A later run's
    stream of that (partition, bucket) is joined to the one in its region: its
    batch messages are written (``pwrite``) after the ones before; the schema
    message is written once, the end-of-stream marker at :meth:`finish`.

    A stream that does not fit (more runs than expected, a skewed bucket)
    closes the region's stream and starts a new region at the end of the file,
    the overflow tail, with room for the runs still expected, or for as much
    again as the (partition, bucket) has so far if that is more (so a bucket
    that keeps growing gets a few streams, not one per run). A stream that
    cannot be joined (another schema, a dictionary) is a stream of its own.

    Room left in a region is never written: a hole, which takes no disk space
    (the file is sparse) and which no StreamRef covers, so no reducer reads it.
    """

    def __init__(self, fd: int, expected_runs: float) -> None:
        self._fd = fd
        self._expected = max(1.0, expected_runs)
        self._runs = 0
        self._end = 0  # allocated so far: where the next region starts
        self._regions: dict[tuple[int, int], _Region] = {}
        self._bytes: dict[tuple[int, int], int] = {}  # stream bytes so far
        self._closed: dict[tuple[int, int], list[StreamRef]] = {}
        self._first_run_bytes = 0
        self._placed = 0
        self.hole_bytes = 0

    @property
    def runs_placed(self) -> float:
        """Bytes placed so far, in runs the size of the first: what ``expected_runs``
        should have been (a last run is often smaller than the others)."""
        return self._placed / self._first_run_bytes if self._first_run_bytes else 0.0

    def add_run(self, streams: Iterable[tuple[tuple[int, int], _Stream]], *, last: bool) -> None:
        for key, stream in streams:
            size = stream.size
            self._add(key, stream, size, last)
            self._bytes[key] = self._bytes.get(key, 0) + size
            self._placed += size
        if not self._runs:
            self._first_run_bytes = self._placed
        self._runs += 1

    def _add(self, key: tuple[int, int], stream: _Stream, size: int, last: bool) -> None:
        region = self._regions.get(key)
        if region is not None and region.start >= 0:
            if (
                stream.schema == region.schema
                and region.cursor + size - len(stream.schema) <= region.end
            ):
                self._write(region, stream.body)
                region.rows += stream.rows
                return
            self._close(key, region)
        if region is None or region.end - region.cursor < size:
            region = self._allocate(key, size, last)
        region.hasher = _stream_hasher()
        if stream.schema and _joinable(stream.schema):
            region.start, region.schema, region.rows = region.cursor, stream.schema, stream.rows
            self._write(region, [stream.schema, *stream.body])
            return
        offset = region.cursor  # joined to nothing: a stream of its own, as it is
        self._write(region, stream.parts())
        ref = StreamRef(offset, size, stream.rows, int(region.hasher.intdigest()), key[1])
        self._closed.setdefault(key, []).append(ref)

    def _allocate(self, key: tuple[int, int], size: int, last: bool) -> _Region:
        room = size
        if not last:
            runs_left = max(1.0, self._expected - self._runs)
            so_far = self._bytes.get(key, 0)
            room = int(max(size * runs_left, so_far + size if so_far else 0) * (1 + REGION_SLACK))
        room = max(size, room)
        align = 4096 if room >= _PAGE_ALIGNED_ROOM else 64
        start = -(-self._end // align) * align
        region = _Region(start, start + room)
        self._end = start + room
        self._regions[key] = region
        return region

    def _write(self, region: _Region, parts: list[Any]) -> None:
        """Write ``parts`` one after another at the region's cursor, with one ``pwritev``."""
        total = 0
        for part in parts:
            region.hasher.update(part)
            total += len(part)
        n = os.pwritev(self._fd, parts, region.cursor)
        if n < total:  # a short write (rare): the rest one piece at a time
            rest = memoryview(b"".join(parts))[n:]
            while rest.nbytes:
                k = os.pwrite(self._fd, rest, region.cursor + n)
                rest, n = rest[k:], n + k
        region.cursor += total

    def _close(self, key: tuple[int, int], region: _Region) -> None:
        self._write(region, [_EOS])
        length = region.cursor - region.start
        checksum = int(region.hasher.intdigest())
        ref = StreamRef(region.start, length, region.rows, checksum, key[1])
        self._closed.setdefault(key, []).append(ref)
        region.start, region.schema, region.hasher = -1, b"", None

    def finish(self) -> PartitionIndex:
        """Close every open stream; the index, each partition's streams in file order."""
        for key, region in self._regions.items():
            if region.start >= 0:
                self._close(key, region)
        index: PartitionIndex = {}
        for (p, _), refs in sorted(self._closed.items()):
            index.setdefault(p, []).extend(refs)
        for refs in index.values():
            refs.sort(key=lambda r: r.offset)
        size = os.fstat(self._fd).st_size
        self.hole_bytes = size - sum(r.length for refs in index.values() for r in refs)
        return index


def _batches(rows: Rows, max_rows: int) -> list[pa.RecordBatch]:
    """``rows`` as record batches of at most ``max_rows`` rows (0: no bound)."""
    if isinstance(rows, pa.RecordBatch):
        if not max_rows or rows.num_rows <= max_rows:
            return [rows]
        rows = pa.Table.from_batches([rows])
    batches: list[pa.RecordBatch] = rows.to_batches(max_chunksize=max_rows or None)
    return batches


def _stream_bytes(
    schema: pa.Schema, batches: Sequence[pa.RecordBatch], options: pa.ipc.IpcWriteOptions
) -> pa.Buffer:
    """``batches`` as one Arrow IPC stream, written by Arrow's stream writer into memory."""
    memory = pa.BufferOutputStream()
    with pa.ipc.new_stream(memory, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return memory.getvalue()


def _ascending_nonempty(
    streams: Iterable[tuple[int, Rows]],
) -> Iterator[tuple[int, Rows]]:
    """``streams`` without the empty ones; refused unless their ids ascend."""
    last = -1
    for sid, table in streams:
        if sid <= last:
            raise ValueError(f"stream {sid} after stream {last}: give ascending ids")
        last = sid
        if table.num_rows:
            yield sid, table


class _ChecksummingSink(io.RawIOBase):
    """A write-only view of ``file`` that counts and checksums what passes through
    (the same :func:`stream_checksum` as of the bytes written)."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__()
        self._file = file
        self._hash = _stream_hasher()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._file.write(view)
        self.size += view.nbytes
        return view.nbytes

    @property
    def checksum(self) -> int:
        return int(self._hash.intdigest())


def _regroup(
    src: str, dst: str, runs: Sequence[Mapping[int, Sequence[StreamRef]]]
) -> PartitionIndex:
    """Copy every run's streams into ``dst`` so each partition's streams are contiguous."""
    partitions = sorted({p for run in runs for p in run})
    index: PartitionIndex = {}
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for p in partitions:
            moved: list[StreamRef] = []
            for run in runs:
                for ref in run.get(p, ()):
                    new_offset = fout.tell()
                    fin.seek(ref.offset)
                    remaining = ref.length
                    while remaining:
                        chunk = fin.read(min(remaining, _COPY_CHUNK))
                        if not chunk:
                            raise CorruptSegmentError(f"spill file {src} ended early")
                        fout.write(chunk)
                        remaining -= len(chunk)
                    moved.append(replace(ref, offset=new_offset))
            index[p] = moved
    return index


def _schema_length(head: bytes) -> int:
    """Bytes of the schema message that starts an IPC stream (``head``: its first bytes)."""
    if len(head) < 8 or head[:4] != _EOS[:4]:
        return -1
    return 8 + int.from_bytes(head[4:8], "little")


@functools.lru_cache(maxsize=64)
def _joinable(schema_message: bytes) -> bool:
    """Whether streams with this schema can share one: no dictionaries, which a
    stream sends once (a second stream's would be a replacement)."""
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(schema_message))
    except (pa.ArrowInvalid, OSError):
        return False
    return not any(pa.types.is_dictionary(f.type) for f in schema)


def _join(
    src: str,
    dst: str,
    runs: Sequence[Mapping[int, Sequence[StreamRef]]],
    last: Iterable[tuple[tuple[int, int], _Stream]] = (),
) -> PartitionIndex:
    """Copy every run's streams into ``dst``, each (partition, bucket)'s streams as one stream.

    ``last`` is one more run, not spilled: ``((partition, bucket), stream)``
    in ascending order, each joined after the spilled runs'
    streams of its (partition, bucket), so its bytes are written only here.

    An Arrow IPC stream is its schema message, its batch messages (each padded
    to 8 bytes), then the end-of-stream marker; the batches carry their own
    compression. Streams with byte-identical schema messages are joined by
    keeping the first one's schema and every stream's batches, without
    decoding anything. A stream that cannot be joined to the one before it (a
    different schema, a dictionary) starts a stream of its own.
    """
    grouped: dict[tuple[int, int], list[StreamRef]] = {}
    for run in runs:
        for p, refs in run.items():
            for ref in refs:
                grouped.setdefault((p, ref.bucket), []).append(ref)
    index: PartitionIndex = {}
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)

    def spilled(ref: StreamRef) -> _Stream:
        data = os.pread(fd, ref.length, ref.offset)
        if len(data) != ref.length:
            raise CorruptSegmentError(f"spill file {src} ended early")
        return _Stream.of(data, ref.rows)

    def streams() -> Iterator[tuple[tuple[int, int], list[_Stream]]]:
        """Every (partition, bucket) in order with its streams, run by run."""
        pending = iter(last)
        nxt = next(pending, None)
        for key in sorted(grouped):
            while nxt is not None and nxt[0] < key:
                yield nxt[0], [nxt[1]]
                nxt = next(pending, None)
            parts = [spilled(r) for r in grouped[key]]
            if nxt is not None and nxt[0] == key:
                parts.append(nxt[1])
                nxt = next(pending, None)
            yield key, parts
        while nxt is not None:
            yield nxt[0], [nxt[1]]
            nxt = next(pending, None)

    try:
        with open(dst, "wb") as out:

            def write(p: int, bucket: int, parts: list[Any], rows: int) -> None:
                offset = out.tell()
                hasher = _stream_hasher()
                for part in parts:
                    hasher.update(part)
                    out.write(part)
                ref = StreamRef(offset, out.tell() - offset, rows, int(hasher.intdigest()), bucket)
                index.setdefault(p, []).append(ref)

            for (p, bucket), sources in streams():
                parts: list[Any] = []  # the stream being joined, less its end marker
                schema = b""
                rows = 0
                for stream in sources:
                    if parts and stream.schema == schema:
                        parts += stream.body
                        rows += stream.rows
                        continue
                    if parts:
                        write(p, bucket, [*parts, _EOS], rows)
                        parts = []
                    if stream.schema and _joinable(stream.schema):
                        schema, rows = stream.schema, stream.rows
                        parts = [schema, *stream.body]
                    else:  # copied as it is, joined to nothing
                        write(p, bucket, stream.parts(), stream.rows)
                if parts:
                    write(p, bucket, [*parts, _EOS], rows)
    finally:
        os.close(fd)
    return index


def contiguous(refs: Sequence[StreamRef]) -> list[list[StreamRef]]:
    """``refs`` cut into runs of streams that follow each other in the file."""
    groups: list[list[StreamRef]] = []
    for ref in refs:
        if groups and groups[-1][-1].end == ref.offset:
            groups[-1].append(ref)
        else:
            groups.append([ref])
    return groups


def read_segment(
    store: FsspecStore,
    path: str,
    refs: Sequence[StreamRef],
    *,
    verify: bool = True,
    whole_read_limit: int = WHOLE_READ_LIMIT,
    buffer_bytes: int = STREAM_BUFFER,
) -> list[Iterator[pa.RecordBatch]]:
    """The sorted runs of one partition in one map output, as batch iterators.

    A segment up to ``whole_read_limit`` bytes is fetched with one range read;
    a larger one is streamed from an open file, a batch at a time. With
    ``verify``, each stream's checksum is checked and a mismatch raises
    :class:`CorruptSegmentError` (before any of a small segment's rows are used;
    for a streamed segment, when its end is reached). ``buffer_bytes`` is the
    read buffer of each streamed run: a reducer merging many runs passes less.
    """
    if store.is_local and refs:
        return _read_local(store, [(path, refs)], verify, whole_read_limit, buffer_bytes)
    runs: list[Iterator[pa.RecordBatch]] = []
    try:
        for group in contiguous(refs):
            runs += _read_contiguous(store, path, group, verify, whole_read_limit, buffer_bytes)
    except CorruptSegmentError as exc:
        exc.data_path = path
        raise
    return runs


def _read_contiguous(
    store: FsspecStore,
    path: str,
    refs: Sequence[StreamRef],
    verify: bool,
    whole_read_limit: int,
    buffer_bytes: int,
) -> list[Iterator[pa.RecordBatch]]:
    start = refs[0].offset
    end = refs[-1].end
    total = end - start
    if total <= whole_read_limit:
        try:
            data = store.view_range(path, start, total)
        except ShortReadError as exc:
            raise _truncated(store, path, start, end) from exc
        return _runs_of(data, store.url(path), refs, verify)
    return [_stream_batches(store, path, ref, verify, buffer_bytes) for ref in refs]


def _truncated(store: FsspecStore, path: str, start: int, end: int) -> CorruptSegmentError:
    exc = CorruptSegmentError(
        f"map output {store.url(path)} is truncated: its commit record puts "
        f"partition data at bytes {start}-{end}; its map task must run again"
    )
    exc.data_path = path
    return exc


def _runs_of(
    data: pa.Buffer, url: str, refs: Sequence[StreamRef], verify: bool
) -> list[Iterator[pa.RecordBatch]]:
    """The runs of contiguous streams ``refs`` whose bytes are ``data``, checked if ``verify``."""
    start = refs[0].offset
    runs: list[Iterator[pa.RecordBatch]] = []
    for ref in refs:
        piece = data.slice(ref.offset - start, ref.length)  # zero-copy
        if verify and stream_checksum(piece) != ref.checksum:
            raise CorruptSegmentError(
                f"map output {url} is damaged: checksum mismatch in the "
                f"stream at bytes {ref.offset}-{ref.offset + ref.length}"
            )
        runs.append(_batches_from(piece, url, ref))
    return runs


def _read_local(
    store: FsspecStore,
    segments: Sequence[tuple[str, Sequence[StreamRef]]],
    verify: bool,
    whole_read_limit: int,
    buffer_bytes: int,
) -> list[Iterator[pa.RecordBatch]]:
    """:func:`read_segments` on local disk: whole reads through :class:`ReadAhead`.

    Every group of contiguous streams up to ``whole_read_limit`` bytes is one
    range, read ahead by a few threads while the ranges before it are
    checksummed; larger groups are streamed as elsewhere.
    """
    (runs,) = _read_local_pieces(
        store, [segments], verify, whole_read_limit, buffer_bytes, readahead.DEFAULT_BUDGET
    )
    return runs


def _read_local_pieces(
    store: FsspecStore,
    pieces: Sequence[Sequence[tuple[str, Sequence[StreamRef]]]],
    verify: bool,
    whole_read_limit: int,
    buffer_bytes: int,
    budget: int,
) -> Iterator[list[Iterator[pa.RecordBatch]]]:
    """The runs of each piece in turn, every piece's whole reads in one :class:`ReadAhead`."""
    plans: list[list[tuple[str, list[StreamRef], bool]]] = []
    ranges: list[readahead.Range] = []
    for segments in pieces:
        plan: list[tuple[str, list[StreamRef], bool]] = []
        for path, refs in segments:
            os_path = store.local_path(path)
            assert os_path is not None
            for group in contiguous(refs):
                whole = group[-1].end - group[0].offset <= whole_read_limit
                plan.append((path, group, whole))
                if whole:
                    ranges.append(
                        readahead.Range(os_path, group[0].offset, group[-1].end - group[0].offset)
                    )
        plans.append(plan)
    with readahead.ReadAhead(ranges, budget=budget) as ahead:
        buffers = iter(ahead)
        for plan in plans:
            runs: list[Iterator[pa.RecordBatch]] = []
            for path, group, whole in plan:
                if not whole:
                    runs += [_stream_batches(store, path, r, verify, buffer_bytes) for r in group]
                    continue
                try:
                    data = next(buffers)
                    runs += _runs_of(data, store.url(path), group, verify)
                except ShortReadError as exc:
                    raise _truncated(store, path, group[0].offset, group[-1].end) from exc
                except CorruptSegmentError as exc:
                    exc.data_path = path
                    raise
            yield runs


def read_pieces(
    store: FsspecStore,
    pieces: Sequence[Sequence[tuple[str, Sequence[StreamRef]]]],
    *,
    verify: bool = True,
    whole_read_limit: int = WHOLE_READ_LIMIT,
    buffer_bytes: int = STREAM_BUFFER,
    budget: int = readahead.DEFAULT_BUDGET,
) -> Iterator[list[Iterator[pa.RecordBatch]]]:
    """:func:`read_segments` of each piece in turn, reading the next while the caller
    uses the current one.

    A reducer that takes its partition in pieces (the unsorted shuffle: a range
    of hash buckets of every map output at a time) used to read each piece only
    once it was done with the one before, so the disk stood idle while it
    reduced. On local disk one :class:`shuffle.readahead.ReadAhead` (one reader
    pool per task) covers every piece's ranges: while the caller holds piece
    ``k``, up to ``budget`` bytes of the pieces after it are read. Elsewhere
    each piece is fetched as :func:`read_segments` fetches, when it is asked for.
    Close the iterator (or exhaust it) to stop the readers.
    """
    if store.is_local:
        yield from _read_local_pieces(store, pieces, verify, whole_read_limit, buffer_bytes, budget)
        return
    for segments in pieces:
        yield read_segments(
            store,
            segments,
            verify=verify,
            whole_read_limit=whole_read_limit,
            buffer_bytes=buffer_bytes,
        )


def read_segments(
    store: FsspecStore,
    segments: Sequence[tuple[str, Sequence[StreamRef]]],
    *,
    verify: bool = True,
    whole_read_limit: int = WHOLE_READ_LIMIT,
    buffer_bytes: int = STREAM_BUFFER,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> list[Iterator[pa.RecordBatch]]:
    """:func:`read_segment` over many map outputs, fetching up to ``max_in_flight`` at once.

    A reducer needs one segment from every map output; on an object store each
    fetch is a round trip, so they go out concurrently (bounded, to keep the
    memory of whole reads and the store's connection pool in check). On local
    disk the whole reads go through :class:`shuffle.readahead.ReadAhead`: a
    few reader threads keep the disk busy with the next segments while this
    thread checksums the current one. Runs come back in the order of
    ``segments``; the first error raised by any fetch is raised here.
    """

    def fetch(segment: tuple[str, Sequence[StreamRef]]) -> list[Iterator[pa.RecordBatch]]:
        path, refs = segment
        return read_segment(
            store,
            path,
            refs,
            verify=verify,
            whole_read_limit=whole_read_limit,
            buffer_bytes=buffer_bytes,
        )

    if store.is_local:
        return _read_local(store, segments, verify, whole_read_limit, buffer_bytes)
    if len(segments) <= 1 or max_in_flight <= 1:
        fetched = [fetch(seg) for seg in segments]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(max_in_flight, len(segments))) as pool:
            fetched = list(pool.map(fetch, segments))
    return [run for runs in fetched for run in runs]


def _batches_from(source: Any, url: str, ref: StreamRef) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa.ipc.open_stream(source)
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptSegmentError(
            f"map output {url} is damaged: cannot decode the stream at bytes "
            f"{ref.offset}-{ref.offset + ref.length} ({exc})"
        ) from exc
    if rows != ref.rows:
        raise CorruptSegmentError(
            f"map output {url} is damaged: the stream at bytes {ref.offset}-"
            f"{ref.offset + ref.length} holds {rows} rows, its commit record says {ref.rows}"
        )


class _RangeReader(io.RawIOBase):
    """A read-only file view of ``[offset, offset+length)`` that checksums as it goes.

    It seeks before every read: a filesystem may hand every opener of a path the
    same file object (fsspec's memory:// does), shared with the other runs' views.
    """

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self._f = f
        self._pos = offset
        self._left = length
        self._hash = _stream_hasher()

    def _read(self, n: int) -> bytes:
        self._f.seek(self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        self._left -= len(data)
        self._hash.update(data)
        return data

    @property
    def checksum(self) -> int:
        """:func:`stream_checksum` of the bytes read so far."""
        return int(self._hash.intdigest())

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        want = min(len(b), self._left)
        if want <= 0:
            return 0
        data = self._read(want)
        n = len(data)
        b[:n] = data
        return n

    def drain(self) -> None:
        while self._left > 0:
            if not self._read(min(self._left, _COPY_CHUNK)):
                break


def _stream_batches(
    store: FsspecStore, path: str, ref: StreamRef, verify: bool, buffer_bytes: int
) -> Iterator[pa.RecordBatch]:
    try:
        yield from _stream_checked(store, path, ref, verify, buffer_bytes)
    except CorruptSegmentError as exc:
        exc.data_path = path
        raise


def _stream_checked(
    store: FsspecStore, path: str, ref: StreamRef, verify: bool, buffer_bytes: int
) -> Iterator[pa.RecordBatch]:
    url = store.url(path)
    with store.open_read(path) as f:
        view = _RangeReader(f, ref.offset, ref.length)
        yield from _batches_from(
            io.BufferedReader(view, buffer_size=max(4096, buffer_bytes)), url, ref
        )
        view.drain()
        if verify and view.checksum != ref.checksum:
            raise CorruptSegmentError(
                f"map output {url} is damaged: checksum mismatch in the stream at bytes "
                f"{ref.offset}-{ref.offset + ref.length}"
            )
