"""The SB access policy (model.security) against the schema it governs. (Installing it on a
real server: tests/lab/test_security.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from liveport.model.security import (
    AUTHORITY,
    CHASSIS_PERMISSIONS,
    CONTROL_PERMISSIONS,
    NORTHD_IDENTITY,
    OPERATOR_TABLES,
    ROLES,
)
from liveport.ovsdb.schema import southbound_path

SCHEMA = json.loads(southbound_path().read_text())
TABLES: dict[str, Any] = SCHEMA["tables"]


def columns(table: str) -> set[str]:
    return set(TABLES[table]["columns"])


@pytest.mark.parametrize("role", sorted(ROLES))
def test_permissions_name_real_tables_and_columns(role: str) -> None:
    for table, perm in ROLES[role].items():
        assert table in TABLES, table
        for column in perm.update:
            assert column in columns(table), f"{role}: {table}.{column}"
        for auth in perm.authorization:
            column, _, key = auth.partition(":")
            kind = TABLES[table]["columns"][column]["type"]
            # RBAC matches a string column, or one key of a string map, against the CN.
            assert (kind == "string" and not key) or (
                isinstance(kind, dict)
                and (kind.get("key") == "string" or kind["key"].get("type") == "string")
                and kind.get("max", 1) == 1
            ), f"{role}: {table} authorization {auth}"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_no_role_may_rewrite_what_authorizes_it(role: str) -> None:
    """RBAC checks authorization against the row before an update and never the new
    values, so an updatable authorization column would let a client hand rows around."""
    for table, perm in ROLES[role].items():
        authorizing = {a.partition(":")[0] for a in perm.authorization}
        assert not authorizing & set(perm.update), f"{role}: {table}"


def test_chassis_never_write_bindings_or_create_claims() -> None:
    assert {"Port_Binding", "Datapath_Binding", "SB_Global"}.isdisjoint(CHASSIS_PERMISSIONS)
    assert not CHASSIS_PERMISSIONS["Port_Claim"].insert_delete
    assert set(CHASSIS_PERMISSIONS["Port_Claim"].update) <= {
        "installed",
        "activated",
        "activation",
        "vhost",
    }
    assert not OPERATOR_TABLES & (set(CHASSIS_PERMISSIONS) | set(CONTROL_PERMISSIONS))


@pytest.mark.parametrize("table", sorted(CONTROL_PERMISSIONS))
def test_northd_may_write_every_column_of_its_tables_but_authority(table: str) -> None:
    kept = {
        "SB_Global": {"connections", "chassis_connections", "ssl"},  # the operator's
        "Port_Claim": {"logical_port", "chassis"},  # a claim is deleted, never re-pointed
    }.get(table, set())
    assert set(CONTROL_PERMISSIONS[table].update) == columns(table) - {AUTHORITY} - kept
    assert CONTROL_PERMISSIONS[table].authorization == (AUTHORITY,)


@pytest.mark.parametrize("table", sorted(CONTROL_PERMISSIONS))
def test_the_schema_admits_only_northd_as_authority(table: str) -> None:
    """Otherwise a chassis on the control listener could insert rows naming itself."""
    key = TABLES[table]["columns"][AUTHORITY]["type"]["key"]
    assert key["enum"] == ["set", [NORTHD_IDENTITY]]
