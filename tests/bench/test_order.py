"""Tests for bench.order: the order contestants run in, run by run."""

from __future__ import annotations

from bench.order import run_order


def test_every_run_has_every_contestant_and_orders_vary() -> None:
    names = [f"c{i}" for i in range(7)]
    orders = [run_order(names, run) for run in range(1, 7)]
    assert orders[0] == names
    assert all(sorted(order) == names for order in orders)
    assert run_order(names, 3) == orders[2]  # the same order on a rerun
    # What runs right before "c4": not the same contestant in every run.
    before = {order[order.index("c4") - 1] for order in orders if order[0] != "c4"}
    assert len(before) > 1
