"""`make cluster` and `make cluster-down`: the test cluster in the background.

    python -m tests.cluster up --state .cluster [--nodes 3]
    python -m tests.cluster down --state .cluster

`up` starts a supervisor process in its own session (so it outlives `make`),
which starts the cluster (`controlplane.Cluster`) and keeps it until it gets
SIGTERM; `up` returns once the cluster runs pods, and prints the admin
kubeconfig's path, the start time and the memory of the control plane and
the node agent. `down` stops the supervisor (which stops the cluster's
process groups) and removes the state directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster import measure

SUPERVISOR = "supervisor.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _supervisor(state: Path) -> dict | None:  # type: ignore[type-arg]
    path = state / SUPERVISOR
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return info if _alive(info["pid"]) else None


def up(state: Path, nodes: int) -> int:
    running = _supervisor(state)
    if running is not None:
        print(
            f"a cluster already runs from {state} (pid {running['pid']}); kubeconfig: "
            f"{state / 'kubeconfig'}\nstop it with: make cluster-down"
        )
        return 0
    if state.exists():
        shutil.rmtree(state)
    (state / "logs").mkdir(parents=True)
    began = time.monotonic()
    with open(state / "logs" / "supervisor.log", "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cluster",
                "serve",
                "--state",
                str(state),
                "--nodes",
                str(nodes),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while _supervisor(state) is None or not (state / "ready").exists():
        if process.poll() is not None:
            print((state / "logs" / "supervisor.log").read_text()[-4000:], file=sys.stderr)
            print(f"the cluster did not start (logs in {state / 'logs'})", file=sys.stderr)
            return 1
        time.sleep(0.2)
    seconds = time.monotonic() - began
    info = json.loads((state / SUPERVISOR).read_text())
    memory = measure.memory(info["pids"].values())
    print(f"cluster up in {seconds:.1f} s: {nodes} nodes, API server {info['server']}")
    print(
        f"memory of the 4 control-plane processes + the node agent: "
        f"RSS {memory.rss / 2**20:.0f} MiB, PSS {memory.pss / 2**20:.0f} MiB"
    )
    print(f"kubeconfig (admin): {(state / 'kubeconfig').resolve()}")
    print(f"  export KUBECONFIG={(state / 'kubeconfig').resolve()}")
    print("stop it with: make cluster-down")
    return 0


def serve(state: Path, nodes: int) -> int:
    from tests.cluster.controlplane import Cluster

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    cluster = Cluster(state, nodes=nodes)
    cluster.start()
    try:
        (state / SUPERVISOR).write_text(
            json.dumps({"pid": os.getpid(), "server": cluster.server, "pids": cluster.pids()})
        )
        (state / "ready").touch()
        stopping.wait()
    finally:
        cluster.stop()
    return 0


def down(state: Path) -> int:
    info = _supervisor(state)
    if info is not None:
        os.kill(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(info["pid"]):
            os.killpg(info["pid"], signal.SIGKILL)  # its children die with it (PDEATHSIG)
        print(f"cluster stopped (pid {info['pid']})")
    else:
        print(f"no cluster runs from {state}")
    if state.exists():
        shutil.rmtree(state)
        print(f"removed {state}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "down", "serve"])
    parser.add_argument("--state", type=Path, default=Path(".cluster"))
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    state = args.state.resolve()
    if args.command == "up":
        return up(state, args.nodes)
    if args.command == "serve":
        return serve(state, args.nodes)
    return down(state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
