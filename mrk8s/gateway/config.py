"""The gateway's settings: built once from the config file, the flags and the environment.

``mrk8s gateway serve`` calls :func:`load`; everything below it receives a
:class:`GatewayConfig` as an argument (no global configuration). The config
file is YAML; every key is optional, so ``serve`` with no file runs the
minimal contract: SQLite in the state directory, the local backend, one
queue, and ``$MRK8S_GATEWAY_TOKEN`` (when set) as an admin bearer token.

A mistake in the file (an unknown key, a wrong type, a queue that does not
exist) raises :class:`mrk8s.errors.UsageError` naming the key and the fix,
before the service starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mrk8s.engine.settings import parse_size
from mrk8s.errors import UsageError

#: The queue a job goes to when it names none (and the only one with no config).
DEFAULT_QUEUE = "default"

#: Jobs running at once per queue when the config says nothing: the machines this
#: runs on in tests have two cores, and each job starts its own worker processes.
DEFAULT_MAX_RUNNING = 2

#: Largest artifact upload: job scripts and small inputs, not data sets (those are URLs).
DEFAULT_MAX_ARTIFACT_BYTES = 64 << 20

#: The admin whose token comes from $MRK8S_GATEWAY_TOKEN.
ENV_ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """Someone who may call the API: a bearer token and/or an HTTP Basic password."""

    name: str
    """Who the jobs, artifacts and audit rows are attributed to."""
    token: str | None = None
    """Bearer token (``Authorization: Bearer TOKEN``)."""
    password: str | None = None
    """HTTP Basic password (``Authorization: Basic base64(name:password)``)."""
    admin: bool = False
    """Admins see and cancel every job and read the audit log."""


#: Kinds of cluster a job can run on (the request's ``backend`` names one).
CLUSTER_KINDS = ("local", "k8s", "ray")

#: The cluster of a gateway whose config names none: this machine.
LOCAL_CLUSTER = "local"


@dataclass(frozen=True)
class Cluster:
    """Somewhere jobs run: this machine, a Kubernetes cluster (a kube context) or Ray."""

    name: str
    """Starts the id of every job it runs (so the id tells which cluster holds the job)."""
    kind: str = "local"
    """local, k8s or ray: a request's ``backend`` picks the clusters of that kind."""
    weight: float = 1.0
    """Share of a queue's jobs this cluster gets (a queue may give its own weights)."""
    kubeconfig: str | None = None
    """k8s: the kubeconfig file (default: in a pod its service account, else $KUBECONFIG)."""
    context: str | None = None
    """k8s: the kubeconfig context (default: its current one)."""
    namespace: str | None = None
    """k8s: the namespace of the jobs' objects (default: the context's, else mrk8s)."""
    image: str | None = None
    """k8s: the mrk8s image the driver and task pods run (default: mrk8s run's)."""
    storage: str = ""
    """k8s: a URL the cluster reads and writes (e.g. s3://bucket/mrk8s): each job's shuffle,
    output and uploaded inputs go under it."""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """k8s: fsspec options with which the gateway reads and writes ``storage``."""
    job_storage_options: Mapping[str, Any] = field(default_factory=dict)
    """k8s: fsspec options handed to the job's pods (``--storage-options``; no secrets:
    credentials go in a Secret named in ``env_from_secret``)."""
    env_from_secret: tuple[str, ...] = ()
    """k8s: Secrets whose keys become the pods' environment (storage credentials)."""
    address: str | None = None
    """ray: the URL of the Ray head's dashboard (its Job Submission API), http://HOST:8265."""


@dataclass(frozen=True)
class Queue:
    """A named line of jobs with a cap on how many run at once (the rest wait QUEUED)."""

    name: str
    max_running: int = DEFAULT_MAX_RUNNING
    """Jobs of this queue running at once."""
    max_workers: int = 8
    """Largest ``resources.workers`` a job of this queue may ask for (more is refused)."""
    default_workers: int = 2
    """Worker processes of a job that does not say (``mrk8s run --workers``)."""
    clusters: Mapping[str, float] = field(default_factory=dict)
    """The clusters that serve this queue and their weights (empty: every cluster, with
    its own weight)."""
    max_reducers: int = 10_000
    """Largest ``reducers`` a job of this queue may ask for (more is refused)."""
    mode: str = "direct"
    """``direct``: the gateway runs the job; ``declarative``: it commits the job's manifests
    to ``git`` and its reconciler applies them (:mod:`mrk8s.gateway.gitops`)."""
    git: Any = None
    """A declarative queue's repository and target (:class:`~mrk8s.gateway.gitconfig.GitTarget`)."""


@dataclass(frozen=True)
class Webhooks:
    """How the gateway calls a job's ``callback_url`` when the job ends (see webhooks.py)."""

    secret: str = ""
    """HMAC-SHA256 key of the signature header; $MRK8S_GATEWAY_WEBHOOK_SECRET sets it too.
    Empty: jobs may not ask for a callback."""
    max_attempts: int = 8
    """Attempts of one delivery before it is given up (FAILED)."""
    backoff_seconds: float = 1.0
    """Wait before the second attempt; it doubles after each failure."""
    max_backoff_seconds: float = 300.0
    """Longest wait between two attempts."""
    timeout_seconds: float = 10.0
    """How long one attempt may take."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the service needs; see the module docstring."""

    state_dir: Path
    """Database (SQLite), artifacts, job directories (script, log, output, shuffle)."""
    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite in ``state_dir`` (PostgreSQL: a config change)."""
    users: tuple[User, ...] = ()
    """Who may call the API. No users at all turns authentication off (see README)."""
    queues: tuple[Queue, ...] = (Queue(DEFAULT_QUEUE),)
    default_queue: str = DEFAULT_QUEUE
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    allow_local_inputs: bool = False
    """Whether jobs may read paths of the gateway's own disk (off: only URLs and artifacts)."""
    max_launches: int = 3
    """Times a job's process may be started (the first run, then resumes after it died)."""
    poll_seconds: float = 0.25
    """How often running jobs' processes and commit records are looked at."""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec options for input URLs (e.g. an S3 endpoint), handed to every job."""
    clusters: tuple[Cluster, ...] = (Cluster(LOCAL_CLUSTER),)
    """Where jobs run (none in the file: this machine only)."""
    routing_seed: int | None = None
    """Seed of the random choice of a cluster by weight (tests; None: from the OS)."""
    webhooks: Webhooks = field(default_factory=Webhooks)
    """Calls to the jobs' ``callback_url`` when they end."""

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'gateway.db'}"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.users)

    def queue(self, name: str) -> Queue | None:
        return next((q for q in self.queues if q.name == name), None)

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)


_TOP_KEYS = {
    "state_dir",
    "database",
    "users",
    "queues",
    "default_queue",
    "artifacts",
    "allow_local_inputs",
    "max_launches",
    "storage_options",
    "clusters",
    "routing",
    "webhooks",
}


def load(
    path: str | None,
    *,
    state_dir: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> GatewayConfig:
    """The config file at ``path`` (or none), with ``--state-dir`` and the environment."""
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            with open(path) as f:
                raw = yaml.safe_load(f) or {}
        except OSError as exc:
            raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise UsageError(f"--config {path}: the file must hold a mapping of settings")
    return from_mapping(raw, state_dir=state_dir, environ=environ, source=path or "config")


def from_mapping(
    raw: Mapping[str, Any],
    *,
    state_dir: str | None = None,
    environ: Mapping[str, str] = os.environ,
    source: str = "config",
) -> GatewayConfig:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise UsageError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; the settings are "
            f"{', '.join(sorted(_TOP_KEYS))}"
        )
    where = state_dir or raw.get("state_dir") or "mrk8s-gateway"
    users = [_user(u, source, i) for i, u in enumerate(_list(raw, "users", source))]
    token = environ.get("MRK8S_GATEWAY_TOKEN")
    if token:
        users.append(User(name=ENV_ADMIN, token=token, admin=True))
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise UsageError(f"{source}: users: a user name appears twice ({', '.join(names)})")
    queues = tuple(_queue(name, q, source) for name, q in _mapping(raw, "queues", source).items())
    default_queue = str(raw.get("default_queue") or DEFAULT_QUEUE)
    if not any(q.name == default_queue for q in queues):
        if "queues" in raw and "default_queue" in raw:
            raise UsageError(
                f"{source}: default_queue {default_queue!r} is not one of the queues "
                f"({', '.join(q.name for q in queues)})"
            )
        queues = (*queues, Queue(default_queue))
    artifacts = _mapping(raw, "artifacts", source)
    max_bytes = parse_size(
        artifacts.get("max_bytes", DEFAULT_MAX_ARTIFACT_BYTES), "artifacts.max_bytes"
    )
    clusters = tuple(
        _cluster(c, source, i) for i, c in enumerate(_list(raw, "clusters", source))
    ) or (Cluster(LOCAL_CLUSTER),)
    cluster_names = [c.name for c in clusters]
    if len(set(cluster_names)) != len(cluster_names):
        raise UsageError(f"{source}: clusters: a name appears twice ({', '.join(cluster_names)})")
    for q in queues:
        for name in q.clusters:
            if name not in cluster_names:
                raise UsageError(
                    f"{source}: queues.{q.name}.clusters names {name!r}, which is not one of "
                    f"the clusters ({', '.join(cluster_names)})"
                )
    # A queue that lists its clusters by name gives each its own weight.
    own = {c.name: c.weight for c in clusters}
    queues = tuple(
        replace(q, clusters={n: own[n] if w < 0 else w for n, w in q.clusters.items()})
        for q in queues
    )
    if any(q.mode == "declarative" for q in queues):
        from mrk8s.gateway import gitconfig

        queues = tuple(
            gitconfig.bind(q, clusters, source) if q.mode == "declarative" else q for q in queues
        )
    routing = _mapping(raw, "routing", source)
    if set(routing) - {"seed"}:
        raise UsageError(f"{source}: routing: the only setting is seed (an integer)")
    seed = routing.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UsageError(f"{source}: routing.seed is {seed!r}: give an integer")
    return GatewayConfig(
        clusters=clusters,
        routing_seed=seed,
        state_dir=Path(where).absolute(),
        database_url=str(raw.get("database") or ""),
        users=tuple(users),
        queues=queues,
        default_queue=default_queue,
        max_artifact_bytes=max_bytes,
        allow_local_inputs=bool(raw.get("allow_local_inputs", False)),
        max_launches=_positive(raw.get("max_launches", 3), "max_launches", source),
        storage_options=dict(_mapping(raw, "storage_options", source)),
        webhooks=_webhooks(_mapping(raw, "webhooks", source), source, environ),
    )


def _list(raw: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise UsageError(f"{source}: {key} must be a list")
    return value


def _mapping(raw: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"{source}: {key} must be a mapping")
    return value


def _positive(value: Any, key: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{source}: {key} is {value!r}: give a whole number of at least 1")
    return value


def _user(raw: Any, source: str, i: int) -> User:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise UsageError(f"{source}: users[{i}] needs a name (and a token or a password)")
    unknown = sorted(set(raw) - {"name", "token", "password", "admin"})
    if unknown:
        raise UsageError(
            f"{source}: users[{i}] ({raw['name']}): unknown key(s) {', '.join(unknown)}; "
            "a user has name, token, password, admin"
        )
    if not raw.get("token") and not raw.get("password"):
        raise UsageError(
            f"{source}: user {raw['name']!r} has neither a token nor a password: give one"
        )
    return User(
        name=str(raw["name"]),
        token=str(raw["token"]) if raw.get("token") else None,
        password=str(raw["password"]) if raw.get("password") else None,
        admin=bool(raw.get("admin", False)),
    )


def _queue(name: str, raw: Any, source: str) -> Queue:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: queues.{name} must be a mapping (e.g. max_running: 2)")
    keys = {"max_running", "max_workers", "default_workers", "max_reducers", "clusters"}
    keys |= {"mode", "git"}  # declarative mode (gitconfig.py)
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise UsageError(
            f"{source}: queues.{name}: unknown key(s) {', '.join(unknown)}; a queue has "
            f"{', '.join(sorted(keys))}"
        )
    values: dict[str, Any] = {
        k: _positive(v, f"queues.{name}.{k}", source)
        for k, v in raw.items()
        if k not in ("clusters", "mode", "git")
    }
    if "mode" in raw or "git" in raw:
        from mrk8s.gateway import gitconfig

        values["mode"], values["git"] = gitconfig.queue_mode(str(name), raw, source)
    queue = Queue(
        name=str(name), clusters=_queue_clusters(raw.get("clusters"), name, source), **values
    )
    if queue.default_workers > queue.max_workers:
        raise UsageError(
            f"{source}: queues.{name}: default_workers {queue.default_workers} is above "
            f"max_workers {queue.max_workers}"
        )
    return queue


def _weight(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(f"{source}: {where} is {value!r}: give a number of at least 0")
    return float(value)


def _queue_clusters(raw: Any, queue: str, source: str) -> dict[str, float]:
    """``clusters:`` of a queue: a list of names (their own weights) or name -> weight."""
    if raw is None:
        return {}
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return {n: -1.0 for n in raw}  # -1: the cluster's own weight (set in from_mapping)
    if isinstance(raw, dict):
        return {str(n): _weight(w, f"queues.{queue}.clusters.{n}", source) for n, w in raw.items()}
    raise UsageError(
        f"{source}: queues.{queue}.clusters must be a list of cluster names or a mapping of "
        "cluster name to weight, e.g. {east: 3, west: 1}"
    )


_CLUSTER_KEYS = {
    "local": {"name", "kind", "weight"},
    "k8s": {
        "name",
        "kind",
        "weight",
        "kubeconfig",
        "context",
        "namespace",
        "image",
        "storage",
        "storage_options",
        "job_storage_options",
        "env_from_secret",
    },
    "ray": {"name", "kind", "weight", "address"},
}


def _cluster(raw: Any, source: str, i: int) -> Cluster:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise UsageError(f"{source}: clusters[{i}] needs a name and a kind (local, k8s or ray)")
    name = str(raw["name"])
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", name):
        raise UsageError(
            f"{source}: clusters[{i}]: name {name!r} must be lowercase letters, digits and '-' "
            "(at most 32; it starts every job id and the jobs' Kubernetes object names)"
        )
    kind = raw.get("kind", "local")
    if kind not in CLUSTER_KINDS:
        raise UsageError(
            f"{source}: cluster {name!r}: kind {kind!r} is not one of {', '.join(CLUSTER_KINDS)}"
        )
    unknown = sorted(set(raw) - _CLUSTER_KEYS[kind])
    if unknown:
        raise UsageError(
            f"{source}: cluster {name!r}: unknown key(s) {', '.join(unknown)}; a {kind} cluster "
            f"has {', '.join(sorted(_CLUSTER_KEYS[kind]))}"
        )
    if kind == "k8s" and not str(raw.get("storage") or "").startswith(
        ("s3://", "gs://", "gcs://", "az://", "abfs://")
    ):
        raise UsageError(
            f"{source}: cluster {name!r}: give storage, an object-store URL the cluster's pods "
            "and the gateway both reach (e.g. s3://bucket/mrk8s): the jobs' shuffle, output "
            "and uploaded inputs go there"
        )
    if kind == "ray" and not str(raw.get("address") or "").startswith(("http://", "https://")):
        raise UsageError(
            f"{source}: cluster {name!r}: give address, the URL of the Ray head's dashboard, "
            "which serves the Job Submission API (e.g. http://head:8265)"
        )
    secrets = raw.get("env_from_secret") or []
    if isinstance(secrets, str):
        secrets = [secrets]
    return Cluster(
        name=name,
        kind=kind,
        weight=_weight(raw.get("weight", 1), f"clusters[{i}].weight", source),
        kubeconfig=raw.get("kubeconfig"),
        context=raw.get("context"),
        namespace=raw.get("namespace"),
        image=raw.get("image"),
        storage=str(raw.get("storage") or "").rstrip("/"),
        storage_options=dict(_mapping(raw, "storage_options", source)),
        job_storage_options=dict(_mapping(raw, "job_storage_options", source)),
        env_from_secret=tuple(str(s) for s in secrets),
        address=raw.get("address"),
    )


def _webhooks(raw: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Webhooks:
    keys = {"secret", "max_attempts", "backoff_seconds", "max_backoff_seconds", "timeout_seconds"}
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise UsageError(
            f"{source}: webhooks: unknown key(s) {', '.join(unknown)}; webhooks has "
            f"{', '.join(sorted(keys))}"
        )
    seconds: dict[str, float] = {}
    for key in ("backoff_seconds", "max_backoff_seconds", "timeout_seconds"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(
                    f"{source}: webhooks.{key} is {value!r}: give a number of seconds above 0"
                )
            seconds[key] = float(value)
    attempts = _positive(raw.get("max_attempts", 8), "webhooks.max_attempts", source)
    secret = environ.get("MRK8S_GATEWAY_WEBHOOK_SECRET") or str(raw.get("secret") or "")
    return Webhooks(secret=secret, max_attempts=attempts, **seconds)
