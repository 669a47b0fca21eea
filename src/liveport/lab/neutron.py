"""The NB as Neutron's ML2/OVN driver writes it, through ovsdbapp (the library it uses):
networks, ports, security groups as port groups with their rules' ACLs, and Neutron's
drop-everything port group. The match strings are the shapes neutron/common/ovn/acl.py
builds (a rule's direction, ethertype, remote prefix or group, protocol and ports).

Also the security-group topology the lab tests and the comparison share (`egress_only`).
Works against either engine's NB: both serve
OVN's OVN_Northbound schema.

ovsdbapp is imported when an API is opened (`nb_api`): it is a test and bench dependency,
not one of the daemons'. Its API runs a connection thread of its own; a caller uses an API
from one thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveport.lab import demo, lab, vms
from liveport.model.errors import LiveportError

PRIORITY_ALLOW = 1002  # Neutron's ACL_PRIORITY_ALLOW
PRIORITY_DROP = 1001  # ACL_PRIORITY_DROP
DROP_GROUP = "neutron_pg_drop"


def group_name(sg_id: str) -> str:
    """utils.ovn_port_group_name: pg_ + the group's UUID with underscores."""
    return "pg_" + sg_id.replace("-", "_")


@contextmanager
def nb_api(remote: str, timeout: float = 20.0) -> Iterator[Any]:
    """An ovsdbapp OVN_Northbound API on remote, as neutron-server opens it."""
    # python-ovs must not use eventlet (as liveport.cli arranges for its programs).
    sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]
    from ovsdbapp.backend.ovs_idl import connection  # noqa: PLC0415 - optional dependency
    from ovsdbapp.schema.ovn_northbound import impl_idl  # noqa: PLC0415

    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    conn = connection.Connection(idl=idl, timeout=timeout)
    # ovsdbapp keeps one connection per API class for the whole process (a neutron-server
    # talks to one NB); a lab client talks to a new lab each time: a class of its own.
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
        join(api, api.lsp_get(name).execute(check_error=True).uuid, groups)
        members = {p.name for p in api.pg_get(groups[0]).execute(check_error=True).ports}
        if name not in members:
            raise LiveportError(f"{name} did not join {groups[0]}")


def join(api: Any, port: Any, groups: Sequence[str]) -> None:
    """The port (its UUID) joins groups and the drop group, in one transaction: what
    Neutron writes when a port gets its security groups."""
    with api.transaction(check_error=True) as txn:
        for group in [*groups, DROP_GROUP]:
            txn.add(api.pg_add_ports(group, [port]))


@dataclass(frozen=True)
class Port:
    name: str
    mac: str
    ip: str
    chassis: str | None = None  # requested-chassis


def create_ports(
    api: Any, network: str, ports: Sequence[Port], groups: Sequence[str], *, batch: int = 100
) -> None:
    """Ports as Neutron's create_port writes each (the port with its addresses, port
    security and options, and its membership in groups and the drop group, in one
    transaction; with no groups, port security off and no membership), batch ports per
    transaction."""
    for first in range(0, len(ports), batch):
        with api.transaction(check_error=True) as txn:
            for port in ports[first : first + batch]:
                columns: dict[str, Any] = {"addresses": [f"{port.mac} {port.ip}"]}
                if groups:
                    columns["port_security"] = [f"{port.mac} {port.ip}"]
                if port.chassis:
                    columns["options"] = {"requested-chassis": port.chassis}
                lsp = txn.add(api.lsp_add(network, port.name, may_exist=True, **columns))
                for group in [*groups, DROP_GROUP] if groups else []:
                    txn.add(api.pg_add_ports(group, lsp))


# ----- topologies -------------------------------------------------------------------------

NETWORK = "neutron-5c3b0bba-1d1b-4a5e-8a6f-2a39f0b1c001"
EGRESS_SG = "5d0c8f3e-7f52-4a59-9c1e-1b8f0d2a7c02"
DEFAULT_SG = "3b7b1ddf-2d4a-4b6b-9a37-d8a5b0a1c001"
VM1 = Port("vm1", "fa:16:3e:00:00:01", "10.0.0.1", "hv1")
PEER = Port("peer", "fa:16:3e:00:00:09", "10.0.0.9", "hv3")
EGRESS_ONLY = ((VM1, "hv1"), (PEER, "hv3"))


def egress_only(directory: Path) -> str:
    """vm1 (hv1) may open connections to anywhere (allow-related from-lport) and accepts
    nothing new (Neutron's drop group, nothing to-lport); peer (hv3) has port security off
    and no group. Both plugged, up, every chassis caught up. Returns vm1's group."""
    with nb_api(lab.client_env(directory)["OVN_NB_DB"]) as api:
        api.ls_add(NETWORK).execute(check_error=True)
        ensure_drop_group(api)
        group = group_name(EGRESS_SG)
        api.pg_add(group, may_exist=True).execute(check_error=True)
        add_rule(api, group, "egress", ethertype="IPv4")
        for port, groups in ((VM1, [group]), (PEER, [])):
            add_port(api, NETWORK, port.name, port.mac, port.ip, groups, chassis=port.chassis)
    for port, chassis in EGRESS_ONLY:
        vms.add(directory, port.name, chassis=chassis, port=port.name, mac=port.mac, ips=[port.ip])
    for port in (VM1, PEER):
        demo.nbctl(directory, "wait-until", "Logical_Switch_Port", port.name, "up=true")
    demo.nbctl(directory, "--wait=hv", "sync")
    return group


def numbered(i: int, chassis: str | None = None) -> Port:
    """Port b<i> (0 <= i < 2**24 - 1): a MAC fa:16:3e:... and an IPv4 address 10.x.y.z, both
    derived from i + 1 (so never 10.0.0.0)."""
    n = i + 1
    mac = f"fa:16:3e:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
    ip = f"10.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"
    return Port(f"b{i}", mac, ip, chassis)
