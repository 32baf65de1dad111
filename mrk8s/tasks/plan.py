"""The job plan: plain, frozen, JSON-serialisable data.

The driver builds a :class:`JobPlan` and writes it (``plan.json``) with a copy
of the script into the job's directory in the shuffle store. A worker anywhere
needs only that directory's URL and its task index to do its part; nothing
here is ever pickled, so any process or version can read a plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, NewType

from mrk8s.io.split import Split

JobId = NewType("JobId", str)

#: Plan format version, bumped on any incompatible change.
PLAN_VERSION = 1


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One MapReduce step: which of the job's functions run, and how it shuffles."""

    index: int
    has_mapper: bool
    has_map_batch: bool
    has_combiner: bool
    has_reducer: bool
    has_reduce_batch: bool
    num_reducers: int
    partitioner: str  # "hash" | "range" | "custom"
    splits: tuple[Split, ...] = ()
    sort_keys: bool = True  # False: an unsorted hash shuffle (MapReduce.SORT_KEYS)
    #: True: reduce_batch takes a sorted partition in pieces of whole keys
    #: (MapReduce.REDUCE_BATCH_PIECES), not as one table.
    reduce_batch_pieces: bool = False

    @property
    def has_reduce(self) -> bool:
        return self.has_reducer or self.has_reduce_batch

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["splits"] = [s.to_json() for s in self.splits]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepPlan:
        data = dict(data)
        data["splits"] = tuple(Split.from_json(s) for s in data.get("splits", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything a worker needs to run any task of a job."""

    job_id: JobId
    job_dir: str  # URL of the job's directory in the shuffle store
    script_name: str  # file name of the shipped script inside job_dir/code/
    script_origin: str  # where the driver found the script (used if present and unchanged)
    script_sha256: str
    job_class: str
    job_args: dict[str, Any]
    steps: tuple[StepPlan, ...]
    output_url: str  # final output location ("" means stdout)
    staging_url: str  # where reducers of the last step write their parts
    output_format: str  # text | jsonl | parquet
    memory_per_worker: int  # bytes
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: names of the files/directories shipped under job_dir/files/ (see
    #: MapReduce.job_files); every task runs in a working directory holding them.
    files: tuple[str, ...] = ()
    #: sha256 over every input file's URL, size and fsspec ukey (mtime or ETag): a
    #: job resumed with --job-id refuses inputs that changed since it started.
    input_fingerprint: str = ""
    #: the script's directory zipped (scheduler.ship), under job_dir, for backends
    #: whose tasks run on other machines (Kubernetes); "" when not shipped. Tasks
    #: then load the script and the modules beside it from this package.
    code_package: str = ""
    version: int = PLAN_VERSION

    def step_dir(self, step: int) -> str:
        return f"{self.job_dir}/s{step}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [s.to_json() for s in self.steps]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPlan:
        data = dict(data)
        if data.get("version") != PLAN_VERSION:
            raise ValueError(
                f"plan version {data.get('version')!r} is not {PLAN_VERSION}: the job was "
                "planned by another mrk8s release; rerun it with --restart"
            )
        data["steps"] = tuple(StepPlan.from_json(s) for s in data["steps"])
        data["files"] = tuple(data.get("files", ()))
        data["job_id"] = JobId(data["job_id"])
        return cls(**data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> JobPlan:
        return cls.from_json(json.loads(text))
