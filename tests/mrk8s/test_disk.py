"""A full disk and a read-only output location, for real: small tmpfs mounts.

Each test mounts its own tmpfs (root only; skipped with the reason where
mounting is not allowed). The job must fail with a clear message, leave
nothing at the output path, and, once the condition is fixed, resume.
"""

from __future__ import annotations

import collections
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CLIResult
from tests.util import WORDCOUNT, parse_text_output

pytestmark = pytest.mark.timeout(120)

Run = Callable[..., CLIResult]


def _mount(path: Path, options: str) -> None:
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    _mount(mount, "size=192k")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_clearly_and_resumes_after_space_is_freed(
    cli: Run, tmp_path: Path, small_fs: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(WORDCOUNT))
    src = tmp_path / "in.txt"
    words = [f"word{i:06d}" for i in range(40_000)]  # ~760 KB of output: more than the disk
    src.write_text("\n".join(words) + "\n")
    out = small_fs / "out"
    args = ["run", str(script), str(src), "-o", str(out), "--job-id", "full", "-r", "2"]

    failed = cli(*args)

    assert failed.returncode == 2
    assert "no space left on the device" in failed.stderr
    assert "rerun the same command to resume" in failed.stderr
    assert not out.exists()
    assert "Traceback" not in failed.stderr

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    again = cli(*args)

    assert again.returncode == 0, again.stderr
    assert "resuming job full" in again.stderr
    text = "".join(p.read_text() for p in sorted(out.glob("part-*")))
    assert dict(parse_text_output(text)) == dict(collections.Counter(words))


def test_read_only_output_fails_before_any_work(cli: Run, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount(ro, "size=1m,ro")
    try:
        script = tmp_path / "job.py"
        script.write_text(textwrap.dedent(WORDCOUNT))
        src = tmp_path / "in.txt"
        src.write_text("a b\n")
        res = cli("run", str(script), str(src), "-o", str(ro / "out"))
        assert res.returncode == 2
        assert "read-only file system" in res.stderr
        assert "map" not in res.stderr.split("read-only")[0]  # no stage ran before it failed
        assert not (ro / "out").exists()
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
