"""README's instructions in the order a newcomer follows them."""

from __future__ import annotations

import re

from tests.conftest import REPO

#: A command line that needs the virtual environment on PATH.
BARE_COMMAND = re.compile(r"^(mrk8s|python) ")


def test_readme_says_how_to_run_the_installed_cli_before_any_bare_command() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    in_code = False
    first = None
    for number, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        elif in_code and BARE_COMMAND.match(line):
            first = number
            break
    assert first is not None, "README shows no mrk8s or python command"
    before = "\n".join(lines[:first])
    assert "source .venv/bin/activate" in before, lines[first]
    assert "`.venv/bin/mrk8s`" in before and "`.venv/bin/python`" in before, lines[first]
