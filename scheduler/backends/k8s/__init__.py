"""The Kubernetes backend (``--backend k8s``): a job's stages as Indexed Jobs.

Imported through the registry in :mod:`scheduler.backends` as
``executor:KubernetesExecutor``; this package's ``__init__`` imports nothing,
so that :mod:`names` and :mod:`indexmap` (shared with ``mrk8s worker`` and
the commands) load without the ``kubernetes`` client. The rooms:
``names`` (names and labels of every object), ``indexmap`` (which tasks a
Job runs), ``render`` (manifests as dicts), ``client`` (connecting, clear
errors), ``watch`` (list-then-watch), ``podlog`` (a failed pod's message),
``executor`` (stages as Jobs).
"""
