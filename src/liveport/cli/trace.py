"""`liveport trace`: a packet through one chassis' flows (liveport.cms.trace).

Exit status: 0 the trace was made (whatever its verdict), 2 a bad description or
arguments, 4 an unknown chassis, port or switch, 6 a database or switch that cannot be
read (model.errors has the table).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TypeVar

from liveport.cli import remotes
from liveport.cli.doctor import lab_switches
from liveport.cms import doctor
from liveport.cms import trace as tracing
from liveport.lab import lab
from liveport.model.errors import InvalidInput, NotFound
from liveport.model.trace import parse_packet

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)

DEFAULT_OVS_DB = f"unix:{doctor.DEFAULT_RUNDIR}/db.sock"


def _access(args: argparse.Namespace) -> doctor.SwitchAccess:
    directory = args.dir or (os.environ.get(remotes.LAB_ENV) if not args.ovs_db else None)
    if directory and not args.ovs_db:
        for access in lab_switches(lab.resolve(Path(directory))):
            if access.chassis == args.chassis:
                return access
        raise NotFound(f"the lab has no chassis {args.chassis!r}")
    return doctor.SwitchAccess(args.chassis, args.ovs_db or DEFAULT_OVS_DB, args.mgmt_socket)


def cmd_trace(args: argparse.Namespace) -> int:
    if args.inport is not None and args.from_chassis is not None:
        raise InvalidInput("the packet enters at --inport or from --from-chassis, not both")
    parse_packet(args.packet)  # a bad description fails before anything is reached
    access = _access(args)
    _, sb = remotes.resolve(args, need=("sb",))
    result = tracing.trace(
        sb,
        access,
        args.packet,
        inport=args.inport,
        from_chassis=args.from_chassis,
        switch=args.switch,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(result.lines()))
    return 0


def register(subparsers: argparse._SubParsersAction[ParserT]) -> None:
    p = subparsers.add_parser(
        "trace",
        help="what a chassis' switch does with a packet: each flow it meets, and why it "
        "ends where it does",
        description="PACKET is field == value terms of the ACL match language joined by && "
        '(inport == "vm1" && eth.dst == 00:00:00:00:00:02 && ip4.dst == 10.0.0.2 && udp.dst '
        "== 53), or the same as comma-separated field=value items and protocol names "
        "(eth.dst=00:00:00:00:00:02, ip4.dst=10.0.0.2, udp, udp.dst=53). eth.src and the "
        "source IP default to the inport's, eth.dst to the MAC of the port that has ip4.dst "
        "or ip6.dst, TCP/UDP ports to 49152 -> 9; the rest to zero or the usual (TTL 64, a "
        "TCP SYN, an ICMP echo request, an ARP request).",
    )
    p.add_argument("packet", help="the packet (see above)")
    p.add_argument("--chassis", required=True, help="the chassis whose switch is asked")
    p.add_argument("--inport", help="the logical port whose VIF on the chassis sends it")
    p.add_argument(
        "--from-chassis",
        metavar="CHASSIS",
        help="the packet arrives through the tunnel from this chassis instead",
    )
    p.add_argument(
        "--switch", help="the logical switch of a tunnelled packet (default: from eth.dst)"
    )
    p.add_argument(
        "--ovs-db",
        metavar="REMOTE",
        help=f"the chassis' Open_vSwitch database (default: the lab's, else {DEFAULT_OVS_DB})",
    )
    p.add_argument(
        "--mgmt-socket",
        metavar="PATH",
        help="the bridge's OpenFlow management socket (default: next to a unix: database socket)",
    )
    remotes.add_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trace)
