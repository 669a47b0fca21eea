"""northd.limits: a chassis' share of VIF reports and its rate (issue 19), on in-memory
databases and a manual clock."""

from __future__ import annotations

import logging

import pytest

from liveport.model.clock import ManualClock
from liveport.northd import limits
from liveport.northd.northd import Northd, plan

from tests.unit.test_northd_plan import ENCAP, Net


def flood(net: Net, chassis: str, count: int, prefix: str = "junk") -> None:
    for i in range(count):
        net.sb.insert("Chassis_VIF", chassis=chassis, iface_id=f"{prefix}{i:05d}")


def test_a_chassis_within_its_margin_is_not_limited() -> None:
    net = Net()
    flood(net, "hv3", limits.VIF_MARGIN - 1)
    assert limits.shares(net.nb.snapshot(), net.sb.snapshot()) == {}


def test_beyond_its_share_the_ports_of_the_nb_come_first_then_names() -> None:
    """hv3 reports 200 VIFs of no port and one for the NB port `free` (requested nowhere):
    northd keeps `free` and the 63 first names, whatever order they were written in."""
    net = Net()
    free = net.nb.insert("Logical_Switch_Port", name="free", addresses={"00:00:00:00:00:05"})
    net.nb.update("Logical_Switch", net.ls0, ports={net.vm1, free})
    flood(net, "hv3", 200)
    net.sb.insert("Chassis_VIF", chassis="hv3", iface_id="zzz-free")  # sorts last by name
    net.sb.insert("Chassis_VIF", chassis="hv3", iface_id="free")
    share = limits.shares(net.nb.snapshot(), net.sb.snapshot())["hv3"]
    assert share.reports == 202 and share.ports == 0 and share.limit == limits.VIF_MARGIN
    assert share.shed == 202 - limits.VIF_MARGIN
    assert "free" in share.kept and "zzz-free" not in share.kept
    assert sorted(share.kept - {"free"}) == [f"junk{i:05d}" for i in range(limits.VIF_MARGIN - 1)]


def test_reports_of_its_own_ports_always_count() -> None:
    """hv1 holds vm1 (requested there) and floods: its report of vm1 still binds vm1, while
    its reports of ports beyond its share change nothing."""
    net = Net()
    flood(net, "hv1", 500)
    nb, sb = net.nb.snapshot(), net.sb.snapshot()
    share = limits.shares(nb, sb)["hv1"]
    assert share.ports == 0  # no claim yet: vm1 is not bound
    written = net.port("vm1")
    assert written["chassis"] == "hv1"
    assert limits.shares(net.nb.snapshot(), net.sb.snapshot())["hv1"].ports >= 1


def test_a_port_reported_only_beyond_a_share_is_not_taken() -> None:
    """`free` has no requested chassis; hv3, over its share, reports it among 200 names
    that sort before it: northd ignores that report, so hv3 does not get the port."""
    net = Net()
    free = net.nb.insert("Logical_Switch_Port", name="zfree", addresses={"00:00:00:00:00:05"})
    net.nb.update("Logical_Switch", net.ls0, ports={net.vm1, free})
    flood(net, "hv3", 200)
    net.sb.insert("Chassis_VIF", chassis="hv3", iface_id="zfree")
    nb, sb = net.nb.snapshot(), net.sb.snapshot()
    # An NB port sorts before names that are no port: kept.
    assert "zfree" in limits.shares(nb, sb)["hv3"].kept
    # With a margin of NB ports ahead of it, it is shed.
    for i in range(limits.VIF_MARGIN):
        lsp = net.nb.insert("Logical_Switch_Port", name=f"p{i:03d}")
        ls = net.nb.snapshot().table("Logical_Switch")[net.ls0]
        net.nb.update("Logical_Switch", net.ls0, ports={*ls["ports"], lsp})
        net.sb.insert("Chassis_VIF", chassis="hv3", iface_id=f"p{i:03d}")
    nb, sb = net.nb.snapshot(), net.sb.snapshot()
    assert "zfree" not in limits.shares(nb, sb)["hv3"].kept
    batch = plan(nb, sb, frozenset(ENCAP), {("port", "zfree")})
    net.sb.transact(batch.sb_ops)
    pb = net.sb.find("Port_Binding", logical_port="zfree")
    assert net.sb.snapshot().table("Port_Binding")[pb]["chassis"] is None


def test_the_rate_defers_and_catches_up_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    net = Net()
    clock = ManualClock()
    limiter = limits.VifLimiter(clock)
    admitted = [limiter.admit("hv3", f"x{i}") for i in range(limits.VIF_BURST + 10)]
    assert admitted.count(True) == limits.VIF_BURST
    assert limiter.deferred_total == {"hv3": 10} and limiter.over_rate == {"hv3"}
    assert limiter.admit("hv2", "vm1")  # another chassis has its own bucket
    net.sb.insert("Chassis_VIF", chassis="hv3", iface_id="vm1")
    assert limiter.admit("hv3", "vm1") is False
    with caplog.at_level(logging.INFO, logger="liveport.northd"):
        ports, changed = limiter.due(net.nb.snapshot(), net.sb.snapshot())
        assert ports == set() and changed  # not yet a second: nothing caught up
        clock.advance(limits.CATCH_UP)
        ports, _ = limiter.due(net.nb.snapshot(), net.sb.snapshot())
        assert ports == {"vm1"}  # the remembered names that are ports
        assert limiter.admit("hv3", "vm1")  # a second refilled VIF_RATE tokens
        limiter.due(net.nb.snapshot(), net.sb.snapshot())
        clock.advance(3 * limits.CATCH_UP)
        _, changed = limiter.due(net.nb.snapshot(), net.sb.snapshot())
        assert changed and limiter.over_rate == set()
    warnings = [r for r in caplog.records if "more than its share" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert any("within its share again" in r.getMessage() for r in caplog.records)


def test_deferred_ports_are_capped() -> None:
    clock = ManualClock()
    limiter = limits.VifLimiter(clock)
    for i in range(limits.VIF_BURST + limits.DEFERRED_CAP + 5):
        limiter.admit("hv3", f"x{i}")
    assert limiter.deferred["hv3"] is None  # all of its ports at the next catch-up


def test_limited_text_round_trips() -> None:
    share = limits.Share("hv3", 500, 2, frozenset())
    text = limits.limited_text({"hv3": share}, {"hv2", "hv3"})
    assert text == "hv2: rate; hv3: share 66, rate"
    assert limits.parse_limited(text) == {"hv2": "rate", "hv3": "share 66, rate"}


def test_a_chassis_row_change_costs_its_ports_and_its_margin_only() -> None:
    """A change of a flooder's own Chassis row (or its liveness) recomputes the ports northd
    uses of it, not one per report it flooded. (Northd without its connections: only its
    limiter is needed here.)"""
    net = Net()
    flood(net, "hv3", 500)
    nb, sb = net.nb.snapshot(), net.sb.snapshot()
    northd = Northd.__new__(Northd)
    northd.limits = limits.VifLimiter(ManualClock())
    assert len(northd._chassis_keys(sb, "hv3")) == 500  # not yet judged
    northd.limits.reset(nb, sb)
    keys = northd._chassis_keys(sb, "hv3")
    assert len(keys) == limits.VIF_MARGIN and keys == {
        ("port", p) for p in northd.limits.shares["hv3"].kept
    }
