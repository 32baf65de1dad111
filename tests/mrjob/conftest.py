"""Fixtures for the mrjob compatibility tests: mrjob's jobs, renamed or not, and its oracle.

The real mrjob (a test-only dependency) runs in this process, through its
inline runner, as the oracle. mrk8s runs a renamed job through mrk8s.run or
the CLI, and an unedited job only through the CLI: aliasing ``mrjob`` must
happen in a process of its own, never here where the real mrjob is loaded.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import mrk8s
from tests.conftest import REPO

JOBS = Path(__file__).resolve().parent / "jobs"


def mrjob_examples() -> Path:
    """The examples directory of the installed mrjob package."""
    spec = importlib.util.find_spec("mrjob")
    assert spec is not None and spec.origin, (
        "the tests need mrjob installed (pip install '.[test]')"
    )
    return Path(spec.origin).parent / "examples"


def rename_imports(source: str) -> str:
    """What the README tells users to do: ``mrjob.`` -> ``mrk8s.mrjob.`` in imports."""
    return re.sub(r"^(\s*)(from|import)(\s+)mrjob\b", r"\1\2\3mrk8s.mrjob", source, flags=re.M)


def copy_job(source: Path, dest_dir: Path, *, renamed: bool, extra: Iterable[Path] = ()) -> Path:
    """A copy of a job script (imports renamed or not), with its support files beside it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    text = source.read_text()
    target = dest_dir / source.name
    target.write_text(rename_imports(text) if renamed else text)
    for path in extra:
        shutil.copy(path, dest_dir / path.name)
    return target


def load_class(path: Path, name: str) -> Any:
    """Import a job script under a unique module name and return its class."""
    module_name = f"oracle_{path.stem}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


def mrjob_output(job_class: Any, args: list[str]) -> list[tuple[Any, Any]]:
    """The oracle: the records mrjob's own inline runner outputs."""
    job = job_class(args=["-r", "inline", "--no-conf", *args])
    with job.make_runner() as runner:
        runner.run()
        return list(job.parse_output(runner.cat_output()))


def parse_lines(job_class: Any, lines: Iterable[bytes]) -> list[tuple[Any, Any]]:
    """Output lines read with the job's OUTPUT_PROTOCOL (mrjob's own reading of them)."""
    read = job_class.OUTPUT_PROTOCOL().read
    return [read(line.rstrip(b"\r\n")) for line in lines if line.strip()]


def read_parts(output: Path) -> list[bytes]:
    lines: list[bytes] = []
    for part in sorted(output.glob("part-*")):
        lines.extend(part.read_bytes().splitlines())
    return lines


def multiset(records: Iterable[tuple[Any, Any]]) -> collections.Counter[str]:
    """Records as a multiset, comparable whatever the order (tuples and lists alike)."""
    return collections.Counter(json.dumps(r, sort_keys=True, default=repr) for r in records)


def run_cli(args: list[str], *, cwd: Path, shuffle_dir: Path) -> subprocess.CompletedProcess[str]:
    """``mrk8s ARGS`` in its own process, where ``mrjob`` may be aliased."""
    env = dict(os.environ, MRK8S_SHUFFLE_DIR=str(shuffle_dir))
    return subprocess.run(
        [sys.executable, "-m", "mrk8s.cli", *args],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=240,
        text=True,
    )


def run_renamed(script: Path, inputs: list[Path], tmp: Path, **options: Any) -> list[bytes]:
    """A renamed job through mrk8s.run (in this process: no aliasing needed)."""
    out = tmp / "mrk8s-out"
    options.setdefault("workers", 2)
    options.setdefault("reducers", 3)
    mrk8s.run(
        str(script),
        [str(p) for p in inputs],
        output=str(out),
        shuffle_dir=str(tmp / "shuffle"),
        max_split_bytes=16 << 10,
        **options,
    )
    return read_parts(out)


@pytest.fixture
def repo() -> Path:
    return REPO


def mrjob_local(script: Path, args: list[str], *, cwd: Path) -> list[bytes]:
    """The oracle for unedited scripts: ``python SCRIPT -r local ARGS`` with the real mrjob,
    in a process of its own (mrjob's local runner: subprocesses, commands through sh)."""
    proc = subprocess.run(
        # One core: half the tasks (each a Python process) of the default two, same output.
        [sys.executable, str(script), "-r", "local", "--no-conf", "--num-cores", "1", *args],
        capture_output=True,
        cwd=cwd,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout.splitlines()
