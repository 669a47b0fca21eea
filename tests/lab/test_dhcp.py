"""Native DHCPv4 end to end: the owner's agent answers a VM's DISCOVER and REQUEST with the
options the NB configured; after a migration the destination answers a renewal and the
source never does."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from liveport.lab import hypervisor, lab, pcap, vms
from liveport.lab.state import load
from liveport.model.addr import Mac
from liveport.model.dhcp import DhcpMessage, MessageType, dhcp_discover, dhcp_request, parse_message

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl

pytestmark = pytest.mark.lab

MAC, IP = "fa:16:3e:00:00:07", "10.0.0.7"
SERVER = ipaddress.IPv4Address("10.0.0.1")


def replies(d: Path, chassis: str | None = None) -> list[DhcpMessage]:
    """DHCP messages delivered to vm1 (on chassis, or anywhere)."""
    out = []
    for _, path in vms.capture_files(load(d), "vm1", chassis):
        for record in pcap.read(path):
            message = parse_message(record.frame)
            if message is not None:
                out.append(message)
    return out


def send(d: Path, frame: bytes, chassis: str | None = None) -> None:
    with vms.Injector(d, "vm1", chassis) as inject:
        inject.send(frame)


def wait_reply(d: Path, xid: int, kind: MessageType, chassis: str | None = None) -> DhcpMessage:
    found: list[DhcpMessage] = []

    def seen(_: object) -> bool:
        found[:] = [m for m in replies(d, chassis) if m.xid == xid and m.message_type == kind]
        return bool(found)

    vms.wait_capture(d, "vm1", seen, chassis=chassis, what=f"a DHCP {kind.name} for {xid:#x}")
    return found[0]


def test_the_owner_answers_and_after_a_migration_only_the_destination(
    lab_factory: LabFactory,
) -> None:
    d = lab_factory(chassis=3)
    nbctl(
        d,
        "ls-add",
        "ls0",
        "--",
        "lsp-add",
        "ls0",
        "vm1",
        "--",
        "lsp-set-addresses",
        "vm1",
        f"{MAC} {IP}",
        "--",
        "lsp-set-options",
        "vm1",
        "requested-chassis=hv1",
    )
    options = nbctl(d, "dhcp-options-create", "10.0.0.0/24")
    uuid = options or nbctl(
        d, "--bare", "--columns=_uuid", "find", "DHCP_Options", 'cidr="10.0.0.0/24"'
    )
    nbctl(
        d,
        "dhcp-options-set-options",
        uuid,
        "lease_time=3600",
        "router=10.0.0.1",
        "server_id=10.0.0.1",
        "server_mac=fa:16:3e:ff:ff:01",
        "mtu=1442",
        "dns_server={8.8.8.8,9.9.9.9}",
        'domain_name="lab.example"',
    )
    nbctl(d, "lsp-set-dhcpv4-options", "vm1", uuid)
    vms.add(d, "vm1", chassis="hv1", port="vm1", mac=MAC, ips=[IP])
    nbctl(d, "wait-until", "Logical_Switch_Port", "vm1", "up=true")
    nbctl(d, "--wait=hv", "sync")
    mac = Mac.parse(MAC)
    send(d, dhcp_discover(mac, 0x1001))
    offer = wait_reply(d, 0x1001, MessageType.OFFER)
    assert offer.yiaddr == ipaddress.IPv4Address(IP)
    assert offer.ipv4_option(3) == SERVER  # router
    assert offer.ipv4_option(54) == SERVER  # server identifier
    assert offer.options[26] == (1442).to_bytes(2, "big")
    assert offer.options[15] == b"lab.example"
    send(d, dhcp_request(mac, 0x1002, requested_ip=ipaddress.IPv4Address(IP), server_id=SERVER))
    assert wait_reply(d, 0x1002, MessageType.ACK).yiaddr == ipaddress.IPv4Address(IP)

    # vm1 moves to hv2; then it renews its lease (unicast to the server, from its address).
    with lab.cms(d) as cms:
        cms.start("vm1", "hv2", form="ovn")
        hypervisor.migrate(d, "vm1", "hv2", announce="rarp", pause_ms=20, remove_source=False)
        cms.wait_owner("vm1", "hv2", timeout=10)
        nbctl(d, "--wait=hv", "sync")
        renew = dhcp_request(
            mac,
            0x1003,
            ciaddr=ipaddress.IPv4Address(IP),
            dst_ip=SERVER,
            dst_mac=Mac.parse("fa:16:3e:ff:ff:01"),
        )
        # The same renewal from both VIFs (S still has one until the hypervisor removes it):
        # only the destination answers.
        send(d, renew, chassis="hv1")
        send(d, renew, chassis="hv2")
        ack = wait_reply(d, 0x1003, MessageType.ACK, chassis="hv2")
        assert ack.yiaddr == ipaddress.IPv4Address(IP)
        hypervisor.finish(d, "vm1")
        cms.complete("vm1")
    assert [m for m in replies(d, "hv1") if m.xid == 0x1003] == []
