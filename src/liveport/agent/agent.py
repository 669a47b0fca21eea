"""liveport-agent: one per chassis. Binds ports and programs the integration bridge.

Concurrency model: one asyncio event loop owns the single OpenFlow connection to the
bridge and all decisions. Two OvsdbClients (the local Open_vSwitch database and the SB)
run their own owner threads; their listeners only set an asyncio Event (any change wakes it,
except the agent's own Chassis_Private row coming back: its heartbeat and nb_cfg reports;
while a port is pending here the heartbeat also wakes it). A reconcile pass reads fresh
snapshots of both, and:

1. converges the bridge's tunnel ports on the SB's chassis list;
2. registers this chassis and reports its VIFs (Chassis, Chassis_Private, Chassis_VIF);
3. adjusts what Port_Bindings it monitors (its VIFs' ports and their datapaths) and waits
   until the server has acknowledged the condition before trusting the view (unless the
   condition only dropped rows: a VIF that goes has its flows removed at once);
4. compiles the whole flow table with the pure compiler (cached per port) and applies only
   the difference to what it installed, in one bundle, followed by a barrier;
5. only then reports what is installed: each claim's state (M9) and nb_cfg (hv_cfg).

An announcement packet-in (the VM arrived, M3) is handled at once: the datapath has
already opened the port; the agent records the activation in its claim, then the next
pass installs the port's normal flows and deletes the blocking and learned ones together.

On start it dumps the flows it owns from the switch and diffs against them, so a restart
changes nothing that is still right (traffic keeps flowing, same flows, same cookies);
learned activation flows found there count as announcements seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from liveport.agent import localswitch, southbound
from liveport.agent import vhost as agent_vhost
from liveport.agent.localswitch import Identity, LocalState
from liveport.model import cookies, packets
from liveport.model.addr import Mac
from liveport.model.binding import (
    ClaimReport,
    LocalRole,
    kept_activations,
    learned_bookkeeping,
    records_activation,
)
from liveport.model.catalogue import Catalogue, supported_modes
from liveport.model.clock import Clock, SystemClock
from liveport.model.cookies import Kind
from liveport.model.errors import LiveportError
from liveport.model.flows import OFPP_TABLE, Flow, FlowDiff, FlowSet, Output, diff
from liveport.model.pipeline import (
    ChassisView,
    Compiler,
    parse_activation_userdata,
)
from liveport.model.untrusted import escape
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.errors import ConnectionLost, OpenFlowError
from liveport.openflow.packetin import PacketIn
from liveport.ovsdb import schema
from liveport.ovsdb.client import ClientClosed, OvsdbClient, TxnError, json_parser
from liveport.ovsdb.rows import Change, Op, Snapshot, Update
from liveport.vhostuser.catalogue import load_catalogue

log = logging.getLogger("liveport.agent")
SLOW_PASS = 0.1  # seconds: passes slower than this are logged


class AgentError(LiveportError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    ovs_remote: str  # this chassis' Open_vSwitch database
    sb_remote: str | None = None  # default: Open_vSwitch external_ids:liveport-remote
    chassis: str | None = None  # default: external_ids:system-id
    mgmt_socket: str | None = None  # default: /var/run/openvswitch/<bridge>.mgmt
    heartbeat_interval: float = 2.0
    # The Common Name of the agent's certificate when it talks TLS: the SB server's RBAC
    # lets it write only rows that name this chassis, so it must be the chassis name.
    tls_identity: str | None = None


ALL_COOKIE_BITS = (1 << 64) - 1


def _group_deletes(installed: FlowSet, change: FlowDiff) -> tuple[FlowDiff, list[int]]:
    """Replaces the deletes of every installed flow of one cookie (a port or datapath that
    went away) by one delete-by-cookie; returns the slimmer diff and those cookies."""
    doomed: dict[int, int] = {}
    for flow in change.deletes:
        doomed[flow.cookie] = doomed.get(flow.cookie, 0) + 1
    if not doomed:
        return change, []
    total: dict[int, int] = {}
    for flow in installed:
        if flow.cookie in doomed:
            total[flow.cookie] = total.get(flow.cookie, 0) + 1
    survivors = {f.cookie for f in (*change.adds, *change.modifies)}
    whole = sorted(
        c for c, n in doomed.items() if total.get(c) == n and n > 1 and c not in survivors
    )
    if not whole:
        return change, []
    gone = set(whole)
    rest = tuple(f for f in change.deletes if f.cookie not in gone)
    return FlowDiff(deletes=rest, adds=change.adds, modifies=change.modifies), whole


def _port_of(value: int) -> tuple[int, int]:
    """(datapath key, port key) of a per-port cookie."""
    return (value >> 16) & 0xFFFFFF, value & 0xFFFF


def learning_ports(flows: Iterable[Flow]) -> set[tuple[int, int]]:
    """(dp, port) of the ports that may hold learned flows in a switch holding flows: those
    with learned flows, and those whose activation flows may learn more at any moment."""
    return {
        _port_of(f.cookie)
        for f in flows
        if cookies.kind_of(f.cookie) in (Kind.LEARNED, Kind.ACTIVATION)
    }


def _now_ms(clock: Clock) -> int:
    return int(clock.wall() * 1000)


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.compiler = Compiler()
        self._port_views = southbound.PortViews()
        self.identity: Identity | None = None
        self.ovs: OvsdbClient | None = None
        self.sb: OvsdbClient | None = None
        self.of: OpenFlowConnection | None = None
        self._kick = asyncio.Event()
        self._installed = FlowSet()
        self._learned: set[tuple[int, int]] = set()  # (dp, port) that may have learned flows
        self._activated: set[str] = set()  # ports whose announcement this chassis saw
        self._activations: dict[str, dict[str, str]] = {}
        self._pb_condition: list[object] | None = None
        self._pb_applied: list[object] | None = None  # the last one seen applied
        self._roles: dict[str, LocalRole] = {}
        self._view: ChassisView | None = None
        self._heartbeat = 0
        self.catalogue: Catalogue = load_catalogue()  # a broken catalogue stops us at once
        self.modes: tuple[str, ...] = ()
        self._refused: dict[str, str] = {}
        self._invalid: tuple[str, ...] = ()
        self._vhost_reports: dict[str, dict[str, str]] = {}
        self.backends = agent_vhost.Backends(self._kick_threadsafe, self._rarp_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._packet_task: asyncio.Task[None] | None = None
        self._wake_switch: asyncio.Future[None] | None = None
        self.passes = 0

    # ----- life cycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop

        def kick(_: object) -> None:
            loop.call_soon_threadsafe(self._kick.set)

        self.ovs = await asyncio.to_thread(
            OvsdbClient,
            self.config.ovs_remote,
            schema.VSWITCH_NAME,
            localswitch.OVS_TABLES,
            name="ovs",
        )
        self.ovs.add_listener(kick)
        ovs_snap = await asyncio.to_thread(self.ovs.wait_connected, 60.0)
        self.identity = localswitch.read_identity(ovs_snap, self.config.chassis)
        me = self.identity.chassis
        if not me:
            raise AgentError("Open_vSwitch external_ids:system-id is not set (the chassis name)")
        if self.config.tls_identity is not None and self.config.tls_identity != me:
            raise AgentError(
                f"the certificate is for chassis {self.config.tls_identity!r}, not {me!r}: "
                "the SB would refuse every write"
            )
        self.modes = supported_modes(
            self.catalogue, self.identity.vhost_backend, self.identity.vhost_modes
        )
        sb_remote = self.config.sb_remote or self.identity.sb_remote
        if not sb_remote:
            raise AgentError("no SB remote: pass --sb-db or set external_ids:liveport-remote")
        log.info(
            "agent %s: SB %s, bridge %s, JSON parser %s",
            me,
            sb_remote,
            self.identity.bridge,
            json_parser(),
        )
        self.sb = await asyncio.to_thread(
            OvsdbClient,
            sb_remote,
            schema.SB_NAME,
            southbound.SB_TABLES,
            conditions=southbound.own_conditions(me),
            indexes={"Port_Binding": ["logical_port", "datapath"]},
            # Any cluster member or relay will do (python-ovs still refuses one whose data
            # is older than what this client has seen); only northd needs the leader.
            leader_only=False,
            name="sb",
        )
        previous: list[Snapshot] = []  # the last SB snapshot seen (owner thread only)

        def kick_sb(change: Change) -> None:
            if southbound.wakes_agent(change, me, previous[0] if previous else None):
                loop.call_soon_threadsafe(self._kick.set)
            previous[:] = [change.snapshot]

        self.sb.add_listener(kick_sb)
        tasks = [
            asyncio.create_task(self._reconcile_loop(stop), name="reconcile"),
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.of is not None:
                self.of.close()
            await asyncio.to_thread(self.backends.close)
            for client in (self.sb, self.ovs):
                if client is not None:
                    await asyncio.to_thread(client.close)

    @property
    def mgmt_socket(self) -> str:
        assert self.identity is not None
        return self.config.mgmt_socket or f"/var/run/openvswitch/{self.identity.bridge}.mgmt"

    async def _connect(self) -> OpenFlowConnection:
        """Opens the OpenFlow connection and learns what liveport has installed."""
        backoff = 0.05
        while True:
            try:
                conn = await OpenFlowConnection.open(self.mgmt_socket, timeout=5.0)
                break
            except (LiveportError, OSError) as exc:
                log.info("agent: bridge not reachable at %s (%s); retrying", self.mgmt_socket, exc)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
        installed = await conn.dump_flows(*cookies.ALL)
        learned = installed.with_cookie(*cookies.of_kind(Kind.LEARNED))
        self._installed = FlowSet(
            {
                k: f
                for k, f in installed.flows.items()
                if cookies.kind_of(f.cookie) is not Kind.LEARNED
            }
        )
        # Learned flows may belong to ports that are no longer pending here, and a port
        # whose activation flows are installed may learn some before the first pass (the
        # packet-in of that announcement finds no view and is dropped): both are deleted
        # once a pass finds the port in another role.
        self._learned = learning_ports(installed)
        log.info(
            "agent: connected to %s; %d flows installed (%d learned)",
            self.mgmt_socket,
            len(self._installed),
            len(learned),
        )
        self._packet_task = asyncio.create_task(self._packet_in_loop(conn), name="packet-in")
        return conn

    # ----- reconcile -----------------------------------------------------------------------

    async def _reconcile_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        gone_in_a_row = 0  # passes in a row that reported on a row northd had deleted
        self._kick.set()
        while not stop.is_set():
            if backoff:
                await asyncio.sleep(backoff)
            await self._kick.wait()
            self._kick.clear()
            try:
                if self.of is None or self.of.closed:
                    self.of = await self._connect()
                await self._reconcile()
                backoff = 0.0
                gone_in_a_row = 0
            except ConnectionLost as exc:
                log.warning("agent: OpenFlow connection lost (%s); reconnecting", exc)
                self.of = None
                self._kick.set()
                backoff = 0.05
            except (TxnError, OpenFlowError, ClientClosed) as exc:
                gone = isinstance(exc, TxnError) and "does not exist" in exc.detail
                gone_in_a_row = gone_in_a_row + 1 if gone else 0
                if gone:
                    # northd deleted a row this pass reported on (a claim whose VIF just
                    # went): normal. The server sent that deletion before its answer, so
                    # the snapshot has it already: retry at once -- a VIF plugged back in
                    # the meantime waits for this pass -- and back off only if it repeats.
                    log.info("agent: %s; retrying", exc)
                else:
                    log.warning("agent: reconcile failed (%s); retrying", exc)
                if isinstance(exc, OpenFlowError) and self.of is not None:
                    # Resynchronise with what the switch really holds.
                    self.of.close()
                    self.of = None
                backoff = 0.0 if gone_in_a_row == 1 else min(1.0, (backoff or 0.02) * 2)
                self._kick.set()
            except Exception:
                # A bug must not leave the chassis unmanaged in silence: say it, try again.
                log.exception("agent: reconcile pass failed unexpectedly; retrying")
                backoff = min(5.0, (backoff or 0.1) * 2)
                self._kick.set()

    async def _transact(self, client: OvsdbClient, ops: list[Op], why: str) -> None:
        if ops:
            await asyncio.wrap_future(client.transact_async(ops, comment=f"liveport-agent: {why}"))

    async def _reconcile(self) -> None:
        started = time.monotonic()
        await self._reconcile_pass()
        elapsed = time.monotonic() - started
        if elapsed > SLOW_PASS:
            log.info("agent: reconcile pass took %.0f ms", elapsed * 1000)

    async def _reconcile_pass(self) -> None:
        assert self.ovs is not None and self.sb is not None and self.identity is not None
        assert self.of is not None
        self.passes += 1
        ovs, sb = self.ovs.snapshot(), self.sb.snapshot()
        if not ovs.connected:
            return
        local = localswitch.read_local(ovs, self.identity)
        if local.bridge_uuid is None:
            raise AgentError(f"bridge {self.identity.bridge} does not exist")
        if not sb.connected:
            return  # keep the installed flows; never act on a stale view
        me = self.identity.chassis
        assert me is not None
        wanted = southbound.tunnel_endpoints(sb, me)
        chosen = localswitch.choose_modes(local, self.catalogue, self.modes)
        await self._transact(
            self.ovs,
            localswitch.tunnel_ops(local, wanted, self.identity.encap_type)
            + localswitch.vhost_ops(local, chosen, self.modes),
            "tunnels and vhost-user modes",
        )
        now = _now_ms(self.clock)
        await self._transact(
            self.sb,
            southbound.registration_ops(sb, self.identity, now, self.modes)
            + southbound.vif_ops(sb, me, local.vifs, chosen.modes, chosen.errors),
            "chassis and VIFs",
        )
        self.backends.sync(
            {
                iface_id: agent_vhost.Wanted(
                    config.socket, config.client, self.catalogue.get(chosen.modes[iface_id])
                )
                for iface_id, config in local.vhost.items()
                if config.socket and iface_id in chosen.modes
            }
        )
        self._vhost_reports = {
            iface_id: agent_vhost.negotiated_map(
                mode, states[iface_id].negotiated if iface_id in states else None
            )
            for iface_id, mode in chosen.modes.items()
            for states in [self.backends.states()]
        }
        for iface_id, error in sorted(chosen.errors.items()):
            if self._refused.get(iface_id) != error:
                log.warning("agent: VIF %s stays unplugged: %s", iface_id, error)
        self._refused = dict(chosen.errors)
        if chosen.errors:
            # A VIF whose mode cannot be honoured here is not bound and gets no flows.
            local = dataclasses.replace(
                local, vifs={k: v for k, v in local.vifs.items() if k not in chosen.errors}
            )
        if local.duplicates:
            log.warning(
                "agent: iface-id plugged twice on this chassis: %s", ", ".join(local.duplicates)
            )
        if local.invalid != self._invalid:
            for iface_id in local.invalid:
                log.warning(
                    "agent: VIF with iface-id %s ignored: too long or not printable",
                    escape(iface_id, 80),
                )
            self._invalid = local.invalid
        self._forget_unplugged(local.vifs.keys())
        if not await self._monitoring_complete(sb, local):
            return
        await self._install(sb, local)

    def _forget_unplugged(self, vifs: Collection[str]) -> None:
        """An announcement counts only for the VIF it came in on: a VIF that went away takes
        it along even when this pass cannot install, so a new VIF there must announce
        itself again (M7). (kept_activations, in the pass that installs, also drops those
        whose port is no longer migrating here.)"""
        self._activated = {p for p in self._activated if p in vifs}
        self._activations = {p: a for p, a in self._activations.items() if p in vifs}

    async def _monitoring_complete(self, sb: Snapshot, local: LocalState) -> bool:
        """Monitors the Port_Bindings of local VIFs and of their datapaths; True once the
        snapshot holds every row the current condition selects: the server applied it, or
        still applies one that selects all those rows and more (a VIF went away). Before
        that the view may be partial, and a partial view would delete flows that are still
        right. Extra rows are harmless (only datapaths with a local VIF are compiled), and
        not waiting for them matters: the pass that sees a VIF go must remove its flows,
        or a new VIF plugged there before the next pass inherits what the old one had."""
        assert self.sb is not None
        condition = southbound.port_binding_condition(sb, local.vifs)
        if condition != self._pb_condition:
            self._pb_condition = condition
            self.sb.set_condition("Port_Binding", condition)
        if sb.condition_applied("Port_Binding", condition):
            self._pb_applied = condition
            return True
        applied = self._pb_applied
        return (
            applied is not None
            and sb.condition_applied("Port_Binding", applied)
            and southbound.condition_covers(applied, condition)
        )

    async def _install(self, sb: Snapshot, local: LocalState) -> None:
        assert self.sb is not None and self.of is not None
        view = southbound.build_view(sb, local, frozenset(), self._port_views)
        self._activated = set(
            kept_activations(
                frozenset(self._activated),
                view.chassis,
                {n: p.destination for n, p in view.ports.items()},
                frozenset(view.vifs),
            )
        )
        waiting = {
            (p.dp_key, p.key): p for p in view.ports.values() if view.role(p) is LocalRole.PENDING
        }
        if waiting:
            # The datapath opens a port by itself (learn); the packet-in that tells us may be
            # lost, or this agent may have been down when it came. The learned flows are the
            # proof: ask the switch.
            learned = await self._learned_ports()
            if any(
                (p := waiting.get(k)) is not None and p.name not in self._activated for k in learned
            ):
                # The packet-in that says how the VM announced itself may still be on its
                # way (ovs-vswitchd can answer the dump before it sends a packet-in of the
                # same moment) or queued here: past a barrier it has arrived; take it first.
                await self.of.barrier()
                for packet in self.of.queued_packet_ins():
                    self._on_packet_in(packet)
            for dp, key in learned:
                port = waiting.get((dp, key))
                if port is not None and port.name not in self._activated:
                    self._record_activation(port.name, "learned", "seen in the switch")
        view = dataclasses.replace(view, activated=frozenset(self._activated))
        self._view = view
        desired = self.compiler.compile(view)
        roles = {name: view.role(port) for name, port in view.ports.items()}
        stale, learned_after = learned_bookkeeping(
            frozenset(self._learned),
            {(p.dp_key, p.key): roles[p.name] for p in view.ports.values()},
        )
        change = diff(self._installed, desired)
        if change or stale:
            started = time.monotonic()
            change, whole = _group_deletes(self._installed, change)
            await self.of.apply(
                change,
                delete_cookies=[(c, ALL_COOKIE_BITS) for c in whole]
                + [cookies.owned_by(Kind.LEARNED, dp, key) for dp, key in sorted(stale)],
            )
            await self.of.barrier()
            self._installed = desired
            log.info(
                "agent: installed %d flow changes (%d deletes, %d adds, %d modifies, %d "
                "learned sets removed) in %.1f ms",
                len(change),
                len(change.deletes),
                len(change.adds),
                len(change.modifies),
                len(stale),
                (time.monotonic() - started) * 1000,
            )
        self._learned = set(learned_after)
        self._log_roles(roles)
        nb_cfg = next((r["nb_cfg"] for r in sb.rows("SB_Global")), None)
        await self._transact(
            self.sb,
            southbound.report_ops(
                sb, view, nb_cfg, _now_ms(self.clock), self._activations, self._vhost_reports
            ),
            "installed state",
        )
        for name in list(self._activations):
            if name not in self._activated:
                del self._activations[name]

    def _log_roles(self, roles: dict[str, LocalRole]) -> None:
        for name in sorted(set(roles) | set(self._roles)):
            old, new = self._roles.get(name, LocalRole.NONE), roles.get(name, LocalRole.NONE)
            if old is not new:
                log.info("agent: port %s: %s -> %s (flows installed)", name, old, new)
        self._roles = {n: r for n, r in roles.items() if r is not LocalRole.NONE}

    async def _learned_ports(self) -> set[tuple[int, int]]:
        assert self.of is not None
        learned = await self.of.dump_flows(*cookies.of_kind(Kind.LEARNED))
        return {_port_of(f.cookie) for f in learned}

    def _record_activation(self, port: str, kind: str, how: str) -> int:
        now = _now_ms(self.clock)
        self._activated.add(port)
        self._activations[port] = {"kind": kind, "at": str(now)}
        log.info("agent: port %s: %s announcement %s: activated in the datapath", port, kind, how)
        return now

    # ----- vhost-user back-ends ----------------------------------------------------------

    def _kick_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._kick.set)

    def _rarp_threadsafe(self, iface_id: str, mac: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(self._inject_rarp(iface_id, mac))
            )

    async def _inject_rarp(self, iface_id: str, mac: str) -> None:
        """V6: QEMU asked the VIF's back-end to announce the guest (VHOST_USER_SEND_RARP, sent
        when the guest did not negotiate GUEST_ANNOUNCE): the RARP enters the pipeline as if
        the VM had sent it on its VIF, where the activation flows expect it."""
        view, of = self._view, self.of
        vif = view.vifs.get(iface_id) if view is not None else None
        if vif is None or of is None:
            log.info("agent: RARP for %s requested before its VIF is known; dropped", iface_id)
            return
        try:
            frame = packets.rarp(Mac.parse(mac))
        except LiveportError:
            log.warning("agent: back-end of %s asked for a RARP for bad MAC %r", iface_id, mac)
            return
        try:
            await of.packet_out(vif.ofport, [Output(OFPP_TABLE)], frame)
            log.info(
                "agent: RARP for %s (%s) sent from ofport %d on QEMU's request",
                iface_id,
                mac,
                vif.ofport,
            )
        except (OpenFlowError, ConnectionLost) as exc:
            log.warning("agent: RARP for %s not sent: %s", iface_id, exc)

    # ----- announcements -------------------------------------------------------------------

    async def _packet_in_loop(self, conn: OpenFlowConnection) -> None:
        while True:
            try:
                packet = await conn.next_packet_in()
            except ConnectionLost:
                return
            self._on_packet_in(packet)

    def _on_packet_in(self, packet: PacketIn) -> None:
        activation = parse_activation_userdata(packet.userdata)
        view = self._view
        if activation is None or view is None or self.sb is None:
            return
        port = view.announcing(activation, packet.in_port)
        if port is None:
            log.info(
                "agent: announcement for unknown port %s/%s ignored",
                activation.dp_key,
                activation.port_key,
            )
            return
        if view.role(port) is not LocalRole.PENDING or port.name in self._activated:
            return  # already activated (QEMU announces several times)
        now = self._record_activation(
            port.name, str(activation.strategy), f"on ofport {packet.in_port}"
        )
        if self.of is not None:
            # The learned flows are in the table, but datapath flows cached before them (the
            # drop towards the VIF) stay until ovs-vswitchd's main loop asks its revalidators
            # to look again -- which waits for its next wake-up. Any OpenFlow message wakes it.
            self._wake_switch = asyncio.ensure_future(self.of.barrier())
        # Record it at once (the SB binding follows from it); flows follow in the next pass.
        claim = next(
            (
                r
                for r in self.sb.snapshot().rows("Port_Claim")
                if r["logical_port"] == port.name and r["chassis"] == view.chassis
            ),
            None,
        )
        if claim is not None and records_activation(
            ClaimReport(claim["chassis"], claim["role"], claim["installed"], claim["activated"])
        ):
            self.sb.transact_async(
                [
                    Update(
                        "Port_Claim",
                        claim.uuid,
                        {"activated": now, "activation": self._activations[port.name]},
                    )
                ],
                comment="liveport-agent: announcement",
            )
        self._kick.set()

    # ----- heartbeat -----------------------------------------------------------------------

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.sb is not None and self.identity is not None and self.identity.chassis
        me = self.identity.chassis
        while not stop.is_set():
            snap = self.sb.snapshot()
            row = snap.one("Chassis_Private", name=me)
            if row is not None:
                self._heartbeat = max(self._heartbeat, row["heartbeat"]) + 1
                try:
                    await self._transact(
                        self.sb, southbound.heartbeat_op(snap, me, self._heartbeat), "heartbeat"
                    )
                except (TxnError, ClientClosed) as exc:
                    log.debug("agent: heartbeat not written (%s)", exc)
            if any(role is LocalRole.PENDING for role in self._roles.values()):
                # The heartbeat coming back no longer wakes the reconcile loop; a pending
                # port still wants a look at the switch now and then, for learned flows
                # whose packet-in never reached us.
                self._kick.set()
            await asyncio.sleep(self.config.heartbeat_interval)


def run(config: AgentConfig) -> None:
    """Runs an agent until SIGTERM/SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(config).run(stop)

    asyncio.run(main())
