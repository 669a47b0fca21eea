"""The native DHCP server as the pipeline and the agent run it: the owner's requests go to
the agent, which answers from the binding's options; nobody else answers."""

from __future__ import annotations

import ipaddress

from liveport.agent.localswitch import Identity
from liveport.agent.step import Config, Memory, dhcp_reply
from liveport.model import dhcp_server, packets
from liveport.model.addr import Mac
from liveport.model.dhcp import MessageType, dhcp_discover, dhcp_request, parse_message
from liveport.model.flows import OFPP_CONTROLLER, Output
from liveport.model.flowsim import Switch, packet_fields
from liveport.model.pipeline import ChassisView, LocalVif, PortView, compile_flows

from tests.world import CATALOGUE

MAC = Mac.parse("fa:16:3e:00:00:05")
IP = ipaddress.IPv4Address("10.0.0.5")
V4 = (
    ("cidr", "10.0.0.0/24"),
    ("dns_server", "{8.8.8.8, 9.9.9.9}"),
    ("lease_time", "43200"),
    ("mtu", "1442"),
    ("router", "10.0.0.1"),
    ("server_id", "10.0.0.1"),
    ("server_mac", "fa:16:3e:ff:ff:01"),
)


def port(owner: str, destination: str | None = None, **kw: object) -> PortView:
    return PortView(
        "vm5",
        1,
        5,
        (f"{MAC} {IP}",),
        owner=owner,
        destination=destination,
        dhcpv4=V4,
        **kw,  # type: ignore[arg-type]
    )


def view(p: PortView, me: str = "hv1") -> ChassisView:
    return ChassisView(
        me, vifs={"vm5": LocalVif("vm5", 5)}, ports={"vm5": p}, tunnels={"hv2": 102, "hv1": 101}
    )


def test_the_owner_sends_requests_to_the_agent_and_only_them() -> None:
    switch = Switch(compile_flows(view(port("hv1"))))
    result, _ = switch.process(packet_fields(dhcp_discover(MAC, 0x1234), 5))
    assert result.controller == (dhcp_server.userdata(4, 1, 5),) and result.outputs == ()
    other = packets.udp_datagram(MAC, Mac.parse("ff:ff:ff:ff:ff:ff"), IP, IP, 68, 6767)
    result, _ = switch.process(packet_fields(other, 5))
    assert result.controller == ()


def test_a_pending_destination_and_a_port_without_options_answer_nothing() -> None:
    pending = view(port("hv2", destination="hv1"), me="hv1")
    assert not any(f.table == 20 and f.priority == 100 for f in compile_flows(pending))
    plain = view(PortView("vm5", 1, 5, (f"{MAC} {IP}",), owner="hv1"))
    assert not any(f.table == 20 and f.priority == 100 for f in compile_flows(plain))


def memory(p: PortView) -> Memory:
    identity = Identity("hv1", "hv1", None, "geneve", None, "br-int")
    return Memory(Config(identity, CATALOGUE, ()), view=view(p), keys={(1, 5): "vm5"})


def test_the_agent_offers_and_acknowledges_with_the_options() -> None:
    m = memory(port("hv1"))
    userdata = dhcp_server.userdata(4, 1, 5)
    offer = dhcp_reply(m, userdata, dhcp_discover(MAC, 0x1234))
    assert offer is not None
    assert (offer.in_port, offer.actions) == (OFPP_CONTROLLER, (Output(5),))
    message = parse_message(offer.frame)
    assert message is not None and message.message_type == MessageType.OFFER
    assert message.yiaddr == IP and message.xid == 0x1234
    assert message.ipv4_option(3) == ipaddress.IPv4Address("10.0.0.1")  # router
    assert message.options[26] == (1442).to_bytes(2, "big")  # MTU
    assert message.options[6] == bytes([8, 8, 8, 8, 9, 9, 9, 9])  # DNS servers
    server = ipaddress.IPv4Address("10.0.0.1")
    ack = dhcp_reply(m, userdata, dhcp_request(MAC, 0x1235, requested_ip=IP, server_id=server))
    assert ack is not None
    acked = parse_message(ack.frame)
    assert acked is not None and acked.message_type == MessageType.ACK
    # Another MAC (not the port's) gets nothing.
    assert dhcp_reply(m, userdata, dhcp_discover(Mac.parse("fa:16:3e:00:00:99"), 1)) is None


def test_only_the_owner_answers() -> None:
    userdata = dhcp_server.userdata(4, 1, 5)
    assert dhcp_reply(memory(port("hv2")), userdata, dhcp_discover(MAC, 1)) is None
