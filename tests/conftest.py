"""Shared fixtures: generated inputs, an isolated shuffle dir, a CLI runner.

Everything is real: jobs run on real worker processes over real files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.util import make_words

pytest_plugins = ["tests.s3", "tests.cluster.fixtures"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture
def shuffle_dir(tmp_path: Path) -> Path:
    d = tmp_path / "shuffle"
    d.mkdir()
    return d


@pytest.fixture
def words_file(tmp_path: Path) -> Path:
    """About 2 MB of text: enough for several map tasks and, with a small budget, spills."""
    p = tmp_path / "words.txt"
    p.write_text(make_words(300_000))
    return p


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(shuffle_dir: Path) -> Callable[..., CLIResult]:
    """Run ``mrk8s ARGS`` in a subprocess, as a user would, with the test's shuffle dir."""

    def run(
        *args: str,
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 240,
        env: dict[str, str] | None = None,
    ) -> CLIResult:
        extra = env or {}
        env = dict(os.environ)
        env["MRK8S_SHUFFLE_DIR"] = str(shuffle_dir)
        env.update(extra)
        proc = subprocess.run(
            [sys.executable, "-m", "mrk8s.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd or REPO,
            env=env,
            timeout=timeout,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    return run
