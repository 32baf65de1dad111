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

The in-cluster credentials are found as the executor finds them
(:func:`scheduler.backends.k8s.client.service_account_dir`). Errors are the
backend's :class:`scheduler.errors.ClusterError` (a user error: fix the
configuration and run again).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

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


def _kubeconfig_path(kubeconfig: str | None, environ: Mapping[str, str]) -> str:
    if kubeconfig:
        return os.path.expanduser(kubeconfig)
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return os.path.expanduser(listed[0])
    return os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".kube", "config")


def connect(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """A connection by the rule in this module's docstring (nothing is sent yet)."""
    directory = None if (kubeconfig or context) else client.service_account_dir(environ)
    if directory is not None:
        configuration = kubernetes.client.Configuration()
        client.load_in_cluster(directory, configuration, environ)
        own = os.path.join(directory, "namespace")
        pod_namespace = None
        if os.path.isfile(own):
            with open(own) as f:
                pod_namespace = f.read().strip()
        return Connection(
            kubernetes.client.ApiClient(configuration),
            namespace or pod_namespace or DEFAULT_NAMESPACE,
            f"in-cluster (service account token in {directory})",
        )
    path = _kubeconfig_path(kubeconfig, environ)
    if not os.path.isfile(path):
        raise ClusterError(
            f"no kubeconfig at {path}: give --kubeconfig PATH (and --context NAME), set "
            "$KUBECONFIG, or run inside a pod of the cluster"
        )
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"{path} is not a usable kubeconfig: {exc}") from exc
    names = [c["name"] for c in contexts or []]
    chosen = next((c for c in contexts or [] if c["name"] == context), None) if context else current
    if chosen is None:
        raise ClusterError(
            f"--context {context!r} is not in {path}: its contexts are "
            f"{', '.join(names) or '(none)'}"
        )
    try:
        api = kubernetes.config.new_client_from_config(
            config_file=path, context=chosen["name"], persist_config=False
        )
    except (ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"context {chosen['name']!r} of {path} cannot be used: {exc}") from exc
    return Connection(
        api,
        namespace or chosen.get("context", {}).get("namespace") or DEFAULT_NAMESPACE,
        f"kubeconfig {path}, context {chosen['name']}",
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
