"""Load a user's job script and find its job class.

Called by the driver (on the original script) and by workers (on the copy
shipped with the plan, or the original when it is present and unchanged).
The script's directory goes first on ``sys.path`` so modules beside it import
as they do when the script runs alone. The script is imported under its own
module name (never ``__main__``), so its ``if __name__ == "__main__"`` block
does not run again.

A script that imports ``mrjob`` (an unedited mrjob job) gets ``mrjob.*``
resolved to :mod:`mrk8s.mrjob` in this process first
(:mod:`mrk8s.tasks.run.aliases`), announced by one line on stderr unless quiet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType

from mrk8s.errors import JobDefinitionError, UserCodeError
from mrk8s.job import MapReduce
from mrk8s.tasks import aliases
from mrk8s.tasks.tracebacks import last_user_line, user_traceback


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem) or "job"
    if name[0].isdigit():
        name = "_" + name
    existing = sys.modules.get(name)
    if existing is not None and os.path.abspath(getattr(existing, "__file__", "") or "") != (
        os.path.abspath(path)
    ):
        name = f"mrk8s_job_{name}"
    return name


def load_module(path: str, *, quiet: bool = False) -> ModuleType:
    """Import the script at ``path`` (once per process)."""
    if not os.path.isfile(path):
        raise JobDefinitionError(
            f"job script {path!r} does not exist: give the path of a Python file that "
            "defines a MapReduce subclass"
        )
    path = os.path.abspath(path)
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == path and module.__name__ != "__main__":
            return module
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    _alias_mrjob(path, quiet=quiet)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JobDefinitionError(f"cannot import {path!r} as a Python module: is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        if aliases.is_refusal(exc):
            # A deliberate refusal: its message says it all; where is the user's line.
            raise JobDefinitionError(f"{last_user_line(exc) or path}: {exc}") from None
        raise UserCodeError(
            f"importing the job script {path} raised {type(exc).__name__}: {exc}",
            user_traceback=user_traceback(exc),
        ) from exc
    return module


def _alias_mrjob(path: str, *, quiet: bool) -> None:
    """If the script imports mrjob, resolve ``mrjob.*`` to mrk8s.mrjob in this process."""
    with open(path, encoding="utf-8", errors="replace") as f:
        if not aliases.imports_mrjob(f.read()):
            return
    if aliases.is_installed():
        return
    aliases.install(path)
    if not quiet:
        print(
            f"mrk8s: {os.path.basename(path)} imports mrjob: running it with mrk8s's mrjob "
            "compatibility (mrjob.* resolves to mrk8s.mrjob.*)",
            file=sys.stderr,
            flush=True,
        )


def find_job_class(module: ModuleType, job_class: str | None = None) -> type[MapReduce]:
    """The one MapReduce subclass defined in ``module``, or the one named ``job_class``."""
    defined = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, MapReduce)
        and obj.__module__ == module.__name__
        and not getattr(obj, "__mrk8s_abstract__", False)
    ]
    where = getattr(module, "__file__", module.__name__)
    if job_class:
        cls = getattr(module, job_class, None)
        if isinstance(cls, type) and issubclass(cls, MapReduce):
            return cls
        names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
        raise JobDefinitionError(
            f"{where} has no MapReduce subclass named {job_class!r} (found: {names}); "
            "fix --job-class"
        )
    if not defined:
        raise JobDefinitionError(
            f"{where} defines no MapReduce subclass: write `class MyJob(MapReduce):` with a "
            "mapper and/or reducer (from mrk8s import MapReduce)"
        )
    if len(defined) > 1:
        names = ", ".join(sorted(c.__name__ for c in defined))
        raise JobDefinitionError(
            f"{where} defines several MapReduce subclasses ({names}): choose one with "
            "--job-class NAME"
        )
    return defined[0]


def load_job_class(
    path: str, job_class: str | None = None, *, quiet: bool = False
) -> type[MapReduce]:
    return find_job_class(load_module(path, quiet=quiet), job_class)
