"""The provider-network part of the comparison (liveport.lab.compare_provider) without a
lab: its figures from hand-made runs (what an engine that failed shows), the longest hole
at the destination, and its options on the command line."""

from __future__ import annotations

import json

import pytest

from liveport.cli import bench as bench_cli
from liveport.cli.main import build_parser
from liveport.lab import analysis, compare, compare_provider
from liveport.lab.compare_provider import ProviderConfig, ProviderResults, longest_hole
from liveport.lab.comparison import render_table, report_json
from liveport.lab.traffic import Sent
from liveport.model.errors import InvalidInput


def run(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "source": "hv1",
        "destination": "hv3",
        "announce_to_delivery_ms": 3.0,
        "handoff_gap_ms": 4.0,
        "lost_at_announcement": 0,
        "lost_at_announcement_went": {"to_source": 0, "to_destination": 0, "neither": 0},
        "lost_running": 70,
        "lost_after_handover": 0,
        "leaked": 0,
        "tor_learned_ms": 2.0,
        "stale_last_ms": 1.5,
        "stale_to_source": 2,
        "stale_after_learned": 0,
        "mac_from_destination_before_announcement": 0,
        "mac_back_to_source_after_learned": 0,
        "mac_moves": 1,
        "fdb_moves": 1,
        "fdb_at_destination_before_announcement": 0,
        "fdb_source_after_ms": 0.0,
    }
    doc.update(extra)
    return doc


NAMES = [
    "announcement at D -> first delivery at D (min / med / max)",
    "handoff gap (last at S -> first at D) (min / med / max)",
    "lost if the source pauses at the announcement (min / med / max)",
    "the same, all runs: where the ToR had sent them",
    "datagrams lost running (the emulated 20 ms pause) (min / med / max)",
    "lost at D after the handover (min / med / max)",
    "runs with deliveries to D before the announcement",
    "announcement at D -> ToR gets P's MAC from D's trunk (min / med / max)",
    "ToR still sent P's datagrams to S after the announcement: last at (min / med / max)",
    "ToR still sent P's datagrams to S after the announcement (min / med / max)",
    "runs where the ToR sent P's datagrams to S after learning P behind D",
    "runs with P's MAC from D's trunk before the announcement",
    "runs with P's MAC from S's trunk after the ToR learned D",
    "moves of P's MAC between trunks per run (min / med / max)",
    "moves of P's entry in the ToR's table per run (min / med / max)",
    "runs where the ToR's table had P behind D before the announcement",
    "ToR's table still had P behind S after the announcement: last sample at (min / med / max)",
]


def test_provider_figures_compare_both_engines_run_by_run() -> None:
    res = ProviderResults(ProviderConfig(runs=2))
    res.runs = {
        "liveport": [run(), run(announce_to_delivery_ms=5.0, stale_to_source=4)],
        "ovn": [
            run(announce_to_delivery_ms=9.0),
            run(mac_back_to_source_after_learned=1, mac_moves=3, stale_after_learned=6),
        ],
    }
    figures = compare_provider.figures(res)
    assert [f.name for f in figures] == NAMES
    by = {f.name: f for f in figures}
    gap = by[NAMES[0]]
    assert (gap.liveport, gap.ovn, gap.winner) == (4.0, 6.0, "liveport")
    assert gap.text("liveport") == "3 / 4 / 5 ms"
    assert "median <= 5 ms" in gap.note
    stale = by["runs where the ToR sent P's datagrams to S after learning P behind D"]
    assert (stale.text("liveport"), stale.text("ovn")) == (
        "0 of 2 (max 0 pkts)",
        "1 of 2 (max 6 pkts)",
    )
    assert stale.winner == "liveport"
    where = by["the same, all runs: where the ToR had sent them"]
    assert where.text("ovn") == "S 0, D 0, neither 0" and where.winner == "-"
    moves = by["moves of P's MAC between trunks per run (min / med / max)"]
    assert moves.winner == "-" and moves.text("ovn") == "1 / 2 / 3"  # information, no verdict
    assert "== provider network: ext100 on VLAN 100" in render_table(figures)
    json.dumps(report_json(figures, machine={}, config={}, fairness=[], raw=res.to_json()))


def test_an_engine_that_failed_is_not_measured_with_its_reason() -> None:
    res = ProviderResults(ProviderConfig(runs=1))
    res.runs = {"liveport": [run()], "ovn": []}
    res.errors = {"ovn": "the warm-up migration failed: hv3 did not become ready"}
    figures = compare_provider.figures(res)
    assert all(f.text("liveport") != "not measured" for f in figures)
    assert all(f.text("ovn") == "not measured" and f.winner == "-" for f in figures)
    assert all("ovn: the warm-up migration failed" in f.note for f in figures)


def test_the_longest_hole_at_the_destination_says_where_datagrams_went_missing() -> None:
    sent = [Sent(seq, 100.0 + seq / 1000) for seq in range(1, 21)]
    got = [analysis.Delivery(seq, 100.0 + seq / 1000, "hv1") for seq in range(1, 6)]
    got += [
        analysis.Delivery(seq, 100.001 + seq / 1000, "hv3")
        for seq in (6, 7, 9, 10, 11, 16, 17, 18, 19, 20)
    ]
    zero = 100.0055  # the announcement, between datagrams 5 and 6
    assert longest_hole(sent, got, "hv3", zero) == {
        "datagrams": 4,  # 12..15 (8 alone is a hole of one)
        "sent_ms": pytest.approx(6.5),
    }
    assert longest_hole(sent, got[:5], "hv3", zero) is None  # nothing at D
    assert longest_hole(sent, got, "hv3", None) is None
    whole = [analysis.Delivery(s.seq, s.at, "hv3") for s in sent]
    assert longest_hole(sent, whole, "hv3", 99.0) == {"datagrams": 0, "sent_ms": None}


def test_bench_compare_has_the_provider_part_and_its_options() -> None:
    args = build_parser().parse_args(
        [
            "bench",
            "compare",
            "--only",
            "provider",
            "--provider-runs",
            "3",
            "--provider-keep-tor-flows",
        ]
    )
    assert bench_cli._parts(args.only) == ("provider",)
    assert (args.provider_runs, args.provider_keep_tor_flows) == (3, True)
    assert "provider" in compare.PARTS
    cfg = compare.Config(parts=("provider",), provider=ProviderConfig(purge_tor_flows=False))
    assert "provider network (5 migrations each" in bench_cli._headline(cfg.check())
    notes = compare.fairness(cfg)
    assert any(n.startswith("Provider network: both engines") for n in notes)
    assert any("cache is kept between runs" in n for n in notes)
    assert not any(n.startswith("Security groups") for n in notes)
    assert any(n.startswith("Migrations are interleaved") for n in notes)
    with pytest.raises(InvalidInput, match="--provider-runs"):
        compare.Config(provider=ProviderConfig(runs=0)).check()
    with pytest.raises(InvalidInput, match="--vlan"):
        ProviderConfig(vlan=4095).check()
