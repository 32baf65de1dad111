"""Tests for shuffle.commit: commit records, the proof that a task attempt finished.

Every store test runs on local disk, on fsspec's memory:// and on a loopback
S3 server (through s3fs and through Arrow's client). Records are compared
whole after a trip through JSON text, and the committed set of a stage is
checked against the set of tasks the test committed.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest

from shuffle import commit
from shuffle.commit import Record, TaskIndex
from shuffle.mapfile import StreamRef
from shuffle.store import FsspecStore


def map_record(index: int, *, step: int = 0, attempt: int = 0) -> Record:
    return Record.with_index(
        {
            0: [StreamRef(0, 120, 10, 2**32 - 1), StreamRef(120, 30, 2, 7)],
            3: [StreamRef(150, 50, 4, 0)],
        },
        step=step,
        stage="map",
        index=TaskIndex(index),
        attempt=attempt,
        node="node-a",
        data_path=f"s{step}/map-{index:05d}-a{attempt}.arrow",
        records_in=100,
        records_out=16,
        bytes_in=4096,
        bytes_out=200,
        seconds=1.25,
        peak_rss=123_456_789,
        spills=2,
        counters={"words": {"seen": 100, "kept": 16}},
    )


def reduce_record(index: int, *, step: int = 0) -> Record:
    return Record(
        step=step,
        stage="reduce",
        index=TaskIndex(index),
        attempt=1,
        node="node-b",
        data_path=f"part-{index:05d}",
    )


def test_a_record_survives_a_trip_through_json_text() -> None:
    for record in (map_record(7, step=2, attempt=3), reduce_record(0)):
        text = json.dumps(record.to_json())
        assert Record.from_json(json.loads(text)) == record


def test_to_json_gives_the_fields_as_asdict_would_without_copying_the_index() -> None:
    # A map record of a 256-reducer shuffle holds thousands of streams: copying them
    # (dataclasses.asdict does) took a tenth of a map task's time.
    from dataclasses import asdict

    record = map_record(7, step=2, attempt=3)
    as_json = record.to_json()
    assert as_json == asdict(record)
    assert as_json["index_json"] is record.index_json


def test_the_partition_index_and_bytes_come_back_from_the_record() -> None:
    record = Record.from_json(json.loads(json.dumps(map_record(1).to_json())))
    assert record.partition_index == {
        0: [StreamRef(0, 120, 10, 2**32 - 1), StreamRef(120, 30, 2, 7)],
        3: [StreamRef(150, 50, 4, 0)],
    }
    assert record.partition_bytes() == {0: 150, 3: 50}
    assert reduce_record(0).partition_index == {}
    assert reduce_record(0).partition_bytes() == {}


def test_record_path_names_step_stage_and_padded_index() -> None:
    assert commit.record_path(1, "reduce", 42) == "commits/s1-reduce-00042.json"


def test_write_then_read_returns_the_record(store: FsspecStore) -> None:
    record = map_record(4, step=1)
    commit.write(store, record)

    assert store.list("commits") == ["s1-map-00004.json"]
    assert commit.read(store, 1, "map", 4) == record
    assert json.loads(store.read_bytes("commits/s1-map-00004.json"))["attempt"] == 0


def test_reading_an_uncommitted_task_gives_none(store: FsspecStore) -> None:
    commit.write(store, map_record(0))
    assert commit.read(store, 0, "map", 1) is None
    assert commit.read(store, 0, "reduce", 0) is None
    assert commit.read(store, 1, "map", 0) is None


def test_a_second_commit_of_a_task_replaces_the_first(store: FsspecStore) -> None:
    commit.write(store, map_record(2, attempt=0))
    commit.write(store, map_record(2, attempt=1))
    assert store.list("commits") == ["s0-map-00002.json"]
    committed = commit.read(store, 0, "map", 2)
    assert committed is not None
    assert committed.attempt == 1


def test_committed_indexes_lists_only_the_stages_own_records(store: FsspecStore) -> None:
    for i in (0, 2, 11, 12345):
        commit.write(store, map_record(i))
    commit.write(store, reduce_record(1))
    commit.write(store, map_record(3, step=1))
    commit.write(store, map_record(4, step=10))
    # What a commit killed halfway can leave behind, and unrelated files.
    store.write_bytes("commits/s0-map-00005.json.tmp-0123456789ab", b"{")
    store.write_bytes("commits/notes.txt", b"")

    assert commit.committed_indexes(store, 0, "map") == {0, 2, 11, 12345}
    assert commit.committed_indexes(store, 0, "reduce") == {1}
    assert commit.committed_indexes(store, 1, "map") == {3}
    assert commit.committed_indexes(store, 10, "map") == {4}
    assert commit.committed_indexes(store, 2, "map") == set()


def test_committed_indexes_of_a_new_job_is_empty(store: FsspecStore) -> None:
    assert commit.committed_indexes(store, 0, "map") == set()


def test_read_stage_returns_records_in_task_order(store: FsspecStore) -> None:
    # More records than reads in flight on an object store, written out of order.
    n = commit.READS_IN_FLIGHT + 5
    for i in random.Random(7).sample(range(n), n):
        commit.write(store, map_record(i, attempt=i % 3))
    records = commit.read_stage(store, 0, "map", n)
    assert [(r.index, r.attempt, r.data_path) for r in records] == [
        (i, i % 3, f"s0/map-{i:05d}-a{i % 3}.arrow") for i in range(n)
    ]
    assert commit.read_stage(store, 0, "map", 0) == []


def test_read_stage_names_the_missing_task(store: FsspecStore) -> None:
    for i in (0, 1, 3):
        commit.write(store, map_record(i))
    with pytest.raises(FileNotFoundError) as caught:
        commit.read_stage(store, 0, "map", 4)
    assert str(caught.value) == (
        f"task 2 of step 0 stage map has no commit record in {store.url('commits')}"
    )


def test_one_partition_of_a_record_decodes_as_the_whole_record_filtered() -> None:
    """decode(data, p) against json.loads of the same bytes, then keeping partition p.

    The record's strings hold what could fool a search of the bytes: the index
    key and partition entries, quoted, in a counter name, the node and the path.
    """
    import random
    from dataclasses import replace

    rng = random.Random(8)
    tricky = '"index_json": {"3": [[1, 2]]}, "7": [[9]]]]}'
    index = {
        p: [
            StreamRef(
                rng.randrange(2**40),
                rng.randrange(2**30),
                rng.randrange(99),
                rng.randrange(2**64),
                b,
            )
            for b in range(rng.randrange(1, 4))
        ]
        for p in rng.sample(range(300), 40)
    }
    records = [
        map_record(1),
        replace(map_record(2), counters={tricky: {tricky: 1}}, node=tricky, data_path=tricky),
        Record.with_index(
            index, step=0, stage="map", index=TaskIndex(3), attempt=0, node=tricky, data_path="m"
        ),
        Record.with_index(
            {}, step=0, stage="map", index=TaskIndex(4), attempt=0, node="n", data_path="m"
        ),
    ]
    for record in records:
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        for p in [*range(0, 300, 7), 3, 7, 299, 1000]:
            whole = Record.from_json(json.loads(data))
            kept = {k: v for k, v in whole.index_json.items() if k == str(p)}
            assert commit.decode(data, p) == replace(whole, index_json=kept), (record.node, p)
            assert commit.decode(data, p).partition_refs(p) == whole.partition_refs(p)
        assert commit.decode(data) == record


def test_read_stage_of_one_partition_keeps_its_streams_only(store: FsspecStore) -> None:
    for i in range(3):
        commit.write(store, map_record(i))
    for p in (0, 3, 5):
        records = commit.read_stage(store, 0, "map", 3, partition=p)
        assert [r.partition_refs(p) for r in records] == [
            map_record(i).partition_refs(p) for i in range(3)
        ]
        assert all(set(r.partition_index) <= {p} for r in records)
        # A reducer gets each record's head without its counters (a worker keeps
        # the heads of a stage, and counters per partition grow with the reducers).
        assert [replace_index(r) for r in records] == [
            replace_index(map_record(i), counters={}) for i in range(3)
        ]
        assert all(r.counters == {} for r in records)
    assert commit.read_stage(store, 0, "map", 3)[1].counters == map_record(1).counters


def replace_index(record: Record, **changes: Any) -> Record:
    return replace(record, index_json={}, **changes)


def big_map_record(index: int, *, attempt: int = 0, partitions: int = 6) -> Record:
    """A hash-shuffle map record: buckets, 64-bit checksums, one partition left out."""
    refs = {
        p: [
            StreamRef(1000 * p + 100 * b + attempt, 90 + b, 7 * p + b + 1, 2**64 - 1 - p - b, b)
            for b in range(3)
        ]
        for p in range(partitions)
        if p != index % partitions
    }
    return replace_index(map_record(index, attempt=attempt)).with_index(
        refs,
        **{
            k: v
            for k, v in map_record(index, attempt=attempt).to_json().items()
            if k != "index_json"
        },
    )


def test_a_stage_is_decoded_once_per_process_and_matches_a_read_per_task(
    store: FsspecStore,
) -> None:
    cache = commit.StageCache()
    for i in range(4):
        commit.write(store, big_map_record(i))
    served = [cache.partition(store, 0, "map", 4, p) for p in range(7)]
    if served[0] is None:  # memory:// and Arrow's S3 client list no ETag: read per task
        assert commit._identities(store) is None
        assert cache.reads == 0
        return
    assert cache.reads == 4
    for p, records in enumerate(served):
        assert records is not None
        for i, (head, refs) in enumerate(records):
            record = commit.read(store, 0, "map", i, partition=p)
            assert record is not None
            assert head == replace_index(record, counters={})
            assert refs == record.partition_refs(p) == big_map_record(i).partition_refs(p)
    assert served[1] is not None
    assert served[1][1][1] == []  # map 1 has no stream of partition 1
    alone = [commit.read(store, 0, "map", i, partition=2) for i in range(4)]
    assert None not in alone
    assert commit.read_stage(store, 0, "map", 4, partition=2) == [
        replace(record, counters={}) for record in alone if record is not None
    ]


def test_the_cache_decodes_a_stage_one_record_at_a_time(
    store: FsspecStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record is compacted as it is read: decoding a stage of many large records
    must not hold them all whole at once (it did, and a reducer of a 256 x 256 shuffle
    grew by 76 MB). One read at a time: from an object store up to
    ``READS_IN_FLIGHT`` go out together, and how many of those are decoding at the
    peak depends on the server's timing (in one full run of the suite, all of them)."""
    monkeypatch.setattr(commit, "READS_IN_FLIGHT", 1)
    records = 24
    for i in range(records):
        commit.write(store, big_map_record(i, partitions=200))
    tracemalloc.start()
    try:
        commit.read(store, 0, "map", 0)
        one = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        served = commit.StageCache().partition(store, 0, "map", records, 0)
        stage = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if served is None:
        pytest.skip("this store's listing gives no identity: its records are not cached")
    assert stage < 4 * one, (stage, one)


def test_a_replaced_record_is_never_served_from_the_cache(store: FsspecStore) -> None:
    """A map task re-run (after its output was damaged, its node lost, or on resume)
    commits again: the next reducer gets the new record, the others stay decoded."""
    cache = commit.StageCache()
    for i in range(3):
        commit.write(store, big_map_record(i))
    if cache.partition(store, 0, "map", 3, 4) is None:
        return  # not cached on this store (see the test above)
    for attempt in (1, 2):
        commit.write(store, big_map_record(1, attempt=attempt))
        records = cache.partition(store, 0, "map", 3, 4)
        assert records is not None
        head, refs = records[1]
        assert (head.attempt, head.data_path) == (attempt, f"s0/map-00001-a{attempt}.arrow")
        assert refs == big_map_record(1, attempt=attempt).partition_refs(4)
    assert cache.reads == 3 + 2


def test_a_missing_record_is_named_and_a_large_stage_is_not_kept(store: FsspecStore) -> None:
    for i in (0, 2):
        commit.write(store, big_map_record(i))
    with pytest.raises(FileNotFoundError) as caught:
        commit.read_stage(store, 0, "map", 3, partition=0)
    assert str(caught.value) == (
        f"task 1 of step 0 stage map has no commit record in {store.url('commits')}"
    )
    cache = commit.StageCache(max_bytes=1)
    if cache.partition(store, 0, "map", 1, 0) is None:
        return
    cache.partition(store, 0, "map", 1, 0)
    assert cache.reads == 2  # too large for max_bytes: read again each time


def test_the_cache_keeps_large_offsets_rows_and_buckets_exactly(store: FsspecStore) -> None:
    """Streams past 4 GiB, of more than 2**32 rows, in bucket 300: kept in wider fields."""
    huge = [StreamRef((5 << 30) + 8, (4 << 30) + 1, (1 << 33) + 3, 2**64 - 2, 300)]
    small = [StreamRef(0, 10, 1, 1, 0)]
    fields = {k: v for k, v in map_record(0).to_json().items() if k != "index_json"}
    commit.write(store, Record.with_index({0: small, 1: huge}, **fields))
    cache = commit.StageCache()
    for p, want in ((0, small), (1, huge)):
        served = cache.partition(store, 0, "map", 1, p)
        if served is None:
            return
        assert served[0][1] == want
