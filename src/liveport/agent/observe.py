"""What an agent tells operators about itself: coverage counters, Prometheus metrics and the
migration a log line belongs to. The agent calls an AgentObserver's hooks at a few points of
its loop; everything else is here.

Migration id: `PORT@DESTINATION/CLAIM` as runtime.logs.migration_tag defines it, from the agent's
memory: the destination chassis knows its own claim, so its id is the whole id; a source
chassis does not monitor the destination's claim and writes `PORT@DESTINATION`, a prefix
of it (grep for that to find both sides).

Metrics (`--metrics-address`; every name is listed in docs/operations.md):
- liveport_agent_announcement_to_flows_seconds: from the moment the announcement's
  packet-in was read from the switch to the end (barrier) of the pass that installed the
  port's normal flows here (both on the agent's monotonic clock).
- liveport_agent_pass_cpu_seconds and liveport_agent_pass_seconds: CPU time
  (time.process_time: the whole process, so the database threads' work during the pass
  counts too) and wall time of each reconcile pass; their _count is the passes.
- liveport_agent_pass_failures_total, liveport_agent_flow_mods_total (flow adds, deletes,
  modifies and cookie deletes sent), liveport_agent_flows (liveport's flows installed now),
  liveport_agent_packet_ins_total, liveport_agent_packet_ins_dropped_total (packet-ins
  the connection dropped because its queue was full; counted per OpenFlow connection, so it
  restarts at 0 after a reconnect), liveport_agent_ports{role} (ports with a role here),
  liveport_agent_transactions_total, liveport_db_connected{db},
  liveport_openflow_connected, liveport_info{program,version}.

Concurrency model: hooks run on the agent's event loop (one thread); counters and
prometheus_client's metrics are thread-safe; the collector runs on the metrics thread and
reads the agent's memory (an immutable value), snapshots and plain attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from liveport.agent.step import Memory
from liveport.model.binding import LocalRole
from liveport.model.compiler import FlowChange
from liveport.ovsdb.rows import Snapshot
from liveport.runtime import coverage
from liveport.runtime.logs import event_port, migration_tag
from liveport.runtime.metrics import CPU_BUCKETS, LATENCY_BUCKETS, connected_family, info_family

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

PASSES = coverage.counter("agent_pass", "reconcile passes")
PASS_FAILURES = coverage.counter("agent_pass_failed", "passes that failed and are retried")
FLOW_MODS = coverage.counter("agent_flow_mod", "flow changes sent to the switch")
PACKET_INS = coverage.counter("agent_packet_in", "packet-ins received")
ANNOUNCEMENTS = coverage.counter("agent_announcement", "announcements that activated a port")
TXNS = coverage.counter("agent_txn", "transactions sent (local database and SB)")
RECOMPUTES = coverage.counter("agent_recompute", "recomputes asked for")


def migration_id(memory: Memory | None, port: str) -> str | None:
    """The migration port is in, as this agent knows it (see the module docstring)."""
    if memory is None:
        return None
    view = memory.ports.get(port)
    if view is None or not view.destination:
        return None
    claim = memory.claims.get(port)
    mine = claim is not None and claim["chassis"] == view.destination
    return migration_tag(port, view.destination, claim.uuid if mine and claim else None)


def log_extra(line: str, memory: Memory | None) -> dict[str, str]:
    port = event_port(line)
    found = migration_id(memory, port) if port is not None else None
    return {"migration": found} if found else {}


def flow_count(memory: Memory | None) -> int:
    """liveport's flows installed by this agent (its table; before the first pass, what
    the switch held at connect)."""
    if memory is None:
        return 0
    table = memory.table
    if not memory.synced:
        return len(memory.installed.flows)
    return sum(len(p.flows) for p in table.ports.values()) + sum(
        len(d.flows) for d in table.datapaths.values()
    )


@dataclass(frozen=True)
class AgentState:
    """What the collector reads at a scrape."""

    memory: Memory | None
    ovs: Snapshot | None
    sb: Snapshot | None
    openflow: bool  # connected
    dropped_packet_ins: int


class AgentMetrics:
    def __init__(
        self, registry: CollectorRegistry, state: Callable[[], AgentState], version: str
    ) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415 - metrics are optional

        self.announcement_to_flows = Histogram(
            "liveport_agent_announcement_to_flows_seconds",
            "From an announcement's packet-in to the end of the pass that installed the "
            "port's normal flows",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pass_cpu = Histogram(
            "liveport_agent_pass_cpu_seconds",
            "CPU time of each reconcile pass (process-wide)",
            buckets=CPU_BUCKETS,
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "liveport_agent_pass_seconds",
            "Wall time of each reconcile pass",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pass_failures = Counter(
            "liveport_agent_pass_failures", "Passes that failed (retried)", registry=registry
        )
        self.flow_mods = Counter(
            "liveport_agent_flow_mods", "Flow changes sent to the switch", registry=registry
        )
        self.packet_ins = Counter(
            "liveport_agent_packet_ins", "Packet-ins received", registry=registry
        )
        self.transactions = Counter(
            "liveport_agent_transactions", "Transactions sent", registry=registry
        )
        registry.register(_AgentCollector(state, version))


class _AgentCollector:
    def __init__(self, state: Callable[[], AgentState], version: str) -> None:
        self.state = state
        self.version = version

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        state = self.state()
        flows = GaugeMetricFamily("liveport_agent_flows", "liveport's flows installed")
        flows.add_metric([], flow_count(state.memory))
        yield flows
        dropped = CounterMetricFamily(
            "liveport_agent_packet_ins_dropped",
            "Packet-ins dropped on the current OpenFlow connection (queue full)",
        )
        dropped.add_metric([], state.dropped_packet_ins)
        yield dropped
        roles = GaugeMetricFamily(
            "liveport_agent_ports", "Ports with a role on this chassis", labels=["role"]
        )
        counts = {str(r): 0 for r in LocalRole if r is not LocalRole.NONE}
        for role in state.memory.roles.values() if state.memory is not None else ():
            counts[str(role)] = counts.get(str(role), 0) + 1
        for name, count in sorted(counts.items()):
            roles.add_metric([name], count)
        yield roles
        yield connected_family(
            [
                ("ovs", bool(state.ovs and state.ovs.connected)),
                ("sb", bool(state.sb and state.sb.connected)),
            ]
        )
        openflow = GaugeMetricFamily(
            "liveport_openflow_connected", "1 if the OpenFlow connection to the bridge is up"
        )
        openflow.add_metric([], 1 if state.openflow else 0)
        yield openflow
        yield info_family("liveport-agent", self.version)


PassToken = tuple[float, float]


class AgentObserver:
    """The hooks the agent calls (counters only when metrics are off)."""

    def __init__(
        self, metrics: AgentMetrics | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self._announced: dict[str, float] = {}  # port -> when its announcement was read

    def pass_started(self) -> PassToken:
        return self.clock(), time.process_time()

    def pass_done(self, token: PassToken, *, failed: bool = False) -> None:
        PASSES.inc()
        if failed:
            PASS_FAILURES.inc()
        if self.metrics is None:
            return
        self.metrics.pass_cpu.observe(max(0.0, time.process_time() - token[1]))
        self.metrics.pass_seconds.observe(max(0.0, self.clock() - token[0]))
        if failed:
            self.metrics.pass_failures.inc()

    def flows_sent(self, change: FlowChange) -> None:
        n = len(change.diff) + len(change.delete_cookies)
        FLOW_MODS.inc(n)
        if self.metrics is not None:
            self.metrics.flow_mods.inc(n)

    def packet_in(self, received_at: float, port: str | None) -> None:
        """A packet-in; port is the port it activated here (None: nothing new)."""
        PACKET_INS.inc()
        if self.metrics is not None:
            self.metrics.packet_ins.inc()
        if port is not None:
            ANNOUNCEMENTS.inc()
            self._announced.setdefault(port, received_at)

    def installed(self, memory: Memory) -> None:
        """A pass ended with memory installed: announced ports now ACTIVATED here have their
        normal flows."""
        if not self._announced:
            return
        now = self.clock()
        for port, at in list(self._announced.items()):
            if port in memory.activated_role:
                del self._announced[port]
                if self.metrics is not None:
                    self.metrics.announcement_to_flows.observe(max(0.0, now - at))
            elif port not in memory.pending and port not in memory.activated:
                del self._announced[port]  # no longer migrating here

    def transaction(self) -> None:
        TXNS.inc()
        if self.metrics is not None:
            self.metrics.transactions.inc()
