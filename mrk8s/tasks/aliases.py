"""Make ``import mrjob...`` resolve to :mod:`mrk8s.mrjob`, in this process only.

Called by :mod:`mrk8s.tasks.loader` just before it imports a job script whose
source imports mrjob, in the driver and in every worker (they are separate
processes), so an unedited mrjob job runs without mrjob installed. The
aliases are ``sys.modules`` entries (``mrjob`` -> ``mrk8s.mrjob``,
``mrjob.job`` -> ``mrk8s.mrjob.job``, ...) plus a finder that turns an import
of any other ``mrjob.*`` module into an error saying what is provided.

A process that already imported the real mrjob keeps it: aliasing there
would break the real package under its users' feet, so that is an error.

This module lives with the loader, below the mrjob adapter in the package's
layers: it names the adapter's package (:data:`TARGET`) and imports it by
name when a script needs it, so the engine never imports the adapter.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from mrk8s.errors import JobDefinitionError

#: The package that stands in for ``mrjob`` (its ``PROVIDED_MODULES`` say which
#: ``mrjob.X`` modules it mirrors).
TARGET = "mrk8s.mrjob"

#: An import statement of mrjob (not of mrk8s.mrjob) at the start of a line.
_IMPORTS_MRJOB = re.compile(
    r"^[ \t]*(?:from[ \t]+mrjob(?:\.\w+)*[ \t]+import\b|import[ \t]+mrjob\b)", re.MULTILINE
)


def imports_mrjob(source: str) -> bool:
    """Whether a script's source imports ``mrjob`` (``from mrjob.job import MRJob``)."""
    return _IMPORTS_MRJOB.search(source) is not None


def is_installed() -> bool:
    """Whether ``mrjob`` in this process is our alias."""
    target = sys.modules.get(TARGET)
    return target is not None and sys.modules.get("mrjob") is target


def _provided_modules() -> tuple[str, ...]:
    """The ``mrjob.X`` modules the adapter provides (its ``PROVIDED_MODULES``)."""
    return tuple(importlib.import_module(TARGET).PROVIDED_MODULES)


class _NotProvided(importlib.abc.MetaPathFinder):
    """Fails an import of an ``mrjob.*`` module this package does not provide."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("mrjob.") or not is_installed():
            return None
        provided = ", ".join(f"mrjob.{name}" for name in _provided_modules())
        raise ModuleNotFoundError(
            f"{fullname} is not part of mrk8s's mrjob compatibility (it provides {provided}): "
            "remove the import, or replace what it gives with plain Python or mrk8s",
            name=fullname,
        )


def install(script: str) -> None:
    """Alias ``mrjob`` to :mod:`mrk8s.mrjob` in this process (idempotent)."""
    target = importlib.import_module(TARGET)
    existing = sys.modules.get("mrjob")
    if existing is target:
        return
    if existing is not None:
        raise JobDefinitionError(
            f"{script} imports mrjob, and this process has already imported the real mrjob "
            f"package ({getattr(existing, '__file__', existing)}): run the job in its own "
            "process (`mrk8s run SCRIPT ...`), or rename its imports from `mrjob.` to "
            "`mrk8s.mrjob.`"
        )
    sys.modules["mrjob"] = target
    for name in _provided_modules():
        sys.modules[f"mrjob.{name}"] = importlib.import_module(f"{TARGET}.{name}")
    if not any(isinstance(f, _NotProvided) for f in sys.meta_path):
        sys.meta_path.insert(0, _NotProvided())
