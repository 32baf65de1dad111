"""The ``k8s`` backend: a job's driver is the driver Job of ``mrk8s submit``, followed by a watch.

One :class:`K8sBackend` serves one cluster of the gateway's config (a
kubeconfig, context and namespace, an image and an object-store URL its pods
and the gateway both reach).

- **start** ships the job as ``mrk8s submit`` does
  (:func:`scheduler.backends.k8s.driverjob.submit`): the owner ConfigMap, the
  script's directory in a ConfigMap, and the driver Job running ``mrk8s run
  ... --backend k8s`` with the job's id. Inputs uploaded to the gateway
  (artifacts) are copied to ``STORAGE/inputs/ID/`` first; the shuffle goes to
  ``STORAGE/shuffle`` and the output (text format) to ``STORAGE/output/ID``.
  A second start of the same job (its driver vanished unfinished) deletes
  what is left of the first and submits again with the same id, so the
  driver skips the tasks already committed.
- **status** comes from watching, not polling: per namespace, one list and
  watch of the Jobs and one of the pods of every mrk8s job
  (:class:`scheduler.backends.k8s.watch.Follower`: resourceVersion,
  bookmarks, reconnects, a fresh list after ``410 Gone``). ``poll`` reads
  the cache the watch keeps; the driver Job's ``Complete``/``Failed``
  condition is the outcome, the stage Jobs' counts are the progress.
- **logs**: when a pod of a job ends, its log is copied to
  ``JOB_DIR/pods/POD.log`` and appended to the job's log
  (``GET /v1/jobs/ID/logs``), so it is served after the pods are deleted.
- **cancel** deletes the job's owner ConfigMap with background propagation
  (the garbage collector removes its Jobs and pods) and returns once the
  watch has seen the last pod go.
- **re-attach** after a gateway restart needs only the handle in the job's
  row (cluster, namespace, driver Job name): the watch's first list tells
  whether the driver runs, finished, or is gone (then ``_SUCCESS`` in the
  output decides between finished and "resume it"). :meth:`K8sBackend.attach`
  hands this backend a driver Job someone else created (the declarative
  mode's reconciler).

The ``kubernetes`` client is imported here only through
``scheduler.backends.k8s`` (its one room); nothing is imported until a job
of the cluster starts or is polled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrk8s.gateway.backends import Handle, Outcome
from mrk8s.gateway.config import Cluster

logger = logging.getLogger(__name__)

#: Seconds a started driver Job may stay unseen by the watch before it counts as gone.
UNSEEN_GRACE = 60.0
#: Seconds a cancel waits for the job's pods to go.
CANCEL_TIMEOUT = 120.0
#: Seconds between looks at the cache while waiting (the watch updates it).
WAIT_STEP = 0.2
#: Where a job's directory keeps the logs of its ended pods, one file per pod.
PODS_DIR = "pods"


def _job_id(obj: dict[str, Any]) -> str | None:
    from scheduler.backends.k8s import names

    meta = obj.get("metadata") or {}
    return (meta.get("annotations") or {}).get(names.JOB_ID_ANNOTATION)


def _condition(job: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _task_index(pod: dict[str, Any]) -> int | None:
    """The task a stage's pod ran: its completion index through its Job's index map (a
    resumed stage runs only the tasks not committed, completion index 0 being the first)."""
    from scheduler.backends.k8s import indexmap, names

    meta = pod.get("metadata") or {}
    completion = (meta.get("labels") or {}).get(names.INDEX_LABEL) or (
        meta.get("annotations") or {}
    ).get(names.INDEX_LABEL)
    if completion is None or not str(completion).isdigit():
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("name") == indexmap.ENV and var.get("value"):
                try:
                    return indexmap.task_index(var["value"], int(completion))
                except ValueError:
                    break
    return int(completion)


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class _Watch:
    """The Jobs and pods of the mrk8s jobs of one namespace, kept current by two followers."""

    def __init__(self, backend: K8sBackend, namespace: str, watch_seconds: int | None) -> None:
        from scheduler.backends.k8s import names
        from scheduler.backends.k8s.watch import WATCH_SECONDS, jobs_and_pods

        watch_seconds = watch_seconds or WATCH_SECONDS
        self.namespace = namespace
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"job": {}, "pod": {}}
        self.synced = {"job": False, "pod": False}
        api = backend.connection().api
        selector = f"{names.APP_LABEL}={names.APP}"
        self.events: queue.Queue[Any] = queue.Queue()
        self.followers = jobs_and_pods(
            api,
            namespace=namespace,
            selector=selector,
            out=self.events,
            watch_seconds=watch_seconds,
        )

    def reconnects(self) -> int:
        return sum(max(f.watches - 1, 0) + max(f.lists - 1, 0) for f in self.followers)


class K8sBackend:
    """Runs the jobs of one Kubernetes cluster of the config; see the module docstring."""

    name = "k8s"

    def __init__(self, cluster: Cluster, *, watch_seconds: int | None = None) -> None:
        self.cluster = cluster
        #: How long one watch request lasts before the server ends it and it is made again
        #: (None: the Follower's default).
        self.watch_seconds = watch_seconds
        self._connection: Any = None
        self._lock = threading.RLock()
        self._watches: dict[str, _Watch] = {}
        self._consumers: list[threading.Thread] = []
        self._stop = threading.Event()
        # job id -> the job's row as last polled (its directories), for copying pod logs.
        self._rows: dict[str, dict[str, Any]] = {}
        # job id -> when its driver Job was created or attached (not yet seen by the watch).
        self._expected: dict[str, float] = {}
        # job id -> the outcome of its driver, once the watch saw it end (kept after deletion).
        self._outcomes: dict[str, Outcome] = {}
        # job id -> its pods whose logs are copied.
        self._copied: dict[str, set[str]] = {}
        self._log_lock = threading.Lock()
        self._unreachable_logged = 0.0

    # -- connecting and watching ----------------------------------------------------------

    @property
    def namespace(self) -> str:
        return str(self.connection().namespace)

    def connection(self) -> Any:
        with self._lock:
            if self._connection is None:
                from scheduler.backends.k8s import connect

                self._connection = connect.connect(
                    kubeconfig=self.cluster.kubeconfig,
                    context=self.cluster.context,
                    namespace=self.cluster.namespace,
                )
            return self._connection

    def _in(self, namespace: str) -> Any:
        """A connection acting in ``namespace`` (the same API client)."""
        from scheduler.backends.k8s.connect import Connection

        conn = self.connection()
        if namespace == conn.namespace:
            return conn
        return Connection(conn.api, namespace, conn.source)

    def _watch(self, namespace: str) -> _Watch:
        with self._lock:
            watch = self._watches.get(namespace)
            if watch is None:
                watch = self._watches[namespace] = _Watch(self, namespace, self.watch_seconds)
                consumer = threading.Thread(
                    target=self._consume,
                    args=(watch,),
                    name=f"gateway-watch-{self.cluster.name}-{namespace}",
                    daemon=True,
                )
                self._consumers.append(consumer)
                consumer.start()
                for follower in watch.followers:
                    follower.start()
            return watch

    def watch_reconnects(self) -> int:
        """Watches started again (ended, broken, or listed again after 410), for /metrics."""
        with self._lock:
            return sum(w.reconnects() for w in self._watches.values())

    def _consume(self, watch: _Watch) -> None:
        while not self._stop.is_set():
            try:
                kind, what, payload = watch.events.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._apply(watch, kind, what, payload)
            except Exception:
                # One bad event (or a log that cannot be written) must not end the watch.
                logger.exception(
                    "cluster %s: an event of the watch of %s could not be handled; going on",
                    self.cluster.name,
                    watch.namespace,
                )

    def _apply(self, watch: _Watch, kind: str, what: str, payload: Any) -> None:
        """Put one event of the watch into the cache; keep the logs of pods that ended."""
        if what == "ERROR":
            logger.error(
                "cluster %s: the watch of %ss in %s gave up: %s",
                self.cluster.name,
                kind,
                watch.namespace,
                payload,
            )
            return
        touched: set[str] = set()
        with self._lock:
            cache = watch.objects[kind]
            if what == "LIST":
                cache.clear()
                for obj in payload:
                    cache[obj["metadata"]["name"]] = obj
                    touched.add(_job_id(obj) or "")
                watch.synced[kind] = True
            else:
                name = payload["metadata"]["name"]
                if what == "DELETED":
                    cache.pop(name, None)
                else:
                    cache[name] = payload
                touched.add(_job_id(payload) or "")
            if kind == "job":
                for obj in cache.values():
                    self._note_driver(obj)
            touched &= set(self._rows)
        for job_id in touched:
            self._copy_logs(job_id, watch)

    def _note_driver(self, job: dict[str, Any]) -> None:
        """Keep the outcome of a driver Job that ended (it may be deleted later)."""
        from scheduler.backends.k8s import names

        labels = (job.get("metadata") or {}).get("labels") or {}
        job_id = _job_id(job)
        if job_id is None or labels.get(names.STAGE_LABEL) != "driver":
            return
        if _condition(job, "Complete"):
            self._outcomes[job_id] = Outcome(exit_code=0)
        elif _condition(job, "Failed"):
            self._outcomes.setdefault(job_id, Outcome(exit_code=1))

    def _objects(self, watch: _Watch, kind: str, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in watch.objects[kind].values() if _job_id(o) == job_id]

    # -- the interface ------------------------------------------------------------------

    def start(self, job: dict[str, Any]) -> Handle:
        from scheduler.backends.k8s import driverjob, objects

        conn = self.connection()
        watch = self._watch(conn.namespace)
        job_id = job["id"]
        launch = int(job.get("launches") or 0) + 1
        if launch > 1:
            # What is left of the last launch goes first; the new driver resumes.
            with contextlib.suppress(objects.NoSuchJobError):
                objects.cancel(conn, job_id)
            self._wait_gone(watch, job_id, kinds=("job", "pod"))
        spec = job["spec"]
        inputs = [self._ship_input(job_id, i, p) for i, p in enumerate(spec["input_paths"])]
        storage = self.cluster.storage
        run_args = [
            *inputs,
            *("-o", job["output_dir"], "--output-format", "text"),
            *("--reducers", str(spec["reducers"]), "--workers", str(spec["workers"])),
            *("--shuffle-dir", f"{storage}/shuffle"),
            *("--backend", "k8s", "--job-id", job_id, "--namespace", conn.namespace),
        ]
        if spec.get("memory_per_worker"):
            run_args += ["--memory-per-worker", spec["memory_per_worker"]]
        if self.cluster.job_storage_options:
            run_args += ["--storage-options", json.dumps(dict(self.cluster.job_storage_options))]
        for secret in self.cluster.env_from_secret:
            run_args += ["--env-from-secret", secret]
        image = self._image()
        run_args += ["--image", image]
        if spec.get("args"):
            run_args += ["--", *spec["args"]]
        Path(job["job_dir"]).mkdir(parents=True, exist_ok=True)
        with open(job["log_path"], "ab") as log:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(
                f"mrk8s gateway: {when} launch {launch} of job {job_id} on cluster "
                f"{self.cluster.name}, namespace {conn.namespace}\n".encode()
            )
        with self._lock:
            self._rows[job_id] = job
            self._outcomes.pop(job_id, None)
            self._expected[job_id] = time.monotonic()
        submitted = driverjob.submit(
            conn,
            job_id=job_id,
            image=image,
            script=spec["script_path"],
            run_args=run_args,
            env_secrets=tuple(self.cluster.env_from_secret),
        )
        return Handle(
            cluster=self.cluster.name, namespace=conn.namespace, name=submitted.driver_job
        )

    def attach(self, job: dict[str, Any], namespace: str, job_name: str) -> Handle:
        """Follow the driver Job ``job_name`` in ``namespace`` that someone else created for
        ``job`` (e.g. applied from git); give the handle to ``Supervisor.adopt``."""
        self._watch(namespace)
        with self._lock:
            self._rows[job["id"]] = job
            self._expected.setdefault(job["id"], time.monotonic())
        return Handle(cluster=self.cluster.name, namespace=namespace, name=job_name)

    def poll(self, job: dict[str, Any], handle: Handle) -> Outcome | None:
        from scheduler.errors import ClusterError

        job_id = job["id"]
        try:
            watch = self._watch(handle.namespace or self.namespace)
        except ClusterError as exc:
            # Not reachable now (e.g. after a restart): the job stays RUNNING; try again.
            now = time.monotonic()
            if now - self._unreachable_logged > 60:
                self._unreachable_logged = now
                logger.warning("cluster %s: cannot follow its jobs: %s", self.cluster.name, exc)
            return None
        with self._lock:
            new = job_id not in self._rows
            self._rows[job_id] = job
            if not all(watch.synced.values()):
                return None  # the first list has not come yet
            driver = watch.objects["job"].get(handle.name)
            outcome = self._outcomes.get(job_id)
            expected = self._expected.get(job_id)
        if new:
            self._copy_logs(job_id, watch)
        if driver is not None and _job_id(driver) == job_id:
            with self._lock:
                self._expected.pop(job_id, None)
            if outcome is None:
                return None
            return self._finish(job, watch, outcome)
        if outcome is not None:
            return self._finish(job, watch, outcome)
        if expected is not None and time.monotonic() - expected < UNSEEN_GRACE:
            return None  # created, not yet seen by the watch
        # Gone without the watch seeing it end (deleted, or ended and removed while the
        # gateway was down): the output's _SUCCESS says whether it finished.
        if self._exists(f"{job['output_dir']}/_SUCCESS"):
            return self._finish(job, watch, Outcome(exit_code=0))
        self._copy_logs(job_id, watch)
        return Outcome(exit_code=None)

    def _finish(self, job: dict[str, Any], watch: _Watch, outcome: Outcome) -> Outcome:
        """The outcome, once the logs of the job's ended pods are kept."""
        job_id = job["id"]
        if outcome.exit_code not in (None, 0):
            for pod in self._objects(watch, "pod", job_id):
                from scheduler.backends.k8s import names, podlog

                if (pod["metadata"].get("labels") or {}).get(names.STAGE_LABEL) == "driver":
                    code = podlog.exit_code(pod, "driver")
                    if code:
                        outcome = Outcome(exit_code=code)
        self._copy_logs(job_id, watch)
        with self._lock:
            self._rows.pop(job_id, None)
            self._expected.pop(job_id, None)
        return outcome

    def cancel(self, job: dict[str, Any], handle: Handle) -> None:
        from scheduler.backends.k8s import objects

        namespace = handle.namespace or self.namespace
        watch = self._watch(namespace)
        with contextlib.suppress(objects.NoSuchJobError):
            objects.cancel(self._in(namespace), job["id"])
        self._wait_gone(watch, job["id"], kinds=("pod",))
        self._copy_logs(job["id"], watch)
        with self._lock:
            self._rows.pop(job["id"], None)
            self._expected.pop(job["id"], None)

    def _wait_gone(self, watch: _Watch, job_id: str, kinds: tuple[str, ...]) -> None:
        """Return once the watch has seen every object of these kinds of the job go."""
        deadline = time.monotonic() + CANCEL_TIMEOUT
        while time.monotonic() < deadline:
            with self._lock:
                synced = all(watch.synced.values())
                left = [o for k in kinds for o in watch.objects[k].values() if _job_id(o) == job_id]
            if synced and not left:
                return
            time.sleep(WAIT_STEP)
        from scheduler.errors import ClusterError

        raise ClusterError(
            f"job {job_id}: its {' and '.join(kinds)}s in namespace {watch.namespace} of "
            f"cluster {self.cluster.name} were not gone {CANCEL_TIMEOUT:.0f} s after their "
            "owner was deleted: is the cluster's garbage collector (kube-controller-manager) "
            "running?"
        )

    def progress(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        from scheduler.backends.k8s import names

        handle = Handle.of(job)
        with self._lock:
            watch = self._watches.get(handle.namespace if handle else "")
        if watch is None:
            return None
        stages: dict[tuple[int, str], dict[str, Any]] = {}
        for obj in self._objects(watch, "job", job["id"]):
            labels = obj["metadata"].get("labels") or {}
            stage = labels.get(names.STAGE_LABEL)
            step = labels.get(names.STEP_LABEL)
            if stage not in ("map", "reduce") or step is None or not step.isdigit():
                continue
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            row = stages.setdefault(
                (int(step), stage),
                {"step": int(step), "stage": stage, "tasks": 0, "committed": 0, "failures": 0},
            )
            row["tasks"] += int(spec.get("completions") or 0)
            row["committed"] += int(status.get("succeeded") or 0)
            row["failures"] += int(status.get("failed") or 0)
        if not stages:
            return None
        out = []
        for key in sorted(stages, key=lambda k: (k[0], k[1] != "map")):
            row = stages[key]
            if row["committed"] >= row["tasks"]:
                row["state"] = "done"
            elif row["failures"]:
                row["state"] = "failing"
            else:
                row["state"] = "running" if row["committed"] else "pending"
            out.append(row)
        return out

    def summary(self, job: dict[str, Any]) -> dict[str, Any] | None:
        try:
            with self._open(f"{job['output_dir']}/summary.json") as f:
                data = json.loads(f.read())
        except (OSError, ValueError) as exc:
            logger.warning("job %s: no summary.json in its output: %s", job["id"], exc)
            return None
        return data if isinstance(data, dict) else None

    def output(self, job: dict[str, Any]) -> Iterator[bytes]:
        import fsspec

        fs, _, (root,) = fsspec.get_fs_token_paths(
            job["output_dir"], storage_options=dict(self.cluster.storage_options)
        )
        parts = sorted(p for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1][:5] == "part-")
        for part in parts:
            with fs.open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for watch in self._watches.values():
                for follower in watch.followers:
                    follower.stop()
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- storage ----------------------------------------------------------------------

    def _open(self, url: str, mode: str = "rb") -> Any:
        import fsspec

        return fsspec.open(url, mode, **dict(self.cluster.storage_options))

    def _exists(self, url: str) -> bool:
        import fsspec

        try:
            fs, _, (path,) = fsspec.get_fs_token_paths(
                url, storage_options=dict(self.cluster.storage_options)
            )
            return bool(fs.exists(path))
        except (OSError, ValueError):
            return False

    def _ship_input(self, job_id: str, i: int, path: str) -> str:
        """An input the cluster can read: a URL as it is, a file of the gateway copied to
        ``STORAGE/inputs/ID/``."""
        if "://" in path and not path.startswith("file://"):
            return path
        import fsspec

        local = path.removeprefix("file://")
        url = f"{self.cluster.storage}/inputs/{job_id}/{i:04d}-{os.path.basename(local)}"
        fs, _, (remote,) = fsspec.get_fs_token_paths(
            url, storage_options=dict(self.cluster.storage_options)
        )
        # Copied by an earlier launch: left as it is, since a resumed driver refuses an
        # input that changed (a new copy is a new object) since the job started.
        if fs.exists(remote) and fs.size(remote) == os.path.getsize(local):
            return url
        with open(local, "rb") as src, self._open(url, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return url

    def _image(self) -> str:
        if self.cluster.image:
            return self.cluster.image
        from mrk8s.engine.settings import default_image

        return default_image()

    # -- logs ---------------------------------------------------------------------------

    def _copy_logs(self, job_id: str, watch: _Watch) -> None:
        """Keep the log of every ended pod of the job not kept yet (see the module docstring)."""
        from scheduler.backends.k8s import names, objects
        from scheduler.errors import ClusterError

        with self._lock:
            row = self._rows.get(job_id)
        if row is None:
            return
        pods_dir = Path(row["job_dir"]) / PODS_DIR
        # The driver's last among those that ended together: its closing paragraph (the
        # error of a failed job) ends the job's log.
        ended = sorted(
            (p for p in self._objects(watch, "pod", job_id) if _terminal(p)),
            key=lambda p: (
                (p["metadata"].get("labels") or {}).get(names.STAGE_LABEL) == "driver",
                p["metadata"].get("creationTimestamp") or "",
            ),
        )
        with self._log_lock:
            copied = self._copied.setdefault(job_id, set())
            for pod in ended:
                name = pod["metadata"]["name"]
                kept = pods_dir / f"{name}.log"
                if name in copied or kept.exists():
                    copied.add(name)
                    continue
                try:
                    text = objects.read_log(self._in(watch.namespace), name) or ""
                except ClusterError as exc:
                    logger.warning("job %s: the log of pod %s is lost: %s", job_id, name, exc)
                    text = f"(its log could not be read: {exc})\n"
                pods_dir.mkdir(parents=True, exist_ok=True)
                tmp = kept.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, kept)
                labels = pod["metadata"].get("labels") or {}
                stage = labels.get(names.STAGE_LABEL, "?")
                step = labels.get(names.STEP_LABEL)
                index = _task_index(pod)
                what = stage if step is None else f"step {int(step) + 1} {stage}"
                if index is not None:
                    what += f" task {index}"
                phase = (pod.get("status") or {}).get("phase")
                with open(row["log_path"], "a") as log:
                    log.write(f"==> pod {name} ({what}, {phase}) <==\n{text}")
                    if text and not text.endswith("\n"):
                        log.write("\n")
                copied.add(name)
