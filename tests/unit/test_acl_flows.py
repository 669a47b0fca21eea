"""Security groups on the flow simulator (with its model of OVS conntrack): for each rule
shape of Neutron's default and custom security groups, which packets reach which port.

One switch (datapath 1). On hv1: vm1 and vm2 (in security group sg1), vm3 (in no group:
its switch is stateful, so it has conntrack and default-allow). On hv2: vm4 (in sg1) and
ext (in no group). The ACLs are what Neutron's ML2/OVN driver writes for its default
security group (egress to anywhere; ingress only from the group's members) plus "TCP 22
from anywhere", DHCP, and its drop-everything port group.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from liveport.model import packets
from liveport.model.acl import AclView, Direction, Verdict
from liveport.model.addr import Mac
from liveport.model.carried import Connection
from liveport.model.compiler import compile_table
from liveport.model.flows import FlowSet
from liveport.model.flowsim import Result, Switch, packet_fields
from liveport.model.packets import TcpFlags
from liveport.model.pipeline import ChassisView, LocalVif, PortView, Table, compile_flows
from liveport.openflow.encode import flow_mod

M = {n: Mac.parse(f"fa:16:3e:00:00:{n:02x}") for n in range(1, 10)}
IP = {n: ipaddress.IPv4Address(f"10.0.0.{n}") for n in range(1, 10)}
TUN = {"hv1": 101, "hv2": 102}
OFPORT = {"vm1": 1, "vm2": 2, "vm3": 3}
NAMES = {1: "vm1", 2: "vm2", 3: "vm3", 4: "vm4", 5: "ext"}
OWNERS = {1: "hv1", 2: "hv1", 3: "hv1", 4: "hv2", 5: "hv2"}
SG = "pg_sg1"
DROP = "neutron_pg_drop"


def port(n: int, **kw: Any) -> PortView:
    return PortView(
        name=NAMES[n], dp_key=1, key=n, addresses=(f"{M[n]} {IP[n]}",), owner=OWNERS[n], **kw
    )


def acl(
    key: int, direction: Direction, priority: int, text: str, verdict: Verdict, **kw: Any
) -> AclView:
    groups = tuple(g for g in (SG, DROP) if f"@{g}" in text)
    return AclView(key, direction, priority, text, verdict, port_groups=groups, **kw)


FROM, TO = Direction.FROM_LPORT, Direction.TO_LPORT
NEUTRON = (
    acl(1, FROM, 1002, f"inport == @{SG} && ip4", Verdict.ALLOW_RELATED),
    acl(2, FROM, 1002, f"inport == @{SG} && ip6", Verdict.ALLOW_RELATED),
    acl(3, TO, 1002, f"outport == @{SG} && ip4 && ip4.src == ${SG}_ip4", Verdict.ALLOW_RELATED),
    acl(
        4,
        TO,
        1002,
        f"outport == @{SG} && ip4 && ip4.src == 0.0.0.0/0 && tcp && tcp.dst == 22",
        Verdict.ALLOW_RELATED,
    ),
    acl(
        5,
        FROM,
        1002,
        f"inport == @{SG} && ip4 && ip4.dst == {{255.255.255.255, 10.0.0.0/24}} && "
        "udp && udp.src == 68 && udp.dst == 67",
        Verdict.ALLOW,
    ),
    acl(6, FROM, 1001, f"inport == @{DROP} && ip", Verdict.DROP),
    acl(7, TO, 1001, f"outport == @{DROP} && ip", Verdict.DROP),
)
MEMBERS = frozenset({"vm1", "vm2", "vm4"})


def view(
    acls: tuple[AclView, ...] = NEUTRON,
    members: frozenset[str] = MEMBERS,
    ports: list[PortView] | None = None,
    me: str = "hv1",
    vifs: dict[str, int] | None = None,
    **kw: Any,
) -> ChassisView:
    ports = ports if ports is not None else [port(n) for n in NAMES]
    vifs = vifs if vifs is not None else OFPORT
    return ChassisView(
        chassis=me,
        vifs={n: LocalVif(n, p) for n, p in vifs.items()},
        tunnels={c: p for c, p in TUN.items() if c != me},
        ports={p.name: p for p in ports},
        acls={1: acls},
        address_sets={
            f"{SG}_ip4": frozenset(str(IP[n]) for n, name in NAMES.items() if name in members),
            f"{SG}_ip6": frozenset(),
        },
        port_groups={SG: members, DROP: members},
        zones={name: i for i, name in enumerate(sorted(vifs), start=1)},
        **kw,
    )


class Net:
    """A chassis' switch, kept across packets (its conntrack state with it)."""

    def __init__(self, v: ChassisView) -> None:
        self.switch = Switch(compile_flows(v))

    def reflow(self, v: ChassisView) -> None:
        """New flows (the ACLs changed), same connections."""
        self.switch = dataclasses.replace(self.switch, flows=compile_flows(v))

    def send(self, frame: bytes, in_port: int, tunnel_id: int = 0) -> Result:
        result, self.switch = self.switch.process(packet_fields(frame, in_port, tunnel_id))
        return result

    def local(self, src: int, dst: int, frame: bytes) -> tuple[int, ...]:
        return self.send(frame, OFPORT[NAMES[src]]).outputs

    def tunnel(self, frame: bytes) -> tuple[int, ...]:
        return self.send(frame, TUN["hv2"], tunnel_id=1).outputs


def tcp(src: int, dst: int, sport: int, dport: int, flags: int = TcpFlags.SYN) -> bytes:
    return packets.tcp_segment(M[src], M[dst], IP[src], IP[dst], sport, dport, flags)


def udp(src: int, dst: int, sport: int, dport: int, dst_ip: str | None = None) -> bytes:
    ip = ipaddress.IPv4Address(dst_ip) if dst_ip else IP[dst]
    mac = Mac.parse("ff:ff:ff:ff:ff:ff") if dst_ip else M[dst]
    return packets.udp_datagram(M[src], mac, IP[src], ip, sport, dport)


SYN, SYNACK, ACK = TcpFlags.SYN, TcpFlags.SYN | TcpFlags.ACK, TcpFlags.ACK


def test_every_flow_encodes_as_openflow() -> None:
    for flow in compile_flows(view()):
        flow_mod(flow)


def test_members_of_the_group_reach_each_other_and_replies_pass() -> None:
    net = Net(view())
    assert net.local(1, 2, tcp(1, 2, 40000, 80)) == (2,)
    assert net.local(2, 1, tcp(2, 1, 80, 40000, SYNACK)) == (1,)
    assert net.local(1, 2, tcp(1, 2, 40000, 80, ACK)) == (2,)


def test_ingress_from_outside_the_group_only_to_port_22() -> None:
    net = Net(view())
    assert net.local(3, 1, tcp(3, 1, 40000, 80)) == ()
    assert net.local(3, 1, tcp(3, 1, 40001, 22)) == (1,)
    assert net.local(1, 3, tcp(1, 3, 22, 40001, SYNACK)) == (3,)  # the reply
    assert net.tunnel(tcp(5, 1, 40002, 80)) == ()  # from another chassis, the same
    assert net.tunnel(tcp(5, 1, 40003, 22)) == (1,)


def test_egress_opens_the_way_back() -> None:
    net = Net(view())
    # vm1 calls ext on another chassis: allowed out; ext's answer passes vm1's to-lport
    # ACLs as a reply although they refuse new connections from ext.
    assert net.local(1, 5, tcp(1, 5, 50000, 443)) == (TUN["hv2"],)
    assert net.tunnel(tcp(5, 1, 443, 50000, SYNACK)) == (1,)
    assert net.tunnel(tcp(5, 1, 443, 50001, SYNACK)) == ()  # not a reply of anything


def test_dhcp_and_non_ip_pass() -> None:
    net = Net(view())
    out = net.local(1, 0, udp(1, 0, 68, 67, dst_ip="255.255.255.255"))
    assert 2 in out and 3 in out  # a broadcast: every other port that may receive it
    garp = packets.garp(M[3], IP[3])
    assert set(net.local(3, 0, garp)) >= {1, 2}


def test_a_port_outside_any_group_is_open_and_stateful() -> None:
    net = Net(view())
    assert net.local(1, 3, tcp(1, 3, 40000, 8080)) == (3,)
    assert net.local(3, 2, tcp(3, 2, 40001, 8080)) == ()  # vm2's ingress refuses it


def test_a_disabled_port_gets_nothing_and_sends_nothing() -> None:
    ports = [port(n, enabled=(n != 2)) for n in NAMES]
    net = Net(view(ports=ports))
    assert net.local(1, 2, tcp(1, 2, 40000, 22)) == ()
    assert net.local(2, 1, tcp(2, 1, 40000, 22)) == ()
    assert 2 not in net.local(3, 0, packets.garp(M[3], IP[3]))


def test_a_port_joining_the_group_is_let_in() -> None:
    net = Net(view())
    assert net.local(3, 1, tcp(3, 1, 40000, 80)) == ()
    net.reflow(view(members=MEMBERS | {"vm3"}))
    assert net.local(3, 1, tcp(3, 1, 40001, 80)) == (1,)


def test_removing_a_rule_cuts_the_connections_it_allowed() -> None:
    net = Net(view())
    assert net.local(3, 1, tcp(3, 1, 40000, 22)) == (1,)
    assert net.local(1, 3, tcp(1, 3, 22, 40000, SYNACK)) == (3,)
    assert net.local(3, 1, tcp(3, 1, 40000, 22, ACK)) == (1,)
    net.reflow(view(acls=tuple(a for a in NEUTRON if a.key != 4)))
    # The next packet of the connection meets the drop ACL: dropped, and the connection
    # is marked blocked, so the replies stop too (OVN's semantics).
    assert net.local(3, 1, tcp(3, 1, 40000, 22, ACK)) == ()
    assert net.local(1, 3, tcp(1, 3, 22, 40000, ACK)) == ()


@pytest.mark.parametrize(
    ("broken", "frame", "src"),
    [
        # The drop ACL cannot be parsed: what it would drop stays dropped.
        (7, tcp(3, 1, 40000, 80), 3),
        # The TCP-22 rule cannot be parsed: it allows nothing.
        (4, tcp(3, 1, 40000, 22), 3),
    ],
)
def test_an_acl_that_cannot_be_compiled_fails_closed(broken: int, frame: bytes, src: int) -> None:
    acls = tuple(
        dataclasses.replace(a, match=a.match + " &&") if a.key == broken else a for a in NEUTRON
    )
    v = view(acls=acls)
    net = Net(v)
    assert net.local(src, 1, frame) == ()
    problems = compile_table(v).acl_problems()
    assert set(problems) == {broken}
    assert "column" in problems[broken]


def test_a_broken_drop_acl_drops_only_its_ports() -> None:
    acls = tuple(
        dataclasses.replace(a, match="outport == @" + DROP + " && ip &&") if a.key == 7 else a
        for a in NEUTRON
    )
    net = Net(view(acls=acls))
    assert net.local(1, 3, tcp(1, 3, 40000, 8080)) == (3,)  # vm3 is not in the group


def test_a_switch_without_allow_related_is_stateless() -> None:
    acls = (
        acl(1, TO, 1002, f"outport == @{SG} && tcp && tcp.dst == 22", Verdict.ALLOW),
        acl(2, TO, 1001, f"outport == @{SG} && ip", Verdict.DROP),
    )
    v = view(acls=acls)
    assert not any(f.table == Table.ACL_OUT_PRE and f.priority == 100 for f in compile_flows(v))
    net = Net(v)
    assert net.local(3, 1, tcp(3, 1, 40000, 22)) == (1,)
    assert net.local(3, 1, tcp(3, 1, 40000, 80)) == ()
    # No tracking: the answer of an allowed outgoing call is judged as new traffic.
    assert net.local(1, 3, tcp(1, 3, 22, 40000, SYNACK)) == (3,)


def test_carried_connections_are_admitted_on_the_destination() -> None:
    """hv2 is vm1's migration destination. The source tracked vm1 -> ext:443 (vm1 opened
    it). After the move ext speaks first: vm1's to-lport ACLs refuse new connections from
    ext, but this one was carried."""
    ports = [port(n) for n in NAMES]
    ports[0] = dataclasses.replace(ports[0], owner="hv2", destination=None, source="hv1")
    carried = (Connection(6, IP[1], 50000, IP[5], 443),)
    v = view(ports=ports, me="hv2", vifs={"vm1": 1, "ext": 5}, carried={"vm1": carried})
    net = Net(v)
    assert net.send(tcp(5, 1, 443, 50000, ACK), 5).outputs == (1,)
    assert net.send(tcp(1, 5, 50000, 443, ACK), 1).outputs == (5,)
    assert net.send(tcp(5, 1, 443, 50000, ACK), 5).outputs == (1,)
    # Another connection from ext is still refused.
    assert net.send(tcp(5, 1, 443, 50001, ACK), 5).outputs == ()


def test_the_incremental_table_equals_a_compilation_from_scratch() -> None:
    v = view()
    assert compile_table(v).flows() == compile_flows(v)
    assert isinstance(compile_flows(v), FlowSet)
