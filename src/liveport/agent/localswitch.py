"""The chassis' own Open_vSwitch database, read as values: who this chassis is, which VIFs
are plugged into the integration bridge, which tunnel ports exist. Pure functions of a
snapshot, plus the operations that converge tunnel ports on what the SB says.

Chassis identity (Open_vSwitch external_ids, as for ovn-controller): system-id (the chassis
name), hostname, liveport-remote (the SB), liveport-encap-type (geneve), liveport-encap-ip,
liveport-bridge (default br-int). A VIF is an Interface on the bridge with
external_ids:iface-id and an ofport; external_ids:migration-status=incoming|outgoing is
the hypervisor-driven migration form (M6).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from liveport.model.binding import INCOMING, OUTGOING
from liveport.model.pipeline import LocalVif
from liveport.ovsdb.rows import Delete, Insert, Mutate, Op, Ref, Snapshot

OVS_TABLES: dict[str, list[str] | None] = {
    "Open_vSwitch": ["external_ids", "bridges", "other_config"],
    "Bridge": ["name", "ports", "fail_mode", "protocols", "other_config"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "ofport", "external_ids", "options", "error"],
}
TUNNEL_KEY = "liveport-chassis"  # external_ids key on our tunnel ports


@dataclass(frozen=True)
class Identity:
    chassis: str | None
    hostname: str
    sb_remote: str | None
    encap_type: str
    encap_ip: str | None
    bridge: str


@dataclass(frozen=True)
class TunnelPort:
    chassis: str
    port_uuid: uuid.UUID
    iface_uuid: uuid.UUID
    remote_ip: str
    ofport: int | None


@dataclass(frozen=True)
class LocalState:
    identity: Identity
    bridge_uuid: uuid.UUID | None
    vifs: Mapping[str, LocalVif] = field(default_factory=dict)
    tunnels: Mapping[str, TunnelPort] = field(default_factory=dict)
    duplicates: tuple[str, ...] = ()  # iface-ids plugged twice on this chassis

    @property
    def tunnel_ofports(self) -> dict[str, int]:
        return {c: t.ofport for c, t in self.tunnels.items() if t.ofport}


def read_identity(snap: Snapshot, chassis_override: str | None = None) -> Identity:
    root = next(snap.rows("Open_vSwitch"), None)
    ids = root["external_ids"] if root is not None else {}
    return Identity(
        chassis=chassis_override or ids.get("system-id"),
        hostname=ids.get("hostname", ""),
        sb_remote=ids.get("liveport-remote"),
        encap_type=ids.get("liveport-encap-type", "geneve"),
        encap_ip=ids.get("liveport-encap-ip"),
        bridge=ids.get("liveport-bridge", "br-int"),
    )


def read_local(snap: Snapshot, identity: Identity) -> LocalState:
    bridge = snap.one("Bridge", name=identity.bridge)
    if bridge is None:
        return LocalState(identity, None)
    vifs: dict[str, LocalVif] = {}
    duplicates: list[str] = []
    tunnels: dict[str, TunnelPort] = {}
    for port_uuid in bridge["ports"]:
        port = snap.get("Port", port_uuid)
        if port is None:
            continue
        for iface_uuid in port["interfaces"]:
            iface = snap.get("Interface", iface_uuid)
            if iface is None:
                continue
            ids = iface["external_ids"]
            ofport = iface["ofport"] or 0
            owner = ids.get(TUNNEL_KEY)
            if owner is not None:
                tunnels[owner] = TunnelPort(
                    owner,
                    port_uuid,
                    iface_uuid,
                    iface["options"].get("remote_ip", ""),
                    ofport if ofport > 0 else None,
                )
                continue
            iface_id = ids.get("iface-id")
            if not iface_id or ofport <= 0:
                continue
            status = ids.get("migration-status")
            if status not in (INCOMING, OUTGOING):
                status = None
            vif = LocalVif(iface_id, ofport, status)
            if iface_id in vifs:
                duplicates.append(iface_id)
                if vif.ofport > vifs[iface_id].ofport:
                    continue  # keep the one plugged first (lower ofport)
            vifs[iface_id] = vif
    return LocalState(identity, bridge.uuid, vifs, tunnels, tuple(sorted(set(duplicates))))


def tunnel_name(chassis: str) -> str:
    name = f"lp-{chassis}"
    if len(name) <= 15:
        return name
    return "lp-" + hashlib.sha1(chassis.encode()).hexdigest()[:12]  # noqa: S324 - a name


def tunnel_ops(state: LocalState, wanted: Mapping[str, str], encap_type: str) -> list[Op]:
    """Ops that make the bridge hold exactly one tunnel port per wanted chassis (name ->
    remote IP), leaving every other port alone."""
    if state.bridge_uuid is None:
        return []
    ops: list[Op] = []
    for chassis, tunnel in state.tunnels.items():
        if wanted.get(chassis) != tunnel.remote_ip:
            ops.append(Mutate("Bridge", state.bridge_uuid, "ports", "remove", tunnel.port_uuid))
            ops.append(Delete("Port", tunnel.port_uuid))
    for chassis, ip in sorted(wanted.items()):
        current = state.tunnels.get(chassis)
        if current is not None and current.remote_ip == ip:
            continue
        name = tunnel_name(chassis)
        iface, port = Ref(f"i-{chassis}"), Ref(f"p-{chassis}")
        ops.append(
            Insert(
                "Interface",
                {
                    "name": name,
                    "type": encap_type,
                    "options": {"remote_ip": ip, "key": "flow"},
                    "external_ids": {TUNNEL_KEY: chassis},
                },
                name=iface.name,
            )
        )
        ops.append(
            Insert(
                "Port",
                {"name": name, "interfaces": [iface], "external_ids": {TUNNEL_KEY: chassis}},
                name=port.name,
            )
        )
        ops.append(Mutate("Bridge", state.bridge_uuid, "ports", "add", port))
    return ops
