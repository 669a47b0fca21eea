"""northd's share of security groups: NB ACL, Port_Group and Address_Set -> their SB rows.

- Port_Group `<name>`: the names of its ports; and the two address sets OVN derives from
  it, `<name>_ip4` and `<name>_ip6`, holding its ports' IP addresses.
- Address_Set `<name>`: its entries, those liveport cannot use left out and reported.
- ACL: one SB row per NB ACL listed in a switch or a port group, with a key (24 bits,
  never reused while the ACL lives), the datapaths it applies to (the switches it is
  listed in, and those with a port in a port group it is listed in), the switches and
  port groups it is listed in (its scope, for failing closed), and `error` when its
  match cannot be used (a syntax or type error, or a name no address set or port group
  has): agents then enforce it fail-closed (model.acl).

Planned per key, like the rest of northd: ("acl", NB uuid), ("pg", name), ("as", name);
ACL_ALL when names appear or go (an ACL's error may change with them).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from liveport.model.acl import (
    MAX_KEY,
    MAX_PRIORITY,
    Direction,
    Verdict,
    acl_problem,
    address_set_entries,
    derived_address_sets,
)
from liveport.model.security import AUTHORITY, NORTHD_IDENTITY
from liveport.ovsdb.rows import Delete, Insert, Row, Snapshot, Update

if TYPE_CHECKING:
    from liveport.northd.northd import Plan

ACL_ALL = ("acl-all",)
DIRECTIONS = frozenset(str(d) for d in Direction)
VERDICTS = frozenset(str(v) for v in Verdict)
DERIVED = "port-group"  # SB Address_Set external_ids: the port group it is derived from


def nb_keys(table: str, rows: list[Row], snap: Snapshot) -> set[tuple[str, ...]]:
    """The security keys an NB change touches (rows: the row before and/or after)."""
    keys: set[tuple[str, ...]] = set()
    if table == "ACL":
        keys |= {("acl", str(r.uuid)) for r in rows}
    elif table == "Port_Group":
        for row in rows:
            keys.add(("pg", row["name"]))
            keys |= {("acl", str(u)) for u in row["acls"]}
        if _named_set_changed(rows):
            keys.add(ACL_ALL)
    elif table == "Address_Set":
        keys |= {("as", row["name"]) for row in rows}
        if _named_set_changed(rows):
            keys.add(ACL_ALL)
    elif table == "Logical_Switch":
        for row in rows:
            keys |= {("acl", str(u)) for u in row["acls"]}
        # Ports that joined or left the switch move their groups' ACLs' datapaths.
        if len(rows) == 2:
            moved = set(rows[0]["ports"]) ^ set(rows[1]["ports"])
        else:
            moved = set(rows[0]["ports"]) if rows else set()
        for lsp_uuid in moved:
            for pg in snap.lookup("Port_Group", "ports", lsp_uuid):
                keys |= {("acl", str(u)) for u in pg["acls"]}
    elif table == "Logical_Switch_Port":
        for row in rows:
            for pg in snap.lookup("Port_Group", "ports", row.uuid):
                keys.add(("pg", pg["name"]))  # its addresses are in the derived sets
    return keys


def _named_set_changed(rows: list[Row]) -> bool:
    """A row was created, deleted or renamed: names that ACLs refer to changed."""
    return len(rows) != 2 or rows[0]["name"] != rows[1]["name"]


def all_keys(nb: Snapshot, sb: Snapshot) -> set[tuple[str, ...]]:
    keys: set[tuple[str, ...]] = set()
    keys |= {("acl", str(r.uuid)) for r in nb.rows("ACL")}
    keys |= {("acl", r["external_ids"].get("nb-uuid", "")) for r in sb.rows("ACL")}
    keys |= {("pg", r["name"]) for r in nb.rows("Port_Group")}
    keys |= {("pg", r["name"]) for r in sb.rows("Port_Group")}
    keys |= {("as", r["name"]) for r in nb.rows("Address_Set")}
    for row in sb.rows("Address_Set"):
        derived = row["external_ids"].get(DERIVED)
        keys.add(("pg", derived) if derived else ("as", row["name"]))
    return keys


def plan_security(batch: Plan, keys: set[tuple[str, ...]]) -> None:
    """The SB writes for the security keys among keys."""
    nb = batch.nb
    if ACL_ALL in keys:
        keys = keys | {("acl", str(r.uuid)) for r in nb.rows("ACL")}
    for key in sorted(k for k in keys if k[0] == "as"):
        _address_set(batch, key[1])
    for key in sorted(k for k in keys if k[0] == "pg"):
        _port_group(batch, key[1])
    known_sets, known_groups = _known_names(nb)
    used = {int(r["key"]) for r in batch.sb.rows("ACL")}
    for key in sorted(k for k in keys if k[0] == "acl"):
        _acl(batch, key[1], known_sets, known_groups, used)


def _known_names(nb: Snapshot) -> tuple[frozenset[str], frozenset[str]]:
    groups = frozenset(r["name"] for r in nb.rows("Port_Group"))
    sets = {r["name"] for r in nb.rows("Address_Set")}
    for name in groups:
        sets |= {f"{name}_ip4", f"{name}_ip6"}
    return frozenset(sets), groups


# ----- address sets and port groups ----------------------------------------------------------


def _address_set(batch: Plan, name: str) -> None:
    nb_rows = batch.nb.lookup("Address_Set", "name", name)
    sb_rows = [r for r in batch.sb.lookup("Address_Set", "name", name)]
    derived = [r for r in sb_rows if r["external_ids"].get(DERIVED)]
    if derived:
        if nb_rows:
            batch.events.append(
                f"address set {name}: the port group {derived[0]['external_ids'][DERIVED]} "
                "derives a set of this name; the NB address set is ignored"
            )
        return
    if not nb_rows:
        for row in sb_rows:
            batch.sb_ops.append(Delete("Address_Set", row.uuid))
        return
    addresses, problems = address_set_entries(nb_rows[0]["addresses"])
    for problem in problems[:5]:
        batch.events.append(f"address set {name}: {problem}; the entry is ignored")
    _sync_named(batch, "Address_Set", sb_rows, {"name": name, "addresses": addresses}, {})


def _port_group(batch: Plan, name: str) -> None:
    nb, sb = batch.nb, batch.sb
    nb_rows = nb.lookup("Port_Group", "name", name)
    sb_rows = sb.lookup("Port_Group", "name", name)
    derived_rows = [
        r
        for n in (f"{name}_ip4", f"{name}_ip6")
        for r in sb.lookup("Address_Set", "name", n)
        if r["external_ids"].get(DERIVED) == name
    ]
    if not nb_rows:
        for row in (*sb_rows, *derived_rows):
            batch.sb_ops.append(Delete(row.table, row.uuid))
        for n in (f"{name}_ip4", f"{name}_ip6"):
            if nb.lookup("Address_Set", "name", n):
                _address_set(batch, n)  # an NB set of that name is no longer shadowed
        return
    members = [m for u in nb_rows[0]["ports"] if (m := nb.get("Logical_Switch_Port", u))]
    _sync_named(
        batch,
        "Port_Group",
        sb_rows,
        {"name": name, "ports": frozenset(m["name"] for m in members)},
        {},
    )
    addresses = [a for m in members for a in m["addresses"]]
    for set_name, ips in derived_address_sets(name, addresses).items():
        rows = [r for r in derived_rows if r["name"] == set_name]
        if not rows:
            # An NB set of the same name gives way to the derived one.
            rows = list(sb.lookup("Address_Set", "name", set_name))
        _sync_named(
            batch,
            "Address_Set",
            rows,
            {"name": set_name, "addresses": ips},
            {DERIVED: name},
        )


def _sync_named(
    batch: Plan, table: str, rows: list[Row], wanted: dict[str, Any], ids: dict[str, str]
) -> None:
    """Exactly one row of table holding wanted (plus external_ids ids)."""
    for extra in rows[1:]:
        batch.sb_ops.append(Delete(table, extra.uuid))
    values = {**wanted, "external_ids": ids}
    if not rows:
        batch.sb_ops.append(Insert(table, {**_plain(values), AUTHORITY: NORTHD_IDENTITY}))
        return
    row = rows[0]
    changed = {k: v for k, v in values.items() if _differs(row[k], v)}
    if changed:
        batch.sb_ops.append(Update(table, row.uuid, _plain(changed)))


# ----- ACLs ------------------------------------------------------------------------------------


def _acl(
    batch: Plan,
    nb_uuid: str,
    known_sets: frozenset[str],
    known_groups: frozenset[str],
    used: set[int],
) -> None:
    nb, sb = batch.nb, batch.sb
    try:
        row = nb.get("ACL", uuid.UUID(nb_uuid))
    except ValueError:
        row = None
    sb_rows = [r for r in sb.rows("ACL") if r["external_ids"].get("nb-uuid") == nb_uuid]
    switches = nb.lookup("Logical_Switch", "acls", row.uuid) if row is not None else []
    groups = nb.lookup("Port_Group", "acls", row.uuid) if row is not None else []
    if row is None or not (switches or groups) or row["direction"] not in DIRECTIONS:
        for extra in sb_rows:
            batch.sb_ops.append(Delete("ACL", extra.uuid))
            used.discard(int(extra["key"]))
        return
    switch_dps = {batch.datapath(str(ls.uuid)) for ls in switches}
    group_dps: set[Any] = set()
    for pg in groups:
        for lsp_uuid in pg["ports"]:
            for ls in nb.lookup("Logical_Switch", "ports", lsp_uuid):
                group_dps.add(batch.datapath(str(ls.uuid)))
    direct = sorted((d[0] for d in switch_dps if d is not None), key=str)
    every = sorted({d[0] for d in (switch_dps | group_dps) if d is not None}, key=str)
    error = _problem(row, known_sets, known_groups)
    if error:
        batch.events.append(f"ACL {_label(row)}: {error}")
    wanted: dict[str, Any] = {
        "direction": row["direction"],
        "priority": row["priority"],
        "match": row["match"],
        # An action this schema does not know is enforced as a drop (its error says so).
        "action": row["action"] if row["action"] in VERDICTS else str(Verdict.DROP),
        "log": bool(row["log"]),
        "name": row["name"],
        "label": int(row["label"] or 0),
        "datapaths": every,
        "switch_datapaths": direct,
        "port_groups": frozenset(pg["name"] for pg in groups),
        "error": error,
        "external_ids": {"nb-uuid": nb_uuid},
    }
    if not sb_rows:
        key = next(k for k in range(1, MAX_KEY + 1) if k not in used)
        used.add(key)
        batch.sb_ops.append(
            Insert("ACL", {**_plain(wanted), "key": key, AUTHORITY: NORTHD_IDENTITY})
        )
        return
    for extra in sb_rows[1:]:
        batch.sb_ops.append(Delete("ACL", extra.uuid))
    current = sb_rows[0]
    changed = {k: v for k, v in wanted.items() if _differs(current[k], v)}
    if changed:
        batch.sb_ops.append(Update("ACL", current.uuid, _plain(changed)))


def _problem(row: Row, known_sets: frozenset[str], known_groups: frozenset[str]) -> str | None:
    """Why an NB ACL cannot be used as written (None: it can)."""
    if row["action"] not in VERDICTS:
        return f"action {row['action']!r} is not implemented by liveport; enforced as drop"
    if not 0 <= row["priority"] <= MAX_PRIORITY:
        return f"priority {row['priority']} is outside 0..{MAX_PRIORITY}"
    return acl_problem(row["match"], known_sets, known_groups)


def _label(row: Row) -> str:
    return f"{row['name']!r} ({row.uuid})" if row["name"] else str(row.uuid)


def _differs(have: Any, want: Any) -> bool:
    if isinstance(want, list):
        return frozenset(have) != frozenset(want)
    if isinstance(want, dict):
        return dict(have) != want
    return bool(have != want)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, frozenset):
            out[key] = sorted(value)
        else:
            out[key] = value
    return out
