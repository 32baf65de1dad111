"""The service accounts of ``manifests/`` get exactly their Role's rights from the real API
server, with real tokens from the TokenRequest API.

The driver's token (``mrk8s-driver``) can do what a driver does in its
namespace: create, list, watch and delete Jobs, follow their pods, read their
logs and list events, create and read its owner ConfigMap. It gets 403 for
Secrets, for pods it would create, delete or evict itself, for deleting
config maps, for Nodes (cluster-wide), and for anything in another namespace. The task pods' account
(``mrk8s-worker``) gets 403 for everything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import connect, driverjob, objects
from tests.cluster import kube
from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster


def _client_with_token(cluster: Cluster, token: str) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.ca)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(configuration)


@pytest.fixture
def token_client(api: Any, cluster: Cluster, installed: str) -> Iterator[Callable[[str], Any]]:
    """A client for a service account of the mrk8s namespace, with a token the API server
    issued (TokenRequest), as a pod would have it."""
    made: list[Any] = []

    def make(account: str) -> Any:
        issued = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
            account, installed, {"spec": {"expirationSeconds": 600}}
        )
        client = _client_with_token(cluster, issued.status.token)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def restricted_job(name: str, code: str) -> dict[str, Any]:
    """A one-pod Job whose pod meets Pod Security "restricted", as mrk8s's pods do."""
    body = kube.python_job(name, code, completions=1)
    pod = body["spec"]["template"]["spec"]
    pod["securityContext"] = driverjob.pod_security_context()
    pod["automountServiceAccountToken"] = False
    pod["serviceAccountName"] = "mrk8s-worker"
    pod["containers"][0]["securityContext"] = driverjob.container_security_context()
    body["metadata"]["labels"] = {"app.kubernetes.io/name": "mrk8s"}
    return body


def _status(call: Callable[[], Any]) -> int:
    """The HTTP status the API server answers ``call`` with (200 if it succeeds)."""
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


@pytest.mark.timeout(120)
def test_the_driver_runs_jobs_follows_pods_and_reads_logs_in_its_namespace(
    api: Any, token_client: Callable[[str], Any], installed: str
) -> None:
    admin = api
    driver = token_client("mrk8s-driver")
    batch = kubernetes.client.BatchV1Api(driver)
    core = kubernetes.client.CoreV1Api(driver)
    name = f"rbac-{uuid.uuid4().hex[:6]}"

    owner = core.create_namespaced_config_map(
        installed, {"metadata": {"name": name}, "data": {"job-id": name}}
    )
    assert core.read_namespaced_config_map(name, installed).metadata.uid == owner.metadata.uid
    listed = batch.list_namespaced_job(installed)
    batch.create_namespaced_job(installed, restricted_job(name, "print('hello from', 6 * 7)"))

    # Watch from the list's resourceVersion until the Job controller marks it Complete.
    watch = kubernetes.watch.Watch()
    complete = False
    for event in watch.stream(
        batch.list_namespaced_job,
        installed,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=60,
    ):
        job = event["object"]
        if job.metadata.name == name and any(
            c.type == "Complete" and c.status == "True" for c in job.status.conditions or []
        ):
            complete = True
            watch.stop()
    assert complete

    (pod,) = core.list_namespaced_pod(
        installed, label_selector=f"batch.kubernetes.io/job-name={name}"
    ).items
    assert pod.status.phase == "Succeeded"
    assert core.read_namespaced_pod_log(pod.metadata.name, installed) == "hello from 42\n"
    events = core.list_namespaced_event(
        installed, field_selector=f"involvedObject.name={name}"
    ).items
    assert "SuccessfulCreate" in {e.reason for e in events}

    batch.delete_namespaced_job(name, installed, propagation_policy="Background")
    assert _status(lambda: batch.read_namespaced_job(name, installed)) in (200, 404)
    # Deleting the owner is the user's (mrk8s cancel), not the driver's.
    assert _status(lambda: core.delete_namespaced_config_map(name, installed)) == 403
    kubernetes.client.CoreV1Api(admin).delete_namespaced_config_map(name, installed)


@pytest.mark.timeout(120)
def test_the_driver_gets_403_for_secrets_other_namespaces_and_what_it_does_not_do(
    api: Any, token_client: Callable[[str], Any], installed: str, namespace: str
) -> None:
    kubernetes.client.CoreV1Api(api).create_namespaced_secret(
        installed, {"metadata": {"name": f"s-{uuid.uuid4().hex[:6]}"}, "stringData": {"k": "v"}}
    )
    driver = token_client("mrk8s-driver")
    batch = kubernetes.client.BatchV1Api(driver)
    core = kubernetes.client.CoreV1Api(driver)
    job = restricted_job("elsewhere", "print(1)")
    pod = {"metadata": {"name": "direct"}, "spec": job["spec"]["template"]["spec"]}

    refused = {
        "list secrets": lambda: core.list_namespaced_secret(installed),
        "read a secret": lambda: core.read_namespaced_secret("mrk8s-shuffle-token", installed),
        "list jobs elsewhere": lambda: batch.list_namespaced_job(namespace),
        "create a job elsewhere": lambda: batch.create_namespaced_job(namespace, job),
        "list pods elsewhere": lambda: core.list_namespaced_pod(namespace),
        "list config maps elsewhere": lambda: core.list_namespaced_config_map(namespace),
        "list nodes": lambda: core.list_node(),
        "list namespaces": lambda: core.list_namespace(),
        "create a pod": lambda: core.create_namespaced_pod(installed, pod),
        "delete a pod": lambda: core.delete_namespaced_pod("any", installed),
        "evict a pod": lambda: core.create_namespaced_pod_eviction(
            "any", installed, {"metadata": {"name": "any", "namespace": installed}}
        ),
        "patch a job": lambda: batch.patch_namespaced_job("any", installed, {"spec": {}}),
        "list config maps": lambda: core.list_namespaced_config_map(installed),
        "read a pod": lambda: core.read_namespaced_pod("any", installed),
    }
    statuses = {what: _status(call) for what, call in refused.items()}

    assert statuses == dict.fromkeys(refused, 403)
    # The refusal names the service account: it is RBAC answering, not a missing object.
    with pytest.raises(ApiException) as secrets:
        core.list_namespaced_secret(installed)
    message = json.loads(secrets.value.body)["message"]
    assert "system:serviceaccount:mrk8s:mrk8s-driver" in message
    assert 'cannot list resource "secrets"' in message


@pytest.mark.timeout(60)
def test_the_worker_account_has_no_rights(
    token_client: Callable[[str], Any], installed: str
) -> None:
    worker = token_client("mrk8s-worker")
    core = kubernetes.client.CoreV1Api(worker)
    batch = kubernetes.client.BatchV1Api(worker)

    assert _status(lambda: core.list_namespaced_pod(installed)) == 403
    assert _status(lambda: batch.list_namespaced_job(installed)) == 403
    assert _status(lambda: core.read_namespaced_config_map("any", installed)) == 403


@pytest.mark.timeout(60)
def test_an_unknown_job_id_with_the_drivers_rights_says_so_without_the_list(
    token_client: Callable[[str], Any], installed: str
) -> None:
    # The driver may not list config maps, so the ids there cannot be named: still one
    # clear paragraph (NoSuchJobError), not a 403 from the listing.
    connection = connect.Connection(token_client("mrk8s-driver"), installed, "a driver token")

    with pytest.raises(objects.NoSuchJobError) as missing:
        objects.find(connection, "no-such-job")

    assert str(missing.value).startswith(
        "no job 'no-such-job' in namespace 'mrk8s' (a driver token); the jobs there cannot "
        "be listed with these credentials."
    )
