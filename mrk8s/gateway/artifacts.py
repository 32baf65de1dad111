"""Artifacts: job scripts and small inputs uploaded to the gateway (``POST /v1/artifacts``).

Stored in a local directory, ``STATE/artifacts/ID/NAME``, written under a
temporary name and renamed into place when whole (an upload cut short, or
over the size cap, leaves nothing). An artifact is immutable and belongs to
its uploader: a job may name its own artifacts (an admin's job, anyone's).
The size cap answers 413 naming the cap and the setting that raises it; a
declared ``Content-Length`` far over the cap is refused before the body is
read (:func:`mrk8s.gateway.app.upload_cap`).

Next: an S3 artifact store behind the same two functions (:func:`save`,
:func:`path`), for gateways whose jobs run on other machines.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool

from mrk8s.gateway import models
from mrk8s.gateway.auth import CurrentUser
from mrk8s.gateway.config import GatewayConfig
from mrk8s.gateway.state import State

ID_PREFIX = "art-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


def safe_name(name: str | None) -> str:
    """A file name that is safe on disk and keeps the script's stem importable."""
    base = _UNSAFE.sub("_", os.path.basename(name or "")).lstrip(".")
    return base[:200] or "artifact"


def too_large(config: GatewayConfig) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the file is larger than the gateway's artifact cap of {config.max_artifact_bytes} "
        "bytes: put large inputs in object storage and pass their URLs as inputs, or raise "
        "artifacts.max_bytes in the gateway's config",
    )


def save(
    config: GatewayConfig, state: State, owner: str, name: str | None, src: BinaryIO
) -> models.Artifact:
    artifact_id = ID_PREFIX + secrets.token_hex(8)
    directory = config.state_dir / "artifacts" / artifact_id
    directory.mkdir(parents=True)
    fname = safe_name(name)
    target = directory / fname
    tmp = directory / f".{fname}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if size > config.max_artifact_bytes:
                    raise too_large(config)
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    sha = digest.hexdigest()
    state.add_artifact(
        id=artifact_id, owner=owner, name=fname, size=size, sha256=sha, path=str(target)
    )
    return models.Artifact(id=artifact_id, name=fname, size=size, sha256=sha)


def path(state: State, artifact_id: str, user: str, admin: bool) -> Path | None:
    """The file of an artifact this user may use, or None."""
    row = state.artifact(artifact_id)
    if row is None or (row["owner"] != user and not admin):
        return None
    return Path(row["path"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=models.Artifact,
    responses={413: models.problem("over the size cap")},
    summary="Upload a job script or a small input",
)
async def upload(
    request: Request, user: CurrentUser, file: Annotated[UploadFile, File()]
) -> models.Artifact:
    config: GatewayConfig = request.app.state.config
    return await run_in_threadpool(
        save, config, request.app.state.db, user.name, file.filename, file.file
    )
