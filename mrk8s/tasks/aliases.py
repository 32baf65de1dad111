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


def refusal(error: ImportError) -> ImportError:
    """Mark ``error`` as an import of a part of mrjob that mrk8s deliberately does not
    provide: its message is the whole story (the import, and what to use instead),
    so the loader shows it as one paragraph, without a traceback into mrk8s. It
    stays a plain ImportError (or ModuleNotFoundError) for the user's own code."""
    error.mrk8s_refusal = True  # type: ignore[attr-defined]
    return error


def is_refusal(error: BaseException) -> bool:
    """Whether ``error`` came from :func:`refusal`."""
    return getattr(error, "mrk8s_refusal", False) is True


_RUNNERS = (
    "mrk8s runs the job itself: run it with `mrk8s run SCRIPT INPUT...` (or "
    "`python SCRIPT INPUT...`), or from Python with job.make_runner(), which mrk8s provides"
)

#: What to use instead of each mrjob module mrk8s does not provide.
ALTERNATIVES = {
    "runner": _RUNNERS,
    "inline": _RUNNERS,
    "local": _RUNNERS,
    "sim": _RUNNERS,
    "bin": _RUNNERS,
    "launch": _RUNNERS,
    "hadoop": "mrk8s does not drive Hadoop: " + _RUNNERS,
    "emr": "mrk8s does not drive EMR: " + _RUNNERS + "; read inputs from s3:// URLs",
    "dataproc": "mrk8s does not drive Dataproc: " + _RUNNERS + "; read inputs from gs:// URLs",
    "spark": "mrk8s does not run Spark: express the work as MRSteps",
    "cloud": "mrk8s does not start clusters: " + _RUNNERS,
    "aws": "use boto3 directly",
    "iam": "use boto3 directly",
    "ami": "mrk8s does not start EMR clusters",
    "pool": "mrk8s does not start EMR clusters",
    "fs": "read and list files with fsspec (fsspec.open, fsspec.filesystem)",
    "cat": "open files with fsspec.open(path, compression='infer')",
    "parse": "use urllib.parse",
    "conf": "mrk8s reads no mrjob.conf: give options on the command line",
    "options": "declare options with configure_args() and add_passthru_arg()",
    "setup": "install what the job needs in the workers' Python environment",
    "retry": "mrk8s retries failed tasks itself",
    "logs": "read the job's summary.json and the workers' stderr",
    "tools": "mrk8s has its own command line (`mrk8s --help`)",
    "cmd": "mrk8s has its own command line (`mrk8s --help`)",
    "examples": "copy the example script beside your job and import it from there",
}


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
        raise not_provided(fullname)


def not_provided(fullname: str) -> ImportError:
    """The error for an import of the mrjob module ``fullname`` (``mrjob.emr``)."""
    provided = ", ".join(f"mrjob.{name}" for name in _provided_modules())
    top = fullname.split(".")[1] if "." in fullname else fullname
    instead = ALTERNATIVES.get(
        top, "remove the import, or replace what it gives with plain Python or mrk8s"
    )
    return refusal(
        ModuleNotFoundError(
            f"import of {fullname}: it is not part of mrk8s's mrjob compatibility (which "
            f"provides {provided}); {instead}",
            name=fullname,
        )
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
