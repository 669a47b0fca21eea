"""liveport-northd: OVN_Northbound -> Liveport_Southbound, incrementally.

Concurrency model: two OvsdbClients (NB and SB), each with its own owner thread, whose
listeners only enqueue their Change. One northd thread drains the queue, turns changed
rows into dirty keys (a logical switch, a logical port, the global state), recomputes just
those keys from the latest snapshots with pure functions (model.logical, model.binding),
and writes the differences in one SB transaction and one NB transaction per batch.

What it maintains:
- Datapath_Binding per Logical_Switch, with a 24-bit tunnel key that never changes.
- Port_Binding per Logical_Switch_Port: addresses, port security, requested chassis,
  migration destination/source, activation strategy, and -- decided here and nowhere else
  -- the owner (`chassis`), the migration state, conflicts, `up`, and a status map with
  every problem found in the NB (named by port).
- Port_Claim rows for exactly the chassis the NB named for a port (or, for an unnamed
  port, the chassis that holds it and its migration destination).
- nb_cfg -> SB_Global.nb_cfg -> NB_Global.sb_cfg, and NB_Global.hv_cfg = the lowest
  Chassis_Private.nb_cfg of the live chassis, so `ovn-nbctl --wait=hv` works.
- Chassis liveness (heartbeats judged on northd's clock) in SB_Global.live_chassis.
- `authority` = liveport-northd on every row it inserts, so that with TLS the SB server
  lets northd, and only northd, write them (model.security).
- A report of NB content liveport does not implement (SB_Global options:unsupported).

Active/standby: every northd asks the NB server for the OVSDB lock "liveport_northd" and
writes only while it holds it; the others keep their snapshots and chassis liveness up to
date and take over (with a full recompute) the moment the server grants them the lock,
which it does as soon as the holder's connection ends. The lock is on the NB because only
northd and the CMS can reach the NB: every client of a database can steal its locks, and
chassis reach the SB. The active northd names itself in SB_Global options:northd.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from liveport.model.addr import Mac
from liveport.model.binding import (
    DESTINATION,
    Arbitration,
    Installed,
    Resolved,
    arbitrate,
    claim_changes,
    claim_report,
    resolve_chassis,
    vif_report,
)
from liveport.model.clock import Clock, SystemClock
from liveport.model.dhcp_config import parse_dhcpv4_options, parse_dhcpv6_options, port_dhcp
from liveport.model.frozen import FrozenMap
from liveport.model.logical import (
    PortNetwork,
    PortOptions,
    activation_strategy,
    parse_network,
    parse_options,
)
from liveport.model.security import AUTHORITY, NORTHD_IDENTITY
from liveport.model.untrusted import chassis_problem, note, valid_chassis_name
from liveport.northd import limits, security
from liveport.northd.liveness import Liveness
from liveport.northd.observe import NorthdObserver, log_extra
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, TxnError, fetch_schema
from liveport.ovsdb.protocol import Schema
from liveport.ovsdb.rows import Change, Delete, Insert, Op, Ref, Row, Snapshot, Update

log = logging.getLogger("liveport.northd")

# NB tables and columns liveport reads; the rest of OVN_Northbound is only counted.
NB_TABLES: dict[str, list[str] | None] = {
    "NB_Global": ["nb_cfg", "sb_cfg", "hv_cfg", "hv_cfg_timestamp", "sb_cfg_timestamp"],
    "Logical_Switch": ["name", "ports", "acls", "load_balancer", "qos_rules", "dns_records"],
    "Logical_Switch_Port": [
        "name",
        "type",
        "addresses",
        "port_security",
        "options",
        "up",
        "enabled",
        "dhcpv4_options",
        "dhcpv6_options",
        "parent_name",
        "ha_chassis_group",
        "tag",
    ],
    "ACL": ["name", "priority", "direction", "match", "action", "log", "label"],
    "DHCP_Options": ["cidr", "options"],
    "Port_Group": ["name", "ports", "acls"],
    "Address_Set": ["name", "addresses"],
}
UNSUPPORTED_TABLES = (
    "BFD",
    "Copp",
    "DNS",
    "Forwarding_Group",
    "Gateway_Chassis",
    "HA_Chassis_Group",
    "Load_Balancer",
    "Load_Balancer_Group",
    "Logical_Router",
    "Logical_Router_Policy",
    "Logical_Router_Port",
    "Logical_Router_Static_Route",
    "Meter",
    "Mirror",
    "NAT",
    "QoS",
    "Static_MAC_Binding",
)
SB_TABLES: dict[str, list[str] | None] = {
    "SB_Global": None,
    "Chassis": ["name", "encap_ip", "hostname"],
    "Chassis_Private": ["name", "nb_cfg", "heartbeat"],
    "Datapath_Binding": None,
    "Port_Binding": None,
    "Port_Claim": None,
    "Chassis_VIF": None,
    "ACL": None,
    "Port_Group": None,
    "Address_Set": None,
}
SB_INDEXES = {
    "Port_Binding": [
        "logical_port",
        "datapath",
        "chassis",
        "requested_chassis",
        "migration_destination",
    ],
    "Port_Claim": ["logical_port", "chassis"],
    "Chassis_VIF": ["iface_id", "chassis"],
    "Chassis": ["name"],
    "Port_Group": ["name"],
    "Address_Set": ["name"],
}
NB_INDEXES = {
    "Logical_Switch_Port": ["name", "dhcpv4_options", "dhcpv6_options"],
    "Logical_Switch": ["ports", "acls"],
    "Port_Group": ["name", "ports", "acls"],
    "Address_Set": ["name"],
}

GLOBAL = ("global",)
FULL = ("full",)
Key = tuple[str, ...]
MAX_DP_KEY = (1 << 24) - 1
MAX_PORT_KEY = (1 << 15) - 1
SLOW_BATCH = 0.1  # seconds: batches slower than this are logged with their size
NORTHD_LOCK = "liveport_northd"


@dataclass(frozen=True)
class NorthdConfig:
    nb_remote: str
    sb_remote: str
    dead_after: float = 10.0  # seconds without a heartbeat before a chassis is dead
    name: str = ""  # how the active northd names itself in SB_Global (default host:pid)


def _nb_tables(nb_schema: Schema) -> dict[str, list[str] | None]:
    tables = dict(NB_TABLES)
    for name in UNSUPPORTED_TABLES:
        if name in nb_schema.tables:
            tables[name] = []
    return tables


class Northd:
    def __init__(self, config: NorthdConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.liveness = Liveness(self.clock, config.dead_after)
        self.limits = limits.VifLimiter(self.clock)  # what one chassis can make northd do
        nb_helper = fetch_schema(config.nb_remote, schema.NB_NAME)
        self.nb = OvsdbClient(
            config.nb_remote,
            schema.NB_NAME,
            _nb_tables(nb_helper),
            schema=nb_helper,
            indexes=NB_INDEXES,
            lock=NORTHD_LOCK,
            name="nb",
        )
        self.sb = OvsdbClient(
            config.sb_remote, schema.SB_NAME, SB_TABLES, indexes=SB_INDEXES, name="sb"
        )
        self._changes: queue.SimpleQueue[tuple[str, Change]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self.nb.add_listener(lambda change: self._enqueue("nb", change))
        self.sb.add_listener(lambda change: self._enqueue("sb", change))
        self._prev: dict[str, Snapshot] = {}
        self._dirty: set[Key] = {FULL}
        self._alive: frozenset[str] = frozenset()
        self._unsupported = ""
        self._unusable: dict[str, str] = {}  # Chassis row -> why it cannot be used
        # port -> a fingerprint of what northd last wrote into its binding (kept small:
        # one int per port, not a copy of the row)
        self._written: dict[str, int] = {}
        self._urgent: set[Key] = set()  # ports whose destination just announced the VM
        self._macs = MacIndex()
        self.active = False  # holds the NB lock and writes
        self.identity = config.name or f"{socket.gethostname()}:{os.getpid()}"
        self.batches = 0
        self.observer = NorthdObserver()  # counters; the daemon gives it metrics
        self._recompute = False  # set by recompute() from any thread

    def _enqueue(self, db: str, change: Change) -> None:
        self._changes.put((db, change))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def recompute(self) -> None:
        """Thread-safe: the next batch recomputes everything (a control command)."""
        self._recompute = True
        self._wake.set()

    def close(self) -> None:
        self.nb.close()
        self.sb.close()

    # ----- main loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("northd: NB %s, SB %s", self.config.nb_remote, self.config.sb_remote)
        backoff = 0.0
        while not stop.is_set():
            timeout = min_or_none(self.liveness.next_change(), self.limits.next_due())
            wait_for = backoff if backoff else (timeout + 0.01 if timeout is not None else 1.0)
            self._wake.wait(wait_for)
            self._wake.clear()
            try:
                self.step()
                backoff = 0.0
            except TxnError as exc:
                self.observer.failed()
                backoff = min(1.0, (backoff or 0.025) * 2)
                log.warning(
                    "northd: transaction failed (%s); retrying in %.0f ms", exc, backoff * 1000
                )

    def step(self) -> bool:
        """Processes everything that changed; returns True if it wrote something."""
        while not self._changes.empty():
            db, change = self._changes.get_nowait()
            self._dirty |= self._keys(db, change)
        if self._recompute:
            self._recompute = False
            self._dirty.add(FULL)
        nb, sb = self.nb.snapshot(), self.sb.snapshot()
        if not (nb.connected and sb.connected):
            return False  # never act on a snapshot we know to be stale
        self._report_unusable_chassis(sb)
        ports, limited_changed = self.limits.due(nb, sb)
        self._dirty |= {("port", name) for name in ports}
        if limited_changed:
            self._dirty.add(GLOBAL)
        usable = usable_chassis(sb)
        self.liveness.observe(
            {r["name"]: r["heartbeat"] for r in sb.rows("Chassis_Private") if r["name"] in usable}
        )
        alive = self.liveness.alive()
        if alive != self._alive:
            for name in alive ^ self._alive:
                log.info("northd: chassis %s is %s", name, "alive" if name in alive else "DEAD")
                self._dirty |= self._chassis_keys(sb, name)
            self._dirty.add(GLOBAL)
            self._alive = alive
        if not nb.has_lock:
            if self.active:
                log.warning("northd: lost the NB lock %s; standing by", NORTHD_LOCK)
                self.active = False
            return False
        if not self.active:
            log.info("northd: holds the NB lock %s; active as %s", NORTHD_LOCK, self.identity)
            self.active = True
            # Another northd may have written anything meanwhile: recompute everything.
            self._dirty = {FULL}
            self._written.clear()
        if not self._dirty:
            return False
        keys, self._dirty = self._dirty, set()
        urgent, self._urgent = (keys & self._urgent) - {FULL}, set()
        try:
            wrote = False
            if urgent and FULL not in keys:
                # Announcements first, in a batch of their own; the rest on what follows.
                wrote = self._reconcile(urgent, nb, sb)
                keys -= urgent
                nb, sb = self.nb.snapshot(), self.sb.snapshot()
            return self._reconcile(keys, nb, sb) or wrote if keys else wrote
        except BaseException:
            self._dirty |= keys | urgent
            raise

    def _report_unusable_chassis(self, sb: Snapshot) -> None:
        """Logs each chassis whose row cannot be used (plan() ignores it) when that changes."""
        unusable = {
            str(r.uuid): problem
            for r in sb.rows("Chassis")
            if (problem := chassis_problem(r["name"], r["hostname"], r["encap_ip"])) is not None
        }
        for row_uuid, problem in sorted(unusable.items()):
            if self._unusable.get(row_uuid) != problem:
                log.warning("northd: chassis row %s ignored: %s", row_uuid, problem)
        self._unusable = unusable

    # ----- which keys a change touches ------------------------------------------------------

    def _keys(self, db: str, change: Change) -> set[Key]:
        snap = change.snapshot
        prev = self._prev.get(db, snap)
        self._prev[db] = snap
        if change.reloaded:
            if db == "nb":
                self._macs = MacIndex.of(snap)
            return {FULL}
        keys: set[Key] = set()
        for table, uuids in change.changed.items():
            for row_uuid in uuids:
                rows = [r for r in (prev.get(table, row_uuid), snap.get(table, row_uuid)) if r]
                keys |= self._row_keys(db, table, rows, snap)
        return keys

    def _nb_row_keys(self, table: str, rows: list[Row], snap: Snapshot) -> set[Key]:
        keys: set[Key] = security.nb_keys(table, rows, snap)
        if table in ("ACL", "Port_Group", "Address_Set"):
            return keys
        if table == "DHCP_Options":
            for row in rows:
                for column in ("dhcpv4_options", "dhcpv6_options"):
                    users = snap.lookup("Logical_Switch_Port", column, row.uuid)
                    keys |= {("port", lsp["name"]) for lsp in users}
            return keys
        if table == "Logical_Switch":
            for row in rows:
                keys.add(("ls", str(row.uuid)))
                for port_uuid in row["ports"]:
                    lsp = snap.get("Logical_Switch_Port", port_uuid)
                    if lsp is not None:
                        keys.add(("port", lsp["name"]))
        elif table == "Logical_Switch_Port":
            keys |= {("port", row["name"]) for row in rows}
            keys |= {("port", name) for name in self._index_macs(rows, snap)}
        else:
            keys.add(GLOBAL)
        return keys

    def _row_keys(self, db: str, table: str, rows: list[Row], snap: Snapshot) -> set[Key]:
        if db == "nb":
            return self._nb_row_keys(table, rows, snap)
        keys: set[Key] = set()
        if table == "Port_Binding":
            # Port_Binding is written by northd alone: a row that now holds exactly what
            # northd last wrote is its own write coming back, with nothing to recompute.
            current = rows[-1] if rows and snap.get(table, rows[-1].uuid) else None
            for row in rows:
                name = row["logical_port"]
                if current is None or current["logical_port"] != name or not self._is_own(current):
                    keys.add(("port", name))
        elif table == "Port_Claim":
            keys |= {("port", row["logical_port"]) for row in rows}
            self._note_activation(rows, snap)
        elif table == "Chassis_VIF":
            # A chassis over its rate gets its ports recomputed together, later (limits).
            # One row change, one token (a row's chassis and iface_id never change).
            if rows and self.limits.admit(rows[-1]["chassis"], rows[-1]["iface_id"]):
                keys |= {("port", row["iface_id"]) for row in rows}
        elif table == "Datapath_Binding":
            keys |= {("ls", row["external_ids"].get("nb-uuid", "")) for row in rows}
        elif table == "Chassis":
            for row in rows:
                keys |= self._chassis_keys(snap, row["name"])
                if row["hostname"]:
                    # Ports that name it by its host name (M14).
                    keys |= self._host_keys(row["hostname"])
            keys.add(GLOBAL)
        else:  # SB_Global, Chassis_Private (nb_cfg for hv_cfg; heartbeats via liveness)
            keys.add(GLOBAL)
        return keys

    def _note_activation(self, rows: list[Row], snap: Snapshot) -> None:
        """A destination claim that just recorded the VM's announcement: its port is bound
        ahead of everything else (M3: the handover is recorded as soon as possible)."""
        current = snap.get("Port_Claim", rows[-1].uuid) if rows else None
        if (
            current is not None
            and current["role"] == DESTINATION
            and current["activated"] is not None
            and (len(rows) < 2 or rows[0]["activated"] is None)
        ):
            self._urgent.add(("port", current["logical_port"]))

    def _index_macs(self, rows: list[Row], snap: Snapshot) -> set[str]:
        """Keeps the MAC index up to date with a changed port; returns the ports whose MAC
        duplicates may change with it."""
        affected: set[str] = set()
        for row in rows:
            current = snap.get("Logical_Switch_Port", row.uuid)
            if current is None or current["name"] != row["name"]:
                affected |= self._macs.update(row["name"], None)
            if current is not None:
                affected |= self._macs.update(current["name"], current["addresses"])
        return affected

    def _is_own(self, row: Row) -> bool:
        written = self._written.get(row["logical_port"])
        return written is not None and written == binding_fingerprint(row)

    def _chassis_keys(self, sb: Snapshot, name: str) -> set[Key]:
        """Ports whose arbitration depends on chassis `name`."""
        keys: set[Key] = set()
        for column in ("chassis", "requested_chassis", "migration_destination"):
            keys |= {("port", r["logical_port"]) for r in sb.lookup("Port_Binding", column, name)}
        keys |= {("port", r["logical_port"]) for r in sb.lookup("Port_Claim", "chassis", name)}
        # Of a chassis over its share, only the reports northd uses (its own ports' are
        # above): a change of its Chassis row must not cost a key per report it floods.
        over = self.limits.shares.get(name)
        if over is None:
            keys |= {("port", r["iface_id"]) for r in sb.lookup("Chassis_VIF", "chassis", name)}
        else:
            keys |= {("port", port) for port in over.kept}
        return keys

    def _host_keys(self, hostname: str) -> set[Key]:
        """Ports whose NB options name hostname (requested-chassis, migration-destination)."""
        nb = self._prev.get("nb")
        if nb is None:
            return set()
        return {
            ("port", lsp["name"])
            for lsp in nb.rows("Logical_Switch_Port")
            if hostname in lsp["options"].get("requested-chassis", "").split(",")
            or lsp["options"].get("migration-destination") == hostname
        }

    # ----- reconciliation ------------------------------------------------------------------

    def _reconcile(self, keys: set[Key], nb: Snapshot, sb: Snapshot) -> bool:
        started, cpu = time.monotonic(), time.process_time()
        full = FULL in keys
        if FULL in keys:
            keys = all_keys(nb, sb)
            self._macs = MacIndex.of(nb)
            self.limits.reset(nb, sb)
        batch = plan(nb, sb, self._alive, keys, self._macs, self.limits.shares)
        if GLOBAL in keys:
            self._global(batch)
        computed = time.monotonic()
        wrote = False
        if batch.sb_ops:
            self.sb.transact(batch.sb_ops, comment="liveport-northd")
            self.observer.committed("sb", batch.sb, batch.sb_ops)
            wrote = True
        for name, desired in batch.written.items():
            if desired is None:
                self._written.pop(name, None)
            else:
                self._written[name] = desired
        if batch.nb_ops:
            try:
                self.nb.transact(batch.nb_ops, comment="liveport-northd")
                self.observer.committed("nb")
            except TxnError as exc:
                # A CMS may have deleted a port in the meantime: recompute those next time.
                log.info("northd: NB update deferred (%s)", exc)
                self._dirty |= {("port", name) for name in batch.nb_ports} | {GLOBAL}
            wrote = True
        for line in batch.events:
            log.info("northd: %s", line, extra=log_extra(line, self.sb.snapshot(), batch.sb))
        self.batches += 1
        elapsed = time.monotonic() - started
        self.observer.batch(full, time.process_time() - cpu, elapsed)
        if elapsed > SLOW_BATCH:
            log.info(
                "northd: batch of %d keys: %d SB and %d NB operations in %.0f ms "
                "(%.0f ms computing)",
                len(keys),
                len(batch.sb_ops),
                len(batch.nb_ops),
                elapsed * 1000,
                (computed - started) * 1000,
            )
        return wrote

    def _global(self, batch: Plan) -> None:
        nb, sb = batch.nb, batch.sb
        nb_global = next(nb.rows("NB_Global"), None)
        sb_global = next(sb.rows("SB_Global"), None)
        nb_cfg = nb_global["nb_cfg"] if nb_global is not None else 0
        unsupported = self._unsupported_report(nb)
        if unsupported != self._unsupported:
            if unsupported:
                log.warning(
                    "northd: the NB holds content liveport does not implement: %s", unsupported
                )
            self._unsupported = unsupported
        if sb_global is None:
            batch.sb_ops.append(
                Insert(
                    "SB_Global",
                    {
                        "nb_cfg": nb_cfg,
                        "options": {"unsupported": unsupported, "northd": self.identity},
                        "live_chassis": self._alive,
                        AUTHORITY: NORTHD_IDENTITY,
                    },
                )
            )
        else:
            options = dict(sb_global["options"])
            options["northd"] = self.identity
            if unsupported:
                options["unsupported"] = unsupported
            else:
                options.pop("unsupported", None)
            limited = limits.limited_text(self.limits.shares, self.limits.over_rate)
            if limited:
                options["limited"] = limited
            else:
                options.pop("limited", None)
            values: dict[str, Any] = {}
            if sb_global["nb_cfg"] != nb_cfg:
                values["nb_cfg"] = nb_cfg
            if options != dict(sb_global["options"]):
                values["options"] = options
            if sb_global["live_chassis"] != self._alive:
                values["live_chassis"] = self._alive  # liveness as judged here, for all to read
            if values:
                batch.sb_ops.append(Update("SB_Global", sb_global.uuid, values))
        if nb_global is None:
            return
        sb_cfg = sb_global["nb_cfg"] if sb_global is not None else 0
        registered = usable_chassis(sb)
        reported = [
            r["nb_cfg"]
            for r in sb.rows("Chassis_Private")
            if r["name"] in self._alive and r["name"] in registered
        ]
        hv_cfg = min([sb_cfg, *reported])
        values = {}
        if nb_global["sb_cfg"] != sb_cfg:
            values["sb_cfg"] = sb_cfg
            values["sb_cfg_timestamp"] = int(self.clock.wall() * 1000)
        if nb_global["hv_cfg"] != hv_cfg:
            values["hv_cfg"] = hv_cfg
            values["hv_cfg_timestamp"] = int(self.clock.wall() * 1000)
        if values:
            batch.nb_ops.append(Update("NB_Global", nb_global.uuid, values))

    def _unsupported_report(self, nb: Snapshot) -> str:
        counts = {t: len(nb.table(t)) for t in UNSUPPORTED_TABLES if nb.table(t)}
        return ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()))


def min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class MacIndex:
    """Which logical switch ports name each MAC in their addresses, so that a port's
    duplicates are found without walking its switch. northd keeps one up to date from the
    NB's changes; plan() builds one from the snapshot when it is not given any."""

    def __init__(self) -> None:
        self._ports: dict[int, set[str]] = {}
        self._macs: dict[str, tuple[int, ...]] = {}

    @classmethod
    def of(cls, nb: Snapshot) -> MacIndex:
        index = cls()
        for lsp in nb.rows("Logical_Switch_Port"):
            index.update(lsp["name"], lsp["addresses"])
        return index

    def update(self, name: str, addresses: Iterable[str] | None) -> set[str]:
        """The port now has these addresses (None: it is gone); returns every port that
        shares one of its old or new MACs (their duplicate status may change)."""
        old = self._macs.pop(name, ())
        new = parse_network(tuple(addresses), ()).macs if addresses is not None else ()
        affected: set[str] = set()
        for mac in old:
            holders = self._ports.get(mac, set())
            holders.discard(name)
            affected |= holders
            if not holders:
                self._ports.pop(mac, None)
        for mac in new:
            holders = self._ports.setdefault(mac, set())
            affected |= holders
            holders.add(name)
        if new:
            self._macs[name] = new
        return affected

    def sharing(self, mac: int) -> frozenset[str]:
        return frozenset(self._ports.get(mac, ()))


def usable_chassis(sb: Snapshot) -> frozenset[str]:
    """Chassis that may hold ports and count for liveness and hv_cfg: registered, with a row
    fit to be used (a malformed name, host name or tunnel address makes a chassis unusable
    for everyone, and northd logs why)."""
    return frozenset(
        r["name"]
        for r in sb.rows("Chassis")
        if chassis_problem(r["name"], r["hostname"], r["encap_ip"]) is None
    )


def all_keys(nb: Snapshot, sb: Snapshot) -> set[Key]:
    """Every key of a full recompute: each switch and port either database knows of."""
    keys: set[Key] = {GLOBAL}
    keys |= {("ls", str(r.uuid)) for r in nb.rows("Logical_Switch")}
    keys |= {("ls", r["external_ids"].get("nb-uuid", "")) for r in sb.rows("Datapath_Binding")}
    keys |= {("port", r["name"]) for r in nb.rows("Logical_Switch_Port")}
    keys |= {("port", r["logical_port"]) for r in sb.rows("Port_Binding")}
    keys |= {("port", r["logical_port"]) for r in sb.rows("Port_Claim")}
    keys |= security.all_keys(nb, sb)
    return keys


def plan(
    nb: Snapshot,
    sb: Snapshot,
    alive: frozenset[str],
    keys: set[Key],
    macs: MacIndex | None = None,
    shares: Mapping[str, limits.Share] | None = None,
) -> Plan:
    """What northd writes to bring the switches and ports named by `keys` in line (pure: the
    snapshots are read, nothing is sent). `alive` is the chassis northd judges alive, `macs`
    the NB's MAC index (built from nb when not given), `shares` the chassis over their share
    of VIF reports (limits; computed from the snapshots when not given). The global key
    (nb_cfg, liveness) needs northd's own state and is not planned here."""
    batch = Plan(
        nb,
        sb,
        alive,
        macs if macs is not None else MacIndex.of(nb),
        shares if shares is not None else limits.shares(nb, sb),
    )
    for key in sorted(k for k in keys if k[0] == "ls"):
        batch.datapath(key[1])
    for key in sorted(k for k in keys if k[0] == "port"):
        batch.port(key[1])
    security.plan_security(batch, keys)
    batch.drop_orphan_datapaths()
    return batch


@dataclass
class Plan:
    """The SB and NB operations of one reconciliation, with in-batch key allocation."""

    nb: Snapshot
    sb: Snapshot
    alive: frozenset[str]
    macs: MacIndex
    shares: Mapping[str, limits.Share] = field(default_factory=dict)
    sb_ops: list[Op] = field(default_factory=list)
    nb_ops: list[Op] = field(default_factory=list)
    nb_ports: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    _dp_for_ls: dict[str, tuple[uuid.UUID | Ref, int]] = field(default_factory=dict)
    _dp_keys: set[int] | None = None
    _port_keys: dict[int, set[int]] = field(default_factory=dict)
    _deleted_pbs: set[uuid.UUID] = field(default_factory=set)
    _moved_pbs: set[uuid.UUID] = field(default_factory=set)
    _deleted_dps: set[uuid.UUID] = field(default_factory=set)
    # port -> the Port_Binding values computed (None: deleted), except the datapath, which
    # may be a reference to a row inserted in this batch.
    written: dict[str, int | None] = field(default_factory=dict)

    @functools.cached_property
    def registered(self) -> frozenset[str]:
        return usable_chassis(self.sb)

    @functools.cached_property
    def hostnames(self) -> dict[str, str]:
        """Usable chassis -> host name (the NB may name a chassis by either)."""
        return {
            r["name"]: r["hostname"]
            for r in self.sb.rows("Chassis")
            if r["name"] in self.registered
        }

    # ----- datapaths ---------------------------------------------------------------------

    def _sb_datapath(self, ls_uuid: str) -> Row | None:
        for row in self.sb.rows("Datapath_Binding"):
            if row["external_ids"].get("nb-uuid") == ls_uuid:
                return row
        return None

    def _free_dp_key(self) -> int:
        if self._dp_keys is None:
            self._dp_keys = {r["tunnel_key"] for r in self.sb.rows("Datapath_Binding")}
        key = next(k for k in range(1, MAX_DP_KEY + 1) if k not in self._dp_keys)
        self._dp_keys.add(key)
        return key

    def datapath(self, ls_uuid: str) -> tuple[uuid.UUID | Ref, int] | None:
        """Ensures the SB datapath of NB switch ls_uuid (or deletes it); returns its ref."""
        if ls_uuid in self._dp_for_ls:
            return self._dp_for_ls[ls_uuid]
        try:
            ls = self.nb.get("Logical_Switch", uuid.UUID(ls_uuid))
        except ValueError:
            ls = None
        dp = self._sb_datapath(ls_uuid)
        if ls is None:
            if dp is not None:
                self._deleted_dps.add(dp.uuid)
            return None
        name = ls["name"] or ls_uuid
        if dp is None:
            key = self._free_dp_key()
            ref = Ref(f"dp-{ls_uuid}")
            self.sb_ops.append(
                Insert(
                    "Datapath_Binding",
                    {
                        "tunnel_key": key,
                        "name": name,
                        "external_ids": {"nb-uuid": ls_uuid},
                        AUTHORITY: NORTHD_IDENTITY,
                    },
                    name=ref.name,
                )
            )
            self.events.append(f"switch {name}: datapath with tunnel key {key}")
            result: tuple[uuid.UUID | Ref, int] = (ref, key)
        else:
            if dp["name"] != name:
                self.sb_ops.append(Update("Datapath_Binding", dp.uuid, {"name": name}))
            result = (dp.uuid, dp["tunnel_key"])
        self._dp_for_ls[ls_uuid] = result
        return result

    def drop_orphan_datapaths(self) -> None:
        for dp_uuid in self._deleted_dps:
            for pb in self.sb.lookup("Port_Binding", "datapath", dp_uuid):
                if pb.uuid not in self._deleted_pbs and pb.uuid not in self._moved_pbs:
                    self._delete_port(pb)
            self.sb_ops.append(Delete("Datapath_Binding", dp_uuid))

    def _free_port_key(self, dp: uuid.UUID | Ref, dp_key: int) -> int:
        used = self._port_keys.get(dp_key)
        if used is None:
            used = set()
            if isinstance(dp, uuid.UUID):
                used = {r["tunnel_key"] for r in self.sb.lookup("Port_Binding", "datapath", dp)}
            self._port_keys[dp_key] = used
        key = next(k for k in range(1, MAX_PORT_KEY + 1) if k not in used)
        used.add(key)
        return key

    # ----- ports -----------------------------------------------------------------------------

    def _delete_port(self, pb: Row) -> None:
        self._deleted_pbs.add(pb.uuid)
        self.sb_ops.append(Delete("Port_Binding", pb.uuid))

    def _vif_rows(self, name: str, claims: list[Row], pb: Row | None) -> list[Row]:
        """The port's VIF reports. Rows whose chassis name is not a chassis name are not
        reports, nor those of a chassis over its share beyond its own ports and its margin
        (limits)."""
        rows = [
            r
            for r in self.sb.lookup("Chassis_VIF", "iface_id", name)
            if valid_chassis_name(r["chassis"])
        ]
        if not self.shares:
            return rows
        own = {c["chassis"] for c in claims} | ({pb["chassis"]} if pb is not None else set())
        return [
            r
            for r in rows
            if (over := self.shares.get(r["chassis"])) is None
            or r["chassis"] in own
            or name in over.kept
        ]

    def port(self, name: str) -> None:
        sb, nb = self.sb, self.nb
        pbs = sb.lookup("Port_Binding", "logical_port", name)
        claims = sb.lookup("Port_Claim", "logical_port", name)
        lsps = nb.lookup("Logical_Switch_Port", "name", name)
        for extra in pbs[1:]:
            self._delete_port(extra)
        pb = pbs[0] if pbs else None
        lss = nb.lookup("Logical_Switch", "ports", lsps[0].uuid) if lsps else []
        ls = self._home_switch(lss, pb)
        dp = self.datapath(str(ls.uuid)) if ls is not None else None
        if not lsps or ls is None or dp is None:
            self._remove_port(name, pb, claims)
            return
        lsp = lsps[0]
        dp_ref, dp_key = dp
        options = parse_options(lsp["options"])
        network = parse_network(lsp["addresses"], lsp["port_security"])
        problems = [*options.problems, *network.problems, *_unsupported_port_features(lsp)]
        options, notes = self._resolve(options, problems)
        dhcp = self._dhcp(lsp, network, problems)
        if len(lsps) > 1:
            problems.append(f"{len(lsps)} logical switch ports are named {name}")
        if len(lss) > 1:
            others = sorted(_switch_name(s) for s in lss if s.uuid != ls.uuid)
            problems.append(
                f"the port is in {len(lss)} logical switches; liveport binds it in "
                f"{_switch_name(ls)} only and ignores it in {', '.join(others)}"
            )
        duplicate = self._duplicate(lsp, ls)
        if duplicate:
            problems.append(duplicate)

        same_dp = pb is not None and pb["datapath"] == dp_ref
        if pb is not None and same_dp:
            tunnel_key = pb["tunnel_key"]
        else:
            tunnel_key = self._free_port_key(dp_ref, dp_key)
            if pb is not None:
                self._moved_pbs.add(pb.uuid)
        reports = {
            c["chassis"]: claim_report(c["chassis"], c["role"], c["installed"], c["activated"])
            for c in claims
        }
        vif_rows = self._vif_rows(name, claims, pb)
        # A VIF its chassis refused (e.g. a vhost-user mode it cannot honour) is not there.
        vifs = {
            r["chassis"]: vif_report(r["chassis"], r["migration_status"])
            for r in vif_rows
            if not r["status"].get("error")
        }
        # Why it refused is repeated only for a chassis the port may be on, and only as a
        # bounded, escaped note: nothing a chassis writes reaches a port's row verbatim,
        # and a chassis the NB did not name cannot write into the status of a port.
        problems += [
            f"VIF on {r['chassis']} refused: {note(r['status']['error'])}"
            for r in sorted(vif_rows, key=lambda r: r["chassis"])
            if r["status"].get("error")
            and (
                options.requested is None
                or r["chassis"] in (options.requested, options.destination)
            )
        ]
        result = arbitrate(
            requested=options.requested,
            destination=options.destination,
            current_owner=pb["chassis"] if pb is not None else None,
            current_source=pb["migration_source"] if pb is not None else None,
            vifs=vifs,
            claims=reports,
            alive=self.alive,
            registered=self.registered,
        )
        if lsp["type"] == LOCALNET:
            # The physical network's door on every chassis that maps it: never bound.
            result = Arbitration(None, None, None)
            problems += self._localnet_problems(lsp, ls)
        owner_claim = reports.get(result.owner) if result.owner else None
        up = owner_claim is not None and owner_claim.installed == Installed.OWNER
        status = _status(problems, result.reason, notes)
        self._write_binding(
            name,
            pb,
            {
                "logical_port": name,
                "datapath": dp_ref,
                "tunnel_key": tunnel_key,
                "type": lsp["type"],
                "addresses": frozenset(lsp["addresses"]),
                "port_security": frozenset(lsp["port_security"]),
                "requested_chassis": options.requested,  # resolved
                "migration_destination": result.destination,
                "migration_source": result.source,
                "activation_strategy": frozenset(
                    str(s) for s in activation_strategy(options, owner_vhost(claims, result.owner))
                ),
                "chassis": result.owner,
                "migration_state": result.migration_state,
                "conflicts": result.conflicts,
                "up": up,
                "enabled": False if lsp["enabled"] is False else None,
                **_localnet(lsp),
                **dhcp,
                "status": FrozenMap(status),
            },
            result,
        )
        self._sync_claims(name, claims, result, frozenset(vifs))
        if lsp["up"] != up:
            self.nb_ops.append(Update("Logical_Switch_Port", lsp.uuid, {"up": up}))
            self.nb_ports.add(name)

    def _localnet_problems(self, lsp: Row, ls: Row) -> list[str]:
        """What is wrong with a localnet port: no network name, a VLAN tag that is not a
        VID, another localnet port in its switch (the first by name is used)."""
        out = []
        if not lsp["options"].get("network_name"):
            out.append("a localnet port needs options:network_name (the physical network)")
        tag = _one_int(lsp["tag"])
        if tag is not None and not 1 <= tag <= MAX_VLAN:
            out.append(f"tag {tag} is not a VLAN ID (1-{MAX_VLAN}); the port is not used")
        names = sorted(
            r["name"]
            for u in ls["ports"]
            if (r := self.nb.get("Logical_Switch_Port", u)) is not None and r["type"] == LOCALNET
        )
        if len(names) > 1 and names[0] != lsp["name"]:
            out.append(
                f"the switch has {len(names)} localnet ports ({', '.join(names)}); liveport "
                f"uses {names[0]} only"
            )
        return out

    def _dhcp(
        self, lsp: Row, network: PortNetwork, problems: list[str]
    ) -> dict[str, FrozenMap[str, str]]:
        """The port's native DHCP (Port_Binding dhcpv4_options / dhcpv6_options: the
        DHCP_Options row's options plus its `cidr`, and the port's own options:hostname),
        checked here so that an agent answers only from a usable config; problems are the
        port's."""
        v4, v6 = self._dhcp_row(lsp, "dhcpv4_options"), self._dhcp_row(lsp, "dhcpv6_options")
        out: dict[str, FrozenMap[str, str]] = {
            "dhcpv4_options": FrozenMap(),
            "dhcpv6_options": FrozenMap(),
        }
        for column, row in (("dhcpv4_options", v4), ("dhcpv6_options", v6)):
            if row is False:
                problems.append(f"{column} names a DHCP_Options row that does not exist")
        if isinstance(v4, Row):
            config, found = parse_dhcpv4_options(v4["cidr"], v4["options"])
            problems += [f"dhcpv4_options: {p}" for p in found]
            if config is not None:
                _, more = port_dhcp(lsp["name"], network.addresses, config, lsp["options"])
                problems += list(more)
                values = {**v4["options"], "cidr": v4["cidr"]}
                hostname = lsp["options"].get("hostname")
                if hostname is not None and not any("options:hostname" in p for p in more):
                    values["hostname"] = hostname
                out["dhcpv4_options"] = FrozenMap(values)
        if isinstance(v6, Row):
            config6, found = parse_dhcpv6_options(v6["cidr"], v6["options"])
            problems += [f"dhcpv6_options: {p}" for p in found]
            if config6 is not None:
                out["dhcpv6_options"] = FrozenMap({**v6["options"], "cidr": v6["cidr"]})
        return out

    def _dhcp_row(self, lsp: Row, column: str) -> Row | bool | None:
        """The DHCP_Options row a port names in column (False: it names one that is gone)."""
        ref = _one_ref(lsp[column])
        if ref is None:
            return None
        row = self.nb.get("DHCP_Options", ref)
        return row if row is not None else False

    def _resolve(self, options: PortOptions, problems: list[str]) -> tuple[PortOptions, list[str]]:
        """The options with the chassis they name by host name resolved to chassis names
        (M14: arbitration speaks chassis names), and how each host name resolved."""
        requested = resolve_chassis(options.requested, self.hostnames)
        destination = resolve_chassis(options.destination, self.hostnames)
        notes = [r.note for r in (requested, destination) if r.note]
        if requested.chassis is not None and requested.chassis == destination.chassis:
            problems.append(
                f"migration destination {options.destination} is the requested chassis itself"
            )
            destination = Resolved(None)
        resolved = dataclasses.replace(
            options, requested=requested.chassis, destination=destination.chassis
        )
        return resolved, notes

    def _home_switch(self, switches: list[Row], pb: Row | None) -> Row | None:
        """The switch a port is bound in when the NB puts it in several: the one it is bound
        in already, else the first by name (then by UUID), so the choice never flaps."""
        if not switches:
            return None
        if pb is not None and len(switches) > 1:
            dp = self.sb.get("Datapath_Binding", pb["datapath"])
            current = dp["external_ids"].get("nb-uuid") if dp is not None else None
            for ls in switches:
                if str(ls.uuid) == current:
                    return ls
        return min(switches, key=lambda ls: (_switch_name(ls), str(ls.uuid)))

    def _remove_port(self, name: str, pb: Row | None, claims: list[Row]) -> None:
        self.written[name] = None
        if pb is not None:
            self._delete_port(pb)
            self.events.append(f"port {name}: removed")
        for claim in claims:
            self.sb_ops.append(Delete("Port_Claim", claim.uuid))

    def _write_binding(
        self, name: str, pb: Row | None, desired: dict[str, Any], result: Arbitration
    ) -> None:
        self.written[name] = binding_fingerprint(desired)
        if pb is None:
            self.sb_ops.append(
                Insert("Port_Binding", {**_plain(desired), AUTHORITY: NORTHD_IDENTITY})
            )
            self.events.append(f"port {name}: created with tunnel key {desired['tunnel_key']}")
        else:
            changed = {k: v for k, v in desired.items() if pb.get(k) != v}
            if changed:
                self.sb_ops.append(Update("Port_Binding", pb.uuid, _plain(changed)))
        old_owner = pb["chassis"] if pb is not None else None
        if old_owner != result.owner:
            why = result.reason or (
                "announcement on the destination" if result.owner == result.destination else "bound"
            )
            self.events.append(
                f"port {name}: owner {old_owner or '-'} -> {result.owner or '-'} ({why})"
            )

    def _sync_claims(
        self, name: str, claims: list[Row], result: Arbitration, vifs: frozenset[str]
    ) -> None:
        rows = {c["chassis"]: c for c in claims}
        reports = {
            c: claim_report(c, r["role"], r["installed"], r["activated"]) for c, r in rows.items()
        }
        changes = claim_changes(reports, result.claims, vifs)
        for chassis in sorted(changes.delete):
            self.sb_ops.append(Delete("Port_Claim", rows[chassis].uuid))
        for chassis, role in sorted(changes.new_role.items()):
            # A new role starts clean: an old announcement must not count twice.
            self.sb_ops.append(
                Update(
                    "Port_Claim",
                    rows[chassis].uuid,
                    {"role": role, "activated": None, "activation": {}, "installed": None},
                )
            )
        for chassis in sorted(changes.clear_activation):
            self.sb_ops.append(
                Update("Port_Claim", rows[chassis].uuid, {"activated": None, "activation": {}})
            )
        for chassis, role in sorted(changes.insert.items()):
            self.sb_ops.append(
                Insert(
                    "Port_Claim",
                    {
                        "logical_port": name,
                        "chassis": chassis,
                        "role": role,
                        AUTHORITY: NORTHD_IDENTITY,
                    },
                )
            )

    def _duplicate(self, lsp: Row, ls: Row) -> str | None:
        """Why the port's MAC is not its own in its switch: another port of the switch has
        it and the lower tunnel key (an unbound port counts as the highest), or None."""
        name = lsp["name"]
        for mac in parse_network(tuple(lsp["addresses"]), ()).macs:
            contenders = [(self._key_of(name), name)]
            for other in self.macs.sharing(mac) - {name}:
                if any(
                    row.uuid in ls["ports"]
                    for row in self.nb.lookup("Logical_Switch_Port", "name", other)
                ):
                    contenders.append((self._key_of(other), other))
            winner = min(contenders)[1]
            if winner != name:
                return f"MAC {Mac(mac)} is already used by port {winner} of the switch"
        return None

    def _key_of(self, name: str) -> int:
        pb = next(iter(self.sb.lookup("Port_Binding", "logical_port", name)), None)
        return int(pb["tunnel_key"]) if pb is not None else 1 << 20


def owner_vhost(claims: list[Row], owner: str | None) -> Mapping[str, str]:
    """What the owner's vhost-user backend recorded of the guest's negotiation (V4)."""
    for claim in claims:
        if claim["chassis"] == owner:
            return dict(claim["vhost"])
    return {}


# The Port_Binding columns northd decides (all it writes but the datapath, which may be a
# reference to a row inserted in the same batch).
DECIDED = (
    "logical_port",
    "tunnel_key",
    "type",
    "addresses",
    "port_security",
    "requested_chassis",
    "migration_destination",
    "migration_source",
    "activation_strategy",
    "chassis",
    "migration_state",
    "conflicts",
    "up",
    "enabled",
    "network_name",
    "tag",
    "dhcpv4_options",
    "dhcpv6_options",
    "status",
)


def binding_fingerprint(values: Row | Mapping[str, Any]) -> int:
    """A hash of the columns northd decides: equal for northd's own write coming back."""
    return hash(tuple(values.get(column) for column in DECIDED))


LOCALNET = "localnet"
MAX_VLAN = 4094


def _one_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, frozenset | set | tuple | list):
        return next(iter(value), None)
    return None


def _localnet(lsp: Row) -> dict[str, Any]:
    """Port_Binding network_name and tag: a localnet port's physical network and VLAN."""
    if lsp["type"] != LOCALNET:
        return {"network_name": None, "tag": None}
    tag = _one_int(lsp["tag"])
    return {
        "network_name": lsp["options"].get("network_name") or None,
        "tag": tag if tag is not None and 1 <= tag <= MAX_VLAN else None,
    }


def _one_ref(value: Any) -> uuid.UUID | None:
    """An optional reference column's value (a UUID, or one in a set, or nothing)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, frozenset | set | tuple | list):
        return next(iter(value), None)
    return None


def _status(problems: list[str], reason: str, notes: list[str]) -> dict[str, str]:
    """Port_Binding.status: NB problems (error), why the port is bound where it is
    (binding), how host names resolved (chassis)."""
    status = {}
    if problems:
        status["error"] = "; ".join(problems)
    if reason:
        status["binding"] = reason
    if notes:
        status["chassis"] = "; ".join(notes)
    return status


def _switch_name(ls: Row) -> str:
    return str(ls["name"] or ls.uuid)


def _unsupported_port_features(lsp: Row) -> list[str]:
    out = []
    if lsp["type"] and lsp["type"] != LOCALNET:
        out.append(f"port type {lsp['type']!r} is not implemented by liveport")
    if lsp["parent_name"]:
        out.append("container ports (parent_name/tag) are not implemented by liveport")
    if lsp["ha_chassis_group"]:
        out.append("HA chassis groups are not implemented by liveport")
    return out


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Converts frozen values into what a transaction takes."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, frozenset):
            out[key] = sorted(value)
        elif isinstance(value, FrozenMap):
            out[key] = dict(value)
        else:
            out[key] = value
    return out


def run_forever(config: NorthdConfig, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    northd = Northd(config)
    try:
        northd.run(stop)
    finally:
        northd.close()
