"""``manifests/ray/rayjob.yaml`` against KubeRay v1.7.0's RayJob schema, offline.

What a Kubernetes API server with the CRD installed checks for a RayJob:
every value has the type the CRD's OpenAPI schema gives (jsonschema does
this part), and, with strict field validation, no field is unknown (checked
here by walking the schema: Kubernetes structural schemas list every field,
except below ``x-kubernetes-preserve-unknown-fields``). This is not the API
server: the test that creates the RayJob on the test cluster's real API
server (``tests/cluster/``) comes when that cluster lands. The malformed
manifests below are the ones that test must see refused, too.
"""

from __future__ import annotations

import copy
import functools
import shlex
from pathlib import Path
from typing import Any

import pytest

jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent.parent
MANIFEST = REPO / "manifests" / "ray" / "rayjob.yaml"
CRD = REPO / "manifests" / "ray" / "crds" / "ray.io_rayjobs.yaml"


@functools.cache
def schema_of(api_version: str) -> dict[str, Any]:
    # The CRD is 1.4 MB of YAML: parsed once, with libyaml where PyYAML has it.
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = api_version.rpartition("/")[2]
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return dict(found["schema"]["openAPIV3Schema"])


def unknown_fields(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields of ``value`` that ``schema`` does not declare (strict field validation)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                out += unknown_fields(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(item, extra, f"{where}.{key}")
            elif props is not None and where != ".metadata":  # metadata: ObjectMeta
                out.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return out


def problems(manifest: dict[str, Any]) -> list[str]:
    schema = schema_of(manifest["apiVersion"])
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]
    return found + [f"unknown field {f}" for f in unknown_fields(manifest, schema)]


@pytest.fixture
def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(MANIFEST.read_text()))


def test_the_rayjob_manifest_fits_kuberays_schema(manifest: dict[str, Any]):
    assert manifest["kind"] == "RayJob"
    assert problems(manifest) == []


def test_its_entrypoint_is_mrk8s_run_on_the_ray_backend(manifest: dict[str, Any]):
    argv = shlex.split(manifest["spec"]["entrypoint"])

    assert argv[:2] == ["mrk8s", "run"]
    assert argv[argv.index("--backend") + 1] == "ray"
    assert argv[argv.index("--ray-address") + 1] == "auto"


def test_a_misspelled_field_is_found(manifest: dict[str, Any]):
    bad = copy.deepcopy(manifest)
    bad["spec"]["entrypont"] = bad["spec"].pop("entrypoint")
    worker = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    worker["replica"] = worker.pop("replicas")

    assert sorted(problems(bad)) == [
        "unknown field .spec.entrypont",
        "unknown field .spec.rayClusterSpec.workerGroupSpecs[0].replica",
    ]


def test_a_wrong_type_is_found(manifest: dict[str, Any]):
    bad = copy.deepcopy(manifest)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "three"
    bad["spec"]["shutdownAfterJobFinishes"] = "yes"

    found = problems(bad)

    assert len(found) == 2
    assert "spec.rayClusterSpec.workerGroupSpecs.0.replicas: 'three' is not of type 'integer'" in (
        found
    )
    assert "spec.shutdownAfterJobFinishes: 'yes' is not of type 'boolean'" in found


def test_the_manifest_parses_with_the_cli_it_names(manifest: dict[str, Any]):
    # The entrypoint's options are ones mrk8s run accepts.
    from mrk8s.cli.commands import _run_parser

    argv = shlex.split(manifest["spec"]["entrypoint"])[2:]
    args = _run_parser().parse_intermixed_args(argv)

    assert args.backend == "ray" and args.ray_address == "auto"
    assert args.shuffle_dir == "/shared/mrk8s" and args.job_id == "wordcount-1"
