"""Tests for shuffle.mapfile: writing one map-output file per task and reading segments back.

Every test runs on each store (local disk and fsspec's memory://). The oracle
for the layout is arithmetic on the file's own bytes (offsets, lengths,
``xxhash.xxh3_64`` of each range); the oracle for the contents is the list of
rows the test put in, compared exactly, stream by stream.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import xxhash

from shuffle import codec, mapfile
from shuffle.errors import CorruptSegmentError
from shuffle.mapfile import MapOutputWriter, StreamRef, read_segment, read_segments
from shuffle.store import FsspecStore

Row = tuple[object, object]

WHOLE_AND_STREAMED = pytest.mark.parametrize(
    "whole_read_limit", [mapfile.WHOLE_READ_LIMIT, 0], ids=["whole-read", "streamed"]
)


def sorted_rows(rng: random.Random, n: int, tag: str) -> list[Row]:
    """``n`` rows sorted by key, keys repeating; each value unique and naming its origin."""
    keys = sorted(f"key-{rng.randrange(max(1, n // 2)):05d}" for _ in range(n))
    return [(k, f"{tag}-{i}") for i, k in enumerate(keys)]


def table_of(rows: list[Row]) -> pa.Table:
    return codec.records_to_table([k for k, _ in rows], [v for _, v in rows])


def rows_of(batches: Iterable[pa.RecordBatch]) -> list[Row]:
    out: list[Row] = []
    for batch in batches:
        keys = codec.decode_keys(batch.column(codec.KEY), codec.table_key_encoding(batch.schema))
        values = codec.decode_values(
            batch.column(codec.VALUE), codec.table_value_encoding(batch.schema)
        )
        out.extend(zip(keys, values, strict=True))
    return out


def assert_contiguous(index: dict[int, list[StreamRef]], size: int) -> None:
    """Streams laid end to end, partitions ascending, each partition's streams together."""
    position = 0
    for p in sorted(index):
        for ref in index[p]:
            assert ref.offset == position, (p, ref)
            position += ref.length
    assert position == size


def write_runs(
    store: FsspecStore,
    path: str,
    runs: list[dict[int, list[Row]]],
    spill_dir: Path,
    **options: Any,
) -> dict[int, list[StreamRef]]:
    writer = MapOutputWriter(spill_dir=str(spill_dir), **options)
    for run in runs:
        writer.add_run({p: table_of(rows) for p, rows in run.items()})
    return writer.finish(store, path)


def test_one_run_is_moved_into_place_with_one_stream_per_partition(
    store: FsspecStore, tmp_path: Path
) -> None:
    rng = random.Random(1)
    spill = tmp_path / "spill"
    run = {
        3: sorted_rows(rng, 50, "p3"),
        0: sorted_rows(rng, 20, "p0"),
        7: sorted_rows(rng, 1, "p7"),
    }
    writer = MapOutputWriter(spill_dir=str(spill), batch_rows=8)
    writer.add_run({p: table_of(rows) for p, rows in run.items()})
    (spill_file,) = spill.iterdir()
    spill_inode = spill_file.stat().st_ino

    index = writer.finish(store, "s0/map-00000-a0.arrow")

    assert sorted(index) == [0, 3, 7]
    assert all(len(refs) == 1 for refs in index.values())
    data = store.read_bytes("s0/map-00000-a0.arrow")
    assert_contiguous(index, len(data))
    assert writer.bytes_written == len(data)
    assert writer.rows_written == 71
    for p, (ref,) in index.items():
        assert ref.rows == len(run[p])
        assert ref.checksum == xxhash.xxh3_64_intdigest(data[ref.offset : ref.offset + ref.length])
        (stream,) = read_segment(store, "s0/map-00000-a0.arrow", index[p])
        assert rows_of(stream) == run[p]
    assert list(spill.iterdir()) == []
    if store.is_local:  # moved, not copied: the published file is the spill file
        published = store.local_path("s0/map-00000-a0.arrow")
        assert published is not None
        assert os.stat(published).st_ino == spill_inode


def assert_end_to_end(index: dict[int, list[StreamRef]], size: int) -> None:
    """Every stream somewhere in the file, the streams tiling it with no gap or overlap."""
    position = 0
    for ref in sorted((r for refs in index.values() for r in refs), key=lambda r: r.offset):
        assert ref.offset == position, ref
        position += ref.length
    assert position == size


def test_several_runs_are_regrouped_on_a_remote_store_and_left_in_place_on_a_local_one(
    store: FsspecStore, tmp_path: Path
) -> None:
    """Remote: one range read per partition is worth a copy. Local: the copy costs more."""
    rng = random.Random(2)
    runs = [
        {
            0: sorted_rows(rng, 30, "r0p0"),
            1: sorted_rows(rng, 5, "r0p1"),
            3: sorted_rows(rng, 9, "r0p3"),
        },
        {2: sorted_rows(rng, 12, "r1p2"), 1: sorted_rows(rng, 40, "r1p1")},
        {3: sorted_rows(rng, 1, "r2p3"), 0: sorted_rows(rng, 17, "r2p0")},
        {1: sorted_rows(rng, 3, "r3p1")},
    ]
    spill = tmp_path / "spill"
    index = write_runs(store, "map.arrow", runs, spill, batch_rows=4)

    data = store.read_bytes("map.arrow")
    if store.is_local:
        assert_end_to_end(index, len(data))
        assert [len(mapfile.contiguous(index[p])) for p in range(4)] == [2, 3, 1, 2]
    else:
        assert_contiguous(index, len(data))
    assert list(spill.iterdir()) == []
    for p in range(4):
        in_runs = [run[p] for run in runs if p in run]
        refs = index[p]
        assert [ref.rows for ref in refs] == [len(rows) for rows in in_runs]
        for ref in refs:
            assert ref.checksum == xxhash.xxh3_64_intdigest(
                data[ref.offset : ref.offset + ref.length]
            )
        streams = read_segment(store, "map.arrow", refs)
        # One iterator per run, in run order, each its run's rows exactly.
        assert [rows_of(s) for s in streams] == in_runs
    everything_in = Counter(row for run in runs for rows in run.values() for row in rows)
    everything_out = Counter(
        row for p in index for s in read_segment(store, "map.arrow", index[p]) for row in rows_of(s)
    )
    assert everything_out == everything_in


@WHOLE_AND_STREAMED
def test_read_segment_returns_every_row_in_bounded_batches(
    store: FsspecStore, tmp_path: Path, whole_read_limit: int
) -> None:
    rng = random.Random(3)
    runs = [{5: sorted_rows(rng, 100, f"r{r}")} for r in range(3)]
    index = write_runs(store, "m.arrow", runs, tmp_path / "spill", batch_rows=7)

    streams = read_segment(store, "m.arrow", index[5], whole_read_limit=whole_read_limit)

    got = []
    for stream in streams:
        batches = list(stream)
        assert max(b.num_rows for b in batches) == 7
        got.append(rows_of(batches))
    assert got == [run[5] for run in runs]


def test_segments_up_to_the_limit_are_fetched_before_read_segment_returns(
    store: FsspecStore, tmp_path: Path
) -> None:
    rows = sorted_rows(random.Random(4), 30, "x")
    index = write_runs(store, "m.arrow", [{0: rows}], tmp_path / "spill")
    (ref,) = index[0]

    fetched = read_segment(store, "m.arrow", index[0], whole_read_limit=ref.length)
    lazy = read_segment(store, "m.arrow", index[0], whole_read_limit=ref.length - 1)
    store.remove("m.arrow")

    assert rows_of(fetched[0]) == rows
    with pytest.raises(FileNotFoundError):
        list(lazy[0])


def test_streamed_runs_of_one_file_can_be_read_interleaved(
    store: FsspecStore, tmp_path: Path
) -> None:
    # Each stream is larger than the streaming reader's 1 MiB buffer, so the two
    # runs really alternate reads on the same file (as a merge does).
    rng = random.Random(5)
    runs = []
    for _ in range(2):
        keys = sorted(f"{rng.randrange(10**9):09d}" for _row in range(6000))
        runs.append({0: [(k, rng.randbytes(200)) for k in keys]})
    index = write_runs(store, "m.arrow", runs, tmp_path / "spill", compression=None, batch_rows=500)
    assert min(ref.length for ref in index[0]) > 2**20

    first, second = read_segment(store, "m.arrow", index[0], whole_read_limit=0)
    got: list[list[Row]] = [[], []]
    for a, b in zip(first, second, strict=True):
        got[0] += rows_of([a])
        got[1] += rows_of([b])

    assert got == [runs[0][0], runs[1][0]]


def flip_byte(store: FsspecStore, path: str, offset: int) -> None:
    data = bytearray(store.read_bytes(path))
    data[offset] ^= 0xFF
    store.write_bytes(path, bytes(data))


def truncate(store: FsspecStore, path: str, cut: int) -> None:
    store.write_bytes(path, store.read_bytes(path)[:-cut])


def three_stream_file(store: FsspecStore, tmp_path: Path) -> list[StreamRef]:
    """Write m.arrow with three runs of partition 1; return that partition's streams."""
    rng = random.Random(6)
    runs = [{1: sorted_rows(rng, 200, f"r{r}")} for r in range(3)]
    return write_runs(store, "m.arrow", runs, tmp_path / "spill", batch_rows=16)[1]


@WHOLE_AND_STREAMED
def test_a_flipped_byte_raises_corrupt_segment_error(
    store: FsspecStore, tmp_path: Path, whole_read_limit: int
) -> None:
    refs = three_stream_file(store, tmp_path)
    middle = refs[1]
    flip_byte(store, "m.arrow", middle.offset + middle.length // 2)

    with pytest.raises(CorruptSegmentError, match=r"m\.arrow is damaged") as caught:
        streams = read_segment(store, "m.arrow", refs, whole_read_limit=whole_read_limit)
        if whole_read_limit:
            pytest.fail("a whole read must check every stream before returning any rows")
        for stream in streams:
            for _ in stream:
                pass
    assert f"{middle.offset}-{middle.offset + middle.length}" in str(caught.value)


def test_the_checksum_catches_a_flip_that_still_decodes(store: FsspecStore, tmp_path: Path) -> None:
    # Uncompressed, a flipped byte inside a value still decodes: only the checksum can tell.
    rows: list[Row] = [("a", b"before"), ("b", b"MARKER-0123456789"), ("c", b"after")]
    index = write_runs(store, "m.arrow", [{0: rows}], tmp_path / "spill", compression=None)
    where = store.read_bytes("m.arrow").index(b"MARKER")
    flip_byte(store, "m.arrow", where)

    for limit in (mapfile.WHOLE_READ_LIMIT, 0):
        (unverified,) = read_segment(
            store, "m.arrow", index[0], verify=False, whole_read_limit=limit
        )
        assert rows_of(unverified)[1] == ("b", bytes([ord("M") ^ 0xFF]) + b"ARKER-0123456789")
        with pytest.raises(CorruptSegmentError, match="checksum mismatch"):
            for stream in read_segment(store, "m.arrow", index[0], whole_read_limit=limit):
                list(stream)


@WHOLE_AND_STREAMED
@pytest.mark.parametrize("cut", [8, 500], ids=["end-of-stream-marker", "mid-batch"])
def test_a_truncated_file_raises_corrupt_segment_error(
    store: FsspecStore, tmp_path: Path, whole_read_limit: int, cut: int
) -> None:
    refs = three_stream_file(store, tmp_path)
    assert refs[-1].length > cut
    truncate(store, "m.arrow", cut)

    with pytest.raises(CorruptSegmentError, match=r"m\.arrow is (truncated|damaged)"):
        for stream in read_segment(store, "m.arrow", refs, whole_read_limit=whole_read_limit):
            for _ in stream:
                pass


def test_abort_leaves_no_files(store: FsspecStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    rng = random.Random(7)
    writer = MapOutputWriter(spill_dir=str(spill))
    for r in range(3):
        writer.add_run({0: table_of(sorted_rows(rng, 10, f"r{r}"))})
    assert len(list(spill.iterdir())) == 1

    writer.abort()

    assert list(spill.iterdir()) == []
    assert store.list("") == []


def test_abort_before_any_run_leaves_no_files(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    MapOutputWriter(spill_dir=str(spill)).abort()
    assert list(spill.iterdir()) == []


def test_empty_partitions_get_no_stream_and_no_index_entry(
    store: FsspecStore, tmp_path: Path
) -> None:
    empty = table_of([])
    runs: list[dict[int, pa.Table]] = [
        {0: empty, 2: table_of([("a", 1), ("b", 2)]), 4: empty},
        {},
        {2: empty, 3: table_of([("c", 3)])},
    ]
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
    for run in runs:
        writer.add_run(run)
    index = writer.finish(store, "m.arrow")

    assert sorted(index) == [2, 3]
    assert [len(index[2]), len(index[3])] == [1, 1]
    assert_contiguous(index, len(store.read_bytes("m.arrow")))
    assert writer.rows_written == 3
    assert read_segment(store, "m.arrow", []) == []


def test_a_task_with_no_output_publishes_an_empty_file_and_index(
    store: FsspecStore, tmp_path: Path
) -> None:
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
    writer.add_run({0: table_of([]), 1: table_of([])})
    assert writer.finish(store, "m.arrow") == {}
    assert store.read_bytes("m.arrow") == b""
    assert list((tmp_path / "spill").iterdir()) == []


def test_index_json_round_trip() -> None:
    index = {
        10: [StreamRef(0, 100, 7, 2**32 - 1)],
        2: [StreamRef(100, 5, 1, 0), StreamRef(105, 9, 3, 12345)],
    }
    as_json = mapfile.index_to_json(index)
    assert list(as_json) == ["2", "10"]  # sorted by partition number, not as text
    assert as_json["2"] == [[100, 5, 1, 0], [105, 9, 3, 12345]]
    assert mapfile.index_from_json(as_json) == index


def test_read_segment_of_a_missing_file_raises_file_not_found(store: FsspecStore) -> None:
    ref = StreamRef(0, 10, 1, 0)
    with pytest.raises(FileNotFoundError):
        read_segment(store, "nope.arrow", [ref])


@WHOLE_AND_STREAMED
def test_typed_and_generic_runs_round_trip_in_one_file(
    store: FsspecStore, tmp_path: Path, whole_read_limit: int
) -> None:
    typed: list[Row] = [("a", 1), ("b", 2)]
    generic: list[Row] = sorted(
        [("a", None), (("t", 1), [1, 2]), ("c", {"x": b"y"})], key=lambda r: codec.encode_key(r[0])
    )
    index = write_runs(store, "m.arrow", [{0: typed}, {0: generic}], tmp_path / "spill")

    streams = read_segment(store, "m.arrow", index[0], whole_read_limit=whole_read_limit)

    assert [rows_of(stream) for stream in streams] == [typed, generic]


def test_read_segments_fetches_many_outputs_concurrently_in_order(store: FsspecStore) -> None:
    """read_segments over several map outputs gives every run, in segment order."""
    segments = []
    expected = []
    for m in range(5):
        writer = MapOutputWriter(spill_dir=None)
        table = pa.table({"key": [f"k{m}-{i:03d}" for i in range(50)], "value": list(range(50))})
        writer.add_run({0: table})
        path = f"map-{m}.arrow"
        index = writer.finish(store, path)
        segments.append((path, index[0]))
        expected.append(table.column("key").to_pylist())
    for in_flight in (1, 3, 8):
        runs = read_segments(store, segments, max_in_flight=in_flight)
        got = [[k for b in run for k in b.column("key").to_pylist()] for run in runs]
        assert got == expected


def test_read_segments_raises_the_first_fetch_error(store: FsspecStore) -> None:
    writer = MapOutputWriter(spill_dir=None)
    writer.add_run({0: pa.table({"key": ["a", "b"], "value": [1, 2]})})
    index = writer.finish(store, "good.arrow")
    bad = [StreamRef(0, index[0][0].length + 100, 2, 0)]
    with pytest.raises(CorruptSegmentError, match="truncated"):
        read_segments(store, [("good.arrow", index[0]), ("good.arrow", bad)], max_in_flight=4)


def test_compression_is_kept_for_data_that_compresses_and_dropped_for_data_that_does_not(
    store: FsspecStore, tmp_path: Path
) -> None:
    rng = random.Random(4)
    n = 3000  # rows of ~1 KiB: three probes' worth
    repetitive = [(f"k{i:05d}", "abcd" * 256) for i in range(n)]
    noise = [(f"k{i:05d}", rng.randbytes(1024)) for i in range(n)]
    for name, rows, kept in [("repetitive", repetitive, True), ("noise", noise, False)]:
        writer = MapOutputWriter(spill_dir=str(tmp_path / name))
        for start in range(0, n, 100):  # many streams, so the decision lands mid-file
            writer.add_run({0: table_of(rows[start : start + 100])})
        path = f"{name}.arrow"
        index = writer.finish(store, path)
        raw = n * 1024
        assert (writer.compression == "lz4") is kept
        if kept:
            assert writer.bytes_written < raw / 10
        else:
            assert writer.bytes_written > raw
        streams = read_segment(store, path, index[0])
        assert [row for stream in streams for row in rows_of(stream)] == rows


def unsorted_rows(rng: random.Random, n: int, tag: str) -> list[Row]:
    return [(f"key-{rng.randrange(1000):04d}", f"{tag}-{i}") for i in range(n)]


def test_small_streams_of_an_unsorted_shuffle_are_joined_into_one_per_bucket(
    store: FsspecStore, tmp_path: Path
) -> None:
    """join_runs: each (partition, bucket) of every run becomes one stream, rows in run order."""
    rng = random.Random(11)
    buckets = 3
    runs = [
        {sid: unsorted_rows(rng, rng.randrange(1, 40), f"r{r}s{sid}") for sid in sids}
        for r, sids in enumerate([[0, 1, 4, 7], [1, 2, 4], [0, 4, 5, 7, 8]])
    ]
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), batch_rows=0, join_runs=True)
    for run in runs:
        writer.add_run({sid: table_of(rows) for sid, rows in run.items()}, buckets)
    index = writer.finish(store, "m.arrow")

    data = store.read_bytes("m.arrow")
    assert_contiguous(index, len(data))
    assert list((tmp_path / "spill").iterdir()) == []
    for p in range(3):
        sids = sorted({sid for run in runs for sid in run if sid // buckets == p})
        refs = index[p]
        assert [ref.bucket for ref in refs] == [sid % buckets for sid in sids]
        for ref, sid in zip(refs, sids, strict=True):
            want = [row for run in runs for row in run.get(sid, [])]
            assert ref.rows == len(want)
            assert ref.checksum == xxhash.xxh3_64_intdigest(
                data[ref.offset : ref.offset + ref.length]
            )
            (stream,) = read_segment(store, "m.arrow", [ref])
            assert rows_of(stream) == want


def test_streams_are_joined_only_while_their_schemas_match(
    store: FsspecStore, tmp_path: Path
) -> None:
    typed: list[Row] = [("a", 1), ("b", 2)]
    generic: list[Row] = [("a", None), ("c", {"x": b"y"})]
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), join_runs=True)
    for rows in (typed, typed, generic, typed):
        writer.add_run({0: table_of(rows)})
    index = writer.finish(store, "m.arrow")

    assert_contiguous(index, len(store.read_bytes("m.arrow")))
    streams = read_segment(store, "m.arrow", index[0])
    assert [rows_of(stream) for stream in streams] == [typed + typed, generic, typed]


def test_large_streams_are_not_joined(
    store: FsspecStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mapfile, "JOIN_STREAM_BYTES", 64)
    rng = random.Random(12)
    runs = [{0: unsorted_rows(rng, 50, f"r{r}")} for r in range(3)]
    index = write_runs(store, "m.arrow", runs, tmp_path / "spill", join_runs=True)

    assert [ref.rows for ref in index[0]] == [50, 50, 50]
    streams = read_segment(store, "m.arrow", index[0])
    assert [rows_of(stream) for stream in streams] == [run[0] for run in runs]


def test_the_last_run_is_written_once_straight_into_the_joined_file(
    store: FsspecStore, tmp_path: Path
) -> None:
    """add_run(last=True) when joining: nothing of it goes to the spill file, and the
    published file is byte for byte the one written when the last run is spilled too."""
    rng = random.Random(13)
    buckets = 3
    runs = [
        {sid: table_of(unsorted_rows(rng, rng.randrange(1, 40), f"r{r}s{sid}")) for sid in sids}
        for r, sids in enumerate([[0, 1, 4, 7], [1, 2, 4], [0, 3, 4, 5, 7, 8, 9]])
    ]
    published = []
    for last in (False, True):
        spill = tmp_path / f"spill-{last}"
        writer = MapOutputWriter(spill_dir=str(spill), batch_rows=0, join_runs=True)
        for run in runs[:-1]:
            writer.add_run(run, buckets)
        spilled = sum(f.stat().st_size for f in spill.iterdir())
        writer.add_run(runs[-1], buckets, last=last)
        grown = sum(f.stat().st_size for f in spill.iterdir()) - spilled
        assert (grown == 0) == last
        assert writer.num_runs == len(runs)
        index = writer.finish(store, f"m-{last}.arrow")
        assert list(spill.iterdir()) == []
        published.append((index, store.read_bytes(f"m-{last}.arrow"), writer.rows_written))
    assert published[0] == published[1]
    index, data, rows = published[1]
    assert rows == sum(t.num_rows for run in runs for t in run.values())
    assert_contiguous(index, len(data))
    for p, refs in index.items():
        for ref in refs:
            sid = p * buckets + ref.bucket
            (stream,) = read_segment(store, f"m-{True}.arrow", [ref])
            assert rows_of(stream) == [
                row for run in runs if sid in run for row in rows_of(run[sid].to_batches())
            ]


def test_a_last_run_that_is_not_joined_is_spilled_as_any_other(
    store: FsspecStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mapfile, "JOIN_STREAM_BYTES", 64)  # these streams are too large to join
    rng = random.Random(14)
    runs = [{0: unsorted_rows(rng, 50, f"r{r}")} for r in range(3)]
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), join_runs=True)
    for r, run in enumerate(runs):
        writer.add_run({0: table_of(run[0])}, last=r == len(runs) - 1)
    index = writer.finish(store, "m.arrow")

    assert [ref.rows for ref in index[0]] == [50, 50, 50]
    streams = read_segment(store, "m.arrow", index[0])
    assert [rows_of(stream) for stream in streams] == [run[0] for run in runs]


def unsorted_runs(
    rng: random.Random, sizes: list[dict[int, int]], buckets: int
) -> list[dict[int, pa.Table]]:
    """Runs of an unsorted shuffle: stream id -> that many rows, each value naming its origin."""
    return [
        {sid: table_of(unsorted_rows(rng, n, f"r{r}s{sid}")) for sid, n in run.items()}
        for r, run in enumerate(sizes)
    ]


def write_in_place(
    store: FsspecStore,
    path: str,
    runs: list[dict[int, pa.Table]],
    buckets: int,
    spill: Path,
    **options: Any,
) -> tuple[dict[int, list[StreamRef]], MapOutputWriter]:
    writer = MapOutputWriter(
        spill_dir=str(spill), batch_rows=0, join_runs=True, in_place=True, **options
    )
    for r, run in enumerate(runs):
        writer.add_run(run, buckets, last=r == len(runs) - 1)
    index = writer.finish(store, path)
    assert list(spill.iterdir()) == []
    return index, writer


def assert_placed(
    store: FsspecStore,
    path: str,
    index: dict[int, list[StreamRef]],
    runs: list[dict[int, pa.Table]],
    buckets: int,
) -> None:
    """Every (partition, bucket)'s rows in run order; streams checksummed, none overlapping."""
    data = store.read_bytes(path)
    spans = sorted((r.offset, r.end) for refs in index.values() for r in refs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] == len(data)
    got: dict[int, list[Row]] = {}
    for p, refs in index.items():
        assert [r.offset for r in refs] == sorted(r.offset for r in refs)
        for ref, stream in zip(refs, read_segment(store, path, refs), strict=True):
            assert ref.checksum == xxhash.xxh3_64_intdigest(data[ref.offset : ref.end])
            got.setdefault(p * buckets + ref.bucket, []).extend(rows_of(stream))
    want: dict[int, list[Row]] = {}
    for run in runs:
        for sid, table in sorted(run.items()):
            want.setdefault(sid, []).extend(rows_of(table.to_batches()))
    assert got == {sid: rows for sid, rows in want.items() if rows}


def test_in_place_the_runs_of_each_bucket_are_one_stream_in_its_region(
    store: FsspecStore, tmp_path: Path
) -> None:
    """As many runs as expected: one stream per (partition, bucket), in (partition, bucket)
    order, the same rows as the joined file written through a spill file."""
    rng = random.Random(21)
    buckets = 2
    runs = unsorted_runs(rng, [{sid: 30 for sid in range(6)} for _ in range(3)], buckets)
    index, writer = write_in_place(
        store, "m.arrow", runs, buckets, tmp_path / "spill", expected_runs=3
    )
    assert_placed(store, "m.arrow", index, runs, buckets)
    assert {p: [r.bucket for r in refs] for p, refs in index.items()} == {
        p: list(range(buckets)) for p in range(3)
    }
    offsets = [r.offset for p in sorted(index) for r in index[p]]
    assert offsets == sorted(offsets)
    assert writer.hole_bytes > 0

    joined = MapOutputWriter(spill_dir=str(tmp_path / "spill2"), batch_rows=0, join_runs=True)
    for run in runs:
        joined.add_run(run, buckets)
    old = joined.finish(store, "old.arrow")
    assert {p: [(r.rows, r.length, r.bucket) for r in refs] for p, refs in old.items()} == {
        p: [(r.rows, r.length, r.bucket) for r in refs] for p, refs in index.items()
    }
    assert writer.rows_written == joined.rows_written


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_in_place_streams_are_the_bytes_arrows_stream_writer_writes(
    store: FsspecStore, tmp_path: Path, compression: str | None
) -> None:
    """Uncompressed streams are assembled from schema and batch messages, not through a
    stream writer: each joined stream must still be, byte for byte, what Arrow's own
    writer makes of the same batches (compressed ones go through the writer)."""
    rng = random.Random(24)
    buckets = 2
    runs = unsorted_runs(rng, [{sid: 40 for sid in range(4)} for _ in range(3)], buckets)
    index, _ = write_in_place(
        store,
        "m.arrow",
        runs,
        buckets,
        tmp_path / "spill",
        expected_runs=3,
        compression=compression,
    )
    data = store.read_bytes("m.arrow")
    options = pa.ipc.IpcWriteOptions(compression=compression)
    for p, refs in index.items():
        for ref in refs:
            sid = p * buckets + ref.bucket
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, runs[0][sid].schema, options=options) as writer:
                for run in runs:
                    writer.write_table(run[sid])
            assert data[ref.offset : ref.end] == sink.getvalue().to_pybytes()


def test_in_place_more_runs_than_expected_overflow_into_the_tail(
    store: FsspecStore, tmp_path: Path
) -> None:
    """Eight runs where one was expected: each bucket gets a few streams (room doubles), not
    eight, and the overflow lies after every first region."""
    rng = random.Random(22)
    buckets = 2
    runs = unsorted_runs(rng, [{sid: 20 for sid in range(4)} for _ in range(8)], buckets)
    index, _ = write_in_place(store, "m.arrow", runs, buckets, tmp_path / "spill", expected_runs=1)
    assert_placed(store, "m.arrow", index, runs, buckets)
    first_regions_end = max(refs[0].end for refs in index.values())
    for refs in index.values():
        for bucket in range(buckets):
            mine = [r for r in refs if r.bucket == bucket]
            assert 2 <= len(mine) <= 4, mine
            assert all(r.offset >= first_regions_end for r in mine[1:])


def test_in_place_skewed_and_late_buckets(store: FsspecStore, tmp_path: Path) -> None:
    """A bucket that grows tenfold after the first run, and buckets first seen in later
    runs, go to the tail; the others stay one stream each."""
    rng = random.Random(23)
    buckets = 4
    sizes = [{sid: 10 for sid in range(0, 12, 2)} for _ in range(4)]
    for run in sizes[1:]:
        run[4] = 100  # skewed: (1, 0) grows ten times as fast as it started
        run[7] = 5  # late: (1, 3) first appears in run 1
    runs = unsorted_runs(rng, sizes, buckets)
    index, _ = write_in_place(store, "m.arrow", runs, buckets, tmp_path / "spill", expected_runs=4)
    assert_placed(store, "m.arrow", index, runs, buckets)
    streams = Counter((p, r.bucket) for p, refs in index.items() for r in refs)
    assert streams[(1, 0)] > 1
    assert streams[(1, 3)] == 1
    assert all(n == 1 for key, n in streams.items() if key != (1, 0))


def test_in_place_a_stream_that_cannot_be_joined_starts_another(
    store: FsspecStore, tmp_path: Path
) -> None:
    typed: list[Row] = [("a", 1), ("b", 2)]
    generic: list[Row] = [("a", None), ("c", {"x": b"y"})]
    runs = [{0: table_of(rows)} for rows in (typed, typed, generic, typed)]
    index, _ = write_in_place(store, "m.arrow", runs, 1, tmp_path / "spill")
    assert_placed(store, "m.arrow", index, runs, 1)
    streams = read_segment(store, "m.arrow", index[0])
    assert [rows_of(stream) for stream in streams] == [typed + typed, generic, typed]


def test_in_place_holes_take_no_disk_space(tmp_path: Path) -> None:
    """Regions with room for ten runs, filled by one: the file's unused room is not on disk."""
    store = FsspecStore(str(tmp_path / "out"))
    rng = random.Random(24)
    runs = unsorted_runs(rng, [{sid: 2000 for sid in range(8)}, {0: 1}], 1)
    index, writer = write_in_place(store, "m.arrow", runs, 1, tmp_path / "spill", expected_runs=10)
    assert_placed(store, "m.arrow", index, runs, 1)
    path = tmp_path / "out" / "m.arrow"
    size = path.stat().st_size
    assert writer.hole_bytes == size - sum(r.length for refs in index.values() for r in refs)
    assert writer.hole_bytes > size / 2
    assert path.stat().st_blocks * 512 < size - writer.hole_bytes / 2


def test_in_place_large_regions_start_on_a_page_and_small_ones_share_pages(
    tmp_path: Path,
) -> None:
    """Many tiny buckets take about their bytes on disk, not a 4 KiB block each; a large
    bucket's region starts on a page, so reading it reads no page of another."""
    store = FsspecStore(str(tmp_path / "out"))
    rng = random.Random(25)
    sizes = {sid: 1 for sid in range(400)}
    sizes[400] = 20_000
    runs = unsorted_runs(rng, [sizes, dict(sizes)], 1)
    index, _ = write_in_place(store, "m.arrow", runs, 1, tmp_path / "spill", expected_runs=2)
    assert_placed(store, "m.arrow", index, runs, 1)
    (large,) = index[400]
    assert large.offset % 4096 == 0 and large.length > mapfile._PAGE_ALIGNED_ROOM / 2
    tiny = sum(r.length for p in range(400) for r in index[p])
    on_disk = (tmp_path / "out" / "m.arrow").stat().st_blocks * 512
    assert on_disk < (tiny * 2 * (1 + mapfile.REGION_SLACK) + 4096) + large.length + 8192
