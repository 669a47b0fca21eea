"""What a logical switch port says, parsed: addresses, port security, requested chassis,
migration destination and activation strategy. Pure; problems are returned, not raised,
so one bad port never stops northd or an agent -- it is reported with its name.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from liveport.model.addr import (
    SPECIAL_ADDRESSES,
    PortAddresses,
    PortSecurity,
    parse_address_entry,
    parse_port_security_entry,
)
from liveport.model.errors import InvalidInput


class Strategy(StrEnum):
    RARP = "rarp"
    GARP = "garp"
    NA = "na"


# During a migration liveport expects every announcement a VM may make: QEMU sends RARP only
# when the guest did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE, and a guest that did sends
# GARP / NA itself (OVN's rarp-only default leaves such VMs blocked).
DEFAULT_STRATEGY = frozenset(Strategy)


@dataclass(frozen=True)
class PortOptions:
    requested: str | None = None  # the chassis named to bind the port (main)
    destination: str | None = None  # migration destination (additional chassis)
    strategy: frozenset[Strategy] | None = None  # None: the default
    problems: tuple[str, ...] = ()

    @property
    def effective_strategy(self) -> frozenset[Strategy]:
        return self.strategy if self.strategy else DEFAULT_STRATEGY


def parse_strategy(text: str) -> tuple[frozenset[Strategy], tuple[str, ...]]:
    chosen: set[Strategy] = set()
    problems = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        try:
            chosen.add(Strategy(word.lower()))
        except ValueError:
            problems.append(f"unknown activation strategy {word!r} (use rarp, garp, na)")
    return frozenset(chosen), tuple(problems)


def parse_options(options: Mapping[str, str]) -> PortOptions:
    """requested-chassis=S or S,D (OVN's list form), migration-destination=D (the seed's
    form), activation-strategy=rarp,garp,na. Memoised: ports are parsed on every pass."""
    return _parse_options(tuple(sorted(options.items())))


@functools.lru_cache(maxsize=65536)
def _parse_options(items: tuple[tuple[str, str], ...]) -> PortOptions:
    options = dict(items)
    problems: list[str] = []
    requested = None
    list_destination = None
    names = [n.strip() for n in options.get("requested-chassis", "").split(",") if n.strip()]
    if names:
        requested = names[0]
        if len(names) > 1:
            list_destination = names[1]
        if len(names) > 2:
            problems.append(
                f"requested-chassis names {len(names)} chassis; liveport supports one "
                f"migration destination and uses {names[1]}"
            )
    seed_destination = options.get("migration-destination", "").strip() or None
    destination = seed_destination or list_destination
    if seed_destination and list_destination and seed_destination != list_destination:
        problems.append(
            f"migration-destination={seed_destination} contradicts requested-chassis "
            f"{','.join(names)}; no migration until they agree"
        )
        destination = None
    if destination is not None and destination == requested:
        problems.append(f"migration destination {destination} is the requested chassis itself")
        destination = None
    strategy = None
    if "activation-strategy" in options:
        chosen, more = parse_strategy(options["activation-strategy"])
        problems.extend(more)
        strategy = chosen or None
    return PortOptions(requested, destination, strategy, tuple(problems))


@dataclass(frozen=True)
class PortNetwork:
    """The addressing of a port: concrete address entries, the port security that applies,
    and whether the port accepts any source (no concrete MAC to enforce)."""

    addresses: tuple[PortAddresses, ...] = ()
    security: tuple[PortSecurity, ...] = ()
    open: bool = False  # no port security: any source MAC/IP may leave the VIF
    problems: tuple[str, ...] = ()

    @functools.cached_property
    def macs(self) -> tuple[int, ...]:
        return tuple(a.mac.value for a in self.addresses)


def parse_network(addresses: Iterable[str], port_security: Iterable[str]) -> PortNetwork:
    """Memoised front of _parse_network (ports are parsed on every pass)."""
    return _parse_network(tuple(sorted(addresses)), tuple(sorted(port_security)))


@functools.lru_cache(maxsize=65536)
def _parse_network(addresses: tuple[str, ...], port_security: tuple[str, ...]) -> PortNetwork:
    """Port security is port_security if set; otherwise liveport enforces what `addresses`
    says (its MAC, and its IPs when listed) -- stricter than OVN, which enforces nothing
    without port_security. Ports whose addresses are only unknown/dynamic/router are open."""
    problems: list[str] = []
    parsed: list[PortAddresses] = []
    special = False
    for entry in sorted(addresses):
        words = entry.split()
        if not words:
            continue
        if words[0] in SPECIAL_ADDRESSES:
            special = True
            continue
        try:
            address = parse_address_entry(entry)
        except InvalidInput as exc:
            problems.append(f"addresses {entry!r}: {exc}")
            continue
        refused = address.mac.unicast_problem()
        if refused:
            problems.append(f"addresses {entry!r}: {refused}; the entry is ignored")
            continue
        parsed.append(address)
    security: list[PortSecurity] = []
    ps_entries = sorted(e for e in port_security if e.split())
    if ps_entries:
        for entry in ps_entries:
            try:
                allowed = parse_port_security_entry(entry)
            except InvalidInput as exc:
                problems.append(f"port_security {entry!r}: {exc}")
                continue
            refused = allowed.mac.unicast_problem()
            if refused:
                problems.append(f"port_security {entry!r}: {refused}; the entry is ignored")
                continue
            security.append(allowed)
        open_port = False
    else:
        security = [
            PortSecurity(a.mac, tuple(ipaddress.ip_network(ip) for ip in a.ips)) for a in parsed
        ]
        # Nothing concrete to enforce: open, unless addresses were given but malformed.
        open_port = not security and (special or not problems)
    return PortNetwork(tuple(parsed), tuple(security), open_port, tuple(problems))


GUEST_ANNOUNCE_BIT = 21  # VIRTIO_NET_F_GUEST_ANNOUNCE


def activation_strategy(options: PortOptions, vhost: Mapping[str, str]) -> frozenset[Strategy]:
    """V6: the announcement that will activate the destination. An explicit
    activation-strategy wins; otherwise it follows what the guest negotiated with the
    owner's vhost-user backend: with VIRTIO_NET_F_GUEST_ANNOUNCE the guest sends GARP and
    NA itself, without it QEMU asks the backend to send a RARP; when nothing is known,
    all three."""
    if options.strategy:
        return options.strategy
    features = vhost.get("features")
    if features is None:
        return DEFAULT_STRATEGY
    try:
        negotiated = int(features, 16)
    except ValueError:
        return DEFAULT_STRATEGY
    if negotiated >> GUEST_ANNOUNCE_BIT & 1:
        return frozenset({Strategy.GARP, Strategy.NA})
    return frozenset({Strategy.RARP})
