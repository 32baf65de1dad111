"""Request and response bodies of the gateway's API (the OpenAPI spec is generated from these).

Field-level checks that need nothing but the value (ranges, lengths, the
shape of a size) live here, so FastAPI answers 422 with the field's name
before a route runs; checks that need the database or the disk (does the
artifact exist, is the queue known) are made by the routes
(:mod:`mrk8s.gateway.jobs_api`) and answered in the same 422 shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]

#: A size as ``mrk8s run --memory-per-worker`` takes it: 512MiB, 2GB, 64m.
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*[kKmMgGtT]?i?[bB]?\s*$"


class Resources(BaseModel):
    """What one job may use (bounded per queue in the gateway's config)."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(
        None, ge=1, le=1024, description="worker processes (default: the queue's)"
    )
    memory_per_worker: str | None = Field(
        None,
        max_length=32,
        pattern=SIZE_PATTERN,
        description="memory budget of a worker, e.g. 512MiB (at least 16MiB)",
    )


class JobRequest(BaseModel):
    """A job to run: ``mrk8s run SCRIPT INPUTS --reducers R -- ARGS``."""

    model_config = ConfigDict(extra="forbid")

    script: str = Field(
        min_length=1,
        max_length=4096,
        description="the job script: an artifact id (POST /v1/artifacts) or a URL",
    )
    inputs: list[str] = Field(
        min_length=1,
        max_length=10_000,
        description="input URLs (globs allowed) or artifact ids",
    )
    reducers: int = Field(2, ge=1, le=100_000, description="reduce tasks per step")
    backend: str = Field("local", max_length=40, description="where it runs: local")
    queue: str | None = Field(None, max_length=200, description="default: the gateway's")
    args: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="the job's own options (its configure_args), e.g. ['--top', '5']",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(workers=None, memory_per_worker=None)
    )
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="an http(s) URL POSTed a signed JSON body when the job ends (see README)",
    )


class StageProgress(BaseModel):
    step: int
    stage: str
    tasks: int
    committed: int
    state: str
    failures: int


class Job(BaseModel):
    """A job as the gateway knows it."""

    id: str
    user: str
    queue: str
    backend: str
    cluster: str
    status: Status
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: list[StageProgress]
    counters: dict[str, dict[str, int]]
    timings: dict[str, float]
    launches: int = Field(description="times its process was started (more: resumed)")
    exit_code: int | None
    error: str | None
    output: str | None = Field(description="where its results are served, once SUCCEEDED")
    logs: str
    request: dict[str, Any]
    git_commit: str | None = Field(
        None, description="declarative mode: the commit of the queue's repository holding it"
    )
    manifest: str | None = Field(
        None, description="declarative mode: the manifests committed (YAML, several documents)"
    )
    callback_url: str | None = None
    webhook: WebhookDelivery | None = Field(None, description="null: no callback_url")


class WebhookDelivery(BaseModel):
    """How the call to a job's ``callback_url`` stands."""

    status: Literal["PENDING", "DELIVERED", "FAILED"]
    attempts: int
    error: str | None = Field(description="what went wrong at the last failed attempt")
    delivered_at: datetime | None


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class Artifact(BaseModel):
    id: str
    name: str
    size: int
    sha256: str


class JobEvent(BaseModel):
    """One server-sent event: a state change (or a progress update) of a job."""

    kind: Literal["status", "progress"]
    status: Status
    at: datetime
    message: str
    progress: list[StageProgress]


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    user: str | None
    method: str
    path: str
    status: int
    client: str | None


class AuditList(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None


class Health(BaseModel):
    status: Literal["ok"]
    jobs_running: int


class Problem(BaseModel):
    """An error: what was wrong and how to fix it."""

    detail: str


def problem(description: str) -> dict[str, Any]:
    """An error answer for a route's ``responses``: always JSON, whatever the route's success
    type is (FastAPI would document a ``model`` under an event stream's or a text route's
    media type). The app puts :class:`Problem` in the spec's components."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
