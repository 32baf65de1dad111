"""The body of the mrk8s step of a pipeline: run the job, fill the step's output artifacts.

Imports nothing of KFP: it runs inside KFP's executor, which passes it the
artifact objects (``uri``, ``path``, ``metadata``, ``log_metric``), and it
must not import the KFP compiler there. See :mod:`mrk8s.kfp` for the whole picture.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec

from mrk8s.errors import UsageError

#: URL schemes whose artifacts mrk8s reads and writes in place (by reference).
BY_REFERENCE = ("s3", "gs", "gcs")


def by_reference(uri: str) -> bool:
    """Whether an artifact URI is read and written in place rather than through its local path."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme in BY_REFERENCE


def _artifact_location(artifact: Any) -> str:
    """Where the job reads or writes an artifact: its URI when by reference, else its path."""
    return str(artifact.uri) if by_reference(str(artifact.uri)) else str(artifact.path)


def _script_path(
    script: str, script_source: str, script_file: Any, scratch: str, storage: Mapping[str, Any]
) -> str:
    """A local path of the job script, from whichever of the three ways the step was given."""
    given = [name for name, v in (("script", script), ("script_source", script_source)) if v]
    if script_file is not None:
        given.append("script_file")
    if len(given) != 1:
        raise UsageError(
            "the mrk8s step needs exactly one of script (a path or URL), script_source (the "
            f"script's text) or script_file (an artifact); it got {', '.join(given) or 'none'}"
        )
    if script_file is not None:
        return str(script_file.path)
    target = os.path.join(scratch, "job.py")
    if script_source:
        with open(target, "w", encoding="utf-8") as f:
            f.write(script_source)
        return target
    if "://" not in script or script.startswith("file://"):
        return script.removeprefix("file://")
    with fsspec.open(script, "rb", **storage) as src, open(target, "wb") as dst:
        dst.write(src.read())
    return target


def run_argv(
    script_path: str,
    inputs: Sequence[str],
    output: str,
    *,
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    storage_options: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
) -> list[str]:
    """The ``mrk8s run`` command line of a step (without the leading ``run``)."""
    argv = [script_path, *inputs, "-o", output, "--output-format", output_format, "--overwrite"]
    argv += ["--backend", backend, "--quiet"]
    if reducers:
        argv += ["--reducers", str(reducers)]
    if shuffle_dir:
        argv += ["--shuffle-dir", shuffle_dir]
    if storage_options:
        argv += ["--storage-options", json.dumps(dict(storage_options))]
    return argv + list(args)


def metrics_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a job's ``summary.json`` as flat KFP metrics (name -> number)."""
    out: dict[str, float] = {"seconds": float(summary.get("seconds", 0.0))}
    for key in ("shuffle_bytes", "shuffle_bytes_local", "shuffle_bytes_remote", "locality"):
        if isinstance(summary.get(key), int | float):
            out[key] = float(summary[key])
    for group, counters in sorted(summary.get("counters", {}).items()):
        for name, value in sorted(counters.items()):
            out[f"counter/{group}/{name}"] = float(value)
    for stage, numbers in sorted(summary.get("stages", {}).items()):
        for key in ("records_in", "records_out", "bytes_in", "bytes_out", "seconds", "tasks"):
            if isinstance(numbers.get(key), int | float):
                out[f"{stage}/{key}"] = float(numbers[key])
    return out


def run_step(
    *,
    output: Any,
    metrics: Any,
    script: str = "",
    script_source: str = "",
    script_file: Any = None,
    input_dataset: Any = None,
    inputs: Sequence[str] = (),
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    storage_options: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
) -> dict[str, Any]:
    """The body of the mrk8s step: run the job, fill the two output artifacts.

    Raises RuntimeError (the step fails; mrk8s' own message is in the step's
    log just above) when the job fails. Returns the job's summary.
    """
    storage = dict(storage_options or {})
    urls = list(inputs)
    staging = _Staging(backend, shuffle_dir, storage)
    if input_dataset is not None:
        urls.append(staging.readable(_artifact_location(input_dataset)))
    if not urls:
        raise UsageError(
            "the mrk8s step has no input: connect a Dataset to input_dataset or give inputs "
            "(URLs of files, directories or globs)"
        )
    local_output = _artifact_location(output)
    target = staging.writable(local_output)
    with tempfile.TemporaryDirectory(prefix="mrk8s-kfp-") as scratch:
        path = _script_path(script, script_source, script_file, scratch, storage)
        argv = run_argv(
            path,
            urls,
            target,
            reducers=reducers,
            backend=backend,
            shuffle_dir=shuffle_dir,
            output_format=output_format,
            storage_options=storage,
            args=args,
        )
        from mrk8s.cli import main as mrk8s_main

        status = mrk8s_main(["run", *argv])
    if status != 0:
        staging.remove()
        raise RuntimeError(
            f"mrk8s run failed (exit status {status}); its message is in this step's log above"
        )
    with fsspec.open(f"{target.rstrip('/')}/summary.json", "r", **storage) as f:
        summary: dict[str, Any] = json.load(f)
    location = staging.bring_back(target, local_output)
    for name, value in metrics_of(summary).items():
        metrics.log_metric(name, value)
    output.metadata.update(
        {"job_id": summary.get("job_id", ""), "format": output_format, "location": location}
    )
    return summary


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class _Staging:
    """Local artifacts of a step whose tasks run elsewhere (``backend="k8s"``), staged.

    The pods of a cluster backend cannot read or write the step's own disk.
    When an artifact is local (KFP's local runner, a launcher-mounted path),
    the input Dataset is copied into the object store under ``shuffle_dir``
    and the job's output is written there and copied back to the artifact's
    path afterwards. Artifacts already in object storage need none of this
    (they are read and written in place).
    """

    def __init__(self, backend: str, shuffle_dir: str, storage: Mapping[str, Any]) -> None:
        self.active = backend != "local"
        self.storage = storage
        self.area = f"{shuffle_dir.rstrip('/')}/kfp-staging/{uuid.uuid4().hex[:12]}"
        self.shuffle_dir = shuffle_dir
        self.used = False

    def _check(self, what: str) -> None:
        if not self.shuffle_dir or _is_local(self.shuffle_dir):
            raise UsageError(
                f"{what} is on the step's own disk, which the pods of a cluster backend cannot "
                "reach: give shuffle_dir in object storage (e.g. s3://bucket/mrk8s), through "
                "which mrk8s stages it, or use a pipeline root in object storage"
            )
        self.used = True

    def readable(self, location: str) -> str:
        """A URL the tasks can read ``location`` at."""
        if not (self.active and _is_local(location)):
            return location
        self._check(f"the input Dataset {location}")
        fs, root = fsspec.core.url_to_fs(f"{self.area}/input", **self.storage)
        local = location.removeprefix("file://")
        if os.path.isdir(local):
            fs.put(local.rstrip("/") + "/", root, recursive=True)
            return f"{self.area}/input"
        name = os.path.basename(local)
        fs.put_file(local, f"{root}/{name}")
        return f"{self.area}/input/{name}"

    def writable(self, location: str) -> str:
        """Where the job writes an output that belongs at ``location``."""
        if not (self.active and _is_local(location)):
            return location
        self._check(f"the output Dataset {location}")
        return f"{self.area}/output"

    def bring_back(self, target: str, location: str) -> str:
        """Copy a staged output to ``location``; where the output now lives."""
        if target == location:
            return location
        fs, root = fsspec.core.url_to_fs(target, **self.storage)
        fs.get(root.rstrip("/") + "/", location.removeprefix("file://"), recursive=True)
        self.remove()
        return location

    def remove(self) -> None:
        if self.used:
            fs, root = fsspec.core.url_to_fs(self.area, **self.storage)
            if fs.exists(root):
                fs.rm(root, recursive=True)
