"""The reconciler: what is in git at a declarative queue's branch head goes to the cluster.

It stands where Argo CD or Flux would, as the gateway's own loop (started
by the app's lifespan when a queue is declarative). Each pass, per
declarative queue:

1. fetch the applied branch (``apply_branch``, by default the branch the
   submissions are committed to) and read every ``.yaml`` under the queue's
   manifest root at its head (files already parsed are known by their blob
   id); a QUEUED job whose commit that head holds but whose manifest it does
   not was withdrawn before being applied: it is CANCELLED;
2. group the objects by the job id annotation every object of a job carries
   (``mrk8s.io/job-id``);
3. for each job the gateway holds QUEUED (submitted, committed, not yet
   applied), oldest first while the queue has fewer than ``max_running``
   jobs RUNNING (the rest wait QUEUED, as in a direct queue), apply its
   objects with server-side apply (field manager
   :data:`FIELD_MANAGER`, strict field validation): the owner ConfigMap
   first, then the others with an ``ownerReference`` to it, which git
   cannot hold (it needs the owner's uid); then the job becomes RUNNING
   with the commit in its history;
4. record the commit applied (table ``git_syncs``).

Applying is idempotent (applying the same objects again changes nothing),
so a gateway that dies between applying and recording applies again after
its restart and nothing runs twice. A job is applied once: once it left
QUEUED it is not applied again, so a finished driver Job removed by its TTL
does not come back. Objects for job ids this gateway does not know
(committed by hand) are left alone; pruning is not done. Cancelling a job
that no backend follows (not applied yet, or a RayJob) deletes its owner
here (:meth:`Reconciler.cancel`), and with it whatever was applied.
A manifest the API server refuses (4xx) fails its job with the server's
message; an unreachable server is tried again next pass.

Who follows the job once applied: a ``k8s`` job whose cluster is one of
the config's k8s clusters goes to that cluster's backend
(:meth:`~mrk8s.gateway.backends.k8s.K8sBackend.attach`, then the
supervisor's ``adopt``), which watches its driver Job to the end, keeps its
logs and serves its output, as for a job the gateway ran itself. A ``ray``
job's RayJob has no follower yet: it stays RUNNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mrk8s.gateway import gitops
from mrk8s.gateway import state as st
from mrk8s.gateway.config import GatewayConfig, Queue
from mrk8s.gateway.gitconfig import GitTarget

logger = logging.getLogger(__name__)

#: The field manager of every object the reconciler applies (``kubectl get --show-managed-fields``).
FIELD_MANAGER = "mrk8s-gateway"
JOB_ID_ANNOTATION = "mrk8s.io/job-id"


class Reconciler:
    """See the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        state: st.State,
        on_change: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.config = config
        self.state = state
        self.on_change = on_change
        #: The gateway's supervisor, whose k8s backend follows the applied ``k8s`` jobs
        #: (set by the app; None: applied jobs stay RUNNING, followed by nobody).
        self.supervisor: Any = None
        self.queues = [q for q in config.queues if q.mode == "declarative"]
        self._docs: dict[str, list[dict[str, Any]]] = {}
        self._synced: dict[str, str] = {}
        self._clients: dict[tuple[str | None, str | None], Any] = {}
        self._wake = threading.Event()
        self.passes = 0

    def wake(self) -> None:
        """Look at git now (a submission just committed)."""
        self._wake.set()

    async def run(self) -> None:
        interval = min(q.git.interval for q in self.queues)
        while True:
            try:
                await asyncio.to_thread(self.reconcile_all)
            except Exception:
                logger.exception("gateway reconciler pass failed; trying again")
            await asyncio.to_thread(self._wake.wait, interval)
            self._wake.clear()

    def reconcile_all(self) -> int:
        self.passes += 1
        return sum(self.reconcile(q) for q in self.queues)

    # -- one queue ----------------------------------------------------------------------

    def reconcile(self, queue: Queue) -> int:
        """Apply the jobs of ``queue`` that git holds and the cluster lacks; how many."""
        target: GitTarget = queue.git
        pending = {
            j["id"]: j
            for j in self.state.jobs_in([st.QUEUED])
            if j["queue"] == queue.name and j.get("git_commit")
        }
        # Applied, but the gateway stopped before handing them over: hand them over now.
        for job in self.state.jobs_in([st.RUNNING]):
            if job["queue"] == queue.name and job.get("git_commit") and not job.get("handle"):
                self.follow(target, job)
        repo = gitops.repository(target.applied, self.config.state_dir)
        with repo.locked():
            head = repo.fetch()
            if head is None or (head == self._synced.get(queue.name) and not pending):
                return 0
            files = repo.files(head, target.root)
            for blob in files.values():
                if blob not in self._docs:
                    self._docs[blob] = _parse(repo.blob(blob))
            # A job whose commit the applied branch holds but whose manifest is gone was
            # removed (reverted) before it was applied: it is not coming.
            removed = [
                job
                for job in pending.values()
                if not any(job["id"] in path for path in files)
                and repo.is_ancestor(job["git_commit"], head)
            ]
        for job in removed:
            pending.pop(job["id"])
            if self.state.transition(
                job["id"],
                [st.QUEUED],
                st.CANCELLED,
                f"its manifest was removed from branch {target.applied.branch} before it was "
                f"applied (at commit {head[:12]})",
                finished_at=time.time(),
            ):
                self.on_change(job["id"])
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for path in sorted(files):
            for doc in self._docs[files[path]]:
                job_id = ((doc.get("metadata") or {}).get("annotations") or {}).get(
                    JOB_ID_ANNOTATION
                )
                if job_id:
                    by_job[job_id].append(doc)
                else:
                    logger.warning("%s at %s: an object without a job id: skipped", path, head)
        # The queue's cap holds as for its direct jobs: oldest first, the rest wait QUEUED.
        running = sum(1 for j in self.state.jobs_in([st.RUNNING]) if j["queue"] == queue.name)
        applied = 0
        for job_id, job in pending.items():  # oldest first
            if job_id not in by_job:
                continue  # not in the applied branch yet (a proposal not merged)
            if running >= queue.max_running:
                break
            if not self._apply_job(target, job, by_job[job_id], head):
                break  # the cluster is unreachable: next pass
            applied += 1
            fresh = self.state.job(job_id)
            if fresh is not None and fresh["status"] == st.RUNNING:
                running += 1
        self._synced[queue.name] = head
        if applied:
            self.state.record_sync(queue.name, head, applied)
        return applied

    def _apply_job(
        self, target: GitTarget, job: dict[str, Any], objects: list[dict[str, Any]], head: str
    ) -> bool:
        """Apply one job's objects; False if the cluster could not be reached."""
        import urllib3.exceptions
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        from scheduler.errors import ClusterError

        job_id = job["id"]
        try:
            answered = self.apply(target, job_id, objects)
        except ResourceNotFoundError as exc:
            kinds = ", ".join(sorted({f"{o['apiVersion']} {o['kind']}" for o in objects}))
            self._refused(
                target,
                job_id,
                f"the cluster does not know a kind of its manifest (commit {head[:12]})",
                f"the cluster of queue {job['queue']!r} does not serve one of {kinds} "
                f"({exc}); a RayJob needs KubeRay's CRDs installed (manifests/ray/crds/)",
            )
            return True
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (409, 429):
                self._refused(
                    target,
                    job_id,
                    f"the cluster refused its manifest from git commit {head[:12]}",
                    f"applying the job's manifest (git commit {job['git_commit'][:12]}) "
                    f"failed: HTTP {exc.status}: {_api_message(exc)}; fix the queue's "
                    "settings (namespace, image, secrets) and submit again",
                )
                return True
            logger.warning("applying job %s: HTTP %s; trying again", job_id, exc.status)
            return False
        except (urllib3.exceptions.HTTPError, OSError, ClusterError) as exc:
            logger.warning("applying job %s: the cluster cannot be reached (%s)", job_id, exc)
            return False
        moved = self.state.transition(
            job_id,
            [st.QUEUED],
            st.RUNNING,
            f"applied from git commit {head[:12]} (the job's own commit {job['git_commit'][:12]})",
            started_at=time.time(),
        )
        if not moved:
            # Cancelled while it was being applied: what was applied goes again.
            self.delete(target, job_id)
            return True
        logger.info(
            "job %s applied from git commit %s (%d objects)", job_id, head[:12], len(answered)
        )
        self.on_change(job_id)
        fresh = self.state.job(job_id)
        if fresh is not None:
            self.follow(target, fresh)
        return True

    def _refused(self, target: GitTarget, job_id: str, reason: str, error: str) -> None:
        """The cluster refused the job's manifest: undo what was applied, fail the job."""
        self._undo(target, job_id)
        self.state.transition(
            job_id, [st.QUEUED], st.FAILED, reason, finished_at=time.time(), error=error
        )
        self.on_change(job_id)

    def _undo(self, target: GitTarget, job_id: str) -> None:
        """Delete what was applied of a job the cluster refused in part (nothing half-made)."""
        try:
            self.delete(target, job_id)
        except Exception as exc:
            logger.warning("job %s: removing its partly applied objects failed: %s", job_id, exc)

    def follow(self, target: GitTarget, job: dict[str, Any]) -> None:
        """Hand an applied ``k8s`` job to the k8s backend of its cluster, which watches its
        driver Job from now on (a RayJob has no follower yet: it stays RUNNING)."""
        if self.supervisor is None or job["backend"] != "k8s":
            return
        from mrk8s.gateway.backends.k8s import K8sBackend
        from scheduler.backends.k8s import driverjob

        backend = self.supervisor.backends.get(job["cluster"])
        if not isinstance(backend, K8sBackend):
            return
        handle = backend.attach(job, target.namespace, driverjob.driver_job_name(job["id"]))
        self.supervisor.adopt(job["id"], handle)

    # -- the cluster ----------------------------------------------------------------------

    def client(self, target: GitTarget) -> Any:
        """A dynamic client for the target's cluster (one per kubeconfig and context)."""
        key = (target.kubeconfig, target.context)
        found = self._clients.get(key)
        if found is None:
            from kubernetes.dynamic import DynamicClient

            from scheduler.backends.k8s.connect import connect

            connection = connect(
                kubeconfig=target.kubeconfig, context=target.context, namespace=target.namespace
            )
            # The client's discovery cache is a file (by default one per API server in the
            # system's temp dir, shared by every process): ours, fresh at each start, so a
            # kind removed from the cluster (a CRD) is not taken for present.
            cache = self.config.state_dir / f"kube-discovery-{len(self._clients)}.json"
            cache.unlink(missing_ok=True)
            found = DynamicClient(connection.api, cache_file=str(cache))
            self._clients[key] = found
        return found

    def apply(
        self, target: GitTarget, job_id: str, objects: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Server-side apply ``objects``, the owner first; the objects as the server has them."""
        from scheduler.backends.k8s import names

        dynamic = self.client(target)
        owner_name = names.owner_name(job_id)
        is_owner = [
            o["kind"] == "ConfigMap" and o["metadata"]["name"] == owner_name for o in objects
        ]
        ordered = [o for o, own in zip(objects, is_owner, strict=True) if own]
        ordered += [o for o, own in zip(objects, is_owner, strict=True) if not own]
        answered: list[dict[str, Any]] = []
        owner_ref: dict[str, Any] | None = None
        for obj in ordered:
            body = json.loads(json.dumps(obj))
            body["metadata"].setdefault("namespace", target.namespace)
            if owner_ref is not None:
                body["metadata"]["ownerReferences"] = [owner_ref]
            resource = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
            response = dynamic.server_side_apply(
                resource,
                body=body,
                namespace=body["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                query_params=[("fieldValidation", "Strict")],
            )
            live = response.to_dict()
            answered.append(live)
            if owner_ref is None and body["metadata"]["name"] == owner_name:
                owner_ref = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner_name,
                    "uid": live["metadata"]["uid"],
                }
        return answered

    def cancel(self, job: dict[str, Any]) -> None:
        """A cancelled declarative job no backend follows: delete what was applied of it (a
        job not applied yet has nothing there, and is never applied now)."""
        queue = self.config.queue(job["queue"])
        if queue is None or queue.git is None:
            return
        try:
            self.delete(queue.git, job["id"])
        except Exception as exc:  # the cancel itself stands; say what is left behind
            logger.warning(
                "job %s is cancelled, but deleting its objects from the cluster failed (%s): "
                "delete its owner ConfigMap by hand (mrk8s cancel %s -n %s)",
                job["id"], exc, job["id"], queue.git.namespace,
            )  # fmt: skip

    def delete(self, target: GitTarget, job_id: str) -> None:
        """Delete the job's owner, and so (background propagation) all the job's objects."""
        from kubernetes.client.exceptions import ApiException

        from scheduler.backends.k8s import names

        dynamic = self.client(target)
        resource = dynamic.resources.get(api_version="v1", kind="ConfigMap")
        try:
            dynamic.delete(
                resource,
                name=names.owner_name(job_id),
                namespace=target.namespace,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        logger.info("job %s: its owner is deleted, and with it its objects", job_id)

    def close(self) -> None:
        for dynamic in self._clients.values():
            with contextlib.suppress(Exception):
                dynamic.client.close()
        self._clients.clear()


def _parse(data: bytes) -> list[dict[str, Any]]:
    import yaml

    try:
        docs = list(yaml.safe_load_all(data))
    except yaml.YAMLError as exc:
        logger.warning("a manifest in git is not valid YAML: %s", exc)
        return []
    return [d for d in docs if isinstance(d, dict) and d.get("kind") and d.get("metadata")]


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except ValueError:
        return str(exc.body)
