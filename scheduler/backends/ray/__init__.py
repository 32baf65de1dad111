"""The Ray backend (``--backend ray``): worker actors, per-node readers, shipping.

Imported only through the registry in :mod:`scheduler.backends`, never by
``import mrk8s`` or the local backend: this is the one room where ``ray`` is
imported. ``executor`` runs stages on worker actors; ``actors`` holds the
worker and reader actor classes; ``nodefs`` reads other nodes' map outputs
through their readers; ``ship`` packs the job script's directory for a
remote cluster.
"""

from __future__ import annotations

from scheduler.backends.ray.executor import RayExecutor

__all__ = ["RayExecutor"]
