"""``bench/shuffle_server.py`` end to end at a tiny size: a real server, every read verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import shuffle_server

pytestmark = pytest.mark.timeout(120)


def test_every_contestant_reads_every_segment_and_is_summarised(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = ["--size-mib", "2", "--segment-kib", "64,1024", "--repeat", "2", "--json", str(out)]
    assert shuffle_server.main(argv) == 0
    rows = json.loads(out.read_text())["results"]
    contestants = {r["contestant"] for r in rows}
    assert {"local", "mrk8s-http"} <= contestants
    assert {(r["contestant"], r["segment_bytes"]) for r in rows} == {
        (c, kib << 10) for c in contestants for kib in (64, 1024)
    }
    for r in rows:
        assert r["verified"] is True
        assert len(r["seconds"]) == 2
        assert r["segments"] == (2 << 20) // r["segment_bytes"]
        assert r["median_mb_per_s"] > 0
