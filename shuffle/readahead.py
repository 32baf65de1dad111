"""Read byte ranges of local files ahead of use, with bounded memory.

Called by the reducer's local read path (:func:`shuffle.mapfile.read_segments`)
and meant for the shuffle server of the Kubernetes backend too: both know a
list of ``(file, offset, length)`` ranges they will need, in order, and want
the disk busy with the next ones while they use the current one. Nothing here
assumes the reader ran the map task or is on its node; it reads files.

In ``pread`` mode a small pool of reader threads issues one ``os.preadv`` per range (the GIL is
released while the kernel reads), each into a fresh Arrow buffer, and hands
the buffers out in the order of the ranges. At most ``budget`` bytes are read
ahead of the consumer at a time (a single range larger than that is read
alone), so the memory held for read-ahead is bounded whatever the number of
ranges. Buffers handed out belong to the caller: Arrow arrays decoded from
them refer to their bytes without copying, so they are not recycled.

Why not the memory map the reducer used before: a map touches a cold file
one page fault at a time, on one thread, and each fault reads around the
page (the device's read-ahead window, 8 MiB here) whatever the range's size,
so a reducer of 256 half-megabyte segments waited on small synchronous
reads, many of them of other partitions' bytes (issue 25: 70 MB/s from a
disk that reads 570-860 MB/s). But where a range is already in the page
cache, the map wins: it costs no copy and no task memory (a 1 GiB shuffle,
cached, reduced in 0.33-0.77 s mapped against 0.73-1.00 s copied). So the
default mode (``auto``) asks the kernel, range by range, whether every page
of the range is resident (:func:`resident`: ``mincore`` on the file's
mapping) and maps the resident ones; the rest the readers read a budget
ahead of their turn with ``O_DIRECT``, straight from the device into the
task's buffers (:func:`direct_ranges`). Reading them into the page cache
first (``POSIX_FADV_WILLNEED``, then a map: the ``advise`` mode, the default
until the sixth round of issue 25) kept them out of the task's memory, but
once the data outgrew memory the kernel spent the reducers' time filling,
mapping, unmapping and reclaiming page cache, and pages read ahead were
evicted before use and read again. The variants measured are kept behind
:data:`MODE` (see README, "The shuffle beyond memory").
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pyarrow as pa

from shuffle.store import ShortReadError, translate_errors

#: Reader threads per read-ahead. A reducer reads while the other workers
#: compute, so two requests in flight per reader keep the disk busy: reading
#: 4 GiB cold in 128 KiB ranges, two processes, gave 1 reader 1285 MB/s, 2
#: 958-1294, 4 675-1161, 8 831-1008 (python -m bench.read_variants, a machine
#: at load 8-11; README, "The shuffle beyond memory").
DEFAULT_READERS = 2

#: Consecutive ranges a reader reads in one go, into one buffer, up to this size.
BATCH_BYTES = 1 << 20

#: Bytes read ahead of the consumer unless the caller says otherwise.
DEFAULT_BUDGET = 64 * 2**20

#: At most this much is read ahead with ``O_DIRECT``: it is the task's own memory.
DIRECT_BUDGET = 8 * 2**20

#: How ranges are read: ``auto`` (a range whose pages are all in the page cache
#: is memory-mapped at once; any other the reader pool reads with ``O_DIRECT``
#: into the task's own buffers, past the page cache, :func:`direct_ranges`),
#: ``advise`` (the same for resident ranges; for the others the readers ask the
#: kernel to read them, ``POSIX_FADV_WILLNEED``, ahead of their turn, and they
#: are mapped then: ``auto`` until the sixth round of issue 25), ``pread``
#: (the reader pool ``preadv``s every range into a buffer of the task's own,
#: through the page cache), ``fadvise`` (``WILLNEED`` then a map for every
#: range, resident or not) or ``mmap`` (a memory map, no read-ahead: the read
#: path before issue 25). At 32 GiB, 256 x 256, ``auto`` read the cold ranges
#: with ``O_DIRECT`` in a reduce stage of 19.6-21.1 s against 24.7-26.9
#: ``advise``d, and fetched 14.3-15.0 GB from the device against 26.0-26.7 (pages
#: read ahead under memory pressure were evicted before use, and read again by
#: the faults); its reducers held 31 MB more anonymous memory (166 MB against
#: 135), the cold part of the piece in use and :data:`DIRECT_BUDGET`. The third
#: round had tried ``pread`` for cold ranges: it held up to the whole budget and
#: the piece as the reducer's memory (209 MB peak against 123 advised) and was
#: not faster (README, "The shuffle beyond memory"). ``MRK8S_READ_AHEAD``
#: overrides the mode, for the benchmark's comparison of the variants.
MODES = ("auto", "advise", "pread", "fadvise", "mmap")
MODE = os.environ.get("MRK8S_READ_AHEAD", "auto")
if MODE not in MODES:
    raise ValueError(f"MRK8S_READ_AHEAD={MODE!r}: give one of {', '.join(MODES)}")


@dataclass(frozen=True, slots=True)
class Range:
    """``length`` bytes at ``offset`` of the local file ``path`` (an OS path)."""

    path: str
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def _short(r: Range, got: int, size: int | None = None) -> ShortReadError:
    has = f"the file has {size} bytes" if size is not None else f"got {got}"
    return ShortReadError(
        f"short read from {r.path}: wanted {r.length} bytes at offset {r.offset}, {has}; "
        "the file was truncated or is being rewritten"
    )


class _FileAtATime:
    """Read-only descriptors of the files of consecutive ranges, one open at a
    time: ranges of one file share its descriptor, and a range of another file
    closes it. With ``advice``, each file is opened with that
    ``posix_fadvise`` advice over all of it; ``flags`` are more flags to open
    with (with ``O_DIRECT``, :meth:`fd` is -1 for a file whose filesystem
    refuses it, as tmpfs does). A context manager: the last one is closed at
    the end of the block."""

    def __init__(self, advice: int | None = None, flags: int = 0) -> None:
        self._advice = advice
        self._flags = flags
        self._fd = -1
        self._path = ""

    def fd(self, path: str) -> int:
        if path != self._path:
            self.close()
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | self._flags)
            except OSError as exc:
                if not (self._flags & os.O_DIRECT and exc.errno == errno.EINVAL):
                    raise
            self._path = path
            if self._advice is not None and self._fd >= 0:
                os.posix_fadvise(self._fd, 0, 0, self._advice)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path = -1, ""

    def __enter__(self) -> _FileAtATime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pread_ranges(ranges: Sequence[Range]) -> list[pa.Buffer]:
    """The bytes of ``ranges``, one ``preadv`` each (more if the kernel returns less),
    into slices of one fresh Arrow buffer.

    Each file is opened with ``POSIX_FADV_RANDOM``: the kernel reads exactly
    the ranges asked for. Without it, a range whose preceding bytes are cached
    (the previous hash bucket, read a moment before) looks like a sequential
    stream and the kernel reads up to the device's read-ahead window (8 MiB
    here) past it, other partitions' bytes that are evicted before their
    reducer comes: the 32 GiB reduce stage read 54 GB from the disk for 36 GB
    of map outputs.
    """
    buf = pa.allocate_buffer(sum(r.length for r in ranges))
    view = memoryview(buf)  # Arrow buffers export the buffer protocol, writable here
    out = []
    at = 0
    with _FileAtATime(os.POSIX_FADV_RANDOM) as files:
        for r in ranges:
            out.append(buf.slice(at, r.length))
            if r.length:
                with translate_errors(r.path, "read"):
                    fd = files.fd(r.path)
                    done = 0
                    while done < r.length:
                        n = os.preadv(fd, [view[at + done : at + r.length]], r.offset + done)
                        if n == 0:
                            raise _short(r, done)
                        done += n
            at += r.length
    return out


#: What ``O_DIRECT`` reads align to: offsets, lengths and memory (the page
#: size, a multiple of any device's logical block size).
_DIRECT_ALIGN = 4096


def direct_ranges(ranges: Sequence[Range]) -> list[pa.Buffer]:
    """The bytes of ``ranges`` read with ``O_DIRECT``, into slices of one fresh Arrow buffer.

    Each range is widened to whole pages (:data:`_DIRECT_ALIGN`); ranges of a
    file whose pages touch are read as one span. The device writes into the
    buffer itself: no page cache to fill, then reclaim, no copy, no mapping
    (in the 32 GiB reduce stage of issue 25, the cold ranges advised and
    mapped, the kernel took 38% of the machine: page faults, read-ahead,
    ``munmap``, reclaim). A file whose filesystem has no ``O_DIRECT`` is read
    with ordinary reads of the same spans.
    """
    spans: list[tuple[str, int, int]] = []  # (path, start, end), page-aligned
    where: list[tuple[int, int]] = []  # per range: (its span, its offset within the span)
    for r in ranges:
        start = r.offset - r.offset % _DIRECT_ALIGN
        end = -(-r.end // _DIRECT_ALIGN) * _DIRECT_ALIGN
        if spans and spans[-1][0] == r.path and spans[-1][1] <= start <= spans[-1][2]:
            path, first, last = spans[-1]
            spans[-1] = (path, first, max(last, end))
        else:
            spans.append((r.path, start, end))
        where.append((len(spans) - 1, r.offset - spans[-1][1]))
    total = sum(end - start for _, start, end in spans)
    raw = pa.allocate_buffer(total + _DIRECT_ALIGN)
    pad = -raw.address % _DIRECT_ALIGN  # where the buffer's first aligned byte is
    view = memoryview(raw)[pad : pad + total]  # (a slice of an Arrow buffer is read-only)
    at: list[int] = []  # per span: where it starts in the aligned view, and the bytes read
    got: list[int] = []
    pos = 0
    with _FileAtATime(flags=os.O_DIRECT) as direct, _FileAtATime() as buffered:
        for path, start, end in spans:
            with translate_errors(path, "read"):
                fd = direct.fd(path)
                if fd < 0:  # no O_DIRECT on this filesystem: an ordinary read
                    fd = buffered.fd(path)
                target = view[pos : pos + end - start]
                done = 0
                while done < end - start:
                    n = os.preadv(fd, [target[done:]], start + done)
                    if n == 0:
                        break  # the end of the file, within the span's last page or before
                    done += n
            at.append(pos)
            got.append(done)
            pos += end - start
    out = []
    for r, (span, offset) in zip(ranges, where, strict=True):
        if offset + r.length > got[span]:
            raise _short(r, max(0, got[span] - offset))
        out.append(raw.slice(pad + at[span] + offset, r.length))
    return out


def _pread_batch(ranges: Sequence[Range]) -> tuple[list[pa.Buffer], BaseException | None]:
    """:func:`pread_ranges`, or the ranges before the first that failed and its error."""
    return _read_batch(pread_ranges, ranges)


def _direct_batch(ranges: Sequence[Range]) -> tuple[list[pa.Buffer], BaseException | None]:
    """:func:`direct_ranges`, or the ranges before the first that failed and its error."""
    return _read_batch(direct_ranges, ranges)


def _read_batch(
    read: Callable[[Sequence[Range]], list[pa.Buffer]], ranges: Sequence[Range]
) -> tuple[list[pa.Buffer], BaseException | None]:
    """``read(ranges)``, or the ranges before the first that failed and its error."""
    try:
        return read(ranges), None
    except Exception as exc:  # raised at the failed range's turn, after the good ones
        good = []
        for r in ranges:
            try:
                good.append(pread_range(r))
            except Exception:
                break
        return good, exc


def _advise_batch(ranges: Sequence[Range]) -> tuple[None, BaseException | None]:
    try:
        advise_ranges(ranges)
    except Exception as exc:
        return None, exc
    return None, None


def pread_range(r: Range) -> pa.Buffer:
    """The bytes of ``r`` in a fresh Arrow buffer."""
    return pread_ranges([r])[0]


def advise_ranges(ranges: Sequence[Range]) -> None:
    """Ask the kernel to start reading ``ranges`` into the page cache (returns before).

    A file is opened once for consecutive ranges of it (a batch holds several
    ranges of one map output when its buckets are not contiguous).
    """
    with _FileAtATime() as files:
        for r in ranges:
            if r.length:
                with translate_errors(r.path, "read"):
                    os.posix_fadvise(files.fd(r.path), r.offset, r.length, os.POSIX_FADV_WILLNEED)


_mincore: Any
try:
    _mincore = ctypes.CDLL(None, use_errno=True).mincore
    _mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    _mincore.restype = ctypes.c_int
except (OSError, AttributeError):  # no mincore(2) here: nothing is taken as resident
    _mincore = None

_PAGE = mmap.PAGESIZE
#: bytes.translate table keeping only bit 0 of a mincore entry (the others are reserved).
_RESIDENT_BIT = bytes(i & 1 for i in range(256))


def resident(buf: pa.Buffer) -> bool:
    """Whether every page under ``buf``, a view of a memory-mapped file, is in the page cache.

    One ``mincore(2)`` call over the buffer's pages, which touches none of them:
    9 us for a cached 1 MiB range, against 99 us for ``preadv2(RWF_NOWAIT)``,
    which answers the same question by copying the range (medians of 2000, load
    4; README, "The shuffle beyond memory").
    """
    if _mincore is None or buf.size == 0:
        return _mincore is not None
    start = buf.address & ~(_PAGE - 1)
    length = buf.address + buf.size - start
    vec = ctypes.create_string_buffer((length + _PAGE - 1) // _PAGE)
    if _mincore(start, length, vec) != 0:
        return False
    return vec.raw.translate(_RESIDENT_BIT).count(0) == 0


class _Mapper:
    """Memory-maps ranges, keeping the last file's mapping for the next range of it.

    Python's ``mmap`` under an Arrow buffer, not ``pyarrow.memory_map``: Arrow
    advises ``WILLNEED`` on every range it hands out, which starts reading a
    cold range before :func:`resident` is asked about it.
    """

    def __init__(self) -> None:
        self._path = ""
        self._file: pa.Buffer | None = None

    def view(self, r: Range) -> pa.Buffer:
        """``r`` as a view of the mapped file (raises like :func:`map_range`)."""
        if r.length == 0:
            return pa.py_buffer(b"")
        if r.path != self._path or self._file is None:
            self._file = None
            with translate_errors(r.path, "read"), open(r.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < r.end:
                    raise _short(r, 0, size)
                self._file = pa.py_buffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            self._path = r.path
        if self._file.size < r.end:
            raise _short(r, 0, self._file.size)
        return self._file.slice(r.offset, r.length)  # keeps the mapping alive

    def close(self) -> None:
        self._file, self._path = None, ""


def map_range(r: Range) -> pa.Buffer:
    """``r`` as a view of the file memory-mapped (no copy; page cache, not task memory)."""
    if r.length == 0:
        return pa.py_buffer(b"")
    with translate_errors(r.path, "read"), pa.memory_map(r.path) as f:
        if f.size() < r.end:
            raise _short(r, 0, f.size())
        f.seek(r.offset)
        return f.read_buffer(r.length)  # keeps the mapping alive after close


class ReadAhead:
    """The bytes of ``ranges``, in order, read ahead by ``readers`` threads within ``budget``.

    Iterate to get one :class:`pyarrow.Buffer` per range. A failed read raises
    from the iteration, at its range's turn (:class:`ShortReadError` for a
    file shorter than its range, a :class:`shuffle.errors.StoreError` or
    :class:`FileNotFoundError` otherwise). Use as a context manager, or call
    :meth:`close`, to stop reading ahead when the rest is not wanted.

    A reader takes consecutive ranges up to ``batch_bytes`` at a time into one
    buffer (the ranges handed out are slices of it): a thread-pool task and an
    allocation per 64-128 KiB range took a sixth of a 256 x 256 reducer's CPU.
    ``held`` is the bytes of the batches not yet wholly handed out, ``peak_held``
    its peak: never above ``budget`` unless one batch (one range) is larger
    (``pread`` and ``auto`` modes). Ranges mapped ahead count too, though they hold
    page cache rather than buffers: a map made far ahead of use keeps its file
    mapped, and every page of it the reducer has touched counted in its RSS,
    for as long (a reducer walking all its pieces' ranges in one read-ahead
    had its whole partition mapped from the start).
    ``mapped`` and ``read`` count the ranges handed out as memory maps and as
    buffers the readers filled (in ``auto`` and ``advise`` modes, the choice made
    per range).
    """

    def __init__(
        self,
        ranges: Sequence[Range],
        *,
        budget: int = DEFAULT_BUDGET,
        readers: int = DEFAULT_READERS,
        batch_bytes: int = BATCH_BYTES,
        mode: str | None = None,
    ) -> None:
        self.mode = mode or MODE
        if self.mode not in MODES:
            raise ValueError(f"read-ahead mode {self.mode!r}: give one of {', '.join(MODES)}")
        self._ranges = list(ranges)
        if self.mode == "auto":  # what is read ahead is the task's own memory
            budget = min(budget, DIRECT_BUDGET)
        self._budget = max(1, budget)
        self._batch_bytes = batch_bytes
        self._pool = (
            ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="mrk8s-read")
            if self.mode != "mmap" and self._ranges
            else None
        )
        # Per batch: its ranges, its bytes held, and the future of its reads, or,
        # for a resident range in auto and advise modes, None and the range's mapped view.
        self._pending: deque[
            tuple[
                list[Range],
                int,
                Future[tuple[list[pa.Buffer] | None, BaseException | None]] | None,
                pa.Buffer | None,
            ]
        ] = deque()
        self._mapper = _Mapper()
        self._next = 0
        self.held = 0
        self.peak_held = 0
        self.mapped = 0
        self.read = 0

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop what is queued and wait for the reads under way (threads write into buffers)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._mapper.close()
        self.held = 0

    def _fill(self) -> None:
        """Queue batches of reads while they fit in the budget (always at least one)."""
        assert self._pool is not None
        read = {"pread": _pread_batch, "auto": _direct_batch}.get(self.mode, _advise_batch)
        while self._next < len(self._ranges):
            batch: list[Range] = []
            size = 0
            for r in self._ranges[self._next :]:
                if (batch or self._pending) and self.held + size + r.length > self._budget:
                    break
                if batch and size + r.length > self._batch_bytes:
                    break
                if self.mode in ("auto", "advise"):
                    view = self._resident_view(r)
                    if view is not None:
                        if not batch:  # mapped in turn, within the budget (see below)
                            self._pending.append(([r], r.length, None, view))
                            self._next += 1
                            self.held += r.length
                            continue
                        break  # read the batch before it first
                batch.append(r)
                size += r.length
            if not batch:
                return
            self._pending.append((batch, size, self._pool.submit(read, batch), None))
            self._next += len(batch)
            self.held += size
            self.peak_held = max(self.peak_held, self.held)

    def _resident_view(self, r: Range) -> pa.Buffer | None:
        """``r`` mapped if all its pages are in the page cache; else None (for the readers,
        which also raise any error in mapping it at the range's turn)."""
        try:
            view = self._mapper.view(r)
        except Exception:
            return None
        return view if resident(view) else None

    def __iter__(self) -> Iterator[pa.Buffer]:
        try:
            if self._pool is None:
                for r in self._ranges:
                    view = map_range(r)
                    self.mapped += 1
                    yield view
                return
            while True:
                self._fill()
                if not self._pending:
                    return
                batch, size, future, view = self._pending.popleft()
                if future is None:
                    self.mapped += 1
                    self.held -= size
                    yield view
                    continue
                data, error = future.result()
                if self.mode != "fadvise":
                    self.read += len(batch) if error is None else len(data or ())
                if data is None and error is None:  # advised: the pages are on their way
                    yield from map(self._mapper.view, batch)
                    self.held -= size
                    continue
                if data is not None:
                    yield from data
                else:  # fadvise failed: map what can be mapped, up to the bad range
                    for r in batch:
                        yield map_range(r)
                if error is not None:
                    raise error
                del data
                self.held -= size
        finally:
            self.close()
