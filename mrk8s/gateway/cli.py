"""``mrk8s gateway serve``: the job gateway as a command.

Reached from ``mrk8s`` by name (the gateway sits above the CLI's room). This
is an entry point: it configures logging, builds the config at the edge
(:func:`mrk8s.gateway.config.load`) and runs uvicorn. On SIGTERM or Ctrl-C
the service stops accepting requests, ends the open event streams within a
few seconds and exits; the jobs it started keep running and are re-attached
by the next ``serve`` on the same state directory.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

USAGE_EPILOG = """\
examples:
  mrk8s gateway serve                                   # SQLite in ./mrk8s-gateway, no auth
  MRK8S_GATEWAY_TOKEN=s3cret mrk8s gateway serve --port 8080
  mrk8s gateway serve --config gateway.yaml --host 0.0.0.0
"""

#: Seconds open requests (event streams) get to end when the service stops.
GRACEFUL_SHUTDOWN_SECONDS = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mrk8s gateway",
        description="The job gateway: a REST service that takes mrk8s jobs and runs them.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="serve")
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", metavar="FILE", help="gateway.yaml (default: none)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="database, artifacts, jobs' logs and outputs (default: the config's "
        "state_dir, else ./mrk8s-gateway)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str]) -> int:
    import uvicorn

    from mrk8s.gateway import config as gateway_config
    from mrk8s.gateway.app import create_app

    args = parser().parse_args(argv)
    config = gateway_config.load(args.config, state_dir=args.state_dir)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="mrk8s-gateway %(levelname)s %(name)s: %(message)s",
    )
    if not config.auth_enabled:
        logging.getLogger("mrk8s.gateway").warning(
            "no users in the config and no $MRK8S_GATEWAY_TOKEN: authentication is off, "
            "every caller is an admin; configure users before exposing this service"
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=args.host,
            port=args.port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            log_level="debug" if args.verbose else "info",
        )
    )
    server.run()
    return 0
