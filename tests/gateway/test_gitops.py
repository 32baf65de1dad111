"""Declarative queues through the real gateway and a real git repository (no cluster here).

Each test makes a bare repository with ``git init --bare`` in its temporary
directory and a gateway whose queue ``reviewed`` commits to it; the inputs
are objects of the loopback S3 server (a declarative job's pods read URLs,
never the gateway's disk). What git holds is read back with the git command
line, independently of the gateway's code. The cluster side (the manifests
accepted by the API server, the reconciler applying them) is in
``test_gitops_cluster.py``.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gateway.conftest import EXAMPLES, submit, upload
from tests.s3 import S3Bucket

pytest.importorskip("kubernetes", reason="declarative queues need the k8s extra")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

QUEUE = "reviewed"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def bare_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "jobs.git"
    repo.mkdir()
    git(repo, "init", "--quiet", "--bare", "--initial-branch=main")
    return repo


def commits(repo: Path) -> list[str]:
    """Every commit on main, newest first (none: the branch does not exist yet)."""
    heads = git(repo, "for-each-ref", "refs/heads/main")
    return git(repo, "rev-list", "main").split() if heads.strip() else []


def declarative_config(repo: Path, s3_bucket: S3Bucket, tmp_path: Path, **git_extra: Any):
    return {
        "storage_options": s3_bucket.storage_options,
        "queues": {
            "default": {"max_running": 2, "default_workers": 1},
            QUEUE: {
                "mode": "declarative",
                "default_workers": 2,
                "git": {
                    "repository": str(repo),
                    "author_email": "{user}@example.com",
                    "output": f"{s3_bucket.url}/out",
                    "shuffle_dir": f"{s3_bucket.url}/shuffle",
                    "namespace": "jobs",
                    "image": "reg.example/mrk8s:1",
                    "env_from_secret": ["mrk8s-s3"],
                    # No cluster in this module: the reconciler finds none and waits.
                    "kubeconfig": str(tmp_path / "no-kubeconfig"),
                    **git_extra,
                },
            },
        },
    }


@pytest.fixture
def words(s3_bucket: S3Bucket) -> str:
    import s3fs

    url = f"{s3_bucket.url}/in/words.txt"
    s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(url, b"a b c\nb c\nc\n")
    return url


def test_a_submission_is_one_commit_by_the_user_with_the_rendered_manifest(
    gateway, tmp_path, s3_bucket, words
):
    repo = bare_repository(tmp_path)
    gw = gateway(**declarative_config(repo, s3_bucket, tmp_path))
    source = (EXAMPLES / "wordcount.py").read_bytes()
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", source)
        job = submit(
            c, script=script, inputs=[words], reducers=3, backend="k8s", queue=QUEUE,
            args=["--top", "5"], resources={"workers": 2, "memory_per_worker": "512MiB"},
        )  # fmt: skip
        ray = submit(c, script=script, inputs=[words], backend="ray", queue=QUEUE)
        seen = c.get(f"/v1/jobs/{job['id']}").json()

    # Two submissions, two commits, the first one's parent-less.
    history = commits(repo)
    assert history == [ray["git_commit"], job["git_commit"]]
    assert job["id"].startswith(f"{QUEUE}-") and job["cluster"] == QUEUE
    assert seen["git_commit"] == job["git_commit"] and seen["manifest"] == job["manifest"]
    assert seen["status"] == "QUEUED"  # the reconciler has no cluster to apply it to

    fmt = "%an%n%ae%n%cn%n%P%n%B"
    author, email, committer, parents, *body = git(
        repo, "show", "-s", f"--format={fmt}", job["git_commit"]
    ).splitlines()
    assert (author, email, committer, parents) == (
        "alice",
        "alice@example.com",
        "mrk8s gateway",
        "",
    )
    assert body[0] == f"mrk8s job {job['id']}"
    params = yaml.safe_load("\n".join(body[1:]))
    assert params == {
        "job": job["id"], "user": "alice", "queue": QUEUE, "backend": "k8s", "script": script,
        "script_sha256": __import__("hashlib").sha256(source).hexdigest(),
        "inputs": [words], "reducers": 3, "workers": 2, "memory_per_worker": "512MiB",
        "args": ["--top", "5"],
    }  # fmt: skip
    # The commit changes one file: the job's manifest at the configured path.
    path = f"jobs/{QUEUE}/{job['id']}.yaml"
    changed = git(repo, "show", "--name-only", "--format=", job["git_commit"]).split()
    assert changed == [path]
    stored = git(repo, "show", f"{job['git_commit']}:{path}")
    assert stored.endswith(job["manifest"])

    owner, code, driver = yaml.safe_load_all(stored)
    assert [o["kind"] for o in (owner, code, driver)] == ["ConfigMap", "ConfigMap", "Job"]
    assert {o["metadata"]["namespace"] for o in (owner, code, driver)} == {"jobs"}
    assert all("ownerReferences" not in o["metadata"] for o in (owner, code, driver))
    assert list(code["data"].values()) == [source.decode()]
    (container,) = driver["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "reg.example/mrk8s:1"
    command = container["command"]
    assert command[:3] == ["mrk8s", "run", "/mrk8s/code/wordcount.py"]
    assert command[3] == words
    for option, value in [
        ("--reducers", "3"), ("--workers", "2"), ("--backend", "k8s"), ("--job-id", job["id"]),
        ("--namespace", "jobs"), ("-o", f"{s3_bucket.url}/out/{job['id']}"),
        ("--memory-per-worker", "512MiB"), ("--env-from-secret", "mrk8s-s3"),
    ]:  # fmt: skip
        assert command[command.index(option) + 1] == value, option
    assert command[-3:] == ["--", "--top", "5"]

    # The Ray job: a RayJob whose entrypoint is mrk8s run --backend ray on the head.
    *_, rayjob = yaml.safe_load_all(
        git(repo, "show", f"{ray['git_commit']}:jobs/{QUEUE}/{ray['id']}.yaml")
    )
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    entry = rayjob["spec"]["entrypoint"].split()
    assert entry[:3] == ["mrk8s", "run", "/mrk8s/code/wordcount.py"]
    assert entry[entry.index("--backend") + 1] == "ray"
    assert entry[entry.index("--ray-address") + 1] == "auto"
    assert rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_a_bad_parameter_never_reaches_git(gateway, tmp_path, s3_bucket, words):
    repo = bare_repository(tmp_path)
    gw = gateway(**declarative_config(repo, s3_bucket, tmp_path))
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "words.txt", "a b\n")
        good = submit(c, script=script, inputs=[words], backend="k8s", queue=QUEUE)
        before = commits(repo)
        bad_bodies = [
            # The local backend does not run from git.
            {"backend": "local"},
            # An artifact input: on the gateway's disk, where no pod can read it.
            {"inputs": [data]},
            {"inputs": [f"{s3_bucket.url}/in/nothing-here.txt"]},
            {"args": ["--output", "s3://elsewhere"]},
            {"resources": {"workers": 99}},
            {"reducers": 0},
        ]
        for bad in bad_bodies:
            body = {"script": script, "inputs": [words], "backend": "k8s", "queue": QUEUE, **bad}
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 422, (bad, r.text)
        r = c.post(
            "/v1/jobs",
            json={"script": script, "inputs": [data], "backend": "local", "queue": QUEUE},
        )
        problems = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
        assert "is declarative" in problems[("body", "backend")]
        assert "cannot read the gateway's disk" in problems[("body", "inputs", 0)]
        listed = c.get("/v1/jobs", params={"queue": QUEUE}).json()["jobs"]

    assert commits(repo) == before == [good["git_commit"]]
    assert [j["id"] for j in listed] == [good["id"]]
    # Nothing half-made on the gateway's disk either: one job directory, the good one's.
    assert sorted(p.name for p in (gw.state_dir / "jobs").iterdir()) == [good["id"]]


def test_a_repository_that_refuses_is_503_and_no_job(gateway, tmp_path, s3_bucket, words):
    missing = tmp_path / "no-such-repository.git"
    gw = gateway(**declarative_config(missing, s3_bucket, tmp_path))
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        r = c.post(
            "/v1/jobs",
            json={"script": script, "inputs": [words], "backend": "k8s", "queue": QUEUE},
        )
        assert r.status_code == 503, r.text
        assert str(missing) in r.json()["detail"]
        assert "check the repository's URL" in r.json()["detail"]
        assert c.get("/v1/jobs").json()["jobs"] == []
    assert list((gw.state_dir / "jobs").iterdir()) == []


@pytest.mark.timeout(600)
def test_concurrent_submissions_to_two_gateways_and_an_outside_writer_never_lose_a_commit(
    gateway, tmp_path, s3_bucket, words
):
    repo = bare_repository(tmp_path)
    # Two gateways (two replicas, say) commit to the same branch: their locks are their
    # own, so their pushes race, and the loser of each race must commit again on top.
    gw = gateway(**declarative_config(repo, s3_bucket, tmp_path))
    gw2 = gateway(**declarative_config(repo, s3_bucket, tmp_path))
    # Someone else pushes to the same branch meanwhile, from a clone of their own: the
    # gateway's pushes meet a moved branch and must commit again on top of it.
    other = tmp_path / "other"
    outside_commits = 15
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(other))
    git(other, "remote", "add", "origin", str(repo))
    stop = threading.Event()
    outside: list[str] = []

    def outside_writer() -> None:
        ident = ["-c", "user.name=carol", "-c", "user.email=carol@example.com"]
        for i in range(outside_commits):
            (other / "README").write_text(f"edit {i}\n")
            git(other, "add", "README")
            git(other, *ident, "commit", "--quiet", "-m", f"outside edit {i}")
            while True:  # the same retry a person would do: pull --rebase, push again
                done = subprocess.run(
                    ["git", "push", "--quiet", "origin", "main"], cwd=other, capture_output=True
                )
                if done.returncode == 0:
                    break
                git(other, *ident, "pull", "--quiet", "--rebase", "origin", "main")
            outside.append(git(other, "rev-parse", "HEAD").strip())
            if stop.is_set():
                break

    n = 40
    with gw.client("alice") as c, gw2.client("bob") as b:
        scripts = {
            "alice": upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes()),
            "bob": upload(b, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes()),
        }
        writer = threading.Thread(target=outside_writer)
        writer.start()

        def one(i: int) -> dict[str, Any]:
            client, user = (c, "alice") if i % 2 else (b, "bob")
            return submit(
                client, script=scripts[user], inputs=[words], reducers=1 + i % 5,
                backend="k8s" if i % 3 else "ray", queue=QUEUE,
            )  # fmt: skip

        with ThreadPoolExecutor(16) as pool:
            jobs = list(pool.map(one, range(n)))
        writer.join(timeout=300)
        stop.set()

    assert len(outside) == outside_commits
    history = commits(repo)
    # Every submission is exactly one commit, every outside edit too, none lost.
    assert len(history) == n + outside_commits
    assert sorted(history) == sorted([j["git_commit"] for j in jobs] + outside)
    head_files = set(git(repo, "ls-tree", "-r", "--name-only", "main").split())
    assert head_files == {"README"} | {f"jobs/{QUEUE}/{j['id']}.yaml" for j in jobs}
    # Each commit is its submitter's and says its own job's id.
    for j in jobs:
        author, subject = git(repo, "show", "-s", "--format=%an%n%s", j["git_commit"]).splitlines()
        assert (author, subject) == (j["user"], f"mrk8s job {j['id']}")
    assert len({j["id"] for j in jobs}) == n
    # How often a push met a moved branch (informative: the count depends on timing; the
    # retry itself is checked exactly by the test with the racing hook below).
    retries = sum(g.service_log().count("moved; committing again") for g in (gw, gw2))
    print(f"pushes that met a moved branch and were committed again: {retries}")


#: An update hook that, on the first push only, moves main itself (as another writer
#: would between the gateway's fetch and its push), so that push is refused.
RACING_HOOK = """#!/bin/sh
[ -e "$GIT_DIR/raced" ] && exit 0
touch "$GIT_DIR/raced"
old=$(git rev-parse --verify -q refs/heads/main)
tree=$(git hash-object -w -t tree /dev/null)
new=$(GIT_AUTHOR_NAME=carol GIT_AUTHOR_EMAIL=c@x GIT_COMMITTER_NAME=carol \\
      GIT_COMMITTER_EMAIL=c@x git commit-tree $tree ${old:+-p $old} -m "racing edit")
git update-ref refs/heads/main $new $old
"""


def test_a_push_that_meets_a_moved_branch_is_committed_again_on_top(tmp_path):
    from mrk8s.gateway import gitops
    from mrk8s.gateway.gitconfig import GitTarget

    repo = bare_repository(tmp_path)
    hook = repo / "hooks" / "update"
    hook.write_text(RACING_HOOK)
    hook.chmod(0o755)
    target = GitTarget(repository=str(repo), output="s3://o", shuffle_dir="s3://s")
    cache = gitops.Repository(target, tmp_path / "cache")

    first = cache.commit({"jobs/a.yaml": b"a: 1\n"}, author="alice", email="a@x", message="a")

    # The first push was refused (the hook moved main), the second is on top of the edit.
    racing, *rest = git(repo, "log", "--format=%s", "main").splitlines()[::-1]
    assert (racing, rest) == ("racing edit", ["a"])
    assert commits(repo)[0] == first
    assert git(repo, "show", "-s", "--format=%P", first).strip() == commits(repo)[1]
    assert git(repo, "show", f"{first}:jobs/a.yaml") == "a: 1\n"

    # A push refused for another reason is an error naming the repository, not a retry.
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    with pytest.raises(gitops.GitError, match="protected branch") as refused:
        cache.commit({"jobs/b.yaml": b"b: 1\n"}, author="bob", email="b@x", message="b")
    assert str(repo) in str(refused.value)
    assert commits(repo)[0] == first


def test_the_readme_example_parses_and_mistakes_name_the_key():
    from mrk8s.errors import UsageError
    from mrk8s.gateway import config

    readme = (EXAMPLES.parent / "README.md").read_text().split("### Declarative mode", 1)[1]
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed = config.from_mapping(yaml.safe_load(block), environ={})
    queue = parsed.queue("reviewed")
    assert queue is not None and queue.mode == "declarative"
    assert queue.git.repository == "https://git.example.com/platform/jobs.git"
    assert queue.git.root == "jobs" and queue.git.cluster == "east"
    assert (queue.git.branch, queue.git.applied.branch) == ("main", "live")
    assert queue.git.email("Ann Lee") == "Ann-Lee@example.com"
    # What the git block leaves out comes from the cluster.
    assert queue.git.output == "s3://mrk8s-east/gateway/output"
    assert queue.git.shuffle_dir == "s3://mrk8s-east/gateway/shuffle"
    assert (queue.git.namespace, queue.git.env_from_secret) == ("mrk8s", ("s3-credentials",))
    assert parsed.queue("default").mode == "direct"

    good = {"repository": "/r.git", "output": "s3://o", "shuffle_dir": "s3://s"}
    for queue_raw, message in [
        ({"mode": "gitops"}, "mode is 'gitops': give one of direct, declarative"),
        ({"mode": "declarative"}, "mode declarative needs git"),
        ({"mode": "declarative", "git": {"repository": "/r.git"}}, "give output, shuffle_dir"),
        ({"mode": "declarative", "git": {**good, "repo": "x"}}, "unknown key(s) repo"),
        ({"git": good}, "git is set but mode is direct"),
        ({"mode": "declarative", "git": {**good, "path": "jobs/{who}/{job_id}.yaml"}},
         "unknown placeholder(s) who"),
        ({"mode": "declarative", "git": {**good, "path": "jobs/all.yaml"}},
         "must contain {job_id}"),
        ({"mode": "declarative", "git": {**good, "ttl": "1h"}}, "git.ttl is '1h'"),
        ({"mode": "declarative", "git": {**good, "cluster": "Big_One"}},
         "give a lowercase name"),
    ]:  # fmt: skip
        with pytest.raises(UsageError) as caught:
            config.from_mapping({"queues": {"q": queue_raw}}, environ={})
        assert message in str(caught.value), str(caught.value)
        assert "queues.q" in str(caught.value)
    # With k8s clusters, the one applied to is one of them, and of kind k8s.
    two = [
        {"name": "east", "kind": "k8s", "storage": "s3://e"},
        {"name": "west", "kind": "k8s", "storage": "s3://w"},
        {"name": "here", "kind": "local"},
    ]
    for git_raw, message in [
        ({"repository": "/r.git"}, "name the k8s cluster the reconciler applies to"),
        ({"repository": "/r.git", "cluster": "north"}, "not a k8s cluster of the config"),
        ({"repository": "/r.git", "cluster": "here"}, "a local cluster"),
    ]:
        with pytest.raises(UsageError, match=r"queues\.q\.git") as caught:
            config.from_mapping(
                {"clusters": two, "queues": {"q": {"mode": "declarative", "git": git_raw}}},
                environ={},
            )
        assert message in str(caught.value), str(caught.value)


def test_a_token_in_the_repository_url_never_shows_in_an_error(tmp_path):
    from mrk8s.gateway import gitops
    from mrk8s.gateway.gitconfig import GitTarget

    # Nothing listens on port 9 of loopback: the fetch fails at once, naming the URL.
    url = "http://bob:s3cret-token@127.0.0.1:9/jobs.git"
    target = GitTarget(repository=url, output="s3://o", shuffle_dir="s3://s")
    cache = gitops.Repository(target, tmp_path / "cache")
    with pytest.raises(gitops.GitError) as failed:
        cache.commit({"a.yaml": b"a: 1\n"}, author="bob", email="b@x", message="a")
    message = str(failed.value)
    assert "http://127.0.0.1:9/jobs.git" in message
    assert "s3cret-token" not in message and "bob:" not in message
