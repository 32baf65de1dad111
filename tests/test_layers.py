"""The layers hold: mrk8s -> scheduler -> shuffle, room by room inside mrk8s,
no import cycles anywhere, and ``import mrk8s`` stays cheap.

The import-linter contracts in ``pyproject.toml`` are checked by running
``lint-imports`` itself, on the tree as it is and on a copy with one
offending import added (so a contract that could not fail would be noticed).
What a fresh interpreter actually imports is checked in a subprocess that
records every attempt to import a watched package (even one that is not
installed here), as well as what ends up in ``sys.modules``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
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


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run on the tree at ``root`` (import-linter puts the cwd on sys.path)."""
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(exe), "--no-cache"], capture_output=True, text=True, cwd=root, timeout=120
    )


def copy_with_import(tmp_path: Path, module: str, imported: str) -> Path:
    """A copy of the three packages and the contracts, with ``import IMPORTED`` added to MODULE."""
    for package in ("mrk8s", "scheduler", "shuffle"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\nimport {imported}  # noqa\n")
    return tmp_path


@pytest.mark.timeout(120)
def test_import_linter_contracts_are_kept():
    proc = lint_imports(REPO)

    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"
    assert "0 broken" in proc.stdout


def rooms_contract() -> dict[str, object]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["type"] == "layers" and c.get("containers") == ["mrk8s"]
    ]
    return contract


def test_every_room_of_mrk8s_has_its_place_in_the_layers():
    """A new module or sub-package of mrk8s must be given a layer (or it could import anything)."""
    placed = {
        name.strip() for layer in rooms_contract()["layers"] for name in str(layer).split("|")
    }
    rooms = {
        p.stem
        for p in (REPO / "mrk8s").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and not p.name.startswith("_"))
    }

    assert rooms == placed


@pytest.mark.timeout(120)
def test_an_import_up_the_rooms_breaks_the_contract(tmp_path: Path):
    root = copy_with_import(tmp_path, "mrk8s.io.split", "mrk8s.engine.driver")

    proc = lint_imports(root)

    assert proc.returncode != 0
    assert "mrk8s.io is not allowed to import mrk8s.engine" in proc.stdout


@pytest.mark.timeout(120)
def test_a_cycle_inside_a_room_breaks_the_contract(tmp_path: Path):
    # run imports records; records importing run back closes a cycle in mrk8s.tasks.
    root = copy_with_import(tmp_path, "mrk8s.tasks.records", "mrk8s.tasks.run")

    proc = lint_imports(root)

    assert proc.returncode != 0
    assert "No cycles are allowed in mrk8s.tasks" in proc.stdout


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


@pytest.mark.timeout(60)
def test_the_local_backend_and_the_driver_import_no_optional_extra():
    # Everything a local job loads; Ray is imported only by scheduler.backends.ray,
    # through the registry, when --backend ray is chosen.
    modules = ["scheduler.backends.local", "mrk8s.engine.executors", "mrk8s.engine.driver",
               "mrk8s.tasks.run", "mrk8s.cli.commands"]  # fmt: skip
    attempted, loaded = imports_of(modules, EXTRAS)

    assert attempted == []
    assert loaded == []


@pytest.mark.timeout(120)
def test_an_import_of_ray_in_the_local_backend_breaks_the_contract(tmp_path: Path):
    root = copy_with_import(tmp_path, "scheduler.backends.local", "ray")

    proc = lint_imports(root)

    assert proc.returncode != 0
    assert "scheduler.backends.local is not allowed to import ray" in proc.stdout
