"""Converges a southbound database on liveport's access policy (model.security): the RBAC
roles and permissions, the listeners (Connection rows, each with its role), and the
`authority` of the rows northd owns. Run by the operator through a listener without a role
(`liveport sb setup`, the secure lab); idempotent, and a pure function of a snapshot.

Listeners for chassis go into SB_Global.chassis_connections, which only the SB's chassis
relay serves (a process whose TLS trusts only the chassis CA); every other listener into
SB_Global.connections, which the SB server serves (trusting only the control CA). So the
role a listener gives is always backed by the CA its process trusts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liveport.model.security import AUTHORITY, CHASSIS_ROLE, NORTHD_IDENTITY, ROLES, Permission
from liveport.ovsdb.rows import Delete, Insert, Op, Ref, Row, Snapshot, Update

SETUP_TABLES: dict[str, list[str] | None] = {
    "SB_Global": ["connections", "chassis_connections", AUTHORITY],
    "Connection": ["target", "role"],
    "RBAC_Role": None,
    "RBAC_Permission": None,
    "Datapath_Binding": [AUTHORITY],
    "Port_Binding": [AUTHORITY],
    "Port_Claim": [AUTHORITY],
    "ACL": [AUTHORITY],
    "Port_Group": [AUTHORITY],
    "Address_Set": [AUTHORITY],
}
NORTHD_TABLES = (
    "Datapath_Binding",
    "Port_Binding",
    "Port_Claim",
    "ACL",
    "Port_Group",
    "Address_Set",
)


def setup_operations(
    sb: Snapshot,
    listeners: Mapping[str, str] | None,
) -> tuple[list[Op], list[str]]:
    """The operations that make sb follow the policy, and one line per change.

    listeners maps a remote (`pssl:6642`) to the role of the clients connecting through it
    ("" for none); None leaves the listeners as they are.
    """
    ops: list[Op] = []
    changes: list[str] = []
    sb_global = next(iter(sb.rows("SB_Global")), None)
    columns: dict[str, list[Any]] = {}
    if listeners is not None:
        columns, conn_ops, conn_changes = _listeners(sb, listeners)
        ops += conn_ops
        changes += conn_changes
    if sb_global is None:
        values: dict[str, Any] = {AUTHORITY: NORTHD_IDENTITY, **columns}
        ops.append(Insert("SB_Global", values))
        changes.append("SB_Global: created")
    else:
        values = {}
        if sb_global[AUTHORITY] != NORTHD_IDENTITY:
            values[AUTHORITY] = NORTHD_IDENTITY
            changes.append(f"SB_Global: authority {NORTHD_IDENTITY}")
        for column, refs in columns.items():
            if frozenset(refs) != sb_global[column]:
                values[column] = refs
        if values:
            ops.append(Update("SB_Global", sb_global.uuid, values))
    role_ops, role_changes = _roles(sb)
    ops += role_ops
    changes += role_changes
    for table in NORTHD_TABLES:
        stale = [row for row in sb.rows(table) if row[AUTHORITY] != NORTHD_IDENTITY]
        ops += [Update(table, row.uuid, {AUTHORITY: NORTHD_IDENTITY}) for row in stale]
        if stale:
            changes.append(f"{table}: authority {NORTHD_IDENTITY} on {len(stale)} rows")
    return ops, changes


def _listeners(
    sb: Snapshot, listeners: Mapping[str, str]
) -> tuple[dict[str, list[Any]], list[Op], list[str]]:
    """The SB_Global listener columns (column -> Connection refs), and their changes."""
    ops: list[Op] = []
    changes: list[str] = []
    columns: dict[str, list[Any]] = {"connections": [], "chassis_connections": []}
    existing = {row["target"]: row for row in sb.rows("Connection")}
    for target, role in sorted(listeners.items()):
        refs = columns["chassis_connections" if role == CHASSIS_ROLE else "connections"]
        row = existing.get(target)
        if row is None:
            name = f"conn{len(ops)}"
            ops.append(Insert("Connection", {"target": target, "role": role}, name=name))
            refs.append(Ref(name))
            changes.append(f"listener {target}: added (role {role or 'none'})")
        else:
            refs.append(row.uuid)
            if row["role"] != role:
                ops.append(Update("Connection", row.uuid, {"role": role}))
                changes.append(f"listener {target}: role {role or 'none'}")
    changes += [f"listener {t}: removed" for t in sorted(set(existing) - set(listeners))]
    # Connection rows are not roots: dropping the reference from SB_Global removes them.
    return columns, ops, changes


def _roles(sb: Snapshot) -> tuple[list[Op], list[str]]:
    ops: list[Op] = []
    changes: list[str] = []
    roles = {row["name"]: row for row in sb.rows("RBAC_Role")}
    used: set[Any] = set()
    for role_name, permissions in sorted(ROLES.items()):
        row = roles.get(role_name)
        current = dict(row["permissions"]) if row is not None else {}
        wanted: dict[str, Any] = {}
        for table, permission in sorted(permissions.items()):
            perm_row = sb.get("RBAC_Permission", current[table]) if table in current else None
            if perm_row is not None and _matches(perm_row, table, permission):
                wanted[table] = perm_row.uuid
                used.add(perm_row.uuid)
                continue
            name = f"perm_{role_name}_{table}".replace("-", "_")
            ops.append(Insert("RBAC_Permission", _permission_values(table, permission), name=name))
            wanted[table] = Ref(name)
            changes.append(f"role {role_name}: permission for {table} set")
        dropped = sorted(set(current) - set(permissions))
        changes += [f"role {role_name}: permission for {t} removed" for t in dropped]
        if row is None:
            ops.append(Insert("RBAC_Role", {"name": role_name, "permissions": wanted}))
            changes.append(f"role {role_name}: created")
        elif wanted != current:
            ops.append(Update("RBAC_Role", row.uuid, {"permissions": wanted}))
    # Permissions liveport's roles no longer use go; those of an operator's own roles stay.
    ops += [
        Delete("RBAC_Permission", row.uuid)
        for row in sb.rows("RBAC_Permission")
        if row.uuid not in used and not _referenced_by_foreign_role(row, roles)
    ]
    return ops, changes


def _referenced_by_foreign_role(row: Row, roles: Mapping[str, Row]) -> bool:
    """Roles that are not liveport's (an operator's own) keep their permissions."""
    foreign = [r for name, r in roles.items() if name not in ROLES]
    return any(row.uuid in dict(r["permissions"]).values() for r in foreign)


def _permission_values(table: str, permission: Permission) -> dict[str, Any]:
    return {
        "table": table,
        "authorization": frozenset(permission.authorization),
        "insert_delete": permission.insert_delete,
        "update": frozenset(permission.update),
    }


def _matches(row: Row, table: str, permission: Permission) -> bool:
    values = _permission_values(table, permission)
    return all(row[k] == v for k, v in values.items())
