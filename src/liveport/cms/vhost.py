"""vhost-user compatibility modes as the cloud sees them (V2, V5).

Each chassis publishes the modes it offers (SB Chassis.vhost_modes: name -> rank, 0 the
newest); each VIF reports the mode it runs in (Chassis_VIF.vhost_mode); the owner's
vhost-user backend records what the guest negotiated (Port_Claim.vhost). From these, the
checks of model.virtio say whether a migration can work -- before anything changes. And
they say which mode a port's QEMU device is to be held to (`mode_for_port`): its own, or
the newest one common to its chassis and those it may move to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from liveport.model.catalogue import Catalogue
from liveport.model.errors import InvalidInput, NotFound
from liveport.model.virtio import (
    Mode,
    Negotiated,
    Verdict,
    bits_of,
    check_migration,
    describe,
)
from liveport.ovsdb.rows import Snapshot


def chassis_modes(sb: Snapshot, only: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Modes offered per chassis, newest first."""
    wanted = set(only) if only is not None else None
    out = {}
    for row in sorted(sb.rows("Chassis"), key=lambda r: r["name"]):
        if wanted is not None and row["name"] not in wanted:
            continue
        ranked = sorted(row["vhost_modes"].items(), key=lambda kv: kv[1])
        out[row["name"]] = tuple(name for name, _ in ranked)
    if wanted is not None:
        missing = sorted(wanted - set(out))
        if missing:
            raise NotFound(f"unknown chassis {', '.join(missing)}")
    return out


def newest_common(catalogue: Catalogue, per_chassis: Mapping[str, Sequence[str]]) -> str | None:
    if not per_chassis:
        return None
    common = catalogue.newest_common(per_chassis.values())
    return common.name if common is not None else None


def common_mode(catalogue: Catalogue, per_chassis: Mapping[str, Sequence[str]]) -> Mode:
    """The newest mode every chassis of per_chassis offers; InvalidInput naming the chassis
    when they have none in common."""
    name = newest_common(catalogue, per_chassis)
    if name is None:
        raise InvalidInput(
            f"no vhost-user mode is common to {', '.join(per_chassis) or 'no chassis'}"
        )
    return catalogue.get(name)


@dataclass(frozen=True)
class Selection:
    """The mode a port's device is to be held to, and why that one."""

    port: str
    mode: Mode
    why: str


def select_for_port(
    current: PortMode,
    catalogue: Catalogue,
    per_chassis: Mapping[str, Sequence[str]],
    to: Sequence[str] = (),
) -> Selection:
    """Without `to`, the port's own mode; with it, the newest mode common to the port's
    chassis and every chassis in `to` (per_chassis holds what each of them offers)."""
    if not to:
        if current.mode is None:
            raise InvalidInput(f"port {current.port} reports no vhost-user mode; name a mode")
        mode = catalogue.get(current.mode)
        return Selection(current.port, mode, f"the mode {current.port} runs in")
    if current.owner is None:
        raise InvalidInput(f"port {current.port} is bound to no chassis; name a mode")
    chassis = list(dict.fromkeys([current.owner, *to]))
    mode = common_mode(catalogue, {name: per_chassis[name] for name in chassis})
    return Selection(current.port, mode, f"the newest mode common to {', '.join(chassis)}")


def mode_for_port(
    sb: Snapshot, catalogue: Catalogue, port: str, to: Sequence[str] = ()
) -> Selection:
    """select_for_port on the SB: the port's binding and mode, and the chassis' modes
    (NotFound for an unknown port or chassis)."""
    current = port_mode(sb, port)
    wanted = [current.owner, *to] if to and current.owner is not None else list(to)
    per_chassis = chassis_modes(sb, wanted) if to else {}
    return select_for_port(current, catalogue, per_chassis, to)


@dataclass(frozen=True)
class PortMode:
    """A port as the SB has it: its owner chassis, the mode its VIF reports there, and what
    its guest negotiated."""

    port: str
    owner: str | None
    mode: str | None
    negotiated: Negotiated | None


def parse_negotiated(vhost: Mapping[str, str]) -> Negotiated | None:
    """The negotiation recorded in a claim's vhost map, if the backend recorded one."""
    if "features" not in vhost:
        return None
    try:
        return Negotiated(
            features=int(vhost["features"], 16),
            protocol_features=int(vhost.get("protocol_features", "0"), 16),
            queue_pairs=int(vhost.get("queue_pairs", "1")),
            ring_sizes=tuple(int(n) for n in vhost.get("ring_sizes", "").split(",") if n),
        )
    except ValueError:
        return None


def port_mode(sb: Snapshot, port: str) -> PortMode:
    pb = sb.one("Port_Binding", logical_port=port)
    if pb is None:
        raise NotFound(f"unknown port {port!r}")
    owner = pb["chassis"]
    vif = next(
        (r for r in sb.rows("Chassis_VIF") if r["iface_id"] == port and r["chassis"] == owner), None
    )
    claim = next(
        (r for r in sb.rows("Port_Claim") if r["logical_port"] == port and r["chassis"] == owner),
        None,
    )
    return PortMode(
        port=port,
        owner=owner,
        mode=vif["vhost_mode"] if vif is not None else None,
        negotiated=parse_negotiated(claim["vhost"]) if claim is not None else None,
    )


def check(sb: Snapshot, catalogue: Catalogue, port: str, destination: str) -> Verdict:
    """V5: can `destination` run `port` in its mode (and with what its guest negotiated)?"""
    current = port_mode(sb, port)
    offered = chassis_modes(sb, [destination])[destination]
    if current.mode is None:
        return Verdict(True, (), f"{port} reports no vhost-user mode; nothing to check")
    source: Mode = catalogue.get(current.mode)
    return check_migration(
        source,
        current.negotiated,
        [catalogue.get(n) for n in offered if n in catalogue],
        port=port,
        destination=destination,
    )


def modes_document(
    catalogue: Catalogue, per_chassis: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    return {
        "chassis": {name: list(modes) for name, modes in per_chassis.items()},
        "newest_common": newest_common(catalogue, per_chassis),
    }


def negotiated_text(n: Negotiated) -> str:
    bits = [describe(b) for b in bits_of(n.features)]
    return (
        f"{len(bits)} features, {n.queue_pairs} queue pair(s), rings "
        f"{','.join(str(r) for r in n.ring_sizes) or '-'}"
    )
