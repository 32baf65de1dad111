"""Shipping the job's script and the modules beside it to a Ray cluster.

Called by :class:`scheduler.backends.ray.executor.RayExecutor` when it
connects to an existing cluster: the directory holding the job script goes
to every node as Ray's ``working_dir`` runtime environment (workers start in
their node's copy, which is on their ``sys.path``), so a script that imports
a module beside it runs on a remote cluster without an ImportError.

Before anything is uploaded the directory is measured, without what never
belongs in a job (``.git``, virtual environments, caches): past
:data:`DEFAULT_LIMIT` the job is refused with the largest entries named,
rather than uploading a home directory by accident.
"""

from __future__ import annotations

import os
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
    #: Virtual environments found under other names (by their ``pyvenv.cfg``), relative.
    venvs: tuple[str, ...] = ()

    def runtime_env(self) -> dict[str, object]:
        """Ray's runtime environment that ships this directory."""
        excludes = [*EXCLUDES, *(f"/{v}" for v in self.venvs)]
        return {"working_dir": self.directory, "excludes": excludes}


def _is_venv(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def measure(directory: str, limit: int = DEFAULT_LIMIT) -> Package:
    """The package of ``directory``; :class:`ShipTooLargeError` past ``limit`` bytes."""
    directory = os.path.abspath(directory)
    total = files = 0
    sizes: dict[str, int] = {}  # per top-level entry, for the error message
    venvs: list[str] = []
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
            key = top or name
            sizes[key] = sizes.get(key, 0) + size
    if total > limit:
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        named = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in largest)
        raise ShipTooLargeError(
            f"the job script's directory {directory} holds {total / 2**20:.1f} MiB "
            f"(largest: {named}), more than the {limit / 2**20:.0f} MiB that --backend ray "
            "ships to the cluster with the script: move the script and the modules it "
            "imports into a directory of their own (data belongs in the inputs, not "
            "beside the script), or raise the limit with $MRK8S_RAY_SHIP_LIMIT"
        )
    return Package(directory, total, files, tuple(venvs))
