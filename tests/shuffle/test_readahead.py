"""Tests for shuffle.readahead: byte ranges of local files read ahead within a budget.

The oracle for the bytes is Python slicing of the file's contents; for the
memory bound, Arrow's own count of the bytes its default pool has allocated
(``pyarrow.total_allocated_bytes``), which the reader's buffers come from; for
cold and warm reads, the kernel's count of bytes this process fetched from the
disk (``/proc/self/io``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shuffle import mapfile, readahead
from shuffle.errors import CorruptSegmentError, StoreError
from shuffle.mapfile import MapOutputWriter, read_segments
from shuffle.readahead import Range, ReadAhead
from shuffle.store import FsspecStore, ShortReadError


def write_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("mode", readahead.MODES)
@pytest.mark.parametrize("readers", [1, 3])
def test_every_range_comes_back_byte_exact_and_in_order(
    tmp_path: Path, mode: str, readers: int
) -> None:
    files = {tmp_path / f"f{i}": write_file(tmp_path / f"f{i}", 300_000 + i, i) for i in range(2)}
    rng = random.Random(5)
    ranges = []
    for _ in range(60):  # overlapping, out of order, across both files, some empty
        path = rng.choice(list(files))
        offset = rng.randrange(len(files[path]))
        ranges.append(Range(str(path), offset, rng.randrange(len(files[path]) - offset + 1)))
    ranges.append(Range(str(path), len(files[path]), 0))

    with ReadAhead(ranges, budget=64 << 10, readers=readers, mode=mode) as ahead:
        got = [buf.to_pybytes() for buf in ahead]

    expected = [files[Path(r.path)][r.offset : r.end] for r in ranges]
    assert got == expected


@pytest.mark.parametrize("batch_bytes", [1, readahead.BATCH_BYTES], ids=["range", "batch"])
def test_no_more_than_the_budget_is_read_ahead_of_the_consumer(
    tmp_path: Path, batch_bytes: int
) -> None:
    size, count, budget = 100_000, 40, 350_000
    path = tmp_path / "f"
    data = write_file(path, size * count, 1)
    ranges = [Range(str(path), i * size, size) for i in range(count)]
    base = pa.total_allocated_bytes()
    padding = 64 * (budget // size)  # Arrow rounds each allocation up to 64 bytes
    most = 0

    with ReadAhead(
        ranges, budget=budget, readers=4, batch_bytes=batch_bytes, mode="pread"
    ) as ahead:
        for i, buf in enumerate(ahead):
            time.sleep(0.01)  # the readers run ahead as far as they are allowed
            assert buf.to_pybytes() == data[i * size : (i + 1) * size]
            # Everything allocated: the range in use, the rest of its batch, what is ahead.
            allocated = pa.total_allocated_bytes() - base
            assert allocated <= budget + padding, f"{allocated} bytes held at range {i}"
            most = max(most, allocated)
            del buf  # the consumer is done with it

    # It did read ahead: three ranges fit in the budget, one in use and two more.
    assert 3 * size <= most <= 3 * size + padding
    assert pa.total_allocated_bytes() == base


def test_a_range_larger_than_the_budget_is_read_alone(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = write_file(path, 1 << 20, 2)
    ranges = [Range(str(path), 0, 600_000), Range(str(path), 600_000, 1000)]
    ahead = ReadAhead(ranges, budget=1000, mode="pread")
    assert [b.to_pybytes() for b in ahead] == [data[:600_000], data[600_000:601_000]]
    assert ahead.peak_held == 600_000


def read_from_disk() -> int:
    """Bytes this process has had fetched from the storage layer (all its threads)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lives on a file system that is only memory (no disk to read)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    return kind in ("tmpfs", "ramfs")


@pytest.mark.parametrize("mode", readahead.MODES)
def test_cold_and_warm_files_read_the_same_bytes(tmp_path: Path, mode: str) -> None:
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: there is no cold read")
    path = tmp_path / "f"
    data = write_file(path, 4 << 20, 3)
    ranges = [Range(str(path), i * (256 << 10), 256 << 10) for i in range(16)]
    drop_from_cache(path)

    before = read_from_disk()
    cold = b"".join(b.to_pybytes() for b in ReadAhead(ranges, budget=1 << 20, mode=mode))
    cold_read = read_from_disk() - before
    before = read_from_disk()
    warm = b"".join(b.to_pybytes() for b in ReadAhead(ranges, budget=1 << 20, mode=mode))
    warm_read = read_from_disk() - before

    assert cold == warm == data
    assert cold_read >= len(data)  # the first pass came from the disk...
    if mode == "auto":  # O_DIRECT: nothing was left in the page cache for the second
        assert warm_read >= len(data)
    else:
        assert warm_read == 0  # ...the second from the page cache


def test_a_range_past_the_end_of_the_file_raises_short_read_at_its_turn(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = write_file(path, 10_000, 4)
    ranges = [Range(str(path), 0, 5000), Range(str(path), 9000, 2000), Range(str(path), 0, 10)]
    for mode in readahead.MODES:
        got = []
        with pytest.raises(ShortReadError, match=r"wanted 2000 bytes at offset 9000") as caught:
            for buf in ReadAhead(ranges, mode=mode):
                got.append(buf.to_pybytes())
        assert got == [data[:5000]], mode
        assert isinstance(caught.value, StoreError)


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    for mode in readahead.MODES:
        with pytest.raises(FileNotFoundError):
            list(ReadAhead([Range(str(tmp_path / "nope"), 0, 10)], mode=mode))


def test_leaving_early_stops_the_readers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_file(path, 1 << 20, 5)
    ranges = [Range(str(path), i * 1024, 1024) for i in range(1024)]
    before = threading.active_count()
    with ReadAhead(ranges, budget=8192, readers=4) as ahead:
        for i, _ in enumerate(ahead):
            if i == 3:
                break
    assert threading.active_count() == before
    assert ahead.held == 0


def test_a_truncated_map_output_read_ahead_names_the_damaged_file(tmp_path: Path) -> None:
    store = FsspecStore(str(tmp_path / "store"))
    segments = []
    for m in range(3):
        writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
        writer.add_run({0: pa.table({"key": [f"k{m}-{i}" for i in range(500)], "v": [m] * 500})})
        index = writer.finish(store, f"map-{m}.arrow")
        segments.append((f"map-{m}.arrow", index[0]))
    local = store.local_path("map-1.arrow")
    assert local is not None
    os.truncate(local, segments[1][1][0].length - 10)

    with pytest.raises(CorruptSegmentError, match=r"map-1\.arrow is truncated") as caught:
        read_segments(store, segments)
    assert caught.value.data_path == "map-1.arrow"


def test_a_cold_read_fetches_the_ranges_asked_for_and_no_more(tmp_path: Path) -> None:
    """Every other 64 KiB of a cold file: the kernel must not read the gaps ahead."""
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: there is no cold read")
    path = tmp_path / "f"
    data = write_file(path, 8 << 20, 6)
    step = 64 << 10
    ranges = [Range(str(path), at, step) for at in range(0, len(data), 2 * step)]
    drop_from_cache(path)

    before = read_from_disk()
    got = [b.to_pybytes() for b in ReadAhead(ranges, mode="pread")]
    fetched = read_from_disk() - before

    assert got == [data[r.offset : r.end] for r in ranges]
    assert len(data) // 2 <= fetched <= len(data) // 2 + step


@pytest.mark.parametrize("mode", ["auto", "advise"])
def test_auto_maps_the_ranges_in_the_page_cache_and_reads_the_others(
    tmp_path: Path, mode: str
) -> None:
    """Half a cold file warmed: its ranges are mapped, the other half's read, each in turn."""
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: every range is resident")
    path = tmp_path / "f"
    size, count = 256 << 10, 16
    data = write_file(path, size * count, 7)
    ranges = [Range(str(path), i * size, size) for i in range(count)]
    drop_from_cache(path)
    warm = {i for i in range(count) if i % 4 in (1, 2)}  # every other pair of ranges
    fd = os.open(path, os.O_RDONLY)
    try:  # with the kernel's read-ahead off, so that only these ranges come in
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for i in warm:
            assert os.pread(fd, size, i * size) == data[i * size : (i + 1) * size]
    finally:
        os.close(fd)

    took = []
    got = []
    before = read_from_disk()
    with ReadAhead(ranges, budget=1 << 20, mode=mode) as ahead:
        for buf in ahead:  # a counter moves just before its range is handed out
            took.append("map" if ahead.mapped > took.count("map") else "read")
            got.append(buf.to_pybytes())
    fetched = read_from_disk() - before

    assert got == [data[r.offset : r.end] for r in ranges]
    assert took == ["map" if i in warm else "read" for i in range(count)]
    assert (ahead.mapped, ahead.read) == (len(warm), count - len(warm))
    assert (count - len(warm)) * size <= fetched <= (count - len(warm) + 1) * size


def test_direct_reads_whole_pages_past_the_page_cache(tmp_path: Path) -> None:
    """Ranges at odd offsets, two sharing a page, one ending in the file's last partial
    page: the bytes asked for, fetched from the disk as the pages under them, no more,
    and none of it left in the page cache."""
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: there is no O_DIRECT")
    path = tmp_path / "f"
    page = 4096
    data = write_file(path, 64 * page + 100, 8)
    ranges = [
        Range(str(path), 3 * page + 5, 2 * page),  # pages 3-5
        Range(str(path), 5 * page + 10, 100),  # page 5 again: one read with the first
        Range(str(path), 20 * page + 1, 0),
        Range(str(path), 40 * page - 7, 7 + page),  # pages 39-40
        Range(str(path), 64 * page + 50, 50),  # the last, partial page
    ]
    drop_from_cache(path)

    before = read_from_disk()
    got = readahead.direct_ranges(ranges)
    fetched = read_from_disk() - before

    assert [b.to_pybytes() for b in got] == [data[r.offset : r.end] for r in ranges]
    assert (3 + 1 + 2 + 1) * page <= fetched <= (3 + 1 + 2 + 1) * page + page
    with open(path, "rb") as f:  # Python's map: Arrow's would ask the kernel to read ahead
        mapped = pa.py_buffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    assert not any(readahead.resident(mapped.slice(i * page, 100)) for i in range(65))
    with pytest.raises(ShortReadError, match=r"wanted 60 bytes at offset 262194, got 50"):
        readahead.direct_ranges([Range(str(path), 64 * page + 50, 60)])


def test_resident_asks_the_kernel_page_by_page(tmp_path: Path) -> None:
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: every page is resident")
    path = tmp_path / "f"
    write_file(path, 1 << 20, 8)
    drop_from_cache(path)
    fd = os.open(path, os.O_RDONLY)
    try:  # one page, 600_000 // 4096 = page 146, comes into the cache, and no other
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        assert len(os.pread(fd, 1, 600_000)) == 1
    finally:
        os.close(fd)
    mapper = readahead._Mapper()
    at = {
        (o, n): mapper.view(Range(str(path), o, n))
        for o, n in [(0, 4096), (598_016, 4096), (598_016, 8192), (599_000, 2000)]
    }
    assert not readahead.resident(at[0, 4096])
    assert readahead.resident(at[598_016, 4096])
    assert not readahead.resident(at[598_016, 8192])  # its second page is not
    assert readahead.resident(at[599_000, 2000])  # within the page, unaligned


def write_map_outputs(store: FsspecStore, tmp_path: Path, count: int) -> list[tuple[str, Any]]:
    """``count`` map outputs of one partition, 1000 rows of 200 random bytes each."""
    segments = []
    rng = random.Random(8)
    for m in range(count):
        writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
        keys = list(range(m * 1000, (m + 1) * 1000))
        table = pa.table({"key": keys, "v": [rng.randbytes(200) for _ in keys]})
        writer.add_run({0: table})
        segments.append((f"map-{m}.arrow", writer.finish(store, f"map-{m}.arrow")[0]))
    return segments


def rows_of_runs(runs: list[Any]) -> list[tuple[int, bytes]]:
    return [
        (k, v)
        for run in runs
        for batch in run
        for k, v in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
    ]


def test_read_pieces_reads_the_next_piece_while_the_caller_holds_this_one(
    tmp_path: Path,
) -> None:
    """Cold map outputs in three pieces: piece 2 and 3 come from the disk before they are
    asked for (the reducer used to read a piece only once it was done with the last)."""
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: there is no cold read")
    store = FsspecStore(str(tmp_path / "store"))
    segments = write_map_outputs(store, tmp_path, 6)
    for path, _ in segments:
        local = store.local_path(path)
        assert local is not None
        drop_from_cache(Path(local))
    pieces = [segments[0:2], segments[2:4], segments[4:6]]
    total = sum(r.length for _, refs in segments for r in refs)
    first_piece = sum(r.length for _, refs in pieces[0] for r in refs)

    before = read_from_disk()
    got = []
    with contextlib.closing(mapfile.read_pieces(store, pieces, budget=1 << 30)) as each:
        got.append(rows_of_runs(next(each)))
        deadline = time.monotonic() + 10
        while read_from_disk() - before < total and time.monotonic() < deadline:
            time.sleep(0.01)  # holding piece 1, not asking for the next
        fetched_ahead = read_from_disk() - before
        got += [rows_of_runs(runs) for runs in each]

    assert fetched_ahead >= total > first_piece
    assert read_from_disk() - before < total + (1 << 20)  # nothing read twice
    want = [rows_of_runs(mapfile.read_segments(store, piece)) for piece in pieces]
    assert got == want
    assert [len(rows) for rows in got] == [2000, 2000, 2000]


def test_read_pieces_holds_no_more_than_its_budget_ahead(tmp_path: Path) -> None:
    """With a budget of one piece, the one after next is not read while the caller holds
    the first (memory stays bounded however many pieces there are)."""
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is in memory: there is no cold read")
    store = FsspecStore(str(tmp_path / "store"))
    segments = write_map_outputs(store, tmp_path, 6)
    for path, _ in segments:
        local = store.local_path(path)
        assert local is not None
        drop_from_cache(Path(local))
    pieces = [segments[0:2], segments[2:4], segments[4:6]]
    piece_bytes = [sum(r.length for _, refs in piece for r in refs) for piece in pieces]

    before = read_from_disk()
    with contextlib.closing(mapfile.read_pieces(store, pieces, budget=max(piece_bytes))) as each:
        next(each)
        time.sleep(0.5)
        fetched = read_from_disk() - before
    # Piece 1 and the next one's ranges within the budget; never the third piece.
    assert piece_bytes[0] < fetched <= piece_bytes[0] + piece_bytes[1] + (64 << 10)


def test_read_pieces_from_a_remote_store_gives_each_piece_in_turn(tmp_path: Path) -> None:
    local = FsspecStore(str(tmp_path / "store"))
    segments = write_map_outputs(local, tmp_path, 4)
    remote = FsspecStore("memory://read-pieces-test")
    for path, _ in segments:
        with open(local.local_path(path) or "", "rb") as f:
            remote.fs.pipe(remote.url(path), f.read())
    pieces = [segments[0:1], segments[1:4]]
    got = [rows_of_runs(runs) for runs in mapfile.read_pieces(remote, pieces)]
    assert got == [rows_of_runs(mapfile.read_segments(local, piece)) for piece in pieces]
    assert [len(rows) for rows in got] == [1000, 3000]


def mapped_files(paths: list[Path]) -> int:
    """How many of ``paths`` this process has memory-mapped now (``/proc/self/maps``)."""
    names = {str(p) for p in paths}
    with open("/proc/self/maps") as f:
        return len({line.split(maxsplit=5)[-1].strip() for line in f} & names)


def test_mapped_ranges_do_not_outlive_their_buffers(tmp_path: Path) -> None:
    """Cached files are mapped within the budget, and a map goes once the caller drops
    its ranges: a reducer walking every map output piece by piece in one read-ahead
    keeps mapped no more than it holds and the budget allows (mapping every resident
    range at once doubled a 4 GiB hash run's peak RSS)."""
    paths = [tmp_path / f"f{i}" for i in range(8)]
    for i, path in enumerate(paths):
        write_file(path, 64 << 10, i)
        path.read_bytes()  # in the page cache: auto mode maps it
    ranges = [Range(str(p), 0, 64 << 10) for p in paths]
    held = []
    with ReadAhead(ranges, budget=64 << 10, mode="auto") as ahead:
        for i, buf in enumerate(ahead):
            assert buf.to_pybytes() == paths[i].read_bytes()
            del buf
            held.append(mapped_files(paths))  # before the next range is asked for
    assert ahead.mapped == len(paths)
    assert max(held) <= 1  # at most the last file, kept for its next range
