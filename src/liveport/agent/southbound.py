"""What an agent reads from and writes to the SB, as pure functions of snapshots.

An agent writes only rows that name its own chassis: its Chassis and Chassis_Private rows,
one Chassis_VIF row per local VIF, and the state columns of the Port_Claim rows northd
created for it. It never writes Port_Binding.

It monitors conditionally: its own rows, every Chassis (for tunnels), every datapath, and
the Port_Bindings of its VIFs plus those of the datapaths they are in (two steps: the
ports tell which datapaths).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from liveport.agent.localswitch import Identity
from liveport.model.binding import MigrationState
from liveport.model.frozen import FrozenMap
from liveport.model.logical import DEFAULT_STRATEGY, Strategy
from liveport.model.pipeline import PortView
from liveport.model.realbackend import CHECK_KEY as BACKEND_CHECK_KEY
from liveport.model.untrusted import chassis_problem, note
from liveport.ovsdb.client import Condition
from liveport.ovsdb.rows import Change, Delete, Insert, Op, Row, Snapshot, Update

SB_TABLES: dict[str, list[str] | None] = {
    "SB_Global": ["nb_cfg"],
    "Chassis": ["name", "hostname", "encap_type", "encap_ip", "vhost_modes", "other_config"],
    "Chassis_Private": None,
    "Datapath_Binding": ["tunnel_key", "name"],
    "Port_Binding": None,
    "Port_Claim": None,
    "Chassis_VIF": None,
    "ACL": None,
    "Port_Group": None,
    "Address_Set": None,
    "Port_Connections": None,
}


VIF_ERROR_LIMIT = 900  # characters of a refusal's text (the column holds at most 1024)


def own_conditions(me: str) -> dict[str, Condition]:
    return {
        "Chassis_Private": [["name", "==", me]],
        "Chassis_VIF": [["chassis", "==", me]],
        "Port_Claim": [["chassis", "==", me]],
        "Port_Binding": [],
    }


def wakes_agent(change: Change, me: str, previous: Snapshot | None) -> bool:
    """Whether an SB update may call for a reconcile pass. Not when all it changed is this
    chassis' own Chassis_Private row, still there: that is the agent's own heartbeat or
    nb_cfg report coming back, and a pass over every port for it would be wasted (at idle
    it was the only reason an agent woke). A reload, a deleted row, a new connection state
    or a condition the server has just acknowledged (since `previous`) all wake."""
    snap = change.snapshot
    if (
        change.reloaded
        or previous is None
        or snap.connected != previous.connected
        or snap.cond_seqno != previous.cond_seqno
    ):
        return True
    changed = {table: rows for table, rows in change.changed.items() if rows}
    if set(changed) != {"Chassis_Private"}:
        return True
    rows = snap.table("Chassis_Private")
    return not all(
        (row := rows.get(u)) is not None and row["name"] == me for u in changed["Chassis_Private"]
    )


def tunnel_endpoints(sb: Snapshot, me: str) -> dict[str, str]:
    """The other chassis to keep a tunnel to (name -> encapsulation IP): those with an
    address and a row fit to be used (untrusted.chassis_problem; northd ignores the others
    the same way)."""
    return {
        c["name"]: c["encap_ip"]
        for c in sb.rows("Chassis")
        if c["name"] != me
        and c["encap_ip"]
        and chassis_problem(c["name"], c["hostname"], c["encap_ip"]) is None
    }


def port_binding_condition(sb: Snapshot, vif_ids: Iterable[str]) -> Condition:
    """Port_Bindings of the local VIFs' datapaths, plus, by name, the VIFs whose datapath is
    not known yet. (Naming every port as well would make the server evaluate thousands of
    clauses per row.)"""
    datapaths: set[uuid.UUID] = set()
    unknown: set[str] = set()
    for name in vif_ids:
        rows = sb.lookup("Port_Binding", "logical_port", name)
        if rows:
            datapaths |= {row["datapath"] for row in rows}
        else:
            unknown.add(name)
    cond: Condition = [["datapath", "==", ["uuid", str(u)]] for u in sorted(datapaths, key=str)]
    cond += [["logical_port", "==", n] for n in sorted(unknown)]
    return cond


def condition_covers(wider: Condition, narrower: Condition) -> bool:
    """Whether every row narrower selects is selected by wider: each of narrower's
    clauses (OR-ed) is one of wider's."""
    return {json.dumps(c, sort_keys=True) for c in narrower} <= {
        json.dumps(c, sort_keys=True) for c in wider
    }


def registration_ops(
    sb: Snapshot,
    identity: Identity,
    now_ms: int,
    modes: Sequence[str] = (),
    backend_check: str | None = None,
) -> list[Op]:
    """This chassis' Chassis row (with the vhost-user modes it offers, V2: name -> rank,
    0 the newest, and in other_config what the check against its real vhost-user back-end
    found, when there is one) and its Chassis_Private row."""
    me = identity.chassis
    assert me is not None
    ops: list[Op] = []
    chassis = sb.one("Chassis", name=me)
    other = dict(chassis["other_config"]) if chassis is not None else {}
    other.pop(BACKEND_CHECK_KEY, None)
    if backend_check is not None:
        other[BACKEND_CHECK_KEY] = backend_check
    wanted: dict[str, Any] = {
        "hostname": identity.hostname or me,
        "encap_type": identity.encap_type,
        "encap_ip": identity.encap_ip or "",
        "vhost_modes": FrozenMap({name: rank for rank, name in enumerate(modes)}),
        "other_config": FrozenMap(other),
    }
    if chassis is None:
        ops.append(Insert("Chassis", {"name": me, **wanted}))
    else:
        changed = {k: v for k, v in wanted.items() if chassis[k] != v}
        if changed:
            ops.append(Update("Chassis", chassis.uuid, changed))
    if sb.one("Chassis_Private", name=me) is None:
        ops.append(
            Insert(
                "Chassis_Private",
                {"name": me, "nb_cfg": 0, "heartbeat": 0, "started": now_ms, "nb_cfg_timestamp": 0},
            )
        )
    return ops


def vif_ops(
    sb: Snapshot,
    me: str,
    vifs: Mapping[str, Any],
    modes: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[Op]:
    """Chassis_VIF rows for exactly the local VIFs, with their migration status, vhost-user
    mode, and -- for a VIF refused here -- status:error (northd then ignores the VIF)."""
    modes, errors = modes or {}, errors or {}
    ops: list[Op] = []
    have = {}
    for row in sb.rows("Chassis_VIF"):
        if row["chassis"] != me:
            continue
        if row["iface_id"] in have or row["iface_id"] not in vifs:
            ops.append(Delete("Chassis_VIF", row.uuid))
            continue
        have[row["iface_id"]] = row
        wanted = _vif_values(vifs[row["iface_id"]], modes, errors)
        changed = {k: v for k, v in wanted.items() if row[k] != v}
        if changed:
            ops.append(Update("Chassis_VIF", row.uuid, changed))
    for iface_id, vif in sorted(vifs.items()):
        if iface_id not in have:
            values = {"chassis": me, "iface_id": iface_id, **_vif_values(vif, modes, errors)}
            ops.append(Insert("Chassis_VIF", values))
    return ops


def _vif_values(vif: Any, modes: Mapping[str, str], errors: Mapping[str, str]) -> dict[str, Any]:
    error = errors.get(vif.iface_id)
    return {
        "migration_status": vif.migration_status,
        "vhost_mode": modes.get(vif.iface_id),
        # Within the schema's bound on the column (1024 characters), escaped as a note.
        "status": FrozenMap({"error": note(error, VIF_ERROR_LIMIT)} if error else {}),
    }


_STRATEGIES = {str(s): s for s in Strategy}


@functools.lru_cache(maxsize=64)
def _strategy(values: frozenset[str]) -> frozenset[Strategy]:
    """The activation strategies a Port_Binding names (a set column: a frozenset, so the
    few distinct values are parsed once, not once per port per pass)."""
    chosen = frozenset(_STRATEGIES[v] for v in values if v in _STRATEGIES)
    return chosen or DEFAULT_STRATEGY


def port_view(pb: Row, dp: Row) -> PortView:
    """The agent's view of one Port_Binding in its datapath."""
    return PortView(
        name=pb["logical_port"],
        dp_key=dp["tunnel_key"],
        key=pb["tunnel_key"],
        addresses=tuple(sorted(pb["addresses"])),
        port_security=tuple(sorted(pb["port_security"])),
        owner=pb["chassis"],
        destination=pb["migration_destination"],
        migration_state=MigrationState(pb["migration_state"]) if pb["migration_state"] else None,
        strategy=_strategy(pb["activation_strategy"]),
        enabled=pb["enabled"] is not False,
        source=pb["migration_source"],
        dhcpv4=tuple(sorted(pb["dhcpv4_options"].items())),
        dhcpv6=tuple(sorted(pb["dhcpv6_options"].items())),
        kind=pb["type"],
        network=pb["network_name"],
        tag=pb["tag"],
    )


def heartbeat_op(sb: Snapshot, me: str, beat: int) -> list[Op]:
    private = sb.one("Chassis_Private", name=me)
    if private is None:
        return []
    return [Update("Chassis_Private", private.uuid, {"heartbeat": beat})]
