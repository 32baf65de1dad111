"""``mrk8s shuffle-server``: serve one node's map outputs to reducers on other nodes.

    mrk8s shuffle-server --root DIR [--host H] --port P [--token-file F] [-v]

Runs :func:`shuffle.server.serve` (what it serves and refuses is described
there) until SIGTERM. The bearer token comes from ``--token-file`` (a
mounted Secret), else the file named by ``$MRK8S_SHUFFLE_TOKEN_FILE``, else
``$MRK8S_SHUFFLE_TOKEN`` itself; with none, requests are not authenticated.
Once listening it prints ``listening on URL`` to stderr (with ``--port 0``,
the port it picked).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from mrk8s.errors import UsageError
from shuffle import server

#: Environment variables that give the token when --token-file is not given.
TOKEN_FILE_ENV = "MRK8S_SHUFFLE_TOKEN_FILE"
TOKEN_ENV = "MRK8S_SHUFFLE_TOKEN"


def read_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    """The token from ``path``, ``$MRK8S_SHUFFLE_TOKEN_FILE`` or ``$MRK8S_SHUFFLE_TOKEN``."""
    path = path or environ.get(TOKEN_FILE_ENV) or None
    if path is None:
        return environ.get(TOKEN_ENV) or None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read the shuffle server's token file {path} ({exc.strerror or exc}): "
            "mount the Secret there, or give --token-file the right path"
        ) from exc
    if not token:
        raise UsageError(
            f"the token file {path} is empty: put the token in it (the Secret's key 'token')"
        )
    return token


def main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    p = argparse.ArgumentParser(prog="mrk8s shuffle-server", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, metavar="DIR", help="the directory to serve")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    p.add_argument(
        "--token-file",
        metavar="F",
        help=f"file holding the bearer token (default: ${TOKEN_FILE_ENV}, else ${TOKEN_ENV}; "
        "none: no authentication)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = p.parse_args(list(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="mrk8s %(levelname)s %(name)s: %(message)s",
    )
    settings = server.ServerSettings(
        root=args.root,
        host=args.host,
        port=args.port,
        token=read_token(args.token_file, environ),
    )

    def ready(url: str) -> None:
        auth = "a bearer token" if settings.token else "no authentication"
        print(f"listening on {url} (root {settings.root}, {auth})", file=sys.stderr, flush=True)

    server.serve(settings, on_ready=ready)
    return 0
