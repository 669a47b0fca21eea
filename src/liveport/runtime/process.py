"""Starting daemons detached, and stopping exactly the ones we started.

Every daemon is described by a DaemonRef: the pidfile it writes (or that we write for it) and
a marker string that must appear in its command line (liveport uses the lab or state
directory). A PID is acted on only when /proc/PID/cmdline still contains the marker, so a
recycled PID is never signalled. Nothing here looks processes up by name.

Daemons are started outside our process tree (OVS daemons with --detach, our own through a
shell that backgrounds them), so the starting process can exit, and a test process that
starts labs in-process never accumulates zombies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveport.model.errors import LiveportError


class DaemonError(LiveportError):
    """A daemon failed to start."""


@dataclass(frozen=True)
class DaemonRef:
    role: str
    pidfile: Path
    marker: str

    def pid(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except (FileNotFoundError, PermissionError):
            return None
        return int(text) if text.isdigit() else None

    def running_pid(self) -> int | None:
        """The daemon's PID if that process is alive and is still ours, else None."""
        pid = self.pid()
        if pid is None or not is_alive(pid):
            return None
        return pid if self.marker in cmdline(pid) else None


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def is_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain ')'.
    state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
    return state not in ("Z", "X")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def spawn_ovs_daemon(
    argv: Sequence[str],
    *,
    pidfile: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    extra_flags: Sequence[str] = ("-vconsole:off",),
) -> int:
    """Starts an OVS daemon (ovsdb-server, ovs-vswitchd, ovn-*) detached; returns its PID.

    OVS's --detach returns only once the daemon is ready and has written its pidfile.
    """
    full = [
        *argv,
        "--detach",
        "--no-chdir",
        f"--pidfile={pidfile}",
        f"--log-file={log_file}",
        *extra_flags,
    ]
    result = subprocess.run(
        full,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise DaemonError(f"{argv[0]} failed to start: {_last_line(result.stderr)}")
    ref = DaemonRef(argv[0], pidfile, str(pidfile.parent))
    pid = ref.pid()
    if pid is None:
        raise DaemonError(f"{argv[0]} started but wrote no pidfile {pidfile}")
    return pid


_BACKGROUND = 'exec 0</dev/null; "$@" >>"$LIVEPORT_DAEMON_LOG" 2>&1 & echo $!'


def spawn_detached(
    argv: Sequence[str], *, pidfile: Path, log_file: Path, env: Mapping[str, str] | None = None
) -> int:
    """Starts argv in the background outside our process tree; writes and returns its PID.

    The child is expected to write the same pidfile itself when it starts; writing it here
    too means the PID is on disk before this function returns, whatever happens next.
    """
    run_env = dict(os.environ if env is None else env)
    run_env["LIVEPORT_DAEMON_LOG"] = str(log_file)
    result = subprocess.run(
        ["/bin/sh", "-c", _BACKGROUND, "sh", *argv],
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
    )
    out = result.stdout.strip()
    if result.returncode != 0 or not out.isdigit():
        raise DaemonError(f"{argv[0]} failed to start: {_last_line(result.stderr)}")
    pid = int(out)
    write_pidfile(pidfile, pid)
    return pid


def write_pidfile(pidfile: Path, pid: int | None = None) -> None:
    """Atomically writes pid (default: ours) to pidfile. (Not through `<pidfile>.tmp`: a
    daemon that writes its own pidfile as OVS does locks that name.)"""
    tmp = pidfile.with_name(f"{pidfile.name}.{os.getpid()}.new")
    tmp.write_text(f"{os.getpid() if pid is None else pid}\n")
    tmp.replace(pidfile)


def stop_daemons(refs: Iterable[DaemonRef], *, timeout: float = 10.0) -> list[tuple[str, int]]:
    """Sends SIGTERM to each daemon that is still ours, waits, then SIGKILLs stragglers.

    Returns (role, pid) of every process that was signalled.
    """
    signalled: list[tuple[str, int]] = []
    for ref in refs:
        pid = ref.running_pid()
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        signalled.append((ref.role, pid))
    deadline = time.monotonic() + timeout
    remaining = [pid for _, pid in signalled]
    while remaining:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining:
            break
        if time.monotonic() >= deadline:
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            remaining = _wait_gone(remaining, deadline)
            break
        time.sleep(0.01)
    return signalled


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if is_alive(pid)]
        time.sleep(0.01)
    return pids
