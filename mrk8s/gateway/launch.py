"""The process a job of the local backend is: ``mrk8s run`` that leaves its exit status behind.

``python -m mrk8s.gateway.launch EXIT_FILE -- run ARGS...`` runs the
``mrk8s`` command in this process and, when it returns (or exits through
argparse), writes ``{"exit_code": N}`` to ``EXIT_FILE`` through a temporary
name. The gateway starts this in a session of its own; it may not be this
process's parent any more when it ends (the gateway restarted and
re-attached it), so the exit status cannot come from ``waitpid``. A process
killed by a signal writes nothing: the gateway then knows it died rather
than finished, and resumes it (or leaves it cancelled).
"""

from __future__ import annotations

import json
import os
import sys


def write_exit(path: str, code: int) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"exit_code": code}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m mrk8s.gateway.launch EXIT_FILE -- COMMAND ARGS...", file=sys.stderr)
        return 2
    from mrk8s.cli import main as mrk8s_main

    exit_file, command = argv[0], argv[2:]
    code = 1
    try:
        code = mrk8s_main(command)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        write_exit(exit_file, code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
