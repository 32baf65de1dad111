"""The gateway's ASGI app: routers over a few shared objects, built by :func:`create_app`.

The app's state holds what the routes share: the config, the database
(:class:`~mrk8s.gateway.state.State`), the supervisor that runs the jobs,
the metrics and the change notifier of the event streams. The lifespan opens
the database, re-attaches the jobs that were running (the supervisor's
``recover``) and starts the supervisor's loop; on shutdown it stops the loop
and the event streams but leaves the jobs' processes running, so a restarted
gateway finds them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from mrk8s._version import __version__
from mrk8s.gateway import artifacts, jobs_api, models, web, webhooks
from mrk8s.gateway import state as st
from mrk8s.gateway.audit import AuditMiddleware
from mrk8s.gateway.auth import require_admin
from mrk8s.gateway.backends import Backend
from mrk8s.gateway.backends.local import LocalBackend
from mrk8s.gateway.config import GatewayConfig, User
from mrk8s.gateway.metrics import Metrics
from mrk8s.gateway.supervisor import Supervisor

logger = logging.getLogger(__name__)

#: Answers every route may give, so that the spec says what clients will meet. FastAPI
#: answers 400 (not 422) to a body it cannot decode, e.g. a request body that is not
#: JSON where JSON is expected (undocumented by FastAPI: declared here).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: models.problem("a body that could not be decoded"),
    401: models.problem("no credentials, or wrong ones"),
}


def upload_cap(app: ASGIApp, get_config: Any) -> ASGIApp:
    """Refuse an artifact upload whose declared size is over the cap before reading it."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/artifacts":
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length", b"")
            config: GatewayConfig = get_config()
            # The multipart envelope adds a few hundred bytes to the file itself.
            if declared.isdigit() and int(declared) > config.max_artifact_bytes + (64 << 10):
                exc = artifacts.too_large(config)
                response = Response(
                    models.Problem(detail=str(exc.detail)).model_dump_json(),
                    status_code=exc.status_code,
                    media_type="application/json",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def _openapi_with_problem(app: FastAPI) -> dict[str, Any]:
    """The generated spec, with the error body every route may answer among its schemas."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = models.Problem.model_json_schema()
        app.openapi_schema = spec
    return app.openapi_schema


def make_backends(config: GatewayConfig) -> dict[str, Backend]:
    """One backend per cluster of the config, by cluster name (the k8s ones connect lazily)."""
    backends: dict[str, Backend] = {}
    for cluster in config.clusters:
        if cluster.kind == "local":
            backends[cluster.name] = LocalBackend(
                config.state_dir / "shuffle", dict(config.storage_options)
            )
        elif cluster.kind == "k8s":
            from mrk8s.gateway.backends.k8s import K8sBackend

            backends[cluster.name] = K8sBackend(cluster)
        elif cluster.kind == "ray":
            from mrk8s.gateway.backends.ray import RayBackend

            backends[cluster.name] = RayBackend(cluster, config.state_dir / "shuffle")
    return backends


def create_app(config: GatewayConfig) -> FastAPI:
    config.state_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = st.State(config.database)
        await run_in_threadpool(db.sync_users, [(u.name, u.admin) for u in config.users])
        changes = jobs_api.Changes(asyncio.get_running_loop())
        backends = make_backends(config)
        supervisor = Supervisor(config, db, backends, on_change=changes.notify)
        app.state.rng = random.Random(config.routing_seed)
        app.state.db = db
        app.state.changes = changes
        app.state.supervisor = supervisor
        app.state.metrics = Metrics(db, supervisor)
        app.state.stopping = asyncio.Event()
        loop_task = asyncio.create_task(supervisor.run())
        # Declarative queues: their jobs go to the cluster from git (reconciler.py).
        reconciler_task = None
        if any(q.mode == "declarative" for q in config.queues):
            from mrk8s.gateway.reconciler import Reconciler

            app.state.reconciler = Reconciler(config, db, on_change=changes.notify)
            app.state.reconciler.supervisor = supervisor
            supervisor.cancel_applied = app.state.reconciler.cancel
            reconciler_task = asyncio.create_task(app.state.reconciler.run())
        logger.info("gateway state in %s, database %s", config.state_dir, db.engine.url)
        try:
            async with webhooks.running(config, db, jobs_api.webhook_record):
                yield
        finally:
            app.state.stopping.set()
            changes.notify_all()
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
            if reconciler_task is not None:
                reconciler_task.cancel()
                app.state.reconciler.wake()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciler_task
                app.state.reconciler.close()
            for backend in backends.values():
                backend.close()
            db.close()

    app = FastAPI(
        title="mrk8s job gateway",
        version=__version__,
        description="Submit mrk8s MapReduce jobs, follow them, read their logs and results.",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.config = config
    app.openapi = lambda: _openapi_with_problem(app)  # type: ignore[method-assign]
    app.include_router(artifacts.router)
    app.include_router(jobs_api.router)
    app.include_router(web.router)

    @app.get(
        "/v1/audit",
        response_model=models.AuditList,
        tags=["admin"],
        summary="Audit log",
        responses={403: models.problem("not an admin")},
    )
    async def audit_log(
        request: Request,
        _: Annotated[User, Depends(require_admin)],
        user: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> models.AuditList:
        before = jobs_api.decode_cursor(cursor)
        rows = await run_in_threadpool(
            request.app.state.db.audit_rows, user=user, before=before, limit=limit
        )
        return models.AuditList(
            entries=[models.AuditEntry(**{**r, "at": jobs_api._when(r["at"])}) for r in rows],
            next_cursor=jobs_api.encode_cursor(rows[-1]["seq"]) if len(rows) == limit else None,
        )

    @app.get("/healthz", response_model=models.Health, tags=["service"])
    async def healthz(request: Request) -> models.Health:
        db: st.State = request.app.state.db
        running = await run_in_threadpool(db.counts)
        n = sum(v for (s, _), v in running.items() if s == st.RUNNING)
        return models.Health(status="ok", jobs_running=n)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(AuditMiddleware, state_getter=lambda: getattr(app.state, "db", None))
    app.add_middleware(upload_cap, get_config=lambda: config)
    return app
