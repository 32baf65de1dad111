"""Declarative mode: a job submitted to such a queue becomes a commit, not a run.

:func:`check` is called by :func:`mrk8s.gateway.submit.prepare` among the
other field checks, so a bad parameter is answered 422 and never reaches
git. Once a request is valid, :func:`commit_job` renders the job's manifests
(:mod:`mrk8s.gateway.render`) and commits them to the queue's repository,
one commit per submission: author = the authenticated user (the queue's
``author_email`` pattern gives the e-mail), committer = the gateway, message
= the job id and its parameters. The job's row is created only after the
push succeeded, with the commit and the manifest in it; the reconciler
(:mod:`mrk8s.gateway.reconciler`) applies it from git, and the supervisor
leaves such jobs alone.

Git through its command line, in subprocesses: git is on every machine that
has the repository's clone, it speaks every transport and credential helper
the operators already configured, and a push refused because the branch
moved is git's own compare-and-swap on the remote ref. The commits are made
with plumbing (``hash-object``, ``update-index`` on a private index,
``write-tree``, ``commit-tree``) in a bare cache repository in the state
directory, so there is no working tree to get dirty. GitPython would wrap
the same commands; dulwich reimplements git and its transports.

Concurrency: one lock per repository and branch inside the process (and an
``flock`` on the cache, for a second gateway on the same state directory)
serialises this gateway's commits; a push refused because someone else
moved the branch meanwhile is retried on top of the new head, up to
:data:`PUSH_ATTEMPTS` times, so no submission's commit is lost and none
overwrites another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrk8s.errors import MRError
from mrk8s.gateway.gitconfig import GitTarget

logger = logging.getLogger(__name__)

#: The backends a declarative queue renders manifests for.
BACKENDS = ("k8s", "ray")
#: Pushes of one commit before giving up: each refusal means another commit landed first.
PUSH_ATTEMPTS = 30
#: Seconds a git command may take (a push over a slow network included).
GIT_TIMEOUT = 120.0


class GitError(MRError):
    """Git refused or failed; the message says which command, what git said, and what to do."""


def redact(text: str, url: str) -> str:
    """``text`` without the user and password of ``url`` (an https URL may carry a token)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password or parts.username:
        bare = parts._replace(netloc=parts.hostname or "").geturl()
        text = text.replace(url, bare)
        for secret in (parts.password, parts.username):
            if secret:
                text = text.replace(secret, "***")
    return text


def check(queue: Any, backend: str, inputs: list[str]) -> list[Any]:
    """Field errors that only a declarative queue has: ``(loc, msg, value)`` triples."""
    errors: list[Any] = []
    if backend not in BACKENDS:
        errors.append(
            (
                ("backend",),
                f"queue {queue.name!r} is declarative: its jobs run in a cluster from git; give "
                f"backend {' or '.join(repr(b) for b in BACKENDS)}, not {backend!r}",
                backend,
            )
        )
    for i, ref in enumerate(inputs):
        if "://" not in ref or ref.startswith("file://"):
            errors.append(
                (
                    ("inputs", i),
                    f"{ref!r}: queue {queue.name!r} is declarative and its jobs run in a "
                    "cluster, whose pods cannot read the gateway's disk: give a URL they can "
                    "read (s3://..., https://...) instead of an artifact or a path",
                    ref,
                )
            )
    return errors


@dataclass(frozen=True)
class Committed:
    commit: str
    path: str
    manifest: str


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # No GIT_DIR & co. leaking in from a caller that runs inside a repository (a hook).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password on a terminal
    env.update(extra or {})
    return env


class Repository:
    """A bare cache of one remote branch in the state directory, and commits pushed to it."""

    def __init__(self, target: GitTarget, cache: Path) -> None:
        self.target = target
        self.cache = cache
        self._lock = threading.Lock()
        self._ready = False

    def error(self, message: str) -> GitError:
        """A :class:`GitError` whose message shows no credentials of the repository's URL."""
        return GitError(redact(message, self.target.repository))

    # -- plumbing -----------------------------------------------------------------------

    def git(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["git", *args]
        try:
            done = subprocess.run(
                argv,
                cwd=self.cache,
                input=input,
                capture_output=True,
                env=_git_env(env),
                timeout=GIT_TIMEOUT,
            )
        except FileNotFoundError as exc:
            raise self.error(
                "declarative queues need the git command line: install git (apt-get install git)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise self.error(
                f"git {args[0]} on {self.target.repository} took over {GIT_TIMEOUT:.0f} s: "
                "check that the repository is reachable"
            ) from exc
        if check and done.returncode != 0:
            raise self.error(
                f"git {' '.join(args[:2])} failed for {self.target.repository} "
                f"(branch {self.target.branch}): {done.stderr.decode(errors='replace').strip()}"
            )
        return done

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """This repository to ourselves: the thread lock, then an flock on the cache."""
        with self._lock:
            self.cache.mkdir(parents=True, exist_ok=True)
            with open(self.cache.parent / f"{self.cache.name}.lock", "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _ensure(self) -> None:
        if self._ready:
            return
        if not (self.cache / "HEAD").exists():
            self.git("init", "--quiet", "--bare", ".")
        url = self.git("config", "--get", "remote.origin.url", check=False).stdout.decode().strip()
        if not url:
            self.git("remote", "add", "origin", self.target.repository)
        elif url != self.target.repository:
            self.git("remote", "set-url", "origin", self.target.repository)
        self._ready = True

    @property
    def _tracking(self) -> str:
        return f"refs/remotes/origin/{self.target.branch}"

    def fetch(self) -> str | None:
        """The remote branch's head after fetching it (None: the branch does not exist yet)."""
        self._ensure()
        branch = self.target.branch
        fetched = self.git(
            "fetch", "--quiet", "--no-tags", "origin", f"+refs/heads/{branch}:{self._tracking}",
            check=False,
        )  # fmt: skip
        if fetched.returncode != 0:
            if b"couldn't find remote ref" in fetched.stderr:
                self.git("update-ref", "-d", self._tracking, check=False)
                return None
            raise self.error(
                f"git fetch of branch {branch} from {self.target.repository} failed: "
                f"{fetched.stderr.decode(errors='replace').strip()}; check the repository's "
                "URL and the gateway's credentials for it"
            )
        return self.git("rev-parse", self._tracking).stdout.decode().strip()

    # -- writing ------------------------------------------------------------------------

    def commit(
        self,
        files: Mapping[str, bytes],
        *,
        author: str,
        email: str,
        message: str,
        committer: tuple[str, str] = ("mrk8s gateway", "gateway@mrk8s.invalid"),
    ) -> str:
        """Commit ``files`` (path -> bytes) on top of the branch and push; the commit's id."""
        with self.locked():
            for attempt in range(1, PUSH_ATTEMPTS + 1):
                base = self.fetch()
                commit = self._make_commit(base, files, (author, email), committer, message)
                pushed = self.git(
                    "push",
                    "--porcelain",
                    "origin",
                    f"{commit}:refs/heads/{self.target.branch}",
                    check=False,
                )
                if pushed.returncode == 0:
                    if attempt > 1:
                        logger.info("commit %s pushed at attempt %d", commit[:12], attempt)
                    return commit
                said = (pushed.stdout + pushed.stderr).decode(errors="replace").strip()
                if not self._moved(base, said):
                    raise self.error(
                        f"git push to {self.target.repository} (branch {self.target.branch}) "
                        f"was refused: {said}; check the repository's URL, credentials and "
                        "branch protection"
                    )
                logger.info("branch %s moved; committing again on top", self.target.branch)
                time.sleep(random.uniform(0.01, 0.05 * attempt))
        raise self.error(
            f"branch {self.target.branch} of {self.target.repository} moved under every one of "
            f"{PUSH_ATTEMPTS} pushes: too many writers at once; submit again"
        )

    def _moved(self, base: str | None, said: str) -> bool:
        """Whether a refused push met another writer (a moved ref, or its lock held)."""
        if any(w in said for w in ("fetch first", "non-fast-forward", "stale info", "cannot lock")):
            return True
        now = self.fetch()
        return now != base

    def _make_commit(
        self,
        base: str | None,
        files: Mapping[str, bytes],
        author: tuple[str, str],
        committer: tuple[str, str],
        message: str,
    ) -> str:
        index = self.cache / f"index-{threading.get_ident()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            index.unlink(missing_ok=True)
            if base is not None:
                self.git("read-tree", base, env=env)
            for path, data in files.items():
                blob = self.git("hash-object", "-w", "--stdin", input=data).stdout.decode().strip()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git("write-tree", env=env).stdout.decode().strip()
        finally:
            index.unlink(missing_ok=True)
        who = {
            "GIT_AUTHOR_NAME": author[0],
            "GIT_AUTHOR_EMAIL": author[1],
            "GIT_COMMITTER_NAME": committer[0],
            "GIT_COMMITTER_EMAIL": committer[1],
        }
        parents = ["-p", base] if base is not None else []
        made = self.git(
            "commit-tree", "--no-gpg-sign", tree, *parents, input=message.encode(), env=who
        )
        return made.stdout.decode().strip()

    # -- reading ------------------------------------------------------------------------

    def files(self, commit: str, root: str) -> dict[str, str]:
        """``.yaml`` files under ``root`` at ``commit``: path -> blob id."""
        args = ["ls-tree", "-r", "-z", commit]
        if root:
            args += ["--", root]
        out: dict[str, str] = {}
        for entry in self.git(*args).stdout.decode().split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            _mode, kind, blob = meta.split()
            if kind == "blob" and path.endswith((".yaml", ".yml")):
                out[path] = blob
        return out

    def is_ancestor(self, commit: str, head: str) -> bool:
        """Whether ``head``'s history holds ``commit`` (False too if this cache lacks it)."""
        return self.git("merge-base", "--is-ancestor", commit, head, check=False).returncode == 0

    def blob(self, blob: str) -> bytes:
        return self.git("cat-file", "blob", blob).stdout


_repositories: dict[tuple[str, str], Repository] = {}
_repositories_lock = threading.Lock()


def repository(target: GitTarget, state_dir: Path) -> Repository:
    """The one :class:`Repository` of this process for the target's repository and branch."""
    key = (target.repository, target.branch)
    with _repositories_lock:
        found = _repositories.get(key)
        if found is None or found.cache.parent != state_dir / "git":
            digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:16]
            found = Repository(target, state_dir / "git" / digest)
            _repositories[key] = found
        return found


def message(job_id: str, user: str, queue: str, spec: dict[str, Any], script_sha: str) -> str:
    """The commit message: the job id, then its parameters as YAML."""
    import yaml

    request = spec["request"]
    params = {
        "job": job_id,
        "user": user,
        "queue": queue,
        "backend": request["backend"],
        "script": request["script"],
        "script_sha256": script_sha,
        "inputs": list(spec["input_paths"]),
        "reducers": spec["reducers"],
        "workers": spec["workers"],
        "memory_per_worker": spec.get("memory_per_worker"),
        "args": list(spec.get("args") or []),
    }
    return f"mrk8s job {job_id}\n\n" + str(yaml.safe_dump(params, sort_keys=False))


def commit_job(
    state_dir: Path,
    queue: Any,
    user: str,
    job_id: str,
    spec: dict[str, Any],
    script_name: str,
    script: bytes,
) -> Committed:
    """Render the job's manifests and commit them; raises :class:`GitError`."""
    import yaml

    from mrk8s.gateway import render

    target: GitTarget = queue.git
    objects = render.manifests(target, job_id, spec, script_name, script)
    manifest = yaml.safe_dump_all(objects, sort_keys=False)
    path = target.manifest_path(
        queue=queue.name, job_id=job_id, user=user, backend=spec["request"]["backend"]
    )
    header = f"# mrk8s job {job_id}, submitted by {user} to queue {queue.name}\n"
    repo = repository(target, state_dir)
    commit = repo.commit(
        {path: (header + manifest).encode()},
        author=user,
        email=target.email(user),
        committer=(target.committer_name, target.committer_email),
        message=message(job_id, user, queue.name, spec, hashlib.sha256(script).hexdigest()),
    )
    where = redact(target.repository, target.repository)
    logger.info("job %s committed to %s as %s", job_id, where, commit[:12])
    return Committed(commit=commit, path=path, manifest=manifest)
