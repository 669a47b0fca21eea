"""Limits on what one chassis can make northd do (issue 19).

A chassis writes its own Chassis_VIF rows, as many as it likes: OVSDB's RBAC checks who
writes a row, never how many rows or how fast, and the schema cannot bound rows per chassis.
So northd bounds what it *does* with them; every other chassis keeps its share of northd.

- **Share.** A chassis' VIF reports count for the ports the NB put on it (those it holds a
  claim for: requested chassis, migration destination, current owner of an unnamed port;
  and those bound to it), plus VIF_MARGIN more: a chassis with no ports may still report a
  few VIFs so that a VM on a port without requested-chassis, or one plugged before its port
  exists, can be bound. Beyond that, the chassis is *over its share*: northd uses its reports
  of its own ports and VIF_MARGIN others -- those naming an NB port first, then by name, so
  the choice is the same in every northd and in `doctor` -- and ignores (sheds) the rest.
  `shares` is that rule, a pure function of the snapshots.
- **Rate.** Each chassis has a token bucket of VIF_BURST row changes refilled at VIF_RATE a
  second; a change beyond it is not acted on at once: the port is remembered (at most
  DEFERRED_CAP of them, then "all of its ports") and the chassis' remembered ports are
  recomputed together once every CATCH_UP seconds. A flooder's changes then cost northd a
  set insertion each, and one bounded batch a second.

What northd does not bound: every Chassis_VIF row is still sent to northd and held in its
SB snapshot (memory grows with the rows the SB accepts); ovsdb-server has no per-client
quota. The flooder is named in SB_Global options:limited, in `liveport status` and
`doctor`, in northd's metrics, and in northd's log (once when it starts, then at most every
LOG_EVERY seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from liveport.model.clock import Clock
from liveport.model.untrusted import escape, valid_chassis_name
from liveport.ovsdb.rows import Snapshot

log = logging.getLogger("liveport.northd")

VIF_MARGIN = 64  # VIF reports a chassis may have beyond the ports the NB put on it
VIF_RATE = 100.0  # Chassis_VIF row changes per second per chassis acted on at once
VIF_BURST = 1000  # ... and at most this many at once (an agent's first report of its VIFs)
CATCH_UP = 1.0  # seconds between two recomputations of a rate-limited chassis' ports
DEFERRED_CAP = 4096  # ports remembered per rate-limited chassis; beyond, all of its ports
LOG_EVERY = 60.0  # seconds between two log lines about one chassis that stays limited


@dataclass(frozen=True)
class Share:
    """What northd uses of one chassis that is over its share."""

    chassis: str
    reports: int  # its Chassis_VIF rows
    ports: int  # ports the NB put on it
    kept: frozenset[str]  # iface ids of its reports used beyond its own ports

    @property
    def limit(self) -> int:
        return self.ports + VIF_MARGIN

    @property
    def shed(self) -> int:
        """Reports northd ignores."""
        return max(0, self.reports - self.limit)


def entitled_ports(sb: Snapshot, chassis: str) -> set[str]:
    """The ports the NB put on chassis: those it holds a claim for (northd creates claims
    only for the chassis the NB named, or an unnamed port's holder) and those bound to it."""
    ports = {c["logical_port"] for c in sb.lookup("Port_Claim", "chassis", chassis)}
    ports |= {p["logical_port"] for p in sb.lookup("Port_Binding", "chassis", chassis)}
    return ports


def share(nb: Snapshot, sb: Snapshot, chassis: str) -> Share | None:
    """The chassis' share if it is over it (None: northd uses all its reports)."""
    rows = sb.lookup("Chassis_VIF", "chassis", chassis)
    if len(rows) <= VIF_MARGIN:
        return None
    entitled = entitled_ports(sb, chassis)
    others = {r["iface_id"] for r in rows} - entitled
    if len(others) <= VIF_MARGIN:
        return None
    order = sorted(others, key=lambda i: (not nb.lookup("Logical_Switch_Port", "name", i), i))
    return Share(chassis, len(rows), len(entitled), frozenset(order[:VIF_MARGIN]))


def shares(nb: Snapshot, sb: Snapshot, chassis: Iterable[str] | None = None) -> dict[str, Share]:
    """Every chassis over its share (of `chassis`, or of all that report VIFs)."""
    if chassis is None:
        counts: dict[str, int] = {}
        for row in sb.rows("Chassis_VIF"):
            counts[row["chassis"]] = counts.get(row["chassis"], 0) + 1
        chassis = [name for name, n in counts.items() if n > VIF_MARGIN]
    found = {name: share(nb, sb, name) for name in chassis if valid_chassis_name(name)}
    return {name: s for name, s in found.items() if s is not None}


def limited_text(over_share: dict[str, Share], over_rate: Iterable[str]) -> str:
    """SB_Global options:limited: `hv3: share 66, rate` (chassis names are checked names)."""
    rate = set(over_rate)
    parts = []
    for name in sorted(set(over_share) | rate):
        why = [f"share {over_share[name].limit}"] if name in over_share else []
        why += ["rate"] if name in rate else []
        parts.append(f"{name}: {', '.join(why)}")
    return "; ".join(parts)


def parse_limited(text: str) -> dict[str, str]:
    """options:limited back as chassis -> reasons."""
    out = {}
    for part in text.split(";"):
        name, sep, why = part.strip().partition(":")
        if sep:
            out[name.strip()] = why.strip()
    return out


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class VifLimiter:
    """northd's state for the limits (one per northd; its worker thread only)."""

    clock: Clock
    shares: dict[str, Share] = field(default_factory=dict)  # chassis over their share
    deferred: dict[str, set[str] | None] = field(default_factory=dict)  # None: all its ports
    deferred_total: dict[str, int] = field(default_factory=dict)  # changes deferred, ever
    changes_total: dict[str, int] = field(default_factory=dict)  # changes seen, ever
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _touched: set[str] = field(default_factory=set)  # chassis whose reports changed
    _checked: dict[str, float] = field(default_factory=dict)  # share last computed
    _caught_up: dict[str, float] = field(default_factory=dict)
    _rate_limited: dict[str, float] = field(default_factory=dict)  # chassis -> last deferral
    _logged: dict[str, float] = field(default_factory=dict)
    _text: str = ""  # limited_text as due() last returned it

    def reset(self, nb: Snapshot, sb: Snapshot) -> None:
        """On a full recompute: the shares of every chassis, from the snapshots."""
        now = self.clock.monotonic()
        self.shares = shares(nb, sb)
        self._checked = dict.fromkeys(self.shares, now)

    def admit(self, chassis: str, port: str) -> bool:
        """A Chassis_VIF row of chassis for port changed: True to act on it now; False if
        the chassis is over its rate (the port is remembered for the next catch-up)."""
        self._touched.add(chassis)
        self.changes_total[chassis] = self.changes_total.get(chassis, 0) + 1
        now = self.clock.monotonic()
        bucket = self._buckets.get(chassis)
        if bucket is None:
            bucket = self._buckets[chassis] = _Bucket(VIF_BURST, now)
        bucket.tokens = min(VIF_BURST, bucket.tokens + (now - bucket.at) * VIF_RATE)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        if chassis not in self.deferred:
            self._caught_up.setdefault(chassis, now)
        ports = self.deferred.setdefault(chassis, set())
        if ports is not None:
            ports.add(port)
            if len(ports) > DEFERRED_CAP:
                self.deferred[chassis] = None
        self.deferred_total[chassis] = self.deferred_total.get(chassis, 0) + 1
        self._rate_limited[chassis] = now
        return False

    @property
    def over_rate(self) -> set[str]:
        """Chassis that had a change deferred within the last two catch-ups."""
        now = self.clock.monotonic()
        return {c for c, at in self._rate_limited.items() if now - at < 2 * CATCH_UP}

    def next_due(self) -> float | None:
        """Seconds until the next catch-up or share check is due (None: nothing waits)."""
        now = self.clock.monotonic()
        due = [self._caught_up.get(c, now) + CATCH_UP - now for c in self.deferred]
        due += [self._checked.get(c, now) + CATCH_UP - now for c in self.shares]
        due += [self._checked.get(c, now - CATCH_UP) + CATCH_UP - now for c in self._touched]
        if self._rate_limited:
            due.append(min(self._rate_limited.values()) + 2 * CATCH_UP - now)
        return max(0.0, min(due)) if due else None

    def due(self, nb: Snapshot, sb: Snapshot) -> tuple[set[str], bool]:
        """The ports to recompute now (catch-ups and share changes), and whether the set of
        limited chassis or their reasons changed (SB_Global options:limited)."""
        now = self.clock.monotonic()
        ports: set[str] = set()
        for chassis in [c for c in self.deferred if now - self._caught_up[c] >= CATCH_UP]:
            remembered = self.deferred.pop(chassis)
            self._caught_up[chassis] = now
            if remembered is None:
                remembered = {r["iface_id"] for r in sb.lookup("Chassis_VIF", "chassis", chassis)}
            ports |= {p for p in remembered if _is_port(nb, sb, p)}
        check = {c for c in self._touched if now - self._checked.get(c, -CATCH_UP) >= CATCH_UP}
        check |= {c for c in self.shares if now - self._checked.get(c, -CATCH_UP) >= CATCH_UP}
        self._touched -= check
        for chassis in check:
            self._checked[chassis] = now
            old = self.shares.get(chassis)
            new = share(nb, sb, chassis) if valid_chassis_name(chassis) else None
            if new is None:
                self.shares.pop(chassis, None)
            else:
                self.shares[chassis] = new
            if (old is None) != (new is None):
                # All its reports change between used and shed: recompute its ports.
                rows = sb.lookup("Chassis_VIF", "chassis", chassis)
                ports |= {r["iface_id"] for r in rows if _is_port(nb, sb, r["iface_id"])}
            elif old is not None and new is not None:
                ports |= old.kept ^ new.kept
        for chassis, at in list(self._rate_limited.items()):
            if now - at >= 2 * CATCH_UP:
                del self._rate_limited[chassis]
        self._log(now)
        text, before = limited_text(self.shares, self.over_rate), self._text
        self._text = text
        return ports, text != before

    def _log(self, now: float) -> None:
        limited = set(self.shares) | self.over_rate
        for chassis in sorted(limited):
            last = self._logged.get(chassis)
            if last is not None and now - last < LOG_EVERY:
                continue
            self._logged[chassis] = now
            s = self.shares.get(chassis)
            why = []
            if s is not None:
                why.append(
                    f"{s.reports} VIF reports, {s.shed} ignored (limit {s.limit}: "
                    f"{s.ports} ports + {VIF_MARGIN})"
                )
            if chassis in self.over_rate:
                why.append(f"more than {VIF_RATE:g} VIF changes/s, acted on once a second")
            log.warning(
                "northd: chassis %s writes more than its share: %s; %d changes deferred so "
                "far; the other chassis are not affected",
                escape(chassis),
                "; ".join(why),
                self.deferred_total.get(chassis, 0),
            )
        for chassis in sorted(set(self._logged) - limited):
            del self._logged[chassis]
            log.info("northd: chassis %s is within its share again", escape(chassis))


def _is_port(nb: Snapshot, sb: Snapshot, name: str) -> bool:
    """A logical port either database knows (recomputing any other name does nothing)."""
    return bool(
        nb.lookup("Logical_Switch_Port", "name", name)
        or sb.lookup("Port_Binding", "logical_port", name)
    )
