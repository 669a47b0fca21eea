"""The OpenFlow pipeline of br-int, compiled from a chassis' view of the network.

`compile_flows(view) -> FlowSet` is pure. Tables (each declares the match fields its flows
may use, and every compiled flow is checked against that declaration):

  0  CLASSIFY     a packet from a local VIF gets its datapath (metadata) and logical inport
                  (reg14); a packet from a tunnel gets the datapath from its Geneve VNI and
                  reg10[0] = "came from a tunnel". A pending destination's VIF also has the
                  activation flows here (announcements of the port's MAC / IPs).
  5  GATE         holds only flows learned at activation: they set reg9[0] = gate open.
  10 PORT_SEC     source MAC (and IP where the port says so) of traffic from a VIF; a
                  pending port's traffic also needs the gate open.
  15 ACL_IN_PRE   from-lport ACLs (model.acl): a stateful switch sends IP packets to the
  16 ACL_IN       tracker in the inport's zone (reg12), then the ACLs judge them.
  20 DHCP         a port's DHCPv4/DHCPv6 requests go to the agent, which answers them
                  (model.dhcp_server); the owner's flows only.
  30 L2_LOOKUP    destination MAC -> logical outport (reg15); broadcast, multicast and
                  unknown unicast are flooded to the datapath's local ports and other chassis.
  40 OUTPUT       per logical outport: deliver to the local VIF, or tunnel to the chassis
                  that own the port (the owner, and the destination during a migration) --
                  only for unicast from a local VIF: never for traffic that came from a
                  tunnel (split horizon, reg10[0]) nor for a flood (reg10[1]), which
                  FLOOD_REMOTE copies to each chassis once. Local delivery loads the
                  outport's conntrack zone and goes through the to-lport ACLs.
  41 FLOOD_LOCAL  a large datapath's local flood, in chunks chained by reg13 (an OpenFlow
                  message holds at most 64 KB of actions).
  45 FLOOD_REMOTE a datapath's flood to every other chassis that hosts its ports.
  46 ACL_OUT_PRE  to-lport ACLs, in the outport's zone; they end in DELIVER.
  47 ACL_OUT
  50 DELIVER      per local port: output to its VIF. A pending port's delivery is blocked
                  here until a flow learned at activation overrides it.

A flood outputs straight to the VIFs of ports this chassis owns outside any migration, and
goes through OUTPUT (gate, hairpin check) only for pending or migrating ports, or on a
switch with ACLs (the to-lport ACLs judge each copy): OVS allows a packet 4096 resubmits, a
switch may have more ports than that.

Tunnels carry only the datapath key (Geneve VNI, 24 bits); the receiving chassis does its
own L2 lookup. A flooded frame is never delivered back to the port that owns its source
MAC (hairpin), which matters while a VM has a VIF on two chassis.

Every flow carries a cookie (model.cookies): liveport's mark, the kind of flow, and the
datapath and port it belongs to. Learned flows get their own kind so they can be deleted
per port.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from liveport.model import acl as acls
from liveport.model import dhcp_server
from liveport.model.acl import AclView, Direction, Stage
from liveport.model.addr import BROADCAST, Mac
from liveport.model.binding import (
    ClaimReport,
    LocalRole,
    MigrationState,
    MigrationStatus,
    PortState,
    decide_binding,
)
from liveport.model.carried import Connection, carried_flows
from liveport.model.cookies import Kind, cookie
from liveport.model.flows import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_RARP,
    FIELD_BITS,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    VLAN_PRESENT,
    Action,
    Controller,
    Flow,
    FlowError,
    FlowSet,
    Learn,
    LearnLoadValue,
    LearnMatchValue,
    LearnOutputField,
    Load,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    check_ct_flow,
    match,
)
from liveport.model.logical import PortNetwork, Strategy, parse_network


class Table(IntEnum):
    CLASSIFY = 0
    GATE = 5
    PORT_SEC = 10
    ACL_IN_PRE = 15
    ACL_IN = 16
    DHCP = 20
    L2_LOOKUP = 30
    OUTPUT = 40
    FLOOD_LOCAL = 41
    FLOOD_REMOTE = 45
    ACL_OUT_PRE = 46
    ACL_OUT = 47
    DELIVER = 50


_ARP_FIELDS = {"arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"}
TABLE_FIELDS: Mapping[Table, frozenset[str]] = {
    Table.CLASSIFY: frozenset(
        {
            "in_port",
            "vlan_vid",
            "tunnel_id",
            "eth_src",
            "eth_type",
            "ip_proto",
            "icmpv6_type",
            "icmpv6_code",
            "ipv6_nd_target",
            *_ARP_FIELDS,
        }
    ),
    Table.GATE: frozenset({"metadata", "reg14"}),
    Table.PORT_SEC: frozenset(
        {
            "metadata",
            "reg14",
            "reg9",
            "eth_src",
            "eth_type",
            "ipv4_src",
            "ipv4_dst",
            "ip_proto",
            "udp_src",
            "udp_dst",
            "ipv6_src",
            *_ARP_FIELDS,
        }
    ),
    Table.L2_LOOKUP: frozenset({"metadata", "eth_dst"}),
    Table.OUTPUT: frozenset({"metadata", "reg15", "reg10", "eth_src"}),
    Table.FLOOD_LOCAL: frozenset({"metadata", "reg13"}),
    Table.FLOOD_REMOTE: frozenset({"metadata", "reg10"}),
    Table.DELIVER: frozenset({"metadata", "reg15"}),
    Table.DHCP: frozenset(
        {"metadata", "reg14", "eth_type", "ip_proto", "udp_src", "udp_dst", "ipv4_dst"}
    ),
    # ACL matches may test any packet field, the port registers and the tracker's state.
    **dict.fromkeys(
        (Table.ACL_IN_PRE, Table.ACL_IN, Table.ACL_OUT_PRE, Table.ACL_OUT),
        frozenset(FIELD_BITS) - {"in_port", "tunnel_id"} - {f"reg{i}" for i in range(9, 14)},
    ),
}

# Registers.
R_INPORT = "reg14"
R_OUTPORT = "reg15"
R_FLAGS = "reg10"  # bit 0: the packet came from a tunnel; bit 1: it is being flooded
R_GATE = "reg9"  # bit 0: a pending port's gate is open (set by a learned flow)
R_CHUNK = "reg13"  # which chunk of a large local flood comes next
R_ZONE = "reg12"  # the conntrack zone of the port whose ACLs judge the packet (bits 0..15)
FLOOD_CHUNK = 1000  # actions per flood flow: well under OpenFlow's 64 KB per message
FLAG_FROM_TUNNEL = 1
FLAG_FLOOD = 2
FLAG_FROM_LOCALNET = 4  # the packet came in from the physical network (a localnet port)
# What OUTPUT may copy to other chassis: a frame from a local VIF looked up by its MAC.
# A flood has its own copy to every other chassis (FLOOD_REMOTE), and a frame that came
# from a tunnel never leaves through one (split horizon).
LOCAL_UNICAST = (0, FLAG_FROM_TUNNEL | FLAG_FLOOD)
# What may leave through a localnet port: neither from a tunnel nor from the physical
# network itself (split horizon).
TO_PHYSICAL = (0, FLAG_FROM_TUNNEL | FLAG_FROM_LOCALNET)

# Activation userdata: b"LPA" + version, then strategy, datapath key, port key.
ACTIVATION_USERDATA = struct.Struct("!3sBBIH")
USERDATA_MAGIC = b"LPA"
_STRATEGY_CODE = {Strategy.RARP: 1, Strategy.GARP: 2, Strategy.NA: 3}
_CODE_STRATEGY = {v: k for k, v in _STRATEGY_CODE.items()}

# Where each direction's ACLs run, and where a packet they let through goes on.
STAGE_IN = Stage(
    Direction.FROM_LPORT, Table.ACL_IN_PRE, Table.ACL_IN, R_ZONE, (Resubmit(Table.DHCP),)
)
STAGE_OUT = Stage(
    Direction.TO_LPORT, Table.ACL_OUT_PRE, Table.ACL_OUT, R_ZONE, (Resubmit(Table.DELIVER),)
)
STAGES = {Direction.FROM_LPORT: STAGE_IN, Direction.TO_LPORT: STAGE_OUT}
ACL_COOKIE_PORT = {Direction.FROM_LPORT: 1, Direction.TO_LPORT: 2}


@dataclass(frozen=True)
class Activation:
    strategy: Strategy
    dp_key: int
    port_key: int


def activation_userdata(strategy: Strategy, dp_key: int, port_key: int) -> bytes:
    return ACTIVATION_USERDATA.pack(USERDATA_MAGIC, 1, _STRATEGY_CODE[strategy], dp_key, port_key)


def parse_activation_userdata(data: bytes) -> Activation | None:
    if len(data) < ACTIVATION_USERDATA.size:
        return None
    magic, version, code, dp_key, port_key = ACTIVATION_USERDATA.unpack_from(data)
    if magic != USERDATA_MAGIC or version != 1 or code not in _CODE_STRATEGY:
        return None
    return Activation(_CODE_STRATEGY[code], dp_key, port_key)


# ----- the view a chassis compiles from -------------------------------------------------------


@dataclass(frozen=True)
class LocalVif:
    iface_id: str
    ofport: int
    migration_status: MigrationStatus | None = None


@dataclass(frozen=True)
class PortView:
    """One Port_Binding of a datapath that has a port on this chassis."""

    name: str
    dp_key: int
    key: int
    addresses: tuple[str, ...] = ()
    port_security: tuple[str, ...] = ()
    owner: str | None = None
    destination: str | None = None
    migration_state: MigrationState | None = None
    strategy: frozenset[Strategy] = frozenset(Strategy)
    enabled: bool = True  # Logical_Switch_Port.enabled: false drops all to and from it
    source: str | None = None  # the chassis a migration moves the port from
    dhcpv4: tuple[tuple[str, str], ...] = ()  # native DHCP options (cidr among them)
    dhcpv6: tuple[tuple[str, str], ...] = ()
    kind: str = ""  # the NB port type: "" (a VIF) or "localnet"
    network: str | None = None  # a localnet port's physical network (options:network_name)
    tag: int | None = None  # its VLAN

    def __hash__(self) -> int:
        # The compiler's cache hashes every port on every pass: hash the fields once.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(
                (
                    self.name,
                    self.dp_key,
                    self.key,
                    self.addresses,
                    self.port_security,
                    self.owner,
                    self.destination,
                    self.migration_state,
                    self.strategy,
                    self.enabled,
                    self.source,
                    self.dhcpv4,
                    self.dhcpv6,
                    self.kind,
                    self.network,
                    self.tag,
                )
            )
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def state(self) -> PortState:
        return PortState(self.owner, self.destination, self.migration_state)


@dataclass(frozen=True)
class ChassisView:
    chassis: str
    vifs: Mapping[str, LocalVif] = field(default_factory=dict)  # by iface-id
    tunnels: Mapping[str, int] = field(default_factory=dict)  # remote chassis -> ofport
    ports: Mapping[str, PortView] = field(default_factory=dict)  # by logical port name
    claims: Mapping[str, ClaimReport] = field(default_factory=dict)  # my claims, by port
    activated: frozenset[str] = frozenset()  # ports this chassis saw announce themselves
    # Security groups: the ACLs of each datapath (by tunnel key), sorted by ACL key, and
    # what their matches refer to.
    acls: Mapping[int, tuple[AclView, ...]] = field(default_factory=dict)
    address_sets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    port_groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    zones: Mapping[str, int] = field(default_factory=dict)  # conntrack zone, by iface-id
    # Connections another chassis tracked for a port migrating here (by port name).
    carried: Mapping[str, tuple[Connection, ...]] = field(default_factory=dict)
    # Provider networks: the localnet port of each datapath that has one (datapath key ->
    # port name), and this chassis' patch port to each physical network it maps.
    uplinks: Mapping[int, str] = field(default_factory=dict)
    localnets: Mapping[str, int] = field(default_factory=dict)  # network -> patch ofport

    def uplink(self, dp_key: int) -> tuple[PortView, int] | None:
        """The datapath's localnet port and the patch port its network leaves through here
        (None: the datapath has none, or this chassis does not map its network)."""
        name = self.uplinks.get(dp_key)
        port = self.ports.get(name) if name is not None else None
        if port is None or port.network is None:
            return None
        ofport = self.localnets.get(port.network)
        return (port, ofport) if ofport is not None else None

    def filtered(self, dp_key: int) -> bool:
        """Whether the datapath has ACLs (its local deliveries go through them)."""
        return bool(self.acls.get(dp_key))

    def stateful(self, dp_key: int) -> bool:
        """Whether the datapath tracks connections (model.acl.stateful)."""
        return dp_key in self._stateful

    @functools.cached_property
    def _stateful(self) -> frozenset[int]:
        return frozenset(dp for dp, found in self.acls.items() if acls.stateful(found))

    def role(self, port: PortView) -> LocalRole:
        return decide_binding(
            me=self.chassis,
            port=port.state,
            has_vif=port.name in self.vifs,
            claim=self.claims.get(port.name),
            locally_activated=port.name in self.activated,
        )

    def announcing(self, activation: Activation, in_port: int) -> PortView | None:
        """The port whose activation flow sent this packet-in: the port with its datapath
        and key, whose VIF here is the ofport the announcement came in on (None if there
        is no such port in this view)."""
        port = next(
            (
                p
                for p in self.ports.values()
                if (p.dp_key, p.key) == (activation.dp_key, activation.port_key)
            ),
            None,
        )
        vif = self.vifs.get(port.name) if port is not None else None
        return port if vif is not None and vif.ofport == in_port else None


# ----- compilation --------------------------------------------------------------------------


def check_flow(flow: Flow) -> Flow:
    """Asserts a flow uses only the match fields its table declared (STYLE.md 4)."""
    allowed = TABLE_FIELDS[Table(flow.table)]
    extra = flow.match.names() - allowed
    if extra:
        raise FlowError(f"table {Table(flow.table).name} does not match on {sorted(extra)}: {flow}")
    check_ct_flow(flow.match, flow.actions)
    return flow


def port_macs(port: PortView) -> tuple[int, ...]:
    """The MACs a port's addresses give it (unicast ones; the others are refused)."""
    return parse_network(port.addresses, ()).macs


def mac_winners(ports: Iterable[PortView]) -> dict[tuple[int, int], str]:
    """(datapath, MAC) -> the port that owns the MAC in L2 lookup (lowest key wins)."""
    winners: dict[tuple[int, int], str] = {}
    for port in sorted(ports, key=lambda p: (p.dp_key, p.key)):
        for mac in port_macs(port):
            winners.setdefault((port.dp_key, mac), port.name)
    return winners


def duplicate_macs(ports: Iterable[PortView]) -> dict[str, str]:
    """port name -> a problem text, for ports whose MAC another port of the switch has."""
    seen: dict[tuple[int, int], str] = {}
    problems: dict[str, str] = {}
    for port in sorted(ports, key=lambda p: (p.dp_key, p.key)):
        for mac in port_macs(port):
            first = seen.setdefault((port.dp_key, mac), port.name)
            if first != port.name:
                problems[port.name] = (
                    f"MAC {Mac(mac)} is already used by port {first} of the switch"
                )
    return problems


@dataclass(frozen=True)
class PortInputs:
    """Everything a port's flows depend on: equal inputs, equal flows."""

    port: PortView
    role: LocalRole
    vif: LocalVif | None  # the VIF here, if the port has a role here
    remotes: tuple[int, ...]  # tunnel ofports its traffic goes to
    macs: tuple[int, ...]  # the MACs it wins in its datapath's L2 lookup
    zone: int = 0  # its conntrack zone here (with a VIF)
    carried: tuple[Connection, ...] = ()  # connections to admit (a migration's destination)
    # A port elsewhere reached over the physical network: the actions that send there.
    uplink: tuple[Action, ...] = ()
    # The datapath's localnet port itself, if this chassis maps its network: (patch, tag).
    localnet: tuple[int, int | None] | None = None


# Roles in which a port's VIF here carries its traffic (or is about to).
_DELIVERING = (LocalRole.OWNER, LocalRole.ACTIVATED, LocalRole.PENDING)


def port_inputs(view: ChassisView, port: PortView, macs: tuple[int, ...]) -> PortInputs:
    up = view.uplink(port.dp_key)
    if port.kind == LOCALNET:
        mine = up is not None and up[0].name == port.name
        return PortInputs(
            port,
            LocalRole.NONE,
            None,
            (),
            macs,
            localnet=(up[1], port.tag) if mine and up else None,
        )
    role = view.role(port)
    vif = view.vifs.get(port.name) if role is not LocalRole.NONE else None
    zone = view.zones.get(port.name, 0) if vif is not None else 0
    carried: tuple[Connection, ...] = ()
    if vif is not None and role in _DELIVERING and view.stateful(port.dp_key):
        carried = view.carried.get(port.name, ())
    remotes = remote_targets(view, port, role)
    uplink: tuple[Action, ...] = ()
    if up is not None and remotes and port.destination is None and vif is None:
        # A port another chassis holds outside any migration is reached over the physical
        # network; a migrating one through tunnels to both its chassis (so the physical
        # network never sees its MAC on two chassis).
        remotes, uplink = (), to_physical(up[1], up[0].tag)
    return PortInputs(port, role, vif, remotes, macs, zone, carried, uplink)


LOCALNET = "localnet"


def to_physical(ofport: int, tag: int | None) -> tuple[Action, ...]:
    """Out to the physical network, tagged with the network's VLAN if it has one (and the
    tag taken off again for what the action list does next)."""
    if tag is None:
        return (Output(ofport),)
    return (PushVlan(), SetField("vlan_vid", VLAN_PRESENT | tag), Output(ofport), PopVlan())


def port_flows(inputs: PortInputs) -> tuple[Flow, ...]:
    """A port's flows, each checked against its table's declaration."""
    return tuple(check_flow(f) for f in _port_flows(inputs))


def flood_member(view: ChassisView, port: PortView) -> tuple[Action, ...] | None:
    """How a flood of the port's datapath reaches the port here (None: it does not). A
    flood outputs straight to the VIF of a port this chassis owns outside any migration,
    and goes through OUTPUT (gate, hairpin check, to-lport ACLs) for pending or migrating
    ports and on a switch with ACLs."""
    if port.kind == LOCALNET:
        up = view.uplink(port.dp_key)
        if up is None or up[0].name != port.name:
            return None
        return (Load(R_OUTPORT, port.key), Resubmit(Table.OUTPUT))
    vif = view.vifs.get(port.name)
    if vif is None or not port.enabled:
        return None
    role = view.role(port)
    if role not in _DELIVERING:
        return None
    if role is LocalRole.OWNER and port.destination is None and not view.filtered(port.dp_key):
        return (Output(vif.ofport),)  # OVS never outputs to the in_port
    return (Load(R_OUTPORT, port.key), Resubmit(Table.OUTPUT))


def naming(view: ChassisView, port: PortView) -> tuple[str, ...]:
    """The other chassis the port's owner or destination names (where a flood of its
    datapath must go)."""
    return tuple(sorted({c for c in (port.owner, port.destination) if c and c != view.chassis}))


def compile_flows(view: ChassisView) -> FlowSet:
    """The whole flow table of a chassis, from scratch. The agent keeps it up to date
    incrementally (model.compiler); this is what that must always equal."""
    flows: list[Flow] = []
    local_dps = _local_datapaths(view)
    local_ports = [p for p in view.ports.values() if p.dp_key in local_dps]
    winners = mac_winners(local_ports)
    for port in local_ports:
        macs = tuple(m for m in port_macs(port) if winners[(port.dp_key, m)] == port.name)
        flows.extend(port_flows(port_inputs(view, port, macs)))
    for dp_key in sorted(local_dps):
        ports = sorted((p for p in local_ports if p.dp_key == dp_key), key=lambda p: p.key)
        members = [(p.key, a) for p in ports if (a := flood_member(view, p)) is not None]
        remote = {c for p in ports for c in naming(view, p)}
        if view.uplink(dp_key) is not None:
            remote = set()  # the physical network carries the flood to the other chassis
        flows.extend(
            datapath_flows(
                dp_key, members, sorted(view.tunnels[c] for c in remote if c in view.tunnels)
            )
        )
        ports_here = {p.name: p.key for p in ports}
        for direction in Direction:
            flows.extend(acl_stage(view, dp_key, direction, ports_here).flows)
    return FlowSet.of(flows)


def acl_stage(
    view: ChassisView, dp_key: int, direction: Direction, ports: Mapping[str, int]
) -> acls.StageFlows:
    """A datapath's ACL stage for one direction (ports: the datapath's, name -> key)."""
    stage = STAGES[direction]
    found = [a for a in view.acls.get(dp_key, ()) if a.direction is direction]
    result = acls.stage_flows(
        stage,
        dp_key,
        found,
        view.stateful(dp_key),
        lambda a: acls.match_context(
            a, view.address_sets, view.port_groups, ports, R_INPORT, R_OUTPORT
        ),
        cookie(Kind.ACL, dp_key, ACL_COOKIE_PORT[direction]),
    )
    return acls.StageFlows(tuple(check_flow(f) for f in result.flows), result.problems)


def _local_datapaths(view: ChassisView) -> set[int]:
    """Datapaths with a port whose VIF is on this chassis."""
    return {p.dp_key for p in view.ports.values() if p.name in view.vifs}


def remote_targets(view: ChassisView, port: PortView, role: LocalRole) -> tuple[int, ...]:
    """Tunnel ofports to send the port's traffic to: its owner and, during a migration, its
    destination -- minus this chassis. An activated destination no longer sends to the
    source: the VM runs here."""
    targets: list[str | None]
    if role in (LocalRole.OWNER, LocalRole.ACTIVATED):
        targets = [port.destination] if role is LocalRole.OWNER else []
    else:
        targets = [port.owner, port.destination]
    out = []
    for chassis in targets:
        if chassis and chassis != view.chassis and chassis in view.tunnels:
            out.append(view.tunnels[chassis])
    return tuple(sorted(set(out)))


def _tunnel_actions(dp_key: int, tunnel_ports: Iterable[int]) -> list[Action]:
    ports = list(tunnel_ports)
    if not ports:
        return []
    return [SetField("tunnel_id", dp_key), *(Output(p) for p in ports)]


def _port_flows(inputs: PortInputs) -> list[Flow]:
    port, role, vif, remotes, macs = (
        inputs.port,
        inputs.role,
        inputs.vif,
        inputs.remotes,
        inputs.macs,
    )
    dp, key = port.dp_key, port.key
    c_port = cookie(Kind.PORT, dp, key)
    c_act = cookie(Kind.ACTIVATION, dp, key)
    out: list[Flow] = []
    # L2 lookup: the port's MACs lead to its logical outport.
    for mac in macs:
        out.append(
            Flow(
                Table.L2_LOOKUP,
                100,
                match(metadata=dp, eth_dst=mac),
                (Load(R_OUTPORT, key), Resubmit(Table.OUTPUT)),
                c_port,
            )
        )
    to_remote = _tunnel_actions(dp, remotes)
    if inputs.localnet is not None:
        return out + _localnet_flows(port, *inputs.localnet, c_port)
    if inputs.uplink:
        # Reached over the physical network: what local VIFs send it (not what came in
        # from there or from a tunnel, and not a flood: the flood has its own copy).
        out.append(
            Flow(
                Table.OUTPUT,
                101,
                match(
                    metadata=dp,
                    reg15=key,
                    reg10=(0, FLAG_FROM_TUNNEL | FLAG_FLOOD | FLAG_FROM_LOCALNET),
                ),
                inputs.uplink,
                c_port,
            )
        )
        return out
    if not port.enabled:
        # enabled=false: nothing from its VIF, nothing to it, here or anywhere.
        if vif is not None:
            out.append(Flow(Table.CLASSIFY, 100, match(in_port=vif.ofport), (), c_port))
        out.append(Flow(Table.OUTPUT, 100, match(metadata=dp, reg15=key), (), c_port))
        return out

    if vif is None or role is LocalRole.STANDBY:
        if vif is not None:
            # A VIF that is not the port's here: nothing in, nothing out.
            out.append(Flow(Table.CLASSIFY, 100, match(in_port=vif.ofport), (), c_port))
        if to_remote:
            out.append(
                Flow(
                    Table.OUTPUT,
                    101,
                    match(metadata=dp, reg15=key, reg10=LOCAL_UNICAST),
                    tuple(to_remote),
                    c_port,
                )
            )
        return out

    ingress: tuple[Action, ...] = (
        Load("metadata", dp),
        Load(R_INPORT, key),
        Load(R_ZONE, inputs.zone),
    )
    # Local delivery: the to-lport ACLs judge it, in the port's zone, then DELIVER.
    egress: tuple[Action, ...] = (Load(R_ZONE, inputs.zone), Resubmit(Table.ACL_OUT_PRE))
    network = parse_network(port.addresses, port.port_security)
    out.extend(_carried_flows(inputs, network))
    if role is LocalRole.PENDING:
        out.extend(_activation_flows(port, vif, network, c_act))
        out.append(
            Flow(
                Table.CLASSIFY,
                100,
                match(in_port=vif.ofport),
                (*ingress, Resubmit(Table.GATE), Resubmit(Table.PORT_SEC)),
                c_act,
            )
        )
        out.extend(_port_security_flows(port, network, gated=True, cookie_value=c_act))
        # Local unicast still reaches the source (a flood gets there by FLOOD_REMOTE).
        # Delivery is blocked in DELIVER until a flow learned at activation (priority
        # 1020) opens it.
        out.append(
            Flow(
                Table.OUTPUT,
                101,
                match(metadata=dp, reg15=key, reg10=LOCAL_UNICAST),
                (*to_remote, *egress),
                c_act,
            )
        )
        out.append(Flow(Table.OUTPUT, 100, match(metadata=dp, reg15=key), egress, c_act))
        out.append(Flow(Table.DELIVER, 100, match(metadata=dp, reg15=key), (), c_act))
        return out

    # Owner (or activated destination): deliver, and during a migration copy local traffic
    # to the destination so it can deliver the instant it activates.
    out.append(
        Flow(
            Table.CLASSIFY,
            100,
            match(in_port=vif.ofport),
            (*ingress, Resubmit(Table.PORT_SEC)),
            c_port,
        )
    )
    out.extend(_port_security_flows(port, network, gated=False, cookie_value=c_port))
    out.extend(_dhcp_flows(port, c_port))
    if to_remote:
        out.append(
            Flow(
                Table.OUTPUT,
                101,
                match(metadata=dp, reg15=key, reg10=LOCAL_UNICAST),
                (*to_remote, *egress),
                c_port,
            )
        )
    out.append(Flow(Table.OUTPUT, 100, match(metadata=dp, reg15=key), egress, c_port))
    out.append(
        Flow(Table.DELIVER, 100, match(metadata=dp, reg15=key), (Output(vif.ofport),), c_port)
    )
    for mac in network.macs:
        # Never deliver a port its own frames coming back through a tunnel (hairpin).
        out.append(Flow(Table.OUTPUT, 110, match(metadata=dp, reg15=key, eth_src=mac), (), c_port))
    return out


def _localnet_flows(port: PortView, ofport: int, tag: int | None, c_port: int) -> list[Flow]:
    """A localnet port on a chassis that maps its network: what comes in from the physical
    network (with the network's VLAN) enters the datapath as from this port; what the
    datapath floods goes out there, except what came from there or from a tunnel."""
    dp, key = port.dp_key, port.key
    vid = VLAN_PRESENT | tag if tag is not None else 0
    untag: tuple[Action, ...] = (PopVlan(),) if tag is not None else ()
    return [
        Flow(
            Table.CLASSIFY,
            100,
            match(in_port=ofport, vlan_vid=vid),
            (
                *untag,
                Load("metadata", dp),
                Load(R_INPORT, key),
                Load(R_FLAGS, FLAG_FROM_LOCALNET),
                Resubmit(Table.L2_LOOKUP),
            ),
            c_port,
        ),
        Flow(
            Table.OUTPUT,
            100,
            match(metadata=dp, reg15=key, reg10=TO_PHYSICAL),
            to_physical(ofport, tag),
            c_port,
        ),
    ]


def _dhcp_flows(port: PortView, cookie_value: int) -> list[Flow]:
    """The port's DHCP requests go to the agent (model.dhcp_server)."""
    out: list[Flow] = []
    dp, key = port.dp_key, port.key
    base: dict[str, int | tuple[int, int]] = {"metadata": dp, R_INPORT: key}
    if port.dhcpv4:
        server = dhcp_server.server_v4(dict(port.dhcpv4))
        ask = (Controller(dhcp_server.userdata(4, dp, key)),)
        for dst in {dhcp_server.BROADCAST_V4, *([server] if server else [])}:
            fields = {"eth_type": ETH_IPV4, "ip_proto": IPPROTO_UDP, "udp_src": 68, "udp_dst": 67}
            out.append(
                Flow(
                    Table.DHCP,
                    100,
                    match(**base, **fields, ipv4_dst=int(dst)),
                    ask,
                    cookie_value,
                )
            )
    if port.dhcpv6:
        fields = {"eth_type": ETH_IPV6, "ip_proto": IPPROTO_UDP, "udp_src": 546, "udp_dst": 547}
        out.append(
            Flow(
                Table.DHCP,
                100,
                match(**base, **fields),
                (Controller(dhcp_server.userdata(6, dp, key)),),
                cookie_value,
            )
        )
    return out


def _carried_flows(inputs: PortInputs, network: PortNetwork) -> list[Flow]:
    """On a migration's destination: the flows that admit the connections the source
    tracked for the port (model.conntrack), in both directions' ACL stages."""
    if not inputs.carried:
        return []
    port = inputs.port
    addresses = [ip for a in network.addresses for ip in a.ips]
    c_carried = cookie(Kind.CARRIED, port.dp_key, port.key)
    return [
        *carried_flows(
            STAGE_IN, port.dp_key, R_INPORT, port.key, addresses, inputs.carried, c_carried
        ),
        *carried_flows(
            STAGE_OUT, port.dp_key, R_OUTPORT, port.key, addresses, inputs.carried, c_carried
        ),
    ]


def _port_security_flows(
    port: PortView, network: PortNetwork, *, gated: bool, cookie_value: int
) -> list[Flow]:
    dp, key = port.dp_key, port.key
    base: dict[str, int | tuple[int, int]] = {"metadata": dp, R_INPORT: key}
    if gated:
        base[R_GATE] = (1, 1)
    accept = (Resubmit(Table.ACL_IN_PRE),)
    out: list[Flow] = []

    def allow(**fields: int | tuple[int, int]) -> None:
        out.append(Flow(Table.PORT_SEC, 100, match(**base, **fields), accept, cookie_value))

    if network.open:
        allow()
        return out
    for entry in network.security:
        mac = entry.mac.value
        if not entry.networks:
            allow(eth_src=mac)
            continue
        allow(eth_src=mac, eth_type=ETH_RARP, arp_sha=mac)
        v6 = [n for n in entry.networks if isinstance(n, ipaddress.IPv6Network)]
        for net in entry.networks:
            if isinstance(net, ipaddress.IPv4Network):
                prefix = (int(net.network_address), int(net.netmask))
                allow(eth_src=mac, eth_type=ETH_ARP, arp_sha=mac, arp_spa=prefix)
                allow(eth_src=mac, eth_type=ETH_IPV4, ipv4_src=prefix)
        if any(isinstance(n, ipaddress.IPv4Network) for n in entry.networks):
            # A DHCP DISCOVER/REQUEST comes from 0.0.0.0 before the port has its address.
            allow(
                eth_src=mac,
                eth_type=ETH_IPV4,
                ipv4_src=0,
                ipv4_dst=0xFFFFFFFF,
                ip_proto=IPPROTO_UDP,
                udp_src=68,
                udp_dst=67,
            )
        for net in v6:
            allow(
                eth_src=mac,
                eth_type=ETH_IPV6,
                ipv6_src=(int(net.network_address), int(net.netmask)),
            )
        # Link-local and unspecified sources are what neighbour discovery uses.
        link_local = ipaddress.IPv6Network("fe80::/10")
        allow(
            eth_src=mac,
            eth_type=ETH_IPV6,
            ipv6_src=(int(link_local.network_address), int(link_local.netmask)),
        )
        allow(eth_src=mac, eth_type=ETH_IPV6, ipv6_src=0)
    return out


def _activation_flows(
    port: PortView, vif: LocalVif, network: PortNetwork, cookie_value: int
) -> list[Flow]:
    """Announcements of the port's own MAC (and, for GARP, one of its IPs; for NA, one of
    its IPv6 addresses or its link-local address) open the port inside the datapath:
    `learn` installs the gate and delivery flows, the agent is told, and the announcement
    itself goes on through the pipeline with the gate open."""
    dp, key = port.dp_key, port.key
    learned = cookie(Kind.LEARNED, dp, key)
    gate = Learn(
        Table.GATE,
        1020,
        learned,
        (
            LearnMatchValue("metadata", dp),
            LearnMatchValue(R_INPORT, key),
            LearnLoadValue(R_GATE, 1),
        ),
    )
    deliver = Learn(
        Table.DELIVER,
        1020,
        learned,
        (
            LearnMatchValue("metadata", dp),
            LearnMatchValue(R_OUTPORT, key),
            LearnOutputField("in_port"),
        ),
    )
    out: list[Flow] = []
    for address in network.addresses:
        mac = address.mac.value

        def activate(strategy: Strategy, mac: int = mac, **fields: int) -> None:
            actions: tuple[Action, ...] = (
                gate,
                deliver,
                Controller(activation_userdata(strategy, dp, key)),
                Load("metadata", dp),
                Load(R_INPORT, key),
                Load(R_GATE, 1),
                Resubmit(Table.PORT_SEC),
            )
            out.append(
                Flow(
                    Table.CLASSIFY,
                    1010,
                    match(in_port=vif.ofport, eth_src=mac, **fields),
                    actions,
                    cookie_value,
                )
            )

        if Strategy.RARP in port.strategy:
            activate(Strategy.RARP, eth_type=ETH_RARP, arp_op=3, arp_sha=mac)
        if Strategy.GARP in port.strategy:
            for ip in address.ipv4:
                activate(
                    Strategy.GARP, eth_type=ETH_ARP, arp_sha=mac, arp_spa=int(ip), arp_tpa=int(ip)
                )
        if Strategy.NA in port.strategy:
            targets = {*address.ipv6, address.mac.ipv6_link_local()}
            for target in sorted(targets):
                activate(
                    Strategy.NA,
                    eth_type=ETH_IPV6,
                    ip_proto=IPPROTO_ICMPV6,
                    icmpv6_type=136,
                    icmpv6_code=0,
                    ipv6_nd_target=int(target),
                )
    return out


def datapath_flows(
    dp_key: int,
    members: Iterable[tuple[int, tuple[Action, ...]]],
    remote_ofports: Iterable[int],
) -> tuple[Flow, ...]:
    """A datapath's own flows on a chassis: tunnel classification, the flood to `members`
    (port key -> how the flood reaches it, in key order) and to the tunnels of the other
    chassis hosting its ports."""
    c_dp = cookie(Kind.DATAPATH, dp_key)
    out: list[Flow] = []
    # From a tunnel: the VNI names the datapath.
    out.append(
        Flow(
            Table.CLASSIFY,
            50,
            match(tunnel_id=dp_key),
            (Load("metadata", dp_key), Load(R_FLAGS, FLAG_FROM_TUNNEL), Resubmit(Table.L2_LOOKUP)),
            c_dp,
        )
    )
    chunks: list[list[Action]] = [[]]
    for _, actions in members:
        if len(chunks[-1]) + len(actions) > FLOOD_CHUNK:
            chunks.append([])
        chunks[-1].extend(actions)
    flood: list[Action] = [Load(R_FLAGS, 1, start=1, nbits=1)]  # FLAG_FLOOD
    if len(chunks) == 1:
        flood += [*chunks[0], Resubmit(Table.FLOOD_REMOTE)]
    else:
        flood += [Load(R_CHUNK, 0), Resubmit(Table.FLOOD_LOCAL), Resubmit(Table.FLOOD_REMOTE)]
        for i, chunk in enumerate(chunks):
            more: list[Action] = (
                [Load(R_CHUNK, i + 1), Resubmit(Table.FLOOD_LOCAL)] if i + 1 < len(chunks) else []
            )
            out.append(
                Flow(Table.FLOOD_LOCAL, 100, match(metadata=dp_key, reg13=i), (*chunk, *more), c_dp)
            )
    multicast = (BROADCAST.value & (1 << 40), 1 << 40)
    out.append(
        Flow(Table.L2_LOOKUP, 50, match(metadata=dp_key, eth_dst=multicast), tuple(flood), c_dp)
    )
    out.append(Flow(Table.L2_LOOKUP, 10, match(metadata=dp_key), tuple(flood), c_dp))
    out.append(Flow(Table.DHCP, 0, match(metadata=dp_key), (Resubmit(Table.L2_LOOKUP),), c_dp))
    remote = sorted(set(remote_ofports))
    if remote:
        out.append(
            Flow(
                Table.FLOOD_REMOTE,
                100,
                match(metadata=dp_key, reg10=(0, FLAG_FROM_TUNNEL)),
                tuple(_tunnel_actions(dp_key, remote)),
                c_dp,
            )
        )
    return tuple(check_flow(f) for f in out)
