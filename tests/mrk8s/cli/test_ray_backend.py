"""``mrk8s run --backend ray`` as a user runs it: a process that starts its own local Ray.

Also what a user without Ray sees, and what a misplaced ``--ray-address`` gets.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, CLIResult
from tests.util import LOUD_WORDCOUNT, parse_text_output

pytest.importorskip("ray")

#: Runs the CLI in a fresh interpreter where ``import ray`` fails, as without the extra.
WITHOUT_RAY = """
import sys

class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoRay())
from mrk8s.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(240)
def test_run_with_backend_ray_starts_a_local_ray_and_prints_the_counts(
    cli: Callable[..., CLIResult], tmp_path: Path
):
    sample = EXAMPLES / "data" / "sample.txt"
    out = tmp_path / "out"

    result = cli(
        "run", str(EXAMPLES / "wordcount.py"), str(sample), "--backend", "ray", "-w", "2",
        "-o", str(out), "-q",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    got = parse_text_output("".join(p.read_text() for p in sorted(out.glob("part-*"))))
    assert dict(got) == dict(collections.Counter(sample.read_text().split()))
    assert (out / "_SUCCESS").exists()


@pytest.mark.timeout(240)
def test_every_line_the_workers_print_reaches_the_drivers_stderr(
    cli: Callable[..., CLIResult], tmp_path: Path
):
    """Ray forwards workers' output asynchronously; the driver waits for all of it
    before it exits (and its markers do not show)."""
    script = tmp_path / "loud.py"
    script.write_text(LOUD_WORDCOUNT)
    lines = [f"w{i % 7} w{i % 3} x" for i in range(40)]
    data = tmp_path / "in.txt"
    data.write_text("\n".join(lines) + "\n")

    result = cli(
        "run", str(script), str(data), "--backend", "ray", "-w", "2", "--split-size",
        "64", "-o", str(tmp_path / "out"), "-q",
        env={"RAY_DEDUP_LOGS": "0"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("mapped a line of 3 words") == len(lines), result.stderr
    assert "mrk8s-output-marker" not in result.stderr + result.stdout


@pytest.mark.timeout(60)
def test_backend_ray_without_ray_names_the_install_command(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, "run", str(EXAMPLES / "wordcount.py"),
         str(EXAMPLES / "data" / "sample.txt"), "--backend", "ray",
         "--shuffle-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    assert "--backend ray needs Ray: pip install 'mrk8s[ray]'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(60)
def test_ray_address_with_the_local_backend_is_refused(cli: Callable[..., CLIResult]):
    result = cli(
        "run", str(EXAMPLES / "wordcount.py"), str(EXAMPLES / "data" / "sample.txt"),
        "--ray-address", "auto",
    )  # fmt: skip

    assert result.returncode == 2
    assert "--ray-address is for --backend ray, not --backend local" in result.stderr


@pytest.mark.timeout(60)
def test_speculative_on_ray_is_refused_before_ray_starts(
    cli: Callable[..., CLIResult], tmp_path: Path
):
    result = cli(
        "run", str(EXAMPLES / "wordcount.py"), str(EXAMPLES / "data" / "sample.txt"),
        "--backend", "ray", "--speculative", "--shuffle-dir", str(tmp_path / "shuffle"),
        "-o", str(tmp_path / "out"),
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert "--speculative is not implemented on --backend ray" in result.stderr
    assert "run without it" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Started a local Ray instance" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("shuffle/*"))  # refused before any job directory
