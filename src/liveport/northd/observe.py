"""What northd tells operators about itself: coverage counters, Prometheus metrics and the
migration a log line belongs to. northd calls the hooks of a NorthdObserver at a few points
of its loop; everything else is here.

Migration id: `PORT@DESTINATION/CLAIM`, CLAIM the first 8 hex digits of the UUID of the
destination's Port_Claim row. northd creates that row when the migration starts (and its
role changes, the row stays, when it completes), and the destination's agent monitors it,
so northd's and the agent's lines about one migration carry the same id, whatever their
clocks say; a later migration of the same port to the same chassis gets a new claim row.

Metrics (`--metrics-address`; every name is listed in docs/operations.md):
- liveport_northd_migrations{phase}: migrations under way by phase (pending: the
  destination waits for the VM's announcement; activated: the destination owns the port),
  counted in northd's SB snapshot at each scrape.
- liveport_northd_migrations_finished_total{outcome}: migrations that ended, completed
  (the destination kept the port) or aborted (the source did, or the port went away).
- liveport_northd_announcement_to_binding_seconds: from the destination claim's
  `activated` timestamp (the agent's wall clock, when it saw the announcement) to the
  commit of northd's write that makes the destination the owner (northd's wall clock):
  includes the agent's write, the SB, northd's reaction and its transaction. The two clocks
  differ by their skew (NTP keeps it to a millisecond or so on one network); a negative
  difference is counted as 0.
- liveport_northd_batch_cpu_seconds and liveport_northd_batch_seconds: CPU time
  (time.process_time, the whole process: the database threads' work during the batch
  counts too) and wall time of each reconciliation batch; their _count is the batches.
- liveport_northd_chassis_vif_reports_shed{chassis}: VIF reports of a chassis over its
  share that northd ignores now (only chassis over their share have a series);
  liveport_northd_chassis_vif_changes_total{chassis}: the Chassis_VIF row changes northd
  saw of each chassis, and liveport_northd_chassis_vif_changes_deferred_total{chassis} those
  beyond its rate, acted on later (northd.limits).
- liveport_northd_recomputes_total, liveport_northd_transactions_total{db},
  liveport_northd_transaction_failures_total, liveport_northd_active,
  liveport_db_connected{db}, liveport_info{program,version}.

Concurrency model: hooks run on northd's worker thread; counters and prometheus_client's
metrics are thread-safe; the collectors run on the metrics thread and read only snapshots
and plain attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from liveport.ovsdb.rows import Delete, Insert, Op, Row, Snapshot, Update
from liveport.runtime import coverage
from liveport.runtime.logs import event_port, migration_tag
from liveport.runtime.metrics import CPU_BUCKETS, LATENCY_BUCKETS, connected_family, info_family

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

BATCHES = coverage.counter("northd_batch", "reconciliation batches")
RECOMPUTES = coverage.counter("northd_recompute", "full recomputes")
TXNS = coverage.counter("northd_txn", "transactions committed (SB and NB)")
TXN_ERRORS = coverage.counter("northd_txn_error", "transactions that failed and are retried")
ACTIVATIONS = coverage.counter("northd_activation", "ports handed to their destination")
FINISHED = coverage.counter("northd_migration_end", "migrations that ended")

PHASES = ("pending", "activated")
OUTCOMES = ("completed", "aborted")


def migration_id(sb: Snapshot, port: str) -> str | None:
    """The migration port is in, by the SB snapshot (None: it is in none)."""
    binding = next(iter(sb.lookup("Port_Binding", "logical_port", port)), None)
    destination = binding["migration_destination"] if binding is not None else None
    if not destination:
        return None
    claim = next(
        (c for c in sb.lookup("Port_Claim", "logical_port", port) if c["chassis"] == destination),
        None,
    )
    return migration_tag(port, destination, claim.uuid if claim is not None else None)


def log_extra(line: str, *snapshots: Snapshot) -> dict[str, str]:
    """`extra` for logging an event line: its migration, from the first snapshot that
    knows it (give the newest first)."""
    port = event_port(line)
    if port is None:
        return {}
    for snap in snapshots:
        found = migration_id(snap, port)
        if found is not None:
            return {"migration": found}
    return {}


@dataclass(frozen=True)
class Ending:
    port: str
    outcome: str  # completed | aborted
    migration: str


@dataclass(frozen=True)
class Activation:
    port: str
    destination: str
    activated_ms: int | None  # the claim's timestamp (the agent's clock)
    migration: str


def transitions(before: Snapshot, ops: Sequence[Op]) -> tuple[list[Activation], list[Ending]]:
    """The migrations a batch of SB operations activates and ends (pure)."""
    activations: list[Activation] = []
    endings: list[Ending] = []
    for op in ops:
        if op.table != "Port_Binding" or isinstance(op, Insert):
            continue
        if not isinstance(op, (Update, Delete)):
            continue
        old = before.get("Port_Binding", op.uuid)
        if old is None or not old["migration_destination"]:
            continue
        port, destination = old["logical_port"], old["migration_destination"]
        tag = migration_id(before, port) or migration_tag(port, destination, None)
        values: dict[str, Any] = dict(op.values) if isinstance(op, Update) else {}
        owner = values.get("chassis", old["chassis"])
        if isinstance(op, Delete):
            endings.append(Ending(port, "aborted", tag))
            continue
        if "chassis" in values and owner == destination and old["chassis"] != destination:
            claim = _claim(before, port, destination)
            stamp = claim["activated"] if claim is not None else None
            activations.append(Activation(port, destination, stamp, tag))
        if "migration_destination" in values and values["migration_destination"] in (None, []):
            outcome = "completed" if owner == destination else "aborted"
            endings.append(Ending(port, outcome, tag))
    return activations, endings


def _claim(sb: Snapshot, port: str, chassis: str) -> Row | None:
    return next(
        (c for c in sb.lookup("Port_Claim", "logical_port", port) if c["chassis"] == chassis),
        None,
    )


class NorthdMetrics:
    """northd's Prometheus metrics in registry; `state` tells the collector how northd is."""

    def __init__(
        self, registry: CollectorRegistry, state: Callable[[], NorthdState], version: str
    ) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415 - metrics are optional

        self.finished = Counter(
            "liveport_northd_migrations_finished",
            "Migrations that ended, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.finished.labels(outcome)
        self.announcement_to_binding = Histogram(
            "liveport_northd_announcement_to_binding_seconds",
            "From the destination's announcement (the claim's activated time, the agent's "
            "clock) to northd's commit of the new owner",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_cpu = Histogram(
            "liveport_northd_batch_cpu_seconds",
            "CPU time of each reconciliation batch (process-wide)",
            buckets=CPU_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "liveport_northd_batch_seconds",
            "Wall time of each reconciliation batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.recomputes = Counter(
            "liveport_northd_recomputes", "Full recomputes", registry=registry
        )
        self.transactions = Counter(
            "liveport_northd_transactions",
            "Transactions committed, by database",
            ["db"],
            registry=registry,
        )
        for db in ("nb", "sb"):
            self.transactions.labels(db)
        self.transaction_failures = Counter(
            "liveport_northd_transaction_failures",
            "Transactions that failed (northd retries them)",
            registry=registry,
        )
        registry.register(_NorthdCollector(state, version))


@dataclass(frozen=True)
class NorthdState:
    """What the collector reads at a scrape (immutable snapshots and plain values)."""

    nb: Snapshot | None
    sb: Snapshot | None
    active: bool
    shed: Mapping[str, int] = field(default_factory=dict)  # chassis -> VIF reports ignored
    deferred: Mapping[str, int] = field(default_factory=dict)  # chassis -> changes deferred
    changes: Mapping[str, int] = field(default_factory=dict)  # chassis -> changes seen


class _NorthdCollector:
    def __init__(self, state: Callable[[], NorthdState], version: str) -> None:
        self.state = state
        self.version = version

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        state = self.state()
        phases = GaugeMetricFamily(
            "liveport_northd_migrations", "Migrations under way, by phase", labels=["phase"]
        )
        counts = dict.fromkeys(PHASES, 0)
        if state.sb is not None:
            for row in state.sb.rows("Port_Binding"):
                if row["migration_destination"] and row["migration_state"] in counts:
                    counts[row["migration_state"]] += 1
        for phase, count in counts.items():
            phases.add_metric([phase], count)
        yield phases
        per_chassis = (
            (
                GaugeMetricFamily,
                "liveport_northd_chassis_vif_reports_shed",
                "VIF reports of a chassis over its share that northd ignores",
                state.shed,
            ),
            (
                CounterMetricFamily,
                "liveport_northd_chassis_vif_changes_deferred",
                "Chassis_VIF changes of a chassis beyond its rate, acted on later",
                state.deferred,
            ),
            (
                CounterMetricFamily,
                "liveport_northd_chassis_vif_changes",
                "Chassis_VIF row changes of a chassis that northd saw",
                state.changes,
            ),
        )
        for family, name, documentation, counts_by_chassis in per_chassis:
            metric = family(name, documentation, labels=["chassis"])
            for chassis, count in sorted(counts_by_chassis.items()):
                metric.add_metric([chassis], count)
            yield metric
        active = GaugeMetricFamily(
            "liveport_northd_active", "1 if this northd holds the NB lock and writes"
        )
        active.add_metric([], 1 if state.active else 0)
        yield active
        yield connected_family(
            [
                ("nb", bool(state.nb and state.nb.connected)),
                ("sb", bool(state.sb and state.sb.connected)),
            ]
        )
        yield info_family("liveport-northd", self.version)


class NorthdObserver:
    """The hooks northd calls (no-ops but for the counters when metrics are off)."""

    def __init__(
        self, metrics: NorthdMetrics | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        self.metrics = metrics
        self.wall = wall

    def batch(self, full: bool, cpu: float, seconds: float) -> None:
        BATCHES.inc()
        if full:
            RECOMPUTES.inc()
        if self.metrics is not None:
            self.metrics.batch_cpu.observe(max(0.0, cpu))
            self.metrics.batch_seconds.observe(max(0.0, seconds))
            if full:
                self.metrics.recomputes.inc()

    def committed(self, db: str, before: Snapshot | None = None, ops: Sequence[Op] = ()) -> None:
        """A transaction committed; for the SB, `before` is the snapshot its ops were
        planned on."""
        TXNS.inc()
        if self.metrics is not None:
            self.metrics.transactions.labels(db).inc()
        if before is None:
            return
        activations, endings = transitions(before, ops)
        now_ms = self.wall() * 1000
        for activation in activations:
            ACTIVATIONS.inc()
            if self.metrics is not None and activation.activated_ms is not None:
                seconds = max(0.0, (now_ms - activation.activated_ms) / 1000)
                self.metrics.announcement_to_binding.observe(seconds)
        for ending in endings:
            FINISHED.inc()
            if self.metrics is not None:
                self.metrics.finished.labels(ending.outcome).inc()

    def failed(self) -> None:
        TXN_ERRORS.inc()
        if self.metrics is not None:
            self.metrics.transaction_failures.inc()
