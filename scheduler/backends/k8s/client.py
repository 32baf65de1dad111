"""Connecting to the Kubernetes API, and the errors a user can act on.

:func:`load` finds the credentials, for the executor (:func:`connect`) and
for the commands (:mod:`scheduler.backends.k8s.connect`) alike: from
``kubeconfig`` (and ``context``) when given; else from the pod's own service
account when the driver runs in a cluster; else from ``$KUBECONFIG`` or
``~/.kube/config``.
Every failure to connect becomes a :class:`scheduler.errors.ClusterError`
naming what was tried and how to fix it (:func:`explain` does the same for
an API call that fails later). Called by the executor; imports the
``kubernetes`` client, the ``k8s`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from scheduler.errors import ClusterError

#: Where a pod finds its service account's token, CA and namespace (in-cluster
#: configuration), unless ``$MRK8S_SERVICEACCOUNT_DIR`` names the directory: pods that
#: mrk8s creates set it to this same path, which changes nothing on a real kubelet and
#: lets the test cluster's node agent that runs pods as local processes (which maps a
#: volume's mountPath only in command, args and env values) point at the mounted token.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_ENV = "MRK8S_SERVICEACCOUNT_DIR"


def service_account_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """The mounted service-account directory when this process runs in a pod, else None."""
    directory = environ.get(SERVICE_ACCOUNT_ENV) or SERVICE_ACCOUNT_DIR
    if environ.get("KUBERNETES_SERVICE_HOST") and os.path.isfile(os.path.join(directory, "token")):
        return directory
    return None


def load_in_cluster(directory: str, configuration: Any, environ: Mapping[str, str]) -> None:
    """Fill ``configuration`` from the service account mounted at ``directory``."""
    from kubernetes.config.incluster_config import InClusterConfigLoader

    InClusterConfigLoader(
        token_filename=os.path.join(directory, "token"),
        cert_filename=os.path.join(directory, "ca.crt"),
        environ=environ,
    ).load_and_set(configuration)


def default_kubeconfig(environ: Mapping[str, str] = os.environ) -> str:
    """``$KUBECONFIG`` (its first file), else ``~/.kube/config`` (under ``$HOME``)."""
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return os.path.expanduser(listed[0])
    return os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".kube", "config")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A client configuration, where it came from, and the namespace it suggests."""

    configuration: Any  # kubernetes.client.Configuration
    #: "in-cluster (service account token in DIR)" or "kubeconfig PATH, context NAME".
    source: str
    #: In a pod, the pod's own namespace; else the chosen context's namespace, if any.
    namespace: str | None


def load(
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Credentials:
    """The credentials by the rule ``kubectl`` has (the one loader of the backend and of
    the commands): ``kubeconfig``/``context`` when given; else in a pod its service
    account; else ``$KUBECONFIG`` or ``~/.kube/config`` and its current context.
    ClusterError names what is missing or wrong, and the fix."""
    configuration = kubernetes.client.Configuration()
    directory = None if kubeconfig or context else service_account_dir(environ)
    if directory is not None:
        load_in_cluster(directory, configuration, environ)
        own = os.path.join(directory, "namespace")
        namespace = None
        if os.path.isfile(own):
            with open(own) as f:
                namespace = f.read().strip() or None
        return Credentials(
            configuration, f"in-cluster (service account token in {directory})", namespace
        )
    path = os.path.expanduser(kubeconfig) if kubeconfig else default_kubeconfig(environ)
    if not os.path.isfile(path):
        given = "--kubeconfig" if kubeconfig else "the default kubeconfig"
        raise ClusterError(
            f"{given} {path} does not exist, and this is not a pod in a cluster: pass "
            "--kubeconfig PATH (and --context NAME) naming your cluster, or set $KUBECONFIG"
        )
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(config_file=path)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"kubeconfig {path} cannot be used ({exc}): check the file") from exc
    chosen = next((c for c in contexts or [] if c["name"] == context), None) if context else current
    if chosen is None:
        names = ", ".join(c["name"] for c in contexts or []) or "(none)"
        raise ClusterError(
            f"cannot use kubeconfig {path}"
            + (f" with --context {context}" if context else " (it has no current context)")
            + f": its contexts are {names}; name one of its contexts with --context"
        )
    try:
        kubernetes.config.load_kube_config(
            config_file=path, context=chosen["name"], client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot use kubeconfig {path}, context {chosen['name']} ({exc}): check the file"
        ) from exc
    return Credentials(
        configuration,
        f"kubeconfig {path}, context {chosen['name']}",
        (chosen.get("context") or {}).get("namespace"),
    )


def api_client(credentials: Credentials) -> Any:
    """An ``ApiClient`` for ``credentials`` that fails fast when the server is down."""
    configuration = credentials.configuration
    # Fail fast when the server is down, rather than urllib3's default retries.
    configuration.retries = urllib3.Retry(total=2, connect=2, read=0, backoff_factor=0.2)
    configuration.connection_pool_maxsize = 8
    client = kubernetes.client.ApiClient(configuration)
    client.mrk8s_origin = credentials.source  # named in later error messages
    return client


def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Any:
    """An ``ApiClient`` for the cluster named by the options (see :func:`load`)."""
    try:
        credentials = load(kubeconfig, context, environ)
    except ClusterError as exc:
        raise ClusterError(f"--backend k8s: {exc}") from exc.__cause__
    return api_client(credentials)


def check_reachable(client: Any) -> None:
    """Ask the API server its version; ClusterError if it cannot be reached."""
    try:
        kubernetes.client.VersionApi(client).get_code(_request_timeout=15)
    except Exception as exc:
        raise explain(exc, client, "reach the API server") from exc


def explain(exc: BaseException, client: Any, doing: str, namespace: str = "") -> ClusterError:
    """A ClusterError saying what failed while ``doing`` something, and what to do."""
    host = client.configuration.host
    origin = getattr(client, "mrk8s_origin", "the configuration")
    if isinstance(exc, ApiException):
        if exc.status == 401:
            fix = "the credentials were refused: renew them (e.g. log in again)"
        elif exc.status == 403:
            fix = (
                f"the account has no right to {doing}"
                + (f" in namespace {namespace}" if namespace else "")
                + ": grant it the driver's Role of manifests/, or use another --context"
            )
        elif exc.status == 404 and namespace and "namespaces" in str(exc.body):
            fix = (
                f"namespace {namespace} does not exist: create it (kubectl apply -k "
                "manifests/ creates mrk8s's), or pass --namespace NS"
            )
        else:
            fix = f"the API server answered {exc.status} {exc.reason}: {_body(exc)}"
        return ClusterError(f"--backend k8s: cannot {doing} on {host} ({origin}): {fix}")
    return ClusterError(
        f"--backend k8s: cannot {doing}: the API server at {host} ({origin}) cannot be "
        f"reached ({type(exc).__name__}: {_short(exc)}): check that the cluster is up and "
        "that --kubeconfig/--context name it"
    )


def _body(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", exc.body))
    except (TypeError, ValueError):
        return str(exc.body)


def _short(exc: BaseException) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    return text if len(text) < 300 else text[:300] + "..."
