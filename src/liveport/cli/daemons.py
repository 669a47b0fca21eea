"""Entry points of the daemons: `liveport northd` / `liveport-northd` and
`liveport agent` / `liveport-agent`.

Options come from flags, the environment and /etc/liveport/liveport.conf (cli.options,
runtime.config); the daemon's life around its work -- `--detach`, `--pidfile`, the log
file, the control socket, the metrics endpoint, signals -- is runtime.service's. They stop
cleanly on SIGTERM, SIGINT or the `exit` control command.

Each loads only what it runs: northd never imports the agent's OpenFlow codec, nor either
of them the lab, the CMS, the benchmarks or prometheus_client when metrics are off
(`liveport northd` goes through the whole CLI; `liveport-northd` and `python -m
liveport.cli.daemons northd`, which the lab starts, do not). That is a third of a daemon's
memory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from liveport import __version__
from liveport.cli import options
from liveport.cli.tls import apply_tls
from liveport.model.errors import USAGE, InvalidInput, LiveportError
from liveport.model.security import NORTHD_IDENTITY
from liveport.runtime import config, daemon
from liveport.runtime.metrics import parse_address
from liveport.runtime.service import Service, ServiceOptions

log = logging.getLogger("liveport.daemon")

NORTHD_PROGRAM = "liveport-northd"
AGENT_PROGRAM = "liveport-agent"


def version_text(program: str) -> str:
    return f"{program} (liveport) {__version__}"


def _add_common(p: argparse.ArgumentParser, program: str) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"configuration file (default ${config.CONFIG_ENV} or {config.DEFAULT_PATH})",
    )
    p.add_argument("--version", action="version", version=version_text(program))


def add_northd_options(p: argparse.ArgumentParser) -> None:
    config.add_arguments(p, options.NORTHD)
    _add_common(p, NORTHD_PROGRAM)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    config.add_arguments(p, options.AGENT)
    _add_common(p, AGENT_PROGRAM)


def service_options(
    args: argparse.Namespace, program: str, table: str, opts: Sequence[config.Option]
) -> ServiceOptions:
    """Resolves the options (flag > environment > file > default) and the daemon's."""
    config.resolve(args, opts, table, config.load(args.config, options.PROGRAMS))
    pidfile = daemon.default_pidfile(program) if args.pidfile is True else args.pidfile
    log_file = daemon.default_log_file(program) if args.log_file is True else args.log_file
    return ServiceOptions(
        program=program,
        version=__version__,
        pidfile=pidfile,
        overwrite_pidfile=bool(args.overwrite_pidfile),
        detach=bool(args.detach),
        chdir=not args.no_chdir,
        log_file=log_file,
        log_level=args.log_level,
        log_format=args.log_format,
        unixctl=args.unixctl,
        metrics=parse_address(args.metrics_address) if args.metrics_address else None,
    )


def _serve(service: Service, work: Callable[[Service], None]) -> int:
    """Starts the service, runs work in it, cleans up; returns the exit status."""
    try:
        service.start()
    except LiveportError as exc:
        told = service.fail(exc)
        service.close()
        if told:
            return exc.exit_code  # the waiting parent says it
        raise
    try:
        work(service)
    except LiveportError as exc:
        log.error("%s: %s", service.options.program, exc)
        raise
    except Exception:
        log.exception("%s: failed", service.options.program)
        raise
    finally:
        service.close()
    return 0


def run_northd(args: argparse.Namespace) -> int:
    settings = service_options(args, NORTHD_PROGRAM, "northd", options.NORTHD)
    if not args.nb_db or not args.sb_db:
        raise InvalidInput(
            "northd needs the NB and the SB: give --nb-db and --sb-db, set $LIVEPORT_NB_DB "
            f"and $LIVEPORT_SB_DB, or put nb-db and sb-db in {args.config or config.DEFAULT_PATH}"
        )
    identity = apply_tls(args)
    if identity is not None and identity != NORTHD_IDENTITY:
        raise InvalidInput(
            f"northd's certificate is for {identity!r}, not {NORTHD_IDENTITY!r}: the SB lets "
            "only that identity write northd's rows (liveport pki issue northd)"
        )

    def work(service: Service) -> None:
        # Imported here: see the module docstring.
        from liveport.northd import control  # noqa: PLC0415
        from liveport.northd.northd import Northd, NorthdConfig  # noqa: PLC0415
        from liveport.northd.observe import (  # noqa: PLC0415
            NorthdMetrics,
            NorthdObserver,
            NorthdState,
        )

        northd = Northd(NorthdConfig(args.nb_db, args.sb_db, dead_after=args.dead_after))
        service.on_stop.append(northd.wake)
        try:
            if service.registry is not None:
                northd.observer = NorthdObserver(
                    NorthdMetrics(
                        service.registry,
                        lambda: NorthdState(
                            northd.nb.snapshot(),
                            northd.sb.snapshot(),
                            northd.active,
                            # copies: the worker thread changes these dicts
                            {c: v.shed for c, v in dict(northd.limits.shares).items()},
                            dict(northd.limits.deferred_total),
                            dict(northd.limits.changes_total),
                        ),
                        __version__,
                    )
                )
            assert service.control is not None
            control.register(service.control, northd)
            northd.run(service.stop)
        finally:
            northd.close()

    return _serve(Service(settings), work)


def run_agent(args: argparse.Namespace) -> int:
    settings = service_options(args, AGENT_PROGRAM, "agent", options.AGENT)
    identity = apply_tls(args)
    from liveport.openflow import light  # noqa: PLC0415 - see the module docstring

    light.install()  # os-ken's codec without the rest of os-ken (openflow.light)
    from liveport.agent import agent as agentlib  # noqa: PLC0415
    from liveport.agent import control  # noqa: PLC0415
    from liveport.agent.observe import AgentMetrics, AgentObserver, AgentState  # noqa: PLC0415

    agent_config = agentlib.AgentConfig(
        ovs_remote=args.ovs_db,
        sb_remote=args.sb_db,
        chassis=args.chassis,
        mgmt_socket=args.mgmt_socket,
        vswitchd_ctl=args.vswitchd_ctl,
        heartbeat_interval=args.heartbeat,
        tls_identity=identity,
    )

    def state(agent: agentlib.Agent) -> AgentState:
        of = agent.of
        return AgentState(
            agent.memory,
            agent.ovs.snapshot() if agent.ovs is not None else None,
            agent.sb.snapshot() if agent.sb is not None else None,
            of is not None and not of.closed,
            of.dropped_packet_ins if of is not None else 0,
        )

    async def main(service: Service) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def stop_soon() -> None:
            loop.call_soon_threadsafe(stop.set)

        service.on_stop.append(stop_soon)
        if service.stop.is_set():
            stop.set()
        agent = agentlib.Agent(agent_config)
        if service.registry is not None:
            agent.observer = AgentObserver(
                AgentMetrics(service.registry, lambda: state(agent), __version__)
            )
        assert service.control is not None
        control.register(service.control, agent, loop)
        await agent.run(stop)

    return _serve(Service(settings), lambda service: asyncio.run(main(service)))


Adder = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _main(argv: Sequence[str] | None, prog: str, add: Adder, run: Runner) -> int:
    parser = _Parser(prog=prog)
    add(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LiveportError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def northd_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, NORTHD_PROGRAM, add_northd_options, run_northd)


def agent_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, AGENT_PROGRAM, add_agent_options, run_agent)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m liveport.cli.daemons northd|agent [options]`, as the lab starts them."""
    args = list(sys.argv[1:] if argv is None else argv)
    mains = {"northd": northd_main, "agent": agent_main}
    if not args or args[0] not in mains:
        print("usage: python -m liveport.cli.daemons northd|agent [options]", file=sys.stderr)
        return USAGE
    return mains[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
