"""The S3 lower bound (``bench/s3_lower_bound.py``) and the request counts
(``bench/s3_traffic.py``), against a real moto server on loopback, in a
process of its own, that counts what it is sent."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("s3fs", reason="needs the s3 extra: pip install 'mrk8s[s3]'")
pytest.importorskip("moto.server", reason="needs moto[server]")

from bench import compare_shuffle, s3_lower_bound, s3_traffic
from bench.compare_shuffle import _LoopbackS3
from mrk8s.bench.jobs.shuffle_job import checksum, generate_chunk
from mrk8s.bench.shuffle_bench import task_chunks

MiB = 1 << 20


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[_LoopbackS3, Path]]:
    """A counting moto server with bucket ``mrk8s-bench``, and its request log."""
    log = tmp_path / "requests.tsv"
    server = _LoopbackS3(lambda port: s3_traffic.command(port, str(log)))
    try:
        yield server, log
    finally:
        server.close()


def _options(server: _LoopbackS3) -> dict[str, object]:
    env = server.env
    return {
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]},
    }


def _expected(size: int, maps: int) -> tuple[int, int, int]:
    """The checksum of every row the map tasks generate, worked out here."""
    total = [0, 0, 0]
    for task, chunks in enumerate(task_chunks(size // 98, maps, 98)):
        for chunk, rows in enumerate(chunks):
            table = generate_chunk(
                seed=1, task=task, chunk=chunk, rows=rows, key_type="int64", payload_bytes=90
            )
            for i, v in enumerate(checksum(table, 90)):
                total[i] += v
    return total[0], total[1], total[2]


def test_the_lower_bound_verifies_and_sends_only_what_it_must(
    counted: tuple[_LoopbackS3, Path],
) -> None:
    server, log = counted
    maps, reducers, part = 2, 3, 5 * MiB  # S3's smallest part
    size = 24 * MiB  # 12 MiB objects: at least two parts, so multipart uploads
    result = s3_lower_bound.lower_bound(
        size,
        2,
        storage_options=_options(server),
        bucket="mrk8s-bench",
        maps=maps,
        reducers=reducers,
        part_bytes=part,
    )
    server.close()  # every request answered and logged
    assert result["rows"] == size // 98
    assert tuple(result["checksum"]) == _expected(size, maps)
    assert result["verified"] is True

    requests = [
        r for r in s3_traffic.read_log(str(log)) if s3_traffic.belongs_to(r, result["s3_prefix"])
    ]
    assert all(r.status < 300 for r in requests)
    # Each object's size, from the bodies the server received for it.
    sizes: Counter[str] = Counter()
    for r in requests:
        if r.method == "PUT":
            sizes[r.key] += r.bytes_in
    assert len(sizes) == maps
    assert sorted(sizes.values()) == sorted(result["objects"])
    want: Counter[str] = Counter()
    for n in sizes.values():
        assert n >= 2 * part
        want.update(
            {"CreateMultipartUpload": 1, "UploadPart": math.ceil(n / part),
             "CompleteMultipartUpload": 1}
        )  # fmt: skip
    # One ranged GET per (object, reducer): no range is empty at this size.
    want["GetObject (ranged)"] = maps * reducers
    assert Counter(s3_traffic.kind(r) for r in requests) == want

    # The ranges of each object cover it exactly once: every byte read once, no more.
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in requests:
        if r.method == "GET":
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", r.range)
            assert match, r
            first, last = int(match[1]), int(match[2])
            assert r.bytes_out == last - first + 1
            ranges[r.key].append((first, last + 1))
    for key, spans in ranges.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == sizes[key]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))

    traffic = s3_traffic.report(s3_traffic.read_log(str(log)), result["s3_prefix"], size)
    assert traffic["s3_requests"] == sum(want.values())
    assert traffic["s3_requests_by_role"]["map_outputs"] == dict(want)
    assert traffic["s3_bytes_written"] == traffic["s3_bytes_read"] == sum(sizes.values())
    assert traffic["s3_requests_per_gib"] == round(sum(want.values()) / (size / 2**30), 1)


def test_both_s3_contestants_report_their_requests(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    argv = ["--sizes", "2MiB", "--repeat", "1", "--workers", "2",
            "--contestants", "mrk8s-s3,s3-lower-bound", "--out", str(out)]  # fmt: skip
    assert compare_shuffle.main(argv) == 0
    runs = {r["contestant"]: r for r in json.loads(out.read_text())["runs"]}
    m = r = compare_shuffle.MAPS
    for run in runs.values():
        assert "error" not in run, run
        assert run["verified"] is True
    # At 2 MiB each map object is far below two 16 MiB parts: one PUT each.
    lower = runs["s3-lower-bound"]
    assert lower["s3_requests_by_kind"] == {"PutObject": m, "GetObject (ranged)": m * r}
    assert lower["s3_requests_failed"] == 0
    ours = runs["mrk8s-s3"]
    assert ours["s3_prefix"] == f"mrk8s-bench/shuffle/{ours['job_id']}/"
    # mrk8s' map outputs take the same requests as the lower bound's objects...
    assert ours["s3_requests_by_role"]["map_outputs"] == lower["s3_requests_by_kind"]
    # ...and its commit records, plan, code and the bench's seeds come on top.
    assert ours["s3_requests_by_role"]["commit_records"]
    assert ours["s3_requests"] > lower["s3_requests"]
    assert ours["s3_bytes_written"] > lower["s3_bytes_written"] > 2 * MiB
    for run in (ours, lower):
        assert run["s3_requests_per_gib"] == round(run["s3_requests"] / (2 * MiB / 2**30), 1)
