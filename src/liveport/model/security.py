"""Who may write what in the southbound database (DESIGN.md M8), as data.

ovsdb-server enforces this itself through its RBAC tables: a client that connects through
a Connection whose `role` is set may write a table only if the role has a permission for
it, and a row only if one of the permission's `authorization` columns (a string column, or
`column:key` of a map) equals the Common Name of the client's certificate. Updates may touch
only the listed columns. The check is made against the row as it was before the write and
never looks at new values, so no column named in `authorization` may ever be updatable by
the same role: otherwise a client could hand its row to someone else, or take another's.

Two roles, on two listeners served by two processes (ovsdb-server has one TLS context per
process, so the CA a process trusts is the same on all its listeners):
- CHASSIS_ROLE (hypervisors, CN = chassis name): their own Chassis, Chassis_Private and
  Chassis_VIF rows, and the state columns of the Port_Claim rows that name them. They cannot
  insert or delete claims: northd creates exactly one per chassis the NB named for a port,
  so a chassis can only ever speak for ports the cloud put on it. Served by the SB's chassis
  relay, which trusts only the chassis CA (SB_Global.chassis_connections).
- CONTROL_ROLE (northd, CN = NORTHD_IDENTITY; the CMS, which writes nothing here): the rows
  northd owns, which carry `authority` = NORTHD_IDENTITY. Served by the SB server, which
  trusts only the control CA (SB_Global.connections): a certificate minted with the chassis
  CA, whatever its Common Name, cannot connect there. The schema allows no other value in
  `authority`, so no other control identity (the CMS) can write northd's rows or insert
  rows of its own into those tables.

Rows are written without a role only through listeners that have none (the operator's unix
socket).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NORTHD_IDENTITY = "liveport-northd"  # the CN of every northd certificate of a deployment
CMS_IDENTITY = "liveport-cms"
RESERVED_PREFIX = "liveport-"  # no chassis may be named like a control identity

CHASSIS_ROLE = "liveport-chassis"
CONTROL_ROLE = "liveport-control"

AUTHORITY = "authority"  # the column of northd's rows that names their writer


@dataclass(frozen=True)
class Permission:
    authorization: tuple[str, ...]
    insert_delete: bool
    update: tuple[str, ...]


CHASSIS_PERMISSIONS: Mapping[str, Permission] = {
    "Chassis": Permission(
        ("name",),
        True,
        ("hostname", "encap_type", "encap_ip", "vhost_modes", "other_config", "external_ids"),
    ),
    "Chassis_Private": Permission(
        ("name",),
        True,
        ("nb_cfg", "nb_cfg_timestamp", "heartbeat", "started", "external_ids"),
    ),
    "Chassis_VIF": Permission(
        ("chassis",),
        True,
        ("migration_status", "vhost_mode", "status", "external_ids"),
    ),
    "Port_Claim": Permission(
        ("chassis",),
        False,
        ("installed", "activated", "activation", "vhost"),
    ),
    # A migration's source publishes its port's connections for the destination.
    "Port_Connections": Permission(("chassis",), True, ("connections", "time")),
}

# Every column of northd's tables except `authority` itself (checked against the schema by
# the tests, so a new column cannot be forgotten here).
CONTROL_PERMISSIONS: Mapping[str, Permission] = {
    "SB_Global": Permission(
        (AUTHORITY,), True, ("nb_cfg", "live_chassis", "options", "external_ids")
    ),
    "Datapath_Binding": Permission((AUTHORITY,), True, ("tunnel_key", "name", "external_ids")),
    "Port_Binding": Permission(
        (AUTHORITY,),
        True,
        (
            "logical_port",
            "datapath",
            "tunnel_key",
            "type",
            "addresses",
            "port_security",
            "requested_chassis",
            "migration_destination",
            "migration_source",
            "activation_strategy",
            "chassis",
            "migration_state",
            "conflicts",
            "up",
            "enabled",
            "network_name",
            "tag",
            "dhcpv4_options",
            "dhcpv6_options",
            "status",
            "external_ids",
        ),
    ),
    "ACL": Permission(
        (AUTHORITY,),
        True,
        (
            "key",
            "direction",
            "priority",
            "match",
            "action",
            "log",
            "name",
            "label",
            "datapaths",
            "switch_datapaths",
            "port_groups",
            "error",
            "external_ids",
        ),
    ),
    "Port_Group": Permission((AUTHORITY,), True, ("name", "ports", "external_ids")),
    "Address_Set": Permission((AUTHORITY,), True, ("name", "addresses", "external_ids")),
    "Port_Claim": Permission(
        (AUTHORITY,),
        True,
        ("role", "installed", "activated", "activation", "vhost", "external_ids"),
    ),
}

ROLES: Mapping[str, Mapping[str, Permission]] = {
    CHASSIS_ROLE: CHASSIS_PERMISSIONS,
    CONTROL_ROLE: CONTROL_PERMISSIONS,
}

# Tables only the operator writes (through a listener without a role).
OPERATOR_TABLES = frozenset({"Connection", "SSL", "RBAC_Role", "RBAC_Permission"})
# SB_Global columns only the operator writes.
OPERATOR_COLUMNS = frozenset({"connections", "chassis_connections", "ssl", AUTHORITY})


def valid_chassis_identity(name: str) -> bool:
    """A chassis name that can be a certificate CN without posing as a control identity."""
    return bool(name) and not name.startswith(RESERVED_PREFIX)
