"""Webhooks: a real local receiver that fails the first attempts and checks every signature.

The receiver computes the HMAC itself (hashlib and hmac, not the gateway's
code), so a wrong signature scheme fails here. The gateway is killed between
two attempts: the delivery's schedule is in the database, so the restarted
gateway carries on and the receiver ends with exactly the attempts the job's
record counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mrk8s.gateway import webhooks
from tests.gateway.conftest import DATABASES, EXAMPLES, submit, upload, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "webhook-secret"


class Receiver:
    """An HTTP server on loopback answering ``answers`` in turn (then 204 for good)."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-Mrk8s-Timestamp"]
                expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256)
                receiver.calls.append(
                    {
                        "body": body,
                        "headers": dict(self.headers),
                        "signed": hmac.compare_digest(
                            self.headers["X-Mrk8s-Signature"], "sha256=" + expected.hexdigest()
                        ),
                        "path": self.path,
                    }
                )
                code = receiver.answers.pop(0) if receiver.answers else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(answers: list[int]) -> Receiver:
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


HOOKS = {"secret": SECRET, "backoff_seconds": 1, "max_attempts": 5, "timeout_seconds": 5}


@pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)
def test_a_webhook_is_signed_retried_and_survives_a_restart(gateway, receiver):
    hook = receiver([503, 503])
    gw = gateway(webhooks=HOOKS)
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "a b a\n")
        job = submit(c, script=script, inputs=[data], reducers=1, callback_url=hook.url)
        assert job["webhook"] == {
            "status": "PENDING", "attempts": 0, "error": None, "delivered_at": None
        }  # fmt: skip
    jid = job["id"]
    wait_until(lambda: len(hook.calls) >= 1, timeout=180, what="a first webhook attempt")
    # Killed between the first attempt (503) and the second (a second later).
    gw.stop(signal.SIGKILL)
    gw.start()
    with gw.client("alice") as c:
        done = wait_until(
            lambda: (j := c.get(f"/v1/jobs/{jid}").json())["webhook"]["status"] != "PENDING" and j,
            timeout=120,
            what="the webhook delivered",
        )
    assert done["webhook"]["status"] == "DELIVERED", done["webhook"]
    assert done["webhook"]["attempts"] == 3 == len(hook.calls)
    assert done["webhook"]["error"] is None and done["webhook"]["delivered_at"]
    assert all(call["signed"] for call in hook.calls)
    assert len({call["body"] for call in hook.calls}) == 1, "every attempt sends the same body"
    call = hook.calls[-1]
    assert call["path"] == "/hook"
    assert call["headers"]["X-Mrk8s-Delivery"] == jid
    assert abs(int(call["headers"]["X-Mrk8s-Timestamp"]) - time.time()) < 120
    body = json.loads(call["body"])
    assert body["event"] == "job.ended" and body["delivery"] == jid
    assert body["job"]["id"] == jid and body["job"]["status"] == "SUCCEEDED"
    assert body["job"]["callback_url"] == hook.url
    # The receiver's helper agrees, and refuses a tampered body or another secret.
    assert webhooks.verify(SECRET, call["body"], call["headers"])
    assert not webhooks.verify(SECRET, call["body"] + b" ", call["headers"])
    assert not webhooks.verify("other", call["body"], call["headers"])


def test_a_refusing_receiver_fails_the_delivery_at_once(gateway, receiver):
    hook = receiver([400])
    gw = gateway(webhooks=HOOKS)
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "a\n")
        jid = submit(c, script=script, inputs=[data], reducers=1, callback_url=hook.url)["id"]
        done = wait_until(
            lambda: (j := c.get(f"/v1/jobs/{jid}").json())["webhook"]["status"] != "PENDING" and j,
            timeout=180,
            what="the webhook given up",
        )
    assert done["webhook"]["status"] == "FAILED" and done["webhook"]["attempts"] == 1
    assert "answered 400" in done["webhook"]["error"] and "gave up" in done["webhook"]["error"]
    assert len(hook.calls) == 1


def test_a_callback_url_is_checked_before_anything_runs(gateway):
    no_secret = gateway()
    with no_secret.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "a\n")
        body = {"script": script, "inputs": [data], "callback_url": "http://127.0.0.1:9/x"}
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 422
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "callback_url"] and "webhooks.secret" in err["msg"]
    signed = gateway(webhooks=HOOKS)
    with signed.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "a\n")
        for bad in ["ftp://host/x", "not a url", "http:///nohost"]:
            body = {"script": script, "inputs": [data], "callback_url": bad}
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 422, r.text
            assert "not an http:// or https:// URL" in r.json()["detail"][0]["msg"]
    assert no_secret.job_rows() == [] and signed.job_rows() == []


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    sig = webhooks.signature("k", 1700000000, body)
    assert sig == "sha256=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    headers = {"X-Mrk8s-Timestamp": "1700000000", "X-Mrk8s-Signature": sig}
    assert webhooks.verify("k", body, headers, now=1700000100)
    assert not webhooks.verify("k", body, headers, now=1700000000 + 301), "a replay"
    assert not webhooks.verify("k", body, {"X-Mrk8s-Signature": sig})
