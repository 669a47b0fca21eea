"""`liveport doctor` and `liveport lab doctor`: compare the NB, the SB and every chassis'
flows (liveport.cms.doctor) and print each difference.

Exit status: 0 consistent, 1 differences found, 2 a usage error, 6 a database or switch
that cannot be read (model.errors has the table).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from liveport.cli import remotes
from liveport.cli.tls import apply_tls
from liveport.cms import doctor
from liveport.lab import lab
from liveport.model.errors import InvalidInput

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)

DEFAULT_SETTLE = 5.0


def parse_switch(text: str) -> doctor.SwitchAccess:
    """NAME=OVS_REMOTE[,MGMT_SOCKET]: the remote may itself be a comma-separated list; a
    last item that is a path (not METHOD:...) is the bridge's management socket."""
    name, sep, rest = text.partition("=")
    items = [item.strip() for item in rest.split(",") if item.strip()]
    if not sep or not name.strip() or not items:
        raise InvalidInput(f"--switch takes NAME=OVS_REMOTE[,MGMT_SOCKET], not {text!r}")
    mgmt = None
    if len(items) > 1 and items[-1].startswith(("/", ".")):
        mgmt = items.pop()
    for remote in items:
        if ":" not in remote:
            raise InvalidInput(
                f"--switch {name}: {remote!r} is not an OVSDB remote (unix:PATH, tcp:IP:PORT, "
                "ssl:IP:PORT) nor, in last place, a socket path"
            )
    return doctor.SwitchAccess(name.strip(), ",".join(items), mgmt)


def lab_switches(directory: Path) -> list[doctor.SwitchAccess]:
    """Every chassis of a lab: its Open_vSwitch database and br-int's management socket."""
    layout = lab.Layout.of(directory)
    return [
        doctor.SwitchAccess(
            entry.name,
            layout.chassis(entry.name).db_remote,
            str(layout.chassis(entry.name).mgmt_socket()),
        )
        for entry in lab.load_state(directory).chassis
    ]


def _report(report: doctor.Report, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for finding in report.differences:
            print(finding)
        for note in report.notes:
            print(f"note: {note}")
        print(report.summary())
    return 0 if report.consistent else 1


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    switches = [parse_switch(text) for text in args.switch or []]
    nb, sb = remotes.resolve(args, env=env)  # flags, environment, liveport.conf; never a lab
    report = doctor.examine(nb, sb, switches, settle=args.settle, timeout=args.timeout)
    return _report(report, args.json)


def cmd_lab_doctor(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    switches = lab_switches(directory)  # refuses a directory that is not a lab
    env = lab.client_env(directory)
    apply_tls(argparse.Namespace(), env)  # a secure lab hands out the CMS credentials
    report = doctor.examine(
        env["LIVEPORT_NB_DB"],
        env["LIVEPORT_SB_DB"],
        switches,
        settle=args.settle,
        timeout=args.timeout,
    )
    return _report(report, args.json)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE,
        help="seconds a converging system may take: differences are checked again after "
        f"every database change until none is left or this time has passed (default "
        f"{DEFAULT_SETTLE:g}; 0 checks once)",
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each database or switch"
    )
    p.add_argument("--json", action="store_true")


def register(
    subparsers: argparse._SubParsersAction[ParserT],
    lab_subparsers: argparse._SubParsersAction[ParserT],
) -> None:
    """Add `doctor` to the command's sub-commands and `doctor` to `lab`'s."""
    p = subparsers.add_parser(
        "doctor", help="compare NB, SB and every chassis' flows; report each difference"
    )
    remotes.add_options(p, timeout=None, with_dir=False)
    p.add_argument(
        "--switch",
        action="append",
        metavar="NAME=OVS_REMOTE[,MGMT_SOCKET]",
        help="also compare chassis NAME's flows: its Open_vSwitch database and its bridge's "
        "management socket (default: next to a unix: database socket, else "
        f"{doctor.DEFAULT_RUNDIR}/br-int.mgmt); repeatable",
    )
    _add_common(p)
    p.set_defaults(func=cmd_doctor)

    p = lab_subparsers.add_parser(
        "doctor", help="liveport doctor on a lab: its databases and every chassis' switch"
    )
    p.add_argument("--dir", help=f"lab directory (default $LIVEPORT_LAB_DIR or {lab.DEFAULT_DIR})")
    _add_common(p)
    p.set_defaults(func=cmd_lab_doctor)
