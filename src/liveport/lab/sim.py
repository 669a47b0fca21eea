"""Simulated hosts: one ovsdb-server (Open_vSwitch schema) plus one ovs-vswitchd on the dummy
datapath per host, all state inside the host's directory.

`--enable-dummy=system` replaces the kernel datapath and system netdevs with dummies (no
kernel interfaces, no real packets); `--disable-system-route` keeps the kernel's routing
table out. Hosts are linked by unix-socket stream ports into one shared underlay switch,
and tunnel endpoints exist only inside OVS (netdev-dummy/ip4addr, ovs/route/add,
tnl/neigh/set) -- the method of OVS's and OVN's own test suites.

The physical network of provider networks is a second switch, the top-of-rack (ToR): a
VLAN-aware learning bridge (NORMAL, standalone) with one trunk port per chassis, linked to
the chassis' provider bridge the same way, and access ports for external hosts. Each
ToR trunk port records both directions in pcap files, so tests see tagged frames on the
wire.

DPDK chassis (`lab up --dpdk`) run Debian's DPDK build of ovs-vswitchd instead, with the
same `--enable-dummy=system`: every bridge is still a userspace datapath (dpif-netdev,
whose "system" type the dummy override stands in for), so the underlay, the ToR, the
tunnels and dummy VIFs work unchanged, and br-int also takes `dpdkvhostuserclient` ports:
vhost-user VIFs whose packets DPDK's vhost library carries to and from a real QEMU. DPDK
runs with `--no-pci` (no device is probed, let alone taken) and `--in-memory` (its huge
pages come from memfd: no hugetlbfs mount, no files under /var/run/dpdk, so several
chassis coexist without prefixes), one lcore and one PMD thread that sleeps when idle.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from liveport.model.realbackend import DpdkSwitch, honoured, identify
from liveport.ovsdb import schema
from liveport.ovsdb.server import ServerSpec, check_socket_path, run_tool
from liveport.ovsdb.server import start as start_ovsdb
from liveport.runtime import unixctl
from liveport.runtime.process import DaemonRef, spawn_ovs_daemon
from liveport.vhostuser.catalogue import load_catalogue

UNDERLAY_BRIDGE = "underlay"
PHYS_BRIDGE = "br-phys"
INT_BRIDGE = "br-int"
UNDERLAY_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range
TOR_BRIDGE = "tor"
PROVIDER_BRIDGE = "br-provider"  # br-phys is the underlay's (tunnels)
PROVIDER_UPLINK = "tor"  # the provider bridge's port towards the ToR
PHYSNET = "physnet1"
BRIDGE_MAPPINGS = f"{PHYSNET}:{PROVIDER_BRIDGE}"
#: Debian's DPDK build (package openvswitch-switch-dpdk); /usr/sbin/ovs-vswitchd stays the
#: plain one (the package registers this one as a lower-priority alternative).
DPDK_VSWITCHD = os.environ.get(
    "LIVEPORT_OVS_VSWITCHD_DPDK", "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
)
DPDK_SOCKET_MEM = 512  # MB of huge pages per DPDK chassis (preallocated, and the limit)
HOSTNAME_DOMAIN = "lab.example"  # RFC 2606: reserved, resolves nowhere
DEFAULT_MAC_AGING = 300  # seconds, a common default of real switches (and OVS's)
MAC_AGING_RANGE = (15, 3600)  # what OVS applies; it silently clamps other values


def chassis_hostname(chassis: str) -> str:
    """The host name a chassis reports: never its chassis name, so that tests can tell
    which of the two a requested-chassis option matched."""
    return f"{chassis}.{HOSTNAME_DOMAIN}"


def encap_ip(index: int) -> ipaddress.IPv4Address:
    """Chassis index (1-based) -> its tunnel endpoint address inside the dummy datapath."""
    return UNDERLAY_NET.network_address + index


def underlay_mac(index: int) -> str:
    """A fixed, locally administered MAC for a chassis' underlay bridge."""
    return f"02:4c:50:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


@functools.cache
def vswitchd_version(binary: str) -> str:
    """The release of an ovs-vswitchd binary ("3.1.0"), from its --version."""
    found = re.search(r"\(Open vSwitch\) (\S+)", run_tool([binary, "--version"]))
    return found.group(1) if found else ""


def dpdk_cpus() -> tuple[int, int]:
    """(DPDK's main lcore, the PMD thread's core): the first and last CPU this process may
    run on (the same one on a single-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


def dpdk_other_config(socket_mem: int = DPDK_SOCKET_MEM) -> list[str]:
    """Open_vSwitch other_config of a DPDK chassis, set before ovs-vswitchd starts."""
    lcore, pmd = dpdk_cpus()
    return [
        "other_config:dpdk-init=true",
        f"other_config:dpdk-socket-mem={socket_mem}",
        f"other_config:dpdk-socket-limit={socket_mem}",
        f"other_config:dpdk-lcore-mask={1 << lcore:#x}",
        f"other_config:pmd-cpu-mask={1 << pmd:#x}",
        # An idle PMD thread sleeps up to 1 ms between polls: a few % of a core, not 100 %.
        "other_config:pmd-maxsleep=1000",
        "other_config:dpdk-extra=--no-pci --in-memory",
    ]


@dataclass(frozen=True)
class SimHost:
    """Where one simulated host keeps everything."""

    name: str
    directory: Path

    @property
    def ovsdb(self) -> ServerSpec:
        return ServerSpec("conf", self.directory, schema.vswitch_path())

    @property
    def db_socket(self) -> Path:
        return self.ovsdb.socket

    @property
    def db_remote(self) -> str:
        return self.ovsdb.remote

    @property
    def vswitchd_ctl(self) -> Path:
        return self.directory / "vswitchd.ctl"

    @property
    def vswitchd_pidfile(self) -> Path:
        return self.directory / "vswitchd.pid"

    def mgmt_socket(self, bridge: str = INT_BRIDGE) -> Path:
        return self.directory / f"{bridge}.mgmt"

    def daemons(self, marker: str) -> list[DaemonRef]:
        return [
            DaemonRef(f"{self.name}/ovsdb-server", self.ovsdb.pidfile, marker),
            DaemonRef(f"{self.name}/ovs-vswitchd", self.vswitchd_pidfile, marker),
        ]

    def vsctl(self, *args: str, wait: bool = True) -> str:
        argv = ["ovs-vsctl", f"--db={self.db_remote}", "--timeout=30"]
        if not wait:
            argv.append("--no-wait")
        return run_tool([*argv, *args])

    def appctl(self, command: str, *args: str) -> str:
        return unixctl.call(self.vswitchd_ctl, command, *args)

    def start(self, dpdk: bool = False) -> None:
        """Starts the host's ovsdb-server and ovs-vswitchd (dummy datapath; with dpdk, the
        DPDK build, DPDK initialised before it opens any bridge)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (
            self.vswitchd_ctl,
            self.mgmt_socket(),
            self.mgmt_socket(PHYS_BRIDGE),
            self.mgmt_socket(PROVIDER_BRIDGE),
        ):
            check_socket_path(path)
        start_ovsdb(self.ovsdb)
        self.vsctl("init", wait=False)
        binary = DPDK_VSWITCHD if dpdk else "ovs-vswitchd"
        # ovs_version is the start-up script's to write (ovs-ctl does); the agent reads it
        # to name an OVS-DPDK back-end's release.
        settings = [f"ovs_version={vswitchd_version(binary)}"]
        if dpdk:
            settings += dpdk_other_config()
        self.vsctl("set", "Open_vSwitch", ".", *settings, wait=False)
        env = dict(os.environ)
        # br-int.mgmt and friends go to OVS_RUNDIR: keep them inside the host directory.
        env.update(
            OVS_RUNDIR=str(self.directory),
            OVS_LOGDIR=str(self.directory),
            OVS_DBDIR=str(self.directory),
        )
        spawn_ovs_daemon(
            [
                binary,
                self.db_remote,
                "--enable-dummy=system",
                "--disable-system-route",
                f"--unixctl={self.vswitchd_ctl}",
            ],
            pidfile=self.vswitchd_pidfile,
            log_file=self.directory / "vswitchd.log",
            env=env,
        )


def dpdk_modes(host: SimHost) -> tuple[str, ...]:
    """The modes a started DPDK chassis can honour: those of the catalogue mode of the
    OVS-DPDK release it runs, as its agent will identify it (liveport.model.realbackend),
    newest first; none when no mode follows that release."""
    dpdk_version = host.vsctl("get", "Open_vSwitch", ".", "dpdk_version").strip().strip('"')
    switch = DpdkSwitch(True, dpdk_version, vswitchd_version(DPDK_VSWITCHD), False)
    catalogue = load_catalogue()
    mode = identify(catalogue, switch)
    return honoured(catalogue, mode) if mode is not None else ()


def start_underlay(host: SimHost) -> None:
    host.start()
    host.vsctl(
        "add-br", UNDERLAY_BRIDGE, "--", "set", "bridge", UNDERLAY_BRIDGE, "fail-mode=standalone"
    )


def underlay_socket(underlay: SimHost, chassis: str) -> Path:
    return underlay.directory / f"{chassis}.sock"


def start_tor(host: SimHost, mac_aging: int = DEFAULT_MAC_AGING) -> None:
    """Starts the top-of-rack switch: one learning bridge, VLAN-aware (NORMAL)."""
    host.start()
    (host.directory / "pcap").mkdir(exist_ok=True)
    check_socket_path(host.mgmt_socket(TOR_BRIDGE))
    host.vsctl(
        "add-br",
        TOR_BRIDGE,
        "--",
        "set",
        "bridge",
        TOR_BRIDGE,
        "fail-mode=standalone",
        f"other_config:mac-aging-time={mac_aging}",
    )


def tor_socket(tor: SimHost, chassis: str) -> Path:
    return tor.directory / f"{chassis}.sock"


def tor_port_pcaps(tor: SimHost, port: str) -> tuple[Path, Path]:
    """(what the ToR sent out of port, what it received on it)."""
    return tor.directory / "pcap" / f"{port}.tx.pcap", tor.directory / "pcap" / f"{port}.rx.pcap"


def add_tor_trunks(tor: SimHost, chassis: list[str]) -> None:
    """One trunk port per chassis (no tag: every VLAN, tagged), listening for the chassis'
    provider bridge, in one transaction."""
    args: list[str] = []
    for name in chassis:
        sock = tor_socket(tor, name)
        check_socket_path(sock)
        tx, rx = tor_port_pcaps(tor, name)
        args += [
            "--",
            "add-port",
            TOR_BRIDGE,
            name,
            "--",
            "set",
            "Interface",
            name,
            "type=dummy",
            f"options:pstream=punix:{sock}",
            f"options:tx_pcap={tx}",
            f"options:rxq_pcap={rx}",
        ]
    tor.vsctl(*args)


def attach_chassis(
    underlay: SimHost,
    host: SimHost,
    index: int,
    sb_remote: str,
    vhost_backend: str | None = None,
    engine: str = "liveport",
    tor: SimHost | None = None,
    vhost_modes: tuple[str, ...] = (),
) -> None:
    """Creates br-int and br-phys on host, links br-phys to the underlay switch and gives it
    the chassis' tunnel endpoint address, then records the chassis identity in Open_vSwitch
    external_ids (what liveport-agent and ovn-controller read). With a ToR (whose trunk port
    for this chassis exists), also br-provider linked to it and the bridge mapping."""
    sock = underlay_socket(underlay, host.name)
    check_socket_path(sock)
    provider: list[str] = []
    if tor is not None:
        uplink = tor_socket(tor, host.name)
        check_socket_path(uplink)
        provider = [
            "--",
            "add-br",
            PROVIDER_BRIDGE,
            "--",
            "set",
            "bridge",
            PROVIDER_BRIDGE,
            "fail-mode=standalone",
            "--",
            "add-port",
            PROVIDER_BRIDGE,
            PROVIDER_UPLINK,
            "--",
            "set",
            "Interface",
            PROVIDER_UPLINK,
            "type=dummy",
            f"options:stream=unix:{uplink}",
        ]
    underlay.vsctl(
        "add-port",
        UNDERLAY_BRIDGE,
        host.name,
        "--",
        "set",
        "Interface",
        host.name,
        "type=dummy",
        f"options:pstream=punix:{sock}",
    )
    ip = encap_ip(index)
    host.vsctl(
        "--",
        "add-br",
        INT_BRIDGE,
        "--",
        "set",
        "bridge",
        INT_BRIDGE,
        "fail-mode=secure",
        "other-config:disable-in-band=true",
        "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
        "--",
        "add-br",
        PHYS_BRIDGE,
        "--",
        "set",
        "bridge",
        PHYS_BRIDGE,
        f"other-config:hwaddr={underlay_mac(index)}",
        "fail-mode=standalone",
        "--",
        "add-port",
        PHYS_BRIDGE,
        "underlay",
        "--",
        "set",
        "Interface",
        "underlay",
        "type=dummy",
        f"options:stream=unix:{sock}",
        *provider,
        "--",
        "set",
        "Open_vSwitch",
        ".",
        f"external_ids:system-id={host.name}",
        f"external_ids:hostname={chassis_hostname(host.name)}",
        # OVN's key, read by ovn-controller and (to come) liveport's agent alike.
        *([f"external_ids:ovn-bridge-mappings={BRIDGE_MAPPINGS}"] if tor is not None else []),
        *(
            [
                f"external_ids:ovn-remote={sb_remote}",
                "external_ids:ovn-encap-type=geneve",
                f"external_ids:ovn-encap-ip={ip}",
                f"external_ids:ovn-bridge={INT_BRIDGE}",
            ]
            if engine == "ovn"
            else [
                f"external_ids:liveport-remote={sb_remote}",
                "external_ids:liveport-encap-type=geneve",
                f"external_ids:liveport-encap-ip={ip}",
                f"external_ids:liveport-bridge={INT_BRIDGE}",
            ]
        ),
        *([f"external_ids:liveport-vhost-backend={vhost_backend}"] if vhost_backend else []),
        *([f'external_ids:liveport-vhost-modes="{",".join(vhost_modes)}"'] if vhost_modes else []),
    )
    prefix = f"{ip}/{UNDERLAY_NET.prefixlen}"
    host.appctl("netdev-dummy/ip4addr", PHYS_BRIDGE, prefix)
    host.appctl("ovs/route/add", prefix, PHYS_BRIDGE)


def set_neighbours(host: SimHost, peers: list[tuple[str, str]]) -> None:
    """Pre-populates the tunnel neighbour table (a dummy bridge answers no ARP)."""
    with unixctl.UnixctlClient(host.vswitchd_ctl) as ctl:
        for ip, mac in peers:
            ctl.call("tnl/neigh/set", PHYS_BRIDGE, ip, mac)
