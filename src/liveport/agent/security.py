"""What an agent reads of security groups from the SB, kept up to date row by row: the ACLs
of each datapath, the address sets and port groups their matches name, and the
connections a migration's source published for its port. Pure functions of snapshots.

Rows northd writes (ACL, Port_Group, Address_Set) come from the control plane and are
taken as they are, values checked where they are parsed. Port_Connections rows come from
chassis: only those of a port's migration source count (model.conntrack checks every
connection), so no other chassis can make a destination admit anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from liveport.model.acl import AclView, Direction, Verdict, references
from liveport.model.carried import MAX_CONNECTIONS, Connection, parse_carried
from liveport.ovsdb.rows import Row, Snapshot

Changed = Mapping[str, frozenset[uuid.UUID]] | None
SECURITY_TABLES = ("ACL", "Port_Group", "Address_Set")


@dataclass(frozen=True)
class Security:
    """The ACL side of an agent's view of the SB."""

    acls: Mapping[uuid.UUID, tuple[AclView, frozenset[int]]] = field(default_factory=dict)
    by_dp: Mapping[int, tuple[AclView, ...]] = field(default_factory=dict)
    sets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Address set or port group name -> the datapaths whose ACLs refer to it.
    refs: Mapping[str, frozenset[int]] = field(default_factory=dict)
    set_names: Mapping[uuid.UUID, str] = field(default_factory=dict)
    group_names: Mapping[uuid.UUID, str] = field(default_factory=dict)


def read_security(sb: Snapshot, old: Security, changed: Changed) -> tuple[Security, frozenset[int]]:
    """The security state after the rows that changed, and the datapaths whose ACL stages
    may change with them (everything when changed is None)."""
    if changed is None:
        acls = {r.uuid: v for r in sb.rows("ACL") if (v := acl_view(sb, r)) is not None}
        set_rows, group_rows = list(sb.rows("Address_Set")), list(sb.rows("Port_Group"))
        new = _index(
            acls,
            {r["name"]: frozenset(r["addresses"]) for r in set_rows},
            {r["name"]: frozenset(r["ports"]) for r in group_rows},
            {r.uuid: r["name"] for r in set_rows},
            {r.uuid: r["name"] for r in group_rows},
        )
        return new, frozenset(new.by_dp) | frozenset(old.by_dp)
    dirty: set[int] = set()
    acls_changed = changed.get("ACL", frozenset())
    sets_changed = changed.get("Address_Set", frozenset())
    groups_changed = changed.get("Port_Group", frozenset())
    if not (acls_changed or sets_changed or groups_changed):
        return old, frozenset()
    acls = dict(old.acls)
    for row_uuid in acls_changed:
        before = acls.pop(row_uuid, None)
        if before is not None:
            dirty |= before[1]
        row = sb.get("ACL", row_uuid)
        after = acl_view(sb, row) if row is not None else None
        if after is not None:
            acls[row_uuid] = after
            dirty |= after[1]
    sets, set_names = _named(sb, "Address_Set", "addresses", sets_changed, old.sets, old.set_names)
    groups, group_names = _named(
        sb, "Port_Group", "ports", groups_changed, old.groups, old.group_names
    )
    if acls_changed:
        new = _index(acls, sets, groups, set_names, group_names)
    else:
        new = Security(acls, old.by_dp, sets, groups, old.refs, set_names, group_names)
    for name in _changed_names(old.sets, sets) | _changed_names(old.groups, groups):
        dirty |= old.refs.get(name, frozenset()) | new.refs.get(name, frozenset())
    return new, frozenset(dirty)


def _named(
    sb: Snapshot,
    table: str,
    column: str,
    changed: Iterable[uuid.UUID],
    old: Mapping[str, frozenset[str]],
    old_names: Mapping[uuid.UUID, str],
) -> tuple[Mapping[str, frozenset[str]], Mapping[uuid.UUID, str]]:
    """Rows of a table by name (the schema makes names unique), with the changed rows
    read again."""
    uuids = list(changed)
    if not uuids:
        return old, old_names
    out, names = dict(old), dict(old_names)
    for row_uuid in uuids:
        previous = names.pop(row_uuid, None)
        if previous is not None:
            out.pop(previous, None)
        row = sb.get(table, row_uuid)
        if row is not None:
            names[row_uuid] = row["name"]
            out[row["name"]] = frozenset(row[column])
    return out, names


def _changed_names(
    old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]
) -> set[str]:
    if old is new:
        return set()
    return {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}


def _index(
    acls: Mapping[uuid.UUID, tuple[AclView, frozenset[int]]],
    sets: Mapping[str, frozenset[str]],
    groups: Mapping[str, frozenset[str]],
    set_names: Mapping[uuid.UUID, str],
    group_names: Mapping[uuid.UUID, str],
) -> Security:
    by_dp: dict[int, list[AclView]] = {}
    refs: dict[str, set[int]] = {}
    for view, dps in acls.values():
        for dp in dps:
            by_dp.setdefault(dp, []).append(view)
        named_sets, named_groups = references(view.match)
        for name in (*named_sets, *named_groups, *view.port_groups):
            refs.setdefault(name, set()).update(dps)
    return Security(
        dict(acls),
        {dp: tuple(sorted(found, key=lambda a: a.key)) for dp, found in by_dp.items()},
        sets,
        groups,
        {name: frozenset(dps) for name, dps in refs.items()},
        set_names,
        group_names,
    )


def acl_view(sb: Snapshot, row: Row) -> tuple[AclView, frozenset[int]] | None:
    """An SB ACL and the tunnel keys of the datapaths it applies to (None: unusable)."""
    try:
        direction = Direction(row["direction"])
        verdict = Verdict(row["action"])
    except ValueError:
        return None
    dps = _dp_keys(sb, row["datapaths"])
    switches = _dp_keys(sb, row["switch_datapaths"])
    view = AclView(
        key=int(row["key"]),
        direction=direction,
        priority=int(row["priority"]),
        match=row["match"],
        verdict=verdict,
        name=row["name"] or "",
        error=row["error"],
        port_groups=tuple(sorted(row["port_groups"])),
        switches=switches,
    )
    return view, dps


def _dp_keys(sb: Snapshot, uuids: Iterable[uuid.UUID]) -> frozenset[int]:
    keys = set()
    for dp_uuid in uuids:
        dp = sb.get("Datapath_Binding", dp_uuid)
        if dp is not None:
            keys.add(int(dp["tunnel_key"]))
    return frozenset(keys)


# ----- carried connections -----------------------------------------------------------------


def carried_from(
    sb: Snapshot, port: str, sources: Iterable[str]
) -> tuple[tuple[Connection, ...], int]:
    """The connections `sources` (a port's migration source, past or present) published
    for the port, and how many entries were refused."""
    wanted = frozenset(sources)
    found: set[Connection] = set()
    refused = 0
    for row in sb.lookup("Port_Connections", "logical_port", port):
        if row["chassis"] not in wanted:
            continue
        for text in sorted(row["connections"])[:MAX_CONNECTIONS]:
            try:
                found.add(parse_carried(text))
            except ValueError:
                refused += 1
    return tuple(sorted(found)), refused
