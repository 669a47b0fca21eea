"""A device plan (model.frontend) as libvirt domain XML: an <interface> and a <qemu:override>.

libvirt has attributes for some virtio-net-pci properties and formats them itself; the
plan's other properties go through <qemu:override> (libvirt 8.2 and later), which adds or
replaces properties of the device whose alias it names. The mapping follows libvirt's
docs/formatdomain.rst ("Setting NIC driver-specific options") and how
src/qemu/qemu_command.c turns them into -device properties:

- <driver> attributes: queues (mq=on and vectors=2N+2), rx_queue_size, tx_queue_size,
  event_idx, packed, iommu (iommu_platform), rss, rss_hash_report (hash);
- <host> attributes: csum, gso, tso4, tso6, ecn, ufo (host_*), mrg_rxbuf;
- <guest> attributes: csum, tso4, tso6, ecn, ufo (guest_*);
- everything else (indirect_desc, notify_on_empty, any_layout, queue_reset, guest_announce,
  the USO and tunnel properties, ...) is a <qemu:property type='bool'>.

The result is a small domain document holding both pieces, to merge into the VM's XML;
it parses as XML and is built here as text, so the model needs no XML library.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from liveport.model.errors import InvalidInput
from liveport.model.frontend import DevicePlan, Property
from liveport.model.virtio import VHOST_USER

QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
OVERRIDE_SINCE = "8.2.0"  # libvirt release that introduced <qemu:override>

# property -> (element, attribute); element "driver", "host" or "guest".
LIBVIRT_ATTRIBUTES = {
    "rx_queue_size": ("driver", "rx_queue_size"),
    "tx_queue_size": ("driver", "tx_queue_size"),
    "event_idx": ("driver", "event_idx"),
    "packed": ("driver", "packed"),
    "iommu_platform": ("driver", "iommu"),
    "rss": ("driver", "rss"),
    "hash": ("driver", "rss_hash_report"),
    "csum": ("host", "csum"),
    "gso": ("host", "gso"),
    "host_tso4": ("host", "tso4"),
    "host_tso6": ("host", "tso6"),
    "host_ecn": ("host", "ecn"),
    "host_ufo": ("host", "ufo"),
    "mrg_rxbuf": ("host", "mrg_rxbuf"),
    "guest_csum": ("guest", "csum"),
    "guest_tso4": ("guest", "tso4"),
    "guest_tso6": ("guest", "tso6"),
    "guest_ecn": ("guest", "ecn"),
    "guest_ufo": ("guest", "ufo"),
}
_ALIAS_RE = re.compile(r"^ua-[A-Za-z0-9_-]+$")
# Set by libvirt from <driver queues='N'>.
QUEUE_PROPERTIES = frozenset(("mq", "vectors"))


@dataclass(frozen=True)
class Element:
    """An XML element: tag, attributes in order, children (no text content needed)."""

    tag: str
    attributes: tuple[tuple[str, str], ...] = ()
    children: tuple[Element, ...] = ()
    comment: str = ""

    def render(self, indent: int = 0) -> list[str]:
        pad = "  " * indent
        lines = [f"{pad}<!-- {self.comment} -->"] if self.comment else []
        attrs = "".join(f" {name}={_quote(value)}" for name, value in self.attributes)
        if not self.children:
            return [*lines, f"{pad}<{self.tag}{attrs}/>"]
        lines.append(f"{pad}<{self.tag}{attrs}>")
        for child in self.children:
            lines += child.render(indent + 1)
        return [*lines, f"{pad}</{self.tag}>"]


def _quote(value: str) -> str:
    escaped = (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )
    return f"'{escaped}'"


@dataclass(frozen=True)
class LibvirtDevice:
    """Where the plan's properties go in libvirt: <driver>, <host>, <guest> attributes and
    the properties only <qemu:override> can set."""

    driver: tuple[tuple[str, str], ...]
    host: tuple[tuple[str, str], ...]
    guest: tuple[tuple[str, str], ...]
    overrides: tuple[Property, ...]


def split(plan: DevicePlan) -> LibvirtDevice:
    """Sort the plan's properties into libvirt attributes and overrides."""
    places: dict[str, list[tuple[str, str]]] = {"driver": [], "host": [], "guest": []}
    if plan.backend != VHOST_USER:
        places["driver"].append(("name", "vhost"))
    if plan.queue_pairs > 1:
        places["driver"].append(("queues", str(plan.queue_pairs)))
    overrides = []
    for prop in plan.properties:
        if prop.name in QUEUE_PROPERTIES:
            continue
        where = LIBVIRT_ATTRIBUTES.get(prop.name)
        if where is None:
            overrides.append(prop)
        else:
            places[where[0]].append((where[1], prop.value))
    return LibvirtDevice(
        tuple(places["driver"]), tuple(places["host"]), tuple(places["guest"]), tuple(overrides)
    )


def interface_xml(
    plan: DevicePlan,
    *,
    alias: str = "ua-net0",
    socket: str | None = None,
    bridge: str = "br-int",
    iface_id: str | None = None,
    mac: str | None = None,
) -> str:
    """A domain document with the <interface> for the plan and its <qemu:override>.

    A vhost-user plan gets <interface type='vhostuser'> on the unix socket (QEMU as the
    socket's server, as OVS-DPDK's dpdkvhostuserclient ports expect); a vhost-net plan
    gets <interface type='bridge'> on an Open vSwitch bridge, with iface_id as the port's
    external_ids:iface-id. The alias must start with "ua-", libvirt's prefix for aliases
    chosen by the user.
    """
    if not _ALIAS_RE.match(alias):
        raise InvalidInput(f"a libvirt alias chosen by the user looks like ua-net0, not {alias!r}")
    device = split(plan)
    interface = _interface(plan, device, alias, socket, bridge, iface_id, mac)
    children = [Element("devices", children=(interface,))]
    if device.overrides:
        children.append(_override(device.overrides, alias))
    domain = Element("domain", (("type", "kvm"), ("xmlns:qemu", QEMU_NAMESPACE)), tuple(children))
    return "\n".join(domain.render()) + "\n"


def _interface(
    plan: DevicePlan,
    device: LibvirtDevice,
    alias: str,
    socket: str | None,
    bridge: str,
    iface_id: str | None,
    mac: str | None,
) -> Element:
    children: list[Element] = []
    if mac:
        children.append(Element("mac", (("address", mac),)))
    if plan.backend == VHOST_USER:
        path = socket or f"/run/openvswitch/{iface_id or 'vhost-user0'}"
        kind = "vhostuser"
        children.append(Element("source", (("type", "unix"), ("path", path), ("mode", "server"))))
    else:
        kind = "bridge"
        children.append(Element("source", (("bridge", bridge),)))
        params = (Element("parameters", (("interfaceid", iface_id),)),) if iface_id else ()
        children.append(Element("virtualport", (("type", "openvswitch"),), params))
    children.append(Element("model", (("type", "virtio"),)))
    offloads = tuple(
        Element(tag, attrs)
        for tag, attrs in (("host", device.host), ("guest", device.guest))
        if attrs
    )
    if device.driver or offloads:
        children.append(Element("driver", device.driver, offloads))
    children.append(Element("alias", (("name", alias),)))
    comment = f"liveport mode {plan.mode} on QEMU {plan.qemu}"
    return Element("interface", (("type", kind),), tuple(children), comment)


def _override(props: Sequence[Property], alias: str) -> Element:
    properties = tuple(
        Element("qemu:property", (("name", p.name), *_typed(p.value))) for p in props
    )
    frontend = Element("qemu:frontend", children=properties)
    device = Element("qemu:device", (("alias", alias),), (frontend,))
    comment = f"needs libvirt {OVERRIDE_SINCE} or later"
    return Element("qemu:override", children=(device,), comment=comment)


def _typed(value: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """libvirt's property type for a QEMU property value."""
    if value in ("on", "off"):
        return ("type", "bool"), ("value", "true" if value == "on" else "false")
    if value.isdigit():
        return ("type", "unsigned"), ("value", value)
    return ("type", "string"), ("value", value)
