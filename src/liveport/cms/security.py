"""The operator's side of M8: putting a southbound database under liveport's access policy
(`liveport sb setup`). Connects through a listener without a role (the server's unix socket)."""

from __future__ import annotations

from collections.abc import Mapping

from liveport.ovsdb import rbac, schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema


def setup_southbound(
    remote: str,
    listeners: Mapping[str, str] | None,
    *,
    timeout: float = 10.0,
) -> list[str]:
    """Converges the SB on the RBAC roles, the listeners (target -> role; None: leave them)
    and northd's authority; returns one line per change (none when already so)."""
    helper = fetch_schema(remote, schema.SB_NAME, timeout)
    with OvsdbClient(remote, schema.SB_NAME, rbac.SETUP_TABLES, schema=helper) as client:
        snap = client.wait_connected(timeout)
        ops, changes = rbac.setup_operations(snap, listeners)
        client.transact(ops, comment="liveport sb setup", timeout=timeout)
    return changes
