"""The layers hold: mrk8s -> scheduler -> shuffle, and ``import mrk8s`` stays cheap.

The import-linter contracts in ``pyproject.toml`` are checked by running
``lint-imports`` itself. What a fresh interpreter actually imports is checked
in a subprocess that records every attempt to import a watched package (even
one that is not installed here), as well as what ends up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTRAS = ["ray", "kubernetes", "kfp", "fastapi", "uvicorn", "s3fs", "httpx"]

# Runs in a fresh interpreter: argv[1] is a JSON list of watched top-level names,
# argv[2:] the packages to import, each with all its submodules if suffixed "/**".
# An optional backend module whose extra is not installed is skipped.
PROBE = """
import importlib, json, pkgutil, sys

watched = set(json.loads(sys.argv[1]))
attempted = set()


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in watched:
            attempted.add(name)
        return None


sys.meta_path.insert(0, Watch())
for arg in sys.argv[2:]:
    name, _, recursive = arg.partition("/")
    package = importlib.import_module(name)
    if recursive:
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").partition(".")[0] not in watched:
                    raise
print(json.dumps({"attempted": sorted(attempted), "modules": sorted(sys.modules)}))
"""


def imports_of(packages: list[str], watched: list[str]) -> tuple[list[str], list[str]]:
    """(watched names whose import was attempted, modules loaded) after importing ``packages``."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(watched), *packages],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    loaded = [m for m in found["modules"] if m.partition(".")[0] in watched]
    return found["attempted"], loaded


@pytest.mark.timeout(60)
def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"

    proc = subprocess.run([str(lint_imports)], capture_output=True, text=True, cwd=REPO, timeout=60)

    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"
    assert "0 broken" in proc.stdout


@pytest.mark.timeout(60)
def test_import_mrk8s_imports_no_optional_extra():
    attempted, loaded = imports_of(["mrk8s"], [*EXTRAS, "mrk8s"])

    assert [m for m in attempted if not m.startswith("mrk8s")] == []
    assert [m for m in loaded if not m.startswith("mrk8s")] == []
    assert "mrk8s" in loaded  # the probe did import it


@pytest.mark.timeout(60)
def test_shuffle_imports_neither_upper_layer_nor_any_extra():
    attempted, loaded = imports_of(["shuffle/**"], [*EXTRAS, "scheduler", "mrk8s", "shuffle"])

    assert [m for m in attempted if not m.startswith("shuffle")] == []
    assert [m for m in loaded if not m.startswith("shuffle")] == []
    assert "shuffle.errors" in loaded


@pytest.mark.timeout(60)
def test_scheduler_does_not_import_mrk8s():
    attempted, loaded = imports_of(["scheduler/**"], [*EXTRAS, "mrk8s", "scheduler"])

    assert [m for m in attempted if m.startswith("mrk8s")] == []
    assert [m for m in loaded if m.startswith("mrk8s")] == []
    assert "scheduler.backends.local" in loaded
