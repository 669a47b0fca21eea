"""Entry points of the daemons: `liveport northd` / `liveport-northd` and
`liveport agent` / `liveport-agent`. They log to a file (or stderr), write a pidfile, and
stop cleanly on SIGTERM or SIGINT.

Each loads only what it runs: northd never imports the agent's OpenFlow codec, nor either
of them the lab, the CMS or the benchmarks (`liveport northd` goes through the whole CLI;
`liveport-northd` and `python -m liveport.cli.daemons northd`, which the lab starts, do
not). That is a third of a daemon's memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from liveport.cli.tls import add_tls_options, apply_tls
from liveport.model.errors import InvalidInput, LiveportError
from liveport.model.security import NORTHD_IDENTITY
from liveport.openflow import light
from liveport.runtime import logs
from liveport.runtime.process import write_pidfile


def add_daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pidfile", type=Path, help="write the PID here")
    p.add_argument("--log-file", type=Path, help="log here instead of stderr")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def add_northd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nb-db",
        default=os.environ.get("LIVEPORT_NB_DB", os.environ.get("OVN_NB_DB")),
        help="NB remote(s), comma-separated (default $LIVEPORT_NB_DB or $OVN_NB_DB)",
    )
    p.add_argument(
        "--sb-db",
        default=os.environ.get("LIVEPORT_SB_DB"),
        help="SB remote(s), comma-separated (default $LIVEPORT_SB_DB)",
    )
    p.add_argument(
        "--dead-after",
        type=float,
        default=10.0,
        help="seconds without a heartbeat before a chassis is declared dead",
    )
    add_tls_options(p)
    add_daemon_options(p)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ovs-db",
        default="unix:/var/run/openvswitch/db.sock",
        help="this chassis' Open_vSwitch database",
    )
    p.add_argument(
        "--sb-db", help="SB remote(s) (default: Open_vSwitch external_ids:liveport-remote)"
    )
    p.add_argument("--chassis", help="chassis name (default: external_ids:system-id)")
    p.add_argument("--mgmt-socket", help="the bridge's OpenFlow management socket")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    add_tls_options(p)
    add_daemon_options(p)


def _start(args: argparse.Namespace) -> None:
    logs.configure(args.log_level, args.log_file)
    if args.pidfile is not None:
        write_pidfile(args.pidfile)


def run_northd(args: argparse.Namespace) -> int:
    if not args.nb_db or not args.sb_db:
        raise LiveportError("northd needs --nb-db and --sb-db (or $LIVEPORT_NB_DB/$LIVEPORT_SB_DB)")
    identity = apply_tls(args)
    if identity is not None and identity != NORTHD_IDENTITY:
        raise InvalidInput(
            f"northd's certificate is for {identity!r}, not {NORTHD_IDENTITY!r}: the SB lets "
            "only that identity write northd's rows (liveport pki issue northd)"
        )
    _start(args)
    from liveport.northd.northd import Northd, NorthdConfig  # noqa: PLC0415 - see above

    stop = threading.Event()
    northd = Northd(NorthdConfig(args.nb_db, args.sb_db, dead_after=args.dead_after))

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        northd.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        northd.run(stop)
    finally:
        northd.close()
    return 0


def run_agent(args: argparse.Namespace) -> int:
    identity = apply_tls(args)
    _start(args)
    light.install()  # os-ken's codec without the rest of os-ken (openflow.light)
    from liveport.agent import agent as agentlib  # noqa: PLC0415 - see above

    agentlib.run(
        agentlib.AgentConfig(
            ovs_remote=args.ovs_db,
            sb_remote=args.sb_db,
            chassis=args.chassis,
            mgmt_socket=args.mgmt_socket,
            heartbeat_interval=args.heartbeat,
            tls_identity=identity,
        )
    )
    return 0


Adder = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], int]


def _main(argv: Sequence[str] | None, prog: str, add: Adder, run: Runner) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    add(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LiveportError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def northd_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "liveport-northd", add_northd_options, run_northd)


def agent_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "liveport-agent", add_agent_options, run_agent)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m liveport.cli.daemons northd|agent [options]`, as the lab starts them."""
    args = list(sys.argv[1:] if argv is None else argv)
    mains = {"northd": northd_main, "agent": agent_main}
    if not args or args[0] not in mains:
        print("usage: python -m liveport.cli.daemons northd|agent [options]", file=sys.stderr)
        return 2
    return mains[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
