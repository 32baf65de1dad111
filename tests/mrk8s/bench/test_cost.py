"""The cost projection of ``mrk8s bench shuffle``: its arithmetic worked out by
hand on a fixed input, its flags, its JSON, and the request counts it starts
from against the S3 server's own log."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Callable

import pytest

from mrk8s.bench import cost
from mrk8s.bench import shuffle_bench as bench
from mrk8s.errors import UsageError
from tests.conftest import CLIResult
from tests.s3 import S3Bucket, request_kind, server_log

Run = Callable[..., CLIResult]

# 0.1 TB in 360 s on one node: 10x to a TB, so 3,600 node-seconds = 1 node-hour.
FIXED = cost.Measured(
    bytes=10**11,
    seconds=360.0,
    stored_bytes=73 * 2**30,  # x10 = 730 GB, held for 1 hour = 1 GB-month
    requests={
        "put": 100,
        "multipart_part": 300,
        "list": 100,  # PUT class: 500, x10 = 5,000
        "get": 2000,
        "head": 500,  # GET class: 2,500, x10 = 25,000
        "delete": 7,  # free
    },
    requests_source="measured",
)
PRICES = cost.Prices(
    node_hour=0.1,
    spot_hour=0.04,
    put_per_1000=0.005,
    get_per_1000=0.0004,
    storage_gb_month=0.023,
)


def test_the_arithmetic_on_a_fixed_input() -> None:
    p = cost.project(FIXED, PRICES)
    assert p.node_hours == pytest.approx(1.0)
    assert p.nodes_on_demand == pytest.approx(0.10)  # 1 node-hour x $0.10
    assert p.nodes_spot == pytest.approx(0.04)
    assert p.put_class_requests == pytest.approx(5000)
    assert p.get_class_requests == pytest.approx(25000)
    # 5,000 x $0.005/1,000 = $0.025; 25,000 x $0.0004/1,000 = $0.01
    assert p.requests == pytest.approx(0.035)
    assert p.storage_gb_months == pytest.approx(1.0)
    assert p.storage == pytest.approx(0.023)
    assert p.total_on_demand == pytest.approx(0.10 + 0.035 + 0.023)
    assert p.total_spot == pytest.approx(0.04 + 0.035 + 0.023)
    assert p.cloudsort_2022 == 0.97
    assert p.requests_source == "measured"


def test_more_nodes_store_the_map_outputs_for_less_time() -> None:
    from dataclasses import replace

    p = cost.project(FIXED, replace(PRICES, cluster_nodes=2))
    assert p.node_hours == pytest.approx(1.0)  # the same node-hours...
    assert p.storage == pytest.approx(0.0115)  # ...over half an hour: half a GB-month


def test_derived_requests_of_a_plan() -> None:
    # 10 MiB is below two parts of 16 MiB: one PUT. 40 MiB: a multipart upload of
    # 3 parts. 2 map outputs x 3 reducers: 6 ranged GETs; 5 tasks: 5 commit PUTs.
    got = cost.derived_requests([10 << 20, 40 << 20], 3, 16 << 20)
    assert got == {
        "put": 1 + 5,
        "multipart_create": 1,
        "multipart_part": 3,
        "multipart_complete": 1,
        "get": 6,
    }


@pytest.mark.parametrize(
    "field", ["node_hour", "spot_hour", "put_per_1000", "get_per_1000", "storage_gb_month"]
)
@pytest.mark.parametrize("value", [-0.01, math.nan, math.inf])
def test_a_price_that_cannot_be_one_is_refused(field: str, value: float) -> None:
    from dataclasses import replace

    with pytest.raises(UsageError, match=f"{cost.FLAGS[field]} {value:g}: a price is"):
        cost.project(FIXED, replace(PRICES, **{field: value}))


def test_price_flags_reach_the_projection() -> None:
    args = bench.shuffle_parser().parse_args(
        [
            "--price-node-hour",
            "1.5",
            "--price-spot-hour",
            "0.5",
            "--price-put",
            "0.01",
            "--price-get",
            "0.001",
            "--price-storage",
            "0.05",
            "--node-type",
            "c7i.large",
            "--node-vcpus",
            "2",
            "--cost-nodes",
            "4",
        ]
    )
    prices = bench.settings_from_args(args, {}).prices
    assert prices == cost.Prices(
        node_type="c7i.large",
        node_vcpus=2,
        node_hour=1.5,
        spot_hour=0.5,
        put_per_1000=0.01,
        get_per_1000=0.001,
        storage_gb_month=0.05,
        cluster_nodes=4,
    )
    assert bench.settings_from_args(bench.shuffle_parser().parse_args([]), {}).prices == (
        cost.Prices()
    )
    bad = bench.shuffle_parser().parse_args(["--price-get", "-1"])
    with pytest.raises(UsageError, match="--price-get -1"):
        bench.settings_from_args(bad, {})


SMALL = ("--size", "2MiB", "--maps", "3", "--reducers", "2", "--repeat", "1", "--workers", "2")


@pytest.mark.timeout(120)
def test_the_json_line_carries_the_projection(cli: Run) -> None:
    result = cli("bench", "shuffle", *SMALL, "--price-node-hour", "2", "--price-spot-hour", "1")
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    projection = line["cost_per_tb"]
    assert projection["prices"]["node_hour"] == 2 and projection["prices"]["spot_hour"] == 1
    # Local disk sends no request: the data path's are derived from the plan.
    assert line["store_requests_source"] == projection["requests_source"] == "derived"
    assert line["store_requests"]["get"] == 3 * 2  # a ranged GET per map output and reducer
    assert line["store_requests"]["put"] == 3 + 3 + 2  # map outputs, then commit records
    hours = line["seconds"] * 10**12 / line["bytes"] / 3600
    assert projection["node_hours"] == pytest.approx(hours, rel=1e-3)
    assert projection["nodes_on_demand"] == pytest.approx(2 * hours, rel=1e-3)
    assert projection["cloudsort_2022"] == 0.97
    assert "projected cost per TB shuffled" in result.stderr
    assert "CloudSort 2022 record (Exoshuffle on Ray): $0.97/TB" in result.stderr


@pytest.mark.timeout(60)
def test_a_negative_price_is_a_usage_error(cli: Run) -> None:
    result = cli("bench", "shuffle", "--price-node-hour", "-0.1")
    assert result.returncode == 2
    assert "--price-node-hour -0.1: a price is a finite number of dollars" in result.stderr


@pytest.mark.timeout(180)
def test_a_bench_on_s3_counts_the_requests_the_server_saw(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request of a whole bench job (driver and tasks, s3fs) is counted, by
    kind, as the S3 server's access log has it: nothing missed, nothing added."""
    monkeypatch.delenv("MRK8S_S3_CLIENT", raising=False)
    shuffle = ("--shuffle-dir", f"{s3_bucket.url}/shuffle")
    options = ("--storage-options", json.dumps(s3_bucket.storage_options))
    args = bench.shuffle_parser().parse_args([*SMALL, "--no-warmup", "-q", *shuffle, *options])
    settings = bench.settings_from_args(args, s3_bucket.storage_options)
    with server_log(s3_bucket) as seen:
        [line] = bench.run_shuffle_bench(settings)
    assert line["verified"], line["problems"]
    server = dict(collections.Counter(request_kind(m, t) for m, t in seen))
    assert line["store_requests_source"] == "measured"
    assert line["store_requests"] == server, seen
    assert line["store_requests_total"] == len(seen)
    # Every shuffled byte went up once and came down once (plus seeds, plan, records).
    assert line["store_bytes_written"] >= line["shuffle_bytes"]
    assert line["store_bytes_read"] >= line["shuffle_bytes"]
    # What the plan derives for local disk is a lower bound of what was sent.
    derived = cost.derived_requests([line["shuffle_bytes"] // 3] * 3, 2, 16 << 20)
    for kind, amount in derived.items():
        assert line["store_requests"].get(kind, 0) >= amount, kind
