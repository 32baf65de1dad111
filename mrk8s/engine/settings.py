"""Run settings: built once at the edge (CLI, programmatic call), passed down.

Every field has a default and a one-line reason. Inner code receives these
objects as arguments; there is no process-global configuration.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mrk8s.errors import UsageError
from scheduler.backends.local import cpu_count

#: Default memory budget per worker. A map task's sort buffer takes a quarter
#: of it before spilling; a reducer merges within it.
DEFAULT_MEMORY = 1 << 30

#: Largest split of an uncompressed text input; smaller inputs are cut so that
#: every worker gets about two map tasks.
DEFAULT_MAX_SPLIT = 128 << 20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int, option: str = "") -> int:
    """``"512MiB"``, ``"1GB"``, ``"64m"`` or ``1048576`` -> bytes (k/m/g/t are powers of 1024).

    ``option`` (e.g. ``--split-size``) names the setting in the error message.
    """
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        named = f"{option} {text!r}" if option else repr(text)
        raise UsageError(
            f"{named} is not a size: write a number with an optional unit, e.g. 512MiB or 2GB"
        )
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def default_shuffle_dir(environ: Mapping[str, str] = os.environ) -> str:
    """$MRK8S_SHUFFLE_DIR, else a directory under the system's temp dir."""
    return environ.get("MRK8S_SHUFFLE_DIR") or os.path.join(tempfile.gettempdir(), "mrk8s-shuffle")


#: Default shipping limit of the script's directory (``$MRK8S_SHIP_LIMIT`` raises it).
DEFAULT_SHIP_LIMIT = 100 << 20

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)


def parse_duration(text: str | int, option: str = "") -> int:
    """``"1h"``, ``"30m"``, ``"90s"``, ``"2d"`` or ``3600`` -> whole seconds."""
    if isinstance(text, int):
        return text
    m = _DURATION.match(text)
    if not m:
        named = f"{option} {text!r}" if option else repr(text)
        raise UsageError(f"{named} is not a duration: write e.g. 3600, 90s, 30m, 1h or 2d")
    unit = (m.group(2) or "s").lower()
    return int(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def default_image() -> str:
    """The released worker image of this version of mrk8s (``--image``'s default)."""
    from mrk8s._version import __version__

    return f"ghcr.io/mrk8s/mrk8s:{__version__}"


@dataclass(frozen=True)
class KubernetesSettings:
    """How ``--backend k8s`` reaches the cluster and shapes the pods."""

    kubeconfig: str | None = None
    """Kubeconfig file; None: the in-cluster configuration, else $KUBECONFIG or ~/.kube/config."""
    context: str | None = None
    """Context of the kubeconfig; None: its current context."""
    namespace: str = "mrk8s"
    """Namespace of the job's Jobs, pods and owner ConfigMap."""
    image: str = field(default_factory=default_image)
    """The worker image: mrk8s and the job's dependencies installed."""
    cpu: str = "1"
    """CPU request and limit of each task's pod (a Kubernetes quantity: 1, 500m)."""
    ttl_seconds: int = 3600
    """How long finished Jobs and their pods stay for inspection."""
    env_secrets: tuple[str, ...] = ()
    """Secrets whose keys become the pods' environment (e.g. storage credentials)."""
    dry_run: bool = False
    """Print the manifests the job would create, create nothing, need no cluster."""
    node_local: bool = False
    """Map outputs on each node's disk, served by the shuffle-server DaemonSet."""
    tasks_per_pod: int | None = None
    """Tasks each pod runs one after another; None: ceil(tasks / workers), 1 without workers."""


@dataclass(frozen=True)
class RunSettings:
    """How to run a job (everything the ``mrk8s run`` command line says)."""

    script: str
    """Path of the job script."""
    inputs: tuple[str, ...] = ()
    """Input files, directories or globs (fsspec URLs); empty means stdin."""
    output: str | None = None
    """Output directory URL; None writes the results to stdout."""
    job_class: str | None = None
    """Which MapReduce subclass to run when the script defines several."""
    job_args: Mapping[str, Any] = field(default_factory=dict)
    """Values of the options the job declares in configure_args()."""
    backend: str = "local"
    """Where tasks run: local (processes here), ray (actors) or k8s (pods of Indexed Jobs)."""
    ray_address: str | None = None
    """The Ray cluster to connect to (auto, host:port, ray://...); None starts a local Ray."""
    placement: str = "locality"
    """Reducer placement: locality (where most of a partition is) or random (for benchmarks)."""
    workers: int | None = None
    """Worker processes (local backend); None means one per CPU."""
    reducers: int | None = None
    """Reduce partitions per step; None means max(2, workers)."""
    shuffle_dir: str = field(default_factory=default_shuffle_dir)
    """Where map outputs, commit records and the plan live (URL)."""
    job_id: str | None = None
    """Names the job's directory; the same id and shuffle dir resume a job."""
    output_format: str = "text"
    """text (json key TAB json value), jsonl or parquet."""
    overwrite: bool = False
    """Replace a non-empty output directory."""
    memory_per_worker: int = DEFAULT_MEMORY
    """Memory budget of one worker in bytes (sort buffer, merge)."""
    max_split_bytes: int = DEFAULT_MAX_SPLIT
    """Largest input split of a splittable text file."""
    max_attempts: int = 3
    """Attempts per task before the job fails (infrastructure failures)."""
    retry_user_errors: bool = False
    """Also retry tasks whose user code raised."""
    keep_shuffle: bool = False
    """Keep the job's shuffle directory after success."""
    speculative: bool = False
    """Give a straggling task (2x the median of its stage, 5 s at least) a second attempt."""
    restart: bool = False
    """Start over a job whose id exists with a different script, input or options."""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec options for every URL (credentials, endpoint_url, ...)."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    """Options of --backend k8s (cluster, namespace, image, pod resources)."""
    ship_limit: int = DEFAULT_SHIP_LIMIT
    """Largest script directory shipped to workers on other machines (bytes)."""

    def num_workers(self) -> int:
        return max(1, self.workers or cpu_count())

    def num_reducers(self) -> int:
        return self.reducers if self.reducers else max(2, self.num_workers())


#: Storage-option names that hold credentials (fsspec/s3fs/gcsfs/adlfs spellings).
_SECRET_NAMES = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "session_token",
        "account_key",
        "sas_token",
        "client_secret",
        "credentials",
    }
)


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without credentials, for writing into a job's plan.

    The plan lives in the shuffle store, where anyone who can read the job's
    data could read it; workers get the credentials from their own
    environment or from the options the driver hands them directly.
    """
    out: dict[str, Any] = {}
    for name, value in options.items():
        lowered = str(name).lower()
        if lowered in _SECRET_NAMES or "secret" in lowered or "password" in lowered:
            continue
        out[name] = redact(value) if isinstance(value, Mapping) else value
    return out


def check_reachable_by_workers(
    backend: str, shuffle_dir: str, output: str | None, inputs: Sequence[str] = ()
) -> None:
    """With ``--backend k8s``, every URL a task reads or writes must be reachable from a pod.

    A path on this machine (the shuffle directory, an input, the output) is
    not: name what is wrong and the way out, before anything is created.
    """
    if backend != "k8s":
        return

    def local(url: str) -> bool:
        return "://" not in url or url.startswith("file://")

    if local(shuffle_dir):
        raise UsageError(
            f"--shuffle-dir {shuffle_dir} is a directory on this machine, which the pods of "
            "--backend k8s cannot reach: give an object store every pod reaches, e.g. "
            "--shuffle-dir s3://bucket/mrk8s (with --storage-options for its endpoint); "
            "map outputs on the nodes' own disks need node-local mode"
        )
    for url in inputs:
        if local(url):
            raise UsageError(
                f"input {url} is a path on this machine, which the pods of --backend k8s "
                "cannot read: upload it to an object store (e.g. s3://bucket/input/) and "
                "name that URL"
            )
    if output is not None and local(output):
        raise UsageError(
            f"-o {output} is a path on this machine, which the pods of --backend k8s "
            "cannot write: give an object store URL (e.g. -o s3://bucket/out/), or leave "
            "out -o to print the results here"
        )
