"""The NB as Neutron's ML2/OVN driver writes it, through ovsdbapp (the library it uses):
networks, ports, security groups as port groups with their rules' ACLs, and Neutron's
drop-everything port group. The match strings are the shapes neutron/common/ovn/acl.py
builds (a rule's direction, ethertype, remote prefix or group, protocol and ports)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]  # python-ovs must not use it

from ovsdbapp.backend.ovs_idl import connection  # noqa: E402
from ovsdbapp.schema.ovn_northbound import impl_idl  # noqa: E402

PRIORITY_ALLOW = 1002  # Neutron's ACL_PRIORITY_ALLOW
PRIORITY_DROP = 1001  # ACL_PRIORITY_DROP
DROP_GROUP = "neutron_pg_drop"


def group_name(sg_id: str) -> str:
    """utils.ovn_port_group_name: pg_ + the group's UUID with underscores."""
    return "pg_" + sg_id.replace("-", "_")


@contextmanager
def nb_api(remote: str, timeout: float = 20.0) -> Iterator[Any]:
    """An ovsdbapp OVN_Northbound API on remote, as neutron-server opens it."""
    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    conn = connection.Connection(idl=idl, timeout=timeout)
    # ovsdbapp keeps one connection per API class for the whole process (a neutron-server
    # talks to one NB); a test talks to a new lab each time: a class of its own each time.
    api_class = type("NbApi", (impl_idl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
    api = api_class(conn)
    try:
        yield api
    finally:
        conn.stop()


def rule_match(
    group: str,
    direction: str,
    ethertype: str = "IPv4",
    protocol: str | None = None,
    port_min: int | None = None,
    port_max: int | None = None,
    remote_prefix: str | None = None,
    remote_group: str | None = None,
) -> str:
    """The match of one rule's ACL (acl.py's _add_sg_rule_acl_for_port_group)."""
    ip = "ip4" if ethertype == "IPv4" else "ip6"
    port_field = "outport" if direction == "ingress" else "inport"
    match = f"{port_field} == @{group} && {ip}"
    src_dst = "src" if direction == "ingress" else "dst"
    if remote_prefix:
        match += f" && {ip}.{src_dst} == {remote_prefix}"
    if remote_group:
        match += f" && {ip}.{src_dst} == ${remote_group}_{ip}"
    if protocol in ("tcp", "udp", "sctp"):
        match += f" && {protocol}"
        if port_min is not None and port_min == port_max:
            match += f" && {protocol}.dst == {port_min}"
        else:
            if port_min is not None:
                match += f" && {protocol}.dst >= {port_min}"
            if port_max is not None:
                match += f" && {protocol}.dst <= {port_max}"
    elif protocol in ("icmp", "icmp6"):
        icmp = "icmp4" if ethertype == "IPv4" else "icmp6"
        match += f" && {icmp}"
    return match


def add_rule(api: Any, group: str, direction: str, **rule: Any) -> None:
    """A security-group rule: an allow-related ACL on the group's port group."""
    api.pg_acl_add(
        group,
        "to-lport" if direction == "ingress" else "from-lport",
        PRIORITY_ALLOW,
        rule_match(group, direction, **rule),
        "allow-related",
        may_exist=True,
    ).execute(check_error=True)


def ensure_drop_group(api: Any) -> None:
    """neutron_pg_drop with its two ACLs (acl.py add_acls_for_drop_port_group)."""
    api.pg_add(DROP_GROUP, may_exist=True).execute(check_error=True)
    with api.transaction(check_error=True) as txn:
        for direction, field in (("from-lport", "inport"), ("to-lport", "outport")):
            txn.add(
                api.pg_acl_add(
                    DROP_GROUP,
                    direction,
                    PRIORITY_DROP,
                    f"{field} == @{DROP_GROUP} && ip",
                    "drop",
                    may_exist=True,
                )
            )


def default_security_group(api: Any, sg_id: str) -> str:
    """Neutron's default security group: egress to anywhere (IPv4 and IPv6), ingress from
    its own members. Returns the port group's name."""
    group = group_name(sg_id)
    api.pg_add(group, may_exist=True, external_ids={"neutron:security_group_id": sg_id}).execute(
        check_error=True
    )
    for ethertype in ("IPv4", "IPv6"):
        add_rule(api, group, "egress", ethertype=ethertype)
        add_rule(api, group, "ingress", ethertype=ethertype, remote_group=group)
    return group


def add_port(
    api: Any,
    network: str,
    name: str,
    mac: str,
    ip: str,
    groups: list[str],
    *,
    chassis: str | None = None,
) -> None:
    """A Neutron port: addresses and port security "MAC IP", requested-chassis, the DHCP
    ACL's shape left out (liveport's DHCP is separate), membership in its groups and in the
    drop group."""
    with api.transaction(check_error=True) as txn:
        txn.add(api.lsp_add(network, name, may_exist=True))
        txn.add(api.lsp_set_addresses(name, [f"{mac} {ip}"]))
        txn.add(api.lsp_set_port_security(name, [f"{mac} {ip}"]))
        if chassis:
            txn.add(api.lsp_set_options(name, **{"requested-chassis": chassis}))
    # Then the groups. ovsdbapp takes a port by UUID (Neutron's ports are named by their
    # UUID; these lab ports are not).
    if groups:
        port = api.lsp_get(name).execute(check_error=True)
        with api.transaction(check_error=True) as txn:
            for group in [*groups, DROP_GROUP]:
                txn.add(api.pg_add_ports(group, [port.uuid]))
        members = {p.name for p in api.pg_get(groups[0]).execute(check_error=True).ports}
        assert name in members, f"{name} did not join {groups[0]}"
