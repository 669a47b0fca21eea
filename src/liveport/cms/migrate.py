"""The cloud's side of a live migration: configure it in the NB, wait on SB state, complete
or abort it -- the Python API behind `liveport migrate` and `liveport migrations`.

Input forms (DESIGN.md): OVN's `requested-chassis=S,D` when the port names its chassis, the
seed's `migration-destination=D` when it does not (or when asked with form="seed").
Completion is `requested-chassis=D` (OVN form) or removing the destination (seed form);
abort is `requested-chassis=S` or removing the destination.

Readiness (M9): the destination's agent reports in its Port_Claim that the port's flows --
blocking included -- are installed, after an OpenFlow barrier. That needs the destination
VIF, which the hypervisor plugs before it starts moving the VM (as Nova's
pre_live_migration does); `wait="ready"` waits for it.

Every wait is on database state, with a timeout whose error says what was reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from liveport.cms import vhost
from liveport.model.errors import Conflict, LiveportError, NotFound, Timeout
from liveport.model.logical import parse_options
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Row, Snapshot, Update, Verify
from liveport.vhostuser.catalogue import load_catalogue

NB_TABLES: dict[str, list[str] | None] = {
    "Logical_Switch_Port": ["name", "options", "up"],
}
# The SB lookups of a port's migration: its binding, its claims, the VIFs named after it.
SB_INDEXES: dict[str, list[str]] = {
    "Port_Binding": ["logical_port"],
    "Port_Claim": ["logical_port"],
    "Chassis_VIF": ["iface_id"],
}
SB_TABLES: dict[str, list[str] | None] = {
    "Chassis": ["name", "hostname", "vhost_modes"],
    "SB_Global": ["live_chassis"],
    "Chassis_VIF": ["chassis", "iface_id", "migration_status", "vhost_mode", "status"],
    "Port_Binding": [
        "logical_port",
        "chassis",
        "requested_chassis",
        "migration_destination",
        "migration_source",
        "migration_state",
        "activation_strategy",
        "up",
        "status",
    ],
    "Port_Claim": [
        "logical_port",
        "chassis",
        "role",
        "installed",
        "activated",
        "activation",
        "vhost",
    ],
}
Form = Literal["auto", "seed", "ovn"]
WaitFor = Literal["configured", "ready", "none"]


class MigrationError(LiveportError):
    pass


@dataclass(frozen=True)
class Event:
    phase: str  # configured, ready, activated, bound, completed, aborted
    at: float  # wall clock, seconds
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "at": round(self.at, 6), "detail": self.detail}


@dataclass
class Migration:
    """One port's migration as the databases describe it now."""

    port: str
    source: str | None
    destination: str
    state: str | None  # pending | activated
    form: str
    owner: str | None
    ready: bool
    activated_at: float | None
    activation: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "source": self.source,
            "destination": self.destination,
            "state": self.state,
            "form": self.form,
            "owner": self.owner,
            "ready": self.ready,
            "activated_at": self.activated_at,
            "activation": self.activation,
        }


def _claim(sb: Snapshot, port: str, chassis: str | None) -> Row | None:
    if chassis is None:
        return None
    for row in sb.lookup("Port_Claim", "logical_port", port):
        if row["chassis"] == chassis:
            return row
    return None


class CmsClients:
    """What every cloud-side client has: an NB and an SB client (`nb`, `sb`, set by the
    subclass), the port lookup, option writes that fail rather than overwrite a concurrent
    change, and timeline events."""

    nb: OvsdbClient
    sb: OvsdbClient
    write_comment = "liveport migrate"

    def close(self) -> None:
        self.nb.close()
        self.sb.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lsp(self, port: str) -> Row:
        rows = self.nb.snapshot().lookup("Logical_Switch_Port", "name", port)
        if not rows:
            raise NotFound(f"unknown port {port!r}")
        return rows[0]

    def _write_options(self, lsp: Row, options: dict[str, str]) -> None:
        self.nb.transact(
            [
                Verify("Logical_Switch_Port", lsp.uuid, "options"),
                Update("Logical_Switch_Port", lsp.uuid, {"options": options}),
            ],
            comment=self.write_comment,
        )

    def _emit(self, sink: Callable[[Event], None] | None, phase: str, detail: str) -> Event:
        event = Event(phase, time.time(), detail)
        if sink is not None:
            sink(event)
        return event

    def complete(
        self, port: str, *, timeout: float = 30.0, on_event: Callable[[Event], None] | None = None
    ) -> list[Event]:
        return self._end(port, complete=True, timeout=timeout, on_event=on_event)

    def abort(
        self, port: str, *, timeout: float = 30.0, on_event: Callable[[Event], None] | None = None
    ) -> list[Event]:
        return self._end(port, complete=False, timeout=timeout, on_event=on_event)

    def _end(
        self, port: str, *, complete: bool, timeout: float, on_event: Callable[[Event], None] | None
    ) -> list[Event]:
        raise NotImplementedError


class Cms(CmsClients):
    """A cloud-side client of liveport's NB and SB. One instance may serve many calls."""

    def __init__(self, nb_remote: str, sb_remote: str, *, connect_timeout: float = 10.0) -> None:
        self.nb = OvsdbClient(
            nb_remote,
            schema.NB_NAME,
            NB_TABLES,
            schema=fetch_schema(nb_remote, schema.NB_NAME, connect_timeout),
            indexes={"Logical_Switch_Port": ["name"]},
            name="cms-nb",
        )
        self.sb = OvsdbClient(
            sb_remote,
            schema.SB_NAME,
            SB_TABLES,
            indexes=SB_INDEXES,
            name="cms-sb",
        )
        self.nb.wait_connected(connect_timeout)
        self.sb.wait_connected(connect_timeout)
        self.catalogue = load_catalogue()

    # ----- reading ---------------------------------------------------------------------

    def _binding(self, port: str, sb: Snapshot | None = None) -> Row:
        rows = (sb or self.sb.snapshot()).lookup("Port_Binding", "logical_port", port)
        if not rows:
            raise NotFound(f"port {port!r} has no binding yet (is liveport-northd running?)")
        return rows[0]

    def migration(self, port: str) -> Migration | None:
        sb = self.sb.snapshot()
        pb = self._binding(port, sb)
        if pb["migration_destination"] is None:
            return None
        return self._describe(sb, pb)

    def migrations(self) -> list[Migration]:
        sb = self.sb.snapshot()
        return [
            self._describe(sb, pb)
            for pb in sorted(sb.rows("Port_Binding"), key=lambda r: r["logical_port"])
            if pb["migration_destination"] is not None
        ]

    def _describe(self, sb: Snapshot, pb: Row) -> Migration:
        dest = pb["migration_destination"]
        claim = _claim(sb, pb["logical_port"], dest)
        options = self._lsp(pb["logical_port"])["options"]
        form = (
            "ovn"
            if "," in options.get("requested-chassis", "")
            else ("seed" if "migration-destination" in options else "hypervisor")
        )
        return Migration(
            port=pb["logical_port"],
            source=pb["migration_source"],
            destination=dest,
            state=pb["migration_state"],
            form=form,
            owner=pb["chassis"],
            ready=claim is not None and claim["installed"] in ("pending", "owner"),
            activated_at=claim["activated"] / 1000 if claim and claim["activated"] else None,
            activation=dict(claim["activation"]) if claim else {},
        )

    # ----- starting --------------------------------------------------------------------

    def chassis_named(self, named: str, sb: Snapshot | None = None) -> str:
        """The chassis a name or a host name stands for (as northd resolves them, M14)."""
        sb = sb or self.sb.snapshot()
        if sb.one("Chassis", name=named) is not None:
            return named
        holders = sorted(r["name"] for r in sb.rows("Chassis") if r["hostname"] == named)
        if len(holders) > 1:
            raise MigrationError(
                f"host name {named!r} is ambiguous: chassis {', '.join(holders)} have it"
            )
        if not holders:
            raise NotFound(f"unknown destination chassis {named!r}")
        return str(holders[0])

    def check(self, port: str, destination: str) -> tuple[Row, Row]:
        """The pre-checks of a migration (destination: a chassis name, resolved); returns
        the NB port and SB binding."""
        lsp = self._lsp(port)
        sb = self.sb.snapshot()
        if not sb.one("Chassis", name=destination):
            raise NotFound(f"unknown destination chassis {destination!r}")
        if destination not in schema.live_chassis(sb):
            raise MigrationError(f"destination chassis {destination} is not alive")
        pb = self._binding(port, sb)
        current = pb["chassis"]
        if current is None:
            raise MigrationError(f"port {port} is not bound to any chassis")
        if current == destination:
            raise MigrationError(f"port {port} is already on {destination}")
        options = parse_options(lsp["options"])
        in_progress = pb["migration_destination"] or options.destination
        if in_progress:
            raise Conflict(f"a migration of {port} to {in_progress} is already in progress")
        verdict = vhost.check(sb, self.catalogue, port, destination)
        if not verdict.ok:
            raise MigrationError(verdict.text)  # V5: refused before anything changes
        return lsp, pb

    def start(
        self,
        port: str,
        destination: str,
        *,
        form: Form = "auto",
        wait: WaitFor = "configured",
        timeout: float = 30.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> list[Event]:
        """Names destination (a chassis name or host name: it is written as given, as
        Neutron writes host names) as the port's migration destination."""
        named = destination
        destination = self.chassis_named(named)
        lsp, pb = self.check(port, destination)
        options = dict(lsp["options"])
        requested = options.get("requested-chassis", "").strip()
        use_ovn = form == "ovn" or (form == "auto" and bool(requested))
        if use_ovn:
            main = requested.split(",")[0] if requested else pb["chassis"]
            options["requested-chassis"] = f"{main},{named}"
        else:
            options["migration-destination"] = named
        self._write_options(lsp, options)
        events = [
            self._emit(
                on_event,
                "configured-nb",
                f"{'requested-chassis' if use_ovn else 'migration-destination'} "
                f"names {destination}",
            )
        ]
        if wait == "none":
            return events
        self._wait_phase(port, destination, "configured", timeout)
        events.append(self._emit(on_event, "configured", f"{destination} is the destination"))
        if wait == "ready":
            self._wait_phase(port, destination, "ready", timeout)
            events.append(
                self._emit(on_event, "ready", f"{destination} installed the blocking flows")
            )
        return events

    def wait_ready(self, port: str, destination: str, timeout: float = 30.0) -> None:
        self._wait_phase(port, destination, "ready", timeout)

    def wait_owner(self, port: str, chassis: str, timeout: float = 30.0) -> None:
        """Returns once the SB binds port to chassis (Port_Binding.chassis)."""

        def owned(sb: Snapshot) -> bool:
            rows = sb.lookup("Port_Binding", "logical_port", port)
            return bool(rows) and rows[0]["chassis"] == chassis

        self.sb.wait_until(owned, timeout=timeout, what=f"{chassis} to own {port}")

    def _wait_phase(self, port: str, destination: str, phase: str, timeout: float) -> None:
        def reached(sb: Snapshot) -> bool:
            rows = sb.lookup("Port_Binding", "logical_port", port)
            if not rows or rows[0]["migration_destination"] != destination:
                return False
            if phase == "configured":
                return True
            claim = _claim(sb, port, destination)
            return claim is not None and claim["installed"] in ("pending", "owner")

        try:
            self.sb.wait_until(reached, timeout=timeout, what=f"{destination} to be {phase}")
        except Timeout:
            raise Timeout(
                f"timed out after {timeout:g}s waiting for {port} to be {phase} on "
                f"{destination} ({self._progress(port, destination)})"
            ) from None

    def _progress(self, port: str, destination: str) -> str:
        sb = self.sb.snapshot()
        rows = sb.lookup("Port_Binding", "logical_port", port)
        if not rows:
            return "no binding"
        pb = rows[0]
        parts = [
            f"owner {pb['chassis'] or 'none'}",
            f"destination {pb['migration_destination'] or 'not configured yet'}",
        ]
        vifs = {r["chassis"] for r in sb.lookup("Chassis_VIF", "iface_id", port)}
        if destination not in vifs:
            parts.append(f"{destination} has no VIF for it yet")
        claim = _claim(sb, port, destination)
        if claim is not None:
            parts.append(f"{destination} installed: {claim['installed'] or 'nothing yet'}")
        return "reached: " + ", ".join(parts)

    # ----- ending ----------------------------------------------------------------------

    def _known(self, named: str, sb: Snapshot) -> str:
        """named's chassis if it resolves, else named itself (what the NB says is kept)."""
        try:
            return self.chassis_named(named, sb)
        except (MigrationError, NotFound):
            return named

    def _end(
        self, port: str, *, complete: bool, timeout: float, on_event: Callable[[Event], None] | None
    ) -> list[Event]:
        lsp = self._lsp(port)
        sb = self.sb.snapshot()
        pb = self._binding(port, sb)
        options = dict(lsp["options"])
        parsed = parse_options(options)
        written = parsed.destination or pb["migration_destination"]  # maybe a host name
        if written is None:
            raise MigrationError(f"no migration of {port} is in progress")
        dest = pb["migration_destination"] or self._known(written, sb)
        source = pb["migration_source"] or (
            self._known(parsed.requested, sb) if parsed.requested else None
        )
        options.pop("migration-destination", None)
        if parsed.requested is not None:
            options["requested-chassis"] = written if complete else parsed.requested
        self._write_options(lsp, options)
        verb = "completed" if complete else "aborted"
        events = [self._emit(on_event, f"{verb}-nb", f"destination {dest} removed from the NB")]

        def settled(snap: Snapshot) -> Row | None:
            rows = snap.lookup("Port_Binding", "logical_port", port)
            if not rows or rows[0]["migration_destination"] is not None:
                return None
            row = rows[0]
            vifs = {r["chassis"] for r in snap.lookup("Chassis_VIF", "iface_id", port)}
            target = dest if complete else source
            if target in vifs and row["chassis"] != target:
                return None  # the arbitration follows shortly
            return row

        try:
            row = self.sb.wait_until(settled, timeout=timeout, what=f"{port} to be {verb}")
        except Timeout:
            raise Timeout(
                f"timed out after {timeout:g}s waiting for the migration of {port} "
                f"to be {verb} ({self._progress(port, dest)})"
            ) from None
        owner = row["chassis"]
        note = f"{port} is on {owner}" if owner else f"{port} is unbound ({row['status']})"
        events.append(self._emit(on_event, verb, note))
        return events
