"""The agent's whole decision, as pure functions of values.

`step(memory, inputs) -> Outcome` is one pass of the agent: from the chassis' own
Open_vSwitch database and its view of the SB (snapshots, and which rows changed since the
previous step), what the vhost-user back-ends negotiated, and -- when it asks for it --
which ports have flows learned in the switch, it returns everything the pass does: the
writes to the local database (tunnel ports, vhost-user modes) and to the SB (registration,
VIF reports), the Port_Binding monitor condition to ask for, the flow changes for the
switch, the reports to write once those are installed (claims, nb_cfg), and the new
memory. `announce(memory, ...)` is the same for an announcement arriving.

The agent around it only moves values: read snapshots, call the step, apply (ops, an
OpenFlow bundle and a barrier, the reports), keep the returned memory. What the property
tests check of an agent is therefore the real code.

Incremental: a step looks again only at the ports a change names -- a changed
Port_Binding, Datapath_Binding, claim or VIF, an announcement -- and at those they affect
(model.compiler). What comes from the local database is read again only when it changed.
`Inputs.sb_changed = None` (a first snapshot, a reload) looks at everything.

Memory is a value: a step never changes the memory it is given. Its dictionaries are
copied when they change (at C speed), not walked.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from liveport.agent import localswitch, southbound
from liveport.agent import vhost as agent_vhost
from liveport.agent.localswitch import Identity, LocalState, VifModes
from liveport.agent.security import Security, carried_from, read_security
from liveport.model import cookies, dhcp_server
from liveport.model.acl import Direction, parse_reject_userdata
from liveport.model.binding import (
    ClaimReport,
    LocalRole,
    claim_report,
    installed_state,
    records_activation,
)
from liveport.model.carried import Connection
from liveport.model.catalogue import Catalogue
from liveport.model.compiler import Dirty, FlowChange, FlowTable
from liveport.model.cookies import Kind
from liveport.model.errors import LiveportError
from liveport.model.flows import (
    OFPP_CONTROLLER,
    Action,
    Flow,
    FlowSet,
    Load,
    Output,
    Resubmit,
    diff,
)
from liveport.model.logical import parse_network
from liveport.model.pipeline import (
    LOCALNET,
    R_INPORT,
    ChassisView,
    LocalVif,
    PortView,
    Table,
    parse_activation_userdata,
)
from liveport.model.realbackend import BackendCheck
from liveport.model.realbackend import check as check_backend
from liveport.model.reject import answer
from liveport.model.virtio import Negotiated
from liveport.ovsdb.client import Condition
from liveport.ovsdb.rows import Op, Row, Snapshot, Update

Changed = Mapping[str, frozenset[uuid.UUID]] | None  # None: look at everything
PortKey = tuple[int, int]  # (datapath key, port key)
Backend = tuple[str, bool, str]  # socket, client mode, vhost-user mode


class AgentError(LiveportError):
    pass


def _check_text(check: BackendCheck) -> str | None:
    """What the local database and the SB record of the back-end check: None when the
    chassis' back-end is not OVS-DPDK, "ok: MODE" when nothing is wrong, else the problems."""
    if check.summary:
        return check.summary
    return f"ok: {check.backend}" if check.backend else None


@dataclass(frozen=True)
class Config:
    """What an agent is given at start and keeps."""

    identity: Identity
    catalogue: Catalogue
    modes: tuple[str, ...]  # the vhost-user modes this chassis offers, newest first

    @property
    def me(self) -> str:
        assert self.identity.chassis is not None
        return self.identity.chassis


@dataclass(frozen=True)
class Inputs:
    ovs: Snapshot
    sb: Snapshot
    ovs_changed: Changed = None
    sb_changed: Changed = None
    now_ms: int = 0
    negotiated: Mapping[str, Negotiated | None] = field(default_factory=dict)
    learned: frozenset[PortKey] | None = None  # ports with learned flows (None: not asked)
    # The SB snapshot holds every Port_Binding (a client without a condition, as doctor's):
    # the view cannot be partial, whatever condition the agent would ask for.
    sb_complete: bool = False


@dataclass(frozen=True)
class Memory:
    config: Config
    # From the local database (read again when it changes).
    local: LocalState | None = None
    vif_modes: VifModes = field(default_factory=lambda: VifModes({}, {}))
    vifs: Mapping[str, LocalVif] = field(default_factory=dict)  # bound VIFs (not refused)
    negotiated: Mapping[str, Negotiated | None] = field(default_factory=dict)
    vhost: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # claim reports
    # From the SB, kept up to date row by row.
    views: Mapping[uuid.UUID, PortView] = field(default_factory=dict)  # by Port_Binding
    ports: Mapping[str, PortView] = field(default_factory=dict)  # by port name
    keys: Mapping[PortKey, str] = field(default_factory=dict)  # (dp, port key) -> port
    claim_rows: Mapping[uuid.UUID, Row] = field(default_factory=dict)  # my Port_Claims
    claims: Mapping[str, Row] = field(default_factory=dict)  # by port name
    reports: Mapping[str, ClaimReport] = field(default_factory=dict)  # by port name
    condition: Condition | None = None  # the Port_Binding condition asked for
    applied: Condition | None = None  # the last one seen applied
    # What is installed, and what the switch may hold besides.
    view: ChassisView | None = None
    table: FlowTable = field(default_factory=FlowTable)
    synced: bool = False  # the table is what the switch holds
    installed: FlowSet = field(default_factory=FlowSet)  # what the switch held at connect
    roles: Mapping[str, LocalRole] = field(default_factory=dict)  # ports with a role here
    pending: frozenset[str] = frozenset()
    activated_role: frozenset[str] = frozenset()  # ports whose role here is ACTIVATED
    learned: frozenset[PortKey] = frozenset()  # ports that may hold learned flows
    activated: frozenset[str] = frozenset()  # ports this chassis saw announce themselves
    activations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # to report
    # What changed in steps that could not compile (the view was partial): looked at next.
    unsettled: frozenset[str] = frozenset()
    unsettled_tunnels: frozenset[str] = frozenset()
    unsettled_datapaths: frozenset[int] = frozenset()
    # A step saw a database disconnected: the changes it was given are not in the memory,
    # so the next step reads everything again.
    rescan: bool = False
    # Security groups: conntrack zones of the local VIFs (by iface-id), the ACL state,
    # the connections carried to ports migrating here, and the chassis each local port last
    # migrated from (whose published connections count for it).
    zones: Mapping[str, int] = field(default_factory=dict)
    security: Security = field(default_factory=Security)
    carried: Mapping[str, tuple[Connection, ...]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    acl_problems: Mapping[int, str] = field(default_factory=dict)  # as last logged
    # Provider networks: each datapath's localnet port (by tunnel key), and the localnet
    # ports whose network this chassis does not map (as last logged).
    uplinks: Mapping[int, str] = field(default_factory=dict)
    unmapped: frozenset[str] = frozenset()
    # The published modes and the VIFs checked against the real back-end (OVS-DPDK).
    backend_check: BackendCheck = field(default_factory=lambda: BackendCheck(None))

    def connected(self, switch_flows: FlowSet) -> Memory:
        """A new OpenFlow connection: the switch holds switch_flows (dumped, with liveport's
        cookie). The next step compiles everything and diffs against them, so a restart
        changes nothing that is still right. Learned flows may belong to ports that are no
        longer pending here, and a port whose activation flows are installed may learn some
        before the next step: both are deleted once a step finds the port in another role."""
        learned_mask = cookies.of_kind(Kind.LEARNED)
        installed = FlowSet(
            {
                k: f
                for k, f in switch_flows.flows.items()
                if f.cookie & learned_mask[1] != learned_mask[0]
            }
        )
        return dataclasses.replace(
            self,
            table=FlowTable(),
            synced=False,
            installed=installed,
            learned=frozenset(learning_ports(switch_flows)),
        )


@dataclass(frozen=True)
class Outcome:
    memory: Memory
    ovs_ops: tuple[Op, ...] = ()  # first: tunnel ports, vhost-user modes
    sb_ops: tuple[Op, ...] = ()  # then: registration, VIF reports
    condition: Condition | None = None  # a new Port_Binding condition to ask for
    flows: FlowChange = field(default_factory=FlowChange)  # then one bundle + a barrier
    reports: tuple[Op, ...] = ()  # after the barrier: claims, nb_cfg
    backends: Mapping[str, Backend] | None = None  # liveport back-ends (None: unchanged)
    needs_learned: bool = False  # call the step again with Inputs.learned
    installed: bool = False  # the view was compiled (M9: reports follow the barrier)
    events: tuple[str, ...] = ()  # what to log
    flush_zones: tuple[int, ...] = ()  # conntrack zones released: flush after the flows


def learning_ports(flows: Iterable[Flow]) -> set[PortKey]:
    """(dp, port) of the ports that may hold learned flows in a switch holding flows: those
    with learned flows, and those whose activation flows may learn more at any moment."""
    return {
        cookies.port_of(f.cookie)
        for f in flows
        if cookies.kind_of(f.cookie) in (Kind.LEARNED, Kind.ACTIVATION)
    }


# ----- one pass ------------------------------------------------------------------------------


def step(memory: Memory, inputs: Inputs) -> Outcome:
    """One pass of the agent (see the module's docstring)."""
    if not inputs.ovs.connected or not inputs.sb.connected:
        # Keep the installed flows; never act on a stale view. What changed meanwhile is
        # read again, whole, once both databases are back.
        return Outcome(dataclasses.replace(memory, rescan=True))
    return _Pass(memory, inputs).run()


class _Pass:
    def __init__(self, memory: Memory, inputs: Inputs) -> None:
        self.start = memory
        self.inp = inputs
        self.config = memory.config
        self.me = memory.config.me
        self.events: list[str] = []
        self.dirty: set[str] = set()
        self.tunnels: frozenset[str] = frozenset()
        self.datapaths: frozenset[int] = frozenset()
        self.zone_added: dict[str, int] = {}
        self.zone_released: dict[str, int] = {}
        self.everything = inputs.sb_changed is None or not memory.synced or memory.rescan

    def run(self) -> Outcome:
        m = self._local(self.start)
        ovs_ops, sb_ops = self._ops(m)
        backends = self._backends(m) if m.local is not self.start.local else None
        m = self._views(m)
        condition = self._condition(m)
        asked = condition if condition != self.start.condition else None
        m = dataclasses.replace(m, condition=condition)
        sb = self.inp.sb
        if self.inp.sb_complete or sb.condition_applied("Port_Binding", condition):
            m = dataclasses.replace(m, applied=condition)
        elif not self._covered(m, condition):
            # Before the server applies a new condition the view may be partial, and a
            # partial view would delete flows that are still right. What changed is looked
            # at in the step that compiles.
            m = dataclasses.replace(
                m,
                unsettled=m.unsettled | self.dirty,
                unsettled_tunnels=m.unsettled_tunnels | self.tunnels,
                unsettled_datapaths=m.unsettled_datapaths | self.datapaths,
            )
            return Outcome(m, ovs_ops, sb_ops, asked, backends=backends, events=tuple(self.events))
        self.dirty |= m.unsettled
        self.tunnels |= m.unsettled_tunnels
        self.datapaths |= m.unsettled_datapaths
        m = self._kept_activations(m)
        m = self._carried(m)
        view = ChassisView(
            self.me,
            vifs=m.vifs,
            tunnels=m.local.tunnel_ofports if m.local is not None else {},
            ports=m.ports,
            claims=m.reports,
            activated=m.activated,
            acls=m.security.by_dp,
            address_sets=m.security.sets,
            port_groups=m.security.groups,
            zones=m.zones,
            carried=m.carried,
            uplinks=m.uplinks,
            localnets=m.local.localnets if m.local is not None else {},
        )
        waiting = self._waiting(m, view)
        if waiting:
            # The datapath opens a port by itself (learn); the packet-in that tells us may
            # be lost, or this agent may have been down when it came. Learned flows in the
            # switch are the proof: the agent looks (and takes queued packet-ins first).
            if self.inp.learned is None:
                return Outcome(self.start, needs_learned=True)
            for key in sorted(self.inp.learned):
                name = m.keys.get(key)
                if name in waiting and name not in m.activated:
                    m = _record(m, name, "learned", self.inp.now_ms)
                    self.dirty.add(name)
                    self.events.append(
                        f"port {name}: learned announcement seen in the switch: "
                        "activated in the datapath"
                    )
            view = dataclasses.replace(view, activated=m.activated)
        m, change, names = self._compile(m, view)
        reports, m = self._reports(m, view, names)
        m = self._acl_problems(m)
        m = self._unmapped(m)
        return Outcome(
            m,
            ovs_ops,
            sb_ops,
            asked,
            change,
            reports,
            backends,
            installed=True,
            events=tuple(self.events),
            flush_zones=tuple(sorted(self.zone_released.values())),
        )

    # ----- the local switch --------------------------------------------------------------

    def _local(self, m: Memory) -> Memory:
        """The local database, read again only when it changed; the VIFs that changed (a
        VIF, its vhost-user configuration or mode, what its guest negotiated) are dirty."""
        inp = self.inp
        local = m.local
        if local is None or inp.ovs_changed is None or inp.ovs_changed or m.rescan:
            local = localswitch.read_local(inp.ovs, self.config.identity)
            if local.bridge_uuid is None:
                raise AgentError(f"bridge {self.config.identity.bridge} does not exist")
            if local.duplicates and (m.local is None or local.duplicates != m.local.duplicates):
                self.events.append(
                    f"iface-id plugged twice on this chassis: {', '.join(local.duplicates)}"
                )
            if local.mapping_problems and (
                m.local is None or local.mapping_problems != m.local.mapping_problems
            ):
                self.events.extend(local.mapping_problems)
        if local is m.local and inp.negotiated == m.negotiated:
            return m
        chosen = m.vif_modes
        if local is not m.local:
            chosen = localswitch.choose_modes(local, self.config.catalogue, self.config.modes)
            for iface_id, error in sorted(chosen.errors.items()):
                if m.vif_modes.errors.get(iface_id) != error:
                    self.events.append(f"VIF {iface_id} stays unplugged: {error}")
            old = m.local
            self.tunnels = frozenset(
                c
                for c in set(local.tunnel_ofports) | set(old.tunnel_ofports if old else {})
                if local.tunnel_ofports.get(c)
                != (old.tunnel_ofports.get(c) if old is not None else None)
            )
        # A VIF whose mode cannot be honoured here is not bound and gets no flows.
        vifs = (
            {k: v for k, v in local.vifs.items() if k not in chosen.errors}
            if chosen.errors
            else local.vifs
        )
        vhost = {
            iface_id: agent_vhost.negotiated_map(mode, inp.negotiated.get(iface_id))
            for iface_id, mode in chosen.modes.items()
        }
        self.dirty |= _changed_keys(m.vifs, vifs) | _changed_keys(m.vhost, vhost)
        # An announcement counts only for the VIF it came in on: a VIF that went away takes
        # it along, so a new VIF there must announce itself again (M7).
        activated = frozenset(p for p in m.activated if p in vifs)
        # Every bound VIF has a conntrack zone, recorded in the bridge so that a restart
        # keeps it (and the connections tracked in it).
        zones, self.zone_added, self.zone_released = localswitch.allocate_zones(
            m.zones if m.local is not None else local.zones, vifs
        )
        self.dirty |= set(self.zone_added) | set(self.zone_released)
        backend_check = m.backend_check
        if local is not m.local:
            backend_check = check_backend(
                self.config.catalogue,
                local.dpdk,
                self.config.modes,
                chosen.modes,
                local.dpdk_negotiated,
            )
            if backend_check != m.backend_check:
                if backend_check.backend is not None and (
                    backend_check.backend != m.backend_check.backend
                ):
                    self.events.append(
                        f"vhost-user back-end is OVS-DPDK {local.dpdk.ovs_version} with "
                        f"{local.dpdk.dpdk_version}: mode {backend_check.backend}"
                    )
                for problem in backend_check.problems:
                    if problem not in m.backend_check.problems:
                        self.events.append(f"vhost-user back-end check: chassis {problem}")
                if backend_check.unknown and backend_check.unknown != m.backend_check.unknown:
                    self.events.append(backend_check.unknown)
                if m.backend_check.problems and not backend_check.problems:
                    self.events.append("vhost-user back-end check: no problem left")
        return dataclasses.replace(
            m,
            backend_check=backend_check,
            local=local,
            vif_modes=chosen,
            vifs=vifs,
            negotiated=inp.negotiated,
            vhost=vhost,
            activated=activated,
            activations={p: a for p, a in m.activations.items() if p in activated},
            zones=zones,
            sources={p: c for p, c in m.sources.items() if p in vifs},
        )

    def _ops(self, m: Memory) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        """Writes before the flows: tunnel ports and vhost-user modes in the local database,
        this chassis' registration and its VIF reports in the SB."""
        assert m.local is not None
        sb, changed = self.inp.sb, self.inp.sb_changed
        local_changed = m.local is not self.start.local
        ovs_ops: list[Op] = []
        if local_changed or changed is None or changed.get("Chassis"):
            wanted = southbound.tunnel_endpoints(sb, self.me)
            ovs_ops += localswitch.tunnel_ops(m.local, wanted, self.config.identity.encap_type)
        if local_changed:
            ovs_ops += localswitch.vhost_ops(m.local, m.vif_modes, self.config.modes)
            ovs_ops += localswitch.backend_check_ops(m.local, _check_text(m.backend_check))
            ovs_ops += localswitch.patch_ops(m.local)
            # Zones in the bridge: new ones, released ones, and any the bridge lost.
            recorded = m.local.zones
            missing = {i: z for i, z in m.zones.items() if recorded.get(i) != z}
            gone = {i: z for i, z in recorded.items() if i not in m.zones}
            ovs_ops += localswitch.zone_ops(m.local, missing, gone)
        sb_ops = southbound.registration_ops(
            sb,
            self.config.identity,
            self.inp.now_ms,
            self.config.modes,
            backend_check=_check_text(m.backend_check),
        )
        if (
            local_changed
            or m.vif_modes is not self.start.vif_modes
            or changed is None
            or changed.get("Chassis_VIF")
        ):
            sb_ops += southbound.vif_ops(
                sb, self.me, m.local.vifs, m.vif_modes.modes, m.vif_modes.errors
            )
        return tuple(ovs_ops), tuple(sb_ops)

    def _backends(self, m: Memory) -> Mapping[str, Backend]:
        """The liveport vhost-user back-ends to run, one per VIF that names a socket."""
        assert m.local is not None
        return {
            iface_id: (config.socket, config.client, m.vif_modes.modes[iface_id])
            for iface_id, config in m.local.vhost.items()
            if config.socket and iface_id in m.vif_modes.modes
        }

    # ----- the SB ------------------------------------------------------------------------

    def _views(self, m: Memory) -> Memory:
        """The PortViews, my claims and the ACL state, updated for the rows that changed."""
        sb, changed = self.inp.sb, self.inp.sb_changed
        security, self.datapaths = read_security(
            sb, m.security, None if self.everything else changed
        )
        if security is not m.security:
            m = dataclasses.replace(m, security=security)
        if changed is not None and not self.everything:
            for row_uuid in changed.get("Port_Connections", ()):
                row = sb.get("Port_Connections", row_uuid)
                if row is not None:
                    self.dirty.add(row["logical_port"])
                else:
                    self.dirty |= set(m.carried)  # a row went: which port is not known
        if self.everything or changed is None:
            views = {pb.uuid: v for pb in sb.rows("Port_Binding") if (v := _view(sb, pb))}
            ports: dict[str, PortView] = {}
            for v in views.values():
                ports.setdefault(v.name, v)
            claim_rows = {r.uuid: r for r in sb.rows("Port_Claim") if r["chassis"] == self.me}
            claims = {r["logical_port"]: r for r in claim_rows.values()}
            self.dirty |= set(ports) | set(m.ports) | set(claims) | set(m.claims)
            return dataclasses.replace(
                m,
                uplinks=_uplinks(ports.values()),
                views=views,
                ports=ports,
                keys={(v.dp_key, v.key): v.name for v in ports.values()},
                claim_rows=claim_rows,
                claims=claims,
                reports={n: _report(r) for n, r in claims.items()},
            )
        touched = set(changed.get("Port_Binding", ()))
        for dp_uuid in changed.get("Datapath_Binding", ()):
            touched |= {r.uuid for r in sb.lookup("Port_Binding", "datapath", dp_uuid)}
        if touched:
            m = self._port_rows(m, touched)
        claim_uuids = changed.get("Port_Claim", frozenset())
        if claim_uuids:
            m = self._claim_rows(m, claim_uuids)
        return m

    def _port_rows(self, m: Memory, touched: set[uuid.UUID]) -> Memory:
        sb = self.inp.sb
        views, ports, keys = dict(m.views), dict(m.ports), dict(m.keys)
        names: set[str] = set()
        for pb_uuid in touched:
            old = views.pop(pb_uuid, None)
            if old is not None:
                names.add(old.name)
            pb = sb.get("Port_Binding", pb_uuid)
            new = _view(sb, pb) if pb is not None else None
            if new is not None:
                views[pb_uuid] = new
                names.add(new.name)
        for name in names:
            # The port's view is its Port_Binding's (the first, if the SB has two for a
            # moment); its key is found by (datapath, key) in announcements.
            old_port = ports.pop(name, None)
            if old_port is not None and keys.get((old_port.dp_key, old_port.key)) == name:
                del keys[(old_port.dp_key, old_port.key)]
            rows = sb.lookup("Port_Binding", "logical_port", name)
            current = next((views[r.uuid] for r in rows if r.uuid in views), None)
            if current is not None:
                ports[name] = current
                keys[(current.dp_key, current.key)] = name
        self.dirty |= names
        uplinks = m.uplinks
        changed = [p for n in names for p in (m.ports.get(n), ports.get(n)) if p is not None]
        if any(p.kind == LOCALNET for p in changed):
            # A localnet port came, went or changed (rare): every datapath's is found again.
            uplinks = _uplinks(ports.values())
        return dataclasses.replace(m, views=views, ports=ports, keys=keys, uplinks=uplinks)

    def _claim_rows(self, m: Memory, uuids: Iterable[uuid.UUID]) -> Memory:
        sb = self.inp.sb
        claim_rows, claims, reports = dict(m.claim_rows), dict(m.claims), dict(m.reports)
        for claim_uuid in uuids:
            old = claim_rows.pop(claim_uuid, None)
            if old is not None:
                name = old["logical_port"]
                self.dirty.add(name)
                if claims.get(name) is old:
                    del claims[name]
                    del reports[name]
            row = sb.get("Port_Claim", claim_uuid)
            if row is not None and row["chassis"] == self.me:
                claim_rows[claim_uuid] = row
                claims[row["logical_port"]] = row
                reports[row["logical_port"]] = _report(row)
                self.dirty.add(row["logical_port"])
        return dataclasses.replace(m, claim_rows=claim_rows, claims=claims, reports=reports)

    def _condition(self, m: Memory) -> Condition:
        """The Port_Bindings to monitor: those of the local VIFs' datapaths (and, by name,
        VIFs whose datapath is not known yet). Computed again only when the VIFs or their
        Port_Bindings changed."""
        assert m.local is not None
        changed = self.inp.sb_changed
        if (
            m.condition is not None
            and m.local is self.start.local
            and changed is not None
            and not any(name in m.local.vifs for name in self.dirty)
        ):
            return m.condition
        return southbound.port_binding_condition(self.inp.sb, m.local.vifs)

    def _covered(self, m: Memory, condition: Condition) -> bool:
        """Whether the condition the server still applies selects every row the new one
        does, and more (a VIF went away): extra rows are harmless, and the step that sees a
        VIF go must remove its flows, or a new VIF plugged there before the next step
        inherits what the old one had."""
        applied = m.applied
        return (
            applied is not None
            and self.inp.sb.condition_applied("Port_Binding", applied)
            and southbound.condition_covers(applied, condition)
        )

    def _kept_activations(self, m: Memory) -> Memory:
        """Announcements count only for a port migrating here (M3, M7)."""
        names = m.activated if self.everything else m.activated & self.dirty
        gone = {n for n in names if (p := m.ports.get(n)) is None or p.destination != self.me}
        if not gone:
            return m
        self.dirty |= gone
        kept = m.activated - gone
        return dataclasses.replace(
            m,
            activated=kept,
            activations={p: a for p, a in m.activations.items() if p in kept},
        )

    def _waiting(self, m: Memory, view: ChassisView) -> set[str]:
        """Ports pending here by the view about to be compiled, not yet activated."""
        candidates = set(view.ports) if self.everything else m.pending | self.dirty
        return {
            n
            for n in candidates
            if n in view.ports
            and n not in m.activated
            and view.role(view.ports[n]) is LocalRole.PENDING
        }

    def _carried(self, m: Memory) -> Memory:
        """The connections a local port's migration source published for it (only a port
        whose VIF is here; only its source, present or last, counts)."""
        names = set(m.vifs) if self.everything else self.dirty & set(m.vifs)
        gone = {p for p in m.carried if p not in m.vifs}
        if not names and not gone:
            return m
        carried = {p: c for p, c in m.carried.items() if p in m.vifs}
        sources = dict(m.sources)
        for name in names:
            port = m.ports.get(name)
            if port is not None and port.source and port.source != self.me:
                sources[name] = port.source
            wanted = {c for c in (port.source if port else None, sources.get(name)) if c}
            found, refused = carried_from(self.inp.sb, name, wanted - {self.me})
            if refused:
                self.events.append(
                    f"port {name}: {refused} carried connections from its migration source "
                    "refused (malformed)"
                )
            if found:
                carried[name] = found
            else:
                carried.pop(name, None)
        self.dirty |= _changed_keys(m.carried, carried)
        return dataclasses.replace(m, carried=carried, sources=sources)

    def _acl_problems(self, m: Memory) -> Memory:
        """Logs ACLs enforced fail-closed here, once each time their problem changes."""
        problems = m.table.acl_problems()
        if problems == m.acl_problems:
            return m
        for key, problem in sorted(problems.items()):
            if m.acl_problems.get(key) != problem:
                self.events.append(f"ACL key {key}: {problem}")
        return dataclasses.replace(m, acl_problems=problems)

    def _unmapped(self, m: Memory) -> Memory:
        """Logs, once each time the set changes, the localnet ports of this chassis'
        datapaths whose physical network ovn-bridge-mappings does not map here: their
        switch's ports reach other chassis only through tunnels from this one."""
        local = m.local
        # Mapped: an ovn-bridge-mappings entry whose bridge exists here.
        mapped = (
            {n for n, bridge in local.mappings.items() if bridge in local.bridges}
            if local is not None
            else set()
        )
        unmapped = frozenset(
            f"{name} ({network})"
            for name in m.uplinks.values()
            if (port := m.ports.get(name)) is not None
            and (network := port.network) is not None
            and network not in mapped
        )
        if unmapped == m.unmapped:
            return m
        if unmapped - m.unmapped:
            self.events.append(
                "localnet ports without a mapping in "
                f"{localswitch.MAPPINGS_KEY} here: {', '.join(sorted(unmapped))}"
            )
        return dataclasses.replace(m, unmapped=unmapped)

    # ----- flows and reports -------------------------------------------------------------

    def _compile(self, m: Memory, view: ChassisView) -> tuple[Memory, FlowChange, set[str]]:
        if self.everything:
            table, _ = FlowTable().update(view, Dirty(everything=True))
            current = m.table.flows() if m.synced else m.installed
            change = FlowChange(diff(current, table.flows()))
            names = set(view.ports) | set(m.roles)
        else:
            table, change = m.table.update(
                view, Dirty(frozenset(self.dirty), self.tunnels, self.datapaths)
            )
            names = set(self.dirty)
        roles = dict(m.roles)
        pending, activated_role = set(m.pending), set(m.activated_role)
        for name in names:
            port = view.ports.get(name)
            role = view.role(port) if port is not None else LocalRole.NONE
            old = roles.get(name, LocalRole.NONE)
            if role is not old:
                self.events.append(f"port {name}: {old} -> {role} (flows installed)")
            if role is LocalRole.NONE:
                roles.pop(name, None)
            else:
                roles[name] = role
            pending.discard(name)
            activated_role.discard(name)
            if role is LocalRole.PENDING:
                pending.add(name)
            elif role is LocalRole.ACTIVATED:
                activated_role.add(name)
        # Learned flows exist only to carry a pending port through its activation: they go
        # (with the bundle that installs the port's normal flows) as soon as the port is
        # anything but PENDING here. An ACTIVATED port may hold some even if this agent
        # never saw them appear (they may have been learned while it was reconnecting).
        pending_keys = {(p.dp_key, p.key) for n in pending if (p := view.ports.get(n))}
        activated_keys = {(p.dp_key, p.key) for n in activated_role if (p := view.ports.get(n))}
        stale = (m.learned | activated_keys) - pending_keys
        if stale:
            learned_cookies = (cookies.owned_by(Kind.LEARNED, dp, key) for dp, key in sorted(stale))
            change = FlowChange(change.diff, (*change.delete_cookies, *learned_cookies))
        m = dataclasses.replace(
            m,
            view=view,
            table=table,
            synced=True,
            installed=FlowSet(),
            roles=roles,
            pending=frozenset(pending),
            activated_role=frozenset(activated_role),
            learned=frozenset(pending_keys),
            unsettled=frozenset(),
            unsettled_tunnels=frozenset(),
            unsettled_datapaths=frozenset(),
            rescan=False,
        )
        return m, change, names

    def _reports(
        self, m: Memory, view: ChassisView, names: set[str]
    ) -> tuple[tuple[Op, ...], Memory]:
        """After the barrier: what each of my claims (of the ports looked at) has installed,
        the announcements seen, what the guest negotiated, and the nb_cfg now installed."""
        ops: list[Op] = []
        for name in sorted(names | set(m.activations)):
            row = m.claims.get(name)
            if row is None:
                continue
            port = view.ports.get(name)
            role = view.role(port) if port is not None else LocalRole.NONE
            values: dict[str, Any] = {}
            installed = installed_state(role)
            if row["installed"] != installed:
                values["installed"] = installed
            seen = m.activations.get(name)
            if seen is not None and records_activation(_report(row)):
                values["activated"] = int(seen.get("at", self.inp.now_ms))
                values["activation"] = dict(seen)
            negotiated = m.vhost.get(name)
            if negotiated is not None and dict(row["vhost"]) != dict(negotiated):
                values["vhost"] = dict(negotiated)
            if values:
                ops.append(Update("Port_Claim", row.uuid, values))
        sb = self.inp.sb
        nb_cfg = next((r["nb_cfg"] for r in sb.rows("SB_Global")), None)
        private = sb.one("Chassis_Private", name=self.me)
        if private is not None and nb_cfg is not None and private["nb_cfg"] != nb_cfg:
            ops.append(
                Update(
                    "Chassis_Private",
                    private.uuid,
                    {"nb_cfg": nb_cfg, "nb_cfg_timestamp": self.inp.now_ms},
                )
            )
        return tuple(ops), m


# ----- an announcement -----------------------------------------------------------------------


@dataclass(frozen=True)
class Announced:
    memory: Memory
    port: str | None = None  # the port that announced itself here (None: nothing new)
    claim_op: Op | None = None  # write the activation into the claim at once
    event: str = ""


def announce(memory: Memory, userdata: bytes, in_port: int, now_ms: int) -> Announced:
    """An activation packet-in (the VM arrived, M3): the datapath has already opened the
    port; the agent records the activation in its claim at once (northd binds the port
    from it), and the next step installs the port's normal flows. Announcements for
    another port, on another VIF, or of a port not pending here change nothing (M7)."""
    activation = parse_activation_userdata(userdata)
    view = memory.view
    if activation is None or view is None:
        return Announced(memory)
    name = memory.keys.get((activation.dp_key, activation.port_key))
    port = view.ports.get(name) if name is not None else None
    vif = view.vifs.get(name) if name is not None else None
    if port is None or vif is None or vif.ofport != in_port:
        return Announced(
            memory,
            event=f"announcement for unknown port {activation.dp_key}/{activation.port_key} "
            "ignored",
        )
    if view.role(port) is not LocalRole.PENDING or port.name in memory.activated:
        return Announced(memory)  # already activated (QEMU announces several times)
    memory = _record(memory, port.name, str(activation.strategy), now_ms)
    claim = memory.claims.get(port.name)
    op = None
    if claim is not None and records_activation(_report(claim)):
        op = Update(
            "Port_Claim",
            claim.uuid,
            {"activated": now_ms, "activation": dict(memory.activations[port.name])},
        )
    return Announced(
        memory,
        port.name,
        op,
        f"port {port.name}: {activation.strategy} announcement on ofport {in_port}: "
        "activated in the datapath",
    )


# ----- helpers -------------------------------------------------------------------------------


def _record(m: Memory, name: str, kind: str, now_ms: int) -> Memory:
    """The port announced itself here; the next step looks at it again (its role)."""
    return dataclasses.replace(
        m,
        activated=m.activated | {name},
        activations={**m.activations, name: {"kind": kind, "at": str(now_ms)}},
        unsettled=m.unsettled | {name},
    )


def _view(sb: Snapshot, pb: Row) -> PortView | None:
    dp = sb.get("Datapath_Binding", pb["datapath"])
    return southbound.port_view(pb, dp) if dp is not None else None


def _uplinks(ports: Iterable[PortView]) -> dict[int, str]:
    """Each datapath's localnet port (northd reports a switch with several; the first by
    name is used)."""
    out: dict[int, str] = {}
    for port in sorted(ports, key=lambda p: p.name):
        if port.kind == LOCALNET:
            out.setdefault(port.dp_key, port.name)
    return out


def _report(row: Row) -> ClaimReport:
    return claim_report(row["chassis"], row["role"], row["installed"], row["activated"])


def _changed_keys(old: Mapping[str, object], new: Mapping[str, object]) -> set[str]:
    if old is new or old == new:
        return set()
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


# ----- a rejected packet ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the agent sends for a packet the pipeline gave it (a rejected packet, a DHCP
    request): frame through actions as if it arrived on in_port (OFPP_CONTROLLER: from
    nowhere)."""

    port: str
    in_port: int
    actions: tuple[Action, ...]
    frame: bytes
    what: str


def rejection(
    memory: Memory, userdata: bytes, metadata: Mapping[str, int], data: bytes
) -> Reply | None:
    """The answer to a packet-in of a reject ACL (model.reject), None if it gets none: a
    from-lport reject answers the local sender on its VIF; a to-lport reject answers from
    the local receiver's VIF, through the pipeline, towards the sender."""
    direction = parse_reject_userdata(userdata)
    view = memory.view
    if direction is None or view is None:
        return None
    dp = metadata.get("metadata", 0)
    key = metadata.get("reg14" if direction is Direction.FROM_LPORT else "reg15", 0)
    name = memory.keys.get((dp, key))
    vif = view.vifs.get(name) if name is not None else None
    found = answer(data)
    if name is None or vif is None or found is None:
        return None
    if direction is Direction.FROM_LPORT:
        return Reply(name, OFPP_CONTROLLER, (Output(vif.ofport),), found.frame, found.what)
    # As the receiver's answer, past its own port security and ACLs (which never saw the
    # rejected packet's connection: its answer would be invalid to them), to the lookup.
    enter = (Load("metadata", dp), Load(R_INPORT, key), Resubmit(Table.L2_LOOKUP))
    return Reply(name, vif.ofport, enter, found.frame, found.what)


def dhcp_reply(memory: Memory, userdata: bytes, data: bytes) -> Reply | None:
    """The answer to a port's DHCP request (model.dhcp_server), to its VIF; None if it gets
    none (or the port is not owned here any more: only the owner answers)."""
    asked = dhcp_server.parse_userdata(userdata)
    view = memory.view
    if asked is None or view is None:
        return None
    name = memory.keys.get((asked.dp_key, asked.port_key))
    port = view.ports.get(name) if name is not None else None
    vif = view.vifs.get(name) if name is not None else None
    if port is None or vif is None or view.role(port) not in (LocalRole.OWNER, LocalRole.ACTIVATED):
        return None
    network = parse_network(port.addresses, port.port_security)
    frame = dhcp_server.answer(
        port.name, network, asked, dict(port.dhcpv4), dict(port.dhcpv6), data
    )
    if frame is None:
        return None
    return Reply(
        port.name, OFPP_CONTROLLER, (Output(vif.ofport),), frame, f"dhcpv{asked.ip_version}"
    )
