"""The chassis' own Open_vSwitch database, read as values: who this chassis is, which VIFs
are plugged into the integration bridge, which tunnel ports exist. Pure functions of a
snapshot, plus the operations that converge tunnel ports on what the SB says.

Chassis identity (Open_vSwitch external_ids, as for ovn-controller): system-id (the chassis
name), hostname, liveport-remote (the SB), liveport-encap-type (geneve), liveport-encap-ip,
liveport-bridge (default br-int), and the vhost-user modes it offers:
liveport-vhost-backend (the newest mode its backend implements; it offers every older one)
or liveport-vhost-modes (an explicit list). A VIF is an Interface on the bridge with
external_ids:iface-id and an ofport; external_ids:migration-status=incoming|outgoing is the
hypervisor-driven migration form (M6); external_ids:vhost-compat asks for a vhost-user
mode (the agent records the mode it chose in liveport-vhost-mode, which then stays), and
liveport-vhost-socket (with liveport-vhost-client=true for client mode) asks the agent to
run liveport's vhost-user backend for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from liveport.model.binding import INCOMING, OUTGOING, MigrationStatus
from liveport.model.catalogue import Catalogue
from liveport.model.errors import InvalidInput
from liveport.model.pipeline import LocalVif
from liveport.model.realbackend import CHECK_KEY as BACKEND_CHECK_KEY
from liveport.model.realbackend import DPDK_PORT_TYPES, DpdkSwitch
from liveport.ovsdb.rows import Delete, Insert, Mutate, Op, Ref, Snapshot

OVS_TABLES: dict[str, list[str] | None] = {
    "Open_vSwitch": [
        "external_ids",
        "bridges",
        "other_config",
        "dpdk_initialized",
        "dpdk_version",
        "ovs_version",
    ],
    "Bridge": ["name", "ports", "fail_mode", "protocols", "other_config", "external_ids"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "ofport", "external_ids", "options", "error", "status"],
}
TUNNEL_KEY = "liveport-chassis"  # external_ids key on our tunnel ports
NETWORK_KEY = "liveport-network"  # external_ids key on our patch ports to provider bridges
MAPPINGS_KEY = "ovn-bridge-mappings"  # Open_vSwitch external_ids, OVN's key and format
ZONE_PREFIX = "ct-zone-"  # Bridge external_ids: ct-zone-<iface-id> = the VIF's zone
MAX_ZONE = 65535
MAX_IFACE_ID = 255  # characters: what the SB's Chassis_VIF.iface_id holds


@dataclass(frozen=True)
class Identity:
    chassis: str | None
    hostname: str
    sb_remote: str | None
    encap_type: str
    encap_ip: str | None
    bridge: str
    vhost_backend: str | None = None
    vhost_modes: str | None = None


@dataclass(frozen=True)
class VhostConfig:
    """What the hypervisor asked of a VIF's vhost-user side."""

    iface_uuid: uuid.UUID
    requested: str | None  # external_ids:vhost-compat
    chosen: str | None  # external_ids:liveport-vhost-mode (written by the agent)
    socket: str | None = None
    client: bool = False
    error: str | None = None  # external_ids:liveport-vhost-error (written by the agent)


@dataclass(frozen=True)
class TunnelPort:
    chassis: str
    port_uuid: uuid.UUID
    iface_uuid: uuid.UUID
    remote_ip: str
    ofport: int | None


@dataclass(frozen=True)
class PatchPort:
    """One end of the patch between br-int and a provider bridge."""

    network: str
    bridge_uuid: uuid.UUID
    port_uuid: uuid.UUID
    ofport: int | None


@dataclass(frozen=True)
class LocalState:
    identity: Identity
    bridge_uuid: uuid.UUID | None
    vifs: Mapping[str, LocalVif] = field(default_factory=dict)
    tunnels: Mapping[str, TunnelPort] = field(default_factory=dict)
    duplicates: tuple[str, ...] = ()  # iface-ids plugged twice on this chassis
    vhost: Mapping[str, VhostConfig] = field(default_factory=dict)  # by iface-id
    root_uuid: uuid.UUID | None = None
    offered: str | None = None  # external_ids:liveport-vhost-modes-offered
    invalid: tuple[str, ...] = ()  # iface-ids too long or not printable: never reported
    zones: Mapping[str, int] = field(default_factory=dict)  # conntrack zones, by iface-id
    # Provider networks: network -> bridge (ovn-bridge-mappings), the bridges by name, and
    # the patch ports liveport made (br-int's end, by network; the provider bridges' ends).
    mappings: Mapping[str, str] = field(default_factory=dict)
    bridges: Mapping[str, uuid.UUID] = field(default_factory=dict)
    patches: Mapping[str, PatchPort] = field(default_factory=dict)
    peers: Mapping[str, PatchPort] = field(default_factory=dict)
    mapping_problems: tuple[str, ...] = ()
    # OVS-DPDK: the switch's releases, and what each vhost-user VIF's guest negotiated with
    # it (Interface status:features), by iface-id; the check's last outcome as recorded.
    dpdk: DpdkSwitch = field(default_factory=lambda: DpdkSwitch(False, "", "", False))
    dpdk_negotiated: Mapping[str, int] = field(default_factory=dict)
    backend_check: str | None = None  # external_ids:liveport-vhost-backend-check

    @property
    def localnets(self) -> dict[str, int]:
        """Network -> the ofport of br-int's patch to it (numbered by ovs-vswitchd)."""
        return {n: p.ofport for n, p in self.patches.items() if p.ofport}

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
        vhost_backend=ids.get("liveport-vhost-backend") or None,
        vhost_modes=ids.get("liveport-vhost-modes") or None,
    )


def read_local(snap: Snapshot, identity: Identity) -> LocalState:
    bridge = snap.one("Bridge", name=identity.bridge)
    if bridge is None:
        return LocalState(identity, None)
    vifs: dict[str, LocalVif] = {}
    duplicates: list[str] = []
    tunnels: dict[str, TunnelPort] = {}
    vhost: dict[str, VhostConfig] = {}
    invalid: list[str] = []
    dpdk_negotiated: dict[str, int] = {}
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
            if len(iface_id) > MAX_IFACE_ID or not iface_id.isprintable():
                invalid.append(iface_id)  # the SB could not hold its report
                continue
            text = ids.get("migration-status")
            status = MigrationStatus(text) if text in (INCOMING, OUTGOING) else None
            vif = LocalVif(iface_id, ofport, status)
            if iface_id in vifs:
                duplicates.append(iface_id)
                if vif.ofport > vifs[iface_id].ofport:
                    continue  # keep the one plugged first (lower ofport)
            vifs[iface_id] = vif
            features = iface["status"].get("features", "")
            if iface["type"] in DPDK_PORT_TYPES and features.startswith("0x"):
                with contextlib.suppress(ValueError):
                    dpdk_negotiated[iface_id] = int(features, 16)
            vhost[iface_id] = VhostConfig(
                iface_uuid=iface_uuid,
                requested=ids.get("vhost-compat") or None,
                chosen=ids.get("liveport-vhost-mode") or None,
                socket=ids.get("liveport-vhost-socket") or None,
                client=ids.get("liveport-vhost-client", "") == "true",
                error=ids.get("liveport-vhost-error") or None,
            )
    root = next(snap.rows("Open_vSwitch"), None)
    mappings, problems = parse_mappings(
        root["external_ids"].get(MAPPINGS_KEY, "") if root is not None else ""
    )
    patches, peers = _patches(snap, bridge.uuid)
    return LocalState(
        identity,
        bridge.uuid,
        vifs,
        tunnels,
        tuple(sorted(set(duplicates))),
        vhost,
        root.uuid if root is not None else None,
        root["external_ids"].get("liveport-vhost-modes-offered") if root is not None else None,
        tuple(sorted(set(invalid))),
        _zones(bridge["external_ids"]),
        mappings,
        {b["name"]: b.uuid for b in snap.rows("Bridge")},
        patches,
        peers,
        problems,
        read_dpdk(snap),
        dpdk_negotiated,
        root["external_ids"].get(BACKEND_CHECK_KEY) if root is not None else None,
    )


def read_dpdk(snap: Snapshot) -> DpdkSwitch:
    root = next(snap.rows("Open_vSwitch"), None)
    if root is None:
        return DpdkSwitch(False, "", "", False)
    return DpdkSwitch(
        root["dpdk_initialized"] is True,
        root["dpdk_version"] if isinstance(root["dpdk_version"], str) else "",
        root["ovs_version"] if isinstance(root["ovs_version"], str) else "",
        root["other_config"].get("userspace-tso-enable", "") == "true",
    )


def parse_mappings(text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """ovn-bridge-mappings: `network:bridge[,network:bridge...]`, as OVN reads it; entries
    that are not `word:word` and a network named twice are problems (the first kept)."""
    mappings: dict[str, str] = {}
    problems: list[str] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        network, sep, bridge = entry.partition(":")
        if not sep or not network or not bridge or ":" in bridge:
            problems.append(f"{MAPPINGS_KEY} entry {entry!r} is not NETWORK:BRIDGE")
        elif network in mappings:
            problems.append(f"{MAPPINGS_KEY} maps {network} twice; {mappings[network]} is used")
        else:
            mappings[network] = bridge
    return mappings, tuple(problems)


def _patches(
    snap: Snapshot, int_bridge: uuid.UUID
) -> tuple[dict[str, PatchPort], dict[str, PatchPort]]:
    """liveport's patch ports (marked with the network they lead to): br-int's ends and the
    provider bridges' ends."""
    mine: dict[str, PatchPort] = {}
    peers: dict[str, PatchPort] = {}
    for bridge in snap.rows("Bridge"):
        for port_uuid in bridge["ports"]:
            port = snap.get("Port", port_uuid)
            network = port["external_ids"].get(NETWORK_KEY) if port is not None else None
            if port is None or network is None:
                continue
            iface = next((snap.get("Interface", u) for u in port["interfaces"]), None)
            ofport = iface["ofport"] if iface is not None else None
            found = PatchPort(network, bridge.uuid, port_uuid, ofport if ofport else None)
            (mine if bridge.uuid == int_bridge else peers)[network] = found
    return mine, peers


def patch_names(network: str) -> tuple[str, str]:
    """The names of the patch ports to a network: br-int's end and the provider bridge's."""
    base = network if len(network) <= 10 else hashlib.sha1(network.encode()).hexdigest()[:10]  # noqa: S324
    return f"lpn-{base}", f"lpn-{base}-p"


def patch_ops(state: LocalState) -> list[Op]:
    """Ops that make br-int hold one patch to each mapped network whose bridge exists (the
    provider bridge holding the other end); liveport's patches nothing maps, or half
    patches, go (and are made again whole)."""
    if state.bridge_uuid is None:
        return []
    wanted = {
        n: state.bridges[b]
        for n, b in state.mappings.items()
        if b in state.bridges and state.bridges[b] != state.bridge_uuid
    }
    whole = {
        n
        for n, bridge in wanted.items()
        if n in state.patches and n in state.peers and state.peers[n].bridge_uuid == bridge
    }
    ops: list[Op] = []
    for network, patch in [*state.patches.items(), *state.peers.items()]:
        if network not in whole:
            ops.append(Mutate("Bridge", patch.bridge_uuid, "ports", "remove", patch.port_uuid))
            ops.append(Delete("Port", patch.port_uuid))
    for network, bridge in sorted(wanted.items()):
        if network in whole:
            continue
        inner, outer = patch_names(network)
        ids = {NETWORK_KEY: network}
        for name, peer_name, on in ((inner, outer, state.bridge_uuid), (outer, inner, bridge)):
            iface, port = Ref(f"i-{name}"), Ref(f"p-{name}")
            ops.append(
                Insert(
                    "Interface",
                    {
                        "name": name,
                        "type": "patch",
                        "options": {"peer": peer_name},
                        "external_ids": ids,
                    },
                    name=iface.name,
                )
            )
            ops.append(
                Insert(
                    "Port",
                    {"name": name, "interfaces": [iface], "external_ids": ids},
                    name=port.name,
                )
            )
            ops.append(Mutate("Bridge", on, "ports", "add", port))
    return ops


def _zones(ids: Mapping[str, str]) -> dict[str, int]:
    """The zones recorded in the bridge's external_ids (unusable entries are ignored; a
    zone recorded twice is kept by the first iface-id, in order)."""
    zones: dict[str, int] = {}
    taken: set[int] = set()
    for key, value in sorted(ids.items()):
        if not key.startswith(ZONE_PREFIX) or not value.isdigit():
            continue
        zone = int(value)
        if 1 <= zone <= MAX_ZONE and zone not in taken:
            zones[key[len(ZONE_PREFIX) :]] = zone
            taken.add(zone)
    return zones


def allocate_zones(
    current: Mapping[str, int], vifs: Sequence[str] | frozenset[str] | Mapping[str, object]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """A conntrack zone for every VIF (OVN keeps one per local port, in the same bridge
    external_ids): those recorded are kept, a new VIF gets the lowest free zone, and the
    zones of VIFs that went are released. Returns (zones, added, released)."""
    zones = {i: z for i, z in current.items() if i in vifs}
    released = {i: z for i, z in current.items() if i not in vifs}
    taken = set(zones.values())
    added: dict[str, int] = {}
    candidate = 1
    for iface_id in sorted(i for i in vifs if i not in zones):
        while candidate in taken:
            candidate += 1
        if candidate > MAX_ZONE:
            break  # more VIFs than zones: the rest get none (their ACLs use zone 0)
        zones[iface_id] = added[iface_id] = candidate
        taken.add(candidate)
    return zones, added, released


def zone_ops(state: LocalState, added: Mapping[str, int], released: Mapping[str, int]) -> list[Op]:
    """Records zones in the bridge's external_ids (and forgets released ones)."""
    if state.bridge_uuid is None:
        return []
    ops: list[Op] = [
        Mutate("Bridge", state.bridge_uuid, "external_ids", "delkey", ZONE_PREFIX + i, None)
        for i in sorted(released)
    ]
    ops += [
        Mutate("Bridge", state.bridge_uuid, "external_ids", "setkey", ZONE_PREFIX + i, str(z))
        for i, z in sorted(added.items())
    ]
    return ops


@dataclass(frozen=True)
class VifModes:
    """The mode of each local VIF, and the VIFs refused because of theirs."""

    modes: Mapping[str, str]
    errors: Mapping[str, str]


def choose_modes(state: LocalState, catalogue: Catalogue, supported: Sequence[str]) -> VifModes:
    """V3: the mode a VIF asked for, or the newest this chassis offers; once chosen it is
    kept (liveport-vhost-mode). A mode that is unknown or not offered here refuses the VIF."""
    modes: dict[str, str] = {}
    errors: dict[str, str] = {}
    for iface_id, config in state.vhost.items():
        wanted = config.chosen or config.requested
        try:
            modes[iface_id] = catalogue.select(wanted, supported).name
        except InvalidInput as exc:
            errors[iface_id] = str(exc)
    return VifModes(modes, errors)


def vhost_ops(state: LocalState, chosen: VifModes, offered: Sequence[str]) -> list[Op]:
    """Records in the local database the modes this chassis offers and each VIF's mode or
    why it was refused (ovn-controller writes its own state back into Interface rows too)."""
    ops: list[Op] = []
    listing = ",".join(offered)
    if state.root_uuid is not None and state.offered != listing:
        ops.append(
            Mutate(
                "Open_vSwitch",
                state.root_uuid,
                "external_ids",
                "setkey",
                "liveport-vhost-modes-offered",
                listing,
            )
        )
    for iface_id, config in state.vhost.items():
        mode = chosen.modes.get(iface_id)
        error = chosen.errors.get(iface_id)
        if mode is not None and config.chosen != mode:
            ops.append(
                Mutate(
                    "Interface",
                    config.iface_uuid,
                    "external_ids",
                    "setkey",
                    "liveport-vhost-mode",
                    mode,
                )
            )
        if error != config.error:
            ops.append(
                Mutate(
                    "Interface",
                    config.iface_uuid,
                    "external_ids",
                    "delkey" if error is None else "setkey",
                    "liveport-vhost-error",
                    error,
                )
            )
    return ops


def backend_check_ops(state: LocalState, text: str | None) -> list[Op]:
    """Records the real back-end check (realbackend) in Open_vSwitch external_ids."""
    if state.root_uuid is None or state.backend_check == text:
        return []
    if text is None:
        return [
            Mutate(
                "Open_vSwitch", state.root_uuid, "external_ids", "delkey", BACKEND_CHECK_KEY, None
            )
        ]
    return [
        Mutate("Open_vSwitch", state.root_uuid, "external_ids", "setkey", BACKEND_CHECK_KEY, text)
    ]


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
