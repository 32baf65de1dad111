"""Tests for mrk8s.io.inputs: listing, split planning and reading every input format.

Every reading test compares against an oracle that does not share code with
the module: lines come from ``bytes.split`` over the whole file, rows from
the csv/json modules or pyarrow's whole-file readers.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import itertools
import json
import os
import random
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from mrk8s.errors import InputError
from mrk8s.io.inputs import (
    InputFile,
    infer_format,
    list_inputs,
    plan_splits,
    read_lines,
    read_records,
    read_tables,
)
from mrk8s.io.split import Split

# ------------------------------------------------------------------- oracles


def oracle_lines(data: bytes) -> list[str]:
    """The lines of a file per the rules, from the whole file at once."""
    if not data:
        return []
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    return [(p[:-1] if p.endswith(b"\r") else p).decode("utf-8", "replace") for p in parts]


def oracle_split_lines(data: bytes, start: int, end: int) -> list[str]:
    """The lines whose first byte lies in [start, end)."""
    return [line for offset, line in oracle_line_offsets(data) if start <= offset < end]


def oracle_line_offsets(data: bytes) -> list[tuple[int, str]]:
    """Each line with the offset of its first byte."""
    offsets = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    return list(zip(offsets, oracle_lines(data), strict=False))


def random_content(rng: random.Random) -> bytes:
    pieces = [
        b"",
        b"a",
        b"word",
        b"two words",
        b"\r",
        b"x\r",
        b"\r\r",
        "h\u00e9llo w\u00f6rld".encode(),
        "\u65e5\u672c\u8a9e".encode(),
        "\U0001f600".encode(),
        b"bad \xff\xfe utf8",
        b"cut \xe6\x97",
        b"long " * 12,
    ]
    lines = [rng.choice(pieces) + rng.choice(pieces) for _ in range(rng.randint(0, 60))]
    ends = [rng.choice([b"\n", b"\n", b"\r\n"]) for _ in lines]
    data = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    if rng.random() < 0.5:
        data += rng.choice(pieces)  # often a last line without a newline
    return data


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def lines_of(splits: list[Split], *, chunk_bytes: int = 2**20) -> list[str]:
    return [line for split in splits for line in read_lines(split, chunk_bytes=chunk_bytes)]


def table_lines_of(
    splits: list[Split], *, chunk_bytes: int = 2**20, batch_rows: int = 1000
) -> list[str]:
    out: list[str] = []
    for split in splits:
        for table in read_tables(split, chunk_bytes=chunk_bytes, batch_rows=batch_rows):
            assert table.column_names == ["line"]
            assert table.schema.field("line").type == pa.string()
            out.extend(table.column("line").to_pylist())
    return out


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.parquet", ("parquet", None)),
        ("A.PQ", ("parquet", None)),
        ("x.arrow", ("arrow", None)),
        ("x.feather", ("arrow", None)),
        ("x.ipc", ("arrow", None)),
        ("x.csv", ("csv", None)),
        ("x.csv.gz", ("csv", "gzip")),
        ("x.jsonl", ("jsonl", None)),
        ("x.ndjson.bz2", ("jsonl", "bz2")),
        ("x.jsonl.gz", ("jsonl", "gzip")),
        ("x.txt", ("text", None)),
        ("part-00000", ("text", None)),
        ("x.txt.gz", ("text", "gzip")),
        ("x.gz", ("text", "gzip")),
        ("s3://b/d.csv/part-1", ("text", None)),
    ],
)
def test_infer_format(name: str, expected: tuple[str, str | None]) -> None:
    assert infer_format(name) == expected


@pytest.mark.parametrize("name", ["x.parquet.gz", "x.arrow.bz2", "x.pq.gz"])
def test_compressed_columnar_file_is_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path / name, b"whatever")
    with pytest.raises(InputError, match=rf"{name}.*compressed .* decompress it"):
        list_inputs([str(tmp_path / name)])


def test_a_given_format_overrides_the_name_but_not_the_compression(tmp_path: Path) -> None:
    # mrjob jobs read every file as text lines: the adapter lists inputs as text.
    for name in ["a.csv", "b.jsonl.gz", "c.parquet.bz2", "d.tsv"]:
        write(tmp_path / name, b"x\n")
    found = list_inputs([str(tmp_path)], format="text")
    assert [(os.path.basename(f.url), f.format, f.compression) for f in found] == [
        ("a.csv", "text", None),
        ("b.jsonl.gz", "text", "gzip"),
        ("c.parquet.bz2", "text", "bz2"),
        ("d.tsv", "text", None),
    ]
    assert [f.format for f in list_inputs([str(tmp_path / "a.csv")])] == ["csv"]


# ------------------------------------------------------------------ listing


def test_list_file_directory_and_glob(tmp_path: Path) -> None:
    for name in ["d/b.txt", "d/a.txt", "d/sub/c.jsonl.gz", "d/_SUCCESS", "d/.a.txt.crc"]:
        write(tmp_path / name, b"x\n")
    write(tmp_path / "d/_temporary/0/part-0", b"x\n")
    write(tmp_path / "d/.hidden/part-0", b"x\n")
    write(tmp_path / "single.csv", b"a\n1\n")

    d = tmp_path / "d"
    assert [f.url for f in list_inputs([str(d)])] == [
        str(d / "a.txt"),
        str(d / "b.txt"),
        str(d / "sub/c.jsonl.gz"),
    ]
    files = list_inputs([str(tmp_path / "single.csv"), str(d / "*.txt")])
    assert files == [
        InputFile(str(tmp_path / "single.csv"), 4, "csv", None),
        InputFile(str(d / "a.txt"), 2, "text", None),
        InputFile(str(d / "b.txt"), 2, "text", None),
    ]
    assert list_inputs([str(d / "sub")])[0] == InputFile(
        str(d / "sub/c.jsonl.gz"), 2, "jsonl", "gzip"
    )
    # A glob matching a directory expands it; hidden matches are skipped...
    assert [f.url for f in list_inputs([str(d / "*")])] == [
        str(d / "a.txt"),
        str(d / "b.txt"),
        str(d / "sub/c.jsonl.gz"),
    ]
    # ...unless the pattern or the path asks for them by name.
    assert [f.url for f in list_inputs([str(d / "_*")])] == [
        str(d / "_SUCCESS"),
        str(d / "_temporary/0/part-0"),
    ]
    assert [f.url for f in list_inputs([str(d / "_SUCCESS")])] == [str(d / "_SUCCESS")]
    assert [f.url for f in list_inputs([str(d / "?.txt")])] == [
        str(d / "a.txt"),
        str(d / "b.txt"),
    ]
    assert [f.url for f in list_inputs([str(d / "[b].txt")])] == [str(d / "b.txt")]


def test_list_canonical_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "in/a.txt", b"x\n")
    monkeypatch.chdir(tmp_path)
    expected = str(tmp_path / "in/a.txt")
    assert list_inputs(["in/a.txt"])[0].url == expected
    assert list_inputs(["./in/../in/a.txt"])[0].url == expected
    assert list_inputs([f"file://{tmp_path}/in/a.txt"])[0].url == expected
    assert list_inputs("in/a.txt")[0].url == expected  # one path given as a bare string


def test_list_keeps_protocol_of_remote_urls() -> None:
    root = f"memory:///mrk8s-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe(f"{root}/d/a.txt", b"one\ntwo\n")
        fs.pipe(f"{root}/d/_SUCCESS", b"")
        files = list_inputs([f"{root}/d"])
        assert [f.url for f in files] == [f"{root}/d/a.txt"]
        assert files[0].url.startswith("memory://")
        splits = plan_splits(files, target_splits=3)
        assert lines_of(splits) == ["one", "two"]
    finally:
        fs.rm(root, recursive=True)


def test_missing_path_names_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"input '.*foo\.txt' does not exist: check the path, or quote a glob"
    ):
        list_inputs([str(tmp_path / "foo.txt")])


def test_empty_directory_and_unmatched_glob_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "only-hidden/_SUCCESS", b"")
    with pytest.raises(InputError, match=r"input directory '.*empty' contains no files"):
        list_inputs([str(tmp_path / "empty")])
    with pytest.raises(InputError, match=r"input directory '.*only-hidden' contains no files"):
        list_inputs([str(tmp_path / "only-hidden")])
    with pytest.raises(InputError, match=r"input glob '.*\*\.csv' matches no file"):
        list_inputs([str(tmp_path / "*.csv")])


def test_unknown_protocol_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"cannot open input 'nosuchproto://x'"):
        list_inputs(["nosuchproto://x"])


# ----------------------------------------------------------------- planning


def test_plan_text_byte_ranges(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", b"x" * 100)
    b = write(tmp_path / "b.jsonl", b"{}\n" * 10)  # 30 bytes
    write(tmp_path / "empty.txt", b"")
    files = list_inputs([a, b, str(tmp_path / "empty.txt")])

    # ceil(130 / 4) = 33 bytes per split.
    splits = plan_splits(files, target_splits=4)
    assert [(s.url, s.format, s.start, s.end, s.size) for s in splits] == [
        (a, "text", 0, 33, 33),
        (a, "text", 33, 66, 33),
        (a, "text", 66, 99, 33),
        (a, "text", 99, 100, 1),
        (b, "jsonl", 0, 30, 30),
    ]
    # max_split_bytes caps the split size.
    splits = plan_splits(files, target_splits=1, max_split_bytes=40)
    assert [(s.start, s.end) for s in splits] == [(0, 40), (40, 80), (80, 100), (0, 30)]
    # Many more splits wanted than bytes: one byte each.
    assert len(plan_splits(files, target_splits=1000)) == 130


def test_plan_whole_file_and_empty_inputs(tmp_path: Path) -> None:
    gz = write(tmp_path / "a.txt.gz", gzip.compress(b"x\n" * 1000))
    c = write(tmp_path / "a.csv", b"a,b\n1,2\n")
    write(tmp_path / "e.csv", b"")
    write(tmp_path / "e.txt.gz", b"")
    files = list_inputs([gz, c, str(tmp_path / "e.csv"), str(tmp_path / "e.txt.gz")])
    splits = plan_splits(files, target_splits=8)
    assert splits == [
        Split(gz, "text", 0, -1, "gzip", os.path.getsize(gz)),
        Split(c, "csv", 0, -1, None, 8),
    ]
    assert plan_splits([], target_splits=4) == []
    with pytest.raises(ValueError, match="target_splits"):
        plan_splits(files, target_splits=0)


def test_plan_splits_round_trip_through_json(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", b"a\nb\nc\n")
    for split in plan_splits(list_inputs([f]), target_splits=3):
        assert Split.from_json(json.loads(json.dumps(split.to_json()))) == split


# ------------------------------------------------------------- text reading


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 10, ["ab", "cd", "", "ef"]),
        (0, 1, ["ab"]),
        (0, 3, ["ab"]),  # the line starting at 3 belongs to the next split
        (1, 3, []),  # starts mid-line, and no line starts in [1, 3)
        (1, 4, ["cd"]),
        (2, 4, ["cd"]),  # byte 2 is the newline, so the line at 3 is ours
        (3, 4, ["cd"]),
        (4, 7, []),
        (4, 8, [""]),
        (6, 8, [""]),
        (7, 9, ["", "ef"]),
        (8, 9, ["ef"]),  # the last line runs past end
        (9, 10, []),
    ],
)
def test_read_lines_ownership_exact(
    tmp_path: Path, start: int, end: int, expected: list[str]
) -> None:
    data = b"ab\ncd\r\n\nef"  # lines "ab", "cd", "", "ef" start at 0, 3, 7, 8
    path = write(tmp_path / "t.txt", data)
    assert oracle_split_lines(data, start, end) == expected
    split = Split(path, "text", start, end, None, end - start)
    for chunk in (1, 2, 3, 1024):
        assert list(read_lines(split, chunk_bytes=chunk)) == expected
        assert table_lines_of([split], chunk_bytes=chunk) == expected


@pytest.mark.parametrize("seed", range(24))
def test_read_lines_random_files_any_split_count(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = random_content(rng)
    path = write(tmp_path / "r.txt", data)
    expected = oracle_lines(data)
    files = list_inputs([path])
    counts = {1, 2, 3, 7, 16, max(1, len(data)), rng.randint(1, 64)}
    lines_at = oracle_line_offsets(data)
    for target in sorted(counts):
        splits = plan_splits(files, target_splits=target)
        assert sum(s.size for s in splits) == len(data)
        chunk = rng.choice([1, 2, 5, 17, 4096])
        assert lines_of(splits, chunk_bytes=chunk) == expected, (target, chunk)
        assert table_lines_of(splits, chunk_bytes=chunk, batch_rows=3) == expected
        for split in splits:
            owned = [line for offset, line in lines_at if split.start <= offset < split.end]
            assert list(read_lines(split)) == owned


def test_read_lines_edge_files(tmp_path: Path) -> None:
    cases = {
        b"": [],
        b"\n": [""],
        b"\n\n": ["", ""],
        b"\r\n": [""],
        b"a": ["a"],
        b"a\r": ["a"],
        b"a\r\r\n": ["a\r"],
        b"a\rb\n": ["a\rb"],
        b"a\n\nb\n": ["a", "", "b"],
        "\u00e9\n\xff".encode("latin-1"): ["\ufffd", "\ufffd"],
    }
    for i, (data, expected) in enumerate(cases.items()):
        assert oracle_lines(data) == expected
        path = write(tmp_path / f"e{i}.txt", data)
        splits = plan_splits(list_inputs([path]), target_splits=3)
        assert lines_of(splits) == expected, data
        assert table_lines_of(splits) == expected, data


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_text_round_trip(
    tmp_path: Path, suffix: str, compress: Callable[[bytes], bytes]
) -> None:
    rng = random.Random(7)
    data = b"".join(random_content(rng) + b"\n" for _ in range(20))
    path = write(tmp_path / f"c.txt{suffix}", compress(data))
    splits = plan_splits(list_inputs([path]), target_splits=8)
    assert len(splits) == 1
    assert splits[0].end == -1 and splits[0].compression == ("gzip" if suffix == ".gz" else "bz2")
    assert splits[0].size == os.path.getsize(path)
    assert lines_of(splits, chunk_bytes=100) == oracle_lines(data)
    assert table_lines_of(splits, chunk_bytes=100) == oracle_lines(data)
    assert list(read_records(splits[0])) == oracle_lines(data)


def test_reading_memory_stays_bounded_by_chunk(tmp_path: Path) -> None:
    line = b"0123456789" * 50 + b"\n"
    path = write(tmp_path / "big.txt", line * 8000)  # about 4 MB
    split = plan_splits(list_inputs([path]), target_splits=1)[0]
    for read in (read_lines, read_tables):
        tracemalloc.start()
        try:
            count = 0
            for item in read(split, chunk_bytes=64 * 1024):
                count += 1 if isinstance(item, str) else item.num_rows
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == 8000
        assert peak < 1_500_000, (read.__name__, peak)


def test_read_tables_text_batches_are_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"".join(b"%d\n" % i for i in range(1000)))
    split = plan_splits(list_inputs([path]), target_splits=1)[0]
    tables = list(read_tables(split, batch_rows=300))
    assert [t.num_rows for t in tables] == [300, 300, 300, 100]
    assert pa.concat_tables(tables).column("line").to_pylist() == [str(i) for i in range(1000)]


# ------------------------------------------------------------ jsonl records


def jsonl_rows(rng: random.Random, n: int) -> list[dict[str, object]]:
    return [
        {"id": i, "word": rng.choice(["a", "b\u00e9", "c d"]), "x": rng.random(), "ok": i % 2 == 0}
        for i in range(n)
    ]


def test_jsonl_records_and_tables(tmp_path: Path) -> None:
    rows = jsonl_rows(random.Random(3), 200)
    text = "".join(json.dumps(r) + ("\r\n" if i % 3 else "\n") for i, r in enumerate(rows))
    text = text.replace("\n", "\n\n", 1)  # one blank line, which is skipped
    path = write(tmp_path / "r.jsonl", text.encode())
    with open(path, encoding="utf-8") as f:
        expected = [json.loads(line) for line in f if line.strip()]
    assert expected == rows
    for target in (1, 3, 17):
        splits = plan_splits(list_inputs([path]), target_splits=target)
        assert [r for s in splits for r in read_records(s)] == expected
        tables = [t for s in splits for t in read_tables(s, chunk_bytes=500)]
        assert [r for t in tables for r in t.to_pylist()] == expected


def test_jsonl_gzip_records(tmp_path: Path) -> None:
    rows = jsonl_rows(random.Random(4), 50)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path = write(tmp_path / "r.jsonl.gz", gzip.compress(data))
    (split,) = plan_splits(list_inputs([path]), target_splits=4)
    assert list(read_records(split)) == rows
    assert pa.concat_tables(read_tables(split)).to_pylist() == rows


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", b'{"a": 1}\n{"a": oops}\n')
    (split,) = plan_splits(list_inputs([path]), target_splits=1)
    with pytest.raises(InputError, match=r"line 2 of .*bad\.jsonl.*not valid JSON.*oops"):
        list(read_records(split))
    with pytest.raises(InputError, match=r"cannot parse JSON lines input .*bad\.jsonl"):
        list(read_tables(split))


# ---------------------------------------------------------------------- csv


def test_csv_records_equal_csv_module(tmp_path: Path) -> None:
    rows = [
        ["id", "name", "note", "n"],
        ["1", "alice", "plain", "3"],
        ["2", "b\u00f6b", 'has, comma and "quotes"', ""],
        ["3", "carol", "two\nlines", "x"],
        ["4", "", "", "5"],
    ]
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    (split,) = plan_splits(list_inputs([str(path)]), target_splits=4)
    assert split.end == -1
    with open(path, newline="", encoding="utf-8") as f:
        expected = list(csv.DictReader(f))
    assert list(read_records(split)) == expected
    # Tables are pyarrow's own parse, types inferred.
    assert pa.concat_tables(read_tables(split)).equals(
        pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
    )


def test_csv_gzip_records(tmp_path: Path) -> None:
    data = "k,v\n" + "".join(f"w{i},{i}\n" for i in range(3000))
    path = write(tmp_path / "t.csv.gz", gzip.compress(data.encode()))
    (split,) = plan_splits(list_inputs([path]), target_splits=4)
    assert split.compression == "gzip"
    assert list(read_records(split)) == [{"k": f"w{i}", "v": str(i)} for i in range(3000)]
    tables = list(read_tables(split, batch_rows=1000))
    assert max(t.num_rows for t in tables) <= 1000
    assert pa.concat_tables(tables).column("v").to_pylist() == list(range(3000))


def test_ragged_csv_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", b"a,b\n1,2\n3\n")
    (split,) = plan_splits(list_inputs([path]), target_splits=1)
    with pytest.raises(InputError, match=r"cannot parse CSV input .*ragged\.csv.*number of"):
        list(read_records(split))


# ------------------------------------------------------------------ parquet


def parquet_table(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "word": [f"w{i % 17}" for i in range(n)],
            "maybe": [None if i % 5 == 0 else i * 0.5 for i in range(n)],
        }
    )


def test_parquet_row_group_splits(tmp_path: Path) -> None:
    table = parquet_table(1000)
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path, row_group_size=100)
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == 10
    files = list_inputs([path])
    expected = pq.read_table(path)

    for target, max_bytes in [(1, 2**40), (3, 2**40), (10, 2**40), (100, 2**40), (1, 1)]:
        splits = plan_splits(files, target_splits=target, max_split_bytes=max_bytes)
        # Consecutive, non-empty row-group ranges covering the file.
        assert splits[0].start == 0 and splits[-1].end == 10
        assert all(a.end == b.start for a, b in itertools.pairwise(splits))
        assert all(s.start < s.end and s.format == "parquet" for s in splits)
        budget = max(1, min(max_bytes, -(-sum(_rg_bytes(meta)) // target)))
        for s in splits:
            sizes = _rg_bytes(meta)[s.start : s.end]
            assert len(sizes) == 1 or sum(sizes) <= budget
        got = pa.concat_tables(t for s in splits for t in read_tables(s, batch_rows=64))
        assert got.equals(expected)
        assert [r for s in splits for r in read_records(s)] == expected.to_pylist()
    assert len(plan_splits(files, target_splits=1)) == 1
    assert len(plan_splits(files, target_splits=100)) == 10
    assert len(plan_splits(files, target_splits=5)) == 5


def _rg_bytes(meta: pq.FileMetaData) -> list[int]:
    return [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]


def test_parquet_batches_are_bounded(tmp_path: Path) -> None:
    path = str(tmp_path / "t.parquet")
    pq.write_table(parquet_table(5000), path)
    (split,) = plan_splits(list_inputs([path]), target_splits=1)
    tables = list(read_tables(split, batch_rows=700))
    assert all(t.num_rows <= 700 for t in tables)
    assert sum(t.num_rows for t in tables) == 5000


def test_not_a_parquet_file_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path / "fake.parquet", b"not parquet at all")
    with pytest.raises(InputError, match=r"Parquet footer of input '.*fake\.parquet'"):
        plan_splits(list_inputs([path]), target_splits=2)


# -------------------------------------------------------------------- arrow


@pytest.mark.parametrize("kind", ["file", "stream", "feather"])
def test_arrow_ipc_records_and_tables(tmp_path: Path, kind: str) -> None:
    table = parquet_table(3000)
    path = tmp_path / f"t.{'feather' if kind == 'feather' else 'arrow'}"
    if kind == "feather":
        feather.write_feather(table, str(path), chunksize=1000)
    else:
        opener = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
        with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=1000):
                writer.write_batch(batch)
    (split,) = plan_splits(list_inputs([str(path)]), target_splits=4)
    assert split.format == "arrow" and split.end == -1
    tables = list(read_tables(split, batch_rows=400))
    assert all(t.num_rows <= 400 for t in tables)
    assert pa.concat_tables(tables).equals(table)
    assert list(read_records(split)) == table.to_pylist()


def test_not_an_arrow_file_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path / "fake.arrow", b"this is not arrow")
    (split,) = plan_splits(list_inputs([path]), target_splits=1)
    with pytest.raises(InputError, match=r"cannot read Arrow input .*fake\.arrow"):
        list(read_tables(split))


def test_unknown_split_format_is_refused(tmp_path: Path) -> None:
    split = Split(write(tmp_path / "x", b"a\n"), "shuffle")
    with pytest.raises(InputError, match="not an input format"):
        list(read_records(split))
    with pytest.raises(InputError, match="not an input format"):
        list(read_tables(split))
