"""`liveport libvirt-hook` and `liveport libvirt-watch`: the hypervisor side of the
migration-status form (M6) on a libvirt host (liveport.virt; docs/operations.md).

The hook is a short process libvirtd waits for: it loads only what it runs (the OVSDB
client and the domain model), not the whole CLI. `python -m liveport.cli.virt hook|watch`
and the programs `liveport-libvirt-hook`, `liveport-libvirt-watch` are the light entries;
`liveport libvirt-hook|libvirt-watch` reach the same code through the full CLI.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from liveport.model.domain import HookAction, hook_action
from liveport.model.errors import USAGE, InvalidInput, LiveportError

DEFAULT_OVS_DB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_URI = "qemu:///system"


def add_hook_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", help="libvirt's: DOMAIN OPERATION SUB-OPERATION EXTRA")
    p.add_argument("--ovs-db", default=DEFAULT_OVS_DB, help="this host's Open_vSwitch database")
    p.add_argument(
        "--plug-type",
        metavar="TYPE",
        help="plug vhost-user VIFs named in the domain's liveport metadata as Interfaces of "
        "this type (dpdkvhostuserclient for OVS-DPDK; dummy in the lab, where liveport's "
        "back-end serves the socket); by default the cloud (os-vif) plugs them",
    )
    p.add_argument("--bridge", help="the bridge to plug into (default: the agent's, br-int)")
    p.add_argument("--log-file", type=Path, help="append what the hook does to FILE")


def add_watch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", default=DEFAULT_URI, metavar="URI", help="libvirtd to follow")
    p.add_argument("--ovs-db", default=DEFAULT_OVS_DB, help="this host's Open_vSwitch database")
    p.add_argument(
        "--hold",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="after the guest resumed here, keep `incoming` this long (its announcements)",
    )
    p.add_argument(
        "--job-poll",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="look for outgoing migration jobs this often (libvirt sends no event when "
        "one starts; 0: rely on the migration-iteration event alone)",
    )
    p.add_argument("--log-file", type=Path, help="log to FILE instead of stderr")


def _logging(log_file: Path | None, level: int) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file is not None else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(message)s"))
    root = logging.getLogger("liveport")
    root.addHandler(handler)
    root.setLevel(level)


def run_hook(args: argparse.Namespace) -> int:
    if len(args.args) < 3:
        raise InvalidInput(
            "libvirt calls its qemu hook with DOMAIN OPERATION SUB-OPERATION [EXTRA]"
        )
    xml = sys.stdin.read()
    if hook_action(args.args[1], args.args[2]) == HookAction.NOTHING:
        return 0  # most calls: done before the OVSDB client is even loaded
    from liveport.virt import hook  # noqa: PLC0415 - see the module docstring

    # A hook logs to its file only: libvirt shows stderr only when the hook fails.
    _logging(args.log_file, logging.INFO if args.log_file else logging.CRITICAL)
    options = hook.HookOptions(args.ovs_db, plug_type=args.plug_type, bridge=args.bridge)
    try:
        hook.run(list(args.args), xml, options)
    except LiveportError as exc:
        log = logging.getLogger("liveport.virt")
        log.error("libvirt-hook %s: %s", " ".join(args.args), exc)
        raise
    return 0


def run_watch(args: argparse.Namespace) -> int:
    from liveport.virt import watch  # noqa: PLC0415

    for flag, value in (("--hold", args.hold), ("--job-poll", args.job_poll)):
        if value < 0:
            raise InvalidInput(f"{flag} takes seconds, 0 or more, not {value:g}")
    _logging(args.log_file, logging.INFO)
    stop = threading.Event()

    def stopping(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    options = watch.WatchOptions(args.connect, args.ovs_db, hold=args.hold, job_poll=args.job_poll)
    watch.Watcher(options).run(stop)
    return 0


def _main(argv: Sequence[str] | None, program: str, add: object, run: object) -> int:
    parser = argparse.ArgumentParser(prog=program)
    add(parser)  # type: ignore[operator]
    args = parser.parse_args(argv)
    try:
        result: int = run(args)  # type: ignore[operator]
    except LiveportError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return result


def hook_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "liveport-libvirt-hook", add_hook_options, run_hook)


def watch_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "liveport-libvirt-watch", add_watch_options, run_watch)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m liveport.cli.virt hook|watch [options]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    mains = {"hook": hook_main, "watch": watch_main}
    if not args or args[0] not in mains:
        print("usage: python -m liveport.cli.virt hook|watch [options]", file=sys.stderr)
        return USAGE
    return mains[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
