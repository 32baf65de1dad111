"""The web page at ``/``: a submit form and a live table of jobs, with no front-end build.

The page is HTML rendered here from ``index.html`` (the gateway's queues and
backends fill the form's choices) plus one small script (``app.js``) and one
style sheet, served from this package. The script talks to the same
``/v1`` API as any client: it uploads the files (``POST /v1/artifacts``),
submits the job (``POST /v1/jobs``) and refreshes the table from
``GET /v1/jobs`` every second (a light poll: a browser's ``EventSource`` cannot
send the ``Authorization`` header, and one list answer covers every row).
With authentication on, the user types a token once; it is kept in the
browser's ``localStorage`` and sent as a bearer token. The page itself holds
no job data, so it needs no credentials.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from mrk8s.gateway.backends import KNOWN
from mrk8s.gateway.config import GatewayConfig

router = APIRouter(include_in_schema=False)

#: Scripts and styles only from the gateway itself: no inline code, nothing fetched elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _options(values: list[str], selected: str) -> str:
    return "".join(
        f'<option value="{html.escape(v)}"{" selected" if v == selected else ""}>'
        f"{html.escape(v)}</option>"
        for v in values
    )


def render(config: GatewayConfig) -> str:
    """The page for this gateway's config."""
    return Template(_asset("index.html")).substitute(
        queues=_options([q.name for q in config.queues], config.default_queue),
        backends=_options(list(KNOWN), "local"),
        auth="on" if config.auth_enabled else "off",
    )


@router.get("/", response_class=HTMLResponse)
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(render(request.app.state.config), headers=SECURITY_HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response("no such file", status_code=404, media_type="text/plain")
    return Response(_asset(name), media_type=media_type, headers=SECURITY_HEADERS)
