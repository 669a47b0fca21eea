"""Fault injection for tests and demos: stop, kill, pause, resume or restart any process of
a lab by its role ("northd", "hv2/agent", "sb", "hv1/ovs-vswitchd", ...). Processes are
found through lab.json and signalled by PID after checking their command line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from liveport.lab import control
from liveport.lab.lab import Layout
from liveport.lab.state import load
from liveport.model.errors import NotFound
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
    if role == "northd":
        control.start_northd(directory, layout.nb, layout.sb, state.marker, dead_after, layout.tls)
    elif role.endswith("/agent"):
        host = layout.chassis(role.removesuffix("/agent"))
        control.start_agent(host, state.marker, heartbeat, layout.tls)
    elif role in ("nb", "sb"):
        start_ovsdb(layout.nb if role == "nb" else layout.sb)
    else:
        raise NotFound(f"cannot restart {role!r} (northd, hvN/agent, nb and sb can be)")


def restart(directory: Path, role: str) -> tuple[int, int]:
    """Stops and starts role; returns (old PID, new PID)."""
    old = stop(directory, role)
    start(directory, role)
    return old, pid(directory, role)
