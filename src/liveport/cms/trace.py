"""`liveport trace`: what a chassis' switch does with a packet, from the flows it holds.

The flows are dumped from the chassis' bridge (every flow with liveport's cookie, learned
flows included, as `liveport doctor` dumps them), the packet is run through them by
liveport's own flow simulator (model.flowsim, with OVS's userspace conntrack as
model.conntrack has it: the packet is the first of its connection), and each step and
the verdict are named with what the SB and the chassis' Open_vSwitch database say the
numbers are (model.trace).

The packet enters either from a logical port's VIF on the chassis (`inport`) or from the
tunnel of another chassis (`from_chassis`, with the switch's tunnel key as Geneve VNI).
What the description leaves out is filled in where the databases know it: the inport's
MAC as eth.src; as eth.dst, the MAC of the switch's port that has ip4.dst / ip6.dst (ARP:
broadcast).

The result also names the same packet for OVS (`ovs-appctl ofproto/trace BRIDGE FLOW
HEX`), so that what liveport's model says can be checked against the switch itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

from liveport.agent import localswitch
from liveport.cms.doctor import SwitchAccess
from liveport.model import cookies
from liveport.model.addr import PortAddresses
from liveport.model.errors import InvalidInput, LiveportError, NotFound, Unavailable
from liveport.model.flows import FlowSet
from liveport.model.flowsim import Switch, packet_fields
from liveport.model.logical import parse_network
from liveport.model.trace import (
    AclInfo,
    Explanation,
    Names,
    Packet,
    build_frame,
    explain,
    parse_packet,
    render,
)
from liveport.model.untrusted import escape
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.encode import CodecError
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Snapshot

SB_TABLES: dict[str, list[str] | None] = {
    "Datapath_Binding": ["name", "tunnel_key"],
    "Port_Binding": ["logical_port", "datapath", "tunnel_key", "addresses", "port_security"],
    "ACL": ["key", "name", "direction", "priority", "action", "match", "datapaths"],
}


class TraceError(Unavailable):
    """The switch or a database could not be read."""


@dataclass(frozen=True)
class Trace:
    chassis: str
    bridge: str
    entry: str  # "port vm1" or "tunnel from chassis hv1"
    packet: Packet
    frame: bytes
    in_port: int
    tunnel_id: int
    ovs_flow: str  # the metadata part of ofproto/trace's arguments
    flows: int  # liveport's flows on the bridge
    explanation: Explanation
    names: Names

    def ovs_command(self) -> str:
        return f"ovs-appctl ofproto/trace {self.bridge} {self.ovs_flow} {self.frame.hex()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "chassis": self.chassis,
            "bridge": self.bridge,
            "entry": self.entry,
            "packet": {
                **self.packet.to_json(),
                "description": self.packet.describe(),
                "in_port": self.in_port,
                "tunnel_id": self.tunnel_id,
                "frame": self.frame.hex(),
            },
            "flows": self.flows,
            "steps": [s.to_json() for s in self.explanation.steps],
            "verdict": self.explanation.verdict.to_json(),
            "ovs_trace": self.ovs_command(),
        }

    def lines(self) -> list[str]:
        """For people; names from the databases are escaped (model.untrusted)."""
        verdict = self.explanation.verdict
        out = [
            f"chassis {escape(self.chassis, 100)}, {escape(self.bridge, 100)} ({self.flows} "
            f"flows): {escape(self.entry, 200)}, in_port {self.in_port}",
            f"packet: {escape(self.packet.describe(), 1000)}",
            "",
            *render(self.explanation),
            "",
            f"verdict: {verdict.kind.upper()} ({verdict.reason}): {verdict.text}",
        ]
        out += [f"  also: {note}" for note in verdict.notes]
        out.append(f"same packet in OVS: {self.ovs_command()}")
        return out


def names_of(sb: Snapshot, local: localswitch.LocalState) -> Names:
    """What the SB and the chassis' database call ports, switches, ACLs and ofports."""
    dps = {dp.uuid: dp["tunnel_key"] for dp in sb.rows("Datapath_Binding")}
    ports = {
        (dps[pb["datapath"]], pb["tunnel_key"]): pb["logical_port"]
        for pb in sb.rows("Port_Binding")
        if pb["datapath"] in dps
    }
    acls = tuple(
        AclInfo(
            row["key"],
            row["direction"],
            row["priority"],
            row["action"],
            row["match"],
            row["name"] or "",
            frozenset(dps[u] for u in row["datapaths"] if u in dps),
        )
        for row in sorted(sb.rows("ACL"), key=lambda r: r["key"])
    )
    return Names(
        ports=ports,
        switches={dp["tunnel_key"]: dp["name"] for dp in sb.rows("Datapath_Binding")},
        acls=acls,
        vifs={vif.ofport: name for name, vif in local.vifs.items()},
        tunnels={ofport: chassis for chassis, ofport in local.tunnel_ofports.items()},
        uplinks={ofport: network for network, ofport in local.localnets.items()},
    )


def _addresses(sb: Snapshot, port: str) -> tuple[PortAddresses, ...]:
    row = sb.one("Port_Binding", logical_port=port)
    if row is None:
        return ()
    return parse_network(tuple(row["addresses"]), ()).addresses


def _owner_of_ip(sb: Snapshot, ip: int, version: int, dp_key: int | None) -> int | None:
    """The MAC of the port (of datapath dp_key, if given) whose addresses list ip."""
    dps = {dp.uuid: dp["tunnel_key"] for dp in sb.rows("Datapath_Binding")}
    wanted = ipaddress.ip_address(ip) if version == 4 else ipaddress.IPv6Address(ip)
    for row in sorted(sb.rows("Port_Binding"), key=lambda r: r["logical_port"]):
        if dp_key is not None and dps.get(row["datapath"]) != dp_key:
            continue
        for entry in parse_network(tuple(row["addresses"]), ()).addresses:
            if wanted in entry.ips:
                return entry.mac.value
    return None


def _datapath_of_mac(sb: Snapshot, mac: int) -> int | None:
    dps = {dp.uuid: dp["tunnel_key"] for dp in sb.rows("Datapath_Binding")}
    for row in sb.rows("Port_Binding"):
        if mac in parse_network(tuple(row["addresses"]), ()).macs:
            return dps.get(row["datapath"])
    return None


def complete_packet(packet: Packet, sb: Snapshot, inport: str | None, dp_key: int | None) -> Packet:
    """The packet with eth.src, its source IP and eth.dst filled in where the SB knows them
    (the inport's first address; the MAC of the port with the destination IP); InvalidInput
    if eth.dst is still unknown."""
    values = dict(packet.values)
    mine = _addresses(sb, inport) if inport is not None else ()
    if mine:
        values.setdefault("eth.src", mine[0].mac.value)
        source = {"ip4": "ip4.src", "ip6": "ip6.src", "arp": "arp.spa"}.get(packet.l3 or "")
        ips = mine[0].ipv6 if packet.l3 == "ip6" else mine[0].ipv4
        if source is not None and ips:
            values.setdefault(source, int(ips[0]))
    if "eth.dst" not in values:
        if packet.l3 in ("arp", "rarp") or packet.nd is not None:
            values["eth.dst"] = 0xFFFFFFFFFFFF if packet.l3 in ("arp", "rarp") else 0x333300000001
        for name, version in (("ip4.dst", 4), ("ip6.dst", 6)):
            if "eth.dst" not in values and name in values:
                found = _owner_of_ip(sb, values[name], version, dp_key)
                if found is not None:
                    values["eth.dst"] = found
    if "eth.dst" not in values:
        raise InvalidInput(
            "say the packet's eth.dst (no port's addresses list its ip4.dst or ip6.dst)"
        )
    return Packet(values, packet.l3, packet.l4, inport, packet.nd)


async def _dump(path: str, timeout: float) -> FlowSet:
    try:
        conn = await OpenFlowConnection.open(path, timeout=timeout)
    except LiveportError as exc:
        raise TraceError(f"cannot reach the switch at {path}: {exc}") from None
    async with conn:
        try:
            return await conn.dump_flows(*cookies.ALL, timeout=timeout)
        except CodecError as exc:
            raise TraceError(f"the flows at {path} cannot be read: {exc}") from None


def _snapshot(remote: str, database: str, tables: Any, what: str, timeout: float) -> Snapshot:
    try:
        helper = fetch_schema(remote, database, timeout) if database != schema.SB_NAME else None
        with OvsdbClient(remote, database, tables, schema=helper, name=what) as client:
            return client.wait_connected(timeout)
    except LiveportError as exc:
        raise TraceError(f"cannot read the {what} at {remote}: {exc}") from None


def trace(
    sb_remote: str,
    access: SwitchAccess,
    description: str,
    *,
    inport: str | None = None,
    from_chassis: str | None = None,
    switch: str | None = None,
    timeout: float = 10.0,
) -> Trace:
    """Traces the described packet through chassis access.chassis' switch."""
    packet = parse_packet(description)  # bad input fails before any connection
    if packet.inport is not None and inport is not None and packet.inport != inport:
        raise InvalidInput(f"the description's inport {packet.inport!r} is not --inport {inport!r}")
    inport = inport or packet.inport
    if (inport is None) == (from_chassis is None):
        raise InvalidInput("say where the packet enters: an inport or --from-chassis (one)")
    ovs = _snapshot(
        access.ovs_remote,
        schema.VSWITCH_NAME,
        localswitch.OVS_TABLES,
        f"Open_vSwitch database of {access.chassis}",
        timeout,
    )
    identity = localswitch.read_identity(ovs)
    if identity.chassis != access.chassis:
        raise InvalidInput(
            f"the Open_vSwitch database at {access.ovs_remote} is chassis "
            f"{escape(str(identity.chassis), 80)}'s, not {access.chassis}'s"
        )
    local = localswitch.read_local(ovs, identity)
    if local.bridge_uuid is None:
        raise NotFound(f"chassis {access.chassis} has no bridge {identity.bridge}")
    sb = _snapshot(sb_remote, schema.SB_NAME, SB_TABLES, "SB", timeout)
    dp_key = _switch_key(sb, switch, packet, inport)
    if inport is not None:
        vif = local.vifs.get(inport)
        if vif is None:
            raise NotFound(f"port {inport!r} has no VIF on chassis {access.chassis}")
        in_port, tunnel_id = vif.ofport, 0
        entry = f"port {inport}"
        ovs_flow = f"in_port={in_port}"
    else:
        assert from_chassis is not None
        tunnel = local.tunnels.get(from_chassis)
        if tunnel is None or tunnel.ofport is None:
            raise NotFound(f"chassis {access.chassis} has no tunnel from {from_chassis!r}")
        if dp_key is None:
            raise InvalidInput(
                "say which switch the packet belongs to (--switch): its tunnel key is the "
                "tunnel's VNI"
            )
        in_port, tunnel_id = tunnel.ofport, dp_key
        entry = f"tunnel from chassis {from_chassis} (VNI {dp_key})"
        ovs_flow = (
            f"in_port={in_port},tun_id={dp_key:#x},tun_src={tunnel.remote_ip},"
            f"tun_dst={identity.encap_ip}"
        )
    packet = complete_packet(packet, sb, inport, dp_key)
    frame = build_frame(packet)
    flows = asyncio.run(_dump(access.mgmt_path(identity.bridge), timeout))
    _, events, _ = Switch(flows).trace(packet_fields(frame, in_port, tunnel_id))
    names = names_of(sb, local)
    return Trace(
        access.chassis,
        identity.bridge,
        entry,
        packet,
        frame,
        in_port,
        tunnel_id,
        ovs_flow,
        len(flows),
        explain(events, names),
        names,
    )


def _switch_key(sb: Snapshot, switch: str | None, packet: Packet, inport: str | None) -> int | None:
    """The tunnel key of the switch the packet belongs to: named, the inport's, the one
    whose port has eth.dst (or the destination IP), or the only one."""
    dps = list(sb.rows("Datapath_Binding"))
    if switch is not None:
        found = [dp for dp in dps if dp["name"] == switch]
        if not found:
            raise NotFound(f"unknown switch {switch!r}")
        return int(found[0]["tunnel_key"])
    if inport is not None:
        row = sb.one("Port_Binding", logical_port=inport)
        if row is None:
            raise NotFound(f"unknown port {inport!r} (no Port_Binding)")
        dp = sb.get("Datapath_Binding", row["datapath"])
        return int(dp["tunnel_key"]) if dp is not None else None
    mac = packet.values.get("eth.dst")
    for name, version in (("ip4.dst", 4), ("ip6.dst", 6)):
        if mac is None and name in packet.values:
            mac = _owner_of_ip(sb, packet.values[name], version, None)
    found_key = _datapath_of_mac(sb, mac) if mac is not None else None
    if found_key is not None:
        return found_key
    return int(dps[0]["tunnel_key"]) if len(dps) == 1 else None
