"""Simulated hosts: one ovsdb-server (Open_vSwitch schema) plus one ovs-vswitchd on the dummy
datapath per host, all state inside the host's directory.

`--enable-dummy=system` replaces the kernel datapath and system netdevs with dummies (no
kernel interfaces, no real packets); `--disable-system-route` keeps the kernel's routing
table out. Hosts are linked by unix-socket stream ports into one shared underlay switch,
and tunnel endpoints exist only inside OVS (netdev-dummy/ip4addr, ovs/route/add,
tnl/neigh/set) -- the method of OVS's and OVN's own test suites.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from liveport.ovsdb import schema
from liveport.ovsdb.server import ServerSpec, check_socket_path, run_tool
from liveport.ovsdb.server import start as start_ovsdb
from liveport.runtime import unixctl
from liveport.runtime.process import DaemonRef, spawn_ovs_daemon

UNDERLAY_BRIDGE = "underlay"
PHYS_BRIDGE = "br-phys"
INT_BRIDGE = "br-int"
UNDERLAY_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range


def encap_ip(index: int) -> ipaddress.IPv4Address:
    """Chassis index (1-based) -> its tunnel endpoint address inside the dummy datapath."""
    return UNDERLAY_NET.network_address + index


def underlay_mac(index: int) -> str:
    """A fixed, locally administered MAC for a chassis' underlay bridge."""
    return f"02:4c:50:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


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

    def start(self) -> None:
        """Starts the host's ovsdb-server and ovs-vswitchd (dummy datapath)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.vswitchd_ctl, self.mgmt_socket(), self.mgmt_socket(PHYS_BRIDGE)):
            check_socket_path(path)
        start_ovsdb(self.ovsdb)
        self.vsctl("init", wait=False)
        env = dict(os.environ)
        # br-int.mgmt and friends go to OVS_RUNDIR: keep them inside the host directory.
        env.update(
            OVS_RUNDIR=str(self.directory),
            OVS_LOGDIR=str(self.directory),
            OVS_DBDIR=str(self.directory),
        )
        spawn_ovs_daemon(
            [
                "ovs-vswitchd",
                self.db_remote,
                "--enable-dummy=system",
                "--disable-system-route",
                f"--unixctl={self.vswitchd_ctl}",
            ],
            pidfile=self.vswitchd_pidfile,
            log_file=self.directory / "vswitchd.log",
            env=env,
        )


def start_underlay(host: SimHost) -> None:
    host.start()
    host.vsctl(
        "add-br", UNDERLAY_BRIDGE, "--", "set", "bridge", UNDERLAY_BRIDGE, "fail-mode=standalone"
    )


def underlay_socket(underlay: SimHost, chassis: str) -> Path:
    return underlay.directory / f"{chassis}.sock"


def attach_chassis(
    underlay: SimHost,
    host: SimHost,
    index: int,
    sb_remote: str,
    vhost_backend: str | None = None,
    engine: str = "liveport",
) -> None:
    """Creates br-int and br-phys on host, links br-phys to the underlay switch and gives it
    the chassis' tunnel endpoint address, then records the chassis identity in Open_vSwitch
    external_ids (what liveport-agent and ovn-controller read)."""
    sock = underlay_socket(underlay, host.name)
    check_socket_path(sock)
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
        "--",
        "set",
        "Open_vSwitch",
        ".",
        f"external_ids:system-id={host.name}",
        f"external_ids:hostname={host.name}",
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
    )
    prefix = f"{ip}/{UNDERLAY_NET.prefixlen}"
    host.appctl("netdev-dummy/ip4addr", PHYS_BRIDGE, prefix)
    host.appctl("ovs/route/add", prefix, PHYS_BRIDGE)


def set_neighbours(host: SimHost, peers: list[tuple[str, str]]) -> None:
    """Pre-populates the tunnel neighbour table (a dummy bridge answers no ARP)."""
    with unixctl.UnixctlClient(host.vswitchd_ctl) as ctl:
        for ip, mac in peers:
            ctl.call("tnl/neigh/set", PHYS_BRIDGE, ip, mac)
