"""What packets do in the compiled flow table of one chassis (no switch needed)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveport.model import cookies, packets
from liveport.model.addr import Mac
from liveport.model.binding import claim_report
from liveport.model.compiler import Dirty, compile_table
from liveport.model.cookies import Kind
from liveport.model.flows import Flow, FlowError, FlowSet, apply_diff, diff, match
from liveport.model.flowsim import Switch, packet_fields
from liveport.model.logical import Strategy
from liveport.model.pipeline import (
    FLOOD_CHUNK,
    ChassisView,
    LocalVif,
    PortView,
    Table,
    check_flow,
    compile_flows,
    duplicate_macs,
    parse_activation_userdata,
)
from liveport.openflow.encode import flow_mod

M = {n: Mac.parse(f"00:00:00:00:00:{n:02x}") for n in range(1, 32)}
IP = {n: ipaddress.IPv4Address(f"10.0.0.{n}") for n in range(1, 32)}
TUN = {"hv1": 101, "hv2": 102, "hv3": 103}


def port(n: int, owner: str | None, dp: int = 1, **kw: Any) -> PortView:
    return PortView(
        name=f"vm{n}", dp_key=dp, key=n, addresses=(f"{M[n]} {IP[n]}",), owner=owner, **kw
    )


def view(me: str, ports: list[PortView], vifs: dict[str, int], **kw: object) -> ChassisView:
    return ChassisView(
        chassis=me,
        vifs={name: LocalVif(name, ofport) for name, ofport in vifs.items()},
        tunnels={c: p for c, p in TUN.items() if c != me},
        ports={p.name: p for p in ports},
        **kw,  # type: ignore[arg-type]
    )


def udp(src: int, dst_mac: Mac, dst_ip: int = 9, *, src_mac: Mac | None = None) -> bytes:
    return packets.udp_seq(src_mac or M[src], dst_mac, IP[src], IP.get(dst_ip, IP[1]), 1)


NET = [port(1, "hv1"), port(2, "hv2"), port(3, "hv3")]


def test_unicast_goes_through_the_tunnel_to_the_owner() -> None:
    sw = Switch(compile_flows(view("hv1", NET, {"vm1": 1})))
    res, _ = sw.process(packet_fields(udp(1, M[2]), in_port=1))
    assert res.outputs == (TUN["hv2"],) and res.tunnel_ids == (1,)


def test_tunnel_traffic_is_delivered_locally_and_never_re_tunnelled() -> None:
    sw = Switch(compile_flows(view("hv1", NET, {"vm1": 1})))
    res, _ = sw.process(packet_fields(udp(2, M[1]), in_port=TUN["hv2"], tunnel_id=1))
    assert res.outputs == (1,)
    res, _ = sw.process(packet_fields(udp(2, M[3]), in_port=TUN["hv2"], tunnel_id=1))
    assert res.outputs == ()  # split horizon
    res, _ = sw.process(packet_fields(packets.garp(M[2], IP[2]), in_port=TUN["hv2"], tunnel_id=1))
    assert res.outputs == (1,)  # flood from a tunnel: local ports only


def test_broadcast_reaches_every_other_port_of_the_switch_only() -> None:
    ports = [*NET, port(4, "hv1"), port(5, "hv1", dp=2)]
    sw = Switch(compile_flows(view("hv1", ports, {"vm1": 1, "vm4": 4, "vm5": 5})))
    res, _ = sw.process(packet_fields(packets.garp(M[1], IP[1]), in_port=1))
    assert sorted(res.outputs) == sorted([4, TUN["hv2"], TUN["hv3"]])
    assert 5 not in res.outputs and 1 not in res.outputs


def test_spoofed_source_mac_and_ip_are_dropped() -> None:
    sw = Switch(compile_flows(view("hv1", NET, {"vm1": 1})))
    res, _ = sw.process(packet_fields(udp(1, M[2], src_mac=M[7]), in_port=1))
    assert res.outputs == ()
    spoofed_ip = packets.udp_seq(M[1], M[2], IP[7], IP[2], 1)
    res, _ = sw.process(packet_fields(spoofed_ip, in_port=1))
    assert res.outputs == ()
    bad_arp = packets.arp_request(M[1], IP[7], IP[2])
    res, _ = sw.process(packet_fields(bad_arp, in_port=1))
    assert res.outputs == ()
    good_arp = packets.arp_request(M[1], IP[1], IP[2])
    res, _ = sw.process(packet_fields(good_arp, in_port=1))
    assert sorted(res.outputs) == sorted([TUN["hv2"], TUN["hv3"]])


def test_port_security_overrides_addresses() -> None:
    p = PortView("vm1", 1, 1, (f"{M[1]} {IP[1]}",), (f"{M[1]} 10.0.0.0/24",), owner="hv1")
    sw = Switch(compile_flows(view("hv1", [p, NET[1]], {"vm1": 1})))
    res, _ = sw.process(packet_fields(packets.udp_seq(M[1], M[2], IP[7], IP[2], 1), in_port=1))
    assert res.outputs == (TUN["hv2"],)  # 10.0.0.7 is inside the allowed prefix


def test_standby_vif_sends_and_receives_nothing() -> None:
    # vm1 is owned by hv1; hv2 also has a VIF for it (a conflict): it stays dark.
    sw = Switch(compile_flows(view("hv2", NET, {"vm1": 7, "vm2": 2})))
    res, _ = sw.process(packet_fields(udp(1, M[2]), in_port=7))
    assert res.outputs == ()
    res, _ = sw.process(packet_fields(udp(2, M[1]), in_port=2))
    assert res.outputs == (TUN["hv1"],)  # traffic to vm1 goes to its owner, not the standby VIF


MIGRATING = [
    port(1, "hv1", destination="hv2", migration_state="pending"),
    port(2, "hv2"),
    port(3, "hv3"),
]


def test_third_chassis_sends_to_both_source_and_destination() -> None:
    sw = Switch(compile_flows(view("hv3", MIGRATING, {"vm3": 3})))
    res, _ = sw.process(packet_fields(udp(3, M[1]), in_port=3))
    assert sorted(res.outputs) == [TUN["hv1"], TUN["hv2"]]


def test_source_delivers_and_copies_local_traffic_to_the_destination() -> None:
    ports = [*MIGRATING, port(4, "hv1")]
    sw = Switch(compile_flows(view("hv1", ports, {"vm1": 1, "vm4": 4})))
    res, _ = sw.process(packet_fields(udp(4, M[1]), in_port=4))
    assert sorted(res.outputs) == sorted([1, TUN["hv2"]])
    res, _ = sw.process(packet_fields(udp(3, M[1]), in_port=TUN["hv3"], tunnel_id=1))
    assert res.outputs == (1,)


def _pending_switch(strategy: frozenset[Strategy] = frozenset(Strategy)) -> Switch:
    ports = [
        port(1, "hv1", destination="hv2", migration_state="pending", strategy=strategy),
        port(2, "hv2"),
        port(3, "hv3"),
    ]
    claims = {"vm1": claim_report("hv2", "destination")}
    return Switch(compile_flows(view("hv2", ports, {"vm1": 5, "vm2": 2}, claims=claims)))


def test_pending_destination_blocks_both_ways_until_the_announcement() -> None:
    sw = _pending_switch()
    res, _ = sw.process(packet_fields(udp(3, M[1]), in_port=TUN["hv3"], tunnel_id=1))
    assert res.outputs == ()  # M2: nothing reaches the VIF before activation
    res, _ = sw.process(packet_fields(udp(2, M[1]), in_port=2))
    assert res.outputs == (TUN["hv1"],)  # local traffic goes to the source meanwhile
    res, _ = sw.process(packet_fields(udp(1, M[3]), in_port=5))
    assert res.outputs == ()  # the VM's own traffic is dropped too
    res, _ = sw.process(packet_fields(packets.garp(M[3], IP[3]), in_port=5))
    assert res.outputs == () and res.controller == () and res.learned == ()


@pytest.mark.parametrize(
    ("strategy", "frame"),
    [
        (Strategy.RARP, packets.rarp(M[1])),
        (Strategy.GARP, packets.garp(M[1], IP[1])),
        (Strategy.NA, packets.unsolicited_na(M[1], M[1].ipv6_link_local())),
    ],
)
def test_announcement_activates_inside_the_datapath(strategy: Strategy, frame: bytes) -> None:
    sw = _pending_switch()
    res, sw = sw.process(packet_fields(frame, in_port=5))
    assert len(res.learned) == 2
    assert all(cookies.kind_of(f.cookie) is Kind.LEARNED for f in res.learned)
    activation = parse_activation_userdata(res.controller[0])
    assert activation is not None and activation.strategy is strategy
    assert (activation.dp_key, activation.port_key) == (1, 1)
    # The announcement itself goes on (a broadcast: to the other ports and chassis).
    assert TUN["hv1"] in res.outputs or strategy is Strategy.NA
    # From now on the port is open, before any agent or database has done anything (M3).
    res, _ = sw.process(packet_fields(udp(3, M[1]), in_port=TUN["hv3"], tunnel_id=1))
    assert res.outputs == (5,)
    res, _ = sw.process(packet_fields(udp(1, M[2]), in_port=5))
    assert res.outputs == (2,)


def test_announcement_not_in_the_strategy_activates_nothing() -> None:
    sw = _pending_switch(frozenset({Strategy.RARP}))
    res, _ = sw.process(packet_fields(packets.garp(M[1], IP[1]), in_port=5))
    assert res.learned == () and res.controller == ()


def test_announcements_that_must_not_activate() -> None:
    sw = _pending_switch()
    wrong_ip = packets.garp(M[1], IP[6])
    other_mac = packets.rarp(M[6])
    wrong_na = packets.unsolicited_na(M[1], ipaddress.IPv6Address("fd00::99"))
    for frame in (wrong_ip, other_mac, wrong_na):
        res, _ = sw.process(packet_fields(frame, in_port=5))
        assert res.learned == () and res.controller == ()
    # The right RARP on another port (the MAC of vm1 sent from vm2's VIF) neither.
    res, _ = sw.process(packet_fields(packets.rarp(M[1]), in_port=2))
    assert res.learned == ()


def test_a_flood_reaches_each_chassis_once_at_the_destination() -> None:
    sw = _pending_switch()  # hv2: vm1 pending (from hv1), vm2 owned
    res, _ = sw.process(packet_fields(packets.garp(M[2], IP[2]), in_port=2))
    assert sorted(res.outputs) == sorted([TUN["hv1"], TUN["hv3"]])  # not vm1's VIF, hv1 once
    res, activated = sw.process(packet_fields(packets.rarp(M[1]), in_port=5))
    assert res.learned
    res, _ = activated.process(packet_fields(packets.garp(M[2], IP[2]), in_port=2))
    assert sorted(res.outputs) == sorted([5, TUN["hv1"], TUN["hv3"]])


def test_activated_destination_delivers_and_stops_sending_to_the_source() -> None:
    ports = [port(1, "hv1", destination="hv2", migration_state="pending"), port(2, "hv2")]
    v = view("hv2", ports, {"vm1": 5, "vm2": 2}, activated=frozenset({"vm1"}))
    sw = Switch(compile_flows(v))
    res, _ = sw.process(packet_fields(udp(2, M[1]), in_port=2))
    assert res.outputs == (5,)


def test_duplicate_macs_do_not_break_compilation_and_are_reported() -> None:
    dup = PortView("vm9", 1, 9, (f"{M[1]} 10.0.0.9",), owner="hv1")
    ports = [*NET, dup]
    flows = compile_flows(view("hv1", ports, {"vm1": 1, "vm9": 9}))
    sw = Switch(flows)
    res, _ = sw.process(packet_fields(udp(2, M[1]), in_port=TUN["hv2"], tunnel_id=1))
    assert res.outputs == (1,)  # the lower key keeps the MAC
    assert duplicate_macs(ports) == {"vm9": f"MAC {M[1]} is already used by port vm1 of the switch"}


def test_malformed_addresses_drop_the_vifs_traffic() -> None:
    bad = PortView("vm1", 1, 1, ("00:00:00:00:00:0z 10.0.0.1",), owner="hv1")
    sw = Switch(compile_flows(view("hv1", [bad, NET[1]], {"vm1": 1})))
    res, _ = sw.process(packet_fields(udp(1, M[2]), in_port=1))
    assert res.outputs == ()


def test_every_flow_respects_its_table_declaration() -> None:
    for flows in (
        compile_flows(view("hv2", MIGRATING, {"vm1": 5, "vm2": 2})),
        compile_flows(view("hv1", NET, {"vm1": 1})),
    ):
        for flow in flows:
            check_flow(flow)
            assert cookies.kind_of(flow.cookie) is not None
    with pytest.raises(FlowError, match="GATE does not match on"):
        check_flow(Flow(5, 1, match(in_port=1), ()))


# ----- properties ---------------------------------------------------------------------------

owners = st.sampled_from(["hv1", "hv2", "hv3", None])


@st.composite
def networks(draw: st.DrawFn) -> list[PortView]:
    n = draw(st.integers(1, 6))
    out = []
    for i in range(1, n + 1):
        dest = draw(st.sampled_from([None, "hv1", "hv2", "hv3"]))
        out.append(
            port(
                i,
                draw(owners),
                dp=draw(st.integers(1, 2)),
                destination=dest,
                migration_state="pending" if dest else None,
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(networks(), st.sets(st.integers(1, 6)), st.integers(1, 6))
def test_add_then_remove_a_port_restores_the_table(
    ports: list[PortView], local: set[int], extra: int
) -> None:
    vifs = {f"vm{i}": i for i in local if i <= len(ports)}
    base = compile_flows(view("hv1", ports, vifs))
    ports_plus = [
        *ports,
        PortView(
            f"new{extra}",
            1,
            20 + extra,
            (f"00:00:00:00:01:{extra:02x} 10.1.0.{extra}",),
            owner="hv1",
        ),
    ]
    grown = compile_flows(view("hv1", ports_plus, {**vifs, f"new{extra}": 50 + extra}))
    assert grown != base
    shrunk = compile_flows(view("hv1", ports, vifs))
    assert shrunk == base
    # Applying the diff twice is a no-op the second time.
    step = diff(base, grown)
    after = apply_diff(base, step)
    assert after == grown
    assert not diff(after, grown)
    assert apply_diff(after, diff(after, base)) == base


@settings(max_examples=100, deadline=None)
@given(networks(), st.sets(st.integers(1, 6)))
def test_compile_is_deterministic_and_the_incremental_table_agrees(
    ports: list[PortView], local: set[int]
) -> None:
    vifs = {f"vm{i}": i for i in local if i <= len(ports)}
    v = view("hv1", ports, vifs)
    first = compile_flows(v)
    table = compile_table(v)
    assert table.flows() == first == compile_flows(v)
    assert table.update(v, Dirty(everything=True))[0].flows() == first
    assert isinstance(first, FlowSet)


def test_a_large_flood_is_chained_in_chunks_that_fit_in_openflow_messages() -> None:
    n = 2500  # more local ports than one flow's actions (and OVS's 4096 resubmits) allow
    ports = [
        PortView(
            f"p{i}",
            1,
            i,
            (f"0a:00:00:00:{i >> 8:02x}:{i & 0xFF:02x} 10.1.{i >> 8}.{i & 255}",),
            owner="hv1",
        )
        for i in range(1, n + 1)
    ]
    flows = compile_flows(view("hv1", ports, {f"p{i}": 1000 + i for i in range(1, n + 1)}))
    assert len(flows.table(Table.FLOOD_LOCAL)) == -(-n // FLOOD_CHUNK)
    for flow in flows:
        message = flow_mod(flow)
        message.serialize()
        assert len(message.buf) < 65535, flow.key
    frame = packets.garp(Mac.parse("0a:00:00:00:00:01"), ipaddress.IPv4Address("10.1.0.1"))
    res, _ = Switch(flows).process(packet_fields(frame, in_port=1001))
    assert sorted(res.outputs) == [*range(1002, 1001 + n)]  # no other chassis hosts a port


# ----- every forwarding case of one chassis, as a table ---------------------------------------
#
# hv1's view: vm1 and vm4 local on switch 1, vm2 on hv2, vm3 on hv3, vm5 alone on switch 2
# (local), vm6 on switch 1 bound nowhere, vm7 migrating hv1 -> hv2 (local, pending at hv2).
# Each row: a frame entering at a port (a VIF's ofport, or a tunnel with a switch key), and
# the ports it leaves by, with the switch key on each tunnel output (0 for a local VIF).

TABLE_PORTS = [
    *NET,
    port(4, "hv1"),
    port(5, "hv1", dp=2),
    port(6, None),
    port(7, "hv1", destination="hv2", migration_state="pending"),
]
TABLE_VIFS = {"vm1": 1, "vm4": 4, "vm5": 5, "vm7": 7}
H2, H3 = TUN["hv2"], TUN["hv3"]
FLOOD_1 = {(4, 0), (7, 0), (H2, 1), (H3, 1)}  # from vm1: switch 1's other ports and chassis
MCAST = Mac.parse("01:00:5e:00:00:01")


@pytest.mark.parametrize(
    ("frame", "in_port", "tunnel_id", "outputs"),
    [
        pytest.param(udp(1, M[4]), 1, None, {(4, 0)}, id="unicast local to local"),
        pytest.param(udp(1, M[2]), 1, None, {(H2, 1)}, id="unicast to the owner's chassis"),
        pytest.param(udp(1, M[7]), 1, None, {(7, 0), (H2, 1)}, id="to a migrating port"),
        pytest.param(udp(1, M[6]), 1, None, set(), id="to a port bound nowhere"),
        pytest.param(udp(1, M[20]), 1, None, FLOOD_1, id="unknown unicast floods"),
        pytest.param(udp(1, M[5]), 1, None, FLOOD_1, id="another switch's MAC is unknown here"),
        pytest.param(packets.garp(M[1], IP[1]), 1, None, FLOOD_1, id="broadcast"),
        pytest.param(
            packets.udp_seq(M[1], MCAST, IP[1], IP[2], 1), 1, None, FLOOD_1, id="multicast"
        ),
        pytest.param(packets.arp_request(M[1], IP[1], IP[2]), 1, None, FLOOD_1, id="ARP request"),
        pytest.param(udp(5, M[1]), 5, None, set(), id="switch 2 cannot reach switch 1"),
        pytest.param(udp(5, M[20]), 5, None, set(), id="flood on a switch with no other port"),
        pytest.param(udp(1, M[2], src_mac=M[9]), 1, None, set(), id="spoofed source MAC"),
        pytest.param(
            packets.udp_seq(M[1], M[2], IP[9], IP[2], 1), 1, None, set(), id="spoofed source IP"
        ),
        pytest.param(
            packets.arp_request(M[1], IP[9], IP[2]), 1, None, set(), id="spoofed ARP sender"
        ),
        pytest.param(udp(2, M[1]), 99, None, set(), id="a port liveport does not know"),
        pytest.param(udp(2, M[1]), H2, 1, {(1, 0)}, id="tunnel in, to a local VIF"),
        pytest.param(udp(2, M[3]), H2, 1, set(), id="tunnel in, never out again"),
        pytest.param(udp(2, M[20]), H2, 1, {(1, 0), (4, 0), (7, 0)}, id="tunnel in, flood"),
        pytest.param(udp(2, M[1]), H2, 9, set(), id="tunnel in, unknown switch key"),
        pytest.param(udp(2, M[5]), H2, 2, {(5, 0)}, id="tunnel in, switch 2"),
    ],
)
def test_compile_flows_forwarding_table(
    frame: bytes, in_port: int, tunnel_id: int | None, outputs: set[tuple[int, int]]
) -> None:
    sw = Switch(compile_flows(view("hv1", TABLE_PORTS, TABLE_VIFS)))
    res, _ = sw.process(packet_fields(frame, in_port, tunnel_id or 0))  # None: from a VIF
    tunnels = set(TUN.values())
    got = {(o, t if o in tunnels else 0) for o, t in zip(res.outputs, res.tunnel_ids, strict=True)}
    assert got == outputs
    assert len(res.outputs) == len(outputs)  # nothing is sent twice
