"""A libvirt domain's VIFs, read from its XML, and what the hypervisor side does about them.

libvirt hands its qemu hook the domain XML on stdin, and its event API names the domain;
from the XML this module finds, for each network interface, the Open_vSwitch Interface that
stands for it on this host and the iface-id the cloud gave it:

- `<interface type='bridge'>` (or `network`) with `<virtualport type='openvswitch'>`:
  libvirt plugs the tap into OVS itself, with `external_ids:iface-id` from
  `<parameters interfaceid='…'/>`; the Interface is found by that iface-id (its name, the
  tap's, is chosen when the domain starts).
- `<interface type='vhostuser'>`: libvirt 9.0 refuses `<virtualport>` on it ("<virtualport>
  element unsupported for <interface type='vhostuser'>"), so the Interface is plugged by
  the cloud (os-vif, under Nova, before the domain starts and in pre_live_migration) and
  named by `<target dev='…'/>`, or found by its socket (libvirt shows a running domain's
  vhost-user interface with `<target dev=''/>`). Its iface-id is not in libvirt's own
  elements; when the domain's metadata carries liveport's element (below), this host's
  hook can plug it itself, as os-vif would.

liveport's metadata element (namespace METADATA_NS) names a vhost-user VIF's iface-id and
the external_ids to plug it with; it travels with the domain when libvirt migrates it:

    <metadata>
      <liveport:vifs xmlns:liveport="urn:liveport:libvirt:1">
        <liveport:vif dev="vhu-vm1" mac="52:54:00:12:34:56" iface-id="PORT"
                      vhost-compat="MODE"/>
      </liveport:vifs>
    </metadata>

Pure: text in, values out. The XML comes from libvirtd (trusted, as the hook itself is).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import StrEnum

from liveport.model.errors import InvalidInput

METADATA_NS = "urn:liveport:libvirt:1"
_VIF_KEYS = ("vhost-compat",)  # metadata attributes copied into the Interface's external_ids


@dataclass(frozen=True)
class DomainVif:
    """One of a domain's interfaces, as the hypervisor side needs it."""

    kind: str  # the <interface type='…'>: vhostuser, bridge, network, ...
    mac: str | None
    dev: str | None  # <target dev='…'>: the OVS Interface's name for vhost-user
    iface_id: str | None  # from <virtualport> or liveport's metadata
    socket: str | None = None  # vhost-user: the unix socket's path
    qemu_server: bool = False  # vhost-user: QEMU listens (mode='server'), the back-end connects
    external_ids: tuple[tuple[str, str], ...] = ()  # more keys for the plug (metadata)
    libvirt_plugs: bool = False  # <virtualport type='openvswitch'>: libvirt plugs the tap

    @property
    def pluggable(self) -> bool:
        """This host's hook may plug it: a vhost-user VIF whose iface-id and name are known."""
        return self.kind == "vhostuser" and bool(self.iface_id and self.dev and self.socket)


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str | None
    vifs: tuple[DomainVif, ...] = field(default_factory=tuple)


def parse_domain(xml: str) -> Domain:
    """The domain's name, UUID and interfaces; InvalidInput if xml is not a domain."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - see the module docstring
    except ET.ParseError as exc:
        raise InvalidInput(f"not a libvirt domain XML: {exc}") from None
    if root.tag != "domain":
        raise InvalidInput(f"not a libvirt domain XML: the root element is <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InvalidInput("not a libvirt domain XML: no <name>")
    uuid = (root.findtext("uuid") or "").strip() or None
    meta = _metadata(root)
    interfaces = root.findall("./devices/interface")
    alone = [i.get("type") for i in interfaces].count("vhostuser") == 1
    vifs = tuple(_vif(iface, meta, alone) for iface in interfaces)
    return Domain(name, uuid, vifs)


def _metadata(root: ET.Element) -> list[dict[str, str]]:
    """liveport's metadata: one dict of attributes per VIF."""
    path = f"./metadata/{{{METADATA_NS}}}vifs/{{{METADATA_NS}}}vif"
    return [dict(vif.attrib) for vif in root.findall(path)]


def _meta_for(
    meta: list[dict[str, str]], dev: str | None, mac: str | None, alone: bool
) -> dict[str, str]:
    """The metadata entry of an interface: by device name; by MAC (libvirt shows a running
    vhost-user interface with an empty `<target dev=''/>`); the only entry for the only
    vhost-user interface."""
    for entry in meta:
        if dev and entry.get("dev") == dev:
            return entry
    for entry in meta:
        if mac and entry.get("mac", "").lower() == mac.lower():
            return entry
    return meta[0] if alone and len(meta) == 1 else {}


def _vif(iface: ET.Element, meta: list[dict[str, str]], alone: bool) -> DomainVif:
    kind = iface.get("type", "")
    mac_el = iface.find("mac")
    mac = mac_el.get("address") if mac_el is not None else None
    target = iface.find("target")
    dev = (target.get("dev") if target is not None else None) or None
    iface_id = None
    libvirt_plugs = False
    vport = iface.find("virtualport")
    if vport is not None and vport.get("type") == "openvswitch":
        params = vport.find("parameters")
        iface_id = params.get("interfaceid") if params is not None else None
        libvirt_plugs = True
    socket = None
    qemu_server = False
    source = iface.find("source")
    if kind == "vhostuser" and source is not None:
        socket = source.get("path")
        qemu_server = source.get("mode") == "server"
    extra: tuple[tuple[str, str], ...] = ()
    entry = _meta_for(meta, dev, mac, alone) if kind == "vhostuser" else {}
    if entry:
        dev = dev or entry.get("dev") or None
        iface_id = iface_id or entry.get("iface-id")
        extra = tuple((k, entry[k]) for k in _VIF_KEYS if entry.get(k))
    return DomainVif(kind, mac, dev, iface_id, socket, qemu_server, extra, libvirt_plugs)


# ----- what the hook does -------------------------------------------------------------------


class HookAction(StrEnum):
    """What the qemu hook does for one call (libvirt's operation and sub-operation)."""

    PLUG = "plug"  # the domain starts here: plug its VIFs (if this host's hook plugs them)
    INCOMING = "incoming"  # it migrates here: plug, and mark its VIFs migration-status=incoming
    UNPLUG = "unplug"  # its QEMU is gone from this host (stopped, migrated away, aborted here)
    NOTHING = "nothing"


# libvirt calls the hook (measured with libvirt 9.0): on start `prepare begin`, `start begin`,
# `started begin`; on the destination of a migration `migrate begin` first, then the same
# three; on the source, nothing until `stopped end` and `release end` after the move; on a
# daemon restart `reconnect begin` per running domain.
_HOOK_ACTIONS = {
    ("migrate", "begin"): HookAction.INCOMING,
    ("prepare", "begin"): HookAction.PLUG,
    ("reconnect", "begin"): HookAction.PLUG,
    ("release", "end"): HookAction.UNPLUG,
}


def hook_action(operation: str, sub_operation: str) -> HookAction:
    return _HOOK_ACTIONS.get((operation, sub_operation), HookAction.NOTHING)


# ----- what the watcher does ----------------------------------------------------------------


class WatchAction(StrEnum):
    """What the event watcher does for one libvirt event of a domain."""

    OUTGOING = "outgoing"  # an outgoing migration runs: mark its VIFs here outgoing
    ARRIVED = "arrived"  # the guest resumed here after an incoming migration: clear incoming
    LEFT = "left"  # its QEMU stopped here because it migrated away (the hook unplugs)
    NOTHING = "nothing"


# libvirt's lifecycle event and detail numbers (virDomainEventType and its details; stable ABI).
EVENT_STARTED, EVENT_SUSPENDED, EVENT_RESUMED, EVENT_STOPPED = 2, 3, 4, 5
SUSPENDED_MIGRATED = 1  # VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: paused for the switch-over
RESUMED_MIGRATED = 1  # VIR_DOMAIN_EVENT_RESUMED_MIGRATED: resumed on the destination
STOPPED_MIGRATED = 3  # VIR_DOMAIN_EVENT_STOPPED_MIGRATED: the source QEMU after the move


def lifecycle_action(event: int, detail: int) -> WatchAction:
    if event == EVENT_SUSPENDED and detail == SUSPENDED_MIGRATED:
        return WatchAction.OUTGOING  # late, but certain: the source pauses for the switch-over
    if event == EVENT_RESUMED and detail == RESUMED_MIGRATED:
        return WatchAction.ARRIVED
    if event == EVENT_STOPPED and detail == STOPPED_MIGRATED:
        return WatchAction.LEFT
    return WatchAction.NOTHING
