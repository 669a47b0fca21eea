"""The lab's physical network: external hosts on the top-of-rack switch, its learned MAC
table, and captures of its trunk ports towards the chassis.

An external host is an access port of the ToR (`tag=VLAN`, or untagged) whose dummy netdev
records what the host receives and sends in pcap files, like a VM's VIF; `lab send`,
`lab traffic` and `lab capture` take a host wherever they take a VM (see vms.py).

Concurrency model: every change to hosts happens under the lab's lock (state.editing) and
is one ovs-vsctl transaction on the ToR, made before lab.json records it, so a refused or
failed `add` leaves nothing behind. Reading the MAC table and captures takes no lock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveport.lab import pcap, sim
from liveport.lab.lab import Layout
from liveport.lab.state import HostEntry, LabState, editing, load
from liveport.lab.vms import Captured, check_name
from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.errors import Conflict, InvalidInput, NotFound

VLAN_RANGE = (1, 4094)  # 0 and 4095 are reserved by 802.1Q
DEFAULT_PREFIX = {4: 24, 6: 64}  # an address given without /plen


def require_tor(state: LabState) -> None:
    if not state.has_tor:
        raise NotFound(
            f"the lab in {state.directory} has no top-of-rack switch (it was made by an "
            "older liveport): recreate it with 'liveport lab down' and 'lab up'"
        )


def parse_address(text: str) -> str:
    """IP[/plen] -> 'IP/plen' (plen defaults to 24 for IPv4, 64 for IPv6)."""
    try:
        if "/" in text:
            iface = ipaddress.ip_interface(text)
        else:
            ip = ipaddress.ip_address(text)
            iface = ipaddress.ip_interface(f"{ip}/{DEFAULT_PREFIX[ip.version]}")
    except ValueError:
        raise InvalidInput(f"malformed IP address {text!r} (IP or IP/PREFIXLEN)") from None
    return str(iface)


def check_vlan(vlan: int | None) -> int | None:
    low, high = VLAN_RANGE
    if vlan is not None and not low <= vlan <= high:
        raise InvalidInput(f"--vlan must be between {low} and {high}, not {vlan}")
    return vlan


def add(
    directory: Path,
    name: str,
    *,
    mac: str,
    addresses: list[str] | tuple[str, ...] = (),
    vlan: int | None = None,
) -> HostEntry:
    """Plugs an external host into an access port of the ToR (VLAN vlan, or untagged)."""
    check_name(name, "host")
    parsed = Mac.parse(mac)
    if (problem := parsed.unicast_problem()) is not None:
        raise InvalidInput(f"--mac {mac}: {problem}")
    texts = [parse_address(text) for text in addresses]
    check_vlan(vlan)
    with editing(directory) as state:
        require_tor(state)
        if name in state.hosts:
            raise Conflict(f"host {name!r} already exists")
        if name in state.vms:
            raise Conflict(f"{name!r} is already a VM (VMs and hosts share their names)")
        if name in {c.name for c in state.chassis} or name == sim.TOR_BRIDGE:
            raise Conflict(f"{name!r} names a port of the top-of-rack switch already")
        tor = Layout(directory).tor
        counter = int(state.options.get("host_counter", 0)) + 1
        state.options["host_counter"] = counter
        tx = tor.directory / "pcap" / f"{name}.{counter}.tx.pcap"
        rx = tor.directory / "pcap" / f"{name}.{counter}.rx.pcap"
        tor.vsctl(
            "add-port",
            sim.TOR_BRIDGE,
            name,
            *([f"tag={vlan}"] if vlan is not None else []),
            "--",
            "set",
            "Interface",
            name,
            "type=dummy",
            f"external_ids:attached-mac={parsed}",
            f"external_ids:lab-host={name}",
            f"options:tx_pcap={tx}",
            f"options:rxq_pcap={rx}",
        )
        host = HostEntry(
            name=name,
            mac=str(parsed),
            addresses=texts,
            vlan=vlan,
            ifname=name,
            tx_pcap=str(tx),
            rx_pcap=str(rx),
        )
        state.hosts[name] = host
        return host


def delete(directory: Path, name: str) -> HostEntry:
    """Unplugs a host from the ToR and forgets it."""
    with editing(directory) as state:
        host = state.get_host(name)
        Layout(directory).tor.vsctl("--if-exists", "del-port", sim.TOR_BRIDGE, host.ifname)
        del state.hosts[name]
    return host


def list_hosts(directory: Path) -> list[HostEntry]:
    return list(load(directory).hosts.values())


# ----- the MAC table --------------------------------------------------------------------


@dataclass(frozen=True)
class FdbEntry:
    """One learned MAC of the ToR: on which VLAN, behind which port, how long ago."""

    mac: str
    vlan: int
    port: str  # a chassis name, a host name, or the ToR's own port (LOCAL)
    peer: str  # chassis | host | local | unknown
    age: int | None  # seconds since last seen; None for a static entry

    def to_json(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "vlan": self.vlan,
            "port": self.port,
            "peer": self.peer,
            "age": self.age,
        }


def port_names(tor: sim.SimHost) -> dict[str, str]:
    """OpenFlow port number -> interface name on the ToR."""
    out = tor.vsctl("--format=csv", "--no-headings", "--columns=ofport,name", "list", "Interface")
    names = {}
    for line in out.splitlines():
        number, _, name = line.partition(",")
        names[number.strip()] = name.strip().strip('"')
    return names


def parse_fdb(text: str) -> list[tuple[str, int, str, int | None]]:
    """`ovs-appctl fdb/show BRIDGE` -> (port, VLAN, MAC, age) rows."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) != 4:
            continue
        port, vlan, mac, age = fields
        rows.append((port, int(vlan), mac, int(age) if age.isdigit() else None))
    return rows


def fdb(directory: Path) -> list[FdbEntry]:
    """The ToR's learned MAC table, ports named by the chassis or host behind them."""
    state = load(directory)
    require_tor(state)
    tor = Layout(directory).tor
    rows = parse_fdb(tor.appctl("fdb/show", sim.TOR_BRIDGE))
    names = port_names(tor)
    chassis = {c.name for c in state.chassis}
    out = []
    for port, vlan, mac, age in rows:
        name = names.get(port, port)
        if port == "LOCAL" or name == sim.TOR_BRIDGE:
            peer, name = "local", sim.TOR_BRIDGE
        elif name in chassis:
            peer = "chassis"
        elif name in state.hosts:
            peer = "host"
        else:
            peer = "unknown"
        out.append(FdbEntry(mac=mac, vlan=vlan, port=name, peer=peer, age=age))
    return sorted(out, key=lambda e: (e.vlan, e.mac))


def flush_fdb(directory: Path) -> None:
    """Forgets every learned MAC (as a switch reboot would)."""
    require_tor(load(directory))
    Layout(directory).tor.appctl("fdb/flush", sim.TOR_BRIDGE)


# ----- the wire towards a chassis ----------------------------------------------------------


def tor_port_capture(directory: Path, chassis: str, *, received: bool = True) -> list[Captured]:
    """Frames on the ToR's trunk port towards chassis, 802.1Q tags included: those the
    chassis received from the ToR (received=True) or sent to it."""
    state = load(directory)
    require_tor(state)
    state.get_chassis(chassis)
    tx, rx = sim.tor_port_pcaps(Layout(directory).tor, chassis)
    out = []
    for record in pcap.read(tx if received else rx):
        try:
            info = packets.decode(record.frame)
        except InvalidInput:
            continue
        out.append(Captured(ts=record.ts, chassis=chassis, info=info))
    return out
