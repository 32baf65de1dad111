"""Jobs whose input, shuffle and output live on S3 (a real S3 protocol server on loopback).

Credentials come from the standard AWS environment variables (set by the
``s3_bucket`` fixture); only the endpoint goes in ``storage_options``, as a
user pointing mrk8s at MinIO or another S3-compatible store would do.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

import mrk8s
from tests.conftest import EXAMPLES
from tests.s3 import S3Bucket
from tests.util import make_words

pytestmark = pytest.mark.timeout(180)


def test_wordcount_with_input_shuffle_and_output_on_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_bucket.endpoint}}
    fs = s3fs.S3FileSystem(**options)
    text = make_words(40_000, vocab=500, seed=21)
    fs.pipe(f"{s3_bucket.url}/in/words.txt", text.encode())

    result = mrk8s.run(
        str(EXAMPLES / "wordcount.py"),
        [f"{s3_bucket.url}/in/"],
        output=f"{s3_bucket.url}/out",
        shuffle_dir=f"{s3_bucket.url}/shuffle",
        storage_options=options,
        workers=2,
        reducers=3,
        max_split_bytes=64 << 10,
        memory_per_worker=1 << 20,
    )

    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket.url}/out"))
    assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002", "summary.json"]
    got = dict(result.records(options))
    assert got == dict(collections.Counter(text.lower().split()))
    summary = json.loads(fs.cat(f"{s3_bucket.url}/out/summary.json"))
    assert summary["stages"]["step0-map"]["tasks"] > 2
    # Shuffle data is removed after success; no staging prefix is left behind.
    assert not fs.exists(f"{s3_bucket.url}/shuffle/{result.job_id}")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(s3_bucket.url)) == ["in", "out"]


@pytest.mark.parametrize("client", ["s3fs", "arrow"])
def test_transient_s3_faults_are_retried(
    s3_bucket: S3Bucket, tmp_path: Path, client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 4th request to S3 fails (503, 500 or a dropped connection): same answer,
    with s3fs and with Arrow's own client (shuffle/s3native.py, the worker image's)."""
    import s3fs

    monkeypatch.setenv("MRK8S_S3_CLIENT", client)  # the workers start inside mrk8s.run

    from tests.faultproxy import fault_proxy

    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_bucket.endpoint})
    text = make_words(20_000, vocab=300, seed=22)
    direct.pipe(f"{s3_bucket.url}/in/words.txt", text.encode())
    with fault_proxy(s3_bucket.endpoint, every=4) as (proxy, counter):
        options = {"client_kwargs": {"endpoint_url": proxy}}
        result = mrk8s.run(
            str(EXAMPLES / "wordcount.py"),
            [f"{s3_bucket.url}/in/words.txt"],
            output=f"{s3_bucket.url}/out",
            shuffle_dir=f"{s3_bucket.url}/shuffle",
            storage_options=options,
            workers=2,
            reducers=2,
            max_split_bytes=32 << 10,
        )
    assert sum(counter.faults.values()) >= 8, counter.faults
    assert set(counter.faults) == {"503", "500", "drop"}
    assert dict(result.records({"client_kwargs": {"endpoint_url": s3_bucket.endpoint}})) == dict(
        collections.Counter(text.lower().split())
    )


def test_standard_aws_environment_is_enough(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ENDPOINT_URL and the credential variables, no --storage-options at all."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.pipe(f"{s3_bucket.url}/in.txt", b"a b\nb c\n")
    result = mrk8s.run(
        str(EXAMPLES / "wordcount.py"),
        [f"{s3_bucket.url}/in.txt"],
        output=f"{s3_bucket.url}/out",
        shuffle_dir=f"{s3_bucket.url}/shuffle",
        workers=1,
    )
    assert sorted(result.records()) == [("a", 1), ("b", 2), ("c", 1)]


def test_credentials_never_reach_the_plan(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """Keys given as storage options reach the workers but are not written to plan.json."""
    import s3fs

    options = {
        "client_kwargs": {"endpoint_url": s3_bucket.endpoint},
        "key": "testing",
        "secret": "a-secret-that-must-not-be-stored",
    }
    fs = s3fs.S3FileSystem(**options)
    fs.pipe(f"{s3_bucket.url}/in.txt", b"x y\ny\n")
    result = mrk8s.run(
        str(EXAMPLES / "wordcount.py"),
        [f"{s3_bucket.url}/in.txt"],
        output=f"{s3_bucket.url}/out",
        shuffle_dir=f"{s3_bucket.url}/shuffle",
        storage_options=options,
        job_id="secretive",
        keep_shuffle=True,
        workers=1,
    )
    assert sorted(result.records(options)) == [("x", 1), ("y", 2)]
    plan = fs.cat(f"{s3_bucket.url}/shuffle/secretive/plan.json").decode()
    assert "a-secret-that-must-not-be-stored" not in plan
    assert s3_bucket.endpoint in plan  # non-secret options are kept


def test_a_reducer_reads_each_map_output_on_s3_in_one_request(s3_bucket: S3Bucket) -> None:
    """An unsorted partition larger than a local piece (32 MiB) comes off S3 in one
    ranged GET per map output: pieces from an object store take the reducer's
    whole share, since each piece costs a request per map output."""
    from mrk8s.bench import shuffle_bench as bench
    from tests.s3 import server_log

    argv = ["--size", "40MiB", "--maps", "2", "--reducers", "1", "--workers", "2",
            "--repeat", "1", "--no-warmup", "-q", "--shuffle-dir", f"{s3_bucket.url}/shuffle",
            "--storage-options", json.dumps(s3_bucket.storage_options)]  # fmt: skip
    args = bench.shuffle_parser().parse_args(argv)
    settings = bench.settings_from_args(args, s3_bucket.storage_options)
    with server_log(s3_bucket) as seen:
        [line] = bench.run_shuffle_bench(settings)
    assert line["verified"], line["problems"]
    assert line["shuffle_bytes"] > 36 << 20  # more than one local piece
    reads = collections.Counter(
        target.split("?")[0].rsplit("/", 1)[-1].split("-a")[0]  # map-00000-a1.arrow: map-00000
        for method, target in seen
        if method == "GET" and "/s0/map-" in target
    )
    assert reads == {"map-00000": 1, "map-00001": 1}, seen
