"""Provider networks on the flow simulator: a switch with a localnet port reaches the
other chassis over the physical network (tagged with its VLAN), never back where a packet
came from, and through tunnels for a port that is migrating (so the physical network never
sees its MAC on two chassis)."""

from __future__ import annotations

import ipaddress
from typing import Any

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.binding import MigrationState, claim_report
from liveport.model.compiler import compile_table
from liveport.model.flows import VLAN_PRESENT
from liveport.model.flowsim import Result, Switch, packet_fields
from liveport.model.pipeline import ChassisView, LocalVif, PortView, compile_flows
from liveport.openflow.encode import flow_mod

M = {n: Mac.parse(f"fa:16:3e:00:01:{n:02x}") for n in range(1, 8)}
IP = {n: ipaddress.IPv4Address(f"10.1.0.{n}") for n in range(1, 8)}
TUN = {"hv1": 101, "hv2": 102, "hv3": 103}
PATCH = 50  # br-int's patch to physnet1
VID = 100


def vm(n: int, owner: str, **kw: Any) -> PortView:
    return PortView(f"vm{n}", 1, n, (f"{M[n]} {IP[n]}",), owner=owner, **kw)


def ln(tag: int | None = VID) -> PortView:
    return PortView("ln", 1, 9, ("unknown",), kind="localnet", network="physnet1", tag=tag)


def view(
    me: str, ports: list[PortView], vifs: dict[str, int], *, mapped: bool = True, **kw: Any
) -> ChassisView:
    return ChassisView(
        me,
        vifs={n: LocalVif(n, p) for n, p in vifs.items()},
        tunnels={c: p for c, p in TUN.items() if c != me},
        ports={p.name: p for p in ports},
        uplinks={1: "ln"} if any(p.kind == "localnet" for p in ports) else {},
        localnets={"physnet1": PATCH} if mapped else {},
        **kw,
    )


def send(v: ChassisView, frame: bytes, in_port: int, tunnel_id: int = 0) -> Result:
    result, _ = Switch(compile_flows(v)).process(packet_fields(frame, in_port, tunnel_id))
    return result


def udp(src: int, dst: int) -> bytes:
    return packets.udp_seq(M[src], M[dst], IP[src], IP[dst], 1)


def tagged(frame: bytes, vid: int = VID) -> bytes:
    return packets.vlan_tagged(frame, vid)


NET = [ln(), vm(1, "hv1"), vm(2, "hv2"), vm(3, "hv1")]
HV1 = view("hv1", NET, {"vm1": 1, "vm3": 3})


def test_every_flow_encodes() -> None:
    for flow in compile_flows(HV1):
        flow_mod(flow)
    assert compile_table(HV1).flows() == compile_flows(HV1)


def test_a_port_elsewhere_is_reached_over_the_physical_network_tagged() -> None:
    result = send(HV1, udp(1, 2), 1)
    assert result.outputs == (PATCH,)
    assert result.vlans == (VLAN_PRESENT | VID,)


def test_a_broadcast_goes_out_once_and_to_local_ports_never_through_tunnels() -> None:
    result = send(HV1, packets.garp(M[1], IP[1]), 1)
    assert sorted(result.outputs) == [3, PATCH]
    assert dict(zip(result.outputs, result.vlans, strict=True))[PATCH] == VLAN_PRESENT | VID
    assert not set(result.outputs) & set(TUN.values())


def test_from_the_physical_network_to_local_ports_only_untagged() -> None:
    result = send(HV1, tagged(udp(2, 1)), PATCH)
    assert result.outputs == (1,) and result.vlans == (0,)
    flood = send(HV1, tagged(packets.garp(M[2], IP[2])), PATCH)
    assert sorted(flood.outputs) == [1, 3]  # never back to the physical network
    assert send(HV1, tagged(udp(2, 1), vid=200), PATCH).outputs == ()  # another VLAN
    assert send(HV1, udp(2, 1), PATCH).outputs == ()  # untagged: not this network


def test_a_flat_network_is_untagged() -> None:
    flat = view("hv1", [ln(tag=None), vm(1, "hv1"), vm(2, "hv2")], {"vm1": 1})
    result = send(flat, udp(1, 2), 1)
    assert result.outputs == (PATCH,) and result.vlans == (0,)
    assert send(flat, udp(2, 1), PATCH).outputs == (1,)


def test_without_the_mapping_the_chassis_uses_tunnels() -> None:
    unmapped = view("hv1", NET, {"vm1": 1}, mapped=False)
    assert send(unmapped, udp(1, 2), 1).outputs == (TUN["hv2"],)


def migrating(owner: str, destination: str) -> PortView:
    return vm(5, owner, destination=destination, migration_state=MigrationState.PENDING)


def test_a_migrating_port_is_reached_through_tunnels_to_both_chassis() -> None:
    third = view("hv3", [*NET, migrating("hv2", "hv1")], {}, mapped=True)
    third = ChassisView(
        "hv3",
        vifs={"vm6": LocalVif("vm6", 6)},
        tunnels={c: p for c, p in TUN.items() if c != "hv3"},
        ports={**third.ports, "vm6": vm(6, "hv3")},
        uplinks={1: "ln"},
        localnets={"physnet1": PATCH},
    )
    result = send(third, udp(6, 5), 6)
    assert sorted(result.outputs) == [TUN["hv1"], TUN["hv2"]]  # not the physical network


def test_the_source_copies_what_the_physical_network_brings_to_the_destination() -> None:
    source = view(
        "hv2",
        [*NET, migrating("hv2", "hv1")],
        {"vm5": 5},
        claims={"vm5": claim_report("hv2", "main")},
    )
    result = send(source, tagged(udp(7, 5)), PATCH)
    assert sorted(result.outputs) == [5, TUN["hv1"]]


def test_the_pending_destination_never_speaks_for_the_port_on_the_physical_network() -> None:
    destination = view(
        "hv1",
        [*NET, migrating("hv2", "hv1")],
        {"vm5": 5, "vm1": 1},
        claims={"vm5": claim_report("hv1", "destination")},
    )
    # What the port sends before it is activated here goes nowhere.
    assert send(destination, udp(5, 2), 5).outputs == ()
    # What a local VM sends to it goes to the source through the tunnel, not out.
    assert send(destination, udp(1, 5), 1).outputs == (TUN["hv2"],)
