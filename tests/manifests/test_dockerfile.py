"""``manifests/Dockerfile``, the worker image, checked where no container runtime runs.

The project's machines have no container runtime, so the image is never
built in the tests. What can be checked without one is checked: the wheel it
installs is the one ``pip wheel .`` builds from this tree, with extras the
package has; the user it runs as is a numeric non-root UID, the one every pod
of the backend and of ``manifests/`` runs as (Pod Security "restricted" wants
``runAsNonRoot``, which a kubelet checks only for a numeric user); the base
image is Python 3.11 slim; the entrypoint is the ``mrk8s`` command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.kustomize import MANIFESTS, REPO

DOCKERFILE = MANIFESTS / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _one(instruction: str) -> str:
    found = [rest for word, rest in _instructions() if word == instruction]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every pod template in manifests/ (outside ray/, whose image is KubeRay's)."""
    specs = []
    for path in MANIFESTS.rglob("*.yaml"):
        if "ray" in path.relative_to(MANIFESTS).parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "template" in doc.get("spec", {}):
                specs.append((f"{path.name}:{doc['kind']}", doc["spec"]["template"]["spec"]))
    return specs


def test_the_image_user_is_the_numeric_non_root_uid_the_pods_run_as() -> None:
    from scheduler.backends.k8s import driverjob

    user = _one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user
    assert 'useradd --uid "${UID}" --gid "${UID}"' in DOCKERFILE.read_text()
    assert 'groupadd --gid "${UID}"' in DOCKERFILE.read_text()
    assert f"ARG UID={uid}" in DOCKERFILE.read_text()
    specs = _pod_specs()
    assert specs, "no pod template in manifests/"
    for where, spec in specs:
        assert spec["securityContext"]["runAsUser"] == int(uid), where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        if gid:
            assert spec["securityContext"]["runAsGroup"] == int(gid), where
    # The driver pod of `mrk8s submit` too.
    rendered = driverjob.pod_security_context()
    assert rendered["runAsUser"] == int(uid) and rendered["runAsNonRoot"] is True


def test_the_base_image_and_entrypoint() -> None:
    assert _one("FROM") == "python:3.11-slim"
    assert shlex.split(_one("ENTRYPOINT").strip("[]").replace(",", " ")) == ["mrk8s"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_it_installs_is_what_pip_wheel_builds(tmp_path: Path) -> None:
    copy_line = _one("COPY")
    source, destination = copy_line.split()
    assert source.startswith("dist/") and destination.endswith("/")
    wheel = Path(source).name
    (run,) = [rest for word, rest in _instructions() if word == "RUN" and "pip install" in rest]
    extras = re.search(rf"/{re.escape(wheel)}\[([a-z0-9,]+)\]", run)
    assert extras, run
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras.group(1).split(",") == ["s3", "k8s"]
    assert all(extra in declared for extra in extras.group(1).split(","))

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=REPO,
        check=True,
        timeout=280,
    )
    built = [p.name for p in tmp_path.glob("*.whl")]
    assert built == [wheel]
