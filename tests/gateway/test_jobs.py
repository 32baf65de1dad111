"""Jobs through the real gateway: submit, follow, results, logs, failures, cancel, queue caps."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import psutil
import pytest

from tests.gateway.conftest import DATABASES, EXAMPLES, JOBS, follow, submit, upload, wait_until
from tests.util import make_words, parse_text_output

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)
@pytest.mark.parametrize("n_words", [30_000])
def test_submit_202_then_events_until_succeeded_with_exact_word_counts(gateway, n_words):
    gw = gateway()
    text = make_words(n_words, seed=7)
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=3)
        assert job["status"] == "QUEUED" and job["user"] == "alice"

        events = follow(c, job["id"])
        statuses = [e["status"] for e in events if e["event"] == "status"]
        assert statuses == ["QUEUED", "RUNNING", "SUCCEEDED"]

        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0
        assert done["output"] == f"/v1/jobs/{job['id']}/output"
        assert done["launches"] == 1 and done["cluster"] == "local"
        assert {(p["stage"], p["committed"] == p["tasks"]) for p in done["progress"]} == {
            ("map", True),
            ("reduce", True),
        }
        assert done["timings"]["run_seconds"] > 0
        output = c.get(done["output"])
        assert output.status_code == 200
        assert dict(parse_text_output(output.text)) == Counter(text.split())

        logs = c.get(f"/v1/jobs/{job['id']}/logs")
        assert logs.status_code == 200
        assert f"launch 1 of job {job['id']}" in logs.text
        assert "output written to" in logs.text

        metrics = c.get("/metrics").text
        assert 'mrk8s_gateway_jobs{queue="default",state="SUCCEEDED"} 1.0' in metrics
        assert "mrk8s_gateway_submission_seconds_count 1.0" in metrics


def test_invalid_fields_are_refused_field_by_field_before_anything_runs(gateway):
    gw = gateway()
    with gw.client("alice") as c, gw.client("bob") as b:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        broken = upload(c, "broken.py", "def mapper(:\n")
        bobs = upload(b, "bobs.txt", "a b c\n")
        r = c.post(
            "/v1/jobs",
            json={
                "script": broken,
                "inputs": [bobs, "/etc/hostname", "art-0000000000000000"],
                "backend": "k8s",
                "queue": "nope",
                "args": ["--shuffle-dir", "-o", "--keep"],
                "resources": {"workers": 99, "memory_per_worker": "1MiB"},
            },
        )
        assert r.status_code == 422, r.text
        problems = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
        assert "not valid Python" in problems[("body", "script")]
        assert "no artifact" in problems[("body", "inputs", 0)]  # bob's, not alice's
        assert "allow_local_inputs" in problems[("body", "inputs", 1)]
        assert "no artifact" in problems[("body", "inputs", 2)]
        assert "has no cluster of that kind" in problems[("body", "backend")]
        assert "no queue 'nope'" in problems[("body", "queue")]
        assert {("body", "args", i) for i in range(3)} <= set(problems)
        assert "at least 16MiB" in problems[("body", "resources", "memory_per_worker")]

        r = c.post("/v1/jobs", json={"script": script, "inputs": [bobs], "reducers": 0})
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "reducers"]]

        r = c.post("/v1/jobs", json={"script": script, "inputs": [bobs], "colour": "red"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "colour"]

        assert c.get("/v1/jobs").json()["jobs"] == []
    assert not (gw.state_dir / "jobs").exists() or not any((gw.state_dir / "jobs").iterdir())
    assert gw.job_rows() == []


def test_a_failing_job_is_failed_with_the_users_error(gateway):
    gw = gateway()
    with gw.client("alice") as c:
        script = upload(c, "failing.py", (JOBS / "failing.py").read_bytes())
        data = upload(c, "in.txt", "fine\nboom here\nfine\n")
        job = submit(c, script=script, inputs=[data], reducers=1)
        events = follow(c, job["id"])
        assert events[-1]["status"] == "FAILED"
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["exit_code"] == 2  # a user error: mrk8s run's exit status
        assert "this line is bad: 'boom here'" in done["error"]
        assert done["output"] is None
        r = c.get(f"/v1/jobs/{job['id']}/output")
        assert r.status_code == 409 and "FAILED" in r.json()["detail"]
    assert not (gw.state_dir / "jobs" / job["id"] / "output").exists()


@pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)
def test_cancel_stops_a_running_jobs_processes_and_keeps_its_record(gateway):
    gw = gateway(queues={"default": {"max_running": 2, "default_workers": 2}})
    with gw.client("alice") as c:
        script = upload(c, "slow.py", (JOBS / "slow_wordcount.py").read_bytes())
        data = upload(c, "in.txt", make_words(4000, seed=3) + "gate\n")
        # The gate never opens: the job cannot end before it is cancelled.
        args = ["--sleep", "0.002", "--gate", str(gw.root / "gate")]
        job = submit(c, script=script, inputs=[data], reducers=2, args=args)
        jid = job["id"]
        wait_until(lambda: c.get(f"/v1/jobs/{jid}").json()["progress"], what="the job's progress")
        (row,) = gw.job_rows()
        leader = psutil.Process(row["pid"])
        procs = [leader, *leader.children(recursive=True)]
        assert len(procs) >= 3  # the job's process and its two workers

        r = c.delete(f"/v1/jobs/{jid}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "CANCELLED"
        for p in procs:
            assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, p

        assert c.get(f"/v1/jobs/{jid}").json()["status"] == "CANCELLED"
        assert follow(c, jid)[-1]["status"] == "CANCELLED"
        assert c.delete(f"/v1/jobs/{jid}").status_code == 409
        # The cancel is final: the supervisor does not take the killed process for a
        # crash and resume it.
        assert c.get(f"/v1/jobs/{jid}").json()["launches"] == 1


@pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)
def test_a_queues_cap_holds_and_the_rest_wait_queued(gateway):
    gw = gateway(queues={"default": {"max_running": 1, "default_workers": 1}})
    with gw.client("alice") as c:
        script = upload(c, "slow.py", (JOBS / "slow_wordcount.py").read_bytes())
        data = upload(c, "in.txt", make_words(600, seed=5))
        ids = [
            submit(c, script=script, inputs=[data], reducers=1, args=["--sleep", "0.02"])["id"]
            for _ in range(3)
        ]
        assert c.get(f"/v1/jobs/{ids[-1]}").json()["status"] == "QUEUED"
        for jid in ids:
            assert follow(c, jid)[-1]["status"] == "SUCCEEDED"
        jobs = sorted((c.get(f"/v1/jobs/{j}").json() for j in ids), key=lambda j: j["started_at"])
    for before, after in itertools.pairwise(jobs):
        assert before["finished_at"] <= after["started_at"], "two jobs ran at once in a cap of 1"


def test_list_is_paginated_with_an_opaque_cursor_and_filters(gateway):
    gw = gateway(queues={"default": {"max_running": 1}, "other": {"max_running": 1}})
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "a b a\n")
        ids = [
            submit(c, script=script, inputs=[data], queue=q)["id"]
            for q in ("default", "other", "default", "other", "default")
        ]
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/jobs", params=params).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        other = c.get("/v1/jobs", params={"queue": "other"}).json()["jobs"]
        assert [j["id"] for j in other] == [ids[3], ids[1]]
        bad = c.get("/v1/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]
        for jid in ids:
            follow(c, jid)
        done = c.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()["jobs"]
        assert len(done) == 5


def test_an_upload_over_the_cap_is_413_and_leaves_nothing(gateway):
    gw = gateway(artifacts={"max_bytes": "1KiB"})
    with gw.client("alice") as c:
        small_over = c.post("/v1/artifacts", files={"file": ("a.txt", b"x" * 2048)})
        assert small_over.status_code == 413
        assert "artifacts.max_bytes" in small_over.json()["detail"]
        declared_over = c.post("/v1/artifacts", files={"file": ("b.txt", b"x" * (1 << 20))})
        assert declared_over.status_code == 413
        ok = c.post("/v1/artifacts", files={"file": ("c.txt", b"x" * 1000)})
        assert ok.status_code == 201
    stored = [p for p in (gw.state_dir / "artifacts").rglob("*") if p.is_file()]
    assert [p.name for p in stored] == ["c.txt"]
    assert re.fullmatch(r"art-[0-9a-f]{16}", ok.json()["id"])
