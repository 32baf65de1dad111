"""The gateway stopped mid-job and started again on the same state directory.

Three ways to stop: SIGTERM (graceful) and SIGKILL of the service, whose
job keeps running in its own session and is re-attached; and SIGKILL of the
service together with the job's whole session (the machine went down), after
which the job is launched again with the same job id and resumes. In every
case the job finishes, is reported correctly, and runs once: a re-attached
job has one launch and its summary shows no task skipped (no second run);
a resumed job has two launches and its second run skips exactly the tasks
whose commit records were on disk when it was killed.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import psutil
import pytest

from tests.gateway.conftest import DATABASES, JOBS, follow, kill_session, submit, upload, wait_until
from tests.util import make_words, parse_text_output

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
    # The state tests: against SQLite and a real PostgreSQL server (tests/gateway/postgres.py).
    pytest.mark.parametrize("gateway_db", DATABASES, indirect=True),
]


def _map_commits(gw, job_id):
    return sorted((gw.state_dir / "shuffle" / job_id / "commits").glob("s0-map-*.json"))


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "sigkill-with-the-job"])
def test_a_job_survives_a_gateway_restart_and_runs_once(gateway, how):
    gw = gateway(queues={"default": {"max_running": 2, "default_workers": 2}})
    # The last split holds the word "gate": its map task waits for the gate file, so the
    # job is mid-way (the other map tasks committed, that one running) for as long as
    # the restart takes, however loaded the machine is.
    gate = gw.root / "gate"
    text = make_words(6000, seed=11) + "gate\n"
    with gw.client("alice") as c:
        script = upload(c, "slow.py", (JOBS / "slow_wordcount.py").read_bytes())
        data = upload(c, "in.txt", text)
        args = ["--sleep", "0.002", "--gate", str(gate)]
        job = submit(c, script=script, inputs=[data], reducers=2, args=args)
        jid = job["id"]
        wait_until(lambda: _map_commits(gw, jid), what="a first map commit")
    (row,) = gw.job_rows()
    pid = row["pid"]

    gw.stop(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    if how == "sigkill-with-the-job":
        kill_session(pid)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        committed_at_kill = len(_map_commits(gw, jid))
    else:
        assert psutil.Process(pid).is_running(), "the job died with the gateway"
        assert os.getsid(pid) == pid

    gw.start()
    if how != "sigkill-with-the-job":
        assert psutil.Process(pid).status() != "zombie", "the job ended before the restart"
    gate.touch()
    with gw.client("alice") as c:
        events = follow(c, jid)
        assert events[-1]["status"] == "SUCCEEDED"
        done = c.get(f"/v1/jobs/{jid}").json()
        assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0
        assert dict(parse_text_output(c.get(done["output"]).text)) == Counter(text.split())
        logs = c.get(f"/v1/jobs/{jid}/logs").text
    messages = [e["message"] for e in events if e["event"] == "status"]
    summary = json.loads((gw.state_dir / "jobs" / jid / "output" / "summary.json").read_text())
    maps = summary["stages"]["step0-map"]
    if how == "sigkill-with-the-job":
        assert done["launches"] == 2
        assert logs.count(f"of job {jid}") == 2
        assert any("resuming it (launch 2)" in m for m in messages)
        # The second run skipped exactly what the first had committed, and ran the rest.
        assert 1 <= committed_at_kill < maps["tasks"]
        assert maps["tasks_skipped"] == committed_at_kill
        assert maps["tasks_run"] == maps["tasks"] - committed_at_kill
    else:
        assert done["launches"] == 1
        assert logs.count(f"of job {jid}") == 1
        assert f"re-attached to process {pid} after a gateway restart" in messages
        assert maps["tasks_skipped"] == 0 and maps["tasks_run"] == maps["tasks"]
    assert [m for m in messages if m == "started"] == ["started"]


def test_state_survives_a_restart(gateway):
    gw = gateway()
    with gw.client("alice") as c:
        script = upload(c, "wc.py", b"from mrk8s import MapReduce\n" + _WORDCOUNT)
        data = upload(c, "in.txt", "b a b\n")
        job = submit(c, script=script, inputs=[data], reducers=1)
        follow(c, job["id"])
        before = c.get(f"/v1/jobs/{job['id']}").json()
        out_before = c.get(f"/v1/jobs/{job['id']}/output").text
        logs_before = c.get(f"/v1/jobs/{job['id']}/logs").text
    gw.stop()
    gw.start()
    with gw.client("alice") as c, gw.client("root") as root:
        assert c.get(f"/v1/jobs/{job['id']}").json() == before
        assert c.get(f"/v1/jobs/{job['id']}/output").text == out_before == '"a"\t1\n"b"\t2\n'
        assert c.get(f"/v1/jobs/{job['id']}/logs").text == logs_before
        assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == [job["id"]]
        # The artifacts stay usable, and the audit log kept the first service's requests.
        again = submit(c, script=script, inputs=[data], reducers=1)
        assert follow(c, again["id"])[-1]["status"] == "SUCCEEDED"
        audit = root.get("/v1/audit", params={"user": "alice", "limit": 1000}).json()["entries"]
        assert sum(e["method"] == "POST" and e["path"] == "/v1/jobs" for e in audit) == 2


_WORDCOUNT = b"""
class WordCount(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


@pytest.mark.parametrize("max_launches", [1, 2])
def test_a_job_whose_process_is_killed_is_resumed_up_to_max_launches(gateway, max_launches):
    gw = gateway(
        queues={"default": {"max_running": 1, "default_workers": 2}}, max_launches=max_launches
    )
    gate = gw.root / "gate"  # held shut until the kill: the job cannot end before it
    text = make_words(3000, seed=13) + "gate\n"
    with gw.client("alice") as c:
        script = upload(c, "slow.py", (JOBS / "slow_wordcount.py").read_bytes())
        data = upload(c, "in.txt", text)
        args = ["--sleep", "0.002", "--gate", str(gate)]
        jid = submit(c, script=script, inputs=[data], reducers=2, args=args)["id"]
        wait_until(lambda: _map_commits(gw, jid), what="a first map commit")
        (row,) = gw.job_rows()
        kill_session(row["pid"])  # not through the API: the gateway sees it die
        gate.touch()
        events = follow(c, jid)
        done = c.get(f"/v1/jobs/{jid}").json()
        output = c.get(f"/v1/jobs/{jid}/output").text
    if max_launches == 1:
        assert done["status"] == "FAILED" and done["launches"] == 1
        assert "died without an exit status 1 time(s)" in done["error"]
        assert "max_launches" in done["error"]
    else:
        assert done["status"] == "SUCCEEDED" and done["launches"] == 2
        assert dict(parse_text_output(output)) == Counter(text.split())
        assert any("resuming it (launch 2)" in e["message"] for e in events)
