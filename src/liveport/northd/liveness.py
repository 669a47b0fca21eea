"""Chassis liveness as northd judges it: a chassis is alive while its heartbeat counter
keeps changing. Judged with northd's own monotonic clock (never by comparing timestamps
written by other hosts), so clock skew between hosts cannot kill a chassis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from liveport.model.clock import Clock


@dataclass
class _Seen:
    heartbeat: int
    since: float  # northd's monotonic time of the last change


class Liveness:
    def __init__(self, clock: Clock, dead_after: float) -> None:
        self.clock = clock
        self.dead_after = dead_after
        self._seen: dict[str, _Seen] = {}

    def observe(self, heartbeats: Mapping[str, int]) -> None:
        """Records the current heartbeat of every registered chassis."""
        now = self.clock.monotonic()
        for name, beat in heartbeats.items():
            seen = self._seen.get(name)
            if seen is None or seen.heartbeat != beat:
                # A chassis first seen (or seen after northd started) gets a full period.
                self._seen[name] = _Seen(beat, now)
        for name in set(self._seen) - set(heartbeats):
            del self._seen[name]

    def alive(self) -> frozenset[str]:
        now = self.clock.monotonic()
        return frozenset(n for n, s in self._seen.items() if now - s.since < self.dead_after)

    def next_change(self) -> float | None:
        """Seconds until some live chassis would be declared dead, if nothing changes."""
        now = self.clock.monotonic()
        pending = [
            s.since + self.dead_after - now
            for s in self._seen.values()
            if now - s.since < self.dead_after
        ]
        return max(0.0, min(pending)) if pending else None

    def known(self) -> Iterable[str]:
        return self._seen.keys()
