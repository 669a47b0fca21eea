"""The host's Open_vSwitch database as the libvirt hook and watcher see it: which Interface
stands for a domain's VIF, and the operations that plug, unplug and mark it.

The planners are pure (a snapshot in, OVSDB operations out); HostSwitch runs them with
liveport's OVSDB client, one short connection per use (the hook is a short-lived process;
the watcher writes a few times per migration).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveport.model.binding import MigrationStatus
from liveport.model.domain import DomainVif
from liveport.model.errors import NotFound
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Insert, Mutate, Op, Ref, Row, Snapshot
from liveport.ovsdb.schema import VSWITCH_NAME

log = logging.getLogger("liveport.virt")

STATUS_KEY = "migration-status"
PLUGGED_KEY = "liveport-plugged-by"  # marks the Interfaces the hook plugged (and may unplug)
PLUGGED_BY = "libvirt-hook"
TABLES: dict[str, list[str] | None] = {
    "Open_vSwitch": ["external_ids", "bridges"],
    "Bridge": ["name", "ports"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "external_ids", "options"],
}
# OVS-DPDK's vhost-user port types, which take the socket in options:vhost-server-path.
DPDK_TYPES = ("dpdkvhostuser", "dpdkvhostuserclient")


@dataclass(frozen=True)
class Found:
    vif: DomainVif
    iface: Row
    port: Row | None


def _serves(iface: Row, socket: str) -> bool:
    """The Interface's back-end serves this vhost-user socket (OVS-DPDK's or liveport's)."""
    options: dict[str, str] = iface["options"]
    ids: dict[str, str] = iface["external_ids"]
    return socket in (options.get("vhost-server-path"), ids.get("liveport-vhost-socket"))


def find(snap: Snapshot, vif: DomainVif) -> Found | None:
    """The Interface that stands for vif: by name (vhost-user, `<target dev>`), by the
    vhost-user socket its back-end serves, or by iface-id (a tap libvirt plugged itself,
    whose name is chosen at start; a VIF liveport's metadata names)."""
    rows: list[Row] = []
    if vif.dev:
        rows = snap.find("Interface", name=vif.dev)
    if not rows and vif.socket:
        socket = vif.socket
        rows = [r for r in snap.rows("Interface") if _serves(r, socket)]
    if not rows and vif.iface_id:
        iface_id = vif.iface_id
        rows = [r for r in snap.rows("Interface") if r["external_ids"].get("iface-id") == iface_id]
    if not rows:
        return None
    iface = rows[0]
    port = next((p for p in snap.rows("Port") if iface.uuid in p["interfaces"]), None)
    return Found(vif, iface, port)


def status_ops(
    snap: Snapshot, vifs: Iterable[DomainVif], status: MigrationStatus | None
) -> list[Op]:
    """Set (or, with None, clear) migration-status on the Interfaces of vifs that exist."""
    ops: list[Op] = []
    for vif in vifs:
        found = find(snap, vif)
        if found is None:
            continue
        current = found.iface["external_ids"].get(STATUS_KEY)
        if status is None and current is not None:
            ops.append(Mutate("Interface", found.iface.uuid, "external_ids", "delkey", STATUS_KEY))
        elif status is not None and current != status:
            ops.append(
                Mutate(
                    "Interface",
                    found.iface.uuid,
                    "external_ids",
                    "setkey",
                    STATUS_KEY,
                    status.value,
                )
            )
    return ops


def plug_ops(
    snap: Snapshot,
    vifs: Iterable[DomainVif],
    *,
    bridge: str,
    iface_type: str,
    vm_uuid: str | None,
    status: MigrationStatus | None = None,
) -> list[Op]:
    """Plug each pluggable vhost-user VIF that is not there yet into bridge, as os-vif would
    (iface-id, attached-mac, vm-uuid, iface-status=active), with status if given. A VIF
    already there (plugged by the cloud, or by an earlier call) only gets the status.

    The socket goes where the back-end reads it: options:vhost-server-path for OVS-DPDK's
    types, external_ids:liveport-vhost-socket for liveport's own back-end (any other type;
    `dummy` in the lab), with liveport-vhost-client=true when QEMU is the socket's server.
    """
    vifs = list(vifs)
    ops = status_ops(snap, vifs, status) if status is not None else []
    br = snap.one("Bridge", name=bridge)
    for n, vif in enumerate(vifs):
        if not vif.pluggable or find(snap, vif) is not None:
            continue
        if br is None:
            raise NotFound(f"bridge {bridge} does not exist in this host's Open_vSwitch database")
        assert vif.dev is not None and vif.iface_id is not None and vif.socket is not None
        ids = {"iface-id": vif.iface_id, "iface-status": "active", PLUGGED_KEY: PLUGGED_BY}
        if vif.mac:
            ids["attached-mac"] = vif.mac
        if vm_uuid:
            ids["vm-uuid"] = vm_uuid
        ids.update(vif.external_ids)
        options: dict[str, str] = {}
        if iface_type in DPDK_TYPES:
            options["vhost-server-path"] = vif.socket
        else:
            ids["liveport-vhost-socket"] = vif.socket
            if vif.qemu_server:
                ids["liveport-vhost-client"] = "true"
        if status is not None:
            ids[STATUS_KEY] = status.value
        iface, port = Ref(f"i{n}"), Ref(f"p{n}")
        values = {"name": vif.dev, "type": iface_type, "external_ids": ids, "options": options}
        ops.append(Insert("Interface", values, name=iface.name))
        ops.append(Insert("Port", {"name": vif.dev, "interfaces": [iface]}, name=port.name))
        ops.append(Mutate("Bridge", br.uuid, "ports", "add", port))
    return ops


def unplug_ops(snap: Snapshot, vifs: Iterable[DomainVif]) -> list[Op]:
    """Unplug the VIFs the hook plugged (OVS collects the Port and Interface); clear the
    migration status of those someone else plugged (os-vif unplugs them)."""
    ops: list[Op] = []
    for vif in vifs:
        found = find(snap, vif)
        if found is None:
            continue
        if found.iface["external_ids"].get(PLUGGED_KEY) == PLUGGED_BY and found.port is not None:
            for br in snap.rows("Bridge"):
                if found.port.uuid in br["ports"]:
                    ops.append(Mutate("Bridge", br.uuid, "ports", "remove", found.port.uuid))
        else:
            ops += status_ops(snap, [vif], None)
    return ops


class HostSwitch:
    """This host's Open_vSwitch database, for a few writes."""

    def __init__(self, remote: str, *, timeout: float = 10.0) -> None:
        self.remote = remote
        self.timeout = timeout
        self._client: OvsdbClient | None = None

    def __enter__(self) -> HostSwitch:
        self._client = OvsdbClient(self.remote, VSWITCH_NAME, TABLES, name="host-ovs")
        try:
            self._client.wait_connected(self.timeout)
        except BaseException:
            self._client.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> OvsdbClient:
        assert self._client is not None, "HostSwitch used outside its with-block"
        return self._client

    def bridge(self, default: str = "br-int") -> str:
        """The integration bridge: Open_vSwitch external_ids:liveport-bridge, as the agent."""
        root = next(self.client.snapshot().rows("Open_vSwitch"), None)
        return (
            root["external_ids"].get("liveport-bridge") if root is not None else None
        ) or default

    def apply(self, ops: Sequence[Op], what: str) -> bool:
        """Runs ops in one transaction; False when there was nothing to do."""
        if not ops:
            return False
        self.client.transact(ops, comment=f"liveport libvirt: {what}", timeout=self.timeout)
        log.info("libvirt: %s", what)
        return True

    def snapshot(self) -> Snapshot:
        return self.client.snapshot()
