"""The native DHCP server of a port, as the pipeline and the agent run it. Pure.

The chassis that owns a port (outside a migration, or the destination once the VM has
announced itself there) has, for a port with DHCP options, a flow in the DHCP table that
sends the port's DHCPv4 requests (UDP 68 -> 67, to 255.255.255.255 or to the server's
address) and DHCPv6 requests (UDP 546 -> 547) to its agent instead of the network. The
agent answers from the options northd copied into the port's binding (`answer`), straight
to the port's VIF. A pending destination has no such flow, so during a migration only the
owner answers, and the destination starts to the moment it owns the port; the source
stops at the same time.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from liveport.model.addr import Mac
from liveport.model.dhcp import parse_request, reply
from liveport.model.dhcp_config import (
    DhcpConfig,
    Dhcpv6Config,
    parse_dhcpv4_options,
    parse_dhcpv6_options,
    port_dhcp,
    port_dhcpv6,
)
from liveport.model.dhcpv6 import dhcpv6_reply, parse_dhcpv6_request
from liveport.model.logical import PortNetwork

MAGIC = b"LPD"
USERDATA = struct.Struct("!3sBBIH")  # magic, version, IP version, datapath key, port key
BROADCAST_V4 = ipaddress.IPv4Address("255.255.255.255")


def userdata(ip_version: int, dp_key: int, port_key: int) -> bytes:
    return USERDATA.pack(MAGIC, 1, ip_version, dp_key, port_key)


@dataclass(frozen=True)
class Asked:
    ip_version: int
    dp_key: int
    port_key: int


def parse_userdata(data: bytes) -> Asked | None:
    if len(data) < USERDATA.size:
        return None
    magic, version, ip_version, dp, key = USERDATA.unpack_from(data)
    if magic != MAGIC or version != 1 or ip_version not in (4, 6):
        return None
    return Asked(ip_version, dp, key)


def config_v4(options: Mapping[str, str]) -> DhcpConfig | None:
    """A binding's dhcpv4_options (its `cidr` among them) as a usable config."""
    values = dict(options)
    cidr = values.pop("cidr", None)
    values.pop("hostname", None)
    if cidr is None:
        return None
    return parse_dhcpv4_options(cidr, values)[0]


def config_v6(options: Mapping[str, str]) -> Dhcpv6Config | None:
    values = dict(options)
    cidr = values.pop("cidr", None)
    if cidr is None:
        return None
    return parse_dhcpv6_options(cidr, values)[0]


def server_v4(options: Mapping[str, str]) -> ipaddress.IPv4Address | None:
    """The server address DHCPv4 requests may be sent to (besides the broadcast)."""
    config = config_v4(options)
    return config.server_id if config is not None else None


def answer(
    port: str,
    network: PortNetwork,
    asked: Asked,
    v4: Mapping[str, str],
    v6: Mapping[str, str],
    frame: bytes,
) -> bytes | None:
    """The reply to a DHCP request the port sent (None: the request gets none: not a
    request, not from the port's MAC and address, for another server, ...)."""
    if asked.ip_version == 4:
        config = config_v4(v4)
        request = parse_request(frame)
        if config is None or request is None:
            return None
        hostname = dict(v4).get("hostname")
        offers, _ = port_dhcp(
            port, network.addresses, config, {"hostname": hostname} if hostname else None
        )
        offer = next((o for o in offers if o.mac == request.src_mac), None)
        if offer is None:
            return None
        return reply(request, offer.mac, offer.ip, offer.config)
    config6 = config_v6(v6)
    request6 = parse_dhcpv6_request(frame)
    if config6 is None or request6 is None:
        return None
    offers6, _ = port_dhcpv6(port, network.addresses, config6)
    offer6 = next((o for o in offers6 if o.mac == request6.src_mac), None)
    if offer6 is None:
        return None
    return dhcpv6_reply(request6, offer6.mac, offer6.config)


def macs(network: PortNetwork) -> tuple[Mac, ...]:
    return tuple(a.mac for a in network.addresses)
