"""Simulated VMs: a dummy port on a chassis bridge stands for the VM's NIC (its VIF).

The VIF carries external_ids:iface-id (the logical port) and attached-mac like a libvirt
VIF, and records everything the switch delivers to it in a pcap file (options:tx_pcap).
Frames "sent by the VM" are injected with netdev-dummy/receive. A VM may have a VIF on two
chassis at once (during a migration); captures say which chassis each frame reached.

Sending and capturing also take an external host (hosts.py: an access port of the
top-of-rack switch) wherever they take a VM; its frames go through the ToR's vswitchd, and
its captures say "tor".

On a DPDK chassis (`lab up --dpdk`) a VIF can instead be a vhost-user port of OVS-DPDK
(`vhost_user=SOCKET`): type dpdkvhostuserclient, OVS connecting to the socket a real QEMU
listens on (OVS's recommended mode: QEMU restarts and migrates without OVS losing its
socket). It carries the iface-id like any VIF; it has no pcap files (a DPDK port has no
tx_pcap), so captures of such a VM are empty and its traffic is the guest's to report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from liveport.lab import pcap
from liveport.lab.lab import Layout, dpdk_chassis
from liveport.lab.state import HostEntry, LabState, VifEntry, VmEntry, editing, load
from liveport.model import packets
from liveport.model.addr import Mac, parse_ip
from liveport.model.errors import Conflict, InvalidInput, NotFound, Timeout
from liveport.model.tcp import parse_flags
from liveport.runtime.unixctl import UnixctlClient

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
SEND_KINDS = ("udp", "tcp", "arp", "garp", "rarp", "na", "raw")
TOR_CHASSIS = "tor"  # what captures of an external host name as where frames arrived

Endpoint = VmEntry | HostEntry


def check_name(name: str, what: str = "VM") -> str:
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid {what} name {name!r} (1-15 characters: letters, digits, '_', '-', '.', "
            "starting with a letter)"
        )
    return name


def add(
    directory: Path,
    name: str,
    *,
    chassis: str,
    port: str,
    mac: str,
    ips: Sequence[str] = (),
    bridge: str = "br-int",
    external_ids: dict[str, str] | None = None,
    vhost_mode: str | None = None,
    vhost_user: str | None = None,
) -> VmEntry:
    """Plugs a new VM's VIF into chassis; refuses duplicates and malformed addresses.
    vhost_mode asks the chassis for a vhost-user compatibility mode (external_ids
    vhost-compat); without it the chassis picks its newest. vhost_user makes the VIF an
    OVS-DPDK vhost-user port on that socket (QEMU its server; DPDK chassis only)."""
    check_name(name)
    if not port:
        raise InvalidInput("--port must name a logical switch port")
    mac_text = str(Mac.parse(mac))
    ip_texts = [str(parse_ip(ip)) for ip in ips]
    with editing(directory) as state:
        if name in state.vms:
            where = ", ".join(v.chassis for v in state.vms[name].vifs) or "no chassis"
            raise Conflict(f"VM {name!r} already exists (on {where})")
        if name in state.hosts:
            raise Conflict(f"{name!r} is already an external host (VMs and hosts share names)")
        state.get_chassis(chassis)
        vm = VmEntry(name=name, port=port, mac=mac_text, ips=ip_texts)
        ids = dict(external_ids or {})
        if vhost_mode:
            ids["vhost-compat"] = vhost_mode
        vm.vifs.append(
            plug_vif(state, vm, chassis, bridge=bridge, external_ids=ids, vhost_user=vhost_user)
        )
        state.vms[name] = vm
        return vm


def plug_vif(
    state: LabState,
    vm: VmEntry,
    chassis: str,
    *,
    bridge: str = "br-int",
    external_ids: dict[str, str] | None = None,
    vhost_user: str | None = None,
) -> VifEntry:
    """Adds vm's VIF on chassis in one ovs-vsctl transaction (all or nothing); with
    vhost_user, an OVS-DPDK vhost-user client port on that socket."""
    if vm.vif_on(chassis) is not None:
        raise Conflict(f"VM {vm.name!r} already has a VIF on {chassis}")
    if vhost_user is not None and chassis not in dpdk_chassis(state):
        raise InvalidInput(
            f"{chassis} does not run OVS-DPDK: a vhost-user VIF needs a chassis named by "
            "lab up --dpdk"
        )
    host = Layout(Path(state.directory)).chassis(chassis)
    counter = int(state.options.get("vif_counter", 0)) + 1
    state.options["vif_counter"] = counter
    capture_dir = host.directory / "pcap"
    capture_dir.mkdir(exist_ok=True)
    tx = capture_dir / f"{vm.name}.{counter}.tx.pcap"
    rx = capture_dir / f"{vm.name}.{counter}.rx.pcap"
    ids = {"iface-id": vm.port, "attached-mac": vm.mac, "vm-id": vm.name, **(external_ids or {})}
    if vhost_user is not None:
        kind = ["type=dpdkvhostuserclient", f"options:vhost-server-path={vhost_user}"]
    else:
        kind = ["type=dummy", f"options:tx_pcap={tx}", f"options:rxq_pcap={rx}"]
    host.vsctl(
        "add-port",
        bridge,
        vm.name,
        "--",
        "set",
        "Interface",
        vm.name,
        kind[0],
        *(f"external_ids:{key}={value}" for key, value in ids.items()),
        *kind[1:],
    )
    return VifEntry(
        chassis=chassis, ifname=vm.name, bridge=bridge, tx_pcap=str(tx), rx_pcap=str(rx)
    )


def unplug_vif(state: LabState, vm: VmEntry, chassis: str) -> None:
    vif = vm.vif_on(chassis)
    if vif is None:
        raise NotFound(f"VM {vm.name!r} has no VIF on {chassis}")
    host = Layout(Path(state.directory)).chassis(chassis)
    host.vsctl("--if-exists", "del-port", vif.bridge, vif.ifname)
    vm.vifs.remove(vif)
    vm.unplugged.append(vif)


def delete(directory: Path, name: str) -> VmEntry:
    with editing(directory) as state:
        vm = state.get_vm(name)
        for vif in list(vm.vifs):
            unplug_vif(state, vm, vif.chassis)
        del state.vms[name]
        return vm


def vif_external_id(directory: Path, name: str, chassis: str, key: str) -> str | None:
    """One external_ids key of vm's VIF on chassis (None if unset)."""
    state = load(directory)
    vif = state.get_vm(name).vif_on(chassis)
    if vif is None:
        raise NotFound(f"VM {name!r} has no VIF on {chassis}")
    host = Layout(directory).chassis(chassis)
    value = host.vsctl("--if-exists", "get", "Interface", vif.ifname, f"external_ids:{key}")
    return value.strip().strip('"') or None


def set_vif_external_id(
    directory: Path, name: str, chassis: str, key: str, value: str | None
) -> None:
    """Sets (or with None removes) one external_ids key on vm's VIF on chassis."""
    state = load(directory)
    vm = state.get_vm(name)
    vif = vm.vif_on(chassis)
    if vif is None:
        raise NotFound(f"VM {name!r} has no VIF on {chassis}")
    host = Layout(directory).chassis(chassis)
    if value is None:
        host.vsctl("remove", "Interface", vif.ifname, "external_ids", key)
    else:
        host.vsctl("set", "Interface", vif.ifname, f"external_ids:{key}={value}")


# ----- sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendSpec:
    kind: str
    to: str | None = None  # another VM or host: its MAC and first IPv4 are the destination
    dst_mac: str | None = None
    dst_ip: str | None = None
    src_mac: str | None = None  # overrides the VM's own MAC (to test port security)
    src_ip: str | None = None
    target_ip: str | None = None  # for arp / na
    seq: int = 0  # the lab sequence number in the payload (udp; tcp with payload_seq)
    raw: str | None = None
    vlan: int | None = None  # send 802.1Q-tagged (a VM on a trunk)
    # tcp: one hand-made segment; count > 1 sends a stream of them
    src_port: int = 40000
    dst_port: int = 7002
    tcp_flags: str = "S"  # letters: S F R P A U E C N
    tcp_seq: int = 0x1000_0000
    tcp_ack: int = 0
    payload_seq: bool = False  # tcp: carry the lab sequence number (seq) in the payload


def _first_ipv4(ips: Iterable[str]) -> IPv4Address | None:
    for text in ips:
        ip = parse_ip(text)
        if isinstance(ip, IPv4Address):
            return ip
    return None


def _first_ipv6(ips: Iterable[str]) -> IPv6Address | None:
    for text in ips:
        ip = parse_ip(text)
        if isinstance(ip, IPv6Address):
            return ip
    return None


def build_frame(state: LabState, vm: Endpoint, spec: SendSpec, seq: int) -> bytes:
    """The frame vm (a VM or host) sends for spec (pure apart from looking up the
    destination), 802.1Q-tagged if spec.vlan says so."""
    frame = _build_frame(state, vm, spec, seq)
    return packets.vlan_tagged(frame, spec.vlan) if spec.vlan is not None else frame


def _build_frame(state: LabState, vm: Endpoint, spec: SendSpec, seq: int) -> bytes:
    src = Mac.parse(spec.src_mac or vm.mac)
    src_ip4 = IPv4Address(spec.src_ip) if spec.src_ip else _first_ipv4(vm.ips)
    if spec.kind == "raw":
        if not spec.raw:
            raise InvalidInput("--kind raw needs --raw HEX")
        try:
            return bytes.fromhex(spec.raw)
        except ValueError:
            raise InvalidInput("--raw must be hexadecimal") from None
    if spec.kind == "rarp":
        return packets.rarp(src)
    if spec.kind == "garp":
        if src_ip4 is None:
            raise InvalidInput(f"VM {vm.name!r} has no IPv4 address to announce")
        return packets.garp(src, src_ip4)
    if spec.kind == "na":
        target6 = (
            IPv6Address(spec.target_ip)
            if spec.target_ip
            else _first_ipv6(vm.ips) or Mac.parse(vm.mac).ipv6_link_local()
        )
        return packets.unsolicited_na(src, target6)
    dst_vm = state.get_endpoint(spec.to) if spec.to else None
    if spec.kind == "arp":
        target = (
            IPv4Address(spec.target_ip)
            if spec.target_ip
            else _first_ipv4(dst_vm.ips)
            if dst_vm
            else None
        )
        if target is None or src_ip4 is None:
            raise InvalidInput("--kind arp needs a source IPv4 and --target-ip (or --to VM)")
        return packets.arp_request(src, src_ip4, target)
    if spec.kind == "udp":
        dst_mac = (
            Mac.parse(spec.dst_mac) if spec.dst_mac else (Mac.parse(dst_vm.mac) if dst_vm else None)
        )
        dst_ip = (
            IPv4Address(spec.dst_ip)
            if spec.dst_ip
            else (_first_ipv4(dst_vm.ips) if dst_vm else None)
        )
        if dst_mac is None or dst_ip is None or src_ip4 is None:
            raise InvalidInput(
                "--kind udp needs --to VM (or --dst-mac and --dst-ip) and a source IPv4"
            )
        return packets.udp_seq(src, dst_mac, src_ip4, dst_ip, seq, time.time_ns())
    if spec.kind == "tcp":
        return _tcp_frame(vm, dst_vm, spec, src, seq)
    raise InvalidInput(f"unknown --kind {spec.kind!r} (one of {', '.join(SEND_KINDS)})")


def _tcp_frame(vm: Endpoint, dst_vm: Endpoint | None, spec: SendSpec, src: Mac, seq: int) -> bytes:
    """One hand-made TCP segment; the i-th of a stream (seq = spec.seq + i) starts
    where the previous one's payload ended."""
    dst_mac = (
        Mac.parse(spec.dst_mac) if spec.dst_mac else (Mac.parse(dst_vm.mac) if dst_vm else None)
    )
    dst_text = spec.dst_ip or (_first_ip(dst_vm.ips) if dst_vm else None)
    if dst_mac is None or dst_text is None:
        raise InvalidInput("--kind tcp needs --to VM or host (or --dst-mac and --dst-ip)")
    dst_ip = parse_ip(dst_text)
    src_text = spec.src_ip or _first_ip(vm.ips, dst_ip.version)
    if src_text is None:
        raise InvalidInput(f"{vm.name!r} has no IPv{dst_ip.version} address to send from")
    for name, port in (("--sport", spec.src_port), ("--dport", spec.dst_port)):
        if not 0 < port < 1 << 16:
            raise InvalidInput(f"{name} must be between 1 and 65535, not {port}")
    for name, number in (("--seq", spec.tcp_seq), ("--ack", spec.tcp_ack)):
        if not 0 <= number < 1 << 32:
            raise InvalidInput(f"{name} must be between 0 and 2**32-1, not {number}")
    payload = packets.seq_payload(seq, time.time_ns()) if spec.payload_seq else b""
    offset = (seq - spec.seq) * len(payload)
    return packets.tcp_segment(
        src,
        dst_mac,
        parse_ip(src_text),
        dst_ip,
        spec.src_port,
        spec.dst_port,
        parse_flags(spec.tcp_flags),
        (spec.tcp_seq + offset) % (1 << 32),
        spec.tcp_ack,
        payload,
    )


def _first_ip(ips: Iterable[str], version: int | None = None) -> str | None:
    for text in ips:
        if version is None or parse_ip(text).version == version:
            return text
    return None


def _sending_vif(vm: VmEntry, chassis: str | None) -> VifEntry:
    if chassis is not None:
        vif = vm.vif_on(chassis)
        if vif is None:
            raise NotFound(f"VM {vm.name!r} has no VIF on {chassis}")
        return vif
    if not vm.vifs:
        raise NotFound(f"VM {vm.name!r} has no VIF")
    return vm.vifs[-1]


class Injector:
    """Sends frames as a VM (over one unixctl connection to the chassis' ovs-vswitchd) or
    as an external host (to the top-of-rack switch's)."""

    def __init__(self, directory: Path, vm_name: str, chassis: str | None = None) -> None:
        self.state = load(directory)
        self.vm: Endpoint = self.state.get_endpoint(vm_name)
        if isinstance(self.vm, HostEntry):
            if chassis is not None:
                raise InvalidInput(f"{vm_name!r} is an external host: it has no chassis")
            self.ifname = self.vm.ifname
            switch = Layout(directory).tor
        else:
            vif = _sending_vif(self.vm, chassis)
            self.ifname = vif.ifname
            switch = Layout(directory).chassis(vif.chassis)
        self._ctl = UnixctlClient(switch.vswitchd_ctl)

    def send(self, frame: bytes) -> None:
        self._ctl.call("netdev-dummy/receive", self.ifname, frame.hex())

    def close(self) -> None:
        self._ctl.close()

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(
    directory: Path, vm_name: str, spec: SendSpec, *, chassis: str | None = None, count: int = 1
) -> int:
    if count < 1:
        raise InvalidInput("--count must be at least 1")
    with Injector(directory, vm_name, chassis) as injector:
        for i in range(count):
            injector.send(build_frame(injector.state, injector.vm, spec, spec.seq + i))
    return count


# ----- capturing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    ts: float
    chassis: str
    info: packets.FrameInfo

    def to_json(self) -> dict[str, Any]:
        return {"ts": round(self.ts, 6), "chassis": self.chassis, **self.info.to_json()}


def capture(
    directory: Path, vm_name: str, *, chassis: str | None = None, received: bool = True
) -> list[Captured]:
    """Frames delivered to the VM (received=True) or sent by it, on each of its VIFs,
    in time order. VIFs that were unplugged keep their captures until the VM is deleted.
    An external host's frames are those of its ToR port (chassis "tor")."""
    return _read_captures(capture_files(load(directory), vm_name, chassis, received))


def capture_files(
    state: LabState, name: str, chassis: str | None = None, received: bool = True
) -> list[tuple[str, Path]]:
    """(where, pcap file) of every capture of a VM's VIFs or of a host's port."""
    endpoint = state.get_endpoint(name)
    if isinstance(endpoint, HostEntry):
        if chassis not in (None, TOR_CHASSIS):
            raise InvalidInput(f"{name!r} is an external host: it has no chassis")
        return [(TOR_CHASSIS, Path(endpoint.tx_pcap if received else endpoint.rx_pcap))]
    return [
        (vif.chassis, Path(vif.tx_pcap if received else vif.rx_pcap))
        for vif in endpoint.vifs + endpoint.unplugged
        if chassis is None or vif.chassis == chassis
    ]


def _read_captures(files: list[tuple[str, Path]]) -> list[Captured]:
    out: list[Captured] = []
    for where, path in files:
        for record in pcap.read(path):
            try:
                info = packets.decode(record.frame)
            except InvalidInput:
                continue
            out.append(Captured(ts=record.ts, chassis=where, info=info))
    out.sort(key=lambda c: c.ts)
    return out


def wait_capture(
    directory: Path,
    vm_name: str,
    predicate: Callable[[list[Captured]], bool],
    *,
    timeout: float = 5.0,
    chassis: str | None = None,
    received: bool = True,
    what: str = "the expected frames",
) -> list[Captured]:
    """Re-reads the VM's captures until predicate(frames) holds; raises Timeout otherwise.

    Injection returns before the datapath has delivered the frame, so anything that checks
    what a VM received must wait for it (the pcap file is the state; it is re-read every
    few milliseconds, and OVS flushes each record).
    """
    deadline = time.monotonic() + timeout
    while True:
        frames = capture(directory, vm_name, chassis=chassis, received=received)
        if predicate(frames):
            return frames
        if time.monotonic() >= deadline:
            raise Timeout(
                f"{vm_name} did not receive {what} within {timeout:g}s "
                f"({len(frames)} frames so far)"
            )
        time.sleep(0.002)
