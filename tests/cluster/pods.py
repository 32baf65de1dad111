"""One pod on one node of the node agent that runs pods as local processes.

`PodRun` does for one pod what a kubelet does, with local processes in
place of containers: the image is not pulled; each container's command and
args run with this machine's Python environment (the agent's interpreter, or
the environment the agent's config names as `pod_bin`, is first on PATH), as
a process group of their own. It

- builds each container's environment as a kubelet does: `env` values,
  `valueFrom` (`fieldRef`, `configMapKeyRef`, `secretKeyRef`), `envFrom`,
  `$(VAR)` expansion in env values, command and args, plus
  KUBERNETES_SERVICE_HOST/PORT pointing at the API server; a config map or
  secret that does not exist yet is waited for (the pod stays Pending in
  ContainerCreating), as a kubelet waits;
- maps volumes to directories: `hostPath` to the node's directory
  (`<node>/hostpath/<path>`), `emptyDir`, `secret` and `projected`
  (service-account token, CA bundle, namespace, config map and secret
  keys) to the pod's own. No mount namespace is made:
  a container sees a volume because every `mountPath` in its command, args,
  env values and workingDir is replaced by the volume's directory;
- reports status through `pods/status`: Pending (ContainerCreating), Running,
  then Succeeded or Failed with each container's real exit code (128 + the
  signal for a killed process) and times;
- on the pod's deletion kills the process groups (SIGTERM, SIGKILL after the
  grace period), reports the terminal phase, then deletes the pod with grace
  0 as the kubelet does. It never touches finalizers.

Containers of a pod run side by side; init containers run first, one by one.
restartPolicy Never and OnFailure are honoured (OnFailure restarts a failed
container in place, counting restartCount); Always restarts any exit.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster import processes

logger = logging.getLogger(__name__)

Pod = dict[str, Any]

# How long a container gets between SIGTERM and SIGKILL at most, whatever the pod asks:
# tests should not wait for a 30 s default.
MAX_GRACE = 10.0
# Between reads of a config map or secret a pod needs and that does not exist yet.
MISSING_RETRY = 0.5
# Between restarts of a container under OnFailure/Always (the kubelet backs off from 10 s).
RESTART_DELAY = 1.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names replaced, $$ escapes, the rest kept as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            end = text.find(")", i + 2)
            if end == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(char + following)
            i += 2
    return "".join(out)


_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Pod, path: str, node_ip: str) -> str:
    """The downward API's value of a fieldRef path (the paths a kubelet accepts)."""
    meta = pod["metadata"]
    match = _FIELD.match(path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": node_ip,
        "status.hostIPs": node_ip,
        "status.podIP": node_ip,
        "status.podIPs": node_ip,
    }
    if path not in simple:
        raise PodError(f"fieldRef {path!r} is not one the downward API offers")
    return str(simple[path])


class PodError(Exception):
    """The pod asks for something the node agent cannot give; it fails with this message."""


@dataclass(frozen=True, slots=True)
class Node:
    """What a pod needs to know about the node it runs on."""

    name: str
    ip: str
    directory: Path
    apiserver_host: str
    apiserver_port: int
    api: Any  # the node's kubernetes.client.CoreV1Api (its own credentials)
    #: The directory put first on a container's PATH: the agent's own interpreter's by
    #: default; a separate environment's (say, one with only what the image installs).
    bin: Path = Path(sys.executable).parent


class PodRun:
    """Runs one pod's containers and reports its status; `kill` ends it on deletion.

    State: `pod` is the last version seen; `directory` holds the pod's logs
    (`logs/<container>.log`, kept after it finished, served by the log
    endpoint) and volumes; `finished` is set once the terminal status is
    written (or the pod is gone).
    """

    def __init__(self, pod: Pod, node: Node) -> None:
        self.pod = pod
        self.node = node
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.directory = node.directory / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.killed = threading.Event()
        self.gone = threading.Event()  # the pod object no longer exists: no status to write
        self.finished = threading.Event()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kill(self, *, gone: bool = False) -> None:
        """The pod is being deleted (or is gone): stop its processes."""
        if gone:
            self.gone.set()
        self.killed.set()

    def log_path(self, container: str) -> Path:
        return self.directory / "logs" / f"{container}.log"

    def is_container_running(self, container: str) -> bool:
        process = self.running.get(container)
        return process is not None and process.poll() is None

    # -- the pod's life -----------------------------------------------------------------

    def _run(self) -> None:
        started = now()
        statuses: dict[str, dict[str, Any]] = {}
        if self.killed.is_set():  # deleted before it started: nothing to run, only to finish
            self._finish(statuses, started)
            return
        try:
            self._patch_status(self._pending_status(started))
            (self.directory / "logs").mkdir(parents=True, exist_ok=True)
            mounts = self._volumes()
            init = self.pod["spec"].get("initContainers", [])
            for container in init:
                statuses[container["name"]] = self._run_one(container, mounts)
                code = statuses[container["name"]]["state"]["terminated"]["exitCode"]
                if code != 0 or self.killed.is_set():
                    break
            else:
                statuses.update(self._run_all(mounts, started))
        except PodError as error:
            logger.warning("pod %s/%s cannot run: %s", self.namespace, self.name, error)
            for container in self.pod["spec"]["containers"]:
                statuses.setdefault(
                    container["name"],
                    self._terminated(container, 128, "StartError", started, str(error)),
                )
        except Exception:
            logger.exception("pod %s/%s: the node agent failed", self.namespace, self.name)
            for container in self.pod["spec"]["containers"]:
                statuses.setdefault(
                    container["name"],
                    self._terminated(container, 128, "StartError", started, "node agent error"),
                )
        finally:
            for process in self.running.values():
                processes.kill_group(process.pid)
        self._finish(statuses, started)

    def _run_all(self, mounts: dict[str, Path], started: str) -> dict[str, dict[str, Any]]:
        """Start every container, report Running, wait for all of them (restarting as asked)."""
        containers = self.pod["spec"]["containers"]
        restarts = dict.fromkeys((c["name"] for c in containers), 0)
        starts: dict[str, str] = {}
        for container in containers:
            starts[container["name"]] = now()
            self.running[container["name"]] = self._spawn(container, mounts)
        self._patch_status(self._running_status(started, starts, restarts))
        done: dict[str, dict[str, Any]] = {}
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while len(done) < len(containers):
            if self.killed.is_set():
                self._terminate()
            for container in containers:
                name = container["name"]
                if name in done:
                    continue
                code = self.running[name].poll()
                if code is None:
                    continue
                code = code if code >= 0 else 128 - code
                restart = not self.killed.is_set() and (
                    policy == "Always" or (policy == "OnFailure" and code != 0)
                )
                if restart:
                    time.sleep(RESTART_DELAY)
                    restarts[name] += 1
                    starts[name] = now()
                    self.running[name] = self._spawn(container, mounts)
                    self._patch_status(self._running_status(started, starts, restarts))
                    continue
                processes.kill_group(self.running[name].pid)
                done[name] = self._terminated(
                    container, code, "Completed" if code == 0 else "Error", starts[name]
                )
                done[name]["restartCount"] = restarts[name]
            time.sleep(0.05)
        return done

    def _run_one(self, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, Any]:
        """Run an init container to its end."""
        start = now()
        process = self._spawn(container, mounts)
        self.running[container["name"]] = process
        while process.poll() is None:
            if self.killed.wait(0.05):
                self._terminate()
        code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        processes.kill_group(process.pid)
        return self._terminated(container, code, "Completed" if code == 0 else "Error", start)

    def _terminate(self) -> None:
        """SIGTERM every running container's group; SIGKILL what is left after the grace period."""
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), MAX_GRACE)
        live = [p for p in self.running.values() if p.poll() is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in live:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                processes.kill_group(process.pid)
                process.wait()

    def _finish(self, statuses: dict[str, dict[str, Any]], started: str) -> None:
        """Write the terminal status, then (if deleted) the kubelet's final delete."""
        try:
            codes = [s["state"]["terminated"]["exitCode"] for s in statuses.values()]
            complete = len(statuses) >= len(self.pod["spec"]["containers"])
            phase = "Succeeded" if complete and codes and not any(codes) else "Failed"
            if not self.gone.is_set():
                self._patch_status(self._terminal_status(started, statuses, phase))
                if self.killed.is_set():
                    self._delete()
            logger.info("pod %s/%s %s %s", self.namespace, self.name, phase, codes)
        finally:
            self.finished.set()

    # -- containers ---------------------------------------------------------------------

    def _spawn(self, container: dict[str, Any], mounts: dict[str, Path]) -> subprocess.Popen[bytes]:
        env = self._environment(container)
        translate = _translator(container, mounts)
        argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
        if not container.get("command"):
            raise PodError(
                f"container {container['name']!r} has no command: the node agent runs commands "
                "on this machine and pulls no image, so an image's entrypoint is unknown"
            )
        argv = [translate(a) for a in argv]
        env = {k: translate(v) for k, v in env.items()}
        cwd = self._working_dir(container, translate)
        log = self.log_path(container["name"])
        try:
            return processes.spawn(argv, log=log, env=env, cwd=cwd)
        except OSError as error:
            raise PodError(
                f"container {container['name']!r} cannot start {argv[0]!r}: {error}"
            ) from error

    def _working_dir(self, container: dict[str, Any], translate: Callable[[str], str]) -> Path:
        root = self.directory / "root"
        root.mkdir(parents=True, exist_ok=True)
        working = container.get("workingDir")
        if not working:
            return root
        translated = translate(working)
        if translated != working or Path(working).is_dir():
            Path(translated).mkdir(parents=True, exist_ok=True)
            return Path(translated)
        # A path the image would have had: made inside the pod's own root.
        inside = root / working.lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        return inside

    def _environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The base environment, then envFrom, then env in order, as a kubelet builds it."""
        env = {
            "PATH": f"{self.node.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.directory / "root"),
            "HOSTNAME": self.pod["spec"].get("hostname", self.name),
            "KUBERNETES_SERVICE_HOST": self.node.apiserver_host,
            "KUBERNETES_SERVICE_PORT": str(self.node.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.apiserver_port),
        }
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_map(source["configMapRef"]["name"])
            else:
                data = self._secret(source["secretRef"]["name"])
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env", []):
            env[var["name"]] = self._env_value(var, env)
        return env

    def _env_value(self, var: dict[str, Any], env: Mapping[str, str]) -> str:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return field_value(self.pod, source["fieldRef"]["fieldPath"], self.node.ip)
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self._config_map(ref["name"])[ref["key"]]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self._secret(ref["name"])[ref["key"]]
        raise PodError(f"env {var['name']!r}: {sorted(source)} is not supported by the node agent")

    def _config_map(self, name: str) -> dict[str, str]:
        data = self._read("config map", self.node.api.read_namespaced_config_map, name)
        return dict(data.get("data", {}))

    def _config_map_files(self, name: str) -> dict[str, bytes]:
        """A config map's keys as a volume shows them: `data` as UTF-8, `binaryData` decoded."""
        found = self._read("config map", self.node.api.read_namespaced_config_map, name)
        files = {k: v.encode() for k, v in found.get("data", {}).items()}
        files.update({k: base64.b64decode(v) for k, v in found.get("binaryData", {}).items()})
        return files

    def _secret(self, name: str) -> dict[str, str]:
        data = self._read("secret", self.node.api.read_namespaced_secret, name).get("data", {})
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _read(self, kind: str, read: Callable[..., Any], name: str) -> dict[str, Any]:
        """An object the pod needs; one not there yet is waited for, as a kubelet waits
        (the pod stays Pending in ContainerCreating), until it appears or the pod is deleted."""
        from kubernetes.client.exceptions import ApiException

        while True:
            try:
                response = read(name, self.namespace, _preload_content=False)
            except ApiException as error:
                if error.status != 404:
                    raise
                if self.killed.wait(MISSING_RETRY):
                    raise PodError(
                        f"{kind} {self.namespace}/{name} never appeared before the pod was deleted"
                    ) from error
                continue
            return dict(json.loads(response.data))

    # -- volumes ------------------------------------------------------------------------

    def _volumes(self) -> dict[str, Path]:
        """Each volume's directory on this machine, made and filled."""
        paths: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes", []):
            name = volume["name"]
            if "hostPath" in volume:
                path = self.node.directory / "hostpath" / volume["hostPath"]["path"].lstrip("/")
            elif "emptyDir" in volume:
                path = self.directory / "volumes" / name
            elif "projected" in volume:
                path = self.directory / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                self._project(volume["projected"], path)
            elif "secret" in volume:
                path = self.directory / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                self._write_secret(volume["secret"], path, volume["secret"].get("defaultMode"))
            else:
                kind = sorted(k for k in volume if k != "name")
                raise PodError(
                    f"volume {name!r} of type {kind} is not supported by the node agent "
                    "(hostPath, emptyDir, projected and secret are)"
                )
            path.mkdir(parents=True, exist_ok=True)
            paths[name] = path
        return paths

    def _project(self, projected: dict[str, Any], path: Path) -> None:
        """A service-account token (TokenRequest), config map keys and the downward API."""
        for source in projected.get("sources", []):
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                request = {
                    "spec": {
                        "audiences": [spec["audience"]] if spec.get("audience") else None,
                        "expirationSeconds": spec.get("expirationSeconds", 3607),
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": self.name,
                            "uid": self.uid,
                        },
                    }
                }
                account = self.pod["spec"].get("serviceAccountName", "default")
                response = self.node.api.create_namespaced_service_account_token(
                    account, self.namespace, request, _preload_content=False
                )
                token = json.loads(response.data)["status"]["token"]
                (path / spec["path"]).write_text(token)
            elif "configMap" in source:
                files = self._config_map_files(source["configMap"]["name"])
                items = source["configMap"].get("items") or [{"key": k, "path": k} for k in files]
                for item in items:
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(files[item["key"]])
            elif "secret" in source:
                self._write_secret(source["secret"], path, projected.get("defaultMode"))
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items", []):
                    value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.node.ip)
                    (path / item["path"]).write_text(value)
            else:
                raise PodError(
                    f"projected source {sorted(source)} is not supported by the node agent"
                )

    def _write_secret(self, source: dict[str, Any], path: Path, mode: int | None) -> None:
        """A secret's keys (or its ``items``) as files, with the modes asked for (a
        kubelet's default is 0644); a secret not there yet is waited for."""
        data = self._secret(source.get("secretName") or source["name"])
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
            target.chmod(item.get("mode", mode if mode is not None else 0o644))

    # -- status -------------------------------------------------------------------------

    def _container_status(
        self, container: dict[str, Any], state: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": state,
            **extra,
        }

    def _terminated(
        self, container: dict[str, Any], code: int, reason: str, started: str, message: str = ""
    ) -> dict[str, Any]:
        terminated = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        process = self.running.get(container["name"])
        if process is not None:
            terminated["containerID"] = f"local://{process.pid}"
        return self._container_status(
            container, {"waiting": None, "running": None, "terminated": terminated}
        )

    def _addresses(self, started: str) -> dict[str, Any]:
        ip = self.node.ip
        return {
            "hostIP": ip,
            "hostIPs": [{"ip": ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
        }

    @staticmethod
    def _conditions(ready: bool, started: str, reason: str = "") -> list[dict[str, Any]]:
        status = "True" if ready else "False"
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now()},
            {"type": "Ready", "status": status, "lastTransitionTime": now()},
        ]
        if reason:
            for condition in conditions[2:]:
                condition["reason"] = reason
        return conditions

    def _pending_status(self, started: str) -> dict[str, Any]:
        return {
            "phase": "Pending",
            **self._addresses(started),
            "conditions": self._conditions(False, started, "ContainersNotReady"),
            "containerStatuses": [
                self._container_status(c, {"waiting": {"reason": "ContainerCreating"}})
                for c in self.pod["spec"]["containers"]
            ],
        }

    def _running_status(
        self, started: str, starts: dict[str, str], restarts: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "phase": "Running",
            **self._addresses(started),
            "conditions": self._conditions(True, started),
            "containerStatuses": [
                self._container_status(
                    c,
                    {"waiting": None, "running": {"startedAt": starts[c["name"]]}},
                    ready=True,
                    started=True,
                    restartCount=restarts[c["name"]],
                    containerID=f"local://{self.running[c['name']].pid}",
                )
                for c in self.pod["spec"]["containers"]
            ],
        }

    def _terminal_status(
        self, started: str, statuses: dict[str, dict[str, Any]], phase: str
    ) -> dict[str, Any]:
        init_names = {c["name"] for c in self.pod["spec"].get("initContainers", [])}
        status: dict[str, Any] = {
            "phase": phase,
            **self._addresses(started),
            "conditions": self._conditions(False, started, "PodCompleted"),
            "containerStatuses": [
                statuses.get(c["name"])
                or self._terminated(c, 137, "ContainerStatusUnknown", started, "never started")
                for c in self.pod["spec"]["containers"]
            ],
        }
        if init_names:
            status["initContainerStatuses"] = [
                statuses[name] for name in init_names if name in statuses
            ]
        return status

    def _patch_status(self, status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.node.api.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                self.gone.set()
                return
            logger.warning(
                "pod %s/%s: status %s refused: %s %s",
                self.namespace,
                self.name,
                status.get("phase"),
                error.status,
                error.body,
            )

    def _delete(self) -> None:
        """The kubelet's last word on a deleted pod: delete now, this very pod (by uid)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.node.api.delete_namespaced_pod(
                self.name,
                self.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                logger.warning("pod %s/%s: delete refused: %s", self.namespace, self.name, error)


def _translator(container: dict[str, Any], mounts: dict[str, Path]) -> Callable[[str], str]:
    """Replace each mountPath (as a whole path prefix) by its volume's directory."""
    pairs = sorted(
        (
            (m["mountPath"].rstrip("/") or "/", mounts[m["name"]] / m.get("subPath", ""))
            for m in container.get("volumeMounts", [])
            if m["name"] in mounts
        ),
        key=lambda pair: -len(pair[0]),
    )
    if not pairs:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p) for p, _ in pairs) + r")(?=/|$|[^\w.-])"
    )
    table = {p: str(d).rstrip("/") for p, d in pairs}
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)
