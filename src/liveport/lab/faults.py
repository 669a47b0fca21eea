"""Fault injection for tests and demos: stop, kill, pause, resume or restart any process of
a lab by its role ("northd", "hv2/agent", "sb", "sb2", "hv1/ovs-vswitchd", ...), kill the
Raft leader of a clustered database, and cut a chassis' path to the SB (clustered labs).
Processes are found through lab.json and signalled by PID after checking their command
line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from liveport.lab import control
from liveport.lab.lab import Layout, cluster_leader
from liveport.lab.state import load
from liveport.model.errors import InvalidInput, NotFound
from liveport.ovsdb import schema
from liveport.ovsdb.server import ServerSpec
from liveport.ovsdb.server import start as start_ovsdb
from liveport.runtime.process import DaemonRef, stop_daemons


def ref(directory: Path, role: str) -> DaemonRef:
    state = load(directory)
    for candidate in state.daemon_refs():
        if candidate.role == role:
            return candidate
    roles = ", ".join(r.role for r in state.daemon_refs())
    raise NotFound(f"no process with role {role!r} in this lab (roles: {roles})")


def pid(directory: Path, role: str) -> int:
    found = ref(directory, role).running_pid()
    if found is None:
        raise NotFound(f"{role} is not running")
    return found


def stop(directory: Path, role: str) -> int:
    """SIGTERM, wait until gone (SIGKILL after 10 s); returns the PID it had."""
    target = ref(directory, role)
    old = pid(directory, role)
    stop_daemons([target])
    return old


def kill(directory: Path, role: str, sig: int = signal.SIGKILL) -> int:
    target = pid(directory, role)
    os.kill(target, sig)
    return target


def pause(directory: Path, role: str) -> int:
    return kill(directory, role, signal.SIGSTOP)


def resume(directory: Path, role: str) -> int:
    return kill(directory, role, signal.SIGCONT)


def start(directory: Path, role: str) -> None:
    """Starts a stopped control-plane process or database again, as `lab up` did."""
    state = load(directory)
    layout = Layout.of(directory)
    heartbeat = float(state.options.get("heartbeat", 2.0))
    dead_after = float(state.options.get("dead_after", 10.0))
    servers = {spec.name: spec for spec in layout.servers}
    northds = {control.northd_role(i): i for i in range(1, layout.northds + 1)}
    if role in northds:
        control.start_northd(directory, layout, state.marker, dead_after, northds[role])
    elif role.endswith("/agent"):
        host = layout.chassis(role.removesuffix("/agent"))
        control.start_agent(host, state.marker, heartbeat, layout.tls, metrics=layout.metrics)
    elif role.endswith("/sb-link") and layout.clustered:
        host = layout.chassis(role.removesuffix("/sb-link"))
        control.start_link(layout, host, state.marker)
        control.wait_links(layout, [host])
    elif role in servers:
        start_ovsdb(servers[role])
    else:
        raise NotFound(
            f"cannot restart {role!r} (northd, hvN/agent and the database servers can be)"
        )


def restart(directory: Path, role: str) -> tuple[int, int]:
    """Stops and starts role; returns (old PID, new PID)."""
    old = stop(directory, role)
    start(directory, role)
    return old, pid(directory, role)


def leader(directory: Path, database: str) -> str:
    """The role of the current Raft leader of database ("nb" or "sb") in a clustered lab."""
    layout = Layout.of(directory)
    if not layout.clustered:
        raise InvalidInput("this lab's databases are not clustered (lab up --clustered)")
    servers, name = _cluster(layout, database)
    found = cluster_leader(servers, name)
    if found is None:
        raise NotFound(f"the {database.upper()} cluster has no leader right now")
    return found.name


def kill_leader(directory: Path, database: str, sig: int = signal.SIGKILL) -> str:
    """Kills the Raft leader of database ("nb" or "sb"); returns its role."""
    role = leader(directory, database)
    kill(directory, role, sig)
    return role


def _cluster(layout: Layout, database: str) -> tuple[list[ServerSpec], str]:
    if database == "nb":
        return layout.nb_servers, schema.NB_NAME
    if database == "sb":
        return layout.sb_servers, schema.SB_NAME
    raise InvalidInput(f"unknown database {database!r} (nb or sb)")


def cut_sb(directory: Path, chassis: str) -> int:
    """Cuts chassis' path to every SB server: its agent's connections drop and its
    reconnects fail until heal_sb (the agent itself keeps running)."""
    return kill(directory, _link_role(directory, chassis), signal.SIGUSR1)


def heal_sb(directory: Path, chassis: str) -> int:
    return kill(directory, _link_role(directory, chassis), signal.SIGUSR2)


def _link_role(directory: Path, chassis: str) -> str:
    state = load(directory)
    state.get_chassis(chassis)
    layout = Layout.of(directory)
    if not layout.clustered:
        raise InvalidInput("only a clustered lab routes agents through SB links")
    if layout.tls is not None:
        raise InvalidInput(
            "a secure lab's agents reach the SB over TLS, not through SB links: stop the "
            "chassis relays instead (lab fault stop sb-chassisN)"
        )
    return f"{chassis}/sb-link"
