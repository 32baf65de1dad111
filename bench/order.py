"""The order contestants run in, run by run, for the comparisons in ``bench/``."""

from __future__ import annotations

import random
from collections.abc import Sequence

#: Fixed, so a rerun of a comparison repeats its order.
ORDER_SEED = 20261123


def run_order(names: Sequence[str], run: int) -> list[str]:
    """``names`` in the order of run ``run`` (1-based): a fresh shuffle each run.

    Run 1 keeps the given order. Later runs are shuffled (seeded by the run
    number), so no contestant always runs first or always right after the
    same other one. A rotation does neither of the latter: rotated by one,
    each contestant still follows its predecessor in every run but one, and
    on these VMs what ran just before matters (a job that follows 50 s of
    full load on both cores runs slower).
    """
    order = list(names)
    if run > 1:
        random.Random(ORDER_SEED + run).shuffle(order)
    return order
