"""The ``/v1/jobs`` routes: submit, look at, follow, list, cancel, read logs and output.

A user sees only their own jobs: another user's job answers 404, exactly as
a job that does not exist (its existence is not revealed); admins see all.
Database and disk work runs in worker threads, so the event loop stays free
for the event streams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from mrk8s.gateway import models, submit
from mrk8s.gateway import state as st
from mrk8s.gateway.auth import CurrentUser
from mrk8s.gateway.config import User
from mrk8s.gateway.gitops import GitError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: models.problem("no such job (or not yours)")}
MAX_PAGE = 500


def _when(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


def view(job: dict[str, Any]) -> models.Job:
    summary = job["summary"] or {}
    timings: dict[str, float] = {k: float(v) for k, v in (summary.get("timings") or {}).items()}
    if job["started_at"] is not None:
        timings["queued_seconds"] = round(job["started_at"] - job["created_at"], 3)
        end = job["finished_at"] or time.time()
        timings["run_seconds"] = round(end - job["started_at"], 3)
    return models.Job(
        id=job["id"],
        user=job["user"],
        queue=job["queue"],
        backend=job["backend"],
        cluster=job["cluster"],
        status=job["status"],
        created_at=_when(job["created_at"]),  # type: ignore[arg-type]
        started_at=_when(job["started_at"]),
        finished_at=_when(job["finished_at"]),
        progress=[models.StageProgress(**p) for p in job["progress"] or []],
        counters=summary.get("counters") or {},
        timings=timings,
        launches=job["launches"] or 0,
        exit_code=job["exit_code"],
        error=job["error"],
        output=f"/v1/jobs/{job['id']}/output" if job["status"] == st.SUCCEEDED else None,
        logs=f"/v1/jobs/{job['id']}/logs",
        request=job["spec"].get("request", {}),
        git_commit=job.get("git_commit"),
        manifest=job.get("manifest"),
        callback_url=job.get("callback_url"),
        webhook=_webhook_view(job),
    )


def webhook_record(job: dict[str, Any]) -> dict[str, Any]:
    """The job as a webhook's body carries it: as the API shows it, less the delivery."""
    return view(job).model_dump(mode="json", exclude={"webhook"})


def _webhook_view(job: dict[str, Any]) -> models.WebhookDelivery | None:
    from mrk8s.gateway.webhooks import status_of

    hook = status_of(job)
    if hook is None:
        return None
    return models.WebhookDelivery(**{**hook, "delivered_at": _when(hook["delivered_at"])})


def _visible(request: Request, user: User, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] | None = request.app.state.db.job(job_id)
    if job is None or (job["user"] != user.name and not user.admin):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r} of yours")
    return job


async def visible_job(request: Request, user: User, job_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_visible, request, user, job_id)


async def _visible_dependency(request: Request, user: CurrentUser, job_id: str) -> dict[str, Any]:
    return await visible_job(request, user, job_id)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": seq}).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        before = data["before"]
        if not isinstance(before, int) or isinstance(before, bool):
            raise ValueError("not an integer")
        return before
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as exc:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "cursor"),
                    "msg": "not a cursor this gateway gave: pass next_cursor of the last page "
                    "as it is, or no cursor for the first page",
                    "input": cursor,
                }
            ]
        ) from exc


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.Job,
    summary="Submit a job; answered at once, it runs later",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        503: models.problem("declarative queue: its git repository refused or failed"),
    },
)
async def create_job(
    request: Request, response: Response, user: CurrentUser, body: models.JobRequest
) -> models.Job:
    app = request.app
    started = time.perf_counter()
    try:
        job = await run_in_threadpool(
            submit.prepare, app.state.config, app.state.db, user, body, app.state.rng
        )
    except submit.Invalid as exc:
        raise RequestValidationError(exc.errors) from exc
    except GitError as exc:  # declarative mode: git refused or failed
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    app.state.supervisor.wake()
    if job.get("git_commit") and hasattr(app.state, "reconciler"):
        app.state.reconciler.wake()
    app.state.metrics.submit_seconds.observe(time.perf_counter() - started)
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return view(job)


@router.get("", response_model=models.JobList, summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    user: CurrentUser,
    owner: Annotated[str | None, Query(alias="user", max_length=200)] = None,
    status_: Annotated[models.Status | None, Query(alias="status")] = None,
    queue: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> models.JobList:
    before = decode_cursor(cursor)
    if not user.admin:
        if owner not in (None, user.name):
            return models.JobList(jobs=[], next_cursor=None)  # others' jobs are not shown
        owner = user.name
    rows = await run_in_threadpool(
        request.app.state.db.list_jobs,
        user=owner,
        status=status_,
        queue=queue,
        before=before,
        limit=limit,
    )
    more = len(rows) == limit
    return models.JobList(
        jobs=[view(r) for r in rows], next_cursor=encode_cursor(rows[-1]["seq"]) if more else None
    )


@router.get("/{job_id}", response_model=models.Job, responses=NOT_FOUND, summary="A job")
async def get_job(request: Request, user: CurrentUser, job_id: str) -> models.Job:
    return view(await visible_job(request, user, job_id))


@router.delete(
    "/{job_id}",
    response_model=models.Job,
    responses={**NOT_FOUND, 409: models.problem("already ended")},
    summary="Cancel a job: its processes are stopped when this answers; its record stays",
)
async def cancel_job(request: Request, user: CurrentUser, job_id: str) -> models.Job:
    job = await visible_job(request, user, job_id)
    cancelled = await run_in_threadpool(request.app.state.supervisor.cancel, job_id)
    job = await visible_job(request, user, job_id)
    if not cancelled:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"job {job_id} already ended: it is {job['status']}"
        )
    return view(job)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={**NOT_FOUND, 200: {"model": models.JobEvent}},
    summary="Server-sent events of the job's state changes, until it ends",
)
async def job_events(
    request: Request,
    user: CurrentUser,
    job_id: str,
    # Checked as a dependency, before the stream (and its 200) starts.
    job: Annotated[dict[str, Any], Depends(_visible_dependency)],
) -> AsyncIterator[Any]:
    app = request.app
    db: st.State = app.state.db
    try:
        after = int(request.headers.get("last-event-id", "0"))
    except ValueError:
        after = 0
    progress = None
    while True:
        changed = app.state.changes.subscribe(job_id)
        try:
            for ev in await run_in_threadpool(db.events, job_id, after):
                after = ev["seq"]
                job = await visible_job(request, user, job_id)
                progress = job["progress"]
                yield ServerSentEvent(
                    event="status",
                    id=str(ev["seq"]),
                    data=models.JobEvent(
                        kind="status",
                        status=ev["status"],
                        at=_when(ev["at"]),  # type: ignore[arg-type]
                        message=ev["message"],
                        progress=[models.StageProgress(**p) for p in progress or []],
                    ),
                )
            job = await visible_job(request, user, job_id)
            if job["status"] in st.TERMINAL and not await run_in_threadpool(
                db.events, job_id, after
            ):
                return
            if job["progress"] != progress:
                progress = job["progress"]
                yield ServerSentEvent(
                    event="progress",
                    data=models.JobEvent(
                        kind="progress",
                        status=job["status"],
                        at=datetime.now(UTC),
                        message="",
                        progress=[models.StageProgress(**p) for p in progress or []],
                    ),
                )
            if app.state.stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)
        finally:
            app.state.changes.unsubscribe(job_id, changed)


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses=NOT_FOUND,
    summary="The job's driver log (every launch), also after it ended",
)
async def job_logs(
    request: Request,
    user: CurrentUser,
    job_id: str,
    offset: Annotated[int, Query(ge=0, description="skip this many bytes")] = 0,
) -> PlainTextResponse:
    job = await visible_job(request, user, job_id)

    def read() -> bytes:
        try:
            with open(job["log_path"], "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    return PlainTextResponse(await run_in_threadpool(read))


@router.get(
    "/{job_id}/output",
    response_class=PlainTextResponse,
    responses={**NOT_FOUND, 409: models.problem("not SUCCEEDED")},
    summary="The job's results in the text format: json(key) TAB json(value) per line",
)
async def job_output(request: Request, user: CurrentUser, job_id: str) -> StreamingResponse:
    job = await visible_job(request, user, job_id)
    if job["status"] != st.SUCCEEDED:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job_id} is {job['status']}: its output is served once it SUCCEEDED",
        )
    chunks = request.app.state.supervisor.backend(job).output(job)

    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


class Changes:
    """Wakes the event streams of a job when its row changed (set from any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    def _notify(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def notify(self, job_id: str) -> None:
        self.loop.call_soon_threadsafe(self._notify, job_id)

    def notify_all(self) -> None:
        for job_id in list(self._waiters):
            self.loop.call_soon_threadsafe(self._notify, job_id)
