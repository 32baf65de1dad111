"""What shuffling a terabyte would cost, projected from one ``mrk8s bench shuffle`` run.

Called by :mod:`mrk8s.bench.shuffle_bench` after each run; pure arithmetic on
what the run measured (:class:`Measured`) and the prices it was given
(:class:`Prices`), nothing read from the network. The formula, per TB
(10**12 bytes of rows, as CloudSort counts a TB):

    scale            = 10**12 / bytes shuffled in the run
    node-hours / TB  = nodes x seconds x scale / 3600
    nodes $ / TB     = node-hours / TB x $ per node-hour    (on-demand, and spot)
    requests $ / TB  = (PUT-class requests x $ per 1,000 PUT
                        + GET-class requests x $ per 1,000 GET) / 1,000 x scale
    storage $ / TB   = stored GB x scale x lifetime hours / 730 x $ per GB-month
    lifetime hours   = seconds x scale / cluster nodes / 3600
    total $ / TB     = nodes + requests + storage

"nodes" is how many machines the run took (1: this one) and "cluster nodes"
how many the terabyte would be shuffled on: more nodes finish sooner, so the
map outputs live (and are billed) for less time; node-hours do not change.
Request counts and stored bytes grow in proportion to the bytes, as if the
terabyte were cut into the run's map outputs and segments of the same sizes
(more maps and reducers, not larger ones). See README, "What a terabyte would
cost".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mrk8s.errors import UsageError
from shuffle import storecount

#: Bytes in the TB a projection is given per (CloudSort's unit: 10**12 bytes).
TB = 10**12
#: Bytes in S3's billed GB: AWS counts storage in binary gigabytes (its S3 FAQ
#: works 10 TB out as 10,995,116,277,760 bytes).
GB = 2**30
#: Hours in S3's billing month (8,760 hours a year / 12).
HOURS_PER_MONTH = 730.0

#: CloudSort's record in 2022: Exoshuffle-CloudSort on Ray, 100 TB sorted for
#: $96.73 on 40 i4i.4xlarge workers with input and output on S3, $0.97 per TB
#: (sortbenchmark.org, Indy CloudSort 2022; the authors' announcement,
#: anyscale.com, "Ray breaks the $1/TB barrier", 2022). A sort reads and writes
#: its input and output on S3 besides the shuffle: not the same work as a shuffle
#: alone, the nearest public figure for it.
CLOUDSORT_2022_PER_TB = 0.97

#: Request kinds S3 bills at the PUT, COPY, POST, LIST rate; GET and HEAD go at the
#: GET rate ("GET, SELECT and all other requests"); DELETE and abort are free.
PUT_CLASS = (
    storecount.PUT,
    storecount.MULTIPART_CREATE,
    storecount.MULTIPART_PART,
    storecount.MULTIPART_COMPLETE,
    storecount.LIST,
    storecount.COPY,
)
GET_CLASS = (storecount.GET, storecount.HEAD, storecount.OTHER)
FREE = (storecount.DELETE, storecount.MULTIPART_ABORT)


#: The command-line flag of each :class:`Prices` field (``mrk8s bench shuffle``).
FLAGS = {
    "node_type": "--node-type",
    "node_vcpus": "--node-vcpus",
    "node_hour": "--price-node-hour",
    "spot_hour": "--price-spot-hour",
    "put_per_1000": "--price-put",
    "get_per_1000": "--price-get",
    "storage_gb_month": "--price-storage",
    "cluster_nodes": "--cost-nodes",
}


@dataclass(frozen=True)
class Prices:
    """Prices a projection uses; every one can be overridden on the command line.

    Each default names its source and the date it was read. None of them is
    fetched at run time: prices change, check them before relying on a figure.
    """

    node_type: str = "m7g.large"
    """The instance a node stands for: 2 vCPUs (Graviton3) and 8 GiB, the CPUs of
    the 2-core machine the README's runs were made on."""
    node_vcpus: int = 2
    """vCPUs of ``node_type`` (AWS's instance type table)."""
    node_hour: float = 0.0816
    """On-demand $ per hour of ``node_type``, Linux, us-east-1: $0.0816, from
    "Amazon EC2 On-Demand Pricing: Instance Families, ..." (factualminds.com),
    which quotes AWS's rate card of 2026-06-17."""
    spot_hour: float = 0.0326
    """Spot $ per hour of ``node_type``: AN ASSUMPTION, 40 % of the on-demand
    price. No dated spot price for it was found; AWS says spot runs "up to 90 %"
    below on-demand and changes every few minutes (aws.amazon.com/ec2/spot/pricing)."""
    put_per_1000: float = 0.005
    """$ per 1,000 PUT, COPY, POST or LIST requests, S3 Standard, us-east-1
    (aws.amazon.com/s3/pricing; the same in c3x.dev's "S3 request fees explained"
    and usage.ai's S3 cost guide, June 2026)."""
    get_per_1000: float = 0.0004
    """$ per 1,000 GET, HEAD and other requests, S3 Standard, us-east-1 (same sources)."""
    storage_gb_month: float = 0.023
    """$ per GB-month of S3 Standard, first 50 TB, us-east-1 (aws.amazon.com/s3/pricing,
    as the issue quotes it; not found again in a dated page here)."""
    cluster_nodes: int = 1
    """Nodes the terabyte is shuffled on, for how long its map outputs are stored."""

    def check(self) -> None:
        """A :class:`UsageError` naming the first price that cannot be one."""
        for name in ("node_hour", "spot_hour", "put_per_1000", "get_per_1000", "storage_gb_month"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(
                    f"{FLAGS[name]} {value:g}: a price is a finite number of dollars, zero or more"
                )
        for name in ("node_vcpus", "cluster_nodes"):
            if getattr(self, name) < 1:
                raise UsageError(f"{FLAGS[name]} {getattr(self, name)}: give at least 1")


@dataclass(frozen=True)
class Measured:
    """What one run measured (or derived), the projection's other input."""

    bytes: int
    """Bytes of rows shuffled (key and payload)."""
    seconds: float
    """The map and the reduce stage, end to end."""
    stored_bytes: int
    """Bytes of map outputs that lived in the store until the job ended."""
    requests: Mapping[str, int]
    """Object-store requests by kind (:mod:`shuffle.storecount`'s names)."""
    requests_source: str
    """``measured`` (counted as sent) or ``derived`` (what the plan would send)."""
    nodes: int = 1
    """Machines the run took."""


@dataclass(frozen=True)
class Projection:
    """Dollars and counts per TB (10**12 bytes), and what they came from."""

    node_hours: float
    nodes_on_demand: float
    nodes_spot: float
    put_class_requests: float
    get_class_requests: float
    requests: float
    storage_gb_months: float
    storage: float
    total_on_demand: float
    total_spot: float
    requests_source: str
    cloudsort_2022: float = CLOUDSORT_2022_PER_TB
    prices: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 6)
        return out

    def describe(self) -> str:
        """One line for people."""
        return (
            f"projected cost per TB shuffled: ${self.total_on_demand:.2f} on-demand, "
            f"${self.total_spot:.2f} spot ({self.node_hours:.2f} {self.prices['node_type']} "
            f"node-hours, {self.requests_source} requests ${self.requests:.3f}, storage "
            f"${self.storage:.4f}); CloudSort 2022 record (Exoshuffle on Ray): "
            f"${self.cloudsort_2022:.2f}/TB"
        )


def project(measured: Measured, prices: Prices) -> Projection:
    """The cost per TB of shuffling at the run's speed and request density."""
    prices.check()
    if measured.bytes <= 0 or measured.seconds <= 0:
        raise ValueError(f"nothing to project from: {measured.bytes} bytes in {measured.seconds} s")
    scale = TB / measured.bytes
    node_hours = measured.nodes * measured.seconds * scale / 3600
    put_class = sum(measured.requests.get(k, 0) for k in PUT_CLASS) * scale
    get_class = sum(measured.requests.get(k, 0) for k in GET_CLASS) * scale
    requests = (put_class * prices.put_per_1000 + get_class * prices.get_per_1000) / 1000
    lifetime_hours = measured.seconds * scale / prices.cluster_nodes / 3600
    gb_months = measured.stored_bytes * scale / GB * lifetime_hours / HOURS_PER_MONTH
    storage = gb_months * prices.storage_gb_month
    return Projection(
        node_hours=node_hours,
        nodes_on_demand=node_hours * prices.node_hour,
        nodes_spot=node_hours * prices.spot_hour,
        put_class_requests=put_class,
        get_class_requests=get_class,
        requests=requests,
        storage_gb_months=gb_months,
        storage=storage,
        total_on_demand=node_hours * prices.node_hour + requests + storage,
        total_spot=node_hours * prices.spot_hour + requests + storage,
        requests_source=measured.requests_source,
        prices=asdict(prices),
    )


def derived_requests(map_output_bytes: list[int], reducers: int, part_bytes: int) -> dict[str, int]:
    """The data path's requests a job would send to S3 through s3fs, for a run
    that sent none (local disk): each map output uploaded (one PUT below twice
    ``part_bytes``, else a multipart upload of parts of that size: s3fs's
    ``put_file``), one ranged
    GET per map output and reducer, one commit record PUT per task. Plans,
    listings, HEADs and removal are left out: a lower bound of what S3 would see.
    """
    out = dict.fromkeys(
        (
            storecount.PUT,
            storecount.MULTIPART_CREATE,
            storecount.MULTIPART_PART,
            storecount.MULTIPART_COMPLETE,
            storecount.GET,
        ),
        0,
    )
    for size in map_output_bytes:
        if size < 2 * part_bytes:
            out[storecount.PUT] += 1
        else:
            out[storecount.MULTIPART_CREATE] += 1
            out[storecount.MULTIPART_PART] += -(-size // part_bytes)
            out[storecount.MULTIPART_COMPLETE] += 1
    out[storecount.GET] += len(map_output_bytes) * reducers
    out[storecount.PUT] += len(map_output_bytes) + reducers
    return out
