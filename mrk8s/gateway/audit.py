"""The audit log: one row per API request, with who made it and how it was answered.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which
buffers streaming responses such as the server-sent events): it writes the
row, in a worker thread, when the response starts (before the client sees
it), or when the request ends if no response started. The user is the one
the auth dependency put on the request's state (none for a request refused 401). ``/healthz`` and
``/metrics`` are not audited: probes and scrapers call them every few
seconds, anonymously, and they show nothing about jobs.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrk8s.gateway.state import State

NOT_AUDITED = frozenset({"/healthz", "/metrics"})


class AuditMiddleware:
    def __init__(self, app: ASGIApp, state_getter: Any) -> None:
        self.app = app
        self.state_getter = state_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_AUDITED:
            await self.app(scope, receive, send)
            return
        status = 500
        written = False

        async def write() -> None:
            nonlocal written
            written = True
            client = scope.get("client")
            row = {
                "at": time.time(),
                "user": scope.get("state", {}).get("user"),
                "method": scope["method"],
                "path": scope["path"][:2000],
                "status": status,
                "client": f"{client[0]}:{client[1]}" if client else None,
            }
            state: State | None = self.state_getter()
            if state is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(state.add_audit, [row])

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Written before the answer starts, so a client that reads the audit log
                # right after an answer finds its request there.
                await write()
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            if not written:
                await write()
