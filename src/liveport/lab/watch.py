"""Watching bindings change: every owner and migration-state change of the Port_Bindings, and
every announcement a destination recorded, with the wall-clock time it was seen. Used for
timelines, benchmarks and the no-fight tests (owner changes per migration / per second).

Concurrency model: the SB client's owner thread calls the listener, which appends under a
lock; readers take copies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from liveport.lab import lab
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Change, Snapshot


@dataclass(frozen=True)
class Seen:
    at: float
    port: str
    owner: str | None
    state: str | None
    destination: str | None


class BindingWatch:
    """Records every Port_Binding owner/state the SB shows, as it shows it.

    In a clustered lab with relays it watches through the relays: fault tests kill
    cluster members, and a watcher connected to the member that dies would see the states
    committed while it reconnects only as their sum."""

    def __init__(self, directory: Path, ports: Iterable[str] | None = None) -> None:
        self.ports = set(ports) if ports is not None else None
        self._lock = threading.Lock()
        self.history: list[Seen] = []
        self._last: dict[str, tuple[str | None, str | None, str | None]] = {}
        self.activations: dict[str, tuple[str, int, dict[str, str]]] = {}
        # (port, chassis) -> [(time seen, installed state)]
        self.installed: dict[tuple[str, str], list[tuple[float, str | None]]] = {}
        layout = lab.Layout.of(directory)
        self.client = OvsdbClient(
            ",".join(s.remote for s in layout.sb_relays) or layout.sb_remote,
            schema.SB_NAME,
            {
                "Port_Binding": [
                    "logical_port",
                    "chassis",
                    "migration_state",
                    "migration_destination",
                ],
                "Port_Claim": ["logical_port", "chassis", "activated", "activation", "installed"],
            },
            leader_only=not layout.sb_relays,
            name="watch",
        )
        self.client.wait_connected(10)
        self.client.add_listener(self._on_change).result(10)  # caught up with the current state

    def _on_change(self, change: Change) -> None:
        now = time.time()
        snap = change.snapshot
        if not snap.connected:
            return
        with self._lock:
            for row in snap.rows("Port_Binding"):
                port = row["logical_port"]
                if self.ports is not None and port not in self.ports:
                    continue
                value = (row["chassis"], row["migration_state"], row["migration_destination"])
                if self._last.get(port) != value:
                    self._last[port] = value
                    self.history.append(Seen(now, port, *value))
            for claim in snap.rows("Port_Claim"):
                key = (claim["logical_port"], claim["chassis"])
                states = self.installed.setdefault(key, [])
                if not states or states[-1][1] != claim["installed"]:
                    states.append((now, claim["installed"]))
                if claim["activated"] is not None and claim["logical_port"] not in self.activations:
                    self.activations[claim["logical_port"]] = (
                        claim["chassis"],
                        claim["activated"],
                        dict(claim["activation"]),
                    )

    def seen(self, port: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.history if s.port == port]

    def owners(self, port: str) -> list[str | None]:
        """Successive owners (consecutive duplicates collapsed)."""
        out: list[str | None] = []
        for s in self.seen(port):
            if not out or out[-1] != s.owner:
                out.append(s.owner)
        return out

    def owner_changes(self, port: str, since: float = 0.0) -> int:
        changes = 0
        previous: str | None = None
        first = True
        for s in self.seen(port):
            if not first and s.owner != previous and s.at >= since:
                changes += 1
            previous, first = s.owner, False
        return changes

    def first_owner_at(self, port: str, owner: str, since: float = 0.0) -> float | None:
        for s in self.seen(port):
            if s.owner == owner and s.at >= since:
                return s.at
        return None

    def installed_at(self, port: str, chassis: str, state: str) -> float | None:
        """When the chassis first reported state for port (after its barrier)."""
        with self._lock:
            for at, value in self.installed.get((port, chassis), []):
                if value == state:
                    return at
        return None

    def wait(self, predicate: Callable[[Snapshot], object], timeout: float, what: str) -> object:
        return self.client.wait_until(predicate, timeout=timeout, what=what)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> BindingWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
