"""The security-group part of `liveport bench compare` (liveport.lab.compare_sg) at a tiny
size, liveport's engine only: every figure is there and the counts are integers. Whether
liveport behaves rightly is tests/lab/test_security_groups.py's business."""

from __future__ import annotations

import json

import pytest

from liveport.lab import compare_sg
from liveport.lab.compare_sg import SgConfig
from liveport.lab.comparison import render_table, report_json

pytestmark = [pytest.mark.lab, pytest.mark.slow]

COUNTS = (
    "remote_first",
    "vm_then",
    "remote_again",
    "before_activation",
    "forbidden_sent",
    "forbidden_at_destination",
    "forbidden_at_source",
)


def test_the_security_group_comparison_measures_every_figure_for_liveport() -> None:
    cfg = SgConfig(connections=2, sizes=(3,), wait_s=1.0, timeout_s=60.0, joins=1)
    lines: list[str] = []
    res = compare_sg.run(cfg, lines.append, engines=("liveport",))

    carried = res.carried["liveport"]
    assert "error" not in carried, carried.get("error")
    assert all(type(carried[key]) is int for key in COUNTS), carried
    assert 0 <= carried["remote_first"] <= 2
    assert isinstance(carried["published_s"], float)
    (bind,) = res.binds
    assert (bind["engine"], bind["ports"]) == ("liveport", 3)
    assert type(bind["flows"]) is int and bind["flows"] > 0
    assert all(isinstance(bind[k], float) for k in ("bound_s", "up_s", "chassis_daemon_mb"))
    assert len(bind["join_s"]) == 1

    figures = compare_sg.figures(res)
    names = [f.name for f in figures]
    assert names == [
        "delivered at D when the remote speaks first (within 1 s)",
        "then the VM speaks, then the remote: delivered at D",
        "packets delivered at D before activation",
        "datagrams the ACLs forbid delivered at D",
        "CMS start -> source published the connections",
        "3 ports: all bound (SB)",
        "3 ports: all up (NB)",
        "3 ports: OpenFlow flows in hv1's br-int",
        "3 ports: chassis daemon RSS",
        "3 ports: northd RSS",
        "3 ports: SB ovsdb-server RSS",
        "3 ports: a port joins the group -> --wait=hv sync returned (min / med / max)",
    ]
    assert all(f.liveport is not None for f in figures)
    assert all(f.text("ovn") in ("not measured", "-") for f in figures)  # OVN did not run
    assert "ovn: not run" in figures[0].note
    assert "security groups" in render_table(figures)
    json.dumps(report_json(figures, machine={}, config={}, fairness=[], raw=res.to_json()))
    assert any("2 of 2" in line or "of 2 delivered" in line for line in lines)
