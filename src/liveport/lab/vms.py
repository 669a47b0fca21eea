"""Simulated VMs: a dummy port on a chassis bridge stands for the VM's NIC (its VIF).

The VIF carries external_ids:iface-id (the logical port) and attached-mac like a libvirt
VIF, and records everything the switch delivers to it in a pcap file (options:tx_pcap).
Frames "sent by the VM" are injected with netdev-dummy/receive. A VM may have a VIF on two
chassis at once (during a migration); captures say which chassis each frame reached.
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
from liveport.lab.lab import Layout
from liveport.lab.state import LabState, VifEntry, VmEntry, editing, load
from liveport.model import packets
from liveport.model.addr import Mac, parse_ip
from liveport.model.errors import Conflict, InvalidInput, NotFound, Timeout
from liveport.runtime.unixctl import UnixctlClient

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
SEND_KINDS = ("udp", "arp", "garp", "rarp", "na", "raw")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid VM name {name!r} (1-15 characters: letters, digits, '_', '-', '.', "
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
) -> VmEntry:
    """Plugs a new VM's VIF into chassis; refuses duplicates and malformed addresses.
    vhost_mode asks the chassis for a vhost-user compatibility mode (external_ids
    vhost-compat); without it the chassis picks its newest."""
    check_name(name)
    if not port:
        raise InvalidInput("--port must name a logical switch port")
    mac_text = str(Mac.parse(mac))
    ip_texts = [str(parse_ip(ip)) for ip in ips]
    with editing(directory) as state:
        if name in state.vms:
            where = ", ".join(v.chassis for v in state.vms[name].vifs) or "no chassis"
            raise Conflict(f"VM {name!r} already exists (on {where})")
        state.get_chassis(chassis)
        vm = VmEntry(name=name, port=port, mac=mac_text, ips=ip_texts)
        ids = dict(external_ids or {})
        if vhost_mode:
            ids["vhost-compat"] = vhost_mode
        vm.vifs.append(plug_vif(state, vm, chassis, bridge=bridge, external_ids=ids))
        state.vms[name] = vm
        return vm


def plug_vif(
    state: LabState,
    vm: VmEntry,
    chassis: str,
    *,
    bridge: str = "br-int",
    external_ids: dict[str, str] | None = None,
) -> VifEntry:
    """Adds vm's VIF on chassis in one ovs-vsctl transaction (all or nothing)."""
    if vm.vif_on(chassis) is not None:
        raise Conflict(f"VM {vm.name!r} already has a VIF on {chassis}")
    host = Layout(Path(state.directory)).chassis(chassis)
    counter = int(state.options.get("vif_counter", 0)) + 1
    state.options["vif_counter"] = counter
    capture_dir = host.directory / "pcap"
    capture_dir.mkdir(exist_ok=True)
    tx = capture_dir / f"{vm.name}.{counter}.tx.pcap"
    rx = capture_dir / f"{vm.name}.{counter}.rx.pcap"
    ids = {"iface-id": vm.port, "attached-mac": vm.mac, "vm-id": vm.name, **(external_ids or {})}
    host.vsctl(
        "add-port",
        bridge,
        vm.name,
        "--",
        "set",
        "Interface",
        vm.name,
        "type=dummy",
        *(f"external_ids:{key}={value}" for key, value in ids.items()),
        f"options:tx_pcap={tx}",
        f"options:rxq_pcap={rx}",
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
    to: str | None = None  # another VM: its MAC and first IPv4 are the destination
    dst_mac: str | None = None
    dst_ip: str | None = None
    src_mac: str | None = None  # overrides the VM's own MAC (to test port security)
    src_ip: str | None = None
    target_ip: str | None = None  # for arp / na
    seq: int = 0
    raw: str | None = None


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


def build_frame(state: LabState, vm: VmEntry, spec: SendSpec, seq: int) -> bytes:
    """The frame vm sends for spec (pure apart from looking up the destination VM)."""
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
    dst_vm = state.get_vm(spec.to) if spec.to else None
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
    raise InvalidInput(f"unknown --kind {spec.kind!r} (one of {', '.join(SEND_KINDS)})")


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
    """Sends frames as a VM, over one unixctl connection to the chassis' ovs-vswitchd."""

    def __init__(self, directory: Path, vm_name: str, chassis: str | None = None) -> None:
        self.state = load(directory)
        self.vm = self.state.get_vm(vm_name)
        self.vif = _sending_vif(self.vm, chassis)
        host = Layout(directory).chassis(self.vif.chassis)
        self._ctl = UnixctlClient(host.vswitchd_ctl)

    def send(self, frame: bytes) -> None:
        self._ctl.call("netdev-dummy/receive", self.vif.ifname, frame.hex())

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
    in time order. VIFs that were unplugged keep their captures until the VM is deleted."""
    state = load(directory)
    vm = state.get_vm(vm_name)
    out: list[Captured] = []
    for vif in vm.vifs + vm.unplugged:
        if chassis is not None and vif.chassis != chassis:
            continue
        path = Path(vif.tx_pcap if received else vif.rx_pcap)
        for record in pcap.read(path):
            try:
                info = packets.decode(record.frame)
            except InvalidInput:
                continue
            out.append(Captured(ts=record.ts, chassis=vif.chassis, info=info))
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
