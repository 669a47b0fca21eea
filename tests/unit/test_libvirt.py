"""A device plan as libvirt domain XML (liveport.model.libvirt): it parses, holds exactly
the intended <driver>/<host>/<guest> attributes and <qemu:override> properties, and together
they are the plan's properties, no more and no fewer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from liveport.model.errors import InvalidInput
from liveport.model.frontend import KNOWN_QEMU, DevicePlan, QemuVersion, device_plan
from liveport.model.libvirt import LIBVIRT_ATTRIBUTES, QEMU_NAMESPACE, interface_xml
from liveport.vhostuser.catalogue import load_catalogue

CATALOGUE = load_catalogue(environ={}, config_dir=None)
Q = f"{{{QEMU_NAMESPACE}}}"


def plan(mode: str, qemu: str, **options: int) -> DevicePlan:
    return device_plan(CATALOGUE.get(mode), QemuVersion.parse(qemu), **options)


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "domain"
    return root


def overrides(root: ET.Element) -> dict[str, tuple[str, str]]:
    props = root.findall(f"{Q}override/{Q}device/{Q}frontend/{Q}property")
    return {p.attrib["name"]: (p.attrib["type"], p.attrib.get("value", "")) for p in props}


def test_a_vhost_user_port_with_queues_and_rings() -> None:
    root = parse(
        interface_xml(
            plan("upstream.ovs-dpdk.v2.17", "9.2", queue_pairs=4, ring_size=1024),
            socket="/run/openvswitch/vhu-vm1",
            mac="52:54:00:00:00:01",
        )
    )
    interface = root.find("devices/interface")
    assert interface is not None and interface.attrib == {"type": "vhostuser"}
    source = interface.find("source")
    assert source is not None and source.attrib == {
        "type": "unix",
        "path": "/run/openvswitch/vhu-vm1",
        "mode": "server",
    }
    driver = interface.find("driver")
    assert driver is not None and driver.attrib == {
        "queues": "4",
        "rx_queue_size": "1024",
        "tx_queue_size": "1024",
    }
    host, guest = driver.find("host"), driver.find("guest")
    assert host is not None and host.attrib == {
        "csum": "off",
        "tso4": "off",
        "tso6": "off",
        "ufo": "off",
    }
    assert guest is None  # the mode has every guest offload QEMU offers
    alias = interface.find("alias")
    assert alias is not None and alias.attrib == {"name": "ua-net0"}
    device = root.find(f"{Q}override/{Q}device")
    assert device is not None and device.attrib == {"alias": "ua-net0"}
    assert overrides(root) == {
        "guest_uso4": ("bool", "false"),
        "guest_uso6": ("bool", "false"),
        "host_uso": ("bool", "false"),
        "notify_on_empty": ("bool", "false"),
        "queue_reset": ("bool", "false"),
    }


def test_the_9_2_to_8_2_workaround_as_libvirt_xml() -> None:
    root = parse(interface_xml(plan("qemu-7.2.vhost-net", "9.2"), iface_id="vm1", bridge="br-int"))
    interface = root.find("devices/interface")
    assert interface is not None and interface.attrib == {"type": "bridge"}
    virtualport = interface.find("virtualport")
    assert virtualport is not None and virtualport.attrib == {"type": "openvswitch"}
    parameters = virtualport.find("parameters")
    assert parameters is not None and parameters.attrib == {"interfaceid": "vm1"}
    driver = interface.find("driver")
    assert driver is not None and driver.attrib == {"name": "vhost"} and list(driver) == []
    assert overrides(root) == {
        "guest_uso4": ("bool", "false"),
        "guest_uso6": ("bool", "false"),
        "host_uso": ("bool", "false"),
        "queue_reset": ("bool", "false"),
    }


def test_an_old_mode_switches_off_guest_offloads_and_ring_features() -> None:
    root = parse(interface_xml(plan("upstream.ovs-dpdk.v2.6", "8.1")))
    driver = root.find("devices/interface/driver")
    assert driver is not None and driver.attrib == {"event_idx": "off"}
    host, guest = driver.find("host"), driver.find("guest")
    assert host is not None and host.attrib == dict.fromkeys(
        ("csum", "gso", "tso4", "tso6", "ecn", "ufo"), "off"
    )
    assert guest is not None and guest.attrib == {"ecn": "off", "ufo": "off"}
    assert set(overrides(root)) == {"indirect_desc", "notify_on_empty", "any_layout", "queue_reset"}


def test_nothing_to_override_means_no_override_element() -> None:
    root = parse(interface_xml(plan("qemu-8.2.vhost-net.linux-6.3", "9.2")))
    assert root.find(f"{Q}override") is None


# Property back from the XML: libvirt attributes mapped back, plus overrides.
REVERSE = {where: name for name, where in LIBVIRT_ATTRIBUTES.items()}


def properties_in(root: ET.Element) -> dict[str, str]:
    found: dict[str, str] = {}
    driver = root.find("devices/interface/driver")
    if driver is not None:
        for attr, value in driver.attrib.items():
            if attr == "queues":
                found["mq"] = "on"
                found["vectors"] = str(2 * int(value) + 2)
            elif attr != "name":
                found[REVERSE["driver", attr]] = value
        for element in driver:
            for attr, value in element.attrib.items():
                found[REVERSE[element.tag, attr]] = value
    for name, (kind, value) in overrides(root).items():
        assert kind == "bool"
        found[name] = "on" if value == "true" else "off"
    return found


@pytest.mark.parametrize("qemu", [str(v) for v in KNOWN_QEMU])
@pytest.mark.parametrize("mode", CATALOGUE.names())
def test_the_xml_holds_exactly_the_plans_properties(mode: str, qemu: str) -> None:
    options = {"queue_pairs": 2} if CATALOGUE.get(mode).features >> 22 & 1 else {}
    the_plan = plan(mode, qemu, **options)
    root = parse(interface_xml(the_plan))
    assert properties_in(root) == {p.name: p.value for p in the_plan.properties}


def test_attribute_values_are_escaped() -> None:
    root = parse(interface_xml(plan("upstream.ovs-dpdk.v3.2", "9.2"), socket="/tmp/a'b&<c>"))
    source = root.find("devices/interface/source")
    assert source is not None and source.attrib["path"] == "/tmp/a'b&<c>"


@pytest.mark.parametrize("alias", ["net0", "ua-", "ua-a b"])
def test_the_alias_must_be_a_user_alias(alias: str) -> None:
    with pytest.raises(InvalidInput, match="a libvirt alias chosen by the user looks like ua-net0"):
        interface_xml(plan("upstream.ovs-dpdk.v3.2", "9.2"), alias=alias)
