"""`liveport ctl [--target northd|agent|SOCKET] COMMAND [ARG...]`: ovs-appctl for liveport's
daemons, on python-ovs's unixctl client.

The target is found as ovs-appctl finds one: a daemon name means the daemon whose pidfile
is `<rundir>/liveport-<name>.pid` (rundir: `$LIVEPORT_RUNDIR` or /run/liveport), whose
control socket is `<rundir>/liveport-<name>.<pid>.ctl`; anything with a '/' is the socket
itself. Without --target, the one liveport daemon running here. `--json` asks the daemon
for its answer as one JSON document (every liveport command takes it).

Exit status (model.errors): 0, 2 the daemon refused the command (unknown, bad arguments),
3 no answer within --timeout, 4 no such daemon running, 6 its socket cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import ovs.unixctl.client

from liveport.model.errors import InvalidInput, NotFound, Timeout, Unavailable
from liveport.runtime import daemon
from liveport.runtime.control import default_path

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)

DAEMONS = {"northd": "liveport-northd", "agent": "liveport-agent"}


def socket_of(target: str | None, rundir: Path | None = None) -> Path:
    """The control socket a target names (see the module docstring)."""
    rundir = rundir or daemon.rundir()
    if target is not None and "/" in target:
        return Path(target)
    if target is None:
        running = [p for p in DAEMONS.values() if daemon.running_pid(rundir / f"{p}.pid")]
        if len(running) != 1:
            found = ", ".join(running) or "none"
            raise InvalidInput(
                f"give --target northd, agent or a socket path (liveport daemons running with "
                f"pidfiles in {rundir}: {found})"
            )
        program = running[0]
    else:
        program = DAEMONS.get(target, target)
        if program not in DAEMONS.values():
            raise InvalidInput(f"--target takes northd, agent or a socket path, not {target!r}")
    pidfile = rundir / f"{program}.pid"
    pid = daemon.running_pid(pidfile)
    if pid is None:
        raise NotFound(f"{program} is not running (no process holds {pidfile})")
    return default_path(rundir, program, pid)


def _alarm(signum: int, frame: object) -> NoReturn:
    raise Timeout("no answer in time (--timeout)")


def call(path: Path, command: str, args: list[str], timeout: float) -> str:
    """One command through python-ovs's unixctl client; the reply's text."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        error, client = ovs.unixctl.client.UnixctlClient.create(str(path))
        if error:
            raise Unavailable(f"cannot connect to {path}: {_strerror(error)}")
        try:
            error, refused, result = client.transact(command, args)
        finally:
            client.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if error:
        raise Unavailable(f"{path}: {_strerror(error)}")
    if refused is not None:
        raise InvalidInput(f"{command}: {str(refused).strip()}")
    return str(result or "")


def _strerror(error: int) -> str:
    import os  # noqa: PLC0415 - only for messages

    return os.strerror(error) if error > 0 else "connection closed"


def cmd_ctl(args: argparse.Namespace) -> int:
    path = socket_of(args.target)
    argv = ["--json", *args.args] if args.json else list(args.args)
    text = call(path, args.command, argv, args.timeout)
    if args.json:
        try:
            doc: Any = json.loads(text)
        except ValueError:
            doc = {"text": text}
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif text:
        print(text.rstrip("\n"))
    return 0


def register(subparsers: argparse._SubParsersAction[ParserT]) -> None:
    """Add `ctl` to the command's sub-commands."""
    p = subparsers.add_parser(
        "ctl", help="run a control command of a running daemon (as ovs-appctl does)"
    )
    p.add_argument(
        "--target",
        "-t",
        help="northd, agent (their pidfiles in $LIVEPORT_RUNDIR or /run/liveport) or a "
        "control socket path (default: the one liveport daemon running)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    p.add_argument("command", help="e.g. connection-status, coverage/show, vlog/set, help")
    p.add_argument("args", nargs="*", help="the command's arguments")
    p.set_defaults(func=cmd_ctl)
