"""Who owns a port, as either engine's southbound database says it: an engine-neutral watch of
Port_Binding.chassis, for comparisons between liveport and upstream OVN.

liveport's SB names the owner directly (Port_Binding.chassis is the chassis name); OVN's
Port_Binding.chassis is a reference to a Chassis row, and OVN records a destination's
activation in the binding's options (`additional-chassis-activated`). OwnerHistory turns
either into the same record: the owner by name and the chassis that recorded a handover,
each with the wall-clock time the watcher saw it (liveport.lab.watch.BindingWatch is the
richer, liveport-only watcher).

Concurrency model: the SB client's owner thread calls OwnerHistory.observe; it appends under
a lock; readers take copies.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveport.lab import lab
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Change, Row, Snapshot

OVN_ACTIVATED = "additional-chassis-activated"


@dataclass(frozen=True)
class BindingSeen:
    at: float  # wall clock, seconds
    port: str
    owner: str | None  # chassis name, None when the binding is empty
    handed_over: frozenset[str]  # chassis the SB records as activated destinations


def _chassis_name(snap: Snapshot, ref: Any) -> str | None:
    if ref is None:
        return None
    if isinstance(ref, str):  # liveport: the name itself
        return ref
    row = snap.get("Chassis", ref if isinstance(ref, uuid.UUID) else uuid.UUID(str(ref)))
    # A reference to a Chassis this snapshot does not hold still names an owner.
    return row["name"] if row is not None else str(ref)


def view(engine: str, snap: Snapshot, row: Row) -> tuple[str | None, frozenset[str]]:
    """(owner, activated destinations) of one Port_Binding row, as engine's SB states it.
    liveport binds an activated destination at once (M3), so its owner says it all."""
    owner = _chassis_name(snap, row["chassis"])
    if engine != "ovn":
        return owner, frozenset()
    activated = row.get("options", {}).get(OVN_ACTIVATED, "")
    return owner, frozenset(name for name in activated.split(",") if name)


class OwnerHistory:
    """Every (owner, handover) state of the watched ports, as observed, in order."""

    def __init__(self, engine: str, ports: Iterable[str] | None = None) -> None:
        self.engine = engine
        self.ports = set(ports) if ports is not None else None
        self._lock = threading.Lock()
        self._history: list[BindingSeen] = []
        self._last: dict[str, tuple[str | None, frozenset[str]]] = {}

    def observe(self, snap: Snapshot, at: float | None = None) -> None:
        now = time.time() if at is None else at
        with self._lock:
            for row in snap.rows("Port_Binding"):
                port = row["logical_port"]
                if self.ports is not None and port not in self.ports:
                    continue
                value = view(self.engine, snap, row)
                if self._last.get(port) != value:
                    self._last[port] = value
                    self._history.append(BindingSeen(now, port, *value))

    def seen(self, port: str, since: float = 0.0) -> list[BindingSeen]:
        """The states of port seen at or after since, preceded by the one in force then."""
        with self._lock:
            states = [s for s in self._history if s.port == port]
        before = [s for s in states if s.at < since]
        return before[-1:] + [s for s in states if s.at >= since]

    def owners(self, port: str, since: float = 0.0) -> list[str | None]:
        """Successive owners since since (consecutive duplicates collapsed)."""
        return collapse(s.owner for s in self.seen(port, since))

    def owner_changes(self, port: str, since: float = 0.0) -> int:
        return owner_changes(self.owners(port, since))

    def empty_blips(self, port: str, since: float = 0.0) -> int:
        return empty_blips(self.owners(port, since))

    def first_owner_at(self, port: str, owner: str, since: float = 0.0) -> float | None:
        return next(
            (s.at for s in self.seen(port, since) if s.owner == owner and s.at >= since), None
        )

    def handover_at(self, port: str, chassis: str, since: float = 0.0) -> float | None:
        """When the SB first showed chassis as where the port is active: bound to it, or
        (OVN) named in additional-chassis-activated."""
        for s in self.seen(port, since):
            if s.at >= since and (s.owner == chassis or chassis in s.handed_over):
                return s.at
        return None


def collapse(owners: Iterable[str | None]) -> list[str | None]:
    out: list[str | None] = []
    for owner in owners:
        if not out or out[-1] != owner:
            out.append(owner)
    return out


def owner_changes(owners: Sequence[str | None]) -> int:
    """How often the owner changed along a collapsed owner sequence (to and from none
    included: S -> none -> D is two changes)."""
    return max(0, len(collapse(owners)) - 1)


def empty_blips(owners: Sequence[str | None]) -> int:
    """Times the binding went empty between two owners (X -> none -> Y, X and Y chassis)."""
    seq = collapse(owners)
    return sum(
        1
        for i in range(1, len(seq) - 1)
        if seq[i] is None and seq[i - 1] is not None and seq[i + 1] is not None
    )


def same_owner_blips(owners: Sequence[str | None]) -> int:
    """Times the binding went D -> none -> D (emptied and re-claimed by the same chassis)."""
    seq = collapse(owners)
    return sum(
        1
        for i in range(1, len(seq) - 1)
        if seq[i] is None and seq[i - 1] is not None and seq[i - 1] == seq[i + 1]
    )


class OwnerWatch:
    """Watches a lab's SB -- liveport's or OVN's -- and keeps an OwnerHistory."""

    def __init__(self, directory: Path, ports: Iterable[str] | None = None) -> None:
        layout = lab.Layout.of(directory)
        self.engine = layout.engine
        self.history = OwnerHistory(self.engine, ports)
        remote = layout.sb_remote
        if self.engine == "ovn":
            tables: dict[str, list[str] | None] = {
                "Chassis": ["name"],
                "Port_Binding": ["logical_port", "chassis", "options"],
            }
            self.client = OvsdbClient(
                remote,
                lab.OVN_SB_NAME,
                tables,
                schema=fetch_schema(remote, lab.OVN_SB_NAME),
                name="owner-watch",
            )
        else:
            remote = ",".join(s.remote for s in layout.sb_relays) or remote
            self.client = OvsdbClient(
                remote,
                schema.SB_NAME,
                {"Port_Binding": ["logical_port", "chassis"]},
                leader_only=not layout.sb_relays,
                name="owner-watch",
            )
        try:
            self.client.wait_connected(10)
            self.client.add_listener(self._on_change).result(10)
        except BaseException:
            self.client.close()
            raise

    def _on_change(self, change: Change) -> None:
        if change.snapshot.connected:
            self.history.observe(change.snapshot)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OwnerWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
