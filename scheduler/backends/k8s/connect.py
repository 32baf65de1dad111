"""Connecting to a Kubernetes cluster: which credentials, which namespace, clear errors.

Used by the commands that talk to a cluster (``mrk8s submit``, ``logs``,
``status``, ``cancel``) through :mod:`scheduler.backends.k8s.objects` and
:mod:`scheduler.backends.k8s.driverjob`. The rule, as ``kubectl`` has it:

- ``--kubeconfig PATH`` or ``--context NAME`` given: that kubeconfig (default
  ``$KUBECONFIG``, else ``~/.kube/config``) and context;
- else, inside a pod (``$KUBERNETES_SERVICE_HOST`` set and a service-account
  token mounted): the pod's service account (in-cluster config);
- else the default kubeconfig.

The namespace is ``--namespace``, else the pod's own namespace (in-cluster)
or the context's namespace, else :data:`DEFAULT_NAMESPACE`.

The credentials are found by the executor's own loader
(:func:`scheduler.backends.k8s.client.load`). Errors are the
backend's :class:`scheduler.errors.ClusterError` (a user error: fix the
configuration and run again).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import client
from scheduler.errors import ClusterError

#: The namespace of manifests/ (``kubectl apply -k manifests/``).
DEFAULT_NAMESPACE = "mrk8s"


@dataclass(frozen=True)
class Connection:
    """An API client, the namespace commands act in, and where the credentials came from."""

    api: Any  # kubernetes.client.ApiClient
    namespace: str
    source: str  # "in-cluster (service account ...)" or "kubeconfig PATH, context NAME"

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """A connection by the rule in this module's docstring (nothing is sent yet)."""
    credentials = client.load(kubeconfig, context, environ)
    return Connection(
        client.api_client(credentials),
        namespace or credentials.namespace or DEFAULT_NAMESPACE,
        credentials.source,
    )


@contextlib.contextmanager
def api_errors(connection: Connection, doing: str) -> Iterator[None]:
    """Turn the client's errors while ``doing`` something into a :class:`ClusterError`
    naming the server, the status and what to check."""
    host = connection.api.configuration.host
    try:
        yield
    except ApiException as exc:
        reason = exc.reason or ""
        if exc.status in (401, 403):
            hint = (
                "the credentials of "
                f"{connection.source} are not allowed to; check the RBAC of that user "
                f"(manifests/ grants the driver's service account what it needs in "
                f"namespace {DEFAULT_NAMESPACE})"
            )
        else:
            hint = "see the message above"
        raise ClusterError(
            f"{doing} in namespace {connection.namespace!r} on {host}: HTTP {exc.status} "
            f"{reason}: {_message(exc)}; {hint}"
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterError(
            f"{doing}: cannot reach the Kubernetes API server at {host} ({exc}); check that "
            f"the cluster is up and that {connection.source} is the one you mean"
        ) from exc


def _message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except ValueError:
        return str(exc.body)
