"""A declarative queue's settings: its git repository, its layout, and the cluster it targets.

Read by :func:`mrk8s.gateway.config.from_mapping` for a queue whose config
says ``mode: declarative``; the result hangs on the queue
(:attr:`mrk8s.gateway.config.Queue.git`) and is what
:mod:`mrk8s.gateway.gitops`, :mod:`mrk8s.gateway.render` and
:mod:`mrk8s.gateway.reconciler` receive. In the config file::

    queues:
      reviewed:
        mode: declarative
        git:
          repository: https://git.example.com/platform/jobs.git   # or a path
          branch: main
          path: "jobs/{queue}/{job_id}.yaml"
          author_email: "{user}@example.com"
          output: s3://results/gateway
          shuffle_dir: s3://scratch/mrk8s
          namespace: mrk8s
          image: ghcr.io/mrk8s/mrk8s:0.1.0
          env_from_secret: [mrk8s-s3]
          kubeconfig: /etc/mrk8s/kubeconfig   # where the reconciler applies; default in-cluster

A mistake raises :class:`mrk8s.errors.UsageError` naming the key and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mrk8s.errors import UsageError

MODES = ("direct", "declarative")
#: The placeholders a manifest's path and the author's e-mail may use.
PATH_FIELDS = ("queue", "job_id", "user", "backend")
_FIELD = re.compile(r"{([^{}]*)}")


@dataclass(frozen=True)
class GitTarget:
    """Where a declarative queue commits its jobs, and what the manifests point at."""

    repository: str
    """The repository to push to: a URL git understands or a path (e.g. a bare repository)."""
    output: str = ""
    """Base URL of the jobs' outputs (each job writes under ``OUTPUT/JOB_ID``): the pods
    write it, so a URL they can reach (default: the cluster's ``STORAGE/output``)."""
    shuffle_dir: str = ""
    """``mrk8s run --shuffle-dir`` of the jobs (default: the cluster's ``STORAGE/shuffle``)."""
    branch: str = "main"
    """The branch each submission is committed to."""
    apply_branch: str = ""
    """The branch the reconciler applies (default: ``branch``). Another one makes every job a
    proposal: it waits QUEUED until someone merges it there, and a job whose manifest was
    removed before that merge is cancelled."""
    path: str = "jobs/{queue}/{job_id}.yaml"
    """Where each job's manifest goes in the repository (placeholders: queue, job_id, user,
    backend); the reconciler reads every ``.yaml`` under the part before the first ``{``."""
    author_email: str = "{user}@users.mrk8s.invalid"
    """The commit author's e-mail; the author's name is the authenticated user's."""
    committer_name: str = "mrk8s gateway"
    committer_email: str = "gateway@mrk8s.invalid"
    cluster: str = ""
    """The cluster the reconciler applies to: a ``k8s`` cluster of the config, whose
    settings fill those left out here, and whose backend follows the applied jobs (default:
    the queue's one k8s cluster; with no k8s cluster in the config, the queue's name, and
    the settings below are the only ones). It starts the jobs' ids."""
    kubeconfig: str | None = None
    """Credentials of the reconciler (default: in-cluster, else $KUBECONFIG)."""
    context: str | None = None
    namespace: str = ""
    """Where the jobs' objects go (default: the cluster's, else mrk8s)."""
    image: str = ""
    """The worker image of the jobs' pods (default: the released mrk8s image)."""
    env_from_secret: tuple[str, ...] = ()
    """Secrets whose keys become the pods' environment (storage credentials)."""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec options the pods get (``--storage-options``): no secrets, they go to git."""
    ttl: int = 3600
    """Seconds finished Jobs (or RayJobs) stay in the cluster."""
    ray_version: str = "2.60.0"
    """``rayVersion`` of the RayJob's cluster (jobs with ``backend: ray``)."""
    interval: float = 5.0
    """Seconds between the reconciler's looks at the branch (a submission wakes it too)."""

    @property
    def applied(self) -> GitTarget:
        """This target as the reconciler reads it: its branch is the one applied."""
        return replace(self, branch=self.apply_branch or self.branch)

    @property
    def root(self) -> str:
        """The directory the reconciler reads: ``path`` up to its first placeholder."""
        head = self.path.split("{", 1)[0]
        return head.rsplit("/", 1)[0] if "/" in head else ""

    def manifest_path(self, **values: str) -> str:
        return self.path.format(**values)

    def email(self, user: str) -> str:
        local = re.sub(r"[^A-Za-z0-9._+-]+", "-", user).strip("-.") or "user"
        return self.author_email.format(user=local)


_KEYS: dict[str, Any] = {
    "repository": str,
    "output": str,
    "shuffle_dir": str,
    "branch": str,
    "apply_branch": str,
    "path": str,
    "author_email": str,
    "committer_name": str,
    "committer_email": str,
    "cluster": str,
    "kubeconfig": str,
    "context": str,
    "namespace": str,
    "image": str,
    "env_from_secret": list,
    "storage_options": dict,
    "ttl": int,
    "ray_version": str,
    "interval": (int, float),
}
_REQUIRED = ("repository",)


def queue_mode(name: str, raw: Mapping[str, Any], source: str) -> tuple[str, GitTarget | None]:
    """The queue's ``mode`` and, for ``declarative``, its :class:`GitTarget`."""
    mode = raw.get("mode", "direct")
    where = f"{source}: queues.{name}"
    if mode not in MODES:
        raise UsageError(f"{where}.mode is {mode!r}: give one of {', '.join(MODES)}")
    git = raw.get("git")
    if mode == "direct":
        if git is not None:
            raise UsageError(
                f"{where}: git is set but mode is direct: add mode: declarative, or remove git"
            )
        return mode, None
    try:
        import kubernetes  # noqa: F401  (rendering and applying need it)
    except ImportError as exc:
        raise UsageError(
            f"{where}: mode declarative renders and applies Kubernetes manifests and needs the "
            "Kubernetes client: pip install 'mrk8s[gateway,k8s]'"
        ) from exc
    if not isinstance(git, dict):
        raise UsageError(
            f"{where}: mode declarative needs git: a mapping with "
            f"{', '.join(_REQUIRED)} (see README, 'Declarative mode')"
        )
    unknown = sorted(set(git) - set(_KEYS))
    if unknown:
        raise UsageError(
            f"{where}.git: unknown key(s) {', '.join(unknown)}; the keys are "
            f"{', '.join(sorted(_KEYS))}"
        )
    missing = [k for k in _REQUIRED if not git.get(k)]
    if missing:
        raise UsageError(f"{where}.git: give {', '.join(missing)}")
    for key, value in git.items():
        kind = _KEYS[key]
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise UsageError(f"{where}.git.{key} is {value!r}: the wrong type")
    values = dict(git)
    values["env_from_secret"] = tuple(str(s) for s in git.get("env_from_secret") or ())
    values["storage_options"] = dict(git.get("storage_options") or {})
    target = GitTarget(**values)
    for key in ("path", "author_email"):
        fields = _FIELD.findall(getattr(target, key))
        allowed = PATH_FIELDS if key == "path" else ("user",)
        bad = [f for f in fields if f not in allowed]
        if bad:
            raise UsageError(
                f"{where}.git.{key}: unknown placeholder(s) {', '.join(bad)}; it may use "
                f"{', '.join('{' + f + '}' for f in allowed)}"
            )
    if "{job_id}" not in target.path or not target.path.endswith((".yaml", ".yml")):
        raise UsageError(
            f"{where}.git.path is {target.path!r}: it must contain {{job_id}} (one file per "
            "job) and end in .yaml"
        )
    if target.ttl < 1 or target.interval <= 0:
        raise UsageError(f"{where}.git: ttl and interval must be positive")
    return mode, target


def bind(queue: Any, clusters: Sequence[Any], source: str) -> Any:
    """The declarative ``queue`` with its target completed from the cluster it applies to."""
    where = f"{source}: queues.{queue.name}.git"
    target: GitTarget = queue.git
    k8s = [c for c in clusters if c.kind == "k8s"]
    name = target.cluster
    if not name and k8s:
        serving = [c for c in k8s if not queue.clusters or c.name in queue.clusters]
        if len(serving) != 1:
            raise UsageError(
                f"{where}: name the k8s cluster the reconciler applies to with cluster: "
                f"(one of {', '.join(c.name for c in k8s)})"
            )
        name = serving[0].name
    cluster = next((c for c in clusters if c.name == name), None)
    if name and cluster is None and k8s:
        raise UsageError(
            f"{where}.cluster is {name!r}, not a k8s cluster of the config "
            f"({', '.join(c.name for c in k8s)})"
        )
    if cluster is not None and cluster.kind != "k8s":
        raise UsageError(
            f"{where}.cluster is {name!r}, a {cluster.kind} cluster: declarative jobs are "
            "Kubernetes objects; name a k8s cluster"
        )
    filled: dict[str, Any] = {"cluster": name or queue.name}
    if cluster is not None:
        storage = cluster.storage.rstrip("/")
        filled.update(
            output=target.output or f"{storage}/output",
            shuffle_dir=target.shuffle_dir or f"{storage}/shuffle",
            kubeconfig=target.kubeconfig or cluster.kubeconfig,
            context=target.context or cluster.context,
            namespace=target.namespace or cluster.namespace or "",
            image=target.image or cluster.image or "",
            env_from_secret=target.env_from_secret or tuple(cluster.env_from_secret),
            storage_options=target.storage_options or dict(cluster.job_storage_options),
        )
    if not filled.get("namespace", target.namespace):
        filled["namespace"] = "mrk8s"
    if not filled.get("image", target.image):
        from mrk8s.engine.settings import default_image

        filled["image"] = default_image()
    bound = replace(target, **filled)
    missing = [k for k in ("output", "shuffle_dir") if not getattr(bound, k)]
    if missing:
        raise UsageError(
            f"{where}: give {', '.join(missing)} (URLs the pods reach), or name a k8s cluster "
            "with storage in cluster:"
        )
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", bound.cluster):
        raise UsageError(
            f"{where}.cluster is {bound.cluster!r}: give a lowercase name of letters, "
            "digits and '-' (it starts the jobs' ids)"
        )
    return replace(queue, git=bound)
