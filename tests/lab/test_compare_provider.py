"""The provider-network part of `liveport bench compare` (liveport.lab.compare_provider)
with one run on both engines: every figure is there, the raw results are complete, and
liveport's correctness figures hold: nothing reached the destination before the
announcement, P's MAC reached the physical network from D only with the announcement and
never again from S, and every datagram lost at the handover is accounted for by where the
ToR sent it. Timings are the benchmark's business, not this test's; OVN's behaviour is
measured, not judged.

"Lost if the source pauses at the announcement" is not asserted to be 0: at 1000
datagrams/s a few (0-3 per run here, for both engines) are on their way to S while the
ToR has not yet learned P behind D, or reach D while its datapath replaces the blocking
flows; liveport's source drops what the physical network still sends it after the
activation. docs/benchmarks.md reports the figure against the issue's goal of 0."""

from __future__ import annotations

import json

import pytest

from liveport.lab import compare_provider
from liveport.lab.compare_provider import ProviderConfig
from liveport.lab.comparison import render_table, report_json

pytestmark = [pytest.mark.lab, pytest.mark.slow]

COUNTS = (
    "sent",
    "lost_at_announcement",
    "lost_running",
    "leaked",
    "mac_moves",
    "mac_from_destination_before_announcement",
    "mac_back_to_source_after_learned",
    "stale_to_source",
    "stale_after_learned",
    "fdb_samples",
    "fdb_moves",
)


def test_one_provider_migration_on_each_engine() -> None:
    lines: list[str] = []
    res = compare_provider.run(ProviderConfig(runs=1), lines.append)

    assert res.errors == {}
    for engine in ("liveport", "ovn"):
        (r,) = res.runs[engine]
        assert (r["source"], r["destination"]) == ("hv3", "hv1")  # after the warm-up
        assert all(type(r[key]) is int for key in COUNTS), (engine, r)
        assert r["sent"] > 100
        assert r["fdb_error"] is None and r["fdb_samples"] > 10
        assert isinstance(r["announce_to_delivery_ms"], float), engine
        assert isinstance(r["tor_learned_ms"], float), engine  # P's announcement left D
        # The ToR received P's MAC from both trunks: from S (P spoke first), then from D.
        assert r["mac_frames"][0][1] == "hv3" and r["mac_moves"] >= 1, r["mac_frames"]
    lp = res.runs["liveport"][0]
    assert lp["leaked"] == 0, "liveport delivered at the destination before the announcement"
    assert lp["mac_from_destination_before_announcement"] == 0  # no flapping before it
    assert lp["mac_back_to_source_after_learned"] == 0  # nor after
    went = lp["lost_at_announcement_went"]
    assert sum(went.values()) == lp["lost_at_announcement"] and went["neither"] == 0, lp

    figures = compare_provider.figures(res)
    assert len(figures) == 17
    assert not any("not measured" in (f.text("liveport"), f.text("ovn")) for f in figures)
    assert "== provider network" in render_table(figures)
    json.dumps(report_json(figures, machine={}, config={}, fairness=[], raw=res.to_json()))
    assert any("liveport provider migration 1/1 hv3 -> hv1" in line for line in lines)
