"""ovsdb.rbac on an in-memory SB: the access policy is set up from nothing, a repeat changes
nothing, a widened permission or a row with the wrong authority is put right, and an
operator's own role keeps its permissions."""

from __future__ import annotations

from liveport.model.security import (
    AUTHORITY,
    CHASSIS_ROLE,
    CONTROL_ROLE,
    NORTHD_IDENTITY,
    ROLES,
)
from liveport.ovsdb import schema
from liveport.ovsdb.rbac import setup_operations
from liveport.ovsdb.rows import Insert, Snapshot

from tests.snapshots import Db

LISTENERS = {"pssl:6642": CONTROL_ROLE, "pssl:6643": CHASSIS_ROLE, "punix:/run/sb.sock": ""}


def set_up(db: Db, listeners: dict[str, str] | None = LISTENERS) -> list[str]:
    ops, changes = setup_operations(db.snapshot(), listeners)
    db.transact(ops)
    return changes


def policy(snap: Snapshot) -> dict[str, dict[str, tuple[object, ...]]]:
    """Role -> table -> (authorization, insert_delete, update), as the SB holds them."""
    out: dict[str, dict[str, tuple[object, ...]]] = {}
    for role in snap.rows("RBAC_Role"):
        tables: dict[str, tuple[object, ...]] = {}
        for table, ref in role["permissions"].items():
            perm = snap.get("RBAC_Permission", ref)
            assert perm is not None and perm["table"] == table
            tables[table] = (
                frozenset(perm["authorization"]),
                perm["insert_delete"],
                frozenset(perm["update"]),
            )
        out[role["name"]] = tables
    return out


def wanted() -> dict[str, dict[str, tuple[object, ...]]]:
    return {
        role: {
            t: (frozenset(p.authorization), p.insert_delete, frozenset(p.update))
            for t, p in permissions.items()
        }
        for role, permissions in ROLES.items()
    }


def test_from_nothing_then_nothing_more() -> None:
    db = Db(schema.southbound_path(), "sb")
    changes = set_up(db)
    assert "SB_Global: created" in changes
    snap = db.snapshot()
    assert policy(snap) == wanted()
    sb_global = next(iter(snap.rows("SB_Global")))
    assert sb_global[AUTHORITY] == NORTHD_IDENTITY

    def targets(column: str) -> dict[str, str]:
        rows = (snap.get("Connection", u) for u in sb_global[column])
        return {r["target"]: r["role"] for r in rows if r is not None}

    # A chassis listener is served by the chassis relay (which trusts only the chassis CA),
    # every other one by the SB server itself.
    assert targets("chassis_connections") == {"pssl:6643": CHASSIS_ROLE}
    assert targets("connections") == {"pssl:6642": CONTROL_ROLE, "punix:/run/sb.sock": ""}
    assert setup_operations(db.snapshot(), LISTENERS) == ([], [])


def test_a_widened_permission_is_put_back() -> None:
    db = Db(schema.southbound_path(), "sb")
    set_up(db)
    snap = db.snapshot()
    chassis = next(r for r in snap.rows("RBAC_Role") if r["name"] == CHASSIS_ROLE)
    table, ref = sorted(chassis["permissions"].items())[0]
    db.update("RBAC_Permission", ref, insert_delete=True, authorization=frozenset())
    changes = set_up(db)
    assert f"role {CHASSIS_ROLE}: permission for {table} set" in changes
    assert policy(db.snapshot()) == wanted()
    assert setup_operations(db.snapshot(), LISTENERS) == ([], [])


def test_an_operators_own_role_keeps_its_permissions() -> None:
    db = Db(schema.southbound_path(), "sb")
    set_up(db)
    columns = {
        "table": "Chassis",
        "authorization": frozenset({"name"}),
        "insert_delete": False,
        "update": frozenset({"external_ids"}),
    }
    perm = db.transact([Insert("RBAC_Permission", columns, name="p")])["p"]
    db.insert("RBAC_Role", name="site-monitor", permissions={"Chassis": perm})
    assert setup_operations(db.snapshot(), LISTENERS) == ([], [])
    ops, _ = setup_operations(db.snapshot(), None)
    assert ops == []
    assert perm in db.rows("RBAC_Permission")


def test_northds_rows_get_northds_authority_and_listeners_can_be_left_alone() -> None:
    db = Db(schema.southbound_path(), "sb")
    set_up(db)
    dp = db.insert("Datapath_Binding", tunnel_key=1, **{AUTHORITY: "someone-else"})
    changes = set_up(db, None)
    assert changes == [f"Datapath_Binding: authority {NORTHD_IDENTITY} on 1 rows"]
    assert db.rows("Datapath_Binding")[dp][AUTHORITY] == NORTHD_IDENTITY
    # None leaves the listeners as they were; a new map changes them.
    changes = set_up(db, {**LISTENERS, "pssl:6642": ""})
    assert changes == ["listener pssl:6642: role none"]
