"""The lab's control plane: liveport-northd and one liveport-agent per chassis, started as
detached daemons whose pidfiles are in lab.json before they start, and a wait until every
chassis is registered, alive and has its tunnels."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from liveport.lab.secure import LabTls
from liveport.lab.sim import SimHost
from liveport.lab.state import DaemonEntry, LabState, editing
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.server import ServerSpec
from liveport.runtime.process import DaemonRef, spawn_detached

Progress = Callable[[str], None]
LIVEPORT = [sys.executable, "-m", "liveport.cli.main"]


def northd_ref(directory: Path, marker: str) -> DaemonRef:
    return DaemonRef("northd", directory / "northd" / "northd.pid", marker)


def agent_ref(host: SimHost, marker: str) -> DaemonRef:
    return DaemonRef(f"{host.name}/agent", host.directory / "agent.pid", marker)


def register(directory: Path, refs: list[DaemonRef]) -> None:
    with editing(directory) as state:
        known = {d.role for d in state.daemons}
        state.daemons += [DaemonEntry(r.role, str(r.pidfile)) for r in refs if r.role not in known]


def start_northd(
    directory: Path,
    nb: ServerSpec,
    sb: ServerSpec,
    marker: str,
    dead_after: float,
    tls: LabTls | None = None,
) -> None:
    """northd on the unix sockets, or in a secure lab over TLS with its certificate (NB, and
    the SB's control listener)."""
    ref = northd_ref(directory, marker)
    ref.pidfile.parent.mkdir(exist_ok=True)
    register(directory, [ref])
    spawn_detached(
        [
            *LIVEPORT,
            "northd",
            "--nb-db",
            tls.nb_remote if tls is not None else nb.remote,
            "--sb-db",
            tls.sb_control_remote if tls is not None else sb.remote,
            *(tls.client_args("northd") if tls is not None else []),
            "--dead-after",
            str(dead_after),
            "--pidfile",
            str(ref.pidfile),
            "--log-file",
            str(ref.pidfile.with_suffix(".log")),
        ],
        pidfile=ref.pidfile,
        log_file=ref.pidfile.with_suffix(".out"),
    )


def start_agent(host: SimHost, marker: str, heartbeat: float, tls: LabTls | None = None) -> None:
    """The chassis' agent; its SB remote is in its Open_vSwitch database (the SB's chassis
    listener in a secure lab, where it also gets its certificate)."""
    ref = agent_ref(host, marker)
    register(host.directory.parent, [ref])
    spawn_detached(
        [
            *LIVEPORT,
            "agent",
            "--ovs-db",
            host.db_remote,
            "--mgmt-socket",
            str(host.mgmt_socket()),
            "--heartbeat",
            str(heartbeat),
            *(tls.client_args(host.name) if tls is not None else []),
            "--pidfile",
            str(ref.pidfile),
            "--log-file",
            str(host.directory / "agent.log"),
        ],
        pidfile=ref.pidfile,
        log_file=host.directory / "agent.out",
    )


def wait_ready(sb: ServerSpec, hosts: list[SimHost], timeout: float = 30.0) -> None:
    """Every chassis registered and alive in the SB, and holding a tunnel (with an ofport)
    to each of the others."""
    names = {h.name for h in hosts}
    with OvsdbClient(
        sb.remote,
        schema.SB_NAME,
        {"Chassis": ["name"], "SB_Global": ["live_chassis"]},
        schema=str(sb.schema),
    ) as client:
        client.wait_until(
            lambda s: (
                names <= schema.live_chassis(s) and names <= {r["name"] for r in s.rows("Chassis")}
            ),
            timeout=timeout,
            what=f"chassis {', '.join(sorted(names))} to register",
        )

    def tunnels(host: SimHost) -> None:
        with OvsdbClient(
            host.db_remote,
            schema.VSWITCH_NAME,
            {"Interface": ["ofport", "external_ids"]},
            schema=str(host.ovsdb.schema),
        ) as client:
            client.wait_until(
                lambda s: (
                    sum(
                        1
                        for r in s.rows("Interface")
                        if "liveport-chassis" in r["external_ids"] and (r["ofport"] or 0) > 0
                    )
                    >= len(hosts) - 1
                ),
                timeout=timeout,
                what=f"tunnels on {host.name}",
            )

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        for future in [pool.submit(tunnels, h) for h in hosts]:
            future.result()


def start(
    directory: Path,
    nb: ServerSpec,
    sb: ServerSpec,
    hosts: list[SimHost],
    state: LabState,
    progress: Progress,
    *,
    heartbeat: float,
    dead_after: float,
    tls: LabTls | None = None,
) -> None:
    start_northd(directory, nb, sb, state.marker, dead_after, tls)
    for host in hosts:
        start_agent(host, state.marker, heartbeat, tls)
    progress("northd and agents started")
    wait_ready(sb, hosts)
    progress("all chassis registered, alive, with tunnels")
