"""liveport-agent: one per chassis. Binds ports and programs the integration bridge.

Every decision is `agent.step` (pure); this module only moves values between it and the
world. Concurrency model: one asyncio event loop owns the single OpenFlow connection to
the bridge and the agent's memory. Two OvsdbClients (the local Open_vSwitch database and
the SB) run their own owner threads; their listeners only record what changed (a
`ChangeLog` each, which pairs a snapshot with every row changed up to it) and wake the
loop -- any change does, except the agent's own Chassis_Private row coming back (its
heartbeat and nb_cfg reports). A pass:

1. takes each database's latest snapshot with the rows changed since the last pass;
2. calls `step`; if it asks which ports have learned flows in the switch, dumps them
   (taking the packet-ins already sent first, after a barrier) and calls it again;
3. writes what the step says, in order: the local database (tunnel ports, vhost-user
   modes), the SB (registration, VIF reports), the Port_Binding monitor condition, the
   vhost-user back-ends; then the flow changes in one bundle, a barrier, and only then the
   reports (claims, nb_cfg: what is installed, M9);
4. keeps the step's memory. A pass that fails before its flows are installed leaves the
   memory as it was and makes the next pass look at everything.

An announcement packet-in (the VM arrived, M3) is handled at once with `step.announce`:
the datapath has already opened the port; the activation goes into the claim
immediately (northd binds the port from it), and the next pass installs the port's
normal flows. An announcement that arrives while a pass is under way is replayed on the
memory that pass returns.

On (re)connecting to the bridge it dumps the flows liveport owns, and the next pass diffs
against them: a restart changes nothing that is still right (traffic keeps flowing, same
flows, same cookies); learned activation flows found there count as announcements seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from liveport.agent import carry, localswitch, southbound
from liveport.agent import vhost as agent_vhost
from liveport.agent.observe import AgentObserver, log_extra
from liveport.agent.step import (
    AgentError,
    Changed,
    Config,
    Inputs,
    Memory,
    Outcome,
    Reply,
    announce,
    dhcp_reply,
    rejection,
    step,
)
from liveport.model import cookies, dhcp_server, packets
from liveport.model.acl import parse_reject_userdata
from liveport.model.addr import Mac
from liveport.model.carried import parse_dump
from liveport.model.catalogue import supported_modes
from liveport.model.clock import Clock, SystemClock
from liveport.model.cookies import Kind
from liveport.model.errors import LiveportError
from liveport.model.flows import OFPP_TABLE, Output
from liveport.model.untrusted import escape
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.errors import ConnectionLost, OpenFlowError
from liveport.openflow.packetin import PacketIn
from liveport.ovsdb import schema
from liveport.ovsdb.client import ClientClosed, OvsdbClient, TxnError, json_parser
from liveport.ovsdb.rows import Change, Op, Snapshot
from liveport.runtime import unixctl
from liveport.vhostuser.catalogue import load_catalogue

log = logging.getLogger("liveport.agent")
SLOW_PASS = 0.1  # seconds: passes slower than this are logged
REJECT_RATE = 100.0  # answers to rejected packets per second (TCP resets, ICMP unreachables)
DHCP_RATE = 200.0  # DHCP answers per second


class TokenBucket:
    """At most `rate` events a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at: float | None = None

    def take(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


__all__ = ["Agent", "AgentConfig", "AgentError", "run"]


@dataclass(frozen=True)
class AgentConfig:
    ovs_remote: str  # this chassis' Open_vSwitch database
    sb_remote: str | None = None  # default: Open_vSwitch external_ids:liveport-remote
    chassis: str | None = None  # default: external_ids:system-id
    mgmt_socket: str | None = None  # default: /var/run/openvswitch/<bridge>.mgmt
    heartbeat_interval: float = 2.0
    # ovs-vswitchd's control socket (conntrack: carrying a migrating port's connections,
    # flushing a released zone). Default: ovs-vswitchd.<pid>.ctl next to the mgmt socket.
    vswitchd_ctl: str | None = None
    # The Common Name of the agent's certificate when it talks TLS: the SB server's RBAC
    # lets it write only rows that name this chassis, so it must be the chassis name.
    tls_identity: str | None = None


class ChangeLog:
    """What a database client's listener saw since it was last taken: the latest snapshot
    and every row changed up to it (None: everything, after a reload). Written on the
    client's owner thread, taken on the agent's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._changed: dict[str, set[uuid.UUID]] | None = None  # None: everything

    def add(self, change: Change) -> None:
        with self._lock:
            self._snapshot = change.snapshot
            if change.reloaded:
                self._changed = None
            elif self._changed is not None:
                for table, rows in change.changed.items():
                    self._changed.setdefault(table, set()).update(rows)

    def take(self, fallback: Snapshot) -> tuple[Snapshot, Changed]:
        with self._lock:
            snap = self._snapshot or fallback
            changed = self._changed
            self._changed = {}
        if changed is None:
            return snap, None
        return snap, {table: frozenset(rows) for table, rows in changed.items()}

    def everything(self) -> None:
        """The next take says: look at everything (a pass failed)."""
        with self._lock:
            self._changed = None


def _now_ms(clock: Clock) -> int:
    return int(clock.wall() * 1000)


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.catalogue = load_catalogue()  # a broken catalogue stops us at once
        self.ovs: OvsdbClient | None = None
        self.sb: OvsdbClient | None = None
        self.of: OpenFlowConnection | None = None
        self.memory: Memory | None = None
        self._kick = asyncio.Event()
        self._ovs_log = ChangeLog()
        self._sb_log = ChangeLog()
        self._in_pass = False
        self._replay: list[PacketIn] = []  # announcements that came during a pass
        self.backends = agent_vhost.Backends(self._kick_threadsafe, self._rarp_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._packet_task: asyncio.Task[None] | None = None
        self._wake_switch: asyncio.Future[None] | None = None
        self._heartbeat = 0
        self.passes = 0
        self._carry_kick = asyncio.Event()
        self._reject_budget = TokenBucket(REJECT_RATE, REJECT_RATE)
        self._dhcp_budget = TokenBucket(DHCP_RATE, DHCP_RATE)
        self._answers: set[asyncio.Future[None]] = set()  # answers being sent
        self._ctl_warned = False
        self.observer = AgentObserver()  # counters; the daemon gives it metrics

    def recompute(self) -> None:
        """Thread-safe: the next pass looks at everything (a control command)."""
        self._ovs_log.everything()
        self._sb_log.everything()
        self._kick_threadsafe()

    @property
    def identity(self) -> localswitch.Identity | None:
        return self.memory.config.identity if self.memory is not None else None

    # ----- life cycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop

        def on_ovs(change: Change) -> None:
            self._ovs_log.add(change)
            loop.call_soon_threadsafe(self._kick.set)

        self.ovs = await asyncio.to_thread(
            OvsdbClient,
            self.config.ovs_remote,
            schema.VSWITCH_NAME,
            localswitch.OVS_TABLES,
            name="ovs",
        )
        self.ovs.add_listener(on_ovs)
        ovs_snap = await asyncio.to_thread(self.ovs.wait_connected, 60.0)
        identity = localswitch.read_identity(ovs_snap, self.config.chassis)
        me = identity.chassis
        if not me:
            raise AgentError("Open_vSwitch external_ids:system-id is not set (the chassis name)")
        if self.config.tls_identity is not None and self.config.tls_identity != me:
            raise AgentError(
                f"the certificate is for chassis {self.config.tls_identity!r}, not {me!r}: "
                "the SB would refuse every write"
            )
        modes = supported_modes(self.catalogue, identity.vhost_backend, identity.vhost_modes)
        self.memory = Memory(Config(identity, self.catalogue, modes))
        sb_remote = self.config.sb_remote or identity.sb_remote
        if not sb_remote:
            raise AgentError("no SB remote: pass --sb-db or set external_ids:liveport-remote")
        log.info(
            "agent %s: SB %s, bridge %s, JSON parser %s",
            me,
            sb_remote,
            identity.bridge,
            json_parser(),
        )
        self.sb = await asyncio.to_thread(
            OvsdbClient,
            sb_remote,
            schema.SB_NAME,
            southbound.SB_TABLES,
            conditions=southbound.own_conditions(me),
            indexes={
                "Port_Binding": ["logical_port", "datapath"],
                "Port_Connections": ["logical_port"],
            },
            # Any cluster member or relay will do (the client still refuses one whose data
            # is older than what it has seen); only northd needs the leader.
            leader_only=False,
            name="sb",
        )
        previous: list[Snapshot] = []  # the last SB snapshot seen (owner thread only)

        def on_sb(change: Change) -> None:
            self._sb_log.add(change)
            if southbound.wakes_agent(change, me, previous[0] if previous else None):
                loop.call_soon_threadsafe(self._kick.set)
            previous[:] = [change.snapshot]

        self.sb.add_listener(on_sb)
        tasks = [
            asyncio.create_task(self._reconcile_loop(stop), name="reconcile"),
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(self._carry_loop(stop), name="carry"),
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
        assert self.memory is not None
        backoff = 0.05
        while True:
            try:
                conn = await OpenFlowConnection.open(self.mgmt_socket, timeout=5.0)
                break
            except (LiveportError, OSError) as exc:
                log.info("agent: bridge not reachable at %s (%s); retrying", self.mgmt_socket, exc)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
        flows = await conn.dump_flows(*cookies.ALL)
        self.memory = self.memory.connected(flows)
        log.info(
            "agent: connected to %s; %d flows installed (%d learned)",
            self.mgmt_socket,
            len(self.memory.installed),
            len(flows) - len(self.memory.installed),
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

    async def _reconcile(self) -> None:
        started = time.monotonic()
        token = self.observer.pass_started()
        self._in_pass = True
        try:
            await self._pass()
        except BaseException:
            self.observer.pass_done(token, failed=True)
            # The changes this pass took are not in the memory: look at everything next.
            # (Announcements during the pass went into the memory it leaves as it was.)
            self._ovs_log.everything()
            self._sb_log.everything()
            raise
        else:
            self.observer.pass_done(token)
            for packet in self._replay:
                self._on_packet_in(packet, send=False)
        finally:
            self._in_pass = False
            self._replay.clear()
        elapsed = time.monotonic() - started
        if elapsed > SLOW_PASS:
            log.info("agent: reconcile pass took %.0f ms", elapsed * 1000)

    async def _pass(self) -> None:
        assert self.ovs is not None and self.sb is not None and self.of is not None
        assert self.memory is not None
        self.passes += 1
        ovs, ovs_changed = self._ovs_log.take(self.ovs.snapshot())
        sb, sb_changed = self._sb_log.take(self.sb.snapshot())
        negotiated = {i: s.negotiated for i, s in self.backends.states().items()}
        inputs = Inputs(ovs, sb, ovs_changed, sb_changed, _now_ms(self.clock), negotiated)
        memory = self.memory
        outcome = step(memory, inputs)
        log.debug(
            "agent: pass %d: changed sb=%s ovs=%s -> installed=%s condition=%s learned?=%s",
            self.passes,
            None if sb_changed is None else {t: len(r) for t, r in sb_changed.items()},
            None if ovs_changed is None else {t: len(r) for t, r in ovs_changed.items()},
            outcome.installed,
            outcome.condition,
            outcome.needs_learned,
        )
        if outcome.needs_learned:
            learned = await self.of.dump_flows(*cookies.of_kind(Kind.LEARNED))
            if learned:
                # The packet-in that says how the VM announced itself may still be on its
                # way (ovs-vswitchd can answer the dump before it sends a packet-in of the
                # same moment) or queued here: past a barrier it has arrived; take it first.
                await self.of.barrier()
                for packet in self.of.queued_packet_ins():
                    self._on_packet_in(packet)
                memory = self.memory
            ports = frozenset(cookies.port_of(f.cookie) for f in learned)
            outcome = step(memory, dataclasses.replace(inputs, learned=ports))
        await self._apply(outcome)

    async def _apply(self, outcome: Outcome) -> None:
        assert self.ovs is not None and self.sb is not None and self.of is not None
        for line in outcome.events:
            log.info("agent: %s", line, extra=log_extra(line, outcome.memory))
        await self._transact(self.ovs, outcome.ovs_ops, "tunnels and vhost-user modes")
        await self._transact(self.sb, outcome.sb_ops, "chassis and VIFs")
        if outcome.condition is not None:
            self.sb.set_condition("Port_Binding", outcome.condition)
        if outcome.backends is not None:
            self.backends.sync(
                {
                    iface_id: agent_vhost.Wanted(socket, client, self.catalogue.get(mode))
                    for iface_id, (socket, client, mode) in outcome.backends.items()
                }
            )
        if outcome.flows:
            started = time.monotonic()
            change = outcome.flows
            await self.of.apply(change.diff, delete_cookies=change.delete_cookies)
            await self.of.barrier()
            self.observer.flows_sent(change)
            log.info(
                "agent: installed %d flow changes (%d deletes, %d adds, %d modifies, %d "
                "cookies deleted) in %.1f ms",
                len(change.diff) + len(change.delete_cookies),
                len(change.diff.deletes),
                len(change.diff.adds),
                len(change.diff.modifies),
                len(change.delete_cookies),
                (time.monotonic() - started) * 1000,
            )
        self.memory = outcome.memory
        self.observer.installed(outcome.memory)
        await self._transact(self.sb, outcome.reports, "installed state")
        for zone in outcome.flush_zones:
            # The zone's VIF went: its connections must not greet the next VIF given it.
            await self._vswitchd("dpctl/flush-conntrack", f"zone={zone}")
        if self.memory.view is not None and carry.outgoing(self.memory.view):
            self._carry_kick.set()  # a migration started: publish its connections now

    def vswitchd_ctl(self) -> Path | None:
        """ovs-vswitchd's control socket (looked up each time: OVS may have restarted)."""
        if self.config.vswitchd_ctl:
            return Path(self.config.vswitchd_ctl)
        rundir = Path(self.mgmt_socket).parent
        try:
            pid = int((rundir / "ovs-vswitchd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        ctl = rundir / f"ovs-vswitchd.{pid}.ctl"
        return ctl if ctl.exists() else None

    async def _vswitchd(self, command: str, *args: str) -> str | None:
        """A unixctl command to ovs-vswitchd (None, and a warning once, if it cannot be
        reached: the agent switches without it, only conntrack upkeep waits)."""
        ctl = self.vswitchd_ctl()
        if ctl is None:
            if not self._ctl_warned:
                log.warning(
                    "agent: ovs-vswitchd's control socket not found (give --vswitchd-ctl): "
                    "connections are not carried across migrations, released zones not flushed"
                )
                self._ctl_warned = True
            return None
        try:
            return await asyncio.to_thread(unixctl.call, ctl, command, *args, timeout=5.0)
        except LiveportError as exc:
            log.warning("agent: ovs-vswitchd %s: %s", command, exc)
            return None

    async def _carry_loop(self, stop: asyncio.Event) -> None:
        """Publishes the tracked connections of the ports migrating away from here
        (agent.carry), every CARRY_INTERVAL while one does, at once when one starts."""
        state = carry.Carry()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._carry_kick.wait(), carry.CARRY_INTERVAL)
            self._carry_kick.clear()
            memory, sb = self.memory, self.sb
            if memory is None or memory.view is None or sb is None:
                continue
            snap = sb.snapshot()
            mine = any(r["chassis"] == memory.config.me for r in snap.rows("Port_Connections"))
            if not carry.outgoing(memory.view) and not state.publishing and not mine:
                continue
            text = ""
            if carry.outgoing(memory.view):
                text = await self._vswitchd("dpctl/dump-conntrack") or ""
            state, ops = state.tick(memory.view, snap, parse_dump(text), _now_ms(self.clock))
            try:
                await self._transact(sb, tuple(ops), "carried connections")
            except (TxnError, ClientClosed) as exc:
                log.info("agent: carried connections not written (%s); next round", exc)

    async def _transact(self, client: OvsdbClient, ops: tuple[Op, ...], why: str) -> None:
        if ops:
            self.observer.transaction()
            await asyncio.wrap_future(client.transact_async(ops, comment=f"liveport-agent: {why}"))

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
        view = self.memory.view if self.memory is not None else None
        vif = view.vifs.get(iface_id) if view is not None else None
        of = self.of
        if vif is None or of is None:
            log.info("agent: RARP for %s requested before its VIF is known; dropped", iface_id)
            return
        try:
            frame = packets.rarp(Mac.parse(mac))
        except LiveportError:
            log.warning(
                "agent: back-end of %s asked for a RARP for bad MAC %s", iface_id, escape(mac, 40)
            )
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

    def _on_packet_in(self, packet: PacketIn, *, send: bool = True) -> None:
        """step.announce on the current memory; a pass under way will replace the memory
        with one that did not see this announcement, so it is replayed after that pass.
        A packet a reject ACL refused is answered instead (step.rejection)."""
        if self.memory is None or self.sb is None:
            return
        if parse_reject_userdata(packet.userdata) is not None:
            if send:
                self._answer_rejected(packet)
            return
        if dhcp_server.parse_userdata(packet.userdata) is not None:
            # A VM that floods DHCP costs the agent at most DHCP_RATE answers a second.
            if send and self._dhcp_budget.take(time.monotonic()):
                self._send_reply(dhcp_reply(self.memory, packet.userdata, packet.data))
            return
        announced = announce(self.memory, packet.userdata, packet.in_port, _now_ms(self.clock))
        if send:
            self.observer.packet_in(packet.received_at, announced.port)
        if announced.event and send:
            log.info(
                "agent: %s", announced.event, extra=log_extra(announced.event, announced.memory)
            )
        self.memory = announced.memory
        if announced.port is None:
            return
        if self._in_pass:
            self._replay.append(packet)
        if not send:
            return
        if self.of is not None:
            # The learned flows are in the table, but datapath flows cached before them (the
            # drop towards the VIF) stay until ovs-vswitchd's main loop asks its revalidators
            # to look again -- which waits for its next wake-up. Any OpenFlow message wakes it.
            self._wake_switch = asyncio.ensure_future(self.of.barrier())
        if announced.claim_op is not None:
            # Recorded at once: the SB binding follows from it; flows follow in the next pass.
            self.sb.transact_async([announced.claim_op], comment="liveport-agent: announcement")
        self._kick.set()

    def _answer_rejected(self, packet: PacketIn) -> None:
        """Sends the TCP reset or ICMP unreachable of a rejected packet, at most
        REJECT_RATE a second (a flood of rejected packets costs the agent little)."""
        if self.memory is None or self.of is None or not self._reject_budget.take(time.monotonic()):
            return
        self._send_reply(rejection(self.memory, packet.userdata, packet.metadata, packet.data))

    def _send_reply(self, found: Reply | None) -> None:
        """Sends what the agent answers a packet-in with (step.Reply), in the background."""
        of = self.of
        if found is None or of is None:
            return

        async def send() -> None:
            try:
                await of.packet_out(found.in_port, found.actions, found.frame)
            except (OpenFlowError, ConnectionLost) as exc:
                log.info("agent: %s for %s not sent: %s", found.what, found.port, exc)

        task = asyncio.ensure_future(send())
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    # ----- heartbeat -----------------------------------------------------------------------

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.sb is not None and self.memory is not None
        me = self.memory.config.me
        while not stop.is_set():
            snap = self.sb.snapshot()
            row = snap.one("Chassis_Private", name=me)
            if row is not None:
                self._heartbeat = max(self._heartbeat, row["heartbeat"]) + 1
                try:
                    await self._transact(
                        self.sb,
                        tuple(southbound.heartbeat_op(snap, me, self._heartbeat)),
                        "heartbeat",
                    )
                except (TxnError, ClientClosed) as exc:
                    log.debug("agent: heartbeat not written (%s)", exc)
            if self.memory.pending:
                # The heartbeat coming back does not wake the reconcile loop; a pending port
                # still wants a look at the switch now and then, for learned flows whose
                # packet-in never reached us.
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
