"""A whole liveport in memory: NB, SB and three chassis' Open_vSwitch databases
(tests.snapshots.Db), northd's real `plan`, each agent's real `step` and `announce`, and
each chassis' switch as a flowsim.Switch. One logical switch with ports vm1 and vm2 (that
the tests migrate) and a peer; the world applies what the daemons return exactly as the
agent and northd do (see tests/unit/test_migration_properties.py for how it is used).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from liveport.agent import localswitch
from liveport.agent import step as agent_step
from liveport.agent.step import Config, Inputs, Memory, Outcome, announce
from liveport.model import cookies, packets
from liveport.model.addr import Mac
from liveport.model.binding import ClaimReport, LocalRole, claim_report
from liveport.model.catalogue import supported_modes
from liveport.model.cookies import Kind
from liveport.model.flows import FlowSet, apply_diff
from liveport.model.flowsim import Result, Switch, packet_fields
from liveport.model.logical import Strategy
from liveport.model.pipeline import ChassisView, compile_flows
from liveport.northd.northd import all_keys, plan
from liveport.ovsdb import schema
from liveport.ovsdb.client import Condition
from liveport.ovsdb.rows import Op, Row, Snapshot
from liveport.vhostuser.catalogue import load_catalogue

from tests.snapshots import Db, changed_between

DP = 1  # northd gives the only switch the first datapath key
CHASSIS = ("hv1", "hv2", "hv3")
MOVERS = ("vm1", "vm2")
PEER = "peer"
PORTS = (*MOVERS, PEER)
KEY = {"vm1": 1, "vm2": 2, PEER: 3}  # for addresses (tunnel keys are northd's)
OFPORT = {"vm1": 11, "vm2": 12, PEER: 13}
TUN = {"hv1": 101, "hv2": 102, "hv3": 103}
TUN_CHASSIS = {ofport: chassis for chassis, ofport in TUN.items()}
MAC = {p: Mac.parse(f"0a:00:00:00:00:{KEY[p]:02x}") for p in PORTS}
IP4 = {p: ipaddress.IPv4Address(f"10.0.0.{KEY[p]}") for p in PORTS}
IP6 = {p: ipaddress.IPv6Address(f"fd00::{KEY[p]}") for p in PORTS}
ADDRESSES = {p: f"{MAC[p]} {IP4[p]} {IP6[p]}" for p in PORTS}


MAX_ROUNDS = 12  # northd + every agent; a correct system settles in a handful


# ----- the databases, the daemons and the switches --------------------------------------------


CATALOGUE = load_catalogue(environ={}, config_dir=None)
MODES = supported_modes(CATALOGUE)


@dataclass(frozen=True)
class Binding:
    """A Port_Binding's columns that northd decides."""

    owner: str | None
    requested: str | None = None
    destination: str | None = None
    source: str | None = None
    state: str | None = None
    strategy: frozenset[Strategy] = frozenset(Strategy)
    conflicts: frozenset[str] = frozenset()
    up: bool = False


@dataclass(frozen=True)
class Claim:
    """A Port_Claim row (northd inserts/deletes it and sets role; its chassis the rest)."""

    role: str
    installed: str | None = None
    activated: int | None = None

    def report(self, chassis: str) -> ClaimReport:
        return claim_report(chassis, self.role, self.installed, self.activated)


@dataclass
class AgentState:
    """One agent process: its memory, what its SB client has asked for and been given,
    and the snapshots of its last pass (to tell it what changed since)."""

    memory: Memory
    requested: Condition | None = None  # the Port_Binding condition it asked for
    # What the SB server applies; a new client starts with own_conditions' (none).
    applied: Condition = field(default_factory=list)
    last_ovs: Snapshot | None = None
    last_sb: Snapshot | None = None
    checked: ChassisView | None = None  # the last view compared with compile_flows

    @property
    def view(self) -> ChassisView | None:
        return self.memory.view

    @property
    def activated(self) -> frozenset[str]:
        return self.memory.activated


@dataclass(frozen=True)
class NorthdStep:
    """One northd run: what it read and what it wrote."""

    nb: dict[str, dict[str, str]]
    vifs: dict[str, dict[str, str | None]]  # port -> chassis -> migration status (SB)
    alive: frozenset[str]
    before: dict[str, Binding | None]
    after: dict[str, Binding]


def learned_port(cookie_value: int) -> tuple[int, int]:
    return cookies.port_of(cookie_value)


def _selects(clause: list[Any], row: Row) -> bool:
    column, op, value = clause
    assert op == "=="
    actual: object = row[column]
    if isinstance(value, list):  # ["uuid", "..."]
        return str(actual) == str(value[1])
    return bool(actual == value)


def _filtered(rows: Mapping[uuid.UUID, Row], condition: Condition) -> dict[uuid.UUID, Row]:
    """The rows an OVSDB monitor condition (clauses OR-ed; [] = none) selects."""
    return {u: r for u, r in rows.items() if any(_selects(c, r) for c in condition)}


def _identity(chassis: str) -> dict[str, str]:
    return {
        "system-id": chassis,
        "hostname": f"host-{chassis}",
        "liveport-encap-ip": f"198.18.0.{CHASSIS.index(chassis) + 1}",
    }


class World:
    """NB, SB, the hypervisors' databases and switches, northd and three agents."""

    def __init__(self, peer_home: str) -> None:
        self.peer_home = peer_home
        self.nb: dict[str, dict[str, str]] = {p: {} for p in PORTS}
        self.hv: dict[str, dict[str, str | None]] = {c: {} for c in CHASSIS}
        self.alive: set[str] = set(CHASSIS)
        self.nb_db = Db(schema.northbound_path(), "nb")
        self.nb_db.insert("NB_Global")
        self.lsps = {
            p: self.nb_db.insert("Logical_Switch_Port", name=p, addresses={ADDRESSES[p]})
            for p in PORTS
        }
        self.nb_db.insert("Logical_Switch", name="ls0", ports=set(self.lsps.values()))
        self.sb_db = Db(schema.southbound_path(), "sb")
        self.sb_db.insert("SB_Global")
        self.ovs_db: dict[str, Db] = {}
        self.configs: dict[str, Config] = {}
        for chassis in CHASSIS:
            db = Db(schema.vswitch_path(), f"ovs-{chassis}")
            bridge = db.insert("Bridge", name="br-int")
            db.insert("Open_vSwitch", external_ids=_identity(chassis), bridges={bridge})
            self.ovs_db[chassis] = db
            identity = localswitch.read_identity(db.snapshot())
            self.configs[chassis] = Config(identity, CATALOGUE, MODES)
        self.agents = {c: AgentState(Memory(self.configs[c])) for c in CHASSIS}
        self.switches = {c: Switch(FlowSet()) for c in CHASSIS}
        self.packet_ins: dict[str, list[tuple[bytes, int]]] = {c: [] for c in CHASSIS}
        self.events: dict[str, list[str]] = {c: [] for c in CHASSIS}  # what agents logged
        self.clock = 1000
        self.on_install: Callable[[str, ChassisView], None] | None = None  # after a pass

    # ----- what the databases say ---------------------------------------------------------

    @property
    def pb(self) -> dict[str, Binding]:
        out = {}
        for row in self.sb_db.rows("Port_Binding").values():
            out[row["logical_port"]] = Binding(
                owner=row["chassis"],
                requested=row["requested_chassis"],
                destination=row["migration_destination"],
                source=row["migration_source"],
                state=row["migration_state"],
                strategy=frozenset(Strategy(s) for s in row["activation_strategy"]),
                conflicts=frozenset(row["conflicts"]),
                up=bool(row["up"]),
            )
        return out

    @property
    def claims(self) -> dict[str, dict[str, Claim]]:
        out: dict[str, dict[str, Claim]] = {p: {} for p in PORTS}
        for row in self.sb_db.rows("Port_Claim").values():
            out.setdefault(row["logical_port"], {})[row["chassis"]] = Claim(
                row["role"], row["installed"], row["activated"]
            )
        return out

    @property
    def sb_vifs(self) -> dict[str, dict[str, str | None]]:
        out: dict[str, dict[str, str | None]] = {c: {} for c in CHASSIS}
        for row in self.sb_db.rows("Chassis_VIF").values():
            out.setdefault(row["chassis"], {})[row["iface_id"]] = row["migration_status"]
        return out

    def vifs_of(self, port: str) -> dict[str, str | None]:
        vifs = self.sb_vifs
        return {c: vifs[c][port] for c in CHASSIS if port in vifs[c]}

    # ----- northd ---------------------------------------------------------------------

    def northd_run(self) -> NorthdStep:
        for port, options in self.nb.items():
            lsp = self.nb_db.rows("Logical_Switch_Port")[self.lsps[port]]
            if dict(lsp["options"]) != options:
                self.nb_db.update("Logical_Switch_Port", self.lsps[port], options=dict(options))
        before = self.pb
        step = NorthdStep(
            nb=copy.deepcopy(self.nb),
            vifs={p: self.vifs_of(p) for p in PORTS},
            alive=frozenset(self.alive),
            before={p: before.get(p) for p in PORTS},
            after={},
        )
        nb, sb = self.nb_db.snapshot(), self.sb_db.snapshot()
        batch = plan(nb, sb, frozenset(self.alive), all_keys(nb, sb))
        self.sb_db.transact(batch.sb_ops)
        self.nb_db.transact(batch.nb_ops)
        step.after.update(self.pb)
        return step

    # ----- the hypervisors' databases -------------------------------------------------------

    def _sync_vifs(self, chassis: str) -> None:
        """The chassis' Open_vSwitch database holds exactly the VIFs the hypervisor has."""
        db = self.ovs_db[chassis]
        bridge_uuid = db.find("Bridge", name="br-int")
        bridge = db.rows("Bridge")[bridge_uuid]
        have: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
        for port_uuid in bridge["ports"]:
            port = db.rows("Port")[port_uuid]
            for iface_uuid in port["interfaces"]:
                iface_id = db.rows("Interface")[iface_uuid]["external_ids"].get("iface-id")
                if iface_id is not None:
                    have[iface_id] = (port_uuid, iface_uuid)
        wanted = self.hv[chassis]
        for iface_id, (port_uuid, _) in have.items():
            if iface_id not in wanted:
                db.update("Bridge", bridge_uuid, ports=frozenset(bridge["ports"]) - {port_uuid})
                bridge = db.rows("Bridge")[bridge_uuid]
        for iface_id, status in wanted.items():
            ids = {"iface-id": iface_id, **({"migration-status": status} if status else {})}
            if iface_id in have:
                iface_uuid = have[iface_id][1]
                current = dict(db.rows("Interface")[iface_uuid]["external_ids"])
                if current.get("migration-status") != status:
                    current.pop("migration-status", None)  # what the agent wrote stays
                    db.update("Interface", iface_uuid, external_ids={**current, **ids})
                continue
            iface = db.insert(
                "Interface", name=f"vif-{iface_id}", ofport=OFPORT[iface_id], external_ids=ids
            )
            port_uuid = db.insert("Port", name=f"vif-{iface_id}", interfaces={iface})
            db.update("Bridge", bridge_uuid, ports=frozenset(bridge["ports"]) | {port_uuid})
            bridge = db.rows("Bridge")[bridge_uuid]

    def _number_tunnels(self, chassis: str) -> None:
        """ovs-vswitchd gives each new tunnel port its OpenFlow number."""
        db = self.ovs_db[chassis]
        for iface_uuid, iface in db.rows("Interface").items():
            remote = iface["external_ids"].get(localswitch.TUNNEL_KEY)
            if remote is not None and not iface["ofport"]:
                db.update("Interface", iface_uuid, ofport=TUN[remote])

    # ----- agents -----------------------------------------------------------------------

    def sb_view(self, chassis: str) -> Snapshot:
        """The agent's SB snapshot: the rows its monitor conditions select."""
        full = self.sb_db.snapshot()
        state = self.agents[chassis]
        tables = {
            "SB_Global": full.table("SB_Global"),
            "Chassis": full.table("Chassis"),
            "Datapath_Binding": full.table("Datapath_Binding"),
            "Chassis_Private": _filtered(full.table("Chassis_Private"), [["name", "==", chassis]]),
            "Chassis_VIF": _filtered(full.table("Chassis_VIF"), [["chassis", "==", chassis]]),
            "Port_Claim": _filtered(full.table("Port_Claim"), [["chassis", "==", chassis]]),
            "Port_Binding": _filtered(full.table("Port_Binding"), state.applied),
            "ACL": full.table("ACL"),
            "Port_Group": full.table("Port_Group"),
            "Address_Set": full.table("Address_Set"),
            "Port_Connections": full.table("Port_Connections"),
        }
        return Snapshot(
            1, tables, connected=True, acked_conditions={"Port_Binding": state.applied or [False]}
        )

    def agent_run(self, chassis: str, *, connected: bool = True) -> None:
        """One pass of the agent, as agent.Agent._pass does it (with connected=False: while
        its SB connection is down; the rows changed until then are handed over all the
        same, as the agent's change log does)."""
        state = self.agents[chassis]
        if state.requested is not None:
            state.applied = state.requested  # the server's answer came before this pass
        self._sync_vifs(chassis)
        ovs, sb = self.ovs_db[chassis].snapshot(), self.sb_view(chassis)
        if not connected:
            sb = Snapshot(sb.seqno, sb._tables, connected=False)
        self.clock += 1
        inputs = Inputs(
            ovs,
            sb,
            changed_between(state.last_ovs, ovs),
            changed_between(state.last_sb, sb),
            self.clock,
        )
        outcome = agent_step.step(state.memory, inputs)
        if outcome.needs_learned:
            switch = self.switches[chassis]
            if switch.learned:
                while self.packet_ins[chassis]:  # the barrier: packet-ins sent come first
                    self.handle_packet_in(chassis)
            learned = frozenset(learned_port(f.cookie) for f in switch.learned)
            outcome = agent_step.step(state.memory, dataclasses.replace(inputs, learned=learned))
        self.events[chassis] += outcome.events
        self.ovs_db[chassis].transact(outcome.ovs_ops)
        self._number_tunnels(chassis)
        self.sb_db.transact(outcome.sb_ops)
        if outcome.condition is not None:
            state.requested = outcome.condition
        if outcome.installed:
            self._apply_flows(chassis, outcome)
        state.memory = outcome.memory
        state.last_ovs, state.last_sb = ovs, sb
        self._report(outcome.reports)
        if outcome.installed:
            view = outcome.memory.view
            assert view is not None
            if view != state.checked:
                # The incremental flow table is what a compilation from scratch gives.
                state.checked = view
                assert outcome.memory.table.flows() == compile_flows(view), (
                    f"{chassis}'s incremental flow table differs from a compilation from scratch"
                )
            assert self.switches[chassis].flows == outcome.memory.table.flows()
            if self.on_install is not None:
                self.on_install(chassis, view)

    def _apply_flows(self, chassis: str, outcome: Outcome) -> None:
        change = outcome.flows
        switch = self.switches[chassis]

        def kept(flows: FlowSet) -> FlowSet:
            return FlowSet(
                {
                    k: f
                    for k, f in flows.flows.items()
                    if not any(f.cookie & m == c & m for c, m in change.delete_cookies)
                }
            )

        flows = apply_diff(kept(switch.flows), change.diff)
        # Connections outlive flow changes, as in OVS's conntrack.
        self.switches[chassis] = Switch(flows, kept(switch.learned), switch.conntrack)

    def _report(self, ops: Iterable[Op]) -> None:
        """Reports on rows northd deleted meanwhile fail, as they would on a server: the
        agent retries on its next pass."""
        with contextlib.suppress(KeyError):
            self.sb_db.transact(ops)

    def handle_packet_in(self, chassis: str) -> None:
        """agent.Agent._on_packet_in for the oldest queued packet-in."""
        if not self.packet_ins[chassis]:
            return
        userdata, in_port = self.packet_ins[chassis].pop(0)
        state = self.agents[chassis]
        self.clock += 1
        announced = announce(state.memory, userdata, in_port, self.clock)
        state.memory = announced.memory
        if announced.claim_op is not None:
            self._report([announced.claim_op])

    def restart_agent(self, chassis: str) -> None:
        """A new agent process: it reads back the flows it owns (Memory.connected); its SB
        client starts over; packet-ins in flight on the old connection are lost."""
        switch = self.switches[chassis]
        dumped = FlowSet({**switch.flows.flows, **switch.learned.flows})
        self.agents[chassis] = AgentState(Memory(self.configs[chassis]).connected(dumped))
        self.packet_ins[chassis] = []

    def converge(self, observe: Callable[[NorthdStep], None] | None = None) -> bool:
        """northd, then every agent (packet-ins first), until nothing changes."""
        for _ in range(MAX_ROUNDS):
            before = self.fingerprint()
            step_ = self.northd_run()
            if observe is not None:
                observe(step_)
            for chassis in CHASSIS:
                while self.packet_ins[chassis]:
                    self.handle_packet_in(chassis)
                self.agent_run(chassis)
            if self.fingerprint() == before:
                return True
        return False

    def fingerprint(self) -> object:
        """Changes with every write anywhere (a write of what was there is a change too: a
        control plane that keeps rewriting the same values does not settle)."""
        return (
            self.sb_db.version,
            self.nb_db.version,
            tuple(self.ovs_db[c].version for c in CHASSIS),
            tuple(self.switches[c] for c in CHASSIS),
            tuple(
                (
                    m.activated,
                    tuple(sorted(m.activations)),
                    m.learned,
                    json.dumps(a.requested),
                    json.dumps(a.applied),
                )
                for a in (self.agents[c] for c in CHASSIS)
                for m in [a.memory]
            ),
        )

    # ----- packets ----------------------------------------------------------------------

    def send(self, chassis: str, frame: bytes, in_port: int) -> Result:
        """A frame from a local port: the switch learns, packet-ins queue for the agent."""
        result, self.switches[chassis] = self.switches[chassis].process(
            packet_fields(frame, in_port)
        )
        self.packet_ins[chassis].extend((u, in_port) for u in result.controller)
        return result

    def probe(self, chassis: str, frame: bytes, from_chassis: str) -> Result:
        """What chassis does with frame from from_chassis' local port: the peer's own VIF
        when it is local, else the tunnel from the peer's chassis. Learns nothing."""
        if from_chassis == chassis:
            fields = packet_fields(frame, OFPORT[PEER])
        else:
            fields = packet_fields(frame, TUN[from_chassis], DP)
        return self.switches[chassis].process(fields)[0]

    def deliveries(self, frame: bytes) -> set[tuple[str, int]]:
        """Every (chassis, VIF ofport) of a plugged VIF the peer's frame reaches."""
        plugged = {(c, OFPORT[p]) for c in CHASSIS for p in self.hv[c]}
        return set(self.outputs(frame)) & plugged

    def outputs(self, frame: bytes) -> list[tuple[str, int]]:
        """Every (chassis, port) the peer's frame leaves by, following tunnels, one entry
        per copy; a tunnel appears as (sending chassis, tunnel ofport)."""
        home = self.peer_home
        first = self.switches[home].process(packet_fields(frame, OFPORT[PEER]))[0]
        out: list[tuple[str, int]] = []
        for ofport, tunnel_id in zip(first.outputs, first.tunnel_ids, strict=True):
            out.append((home, ofport))
            if ofport in TUN_CHASSIS:
                there = TUN_CHASSIS[ofport]
                fields = packet_fields(frame, TUN[home], tunnel_id)
                second = self.switches[there].process(fields)[0]
                out += [(there, q) for q in second.outputs]
        return out

    def key(self, port: str) -> int:
        """The port's tunnel key, as northd allocated it."""
        row = next(r for r in self.sb_db.rows("Port_Binding").values() if r["logical_port"] == port)
        return int(row["tunnel_key"])

    def flow_kinds(self, chassis: str, port: str) -> set[Kind]:
        """Cookie kinds of the flows (installed and learned) chassis holds for port."""
        switch = self.switches[chassis]
        return {
            kind
            for f in (*switch.flows, *switch.learned)
            if learned_port(f.cookie) == (DP, self.key(port))
            and (kind := cookies.kind_of(f.cookie)) is not None
        }

    def role(self, chassis: str, port: str) -> LocalRole | None:
        """The role the chassis' installed flows were compiled for (None: unknown)."""
        view = self.agents[chassis].view
        if view is None or port not in view.ports:
            return None
        return view.role(view.ports[port])


def fresh_like(world: World) -> World:
    """The same NB, VIFs, liveness and owners, in a model that never saw a migration."""
    fresh = World(world.peer_home)
    fresh.nb = copy.deepcopy(world.nb)
    fresh.hv = copy.deepcopy(world.hv)
    fresh.alive = set(world.alive)
    # The same VIFs have the same conntrack zones (recorded in the bridge: an allocation's
    # history is not migration state).
    for chassis in CHASSIS:
        old_db, new_db = world.ovs_db[chassis], fresh.ovs_db[chassis]
        ids = old_db.rows("Bridge")[old_db.find("Bridge", name="br-int")]["external_ids"]
        new_db.update("Bridge", new_db.find("Bridge", name="br-int"), external_ids=dict(ids))
    # Every chassis reports its VIFs, northd creates the bindings; then they are given
    # today's owners, as if they had always been there.
    for chassis in CHASSIS:
        fresh.agent_run(chassis)
    fresh.northd_run()
    owners = {p: b.owner for p, b in world.pb.items()}
    for row_uuid, row in fresh.sb_db.rows("Port_Binding").items():
        fresh.sb_db.update("Port_Binding", row_uuid, chassis=owners.get(row["logical_port"]))
    assert fresh.converge(), "a model without migrations did not settle"
    return fresh


def udp_to(port: str, seq: int = 1) -> bytes:
    return packets.udp_seq(MAC[PEER], MAC[port], IP4[PEER], IP4[port], seq)


def udp_from(port: str) -> bytes:
    return packets.udp_seq(MAC[port], MAC[PEER], IP4[port], IP4[PEER], 1)


def announcement(
    kind: Strategy, mac: Mac, ip4: ipaddress.IPv4Address, ip6: ipaddress.IPv6Address
) -> bytes:
    if kind is Strategy.RARP:
        return packets.rarp(mac)
    if kind is Strategy.GARP:
        return packets.garp(mac, ip4)
    return packets.unsolicited_na(mac, ip6)
