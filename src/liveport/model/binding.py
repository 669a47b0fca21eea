"""Who owns a port, decided in one place, and what each chassis does about it.

`arbitrate` is northd's decision: from what the NB named (requested chassis, migration
destination), what the chassis report (which have the VIF, hypervisor migration status,
announcements seen) and which chassis are alive, it returns the port's owner, its
migration state, the conflicts, and which chassis may hold a claim on it. Only northd
writes the owner, so two chassis can never fight over a port (M1): the owner changes only
when this function says so, and it says so only when

- the migration destination saw the VM's announcement (M3), or
- the owner lost the right to the port (no longer named, VIF gone), or
- the owner was declared dead and another eligible chassis has the VIF.

`decide_binding` is an agent's local decision: given the arbitrated port and its own VIF,
is it the owner, a pending or activated destination, a standby, or not involved.
Both are pure; the tables in tests state the exact outcome of every situation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ClaimRole(StrEnum):
    """What a chassis' claim on a port is for (SB Port_Claim.role)."""

    MAIN = "main"  # the chassis the NB requested (or that holds an unnamed port)
    DESTINATION = "destination"  # the migration destination


class MigrationState(StrEnum):
    """Where a migration stands (SB Port_Binding.migration_state)."""

    PENDING = "pending"  # the destination waits for the VM's announcement
    ACTIVATED = "activated"  # the VM announced itself on the destination, which owns the port


class MigrationStatus(StrEnum):
    """What the hypervisor says of a VIF (Interface external_ids:migration-status, M6)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


class Installed(StrEnum):
    """What a chassis has installed for its claim, after an OpenFlow barrier (M9)."""

    OWNER = "owner"
    PENDING = "pending"
    STANDBY = "standby"


MAIN, DESTINATION = ClaimRole.MAIN, ClaimRole.DESTINATION
INCOMING, OUTGOING = MigrationStatus.INCOMING, MigrationStatus.OUTGOING
PENDING, ACTIVATED = MigrationState.PENDING, MigrationState.ACTIVATED


def claim_report(
    chassis: str, role: str, installed: str | None = None, activated: int | None = None
) -> ClaimReport:
    """A Port_Claim row's columns as a ClaimReport (the schema admits only the enums' values)."""
    return ClaimReport(
        chassis, ClaimRole(role), Installed(installed) if installed else None, activated
    )


def vif_report(chassis: str, migration_status: str | None) -> VifReport:
    """A Chassis_VIF row's columns as a VifReport."""
    return VifReport(chassis, MigrationStatus(migration_status) if migration_status else None)


@dataclass(frozen=True)
class VifReport:
    """A chassis has a VIF for the port (SB Chassis_VIF)."""

    chassis: str
    migration_status: MigrationStatus | None = None  # the hypervisor-driven form (M6)


@dataclass(frozen=True)
class ClaimReport:
    """The state a named chassis reported for the port (SB Port_Claim)."""

    chassis: str
    role: ClaimRole
    installed: Installed | None = None  # after an OpenFlow barrier
    activated: int | None = None  # when the chassis saw the VM's announcement (ms)


@dataclass(frozen=True)
class Arbitration:
    owner: str | None
    destination: str | None
    migration_state: MigrationState | None
    source: str | None = None  # where the VM is migrating from
    conflicts: frozenset[str] = frozenset()
    claims: Mapping[str, ClaimRole] = field(default_factory=dict)  # chassis -> its claim
    reason: str = ""  # why the port is unbound, or why a VIF is ignored


def arbitrate(
    *,
    requested: str | None,
    destination: str | None,
    current_owner: str | None,
    vifs: Mapping[str, VifReport],
    claims: Mapping[str, ClaimReport],
    alive: frozenset[str],
    registered: frozenset[str],
    current_source: str | None = None,
) -> Arbitration:
    named = requested is not None
    dest = destination
    if dest is None and not named:
        dest = _hypervisor_destination(current_owner, vifs, claims, registered)
    if dest is not None and dest == current_owner and not _announced(dest, claims):
        dest = None  # the port already lives on its "destination": nothing to migrate
    source = None
    if dest is not None:
        if named:
            source = requested
        elif current_source is not None and current_source != dest:
            source = current_source
        elif current_owner != dest:
            source = current_owner

    def authorized(chassis: str) -> bool:
        return not named or chassis in (requested, dest)

    def eligible(chassis: str) -> bool:
        return chassis in vifs and chassis in registered and authorized(chassis)

    owner = current_owner
    if dest is not None and _announced(dest, claims) and dest in vifs and eligible(dest):
        owner = dest  # M3: the VM announced itself on the destination
    elif (
        dest is not None
        and owner is not None
        and owner != dest
        and authorized(owner)
        and owner in registered
    ):
        # A migration is pending: the source keeps the port even if its VIF is already
        # gone (the VM is in flight; no announcement was seen). Only the announcement or
        # the completion hands it over -- never an empty binding in between.
        pass
    elif (
        owner is None
        or not eligible(owner)
        or (owner not in alive and _pick(requested, dest, vifs, alive, eligible, alive_only=True))
    ):
        new = _pick(requested, dest, vifs, alive, eligible, alive_only=False)
        held_back = any(
            c != owner and eligible(c) and vifs[c].migration_status == OUTGOING for c in vifs
        )
        if new is None and held_back and owner is not None and authorized(owner):
            # The VM is coming back to a chassis whose hypervisor still says "outgoing" (M6:
            # it may not reclaim yet). Keep the binding until it may, rather than empty it.
            new = owner
        owner = new

    state = None
    if dest is not None:
        state = ACTIVATED if owner == dest else PENDING
    conflicts = frozenset(c for c in vifs if c not in (owner, dest, source))

    wanted: dict[str, ClaimRole] = {}
    main = requested if named else (source or owner)
    if main is not None and main != dest:
        wanted[main] = MAIN
    if dest is not None:
        wanted[dest] = DESTINATION

    return Arbitration(
        owner=owner,
        destination=dest,
        migration_state=state,
        source=source,
        conflicts=conflicts,
        claims=wanted,
        reason=_reason(owner, requested, dest, vifs, registered, conflicts),
    )


def _announced(dest: str, claims: Mapping[str, ClaimReport]) -> bool:
    """The destination's claim records the VM's announcement."""
    claim = claims.get(dest)
    return claim is not None and claim.role == DESTINATION and claim.activated is not None


def _hypervisor_destination(
    owner: str | None,
    vifs: Mapping[str, VifReport],
    claims: Mapping[str, ClaimReport],
    registered: frozenset[str],
) -> str | None:
    """M6: on an unnamed port, a chassis whose VIF says migration-status=incoming is the
    destination (a named port's destination must be named in the NB) -- but only with the
    consent of the chassis that holds the port, whose hypervisor must say `outgoing` for
    it (or while nobody holds it). The incoming claim comes from the destination itself;
    without the owner's word any chassis could make itself the destination of any unnamed
    port and take it with an announcement of its own making (M8)."""
    consent = owner is None or (owner in vifs and vifs[owner].migration_status == OUTGOING)
    for chassis in sorted(vifs):
        if (
            vifs[chassis].migration_status == INCOMING
            and chassis in registered
            and (consent if chassis != owner else _announced(chassis, claims))
        ):
            return chassis
    return None


def _pick(
    requested: str | None,
    dest: str | None,
    vifs: Mapping[str, VifReport],
    alive: frozenset[str],
    eligible: Callable[[str], bool],
    *,
    alive_only: bool,
) -> str | None:
    """A new owner: the requested chassis first, then live holders of the VIF by name;
    never a destination that has not been activated, never a chassis whose hypervisor says
    the VM is leaving it (outgoing, M6)."""
    candidates = [
        c
        for c in sorted(vifs)
        if eligible(c) and c != dest and vifs[c].migration_status != OUTGOING
    ]
    if requested in candidates:
        candidates.remove(requested)
        candidates.insert(0, requested)
    live = [c for c in candidates if c in alive]
    if live:
        return live[0]
    if alive_only or not candidates:
        return None
    return candidates[0]


def _reason(
    owner: str | None,
    requested: str | None,
    dest: str | None,
    vifs: Mapping[str, VifReport],
    registered: frozenset[str],
    conflicts: frozenset[str],
) -> str:
    parts = []
    if owner is None:
        if requested is not None and requested not in registered:
            parts.append(f"requested chassis {requested} is not registered")
        elif requested is not None and requested not in vifs:
            parts.append(f"requested chassis {requested} has no VIF for it")
        elif not vifs:
            parts.append("no chassis has a VIF for it")
        else:
            parts.append("no eligible chassis has a VIF for it")
    for chassis in sorted(conflicts):
        if requested is not None and chassis != requested:
            parts.append(f"VIF on {chassis} ignored: not the requested chassis {requested}")
        elif chassis not in registered:
            parts.append(f"VIF on {chassis} ignored: chassis not registered or its row unusable")
        elif vifs[chassis].migration_status == OUTGOING:
            parts.append(f"VIF on {chassis} ignored: its hypervisor says the VM is leaving")
        elif owner is not None:
            parts.append(f"VIF on {chassis} ignored: {owner} holds the port")
    if dest is not None and dest not in registered:
        parts.append(f"migration destination {dest} is not registered")
    return "; ".join(parts)


class LocalRole(StrEnum):
    NONE = "none"  # no VIF here
    OWNER = "owner"  # deliver to the VIF, accept from it
    PENDING = "pending"  # destination before the announcement: block all but announcements
    ACTIVATED = "activated"  # destination that saw the announcement: acts as owner
    STANDBY = "standby"  # a VIF here, but the port is someone else's: drop both ways


@dataclass(frozen=True)
class PortState:
    """The arbitrated part of a Port_Binding that an agent acts on."""

    owner: str | None
    destination: str | None = None
    migration_state: MigrationState | None = None


def decide_binding(
    *,
    me: str,
    port: PortState,
    has_vif: bool,
    claim: ClaimReport | None,
    locally_activated: bool,
) -> LocalRole:
    if not has_vif:
        return LocalRole.NONE
    if port.owner == me:
        return LocalRole.OWNER
    if port.destination == me:
        if locally_activated or (
            claim is not None and claim.role == DESTINATION and claim.activated is not None
        ):
            return LocalRole.ACTIVATED
        return LocalRole.PENDING
    return LocalRole.STANDBY


def installed_state(role: LocalRole) -> Installed | None:
    """What an agent reports in its claim once the flows for role are installed (M9)."""
    return {
        LocalRole.OWNER: Installed.OWNER,
        LocalRole.ACTIVATED: Installed.OWNER,
        LocalRole.PENDING: Installed.PENDING,
        LocalRole.STANDBY: Installed.STANDBY,
    }.get(role)


# ----- the bookkeeping around a decision, also pure (the daemons and the tests share it) -------


@dataclass(frozen=True)
class ClaimChanges:
    """What northd does to a port's Port_Claim rows after arbitrate()."""

    insert: Mapping[str, ClaimRole] = field(default_factory=dict)  # chassis -> role
    delete: frozenset[str] = frozenset()
    new_role: Mapping[str, ClaimRole] = field(default_factory=dict)  # a new role starts clean
    clear_activation: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.insert or self.delete or self.new_role or self.clear_activation)


def claim_changes(
    existing: Mapping[str, ClaimReport], wanted: Mapping[str, ClaimRole], vifs: frozenset[str]
) -> ClaimChanges:
    """Exactly the chassis arbitrate() named hold a claim, each with its role. An
    announcement is kept only on a destination claim whose chassis still has the VIF: a late
    packet-in must not leave one on a main claim, and a VM that left the destination must
    announce itself again before a new VIF there may take the port."""
    delete = frozenset(c for c in existing if c not in wanted)
    new_role = {c: r for c, r in wanted.items() if c in existing and existing[c].role != r}
    clear = frozenset(
        c
        for c, claim in existing.items()
        if c in wanted
        and c not in new_role
        and claim.activated is not None
        and (claim.role != DESTINATION or c not in vifs)
    )
    insert = {c: r for c, r in wanted.items() if c not in existing}
    return ClaimChanges(insert, delete, new_role, clear)


def records_activation(claim: ClaimReport | None) -> bool:
    """Whether an agent may write an announcement into its claim."""
    return claim is not None and claim.role == DESTINATION and claim.activated is None


@dataclass(frozen=True)
class Resolved:
    """A chassis the NB named, by its name or its host name."""

    chassis: str | None  # the chassis name (None: nothing was named)
    note: str = ""  # how a host name resolved, or why it could not


def resolve_chassis(named: str | None, hostnames: Mapping[str, str]) -> Resolved:
    """OVN lets `requested-chassis` (and liveport's migration-destination) name a chassis
    by its name or by its host name (`Chassis.hostname`; Neutron writes host names).
    hostnames: chassis name -> host name, for the chassis that may be used. A name wins
    over a host name; a host name two chassis share names neither (a fight between them
    is what must not happen) and is reported; an unknown word stays as written (a chassis
    that has not registered yet)."""
    if named is None or named in hostnames:
        return Resolved(named)
    holders = sorted(name for name, host in hostnames.items() if host == named)
    if len(holders) == 1:
        return Resolved(holders[0], f"host name {named} is chassis {holders[0]}")
    if holders:
        return Resolved(
            named, f"host name {named} is ambiguous (chassis {', '.join(holders)}): neither is used"
        )
    return Resolved(named)
