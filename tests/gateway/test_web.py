"""The web page at ``/`` in a real headless browser: Debian's chromium, driven by playwright.

``make system-deps`` installs chromium; playwright only drives it (its own
browser download is never used: ``executable_path`` points at Debian's). The
page is used as a person would: type the token, pick the files, submit, wait
for the row to say SUCCEEDED, open the output; the counts shown are compared
with ``collections.Counter`` of the inputs. The screenshot is kept with the
test's files, and ``make gateway-screenshot`` (MRK8S_UPDATE_SCREENSHOT=1)
copies it to ``docs/images/gateway-web.png``, the picture in README.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.conftest import EXAMPLES, REPO, TOKENS, submit, upload
from tests.util import make_words, parse_text_output

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: playwright adds --headless itself (headless=True) and --user-data-dir (a fresh directory).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "docs" / "images" / "gateway-web.png"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: run `make system-deps`")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 760},
        )
        try:
            yield context
        finally:
            context.close()


def _row(page: Any, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def test_submit_through_the_form_and_watch_the_row_succeed(gateway, browser, tmp_path):
    gw = gateway()
    texts = [make_words(3000, seed=5, vocab=40), make_words(2000, seed=6, vocab=40)]
    inputs = []
    for i, text in enumerate(texts):
        inputs.append(tmp_path / f"part-{i}.txt")
        inputs[-1].write_text(text)
    page = browser.new_page()
    page.goto(gw.url + "/")
    expect = sync_api.expect
    expect(page.locator("#who")).to_have_text("enter a token")
    page.fill("#token", TOKENS["alice"])
    page.click("#token-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("token saved")

    page.set_input_files("#script", str(EXAMPLES / "wordcount.py"))
    page.set_input_files("#input-files", [str(p) for p in inputs])
    page.fill("#reducers", "3")
    page.click("#submit-button")
    expect(page.locator("#message")).to_contain_text("submitted ", timeout=60_000)
    job_id = page.locator("#message").get_attribute("data-job-id")
    assert job_id

    status = _row(page, job_id).locator("td.status")
    expect(status).to_have_text("SUCCEEDED", timeout=180_000)
    expect(_row(page, job_id).locator("td.progress")).to_contain_text("reduce 3/3")
    _row(page, job_id).locator("a.output").click()
    expect(page.locator("#viewer")).to_have_attribute("data-loaded", "true")
    shown = page.locator("#viewer-text").inner_text()
    assert dict(parse_text_output(shown)) == Counter(" ".join(texts).split())

    # The job is alice's (the saved token was sent) and the API agrees with the page.
    with gw.client("alice") as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["user"] == "alice" and job["status"] == "SUCCEEDED"
    assert job["request"]["reducers"] == 3 and len(job["request"]["inputs"]) == 2

    page.locator("#viewer-text").evaluate("e => e.scrollTop = 0")
    shot = tmp_path / "gateway-web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MRK8S_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    page.close()


def test_with_auth_off_the_page_needs_no_token(gateway, browser):
    gw = gateway(users=[])
    with gw.client(None) as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "in.txt", "x y x\n")
        job_id = submit(c, script=script, inputs=[data], reducers=1)["id"]
    page = browser.new_page()
    page.goto(gw.url + "/")
    expect = sync_api.expect
    expect(page.locator("#token-form")).to_be_hidden()
    row = _row(page, job_id)
    expect(row.locator("td.status")).to_have_text("SUCCEEDED", timeout=180_000)
    expect(row).to_contain_text("anonymous")
    row.locator("a.logs").click()
    expect(page.locator("#viewer")).to_have_attribute("data-loaded", "true")
    page.close()


def test_the_page_and_its_files_are_served_with_a_strict_policy(gateway):
    gw = gateway()
    with gw.client(None) as c:
        page = c.get("/")
        assert page.status_code == 200 and '<form id="submit-form"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<option value="default" selected>default</option>' in page.text
        assert c.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/app.css").status_code == 200
        assert c.get("/ui/secret.py").status_code == 404
        assert "/" not in c.get("/openapi.json").json()["paths"]


def test_a_declarative_job_shows_its_commit_and_manifest(gateway, browser, tmp_path, s3_bucket):
    """A job of a declarative queue: its row names the commit git holds and shows the manifest."""
    pytest.importorskip("kubernetes", reason="declarative queues need the k8s extra")
    import s3fs

    from tests.gateway.test_gitops import QUEUE, bare_repository, commits, declarative_config, git

    words = f"{s3_bucket.url}/in/words.txt"
    s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(words, b"a b c\nb c\n")
    repo = bare_repository(tmp_path)
    gw = gateway(**declarative_config(repo, s3_bucket, tmp_path))
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        job = submit(c, script=script, inputs=[words], backend="k8s", queue=QUEUE)
    (head,) = commits(repo)
    page = browser.new_page()
    page.goto(gw.url + "/")
    expect = sync_api.expect
    page.fill("#token", TOKENS["alice"])
    page.click("#token-form button[type=submit]")
    row = _row(page, job["id"])
    expect(row.locator(".git-commit")).to_have_text("commit " + head[:12], timeout=30_000)
    stored = git(repo, "show", f"{head}:jobs/{QUEUE}/{job['id']}.yaml")
    row.locator("details summary").click()
    expect(row.locator("details pre")).to_contain_text("kind: Job")
    assert stored.endswith(job["manifest"])
    assert row.locator("details pre").inner_text().strip() == job["manifest"].strip()
    page.close()
