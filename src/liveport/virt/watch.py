"""`liveport libvirt-watch`: follows libvirt's event API on this host and marks the VIFs of
migrating domains in the host's Open_vSwitch database.

The qemu hook cannot mark the source: libvirt calls it there only after the move (`stopped
end`, `release end`). The events can:

- the source's migration job: libvirt starts it when the migration begins, before the
  destination is even asked to prepare, but sends no event for it, so the watcher looks
  at the jobs of the running domains every `job_poll` seconds (0.5 s; one
  virDomainGetJobStats call per running domain); the first migration-iteration event
  (QEMU's first dirty-page pass) and, at the latest, the lifecycle event
  SUSPENDED/MIGRATED (the source pauses for the switch-over) come as events: whichever
  is first gives the domain's VIFs here `migration-status=outgoing`;
- while a domain is marked outgoing, its migration job is followed (virDomainGetJobInfo, as
  Nova's migration monitor does; libvirt sends no event when a migration fails or is
  aborted): when the job ends and the domain still runs here, the migration failed, and
  `outgoing` is cleared; when the domain stopped here (STOPPED/MIGRATED) it moved, and the
  hook unplugs its VIFs;
- RESUMED/MIGRATED on the destination (the guest runs here): `incoming` is cleared once
  QEMU's announcements are over and recorded (`hold`, 2 s by default; QEMU sends its last
  one 450 ms after resuming), so that the destination still waits for them when they come.

On start, and again whenever it reconnects to libvirtd, it reconciles: a domain whose job is
an outgoing migration is marked outgoing, a running domain without one that is marked
outgoing or incoming is cleared.

Concurrency model: libvirt's default event loop runs in its own thread and its callbacks
only enqueue (domain name, event); one worker thread reads the queue, talks to libvirtd and
writes the Open_vSwitch database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liveport.model.binding import INCOMING, OUTGOING, MigrationStatus
from liveport.model.domain import Domain, WatchAction, lifecycle_action, parse_domain
from liveport.model.errors import Unavailable
from liveport.virt.switch import STATUS_KEY, HostSwitch, find, status_ops

log = logging.getLogger("liveport.virt")

JOB_NONE = 0  # VIR_DOMAIN_JOB_NONE
OPERATION_MIGRATION_OUT = 5  # VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT


@dataclass(frozen=True)
class WatchOptions:
    uri: str
    ovs_db: str
    hold: float = 2.0  # seconds between the guest resuming here and clearing `incoming`
    poll: float = 0.2  # seconds between looks at a migration job marked outgoing
    job_poll: float = 0.5  # seconds between looks for new outgoing migration jobs (0: never)


@dataclass
class _Outgoing:
    domain: Domain


@dataclass
class _State:
    outgoing: dict[str, _Outgoing] = field(default_factory=dict)
    arrived: dict[str, tuple[float, Domain]] = field(default_factory=dict)  # name -> (when, dom)


def _libvirt() -> Any:
    try:
        import libvirt  # noqa: PLC0415 - only the watcher needs python3-libvirt
    except ImportError:
        raise Unavailable(
            "libvirt-watch needs libvirt's Python binding (Debian: python3-libvirt)"
        ) from None
    return libvirt


class Watcher:
    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        self._lv = _libvirt()
        self._events: queue.Queue[tuple[str, str, int, int]] = queue.Queue()
        self._state = _State()
        self._conn: Any = None
        self._closed = threading.Event()

    # ----- libvirt's side (event-loop thread: enqueue only) ----------------------------------

    def _on_lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        self._events.put((dom.name(), "lifecycle", event, detail))

    def _on_iteration(self, conn: Any, dom: Any, iteration: int, opaque: Any) -> None:
        self._events.put((dom.name(), "iteration", iteration, 0))

    def _on_close(self, conn: Any, reason: int, opaque: Any) -> None:
        self._closed.set()
        self._events.put(("", "closed", reason, 0))

    def connect(self) -> None:
        lv = self._lv
        self._conn = lv.openReadOnly(self.options.uri)
        self._conn.registerCloseCallback(self._on_close, None)
        self._conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        self._conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._on_iteration, None
        )
        self._conn.setKeepAlive(5, 3)
        self._closed.clear()
        log.info("libvirt-watch: following %s", self.options.uri)

    # ----- the worker ------------------------------------------------------------------------

    def run(self, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
        lv = self._lv
        lv.virEventRegisterDefaultImpl()
        loop = threading.Thread(target=self._event_loop, args=(stop,), daemon=True)
        loop.start()
        try:
            self.connect()
        except lv.libvirtError as exc:
            raise Unavailable(f"libvirt-watch: cannot follow {self.options.uri}: {exc}") from None
        self.reconcile()
        if ready is not None:
            ready()
        next_scan = time.monotonic()
        while not stop.is_set():
            try:
                name, kind, a, b = self._events.get(timeout=self.options.poll)
            except queue.Empty:
                pass
            else:
                self._handle(name, kind, a, b)
            if self.options.job_poll and time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.options.job_poll
                self._scan_jobs()
            self._follow_jobs()
            self._release_arrived()
            if self._closed.is_set() and not stop.is_set():
                self._reconnect(stop)

    def _event_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._lv.virEventRunDefaultImpl()

    def _reconnect(self, stop: threading.Event) -> None:
        log.warning("libvirt-watch: lost %s; reconnecting", self.options.uri)
        while not stop.is_set():
            try:
                self.connect()
            except self._lv.libvirtError as exc:
                log.info("libvirt-watch: %s not reachable yet: %s", self.options.uri, exc)
                stop.wait(1.0)
                continue
            self.reconcile()
            return

    def _handle(self, name: str, kind: str, a: int, b: int) -> None:
        if kind == "iteration":
            self._mark_outgoing(name, f"migration iteration {a}")
        elif kind == "lifecycle":
            action = lifecycle_action(a, b)
            if action == WatchAction.OUTGOING:
                self._mark_outgoing(name, "paused for the switch-over")
            elif action == WatchAction.ARRIVED:
                domain = self._domain(name)
                if domain is not None:
                    self._state.arrived[name] = (time.monotonic() + self.options.hold, domain)
                    log.info("libvirt-watch: %s resumed here after migrating", name)
            elif action == WatchAction.LEFT and name in self._state.outgoing:
                del self._state.outgoing[name]
                log.info("libvirt-watch: %s migrated away (the hook unplugs its VIFs)", name)

    def _domain(self, name: str) -> Domain | None:
        try:
            dom = self._conn.lookupByName(name)
            return parse_domain(dom.XMLDesc(0))
        except self._lv.libvirtError as exc:
            log.warning("libvirt-watch: %s: cannot read its XML: %s", name, exc)
            return None

    def _mark_outgoing(self, name: str, why: str) -> None:
        if name in self._state.outgoing:
            return
        domain = self._domain(name)
        if domain is None:
            return
        self._state.outgoing[name] = _Outgoing(domain)
        self._write(domain, OUTGOING, f"{name}: {why}: VIFs outgoing")

    def _scan_jobs(self) -> None:
        """Marks the domains whose job is an outgoing migration: libvirt starts that job
        when the migration begins on the source, seconds before QEMU's first iteration
        under load (it sends no event for it)."""
        lv = self._lv
        try:
            doms = self._conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except lv.libvirtError:
            return
        for dom in doms:
            try:
                name = dom.name()
                if name in self._state.outgoing:
                    continue
                stats = dom.jobStats()
            except lv.libvirtError:
                continue
            if _migrating_out(stats):
                self._mark_outgoing(name, "its outgoing migration job started")

    def _follow_jobs(self) -> None:
        for name in list(self._state.outgoing):
            try:
                dom = self._conn.lookupByName(name)
                active = dom.isActive()
                job = dom.jobInfo()[0] if active else JOB_NONE
            except self._lv.libvirtError:
                active, job = False, JOB_NONE
            if job != JOB_NONE:
                continue
            entry = self._state.outgoing.pop(name)
            if active:
                self._write(entry.domain, None, f"{name}: migration ended, still here: cleared")
            else:
                log.info("libvirt-watch: %s no longer runs here", name)

    def _release_arrived(self) -> None:
        now = time.monotonic()
        for name, (when, domain) in list(self._state.arrived.items()):
            if now >= when:
                del self._state.arrived[name]
                self._write(domain, None, f"{name}: runs here: incoming cleared")

    def _write(self, domain: Domain, status: MigrationStatus | None, what: str) -> None:
        try:
            with HostSwitch(self.options.ovs_db) as switch:
                switch.apply(status_ops(switch.snapshot(), domain.vifs, status), what)
        except Exception as exc:  # noqa: BLE001 - one domain's failure must not stop the watcher
            log.error("libvirt-watch: %s: %s", what, exc)

    def reconcile(self) -> None:
        """Marks what runs now: outgoing migrations; clears what no migration explains."""
        lv = self._lv
        try:
            doms = self._conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except lv.libvirtError as exc:
            log.warning("libvirt-watch: cannot list domains: %s", exc)
            return
        with HostSwitch(self.options.ovs_db) as switch:
            snap = switch.snapshot()
            for dom in doms:
                try:
                    domain = parse_domain(dom.XMLDesc(0))
                    stats = dom.jobStats()
                except lv.libvirtError:
                    continue
                out = _migrating_out(stats)
                state = dom.state()[0]
                marks = {
                    f.iface["external_ids"].get(STATUS_KEY)
                    for v in domain.vifs
                    if (f := find(snap, v)) is not None
                }
                if out:
                    self._mark_outgoing(domain.name, "migrating away (found at start)")
                elif OUTGOING in marks or (
                    INCOMING in marks and state == lv.VIR_DOMAIN_RUNNING and stats.get("type") == 0
                ):
                    switch.apply(
                        status_ops(snap, domain.vifs, None),
                        f"{domain.name}: no migration runs: statuses cleared",
                    )


def _migrating_out(stats: dict[str, Any]) -> bool:
    """virDomainGetJobStats says: an outgoing migration runs."""
    running = stats.get("type", JOB_NONE) != JOB_NONE
    return running and stats.get("operation") == OPERATION_MIGRATION_OUT
