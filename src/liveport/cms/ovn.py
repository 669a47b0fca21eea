"""The same cloud-side migration, driven through upstream OVN (for side-by-side comparisons).

OVN 23.03's form: `requested-chassis=S,D` with `activation-strategy=rarp` starts it (D is
an "additional" chassis, whose ovn-controller blocks the port until a RARP), completion is
`requested-chassis=D`, abort `requested-chassis=S`. Waits are on OVN's own database state:
configured = OVN's SB names D in `requested_additional_chassis`; ready = D has claimed the
port as additional chassis and every chassis has caught up with the NB (`hv_cfg`, as
`ovn-nbctl --wait=hv sync`: OVN reports no per-port readiness); completed/aborted = the
port is bound to one chassis and has no additional chassis.

OvnCms has the methods of liveport.cms.migrate.Cms that a lab or a benchmark uses, so the
same workload can be driven through either engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from liveport.cms.migrate import CmsClients, Event, MigrationError, WaitFor
from liveport.model.errors import Conflict, LiveportError, NotFound, Timeout
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Row, Snapshot, Update

OVN_SB_NAME = "OVN_Southbound"
NB_TABLES: dict[str, list[str] | None] = {
    "NB_Global": ["nb_cfg", "hv_cfg"],
    "Logical_Switch_Port": ["name", "options", "up"],
}
SB_TABLES: dict[str, list[str] | None] = {
    "Chassis": ["name"],
    "Port_Binding": [
        "logical_port",
        "chassis",
        "additional_chassis",
        "requested_chassis",
        "requested_additional_chassis",
        "up",
    ],
}


class OvnCms(CmsClients):
    """A cloud-side client of an OVN deployment (OVN_Northbound + OVN_Southbound)."""

    engine = "ovn"
    write_comment = "liveport migrate (OVN)"

    def __init__(self, nb_remote: str, sb_remote: str, *, connect_timeout: float = 10.0) -> None:
        self.nb = OvsdbClient(
            nb_remote,
            schema.NB_NAME,
            NB_TABLES,
            schema=fetch_schema(nb_remote, schema.NB_NAME, connect_timeout),
            indexes={"Logical_Switch_Port": ["name"]},
            name="ovn-cms-nb",
        )
        self.sb = OvsdbClient(
            sb_remote,
            OVN_SB_NAME,
            SB_TABLES,
            schema=fetch_schema(sb_remote, OVN_SB_NAME, connect_timeout),
            indexes={"Port_Binding": ["logical_port"], "Chassis": ["name"]},
            name="ovn-cms-sb",
        )
        self.nb.wait_connected(connect_timeout)
        self.sb.wait_connected(connect_timeout)

    # ----- reading ---------------------------------------------------------------------

    def _binding(self, port: str, sb: Snapshot | None = None) -> Row:
        rows = (sb or self.sb.snapshot()).lookup("Port_Binding", "logical_port", port)
        if not rows:
            raise NotFound(f"port {port!r} has no binding yet (is ovn-northd running?)")
        return rows[0]

    @staticmethod
    def _name(sb: Snapshot, ref: Any) -> str | None:
        if ref is None:
            return None
        row = sb.get("Chassis", ref if isinstance(ref, uuid.UUID) else uuid.UUID(str(ref)))
        return row["name"] if row is not None else None

    def owner(self, port: str, sb: Snapshot | None = None) -> str | None:
        snap = sb or self.sb.snapshot()
        return self._name(snap, self._binding(port, snap)["chassis"])

    def additional(self, port: str, sb: Snapshot | None = None) -> set[str]:
        snap = sb or self.sb.snapshot()
        refs = self._binding(port, snap)["additional_chassis"]
        return {n for n in (self._name(snap, r) for r in refs) if n}

    # ----- starting --------------------------------------------------------------------

    def check(self, port: str, destination: str) -> tuple[Row, Row]:
        lsp = self._lsp(port)
        sb = self.sb.snapshot()
        if not sb.lookup("Chassis", "name", destination):
            raise NotFound(f"unknown destination chassis {destination!r}")
        pb = self._binding(port, sb)
        current = self._name(sb, pb["chassis"])
        if current is None:
            raise MigrationError(f"port {port} is not bound to any chassis")
        if current == destination:
            raise MigrationError(f"port {port} is already on {destination}")
        requested = lsp["options"].get("requested-chassis", "")
        if "," in requested:
            raise Conflict(f"a migration of {port} ({requested}) is already in progress")
        return lsp, pb

    def start(
        self,
        port: str,
        destination: str,
        *,
        form: str = "ovn",
        wait: WaitFor = "configured",
        timeout: float = 30.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> list[Event]:
        del form  # OVN has one form
        lsp, _ = self.check(port, destination)
        source = self.owner(port)
        options = dict(lsp["options"])
        options["requested-chassis"] = f"{source},{destination}"
        options["activation-strategy"] = "rarp"
        self._write_options(lsp, options)
        events = [
            self._emit(on_event, "configured-nb", f"requested-chassis={source},{destination}")
        ]
        if wait == "none":
            return events
        self._wait(
            port,
            lambda sb: destination in self._requested_additional(port, sb),
            f"{destination} to be the additional chassis",
            timeout,
        )
        events.append(self._emit(on_event, "configured", f"{destination} is additional"))
        if wait == "ready":
            self.wait_ready(port, destination, timeout)
            events.append(self._emit(on_event, "ready", f"{destination} claimed the port"))
        return events

    def _requested_additional(self, port: str, sb: Snapshot) -> set[str]:
        rows = sb.lookup("Port_Binding", "logical_port", port)
        if not rows:
            return set()
        refs = rows[0]["requested_additional_chassis"]
        return {n for n in (self._name(sb, r) for r in refs) if n}

    def wait_ready(self, port: str, destination: str, timeout: float = 30.0) -> None:
        """D claimed the port as additional chassis, and every chassis caught up."""
        self._wait(
            port,
            lambda sb: destination in self.additional(port, sb),
            f"{destination} to claim {port} as additional chassis (it needs the VIF)",
            timeout,
        )
        self.sync(timeout)

    def sync(self, timeout: float = 30.0) -> None:
        """`ovn-nbctl --wait=hv sync`: bump nb_cfg, wait until hv_cfg reaches it."""
        snap = self.nb.snapshot()
        row = next(snap.rows("NB_Global"), None)
        if row is None:
            raise NotFound("the NB has no NB_Global row")
        target = int(row["nb_cfg"]) + 1
        self.nb.transact([Update("NB_Global", row.uuid, {"nb_cfg": target})], comment="sync")
        self.nb.wait_until(
            lambda s: (
                (g := next(s.rows("NB_Global"), None)) is not None and int(g["hv_cfg"]) >= target
            ),
            timeout=timeout,
            what="every chassis to catch up (hv_cfg)",
        )

    def _wait(
        self, port: str, reached: Callable[[Snapshot], bool], what: str, timeout: float
    ) -> None:
        try:
            self.sb.wait_until(reached, timeout=timeout, what=what)
        except Timeout:
            sb = self.sb.snapshot()
            raise Timeout(
                f"timed out after {timeout:g}s waiting for {what} (reached: owner "
                f"{self.owner(port, sb) or 'none'}, additional "
                f"{', '.join(sorted(self.additional(port, sb))) or 'none'})"
            ) from None

    # ----- ending ----------------------------------------------------------------------

    def _end(
        self, port: str, *, complete: bool, timeout: float, on_event: Callable[[Event], None] | None
    ) -> list[Event]:
        lsp = self._lsp(port)
        requested = lsp["options"].get("requested-chassis", "")
        if "," not in requested:
            raise MigrationError(f"port {port} is not migrating")
        source, destination = requested.split(",")[:2]
        keep = destination if complete else source
        options = dict(lsp["options"])
        options["requested-chassis"] = keep
        options.pop("activation-strategy", None)
        self._write_options(lsp, options)
        verb = "completed" if complete else "aborted"
        events = [self._emit(on_event, f"{verb}-nb", f"requested-chassis={keep}")]
        self._wait(
            port,
            lambda sb: self.owner(port, sb) == keep and not self.additional(port, sb),
            f"{port} bound to {keep} alone",
            timeout,
        )
        events.append(self._emit(on_event, verb, f"{port} is on {keep}"))
        return events


def serves_ovn(sb_remote: str, timeout: float = 10.0) -> bool:
    """True if the SB server at sb_remote is OVN's (OVN_Southbound), False if liveport's."""
    try:
        fetch_schema(sb_remote, OVN_SB_NAME, timeout)
    except LiveportError as exc:
        if "does not serve" in str(exc):
            return False
        raise
    return True
