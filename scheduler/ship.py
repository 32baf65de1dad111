"""Shipping the job's script and the modules beside it to workers on other machines.

Backend-neutral: the directory holding the job script is measured
(:func:`measure`), packed into a zip (:func:`pack`) and, wherever the
workers run, unpacked into a directory of their machine (:func:`unpack`,
once per machine and content), which becomes the head of the worker's
``sys.path``. So a script that imports a module beside it runs on a remote
cluster without an ImportError. The Ray backend puts the zip into Ray's
object store (:mod:`scheduler.backends.ray.executor`); for Kubernetes the
driver writes it into the job's storage, where every pod reads it
(``mrk8s.engine.driver``).

Before anything is packed the directory is measured, without what never
belongs in a job (``.git``, virtual environments, caches): past
:data:`DEFAULT_LIMIT` the job is refused with the largest entries named,
rather than shipping a home directory by accident.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass

from shuffle.errors import UserError

#: Largest directory shipped with a job by default (Ray's own ceiling is 500 MiB,
#: and every node downloads the package before its first task).
DEFAULT_LIMIT = 100 << 20

#: Never shipped: version control, virtual environments, caches (Ray's
#: ``excludes`` patterns, gitignore-style).
EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
)


class ShipTooLargeError(UserError):
    """The script's directory is larger than the shipping limit."""


@dataclass(frozen=True, slots=True)
class Package:
    """What will be shipped: the directory, its size without the excluded parts."""

    directory: str
    size: int
    files: int
    #: The files to ship, relative to ``directory``, in a stable order.
    paths: tuple[str, ...] = ()
    #: Virtual environments found under other names (by their ``pyvenv.cfg``), relative.
    venvs: tuple[str, ...] = ()


def _is_venv(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def measure(
    directory: str,
    limit: int = DEFAULT_LIMIT,
    *,
    backend: str = "ray",
    limit_env: str = "MRK8S_RAY_SHIP_LIMIT",
) -> Package:
    """The package of ``directory``; :class:`ShipTooLargeError` past ``limit`` bytes.

    ``backend`` and ``limit_env`` (the variable that raises the limit) are
    named in the error message.
    """
    directory = os.path.abspath(directory)
    total = files = 0
    sizes: dict[str, int] = {}  # per top-level entry, for the error message
    venvs: list[str] = []
    paths: list[str] = []
    for root, dirs, names in os.walk(directory):
        for d in [d for d in dirs if d not in EXCLUDES and _is_venv(os.path.join(root, d))]:
            venvs.append(os.path.relpath(os.path.join(root, d), directory))
        dirs[:] = [d for d in dirs if d not in EXCLUDES and not _is_venv(os.path.join(root, d))]
        rel = os.path.relpath(root, directory)
        top = rel.split(os.sep)[0] if rel != "." else None
        for name in names:
            path = os.path.join(root, name)
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue
            total += size
            files += 1
            paths.append(os.path.relpath(path, directory))
            key = top or name
            sizes[key] = sizes.get(key, 0) + size
    if total > limit:
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        named = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in largest)
        raise ShipTooLargeError(
            f"the job script's directory {directory} holds {total / 2**20:.1f} MiB "
            f"(largest: {named}), more than the {limit / 2**20:.0f} MiB that --backend {backend} "
            "ships to the cluster with the script: move the script and the modules it "
            "imports into a directory of their own (data belongs in the inputs, not "
            f"beside the script), or raise the limit with ${limit_env}"
        )
    return Package(directory, total, files, tuple(sorted(paths)), tuple(venvs))


def pack(package: Package) -> tuple[str, bytes]:
    """The package as a zip: (sha256 of its contents, the zip's bytes)."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in package.paths:
            path = os.path.join(package.directory, rel)
            if os.path.islink(path) and not os.path.exists(path):
                continue  # a dangling link: nothing to ship
            with open(path, "rb") as f:
                data = f.read()
            digest.update(rel.encode() + b"\0" + data + b"\0")
            zf.writestr(rel, data)
    return digest.hexdigest(), buffer.getvalue()


def unpack(digest: str, data: bytes, base: str | None = None) -> str:
    """Unpack a shipped zip once per node and content; the directory it is in.

    Unpacked beside its final name and renamed into place, so a second worker
    of the node starting at the same time never sees half a directory.
    """
    base = base or os.path.join(tempfile.gettempdir(), "mrk8s-code")
    target = os.path.join(base, digest[:24])
    if os.path.isdir(target):
        return target
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=base)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another worker of this node was first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target
