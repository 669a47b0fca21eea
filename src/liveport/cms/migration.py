"""`liveport migration show PORT`: one port's migration as the NB and SB hold it, and what
it is waiting for now.

Everything comes from rows the project already keeps (docs/architecture.md, the SB
schema):

- requested: the NB port's options (`requested-chassis`, its list form, the seed's
  `migration-destination`, `activation-strategy`), and the hypervisor form's
  `migration-status` on the VIFs (Chassis_VIF);
- configured: what northd made of them in Port_Binding (source, destination, state, owner,
  problems in `status`);
- claimed: each chassis' Port_Claim (role, `installed`, `activated` and `activation`) and
  Chassis_VIF (the VIF a chassis has, refused or not), with that chassis' liveness;
- owners: the SB keeps the current owner and, during a migration, the source (the owner
  when it began); the activation is stamped in the destination's claim. Older owners are
  only in northd's log (`port P: owner A -> B`).

The SB does not record *when* a chassis installed its flows (only that it did, after an
OpenFlow barrier), so that time is never shown. `derive` is pure: rows in, a view out,
and the one thing the migration waits for (`phase`, `waiting`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from liveport.cms.migrate import SB_INDEXES
from liveport.model.errors import NotFound
from liveport.model.logical import parse_options
from liveport.model.untrusted import escape
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Snapshot

NB_TABLES: dict[str, list[str] | None] = {"Logical_Switch_Port": ["name", "options", "up"]}
SB_TABLES: dict[str, list[str] | None] = {
    "SB_Global": ["live_chassis"],
    "Chassis": ["name"],
    "Port_Binding": None,
    "Port_Claim": None,
    "Chassis_VIF": ["chassis", "iface_id", "migration_status", "status"],
}
NB_OPTIONS = ("requested-chassis", "migration-destination", "activation-strategy")


@dataclass(frozen=True)
class ChassisPart:
    """One chassis' part in the port's life: its claim (if northd named it) and its VIF."""

    chassis: str
    alive: bool
    role: str | None = None  # main | destination (the claim's), None: no claim
    installed: str | None = None  # owner | pending | standby, as the chassis reported
    activated_ms: int | None = None
    activation: Mapping[str, str] = field(default_factory=dict)
    vif: bool = False
    vif_status: str | None = None  # the hypervisor's migration-status on the VIF
    vif_error: str | None = None  # why the chassis refused the VIF

    def to_json(self) -> dict[str, Any]:
        return {
            "chassis": self.chassis,
            "alive": self.alive,
            "claim": None
            if self.role is None
            else {
                "role": self.role,
                "installed": self.installed,
                "activated": self.activated_ms,
                "activation": dict(self.activation),
            },
            "vif": {"migration_status": self.vif_status, "error": self.vif_error}
            if self.vif
            else None,
        }


@dataclass(frozen=True)
class Owner:
    chassis: str
    what: str  # "source", "owner", "destination"
    since_ms: int | None = None  # when it became owner, where the SB says

    def to_json(self) -> dict[str, Any]:
        return {"chassis": self.chassis, "what": self.what, "since": self.since_ms}


@dataclass(frozen=True)
class MigrationView:
    port: str
    requested: Mapping[str, str]  # the NB options that steer a migration
    form: str | None  # ovn, seed, hypervisor; None: no migration requested
    owner: str | None
    source: str | None
    destination: str | None
    state: str | None  # pending | activated (Port_Binding.migration_state)
    up: bool
    status: Mapping[str, str]
    conflicts: tuple[str, ...]
    chassis: tuple[ChassisPart, ...]
    owners: tuple[Owner, ...]
    phase: str
    waiting: str  # what the migration waits for now, for people

    def part(self, chassis: str | None) -> ChassisPart | None:
        return next((c for c in self.chassis if c.chassis == chassis), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "requested": dict(self.requested),
            "form": self.form,
            "owner": self.owner,
            "source": self.source,
            "destination": self.destination,
            "state": self.state,
            "up": self.up,
            "status": dict(self.status),
            "conflicts": list(self.conflicts),
            "chassis": [c.to_json() for c in self.chassis],
            "owners": [o.to_json() for o in self.owners],
            "phase": self.phase,
            "waiting": self.waiting,
        }

    def lines(self) -> list[str]:
        """For people; every value the databases hold is escaped (chassis write theirs)."""
        e = escape
        requested = ", ".join(f"{k}={e(v)}" for k, v in self.requested.items()) or "nothing"
        out = [
            f"port {e(self.port)}: {self.phase}: {self.waiting}",
            f"  requested (NB): {requested}" + (f" (form {self.form})" if self.form else ""),
            f"  binding (SB):   owner {e(self.owner or 'none')}, source "
            f"{e(self.source or '-')}, destination {e(self.destination or '-')}, state "
            f"{self.state or '-'}, {'up' if self.up else 'down'}",
        ]
        out += [f"    {e(k)}: {e(v)}" for k, v in sorted(self.status.items())]
        if self.conflicts:
            out.append(f"    conflicts: {', '.join(e(c) for c in self.conflicts)}")
        for part in self.chassis:
            claim = (
                f"claim {part.role}, installed {part.installed or 'nothing yet'}"
                if part.role
                else "no claim"
            )
            if part.activated_ms is not None:
                kind = part.activation.get("kind", "?")
                claim += f", activated {_when(part.activated_ms)} by {e(kind)}"
            vif = "no VIF"
            if part.vif:
                vif = "VIF" + (f" ({e(part.vif_status)})" if part.vif_status else "")
                if part.vif_error:
                    vif += f" REFUSED: {e(part.vif_error)}"
            state = "" if part.alive else " (NOT ALIVE)"
            out.append(f"  chassis {e(part.chassis)}{state}: {claim}; {vif}")
        if self.owners:
            history = " -> ".join(
                f"{e(o.chassis)} ({o.what}{', since ' + _when(o.since_ms) if o.since_ms else ''})"
                for o in self.owners
            )
            out.append(f"  owners (as far as the SB keeps them): {history}")
        return out


def _when(ms: int) -> str:
    seconds = ms / 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{ms % 1000:03d}Z"


def _form(options: Mapping[str, str], parts: tuple[ChassisPart, ...]) -> str | None:
    if "," in options.get("requested-chassis", ""):
        return "ovn"
    if options.get("migration-destination"):
        return "seed"
    if any(p.vif_status == "incoming" for p in parts):
        return "hypervisor"
    return None


def derive(port: str, nb_options: Mapping[str, str] | None, sb: Snapshot) -> MigrationView:
    """The port's migration from its NB options (None: no such NB port) and the SB."""
    pb = next(iter(sb.lookup("Port_Binding", "logical_port", port)), None)
    if pb is None and nb_options is None:
        raise NotFound(f"unknown port {port!r}")
    options = dict(nb_options or {})
    alive = schema.live_chassis(sb)
    claims = {c["chassis"]: c for c in sb.lookup("Port_Claim", "logical_port", port)}
    vifs = {v["chassis"]: v for v in sb.lookup("Chassis_VIF", "iface_id", port)}
    parts = tuple(
        ChassisPart(
            name,
            name in alive,
            claim["role"] if (claim := claims.get(name)) is not None else None,
            claim["installed"] if claim is not None else None,
            claim["activated"] if claim is not None else None,
            dict(claim["activation"]) if claim is not None else {},
            name in vifs,
            vifs[name]["migration_status"] if name in vifs else None,
            vifs[name]["status"].get("error") if name in vifs else None,
        )
        for name in sorted(set(claims) | set(vifs))
    )
    requested = {k: options[k] for k in NB_OPTIONS if k in options}
    owner = pb["chassis"] if pb is not None else None
    source = pb["migration_source"] if pb is not None else None
    destination = pb["migration_destination"] if pb is not None else None
    state = pb["migration_state"] if pb is not None else None
    view = MigrationView(
        port=port,
        requested=requested,
        form=_form(options, parts),
        owner=owner,
        source=source,
        destination=destination,
        state=state,
        up=bool(pb["up"]) if pb is not None else False,
        status=dict(pb["status"]) if pb is not None else {},
        conflicts=tuple(sorted(pb["conflicts"])) if pb is not None else (),
        chassis=parts,
        owners=(),
        phase="",
        waiting="",
    )
    phase, waiting = _waiting(view, parse_options(options).destination, pb is not None, alive)
    return replace(view, owners=_owners(view), phase=phase, waiting=waiting)


def _owners(view: MigrationView) -> tuple[Owner, ...]:
    """Owners as far as the SB keeps them: the source (owner when the migration began),
    then the destination from its activation, or the current owner."""
    out: list[Owner] = []
    if view.source is not None and view.source != view.owner:
        out.append(Owner(view.source, "source"))
    elif view.source is not None and view.destination is not None:
        out.append(Owner(view.source, "source, still owner"))
        return tuple(out)
    if view.owner is not None:
        part = view.part(view.owner)
        since = part.activated_ms if part is not None and view.owner == view.destination else None
        what = "destination, owner" if view.owner == view.destination else "owner"
        out.append(Owner(view.owner, what, since))
    return tuple(out)


def _waiting(
    view: MigrationView, nb_destination: str | None, bound: bool, alive: frozenset[str]
) -> tuple[str, str]:
    """The phase the migration is in and what it waits for now (one sentence)."""
    port, dest, source = view.port, view.destination, view.source
    if not bound:
        return "unbound", "waiting for northd to create the port's binding"
    if dest is None:
        if nb_destination is not None:
            problem = view.status.get("error") or view.status.get("binding")
            why = f" ({problem})" if problem else ""
            return (
                "configuring",
                f"waiting for northd to make {nb_destination} the destination{why}",
            )
        if view.owner is None:
            return "none", f"no migration; {port} is not bound ({view.status.get('binding', '')})"
        return "complete", f"no migration in progress; {view.owner} owns {port}"
    part = view.part(dest)
    if dest not in alive:
        return view.state or "pending", f"waiting for destination {dest} to be alive again"
    if nb_destination is None and view.form != "hypervisor":
        return "ending", "waiting for northd to end the migration the NB no longer names"
    if view.state == "activated" or view.owner == dest:
        src = view.part(source)
        if src is not None and src.vif and src.installed not in ("standby", None):
            return "activated", f"waiting for {source} to stand by (its VIF is still there)"
        if src is not None and src.vif:
            return (
                "activated",
                f"{dest} owns {port}; waiting for the hypervisor to remove the VIF on "
                f"{source} and the cloud to complete the migration",
            )
        return "activated", f"{dest} owns {port}; waiting for the cloud to complete the migration"
    if part is None or not part.vif:
        return "configured", f"waiting for the hypervisor to plug {port}'s VIF on {dest}"
    if part.vif_error:
        return "refused", f"{dest} refused the VIF: {part.vif_error}"
    if part.role is None:
        return "configured", f"waiting for northd to give {dest} its claim on {port}"
    if part.activated_ms is not None:
        return "activating", f"waiting for northd to make {dest} the owner ({dest} saw the VM)"
    if part.installed != "pending":
        return "preparing", f"waiting for {dest} to report its flows installed"
    return "ready", f"waiting for the VM's announcement at {dest} (its blocking flows are in)"


def show(nb_remote: str, sb_remote: str, port: str, timeout: float = 10.0) -> MigrationView:
    """Reads both databases once and derives the port's migration."""
    helper = fetch_schema(nb_remote, schema.NB_NAME, timeout)
    with (
        OvsdbClient(nb_remote, schema.NB_NAME, NB_TABLES, schema=helper, name="nb") as nb,
        OvsdbClient(
            sb_remote,
            schema.SB_NAME,
            SB_TABLES,
            indexes=SB_INDEXES,
            name="sb",
        ) as sb,
    ):
        nb_snap, sb_snap = nb.wait_connected(timeout), sb.wait_connected(timeout)
    lsp = next(iter(nb_snap.lookup("Logical_Switch_Port", "name", port)), None)
    return derive(port, dict(lsp["options"]) if lsp is not None else None, sb_snap)
