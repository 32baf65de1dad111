"""``mrk8s bench shuffle``: real runs through the CLI, and a check that can fail.

The oracle for the written output is the rows generated again, without a
shuffle, by the same generator the map tasks call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrk8s.bench import shuffle_bench as bench
from mrk8s.bench.jobs import shuffle_job
from shuffle.partition import partition_of
from tests.conftest import CLIResult

Run = Callable[..., CLIResult]

SMALL = ("--size", "4MiB", "--maps", "4", "--reducers", "3", "--repeat", "1", "--workers", "2")


def json_lines(result: CLIResult) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def expected_rows(key_type: str, size: int = 4 << 20, payload: int = 90) -> int:
    return size // (shuffle_job.key_bytes(key_type) + payload)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key_type", ["int64", "string"])
def test_small_run_is_verified(cli: Run, key_type: str) -> None:
    result = cli("bench", "shuffle", *SMALL, "--key-type", key_type)
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result)
    assert line["rows"] == expected_rows(key_type)
    assert line["verified"] is True and line["problems"] == []
    assert line["map_tasks"] == 4 and line["reduce_tasks"] == 3
    assert line["bytes"] == line["rows"] * (shuffle_job.key_bytes(key_type) + 90)
    # Random payloads do not compress: the map outputs hold at least the data.
    assert line["shuffle_bytes"] >= line["bytes"]
    assert line["seconds"] > 0 and line["mb_per_s"] > 0
    assert line["map_peak_rss_max"] > 0 and line["reduce_peak_rss_max"] > 0
    assert line["locality"] == 1.0
    assert "output" not in line
    assert "run 1/1" in result.stderr and "verified" in result.stderr


@pytest.mark.timeout(120)
def test_a_lost_row_fails_verification(cli: Run) -> None:
    result = cli("bench", "shuffle", *SMALL, "--tamper")
    assert result.returncode == bench.EXIT_UNVERIFIED
    [line] = json_lines(result)
    assert line["verified"] is False
    # Every reducer dropped one row of its partition.
    assert len(line["problems"]) == 3, line["problems"]
    assert line["problems"][0].startswith("partition 0: the map tasks generated")
    assert "VERIFICATION FAILED" in result.stderr


@pytest.mark.timeout(120)
def test_verify_reports_each_wrong_partition() -> None:
    name = shuffle_job.counter_name
    group = {}
    for p, rows in enumerate([5, 7]):
        for side in ("map", "reduce"):
            group[name(p, side, "rows")] = rows
            group[name(p, side, "sum_lo")] = 100 + p
            group[name(p, side, "sum_hi")] = 200 + p
    counters = {shuffle_job.COUNTER_GROUP: group}
    assert bench.verify(counters, 2, 12) == []
    assert bench.verify(counters, 2, 13) == ["the map tasks generated 12 rows, not 13"]
    tampered = {shuffle_job.COUNTER_GROUP: {**group, name(1, "reduce", "sum_hi"): 999}}
    [problem] = bench.verify(tampered, 2, 12)
    assert problem.startswith("partition 1: the map tasks generated 7 rows (hash sums 65/c9)")
    stray = {shuffle_job.COUNTER_GROUP: {**group, name(2, "reduce", "rows"): 1}}
    assert bench.verify(stray, 2, 12) == [
        "counters of partitions that do not exist: p00002 reduce rows"
    ]
    assert bench.verify({}, 1, 0) == []


def chunk(key_type: str = "int64", rows: int = 1000, chunk_index: int = 0) -> pa.Table:
    return shuffle_job.generate_chunk(
        seed=0, task=1, chunk=chunk_index, rows=rows, key_type=key_type, payload_bytes=90
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key_type", ["int64", "string"])
def test_checksum_ignores_order_and_catches_damage(key_type: str) -> None:
    table = chunk(key_type)
    assert table.schema.field("payload").type == pa.binary()
    assert chunk(key_type).equals(table)  # deterministic
    assert not chunk(key_type, chunk_index=1).equals(table)
    rows, lo, hi = shuffle_job.checksum(table, 90)
    assert rows == 1000
    shuffled = table.take(pa.array(list(range(999, -1, -1))))
    assert shuffle_job.checksum(shuffled, 90) == (rows, lo, hi)
    in_pieces = pa.concat_tables([table.slice(0, 300), table.slice(300)])
    assert shuffle_job.checksum(in_pieces, 90) == (rows, lo, hi)
    # Many small batches, joined in groups before hashing (a group boundary mid-table).
    small = pa.concat_tables([table.slice(i, 7) for i in range(0, 1000, 7)])
    assert small.column(0).num_chunks == 143
    joined = shuffle_job.row_hashes(small, 90)
    assert (joined == shuffle_job.row_hashes(table, 90)).all()
    assert shuffle_job.checksum(small, 90) == (rows, lo, hi)
    assert shuffle_job.checksum(table.slice(1), 90)[0] == 999
    # A row whose payload's last byte changed, or whose payload moved to another key.
    payloads = table.column("payload").to_pylist()
    damaged = [*payloads[:5], payloads[5][:-1] + bytes([payloads[5][-1] ^ 1]), *payloads[6:]]
    swapped = [payloads[1], payloads[0], *payloads[2:]]
    for payload in (damaged, swapped):
        other = table.set_column(1, "payload", pa.array(payload, pa.binary()))
        assert shuffle_job.checksum(other, 90)[0] == rows
        assert shuffle_job.checksum(other, 90)[1:] != (lo, hi)
    # Per-partition sums add up to the whole.
    counts, los, his = shuffle_job.partition_checksums(table, 90, 3)
    assert (int(counts.sum()), int(los.sum()), int(his.sum())) == (rows, lo, hi)


@pytest.mark.timeout(120)
def test_every_map_task_gets_its_share() -> None:
    chunks = bench.task_chunks(10_000_003, 4, 100)
    assert len(chunks) == 4
    assert sum(map(sum, chunks)) == 10_000_003
    assert max(map(sum, chunks)) - min(map(sum, chunks)) <= 1
    assert max(max(c) for c in chunks) == bench.CHUNK_BYTES // 100
    assert bench.task_chunks(2, 4, 100) == [[1], [1], [], []]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shuffle", ["hash", "sorted"])
def test_write_output_writes_every_row(cli: Run, tmp_path: Path, shuffle: str) -> None:
    out = tmp_path / "out"
    flags = ["--sorted"] if shuffle == "sorted" else []
    result = cli("bench", "shuffle", *SMALL, *flags, "--no-warmup", "--write-output", str(out))
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result)
    assert line["verified"] is True
    assert line["shuffle"] == shuffle
    output = line["output"]
    assert output["verified"] is True and output["rows"] == line["rows"]
    assert output["bytes"] > 0 and output["seconds"] > 0 and "extra_wall_seconds" in output
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 3
    written = pa.concat_tables(pq.read_table(p) for p in parts)
    # The oracle: the same rows generated again, with no shuffle.
    chunks = bench.task_chunks(line["rows"], 4, shuffle_job.key_bytes("int64") + 90)
    generated = pa.concat_tables(
        shuffle_job.generate_chunk(
            seed=0,
            task=task,
            chunk=c,
            rows=rows,
            key_type="int64",
            payload_bytes=90,
            task_bytes=max(map(sum, chunks)) * 90,
        )
        for task, sizes in enumerate(chunks)
        for c, rows in enumerate(sizes)
    )
    assert written.num_rows == generated.num_rows == line["rows"]
    assert shuffle_job.checksum(written, 90) == shuffle_job.checksum(generated, 90)
    assert sorted(written.column("key").to_pylist()) == sorted(generated.column("key").to_pylist())
    # Each part is one partition (sorted by key in a sorted shuffle).
    for index, part in enumerate(parts):
        keys = pq.read_table(part).column("key").to_pylist()
        assert {partition_of(k, 3) for k in keys} == {index}
        assert (keys == sorted(keys)) is (shuffle == "sorted")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key_type", ["int64", "string"])
def test_the_sorted_shuffle_with_a_record_reducer_is_verified(cli: Run, key_type: str) -> None:
    result = cli("bench", "shuffle", *SMALL, "--sorted", "--record-reducer", "--key-type", key_type)
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result)
    assert (line["shuffle"], line["reducer"]) == ("sorted", "record")
    assert line["rows"] == expected_rows(key_type)
    assert line["verified"] is True and line["problems"] == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tamper", [False, True], ids=["verified", "tampered"])
def test_the_sorted_shuffle_in_pieces_is_verified(cli: Run, tamper: bool) -> None:
    # 4 MiB of memory: pieces of 1 MiB, so each ~1.4 MB partition takes several calls.
    flags = ("--sorted", "--pieces", "--memory-per-worker", "4MiB", "--no-warmup")
    result = cli("bench", "shuffle", *SMALL, *flags, *(["--tamper"] if tamper else []))
    [line] = json_lines(result)
    assert (line["shuffle"], line["reducer"]) == ("sorted", "reduce_batch_pieces")
    if not tamper:
        assert result.returncode == 0, result.stderr
        assert line["verified"] is True and line["problems"] == []
        return
    assert result.returncode == bench.EXIT_UNVERIFIED
    # A row lost per call: every partition is wrong.
    assert line["verified"] is False and len(line["problems"]) == 3, line["problems"]


@pytest.mark.timeout(120)
def test_a_record_reducer_that_loses_a_row_fails_verification(cli: Run) -> None:
    result = cli("bench", "shuffle", *SMALL, "--sorted", "--record-reducer", "--tamper")
    assert result.returncode == bench.EXIT_UNVERIFIED
    [line] = json_lines(result)
    assert line["reducer"] == "record" and line["verified"] is False
    assert len(line["problems"]) == 3, line["problems"]  # one row lost per reduce task


@pytest.mark.timeout(120)
def test_bad_options_are_usage_errors(cli: Run) -> None:
    result = cli("bench", "shuffle", "--size", "50", "--repeat", "1")
    assert result.returncode == 2
    assert "holds no row of 98 bytes" in result.stderr
    result = cli("bench", "shuffle", "--payload-bytes", "4")
    assert result.returncode == 2 and "--payload-bytes 4: give at least 8" in result.stderr
    result = cli("bench", "sort")
    assert result.returncode == 2 and "the only benchmark is 'shuffle'" in result.stderr
    result = cli("bench", "shuffle", "--record-reducer")
    assert result.returncode == 2 and "--record-reducer needs --sorted" in result.stderr
    for flags in (["--pieces"], ["--sorted", "--record-reducer", "--pieces"]):
        result = cli("bench", "shuffle", *flags)
        assert result.returncode == 2 and "--pieces needs --sorted and reduce_batch" in (
            result.stderr
        )
    result = cli("bench", "shuffle", "--node-local-shuffle", "--env-from-secret", "s")
    assert result.returncode == 2
    assert "--env-from-secret, --node-local-shuffle: for --backend k8s, not --backend local" in (
        result.stderr
    )
    result = cli("bench", "shuffle", "--backend", "k8s", "--shuffle-dir", "/tmp/x")
    assert result.returncode == 2
    assert "--shuffle-dir /tmp/x is a directory on this machine, which the pods" in result.stderr


def proc_io_available() -> bool:
    try:
        with open("/proc/self/io") as f:
            return "read_bytes" in f.read()
    except OSError:
        return False


@pytest.mark.timeout(120)
@pytest.mark.skipif(not proc_io_available(), reason="needs Linux's /proc/PID/io")
def test_disk_bytes_and_anonymous_memory_are_reported_per_stage(
    cli: Run, shuffle_dir: Path
) -> None:
    """The figures from /proc against independent readings: the map outputs' sizes on
    disk (os.stat, at the end of the map stage) and the shuffle bytes in the commit
    records; with the map outputs dropped from the page cache, the reducers read
    every byte of them from the disk."""
    size = ("--size", "32MiB", "--maps", "4", "--reducers", "3", "--repeat", "1")
    result = cli("bench", "shuffle", *size, "--workers", "2", "--drop-caches")
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result)
    assert line["verified"] is True
    files = line["map_output_file_bytes"]
    # The commit records' byte count, within the few bytes their index leaves out.
    assert line["shuffle_bytes"] <= files <= line["shuffle_bytes"] * 1.01
    assert files > 32 << 20  # random rows do not compress
    # Allocated on disk (du): the same, to a block a region (4 maps x 3 partitions x 4
    # hash buckets, each region of a map output starting on a 4 KiB page).
    assert files - 48 * 4096 <= line["map_output_disk_bytes"] <= files + 48 * 4096
    # The map stage wrote its outputs (dirtied them in the page cache) and little else.
    assert files <= line["map_disk_write_bytes"] <= files * 1.05 + (1 << 20)
    assert line["map_device_write_bytes"] is not None
    # The reduce stage read them back from the disk, a byte once, and wrote nothing big.
    assert line["shuffle_bytes"] <= line["reduce_disk_read_bytes"] <= files * 1.05 + (1 << 20)
    assert line["reduce_disk_write_bytes"] < 1 << 20
    assert line["reduce_disk_read_mb_per_s"] > 0
    for stage in ("map", "reduce"):
        # The process tree's CPU: some, and no more than every CPU through the stage.
        cpus = os.cpu_count() or 1
        assert 0 < line[f"{stage}_cpu_seconds"] <= cpus * line[f"{stage}_seconds"] + 0.1
        anon = line[f"{stage}_peak_anon_max"]
        # A worker holds Python, pyarrow and numpy (tens of MB) and its task's data,
        # and never more anonymous memory than its whole resident peak (VmHWM).
        assert 20 << 20 < anon <= line[f"{stage}_peak_rss_max"]
        assert line[f"{stage}_peak_file_max"] > 0
        assert line[f"{stage}_memory_samples"] > 0
    assert line["peak_anon_max"] == max(line["map_peak_anon_max"], line["reduce_peak_anon_max"])
    assert len(line["load_average_before"]) == 3


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("reducers", "spills"), [(16, 5), (128, 1)])
def test_a_hash_map_task_spills_at_a_size_set_by_the_reducers_not_the_data(
    cli: Run, reducers: int, spills: int
) -> None:
    """One map task of 48 MiB of rows spills every 8 MiB with 16 reducers (128 KiB
    a stream) and every 32 MiB with 128 (it used to hold all 48 with 128
    reducers, and so more memory); its runs' small streams are joined when it
    publishes, and every row arrives."""
    result = cli(
        "bench", "shuffle", "--size", "48MiB", "--maps", "1", "--reducers", str(reducers),
        "--repeat", "1", "--workers", "1", "--no-warmup",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result)
    assert line["verified"] is True
    assert line["map_spills"] == spills, line["map_spills"]


@pytest.mark.parametrize(
    ("reducers", "mib"), [(1, 8), (16, 8), (24, 12), (32, 16), (64, 32), (256, 32)]
)
def test_the_hash_spill_size_is_128_kib_a_stream_from_8_to_32_mib(reducers: int, mib: int) -> None:
    from mrk8s.tasks.run import unsorted_spill_bytes

    assert unsorted_spill_bytes(reducers) == mib << 20


@pytest.mark.parametrize("key_type", ["int64", "string"])
def test_the_sorted_bench_refuses_a_partition_out_of_order(key_type: str) -> None:
    keys = sorted(chunk(key_type).column("key").to_pylist())
    keys[400:402] = [keys[401], keys[400]]
    shuffle_job.check_sorted(pa.array(keys[:400] + [keys[401]] * 3), 2)  # ties are in order
    with pytest.raises(ValueError, match=r"partition 2 arrived unsorted: .* at row 401 follows"):
        shuffle_job.check_sorted(pa.chunked_array([keys[:300], keys[300:]]), 2)
