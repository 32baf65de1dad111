"""Backends: where the indexed tasks of a stage run.

A registry maps a backend name to a dotted class path and the message shown
when its optional dependency is missing, so that ``import scheduler`` never
imports Ray or Kubernetes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BackendEntry:
    class_path: str
    missing: str  # shown when the import fails
    #: Its tasks run on other machines and load the job's code from the job's
    #: storage: the driver ships the script's directory there (scheduler.ship).
    ships_code: bool = False


REGISTRY: dict[str, BackendEntry] = {
    "local": BackendEntry("scheduler.backends.local:LocalExecutor", ""),
    "ray": BackendEntry(
        "scheduler.backends.ray:RayExecutor",
        "--backend ray needs Ray: pip install 'mrk8s[ray]'",
    ),
    "k8s": BackendEntry(
        "scheduler.backends.k8s.executor:KubernetesExecutor",
        "--backend k8s needs the Kubernetes client: pip install 'mrk8s[k8s]'",
        ships_code=True,
    ),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def load(name: str) -> Any:
    """The executor class registered as ``name``; ImportError says how to install it."""
    entry = REGISTRY[name]
    module_name, _, attr = entry.class_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if entry.missing and (exc.name or "").partition(".")[0] != module_name.partition(".")[0]:
            # The optional library is missing (not a bug in our own module).
            raise ImportError(f"{entry.missing} ({exc})") from exc
        raise
    return getattr(module, attr)
