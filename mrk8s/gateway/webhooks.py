"""Webhooks: a job's ``callback_url`` is called once the job ends, signed and retried.

A job submitted with ``callback_url`` gets one delivery when it reaches
SUCCEEDED, FAILED or CANCELLED: an HTTP ``POST`` of a JSON body

    {"event": "job.ended", "delivery": JOB_ID, "job": {...the job, as GET /v1/jobs/ID...}}

with these headers:

- ``X-Mrk8s-Delivery``: the job id (a receiver may see a delivery twice, see
  below: this is its key for ignoring the second);
- ``X-Mrk8s-Timestamp``: when this attempt was signed, in whole seconds since
  the Unix epoch;
- ``X-Mrk8s-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the
  gateway's ``webhooks.secret``, of the timestamp, a dot and the raw body
  bytes (``f"{timestamp}.".encode() + body``).

A receiver verifies by computing the same HMAC over the bytes it received,
comparing in constant time, and refusing a timestamp more than a few minutes
old (a replay); :func:`verify` does exactly that.

A 2xx answer delivers it. A connection error, a timeout, 408, 409, 425, 429
or a 5xx is tried again after ``backoff_seconds``, doubling each time up to
``max_backoff_seconds``, until ``max_attempts``; any other answer (a 4xx: the
receiver refuses the request as it is) ends the delivery as FAILED at once.
The schedule is kept in the job's row (``webhook_status``,
``webhook_attempts``, ``webhook_next_at``, ``webhook_error``), so a
restarted gateway carries on where the last one stopped; an attempt cut off
by a gateway dying mid-call is made again, hence at-least-once delivery.
``GET /v1/jobs/{id}`` shows how the delivery stands (``webhook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from mrk8s.gateway import state as st
from mrk8s.gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"

#: Answers after which an attempt is made again (the others than 2xx end the delivery).
RETRY_STATUSES = frozenset({408, 409, 425, 429})

#: How often the deliverer looks for due deliveries.
PASS_SECONDS = 0.25

#: The longest a receiver may take to read a delivery's timestamp as fresh (:func:`verify`).
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Mrk8s-Signature`` value of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether a delivery's headers sign ``body`` with ``secret``, recently enough."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get("x-mrk8s-timestamp", "")
    given = lowered.get("x-mrk8s-signature", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(given, signature(secret, timestamp, body))


def check_callback(config: GatewayConfig, url: str | None) -> list[str]:
    """What is wrong with a job's ``callback_url`` (nothing: an empty list)."""
    if url is None:
        return []
    problems = []
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{url!r} is not an http:// or https:// URL with a host")
    if not config.webhooks.secret:
        problems.append(
            "this gateway signs no webhooks: set webhooks.secret in its config (or "
            "$MRK8S_GATEWAY_WEBHOOK_SECRET) to let jobs have a callback_url"
        )
    return problems


def backoff(config: GatewayConfig, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    hooks = config.webhooks
    return float(min(hooks.max_backoff_seconds, hooks.backoff_seconds * 2 ** (attempts - 1)))


def body_of(job_id: str, record: dict[str, Any]) -> bytes:
    """The JSON body of a job's delivery (the same bytes on every attempt).

    ``record`` is the job as the API shows it, without its ``webhook`` field.
    """
    doc = {"event": "job.ended", "delivery": job_id, "job": record}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Deliverer:
    """Calls due webhooks, one task per gateway; started and stopped by the app's lifespan.

    ``describe`` turns a job's row into the job as the API shows it (the routes' view,
    handed in so that this module does not import the routes).
    """

    def __init__(
        self,
        config: GatewayConfig,
        state: st.State,
        describe: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.config = config
        self.state = state
        self.describe = describe
        self.delivered = 0

    async def run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self.config.webhooks.timeout_seconds) as client:
            while True:
                try:
                    due = await asyncio.to_thread(self.state.webhooks_due, time.time())
                    if due:
                        await asyncio.gather(*(self._attempt(client, job) for job in due))
                except Exception:
                    logger.exception("gateway webhook pass failed; trying again")
                await asyncio.sleep(PASS_SECONDS)

    async def _attempt(self, client: Any, job: dict[str, Any]) -> None:
        import httpx

        hooks = self.config.webhooks
        attempts = int(job["webhook_attempts"] or 0)
        lease = time.time() + hooks.timeout_seconds + 30
        if not await asyncio.to_thread(self.state.claim_webhook, job["id"], attempts, lease):
            return
        attempts += 1
        body = body_of(job["id"], self.describe(job))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mrk8s-gateway",
            "X-Mrk8s-Delivery": job["id"],
            "X-Mrk8s-Timestamp": timestamp,
            "X-Mrk8s-Signature": signature(hooks.secret, timestamp, body),
        }
        url = job["callback_url"]
        retry = True
        try:
            r = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            error = f"attempt {attempts}: {type(exc).__name__}: {exc}".rstrip(": ")
        else:
            if 200 <= r.status_code < 300:
                logger.info("job %s: webhook delivered to %s", job["id"], url)
                await asyncio.to_thread(
                    self.state.update_job,
                    job["id"],
                    webhook_status=DELIVERED,
                    webhook_next_at=None,
                    webhook_error=None,
                    webhook_delivered_at=time.time(),
                )
                self.delivered += 1
                return
            retry = r.status_code in RETRY_STATUSES or r.status_code >= 500
            error = f"attempt {attempts}: {url} answered {r.status_code} {r.text[:200]}".rstrip()
        if retry and attempts < hooks.max_attempts:
            wait = backoff(self.config, attempts)
            logger.info("job %s: webhook %s; again in %.1f s", job["id"], error, wait)
            fields: dict[str, Any] = {"webhook_next_at": time.time() + wait}
        else:
            why = "" if retry else " (not an answer to retry)"
            error = f"{error}{why}; gave up after {attempts} attempt(s)"
            logger.warning("job %s: webhook %s", job["id"], error)
            fields = {"webhook_status": FAILED, "webhook_next_at": None}
        await asyncio.to_thread(self.state.update_job, job["id"], webhook_error=error, **fields)


def status_of(job: dict[str, Any]) -> dict[str, Any] | None:
    """How a job's webhook delivery stands, for the API (None: the job has no callback)."""
    if not job.get("callback_url"):
        return None
    delivered = job.get("webhook_delivered_at")
    return {
        "status": job.get("webhook_status") or PENDING,
        "attempts": int(job.get("webhook_attempts") or 0),
        "error": job.get("webhook_error"),
        "delivered_at": delivered,
    }


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig,
    state: st.State,
    describe: Callable[[dict[str, Any]], dict[str, Any]],
) -> Any:
    """The deliverer, running for the body of the ``async with``."""
    task = asyncio.create_task(Deliverer(config, state, describe).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
