"""The liveport-vs-OVN report (liveport.lab.comparison) and the engine-neutral owner watch
(liveport.lab.owners): ratios, verdicts, the table, the JSON, and owner changes counted
from hand-built snapshots of both engines' southbound databases."""

from __future__ import annotations

import json
import math
import uuid

import pytest

from liveport.cli import bench as bench_cli
from liveport.cli.main import build_parser
from liveport.lab import compare, compare_sg
from liveport.lab.compare_sg import SgConfig, SgResults
from liveport.lab.comparison import Figure, format_value, render_table, report_json, tally
from liveport.lab.owners import (
    OVN_ACTIVATED,
    OwnerHistory,
    empty_blips,
    owner_changes,
    same_owner_blips,
)
from liveport.model.errors import InvalidInput, Timeout
from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import Row, Snapshot

# ----- ratios, verdicts, table, JSON --------------------------------------------------------


def test_ratio_and_verdict_follow_the_direction() -> None:
    faster = Figure("s", "latency", 1.0, 4.0, "ms")
    assert faster.ratio == 0.25 and faster.winner == "liveport"
    slower = Figure("s", "latency", 3.0, 1.5, "ms")
    assert slower.ratio == 2.0 and slower.winner == "OVN"  # OVN's wins are reported
    more = Figure("s", "throughput", 3.0, 1.5, better="higher")
    assert more.winner == "liveport"
    assert Figure("s", "equal", 2.0, 2.0).winner == "tie"


def test_ratio_is_undefined_where_it_means_nothing() -> None:
    assert Figure("s", "lost", 1.0, 0.0).ratio is None  # OVN at 0
    assert Figure("s", "lost", 1.0, 0.0).winner == "OVN"
    assert Figure("s", "x", None, 1.0).ratio is None
    assert Figure("s", "x", None, 1.0).winner == "-"
    never = Figure("s", "announcement -> delivery", 2.0, math.inf, "ms")
    assert never.ratio is None and never.winner == "liveport"
    info = Figure("s", "owner changes", 1.0, 2.0, better="info")
    assert info.ratio is None and info.winner == "-"


def test_yes_no_figures() -> None:
    assert Figure("s", "activates", True, False, better="yes").winner == "liveport"
    assert Figure("s", "activates", False, True, better="yes").winner == "OVN"
    assert Figure("s", "activates", True, True, better="yes").winner == "tie"
    assert Figure("s", "activates", True, False, better="yes").ratio is None
    assert format_value(True) == "yes" and format_value(math.inf, "ms") == "never"


def test_table_has_every_figure_with_both_values_ratio_and_verdict() -> None:
    figures = [
        Figure("migration", "gap", 0.5, 2.0, "ms", liveport_text="0.1 / 0.5 / 1 ms"),
        Figure("migration", "handover recorded", 6.0, 2.0, "ms", note="different events"),
        Figure("bind", "1000 ports: bound", 1000.0, 1000.0, "ms"),
    ]
    table = render_table(figures)
    lines = table.splitlines()
    assert lines[0] == "== migration" and "== bind" in lines
    gap = next(line for line in lines if line.startswith("gap"))
    assert "0.1 / 0.5 / 1 ms" in gap and "2.00 ms" in gap and "0.25x" in gap
    assert gap.rstrip().endswith("liveport")
    recorded = next(line for line in lines if line.startswith("handover recorded"))
    assert "3.00x" in recorded and recorded.rstrip().endswith("OVN")
    assert "   (different events)" in lines
    assert lines[-1].startswith("better: liveport in 1, OVN in 1, tie in 1, no verdict in 0 of 3")
    assert tally(figures) == {"liveport": 1, "OVN": 1, "tie": 1, "-": 0}


def test_json_report_round_trips() -> None:
    figures = [Figure("m", "gap", 0.5, 2.0, "ms"), Figure("g", "activates", True, False, "", "yes")]
    doc = report_json(
        figures,
        machine={"cores": 2},
        config={"runs": 20},
        fairness=["same lab"],
        raw={"bind": []},
    )
    back = json.loads(json.dumps(doc))
    assert back["tally"] == {"liveport": 2, "OVN": 0, "tie": 0, "-": 0}
    assert back["figures"][0] == {
        "section": "m",
        "name": "gap",
        "unit": "ms",
        "better": "lower",
        "liveport": 0.5,
        "ovn": 2.0,
        "liveport_text": "0.50 ms",
        "ovn_text": "2.00 ms",
        "ratio": 0.25,
        "winner": "liveport",
        "note": "",
    }
    assert back["figures"][1]["ratio"] is None and back["figures"][1]["ovn_text"] == "no"
    assert back["machine"] == {"cores": 2} and back["fairness"] == ["same lab"]


# ----- owner changes from snapshots --------------------------------------------------------

HV1, HV2 = uuid.uuid4(), uuid.uuid4()
PB = uuid.uuid4()


def ovn_snapshot(seqno: int, chassis: uuid.UUID | None, activated: str = "") -> Snapshot:
    """OVN's SB: Port_Binding.chassis refers to a Chassis row."""
    options = {OVN_ACTIVATED: activated} if activated else {}
    rows = {
        "Chassis": {
            HV1: Row(HV1, "Chassis", FrozenMap({"name": "hv1"})),
            HV2: Row(HV2, "Chassis", FrozenMap({"name": "hv2"})),
        },
        "Port_Binding": {
            PB: Row(
                PB,
                "Port_Binding",
                FrozenMap(
                    {"logical_port": "vm1", "chassis": chassis, "options": FrozenMap(options)}
                ),
            )
        },
    }
    return Snapshot(seqno, rows, connected=True)


def liveport_snapshot(seqno: int, chassis: str | None) -> Snapshot:
    """liveport's SB: Port_Binding.chassis is the chassis name."""
    row = Row(PB, "Port_Binding", FrozenMap({"logical_port": "vm1", "chassis": chassis}))
    return Snapshot(seqno, {"Port_Binding": {PB: row}}, connected=True)


def test_ovn_owner_changes_resolve_chassis_references() -> None:
    history = OwnerHistory("ovn", ["vm1"])
    history.observe(ovn_snapshot(1, HV1), at=1.0)
    history.observe(ovn_snapshot(2, HV1), at=2.0)  # nothing changed: not recorded
    history.observe(ovn_snapshot(3, HV1, activated="hv2"), at=3.0)  # activation, same owner
    history.observe(ovn_snapshot(4, None), at=4.0)  # completion emptied the binding
    history.observe(ovn_snapshot(5, HV2), at=5.0)
    assert history.owners("vm1") == ["hv1", None, "hv2"]
    assert history.owner_changes("vm1") == 2
    assert history.empty_blips("vm1") == 1
    assert history.handover_at("vm1", "hv2") == 3.0  # additional-chassis-activated
    assert history.first_owner_at("vm1", "hv2") == 5.0
    # Since t=3.5: the state in force then (hv1) counts as the start.
    assert history.owners("vm1", since=3.5) == ["hv1", None, "hv2"]
    assert history.owners("vm1", since=4.5) == [None, "hv2"]


def test_ovn_flapping_counts_every_change() -> None:
    history = OwnerHistory("ovn", ["vm1"])
    for i in range(9):
        history.observe(ovn_snapshot(i + 1, HV1 if i % 2 == 0 else HV2), at=float(i))
    assert history.owner_changes("vm1") == 8
    assert history.owner_changes("vm1", since=4.0) == 5  # at t = 4, 5, 6, 7 and 8


def test_liveport_owner_is_the_name_and_binding_is_the_handover() -> None:
    history = OwnerHistory("liveport", ["vm1"])
    history.observe(liveport_snapshot(1, "hv1"), at=1.0)
    history.observe(liveport_snapshot(2, "hv2"), at=2.0)
    assert history.owners("vm1") == ["hv1", "hv2"]
    assert history.owner_changes("vm1") == 1 and history.empty_blips("vm1") == 0
    assert history.handover_at("vm1", "hv2") == 2.0
    other = OwnerHistory("liveport", ["peer"])
    other.observe(liveport_snapshot(1, "hv1"), at=1.0)
    assert other.owners("vm1") == []  # unwatched ports are ignored


def test_owner_sequence_helpers() -> None:
    assert owner_changes(["hv1", "hv1", "hv2"]) == 1
    assert owner_changes([]) == 0
    assert empty_blips(["hv1", None, "hv2", None, "hv2"]) == 2
    assert same_owner_blips(["hv1", None, "hv2", None, "hv2"]) == 1
    assert empty_blips([None, "hv1"]) == 0  # unbound at the start is not a blip


# ----- the command line and its configuration ------------------------------------------------


def test_bench_compare_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        ["bench", "compare", "--runs", "3", "--bind-sizes", "1,10", "--unplug-first"]
    )
    assert args.func is bench_cli.cmd_bench_compare
    assert (args.runs, args.bind_sizes, args.unplug_first) == (3, "1,10", True)
    monkeypatch.setenv(compare.RUNS_ENV, "7")
    assert compare.default_runs() == 7
    monkeypatch.setenv(compare.RUNS_ENV, "many")
    with pytest.raises(InvalidInput, match="LIVEPORT_COMPARE_RUNS"):
        compare.default_runs()
    with pytest.raises(InvalidInput, match="--runs"):
        compare.Config(runs=0).check()
    with pytest.raises(InvalidInput, match="--bind-sizes"):
        bench_cli._sizes("1,lots")


def test_bench_compare_only_selects_parts() -> None:
    args = build_parser().parse_args(
        ["bench", "compare", "--only", "sg", "--sg-sizes", "10,100", "--sg-connections", "5"]
    )
    assert bench_cli._parts(args.only) == ("sg",)
    assert bench_cli._parts(None) == compare.PARTS
    assert bench_cli._sizes(args.sg_sizes, "--sg-sizes") == (10, 100)
    cfg = compare.Config(parts=("sg",))
    assert cfg.runs_part("sg") and not cfg.runs_part("migrations")
    # Only the fairness notes of what ran.
    notes = compare.fairness(cfg)
    assert not any(n.startswith("Migrations are interleaved") for n in notes)
    assert any(n.startswith("Security groups, migration") for n in notes)
    with pytest.raises(InvalidInput, match="--only"):
        compare.Config(parts=("sg", "everything")).check()
    with pytest.raises(InvalidInput, match="--sg-sizes"):
        compare.Config(sg=SgConfig(sizes=(0,))).check()


# ----- security groups: figures, and what could not be measured --------------------------------


def sg_bind(engine: str, ports: int, **extra: object) -> dict[str, object]:
    return {
        "engine": engine,
        "ports": ports,
        "bound_s": 0.5,
        "up_s": 1.0,
        "flows": 4000,
        "chassis_daemon_mb": 60.0,
        "northd_mb": 50.0,
        "sb_mb": 10.0,
        "join_s": [0.1, 0.2, 0.3],
        **extra,
    }


def test_security_group_figures_say_what_was_not_measured_and_why() -> None:
    res = SgResults(SgConfig(connections=20, sizes=(100, 1000)))
    res.carried = {
        "liveport": {
            "engine": "liveport",
            "connections": 20,
            "remote_first": 20,
            "vm_then": 20,
            "remote_again": 20,
            "before_activation": 0,
            "forbidden_at_destination": 0,
            "published_s": 0.03,
        },
        "ovn": {"engine": "ovn", "connections": 20, "error": "the migration failed: boom"},
    }
    res.binds = [
        sg_bind("liveport", 100),
        sg_bind("ovn", 100),
        sg_bind("liveport", 1000),
        {"engine": "ovn", "ports": 1000, "error": "1000 ports did not finish (timed out)"},
    ]
    figures = {f.name: f for f in compare_sg.figures(res)}
    first = figures["delivered at D when the remote speaks first (within 2 s)"]
    assert (first.text("liveport"), first.text("ovn")) == ("20 of 20", "not measured")
    assert "ovn: the migration failed: boom" in first.note
    assert first.winner == "-"  # no verdict without OVN's value
    ok = figures["100 ports: all bound (SB)"]
    assert (ok.liveport, ok.ovn, ok.winner) == (500.0, 500.0, "tie")
    big = figures["1000 ports: all up (NB)"]
    assert big.liveport == 1000.0 and big.ovn is None and big.text("ovn") == "not measured"
    assert "did not finish" in big.note and "largest size measured: 100 ports" in big.note
    joins = figures[
        "100 ports: a port joins the group -> --wait=hv sync returned (min / med / max)"
    ]
    assert joins.text("liveport") == "100 / 200 / 300 ms" and joins.liveport == 200.0
    table = render_table(compare_sg.figures(res))
    assert "== security groups: 1000 ports" in table
    doc = json.loads(
        json.dumps(
            report_json(
                list(figures.values()), machine={}, config={}, fairness=[], raw=res.to_json()
            )
        )
    )
    assert doc["raw"]["bind"][3]["error"].startswith("1000 ports did not finish")


def test_a_size_that_does_not_finish_is_reported_and_larger_ones_are_not_attempted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bound(engine: str, n: int, cfg: SgConfig) -> dict[str, object]:
        if engine == "ovn" and n >= 100:
            raise Timeout("timed out after 300s waiting for all 100 ports up")
        return sg_bind(engine, n)

    def carried(engine: str, cfg: SgConfig, form: object) -> dict[str, object]:
        raise RuntimeError("ovsdbapp\nlost its connection")

    monkeypatch.setattr(compare_sg, "bound", bound)
    monkeypatch.setattr(compare_sg, "carried", carried)
    lines: list[str] = []
    res = compare_sg.run(SgConfig(sizes=(1000, 10, 100)), lines.append)
    assert res.carried["ovn"]["error"] == "RuntimeError: ovsdbapp lost its connection"
    ovn = [b for b in res.binds if b["engine"] == "ovn"]
    assert [b["ports"] for b in ovn] == [10, 100, 1000]  # smallest first
    assert "error" not in ovn[0]
    assert str(ovn[1]["error"]).startswith("100 ports did not finish (timed out after 300s")
    assert str(ovn[2]["error"]).startswith("not attempted: 100 ports did not finish")
    assert len([b for b in res.binds if b["engine"] == "liveport" and "error" not in b]) == 3
    up = next(f for f in compare_sg.figures(res) if f.name == "1000 ports: all up (NB)")
    assert up.text("ovn") == "not measured" and "largest size measured: 10 ports" in up.note
    assert any("100 ports did not finish" in line for line in lines)
