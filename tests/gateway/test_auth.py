"""Who may do what: 401 without credentials, 404 for another user's job, admins, the audit log."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import DATABASES, EXAMPLES, follow, submit, upload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # The state tests: against SQLite and a real PostgreSQL server (tests/gateway/postgres.py).
    pytest.mark.parametrize("gateway_db", DATABASES, indirect=True),
]


def test_no_or_wrong_credentials_are_401_and_basic_works(gateway):
    gw = gateway()
    with gw.client(None) as anon:
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs/x"),
            ("DELETE", "/v1/jobs/x"),
            ("GET", "/v1/jobs/x/events"),
            ("GET", "/v1/jobs/x/logs"),
            ("GET", "/v1/jobs/x/output"),
            ("POST", "/v1/artifacts"),
            ("GET", "/v1/audit"),
        ]:
            r = anon.request(method, path)
            assert r.status_code == 401, (method, path, r.text)
            assert "Bearer" in r.headers["www-authenticate"]
            assert "no credentials" in r.json()["detail"]
        wrong = anon.get("/v1/jobs", headers={"Authorization": "Bearer alice-tokeN"})
        assert wrong.status_code == 401 and "wrong credentials" in wrong.json()["detail"]
        assert anon.get("/v1/jobs", auth=("bob", "nope")).status_code == 401
        assert anon.get("/v1/jobs", auth=("bob", "bob-password")).status_code == 200
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/metrics").status_code == 200


def test_another_users_job_is_404_and_admins_see_all(gateway):
    gw = gateway()
    with gw.client("alice") as alice, gw.client("bob") as bob, gw.client("root") as root:
        script = upload(alice, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(alice, "in.txt", "x y x\n")
        job = submit(alice, script=script, inputs=[data])
        jid = job["id"]
        follow(alice, jid)
        for method, path in [
            ("GET", f"/v1/jobs/{jid}"),
            ("GET", f"/v1/jobs/{jid}/events"),
            ("GET", f"/v1/jobs/{jid}/logs"),
            ("GET", f"/v1/jobs/{jid}/output"),
            ("DELETE", f"/v1/jobs/{jid}"),
        ]:
            r = bob.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json() == bob.get("/v1/jobs/no-such-job").json() | {
                "detail": f"no job {jid!r} of yours"
            }
        assert bob.get("/v1/jobs").json()["jobs"] == []
        assert bob.get("/v1/jobs", params={"user": "alice"}).json()["jobs"] == []
        # Bob cannot run alice's artifacts either.
        r = bob.post("/v1/jobs", json={"script": script, "inputs": [data]})
        assert r.status_code == 422

        assert root.get(f"/v1/jobs/{jid}").json()["status"] == "SUCCEEDED"
        assert [j["id"] for j in root.get("/v1/jobs", params={"user": "alice"}).json()["jobs"]] == [
            jid
        ]
        assert root.get(f"/v1/jobs/{jid}/output").text == alice.get(f"/v1/jobs/{jid}/output").text


def test_every_request_is_attributed_in_the_audit_log(gateway):
    gw = gateway()
    with gw.client("alice") as alice, gw.client(None) as anon, gw.client("root") as root:
        alice.get("/v1/jobs", params={"queue": "default"})
        upload(alice, "a.txt", "a\n")
        anon.get("/v1/jobs")
        assert alice.get("/v1/audit").status_code == 403
        entries = root.get("/v1/audit", params={"limit": 1000}).json()["entries"]
    seen = [(e["user"], e["method"], e["path"], e["status"]) for e in reversed(entries)]
    assert seen == [
        ("alice", "GET", "/v1/jobs", 200),
        ("alice", "POST", "/v1/artifacts", 201),
        (None, "GET", "/v1/jobs", 401),
        ("alice", "GET", "/v1/audit", 403),
    ]
    assert all(e["client"].startswith("127.0.0.1:") for e in entries)
