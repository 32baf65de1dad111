"""``manifests/ray/rayjob.yaml``'s entrypoint: ``mrk8s run`` on the Ray backend, with options
``mrk8s run`` accepts.

What KubeRay's schema says of the manifest is checked by the real API server
of the test cluster, with the CRD installed (``tests/cluster/test_rayjob.py``);
the API server cannot know whether the entrypoint is a command mrk8s runs, so
that is checked here, offline.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent.parent
MANIFEST = REPO / "manifests" / "ray" / "rayjob.yaml"


@pytest.fixture
def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(MANIFEST.read_text()))


def test_its_entrypoint_is_mrk8s_run_on_the_ray_backend(manifest: dict[str, Any]):
    assert manifest["kind"] == "RayJob"
    argv = shlex.split(manifest["spec"]["entrypoint"])

    assert argv[:2] == ["mrk8s", "run"]
    assert argv[argv.index("--backend") + 1] == "ray"
    assert argv[argv.index("--ray-address") + 1] == "auto"


def test_the_manifest_parses_with_the_cli_it_names(manifest: dict[str, Any]):
    # The entrypoint's options are ones mrk8s run accepts.
    from mrk8s.cli.commands import _run_parser

    argv = shlex.split(manifest["spec"]["entrypoint"])[2:]
    args = _run_parser().parse_intermixed_args(argv)

    assert args.backend == "ray" and args.ray_address == "auto"
    assert args.shuffle_dir == "/shared/mrk8s" and args.job_id == "wordcount-1"
