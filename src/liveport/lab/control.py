"""The lab's control plane: liveport-northd (one, or an active/standby set sharing the NB
lock) and one liveport-agent per chassis (in a clustered lab behind the chassis' SB link,
lab.link), started as detached daemons whose pidfiles are in lab.json before they start,
and a wait until every chassis is registered, alive and has its tunnels."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from liveport.lab.secure import LabTls
from liveport.lab.sim import SimHost
from liveport.lab.state import DaemonEntry, LabState, editing
from liveport.model.errors import Timeout
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Row
from liveport.runtime.process import DaemonError, DaemonRef, spawn_detached, spawn_ovs_daemon

if TYPE_CHECKING:
    from liveport.lab.lab import Layout

Progress = Callable[[str], None]
# The daemons' own entry: it loads only the daemon it runs, not the whole CLI.
DAEMONS = [sys.executable, "-m", "liveport.cli.daemons"]


def northd_role(index: int) -> str:
    return "northd" if index == 1 else f"northd{index}"


def northd_ref(directory: Path, marker: str, index: int = 1) -> DaemonRef:
    role = northd_role(index)
    return DaemonRef(role, directory / "northd" / f"{role}.pid", marker)


def northd_ctl(directory: Path, index: int = 1) -> Path:
    """northd's control socket (ovs-appctl -t, liveport ctl --target)."""
    return directory / "northd" / f"{northd_role(index)}.ctl"


def agent_ctl(host: SimHost) -> Path:
    """The chassis' agent's control socket."""
    return host.directory / "agent.ctl"


def _daemon_args(ctl: Path, metrics: bool) -> list[str]:
    """What every liveport daemon of a lab gets: its control socket in the lab, no
    configuration file (the machine's /etc/liveport/liveport.conf is not the lab's), and a
    free loopback port for metrics if the lab has them."""
    return [
        "--unixctl",
        str(ctl),
        f"--config={os.devnull}",
        *(["--metrics-address", "127.0.0.1:0"] if metrics else []),
    ]


def link_ref(host: SimHost, marker: str) -> DaemonRef:
    return DaemonRef(f"{host.name}/sb-link", host.directory / "sb-link.pid", marker)


def agent_ref(host: SimHost, marker: str) -> DaemonRef:
    return DaemonRef(f"{host.name}/agent", host.directory / "agent.pid", marker)


def register(directory: Path, refs: list[DaemonRef]) -> None:
    with editing(directory) as state:
        known = {d.role for d in state.daemons}
        state.daemons += [DaemonEntry(r.role, str(r.pidfile)) for r in refs if r.role not in known]


def start_northd(
    directory: Path, layout: Layout, marker: str, dead_after: float, index: int = 1
) -> None:
    """northd on the unix sockets (every member of a cluster), or in a secure lab over TLS
    with its certificate (NB, and the SB's control listener)."""
    tls = layout.tls
    ref = northd_ref(directory, marker, index)
    ref.pidfile.parent.mkdir(exist_ok=True)
    register(directory, [ref])
    spawn_detached(
        [
            *DAEMONS,
            "northd",
            "--nb-db",
            tls.nb_remote if tls is not None else layout.nb_remote,
            "--sb-db",
            tls.sb_control_remote if tls is not None else layout.sb_remote,
            *(tls.client_args("northd") if tls is not None else []),
            "--dead-after",
            str(dead_after),
            "--pidfile",
            str(ref.pidfile),
            "--log-file",
            str(ref.pidfile.with_suffix(".log")),
            *_daemon_args(northd_ctl(directory, index), layout.metrics),
        ],
        pidfile=ref.pidfile,
        log_file=ref.pidfile.with_suffix(".out"),
    )


def start_agent(
    host: SimHost,
    marker: str,
    heartbeat: float,
    tls: LabTls | None = None,
    *,
    metrics: bool = False,
) -> None:
    """The chassis' agent; its SB remote is in its Open_vSwitch database (the SB's chassis
    listener in a secure lab, where it also gets its certificate)."""
    ref = agent_ref(host, marker)
    register(host.directory.parent, [ref])
    spawn_detached(
        [
            *DAEMONS,
            "agent",
            "--ovs-db",
            host.db_remote,
            "--mgmt-socket",
            str(host.mgmt_socket()),
            "--vswitchd-ctl",
            str(host.vswitchd_ctl),
            "--heartbeat",
            str(heartbeat),
            *(tls.client_args(host.name) if tls is not None else []),
            "--pidfile",
            str(ref.pidfile),
            "--log-file",
            str(host.directory / "agent.log"),
            *_daemon_args(agent_ctl(host), metrics),
        ],
        pidfile=ref.pidfile,
        log_file=host.directory / "agent.out",
    )


def start_link(layout: Layout, host: SimHost, marker: str) -> None:
    """The chassis' path to the SB servers (clustered labs): one forwarding socket per SB
    server the agent may use, which fault injection can cut."""
    ref = link_ref(host, marker)
    register(host.directory.parent, [ref])
    routes = [
        f"{layout.link_socket(host.name, i)}={remote.removeprefix('unix:')}"
        for i, remote in enumerate(layout.agent_sb_remotes, start=1)
    ]
    spawn_detached(
        [
            sys.executable,
            "-m",
            "liveport.lab.link",
            *routes,
            "--pidfile",
            str(ref.pidfile),
            "--log-file",
            str(host.directory / "sb-link.log"),
        ],
        pidfile=ref.pidfile,
        log_file=host.directory / "sb-link.out",
    )


def wait_links(layout: Layout, hosts: list[SimHost], timeout: float = 10.0) -> None:
    """Until every chassis' link listens (an agent started earlier would first fail to
    connect and then wait out python-ovs's reconnect backoff)."""
    sockets = [
        layout.link_socket(host.name, i)
        for host in hosts
        for i in range(1, len(layout.agent_sb_remotes) + 1)
    ]
    deadline = time.monotonic() + timeout
    while missing := [s for s in sockets if not s.is_socket()]:
        if time.monotonic() > deadline:
            raise DaemonError(f"SB link socket {missing[0]} did not appear in {timeout:g}s")
        time.sleep(0.01)


def wait_ready(layout: Layout, hosts: list[SimHost], timeout: float = 30.0) -> None:
    """Every chassis registered and alive in the SB, and holding a tunnel (with an ofport)
    to each of the others."""
    names = {h.name for h in hosts}
    with OvsdbClient(
        layout.sb_remote,
        schema.SB_NAME,
        {"Chassis": ["name"], "SB_Global": ["live_chassis"]},
        schema=str(layout.sb.schema),
    ) as client:
        try:
            client.wait_until(
                lambda s: (
                    names <= schema.live_chassis(s)
                    and names <= {r["name"] for r in s.rows("Chassis")}
                ),
                timeout=timeout,
                what=f"chassis {', '.join(sorted(names))} to register",
            )
        except Timeout as exc:
            snap = client.snapshot()
            registered = sorted(r["name"] for r in snap.rows("Chassis"))
            alive = sorted(schema.live_chassis(snap))
            raise Timeout(
                f"{exc} (SB {'connected' if snap.connected else 'NOT connected'}; registered: "
                f"{', '.join(registered) or 'none'}; alive: {', '.join(alive) or 'none'})"
            ) from None

    wait_tunnels(hosts, lambda r: "liveport-chassis" in r["external_ids"], "tunnels", timeout)


def wait_tunnels(
    hosts: list[SimHost], is_tunnel: Callable[[Row], bool], what: str, timeout: float
) -> None:
    """Until every chassis has a tunnel interface (with an ofport) to each of the others."""

    def tunnels(host: SimHost) -> None:
        with OvsdbClient(
            host.db_remote,
            schema.VSWITCH_NAME,
            {"Interface": ["type", "ofport", "external_ids"]},
            schema=str(host.ovsdb.schema),
        ) as client:
            client.wait_until(
                lambda s: (
                    sum(1 for r in s.rows("Interface") if is_tunnel(r) and (r["ofport"] or 0) > 0)
                    >= len(hosts) - 1
                ),
                timeout=timeout,
                what=f"{what} on {host.name}",
            )

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        for future in [pool.submit(tunnels, h) for h in hosts]:
            future.result()


def start(
    directory: Path,
    layout: Layout,
    hosts: list[SimHost],
    state: LabState,
    progress: Progress,
    *,
    heartbeat: float,
    dead_after: float,
) -> None:
    if layout.engine == "ovn":
        start_ovn(directory, layout, hosts, state.marker, progress)
        return
    for index in range(1, layout.northds + 1):
        start_northd(directory, layout, state.marker, dead_after, index)
    if layout.clustered and layout.tls is None:  # TLS goes over TCP, not through links
        for host in hosts:
            start_link(layout, host, state.marker)
        wait_links(layout, hosts)
    for host in hosts:
        start_agent(host, state.marker, heartbeat, layout.tls, metrics=layout.metrics)
    progress(
        f"{'northd' if layout.northds == 1 else f'{layout.northds} northds'} and agents started"
    )
    wait_ready(layout, hosts)
    progress("all chassis registered, alive, with tunnels")


# ----- the OVN engine -----------------------------------------------------------------------

OVN_BINARIES = ("ovn-northd", "ovn-controller")


def ovn_binaries() -> None:
    """Refuses an OVN lab on a machine without OVN's daemons, before anything starts."""
    missing = [name for name in OVN_BINARIES if shutil.which(name) is None]
    if missing:
        raise DaemonError(
            f"{', '.join(missing)} not installed (the OVN engine needs Debian's ovn-central "
            "and ovn-host)"
        )


def ovn_northd_ref(directory: Path, marker: str) -> DaemonRef:
    return DaemonRef("ovn-northd", directory / "northd" / "ovn-northd.pid", marker)


def ovn_controller_ref(host: SimHost, marker: str) -> DaemonRef:
    return DaemonRef(f"{host.name}/ovn-controller", host.directory / "ovn-controller.pid", marker)


def _ovn_env(rundir: Path) -> dict[str, str]:
    """OVN's daemons find their sockets (and the bridge's mgmt socket) through these."""
    return {
        **os.environ,
        **{name: str(rundir) for name in ("OVS_RUNDIR", "OVN_RUNDIR", "OVS_LOGDIR", "OVN_LOGDIR")},
    }


def start_ovn(
    directory: Path, layout: Layout, hosts: list[SimHost], marker: str, progress: Progress
) -> None:
    """ovn-northd and one ovn-controller per chassis, on OVN's own SB schema: the lab's
    reference engine, started as OVN's test suite starts it."""
    northd = ovn_northd_ref(directory, marker)
    northd.pidfile.parent.mkdir(exist_ok=True)
    controllers = [ovn_controller_ref(host, marker) for host in hosts]
    register(directory, [northd, *controllers])
    spawn_ovs_daemon(
        [
            "ovn-northd",
            f"--ovnnb-db={layout.nb_remote}",
            f"--ovnsb-db={layout.sb_remote}",
            f"--unixctl={northd.pidfile.with_suffix('.ctl')}",
        ],
        pidfile=northd.pidfile,
        log_file=northd.pidfile.with_suffix(".log"),
        env=_ovn_env(northd.pidfile.parent),
    )
    for host, ref in zip(hosts, controllers, strict=True):
        spawn_ovs_daemon(
            ["ovn-controller", host.db_remote],  # its unixctl socket goes in OVN_RUNDIR
            pidfile=ref.pidfile,
            log_file=ref.pidfile.with_suffix(".log"),
            env=_ovn_env(host.directory),
        )
    progress("ovn-northd and ovn-controllers started")
    wait_ovn_ready(layout, hosts)
    progress("all chassis registered in OVN's SB, with tunnels")


def wait_ovn_ready(layout: Layout, hosts: list[SimHost], timeout: float = 30.0) -> None:
    names = {h.name for h in hosts}
    with OvsdbClient(
        layout.sb_remote,
        "OVN_Southbound",
        {"Chassis": ["name"]},
        schema=str(layout.sb.schema),
    ) as client:
        client.wait_until(
            lambda s: names <= {r["name"] for r in s.rows("Chassis")},
            timeout=timeout,
            what=f"chassis {', '.join(sorted(names))} to register in OVN's SB",
        )

    wait_tunnels(hosts, lambda r: r["type"] == "geneve", "OVN's tunnels", timeout)
