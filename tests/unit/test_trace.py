"""liveport trace, its pure parts: packet descriptions, the frames they become, cookies
named, and the verdicts explained on flows the pipeline compiles (no switch needed)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from liveport.model import cookies, packets
from liveport.model.acl import AclView, Direction, Verdict
from liveport.model.addr import Mac
from liveport.model.binding import claim_report
from liveport.model.cookies import Kind
from liveport.model.errors import InvalidInput
from liveport.model.flows import Flow, match
from liveport.model.flowsim import Switch, packet_fields
from liveport.model.pipeline import ChassisView, LocalVif, PortView, Table, compile_flows
from liveport.model.trace import (
    AclInfo,
    Names,
    build_frame,
    deciding_acls,
    decode_cookie,
    explain,
    parse_packet,
    render,
)

M = {n: Mac.parse(f"00:00:00:00:00:{n:02x}") for n in range(1, 10)}
IP = {n: ipaddress.IPv4Address(f"10.0.0.{n}") for n in range(1, 10)}
TUN = {"hv1": 101, "hv2": 102, "hv3": 103}


# ----- descriptions -----------------------------------------------------------------------------


def test_both_forms_describe_the_same_packet() -> None:
    long = parse_packet(
        'inport == "vm1" && eth.src == 00:00:00:00:00:01 && ip4.dst == 10.0.0.2 && '
        "udp && udp.dst == 53"
    )
    short = parse_packet('inport="vm1", eth.src=00:00:00:00:00:01, ip4.dst=10.0.0.2, udp.dst=53')
    assert long == short
    assert long.inport == "vm1" and long.l3 == "ip4" and long.l4 == "udp"
    assert long.values == {"eth.src": 1, "ip4.dst": int(IP[2]), "udp.dst": 53}
    assert parse_packet(long.describe()) == long


@pytest.mark.parametrize(
    ("text", "l3", "l4"),
    [
        ("tcp.dst=80", "ip4", "tcp"),
        ("ip6.dst=fd00::1, tcp", "ip6", "tcp"),
        ("icmp", "ip4", "icmp4"),
        ("icmp, ip6.src=fd00::1", "ip6", "icmp6"),
        ("nd_na, nd.target=fd00::1", "ip6", "icmp6"),
        ("arp.tpa=10.0.0.1", "arp", None),
        ("rarp", "rarp", None),
        ("eth.dst=00:00:00:00:00:02", None, None),
    ],
)
def test_fields_imply_their_protocols(text: str, l3: str | None, l4: str | None) -> None:
    packet = parse_packet(text)
    assert (packet.l3, packet.l4) == (l3, l4)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("udp || tcp", "not a field == value term"),
        ("!(udp.dst == 1)", "not a field == value term"),
        ("udp, tcp", "tcp and udp"),
        ("ip4.src=10.0.0.1, ip6.dst=::1", "ip4 and ip6"),
        ("arp, udp.dst=1", "arp does not carry udp"),
        ("ip4.src=10.0.0.0/8", "no mask"),
        ("udp.dst == {1, 2}", "one value"),
        ("udp.dst != 1", "one value"),
        ("ct.est", "not a protocol"),
        ("ct_mark=1", "cannot be given"),
        ("udp.dst=1, udp.dst=2", "two values"),
        ("eth.type=0x86dd, ip4.src=10.0.0.1", "not ip4's"),
        ("ip.proto=6, udp", "not udp's"),
        ("arp, ip.ttl=3", "needs an IP packet"),
        ("inport=3", "string"),
        ("udp.dst=1,, tcp", "empty item"),
        ("udp.dst=", "packet description"),
    ],
)
def test_what_is_not_one_packet_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_packet(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_frame_carries_what_the_description_says() -> None:
    packet = parse_packet(
        "eth.src=00:00:00:00:00:01, eth.dst=00:00:00:00:00:02, ip4.src=10.0.0.1, "
        "ip4.dst=10.0.0.2, tcp, tcp.src=40000, tcp.dst=22, ip.ttl=7, ip.dscp=10"
    )
    fields = packet_fields(build_frame(packet), in_port=3)
    assert fields["eth_src"] == 1 and fields["eth_dst"] == 2
    assert fields["ipv4_src"] == int(IP[1]) and fields["ipv4_dst"] == int(IP[2])
    assert (fields["ip_proto"], fields["tcp_src"], fields["tcp_dst"]) == (6, 40000, 22)
    assert fields["tcp_flags"] == 0x002  # a SYN unless said otherwise
    assert (fields["nw_ttl"], fields["ip_dscp"]) == (7, 10)
    decoded = packets.decode(build_frame(packet))
    assert decoded.kind is packets.Kind.TCP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp, ip6.src=fd00::1, ip6.dst=fd00::2, udp.dst=53", {"ip_proto": 17, "udp_dst": 53}),
        ("icmp4, ip4.dst=10.0.0.2", {"icmpv4_type": 8, "icmpv4_code": 0}),
        ("icmp6, ip6.dst=fd00::2", {"icmpv6_type": 128}),
        ("rarp, eth.src=00:00:00:00:00:01", {"arp_op": 3, "arp_sha": 1}),
        ("arp, eth.src=00:00:00:00:00:01, arp.spa=10.0.0.1", {"arp_op": 1, "arp_sha": 1}),
        (
            "nd_na, eth.src=00:00:00:00:00:01, nd.target=fd00::1",
            {"icmpv6_type": 136, "ipv6_nd_tll": 1, "nw_ttl": 255},
        ),
    ],
)
def test_frames_of_each_protocol(text: str, expected: dict[str, int]) -> None:
    fields = packet_fields(build_frame(parse_packet(text)), in_port=1)
    assert {k: fields.get(k) for k in expected} == expected


def test_a_rarp_description_is_the_frame_qemu_sends() -> None:
    packet = parse_packet("rarp, eth.src=00:00:00:00:00:01, eth.dst=ff:ff:ff:ff:ff:ff")
    assert packet_fields(build_frame(packet), 5) == packet_fields(packets.rarp(M[1]), 5)


# ----- cookies --------------------------------------------------------------------------------


NAMES = Names(
    ports={(1, 1): "vm1", (1, 2): "vm2"},
    switches={1: "ls0"},
    acls=(
        AclInfo(7, "to-lport", 100, "drop", "udp.dst == 53", "no-dns", frozenset({1})),
        AclInfo(8, "to-lport", 100, "allow", "tcp", "", frozenset({2})),
        AclInfo(9, "from-lport", 100, "drop", "udp", "\x1b[31mred", frozenset({1})),
    ),
)


def test_cookies_name_the_port_switch_or_acl_stage() -> None:
    assert decode_cookie(cookies.cookie(Kind.PORT, 1, 2), NAMES).text() == "port vm2"
    pending = decode_cookie(cookies.cookie(Kind.ACTIVATION, 1, 1), NAMES)
    assert pending.port == "vm1" and "pending migration destination" in pending.text()
    assert decode_cookie(cookies.cookie(Kind.DATAPATH, 1), NAMES).text() == "switch ls0"
    stage = decode_cookie(cookies.cookie(Kind.ACL, 1, 2), NAMES)
    assert stage.text() == "to-lport ACLs of switch ls0"
    assert decode_cookie(cookies.cookie(Kind.LEARNED, 1, 1), NAMES).kind == "learned"
    unknown = decode_cookie(cookies.cookie(Kind.PORT, 4, 9), NAMES)
    assert unknown.port == "port key 9 of datapath key 4"
    assert decode_cookie(0x1234, NAMES).kind == "foreign"


def test_an_acl_flow_names_its_acl_by_conjunction_or_priority() -> None:
    acl_cookie = cookies.cookie(Kind.ACL, 1, 2)
    flow = Flow(Table.ACL_OUT, 1100, match(metadata=1), (), acl_cookie)
    # By priority: ACL 8 has priority 100 too, but is not on switch 1.
    assert [a.key for a in deciding_acls(flow, {}, NAMES)] == [7]
    # A conjunction's id names the ACL's key whatever the priority.
    assert [a.key for a in deciding_acls(flow, {"conj_id": 9 << 8 | 1 << 5}, NAMES)] == [9]
    port_flow = Flow(Table.ACL_OUT, 1100, match(metadata=1), (), cookies.cookie(Kind.PORT, 1, 1))
    assert deciding_acls(port_flow, {}, NAMES) == []


def test_acl_labels_escape_what_the_cloud_wrote() -> None:
    label = NAMES.acls[2].label
    assert "\x1b" not in label and "\\x1b" in label


# ----- verdicts, on compiled flows ------------------------------------------------------------


def port(n: int, owner: str | None, **kw: Any) -> PortView:
    return PortView(
        name=f"vm{n}", dp_key=1, key=n, addresses=(f"{M[n]} {IP[n]}",), owner=owner, **kw
    )


def chassis(me: str, ports: list[PortView], vifs: dict[str, int], **kw: Any) -> ChassisView:
    return ChassisView(
        chassis=me,
        vifs={name: LocalVif(name, ofport) for name, ofport in vifs.items()},
        tunnels={c: p for c, p in TUN.items() if c != me},
        ports={p.name: p for p in ports},
        **kw,
    )


def names_for(view: ChassisView, acls: tuple[AclInfo, ...] = ()) -> Names:
    return Names(
        ports={(p.dp_key, p.key): p.name for p in view.ports.values()},
        switches={1: "ls0"},
        acls=acls,
        vifs={v.ofport: n for n, v in view.vifs.items()},
        tunnels={o: c for c, o in view.tunnels.items()},
    )


def run(view: ChassisView, text: str, in_port: int, tunnel_id: int = 0, **kw: Any) -> Any:
    frame = build_frame(parse_packet(text))
    _, events, _ = Switch(compile_flows(view)).trace(packet_fields(frame, in_port, tunnel_id))
    return explain(events, names_for(view, **kw))


UDP_TO_VM1 = (
    "eth.src=00:00:00:00:00:03, eth.dst=00:00:00:00:00:01, ip4.src=10.0.0.3, "
    "ip4.dst=10.0.0.1, udp.dst=7"
)


def pending_at_hv2(activated: bool = False) -> ChassisView:
    ports = [port(1, "hv1", destination="hv2", migration_state="pending"), port(3, "hv3")]
    return chassis(
        "hv2",
        ports,
        {"vm1": 5},
        claims={"vm1": claim_report("hv2", "destination")},
        activated=frozenset({"vm1"}) if activated else frozenset(),
    )


def test_a_pending_destination_drops_by_its_blocking_flow() -> None:
    found = run(pending_at_hv2(), UDP_TO_VM1, TUN["hv3"], tunnel_id=1)
    verdict = found.verdict
    assert (verdict.kind, verdict.reason, verdict.port) == ("drop", "migration-blocked", "vm1")
    assert "blocking flow" in verdict.text and "announcement" in verdict.text
    last = found.steps[-1]
    assert last.table == Table.DELIVER and last.owner is not None
    assert last.owner.kind == "activation"


def test_a_pending_ports_own_traffic_is_held_at_its_closed_gate() -> None:
    text = "eth.src=00:00:00:00:00:01, eth.dst=00:00:00:00:00:03, ip4.src=10.0.0.1, udp"
    verdict = run(pending_at_hv2(), text, 5).verdict
    assert (verdict.kind, verdict.reason, verdict.port) == ("drop", "migration-blocked", "vm1")


def test_the_announcement_goes_to_the_agent_and_on() -> None:
    found = run(pending_at_hv2(), "rarp, eth.src=00:00:00:00:00:01, eth.dst=ff:ff:ff:ff:ff:ff", 5)
    assert any("announcement" in note for note in found.verdict.notes)
    assert any(e.kind == "learn" for e in found.events)


def test_after_activation_the_packet_is_delivered_to_the_vif() -> None:
    verdict = run(pending_at_hv2(activated=True), UDP_TO_VM1, TUN["hv3"], tunnel_id=1).verdict
    assert (verdict.kind, verdict.reason) == ("output", "forwarded")
    assert [(d.kind, d.name, d.ofport) for d in verdict.outputs] == [("vif", "vm1", 5)]
    assert verdict.text == "output to port vm1 (its VIF, ofport 5)"


def test_a_remote_port_is_reached_through_the_tunnel_to_its_chassis() -> None:
    view = chassis("hv3", [port(1, "hv1"), port(3, "hv3")], {"vm3": 3})
    verdict = run(view, UDP_TO_VM1, 3).verdict
    assert [(d.kind, d.name, d.tunnel_id) for d in verdict.outputs] == [("tunnel", "hv1", 1)]
    assert verdict.text.startswith("tunnel to chassis hv1")


def test_port_security_and_standby_drops_are_named() -> None:
    view = chassis("hv3", [port(1, "hv1"), port(3, "hv3")], {"vm3": 3, "vm1": 9})
    spoofed = UDP_TO_VM1.replace("ip4.src=10.0.0.3", "ip4.src=10.0.0.8")
    verdict = run(view, spoofed, 3).verdict
    assert (verdict.reason, verdict.port) == ("port-security", "vm3")
    standby = run(view, "eth.src=00:00:00:00:00:01, eth.dst=00:00:00:00:00:03, udp", 9).verdict
    assert standby.reason == "not-here"
    assert run(view, "udp, eth.dst=00:00:00:00:00:03", 77).verdict.reason == "no-port"


def test_a_drop_acl_is_named() -> None:
    acl = AclView(4, Direction.TO_LPORT, 300, "udp.dst == 7", Verdict.DROP, name="no-seven")
    view = chassis(
        "hv2",
        [port(1, "hv2"), port(3, "hv3")],
        {"vm1": 5},
        acls={1: (acl,)},
    )
    info = AclInfo(4, "to-lport", 300, "drop", "udp.dst == 7", "no-seven", frozenset({1}))
    verdict = run(view, UDP_TO_VM1, TUN["hv3"], tunnel_id=1, acls=(info,)).verdict
    assert (verdict.kind, verdict.reason) == ("drop", "acl")
    assert [a.key for a in verdict.acl] == [4]
    assert "ACL 'no-seven'" in verdict.text
    other = UDP_TO_VM1.replace("udp.dst=7", "udp.dst=8")
    assert run(view, other, TUN["hv3"], tunnel_id=1, acls=(info,)).verdict.kind == "output"


def test_steps_render_one_line_each_with_the_flows_owner() -> None:
    found = run(pending_at_hv2(), UDP_TO_VM1, TUN["hv3"], tunnel_id=1)
    lines = render(found)
    assert len(lines) == len(found.steps)
    assert lines[0].startswith(" 0 CLASSIFY: priority 50")
    assert "[switch ls0]" in lines[0]
    assert "DELIVER" in lines[-1] and "pending migration destination" in lines[-1]
    assert found.steps[-1].to_json()["outport"] == "vm1"


def test_a_stateful_switch_names_the_acl_that_decides_through_conntrack() -> None:
    # Sets of several values on two fields become a conjunctive match: the flow that
    # decides is found through its conjunction id, which names the ACL's key.
    dports = "7, 19, 33, 1000"
    sources = "10.0.0.3, 10.0.0.9, 10.0.0.17, 10.0.0.30"
    drop = AclView(
        4,
        Direction.TO_LPORT,
        300,
        f"udp.dst == {{{dports}}} && ip4.src == {{{sources}}}",
        Verdict.DROP,
        name="no-seven",
    )
    allow = AclView(5, Direction.TO_LPORT, 100, "ip4", Verdict.ALLOW_RELATED, name="allow-all")
    view = chassis("hv2", [port(1, "hv2"), port(3, "hv3")], {"vm1": 5}, acls={1: (drop, allow)})
    infos = tuple(
        AclInfo(
            a.key, str(a.direction), a.priority, str(a.verdict), a.match, a.name, frozenset({1})
        )
        for a in (drop, allow)
    )
    dropped = run(view, UDP_TO_VM1, TUN["hv3"], tunnel_id=1, acls=infos)
    assert (dropped.verdict.reason, [a.key for a in dropped.verdict.acl]) == ("acl", [4])
    assert any(e.kind == "ct" for e in dropped.events)
    assert dropped.steps[-1].fields.get("conj_id", 0) >> 8 == 4
    other = UDP_TO_VM1.replace("udp.dst=7", "udp.dst=70")
    allowed = run(view, other, TUN["hv3"], tunnel_id=1, acls=infos)
    assert allowed.verdict.kind == "output"
    assert [a.key for s in allowed.steps for a in s.acl] == [5]


def test_a_port_behind_the_physical_network_is_reached_through_the_uplink() -> None:
    localnet = PortView("ln", 1, 9, ("unknown",), kind="localnet", network="physnet1", tag=100)
    view = ChassisView(
        "hv1",
        vifs={"vm1": LocalVif("vm1", 1)},
        tunnels={"hv2": TUN["hv2"]},
        ports={p.name: p for p in (port(1, "hv1"), port(3, "hv2"), localnet)},
        uplinks={1: "ln"},
        localnets={"physnet1": 50},
    )
    names = Names(
        ports={(1, 1): "vm1", (1, 3): "vm3", (1, 9): "ln"},
        switches={1: "ls0"},
        vifs={1: "vm1"},
        uplinks={50: "physnet1"},
    )
    frame = build_frame(
        parse_packet("eth.src=00:00:00:00:00:01, eth.dst=00:00:00:00:00:03, ip4.src=10.0.0.1, udp")
    )
    _, events, _ = Switch(compile_flows(view)).trace(packet_fields(frame, 1))
    verdict = explain(events, names).verdict
    assert [(d.kind, d.name) for d in verdict.outputs] == [("uplink", "physnet1")]
    assert verdict.text == "uplink to physical network physnet1 (ofport 50)"
