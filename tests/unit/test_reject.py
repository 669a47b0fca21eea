"""reject: what the agent answers to a packet a reject ACL refused (model.reject), and
where it sends it (agent.step.rejection)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from liveport.agent.localswitch import Identity
from liveport.agent.step import Config, Memory, rejection
from liveport.model import packets
from liveport.model.acl import AclView, Direction, Verdict, parse_reject_userdata, reject_userdata
from liveport.model.addr import Mac
from liveport.model.flows import OFPP_CONTROLLER, Controller, Load, Output, Resubmit
from liveport.model.flowsim import Switch, packet_fields
from liveport.model.packets import TcpFlags, decode
from liveport.model.pipeline import ChassisView, LocalVif, PortView, Table, compile_flows
from liveport.model.reject import answer

from tests.world import CATALOGUE

A, B = Mac.parse("fa:16:3e:00:00:01"), Mac.parse("fa:16:3e:00:00:02")
IA, IB = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
SA, SB = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")


def test_a_syn_gets_a_reset_that_acknowledges_it() -> None:
    syn = packets.tcp_segment(A, B, IA, IB, 40000, 8080, TcpFlags.SYN, seq=1000)
    found = answer(syn)
    assert found is not None and found.what == "tcp reset"
    info = decode(found.frame)
    assert (info.src, info.dst, info.src_ip, info.dst_ip) == (B, A, IB, IA)
    assert (info.src_port, info.dst_port) == (8080, 40000)
    assert info.tcp_flags == TcpFlags.RST | TcpFlags.ACK
    assert (info.tcp_seq, info.tcp_ack) == (0, 1001)


def test_a_segment_with_ack_gets_a_reset_at_its_ack() -> None:
    data = packets.tcp_segment(A, B, IA, IB, 40000, 80, TcpFlags.ACK, seq=5, ack=777, payload=b"x")
    found = answer(data)
    assert found is not None
    info = decode(found.frame)
    assert info.tcp_flags == TcpFlags.RST and info.tcp_seq == 777


def test_udp_gets_a_port_unreachable_that_quotes_it() -> None:
    datagram = packets.udp_datagram(A, B, IA, IB, 5000, 53, b"query")
    found = answer(datagram)
    assert found is not None and found.what == "icmp unreachable"
    info = decode(found.frame)
    assert (info.icmp_type, info.icmp_code, info.src_ip, info.dst_ip) == (3, 3, IB, IA)
    assert datagram[14:42] in found.frame  # its IP header and first 8 bytes
    v6 = answer(packets.udp_datagram(A, B, SA, SB, 5000, 53, b"q"))
    assert v6 is not None and (decode(v6.frame).icmp_type, decode(v6.frame).icmp_code) == (1, 4)


@pytest.mark.parametrize(
    "frame",
    [
        packets.tcp_segment(A, B, IA, IB, 1, 2, TcpFlags.RST),  # never answer a reset
        packets.icmp_error(A, B, IA, IB, packets.udp_datagram(B, A, IB, IA, 1, 2)),
        packets.udp_datagram(A, Mac.parse("ff:ff:ff:ff:ff:ff"), IA, IB, 68, 67),
        packets.udp_datagram(A, B, IA, ipaddress.IPv4Address("224.0.0.5"), 1, 2),
        packets.garp(A, IA),
        b"\x00" * 10,
    ],
)
def test_what_is_never_answered(frame: bytes) -> None:
    assert answer(frame) is None


def test_userdata_round_trip() -> None:
    for direction in Direction:
        assert parse_reject_userdata(reject_userdata(direction)) is direction
    assert parse_reject_userdata(b"LPA\x01\x01") is None


def _view(**kw: Any) -> ChassisView:
    ports = {
        "vm1": PortView("vm1", 1, 1, (f"{A} {IA}",), owner="hv1"),
        "vm2": PortView("vm2", 1, 2, (f"{B} {IB}",), owner="hv1"),
    }
    acl = AclView(1, Direction.TO_LPORT, 1, 'outport == "vm2" && tcp', Verdict.REJECT)
    return ChassisView(
        "hv1",
        vifs={"vm1": LocalVif("vm1", 1), "vm2": LocalVif("vm2", 2)},
        ports=ports,
        acls={1: (acl,)},
        zones={"vm1": 1, "vm2": 2},
        **kw,
    )


def test_a_reject_acl_sends_the_packet_to_the_agent_and_no_further() -> None:
    syn = packets.tcp_segment(A, B, IA, IB, 40000, 8080, TcpFlags.SYN)
    result, _ = Switch(compile_flows(_view())).process(packet_fields(syn, 1))
    assert result.outputs == ()
    assert result.controller == (reject_userdata(Direction.TO_LPORT),)
    assert any(isinstance(a, Controller) for f in compile_flows(_view()) for a in f.actions)


def test_where_the_answer_goes() -> None:
    identity = Identity("hv1", "hv1", None, "geneve", None, "br-int")
    memory = Memory(
        Config(identity, CATALOGUE, ()), view=_view(), keys={(1, 1): "vm1", (1, 2): "vm2"}
    )
    syn = packets.tcp_segment(A, B, IA, IB, 40000, 8080, TcpFlags.SYN)
    # to-lport: vm2 refused it; the reset enters the switch as from vm2, past its ACLs.
    to = rejection(memory, reject_userdata(Direction.TO_LPORT), {"metadata": 1, "reg15": 2}, syn)
    assert to is not None and to.port == "vm2"
    assert to.in_port == 2
    assert to.actions == (Load("metadata", 1), Load("reg14", 2), Resubmit(Table.L2_LOOKUP))
    # from-lport: the network refused what vm1 sent; the answer goes straight back to it.
    back = rejection(
        memory, reject_userdata(Direction.FROM_LPORT), {"metadata": 1, "reg14": 1}, syn
    )
    assert back is not None and back.port == "vm1"
    assert (back.in_port, back.actions) == (OFPP_CONTROLLER, (Output(1),))
    # A port that is not here, or a packet-in that is not a reject: nothing.
    assert (
        rejection(memory, reject_userdata(Direction.TO_LPORT), {"metadata": 1, "reg15": 9}, syn)
        is None
    )
    assert rejection(memory, b"LPA", {"metadata": 1, "reg15": 2}, syn) is None
