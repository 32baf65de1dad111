"""100 submissions at once: none lost, none duplicated, each SUCCEEDED with exact counts."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gateway.conftest import DATABASES, EXAMPLES, follow, submit, upload
from tests.util import make_words, parse_text_output

N_JOBS = 100


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)
def test_100_concurrent_submissions_are_all_run_once_and_exactly(gateway):
    # Each job is two Python processes (the driver and one worker) that spend most of their
    # CPU importing; eight at once keep both cores busy while others start up or wait.
    gw = gateway(queues={"default": {"max_running": 8, "default_workers": 1}})
    texts = [make_words(200, seed=i, vocab=50) for i in range(N_JOBS)]
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())

    def submit_one(i: int) -> str:
        with gw.client("alice") as c:
            data = upload(c, f"in-{i}.txt", texts[i])
            return str(submit(c, script=script, inputs=[data], reducers=2)["id"])

    with ThreadPoolExecutor(25) as pool:
        ids = list(pool.map(submit_one, range(N_JOBS)))
    assert len(set(ids)) == N_JOBS

    def finish(i: int) -> tuple[dict, str]:
        with gw.client("alice") as c:
            follow(c, ids[i], timeout=1100)
            job = c.get(f"/v1/jobs/{ids[i]}").json()
            return job, c.get(f"/v1/jobs/{ids[i]}/output").text

    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(finish, range(N_JOBS)))
    for i, (job, output) in enumerate(results):
        assert job["status"] == "SUCCEEDED", (job["id"], job["error"])
        assert job["launches"] == 1
        assert dict(parse_text_output(output)) == Counter(texts[i].split()), job["id"]

    with gw.client("root") as root:
        listed = root.get("/v1/jobs", params={"limit": 500}).json()
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(ids)
    assert listed["next_cursor"] is None
    rows = gw.job_rows()
    assert len(rows) == N_JOBS and {r["status"] for r in rows} == {"SUCCEEDED"}
