"""The source's side of carrying connections across a migration (model.carried): which of
its ports it publishes the tracked connections of, and the SB writes that publish them.
Pure; the agent reads its conntrack and writes the SB.

A chassis publishes a port's connections while it owns the port and the port migrates to
another chassis (a destination is set), on a switch that tracks connections. It keeps
publishing (every CARRY_INTERVAL) until the migration ends:
- completed (another chassis owns the port): the row stays HOLD seconds more, then goes,
  so that connections idle at the switch-over are still admitted at the destination a
  while after the cloud completed the migration;
- aborted (this chassis still owns the port, no destination): the row goes at once.
Rows of this chassis for ports it knows nothing about go at once (a restart forgets the
holds: their rows go).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from liveport.model.acl import BLOCKED
from liveport.model.carried import MAX_CONNECTIONS, Tracked
from liveport.model.pipeline import ChassisView
from liveport.ovsdb.rows import Delete, Insert, Op, Snapshot, Update

CARRY_INTERVAL = 1.0  # seconds between two reads of the tracker while a port migrates
HOLD_MS = 300_000  # how long a completed migration's connections stay published


def outgoing(view: ChassisView) -> dict[str, int]:
    """Ports whose connections this chassis publishes now: port -> its conntrack zone."""
    out = {}
    for name in view.vifs:
        port = view.ports.get(name)
        zone = view.zones.get(name)
        if (
            port is not None
            and zone
            and port.owner == view.chassis
            and port.destination not in (None, view.chassis)
            and view.stateful(port.dp_key)
        ):
            out[name] = zone
    return out


def connections(tracked: Iterable[Tracked], zone: int) -> frozenset[str]:
    """What to publish of a zone's connections: those not blocked by an ACL, at most
    MAX_CONNECTIONS (the first, in a stable order)."""
    texts = sorted(t.connection.text for t in tracked if t.zone == zone and not t.mark & BLOCKED)
    return frozenset(texts[:MAX_CONNECTIONS])


@dataclass(frozen=True)
class Carry:
    """What the publishing remembers between two ticks."""

    publishing: frozenset[str] = frozenset()
    held: Mapping[str, int] = field(default_factory=dict)  # port -> until (ms)

    def tick(
        self,
        view: ChassisView,
        sb: Snapshot,
        tracked: Iterable[Tracked],
        now_ms: int,
    ) -> tuple[Carry, list[Op]]:
        """One round: tracked is what the tracker holds now (read only when outgoing(view)
        has ports). Returns the new state and the SB writes."""
        ports = outgoing(view)
        stopped = self.publishing - set(ports)
        held = {p: t for p, t in self.held.items() if t > now_ms and p not in ports}
        for name in stopped:
            port = view.ports.get(name)
            if port is not None and port.owner not in (None, view.chassis):
                held[name] = now_ms + HOLD_MS  # completed: the destination owns it
        found = list(tracked)
        publish = {p: connections(found, zone) for p, zone in ports.items()}
        ops = publish_ops(sb, view.chassis, publish, held, now_ms)
        return Carry(frozenset(ports), held), ops


def publish_ops(
    sb: Snapshot,
    me: str,
    publish: Mapping[str, frozenset[str]],
    held: Iterable[str],
    now_ms: int = 0,
) -> list[Op]:
    """Port_Connections rows of this chassis: one per published port with its
    connections; held ports' rows left as they are; every other row of mine deleted."""
    keep = set(held)
    ops: list[Op] = []
    seen: set[str] = set()
    for row in sb.rows("Port_Connections"):
        if row["chassis"] != me:
            continue
        port = row["logical_port"]
        if port in publish and port not in seen:
            seen.add(port)
            if frozenset(row["connections"]) != publish[port]:
                ops.append(
                    Update(
                        "Port_Connections",
                        row.uuid,
                        {"connections": sorted(publish[port]), "time": now_ms},
                    )
                )
        elif port not in keep or port in seen:
            ops.append(Delete("Port_Connections", row.uuid))
        else:
            seen.add(port)
    for port, texts in sorted(publish.items()):
        if port not in seen:
            ops.append(
                Insert(
                    "Port_Connections",
                    {
                        "logical_port": port,
                        "chassis": me,
                        "connections": sorted(texts),
                        "time": now_ms,
                    },
                )
            )
    return ops
