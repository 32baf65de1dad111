"""Turning a job request into a job: every field checked, the script frozen, nothing run yet.

Called by ``POST /v1/jobs`` in a worker thread. Each problem found becomes
one field-level error (``loc``, ``msg``) and all of them are answered
together as 422, in the shape FastAPI uses for its own validation errors;
only a request with none creates the job's row (QUEUED) and directory.

What is checked: the backend is one the gateway serves; the queue exists;
the resources fit the queue; the script is an artifact of the caller's (or a
URL) that exists and compiles as Python (it is not imported: that is user
code, and it runs only in the job's own process); each input is an artifact
or a URL that exists (a path of the gateway's own disk only if the config
allows it); the job's own options do not reach for ``mrk8s run``'s (the
gateway sets those).
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from mrk8s.engine.settings import parse_size
from mrk8s.errors import UsageError
from mrk8s.gateway import artifacts, models, routing, webhooks
from mrk8s.gateway.backends import KNOWN, NOT_YET
from mrk8s.gateway.config import GatewayConfig, User
from mrk8s.gateway.state import State

#: ``mrk8s run``'s own options: the gateway sets these, a job's args may not (argparse
#: accepts any unambiguous prefix of a long option, so prefixes are refused too).
RUN_LONG_OPTIONS = (
    "--output",
    "--output-format",
    "--overwrite",
    "--reducers",
    "--workers",
    "--backend",
    "--ray-address",
    "--shuffle-dir",
    "--job-id",
    "--job-class",
    "--memory-per-worker",
    "--split-size",
    "--max-attempts",
    "--retry-user-errors",
    "--keep-shuffle",
    "--speculative",
    "--restart",
    "--storage-options",
    "--quiet",
    "--verbose",
    "--help",
    "--runner",
)
RUN_SHORT_OPTIONS = ("-o", "-r", "-w", "-q", "-v", "-h")

#: Input URL schemes a job may read (fsspec protocols); a path of the gateway's disk
#: (``file://`` or a bare path) only with allow_local_inputs.
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://")


class Invalid(Exception):
    """The request's field-level errors (FastAPI's 422 shape)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _error(loc: tuple[Any, ...], msg: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}


def new_job_id(cluster: str) -> str:
    """``CLUSTER-YYYYmmdd-HHMMSS-RANDOM``: the cluster that holds the job comes first."""
    return f"{cluster}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def _is_artifact_id(ref: str) -> bool:
    return ref.startswith(artifacts.ID_PREFIX) and "/" not in ref


def _resolve(
    config: GatewayConfig, state: State, user: User, ref: str, what: str
) -> tuple[str | None, str | None]:
    """(a path or URL the job can read, None) or (None, what is wrong)."""
    if _is_artifact_id(ref):
        p = artifacts.path(state, ref, user.name, user.admin)
        if p is None or not p.exists():
            return None, f"no artifact {ref!r} of yours: upload the {what} with POST /v1/artifacts"
        return str(p), None
    if ref.startswith("-"):
        return None, f"{ref!r} is not an artifact id or a URL"
    is_local = ref.startswith("file://") or "://" not in ref
    if is_local and not config.allow_local_inputs:
        return None, (
            f"{ref!r} is not an artifact id or a URL ({', '.join(REMOTE_SCHEMES[:3])}...): "
            "upload the file with POST /v1/artifacts (this gateway does not let jobs read "
            "its own disk: allow_local_inputs is off)"
        )
    if not is_local and not ref.startswith(REMOTE_SCHEMES):
        return None, f"{ref!r}: unsupported URL scheme; use one of {', '.join(REMOTE_SCHEMES)}"
    try:
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(ref, storage_options=dict(config.storage_options))
        if not paths or not all(fs.exists(p) for p in paths):
            return None, f"{ref!r} does not exist (or matches nothing)"
    except (OSError, ValueError, ImportError) as exc:
        return None, f"{ref!r} cannot be read: {exc}"
    return ref, None


def _read_script(
    config: GatewayConfig, state: State, user: User, ref: str
) -> tuple[str, bytes | None, str | None]:
    """(file name, the script's bytes, None) or ("", None, what is wrong)."""
    where, why = _resolve(config, state, user, ref, "script")
    if where is None:
        return "", None, why
    try:
        import fsspec

        with fsspec.open(where, "rb", **dict(config.storage_options)) as f:
            data = f.read(config.max_artifact_bytes + 1)
    except (OSError, ValueError) as exc:
        return "", None, f"{ref!r} cannot be read: {exc}"
    if len(data) > config.max_artifact_bytes:
        return "", None, f"{ref!r} is over {config.max_artifact_bytes} bytes: not a job script"
    try:
        compile(data, ref, "exec")
    except (SyntaxError, ValueError) as exc:
        return "", None, f"the script is not valid Python: {exc}"
    name = artifacts.safe_name(where.rsplit("/", 1)[-1])
    return (name if name.endswith(".py") else f"{name}.py"), data, None


def _check_args(args: list[str]) -> list[dict[str, Any]]:
    errors = []
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        long_hit = (
            name.startswith("--")
            and len(name) > 2
            and any(opt.startswith(name) for opt in RUN_LONG_OPTIONS)
        )
        short_hit = not name.startswith("--") and name[:2] in RUN_SHORT_OPTIONS
        if long_hit or short_hit or arg == "--":
            errors.append(
                _error(
                    ("args", i),
                    f"{arg!r} is (or abbreviates) an option of mrk8s run, which the gateway "
                    "sets itself: give the job's own options only (set reducers and resources "
                    "as fields of the request)",
                    arg,
                )
            )
    return errors


def prepare(
    config: GatewayConfig,
    state: State,
    user: User,
    req: models.JobRequest,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Check ``req`` and create its job (QUEUED) on a cluster drawn with ``rng``; raises
    :class:`Invalid`."""
    errors: list[dict[str, Any]] = []
    queue_name = req.queue or config.default_queue
    queue = config.queue(queue_name)
    # A declarative queue's backends are those it renders manifests for (gitops.check).
    declarative = queue is not None and queue.mode == "declarative"
    if req.backend not in KNOWN and not declarative:
        why = NOT_YET.get(req.backend, f"the backends are {', '.join(KNOWN)}")
        errors.append(_error(("backend",), f"backend {req.backend!r}: {why}", req.backend))
    if queue is None:
        known = ", ".join(q.name for q in config.queues)
        errors.append(
            _error(("queue",), f"no queue {queue_name!r}; the queues: {known}", req.queue)
        )
    cluster = None
    if req.backend in KNOWN and not declarative:
        try:
            if queue is not None:
                cluster = routing.choose(config, queue, req.backend, rng or random.Random())
            else:
                routing.check_kind(config, req.backend)
        except routing.NoCluster as exc:
            errors.append(_error(("backend",), str(exc), req.backend))
    if queue is not None and req.reducers > queue.max_reducers:
        errors.append(
            _error(
                ("reducers",),
                f"{req.reducers} reducers is over queue {queue.name!r}'s limit of "
                f"{queue.max_reducers}",
                req.reducers,
            )
        )
    workers = req.resources.workers or (queue.default_workers if queue else 1)
    if queue is not None and workers > queue.max_workers:
        errors.append(
            _error(
                ("resources", "workers"),
                f"{workers} workers is over queue {queue.name!r}'s limit of {queue.max_workers}",
                workers,
            )
        )
    memory = req.resources.memory_per_worker
    if memory is not None:
        try:
            if parse_size(memory, "memory_per_worker") < 16 << 20:
                raise UsageError("too small")
        except UsageError:
            errors.append(
                _error(
                    ("resources", "memory_per_worker"),
                    f"{memory!r}: give a size of at least 16MiB, e.g. 512MiB",
                    memory,
                )
            )
    script_name, script, script_problem = _read_script(config, state, user, req.script)
    if script_problem:
        errors.append(_error(("script",), script_problem, req.script))
    input_paths: list[str] = []
    for i, ref in enumerate(req.inputs):
        resolved, problem = _resolve(config, state, user, ref, "input")
        if problem:
            errors.append(_error(("inputs", i), problem, ref))
        elif resolved is not None:
            input_paths.append(resolved)
    errors += _check_args(req.args)
    if declarative:
        from mrk8s.gateway import gitops

        checked = gitops.check(queue, req.backend, req.inputs)
        errors += [_error(loc, msg, value) for loc, msg, value in checked]
    errors += [
        _error(("callback_url",), why, req.callback_url)
        for why in webhooks.check_callback(config, req.callback_url)
    ]
    if errors:
        raise Invalid(errors)
    assert script is not None and queue is not None
    if declarative:
        cluster = queue.git.cluster
    assert cluster is not None
    job_id = new_job_id(cluster)
    job_dir = config.state_dir / "jobs" / job_id
    job_dir.mkdir(parents=True)
    output_dir = str(job_dir / "output")
    code_dir = job_dir
    where = config.cluster(cluster)
    if where is not None and where.kind == "k8s":
        # Its script's directory is shipped to the driver pod: the script alone in it.
        code_dir = job_dir / "code"
        code_dir.mkdir()
        output_dir = f"{where.storage}/output/{job_id}"
    elif where is not None and where.kind == "ray":
        # The Ray job's working_dir: the script, and (copied at start) its uploaded inputs.
        code_dir = job_dir / "code"
        code_dir.mkdir()
    frozen = code_dir / script_name
    frozen.write_bytes(script)
    spec = {
        "request": req.model_dump(),
        "script_path": str(frozen),
        "input_paths": input_paths,
        "reducers": req.reducers,
        "workers": workers,
        "memory_per_worker": memory,
        "args": list(req.args),
    }
    extra: dict[str, Any] = {}
    if declarative:
        output_dir = f"{queue.git.output.rstrip('/')}/{job_id}"
        spec["output_dir"] = output_dir
        extra = _commit(config, queue, user, job_id, spec, script_name, script, job_dir)
    return state.create_job(
        id=job_id,
        user=user.name,
        queue=queue.name,
        backend=req.backend,
        cluster=cluster,
        spec=spec,
        job_dir=str(job_dir),
        log_path=str(job_dir / "driver.log"),
        output_dir=output_dir,
        callback_url=req.callback_url,
        **extra,
    )


def _commit(
    config: GatewayConfig,
    queue: Any,
    user: User,
    job_id: str,
    spec: dict[str, Any],
    script_name: str,
    script: bytes,
    job_dir: Any,
) -> dict[str, Any]:
    """Commit a declarative queue's job to git (the row is created only if that worked)."""
    import shutil

    from mrk8s.gateway import gitops

    try:
        done = gitops.commit_job(
            config.state_dir, queue, user.name, job_id, spec, script_name, script
        )
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return {"git_commit": done.commit, "manifest": done.manifest}
