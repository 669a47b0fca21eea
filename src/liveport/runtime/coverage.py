"""Event counters, as OVS's coverage counters: a process-wide registry of named counts the
daemons increment (passes, flow mods, packet-ins, transactions, retries, ...), shown by the
`coverage/show` control command with their average rates over the last 5 seconds, minute
and hour.

Concurrency model: counters are incremented from any thread (one lock for the registry; an
increment is a dictionary update, far cheaper than what it counts). `run()` samples the
totals; the control server's thread calls it about once a second, and the rates are computed
from those samples.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE = 5.0  # seconds between samples (OVS's coverage interval)
MINUTE_SAMPLES = 12  # 12 x 5 s
HOUR_SAMPLES = 60  # 60 x 1 min


@dataclass(frozen=True)
class Rates:
    name: str
    help: str
    total: int
    per_5s: float  # events per second over the last 5 seconds
    per_minute: float
    per_hour: float

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "help": self.help,
            "total": self.total,
            "rate_5s": self.per_5s,
            "rate_minute": self.per_minute,
            "rate_hour": self.per_hour,
        }


class Registry:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._totals: dict[str, int] = {}
        self._help: dict[str, str] = {}
        self._next_sample = clock() + SAMPLE
        # Totals at each 5 s sample (newest last), and at each minute.
        self._minute: deque[dict[str, int]] = deque(maxlen=MINUTE_SAMPLES + 1)
        self._hour: deque[dict[str, int]] = deque(maxlen=HOUR_SAMPLES + 1)
        self._samples = 0
        self._minute.append({})
        self._hour.append({})

    def counter(self, name: str, help_text: str = "") -> Counter:
        with self._lock:
            self._totals.setdefault(name, 0)
            self._help.setdefault(name, help_text)
        return Counter(self, name)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._totals[name] = self._totals.get(name, 0) + n

    def total(self, name: str) -> int:
        with self._lock:
            return self._totals.get(name, 0)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def run(self) -> None:
        """Takes the samples that are due (call it at least every few seconds)."""
        now = self._clock()
        with self._lock:
            while now >= self._next_sample:
                self._next_sample += SAMPLE
                self._samples += 1
                self._minute.append(dict(self._totals))
                if self._samples % MINUTE_SAMPLES == 0:
                    self._hour.append(dict(self._totals))

    def rates(self) -> list[Rates]:
        """Every counter, by name, with its rates (OVS's "avg rate over last")."""
        self.run()
        with self._lock:
            totals = dict(self._totals)
            minute, hour = list(self._minute), list(self._hour)
            helps = dict(self._help)

        def rate(samples: list[dict[str, int]], back: int, seconds: float, name: str) -> float:
            if len(samples) < 2:
                return 0.0
            newest = samples[-1].get(name, 0)
            oldest = samples[max(0, len(samples) - 1 - back)].get(name, 0)
            return (newest - oldest) / seconds

        return [
            Rates(
                name,
                helps.get(name, ""),
                total,
                rate(minute, 1, SAMPLE, name),
                rate(minute, MINUTE_SAMPLES, 60.0, name),
                rate(hour, HOUR_SAMPLES, 3600.0, name),
            )
            for name, total in sorted(totals.items())
        ]

    def render(self) -> str:
        """`coverage/show`'s text, in OVS's layout; counters never hit are only counted."""
        rates = self.rates()
        hit = [r for r in rates if r.total]
        lines = ["Event coverage, avg rate over last: 5 seconds, last minute, last hour:"]
        width = max([len(r.name) for r in hit] + [20])
        lines += [
            f"{r.name:<{width}} {r.per_5s:8.1f}/sec {r.per_minute:10.3f}/sec "
            f"{r.per_hour:12.4f}/sec   total: {r.total}"
            for r in hit
        ]
        lines.append(f"{len(rates) - len(hit)} events never hit")
        return "\n".join(lines)


class Counter:
    """One named count in a registry."""

    __slots__ = ("name", "registry")

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = name

    def inc(self, n: int = 1) -> None:
        self.registry.add(self.name, n)

    @property
    def value(self) -> int:
        return self.registry.total(self.name)


REGISTRY = Registry()  # the process' counters (OVS keeps one set per process, too)


def counter(name: str, help_text: str = "") -> Counter:
    """A counter of the process-wide registry."""
    return REGISTRY.counter(name, help_text)
