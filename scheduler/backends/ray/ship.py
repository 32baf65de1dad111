"""Shipping the job script's directory to a Ray cluster (see :mod:`scheduler.ship`).

The packing is backend-neutral and lives in :mod:`scheduler.ship`; this
module keeps the Ray executor's and actors' imports and names ``--backend
ray`` and ``$MRK8S_RAY_SHIP_LIMIT`` in the too-large error.
"""

from __future__ import annotations

from scheduler.ship import DEFAULT_LIMIT, EXCLUDES, Package, ShipTooLargeError, pack, unpack
from scheduler.ship import measure as _measure

__all__ = [
    "DEFAULT_LIMIT",
    "EXCLUDES",
    "Package",
    "ShipTooLargeError",
    "measure",
    "pack",
    "unpack",
]


def measure(directory: str, limit: int = DEFAULT_LIMIT) -> Package:
    """The package of ``directory`` for Ray; :class:`ShipTooLargeError` past ``limit`` bytes."""
    return _measure(directory, limit, backend="ray", limit_env="MRK8S_RAY_SHIP_LIMIT")
