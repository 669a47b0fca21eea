"""`liveport vhost ...`: compatibility modes per chassis, the check before a move, and a
mode as QEMU device properties or libvirt XML.

`vhost modes` and `vhost check` read the SB. `vhost qemu-args` and `vhost libvirt-xml`
need the SB only for `--port`: with a MODE they work from the catalogue alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from liveport.cms import migrate, vhost
from liveport.model import frontend, libvirt
from liveport.model.errors import InvalidInput
from liveport.model.untrusted import escape
from liveport.model.virtio import describe
from liveport.vhostuser.catalogue import load_catalogue

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)
AddRemotes = Callable[[argparse.ArgumentParser], None]
Remotes = Callable[[argparse.Namespace], tuple[str, str]]


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


class Commands:
    """The vhost commands, with main's way of finding the databases."""

    def __init__(self, remotes: Remotes) -> None:
        self.remotes = remotes

    def modes(self, args: argparse.Namespace) -> int:
        nb_remote, sb_remote = self.remotes(args)
        only = [c.strip() for c in args.chassis.split(",") if c.strip()] if args.chassis else None
        with migrate.Cms(nb_remote, sb_remote, connect_timeout=args.timeout) as cms:
            per_chassis = vhost.chassis_modes(cms.sb.snapshot(), only)
            doc = vhost.modes_document(cms.catalogue, per_chassis)
        if args.json:
            _print_json(doc)
            return 0
        for name, modes in per_chassis.items():  # chassis publish their modes: escaped
            print(escape(f"{name:<10} {', '.join(modes) or '(none)'}"))
        print(
            escape(
                f"newest mode common to {', '.join(per_chassis) or 'no chassis'}: "
                f"{doc['newest_common'] or 'none'}"
            )
        )
        return 0

    def check(self, args: argparse.Namespace) -> int:
        nb_remote, sb_remote = self.remotes(args)
        with migrate.Cms(nb_remote, sb_remote, connect_timeout=args.timeout) as cms:
            verdict = vhost.check(cms.sb.snapshot(), cms.catalogue, args.port, args.to)
            current = vhost.port_mode(cms.sb.snapshot(), args.port)
        if args.json:
            _print_json(
                {
                    "ok": verdict.ok,
                    "text": verdict.text,
                    "mode": current.mode,
                    "owner": current.owner,
                    "problems": [{"kind": p.kind, "text": p.text} for p in verdict.problems],
                }
            )
        else:
            print(
                escape(
                    verdict.text
                    if not verdict.ok
                    else f"{args.port} ({current.mode or 'no mode'}) can move to {args.to}",
                    limit=2000,
                )
            )
        return 0 if verdict.ok else 1

    def select(self, args: argparse.Namespace) -> vhost.Selection:
        """The mode the command is about: the one named, or the port's (see --to)."""
        to = [c.strip() for item in args.to or [] for c in item.split(",") if c.strip()]
        if (args.mode is None) == (args.port is None):
            raise InvalidInput("give a MODE or --port PORT (one of them)")
        if to and args.port is None:
            raise InvalidInput("--to CHASSIS needs --port PORT")
        if args.mode is not None:
            mode = load_catalogue().get(args.mode)
            return vhost.Selection("", mode, "named")
        return self.port_selection(args, to)

    def port_selection(self, args: argparse.Namespace, to: list[str]) -> vhost.Selection:
        """The SB part of select (the unit tests replace it)."""
        nb_remote, sb_remote = self.remotes(args)
        with migrate.Cms(nb_remote, sb_remote, connect_timeout=args.timeout) as cms:
            return vhost.mode_for_port(cms.sb.snapshot(), cms.catalogue, args.port, to)

    def plan(self, args: argparse.Namespace) -> tuple[vhost.Selection, frontend.DevicePlan]:
        qemu = frontend.QemuVersion.parse(args.qemu)
        selection = self.select(args)
        plan = frontend.device_plan(
            selection.mode, qemu, queue_pairs=args.queues, ring_size=args.ring_size
        )
        return selection, plan

    def qemu_args(self, args: argparse.Namespace) -> int:
        selection, plan = self.plan(args)
        if args.json:
            _print_json({**plan.to_json(), **_selected(selection)})
            return 0
        print(plan.device_args())
        for line in _comments(selection, plan):
            print(f"# {line}")
        return 0

    def libvirt_xml(self, args: argparse.Namespace) -> int:
        selection, plan = self.plan(args)
        xml = libvirt.interface_xml(
            plan,
            alias=args.alias,
            socket=args.socket,
            bridge=args.bridge,
            iface_id=args.iface_id or selection.port or None,
            mac=args.mac,
        )
        if args.json:
            device = libvirt.split(plan)
            _print_json(
                {
                    **plan.to_json(),
                    **_selected(selection),
                    "xml": xml,
                    "overrides": [p.name for p in device.overrides],
                }
            )
            return 0
        sys.stdout.write(xml)
        return 0


def _selected(selection: vhost.Selection) -> dict[str, str]:
    return {"port": selection.port, "selected": selection.why}


def _comments(selection: vhost.Selection, plan: frontend.DevicePlan) -> list[str]:
    who = f" for {selection.port} ({selection.why})" if selection.port else ""
    kept = [t for t in plan.lacking if t.kind != frontend.EMULATED]
    if plan.exact:
        verdict = (
            f"the guest sees none of the {len(kept)} features the mode lacks "
            "(QEMU's own control-queue features aside)"
        )
    else:
        missing = ", ".join(describe(t.bit) for t in plan.cannot)
        verdict = f"QEMU {plan.qemu} cannot keep the guest from {missing}"
    lines = [f"mode {plan.mode}{who} on QEMU {plan.qemu}: {verdict}"]
    if not plan.properties:
        lines.append("no property is needed: QEMU offers nothing the mode lacks")
    return lines + list(plan.notes)


def _add_selectors(p: argparse.ArgumentParser, add_remotes: AddRemotes) -> None:
    p.add_argument("mode", nargs="?", metavar="MODE", help="a mode of the catalogue")
    p.add_argument("--port", help="the mode of this port (read from the SB)")
    p.add_argument(
        "--to",
        action="append",
        metavar="CHASSIS",
        help="with --port: the newest mode common to the port's chassis and these "
        "(repeatable, or comma-separated)",
    )
    p.add_argument(
        "--qemu",
        default=str(frontend.NEWEST_QEMU),
        metavar="VERSION",
        help=f"the QEMU release the properties are for (default {frontend.NEWEST_QEMU}; "
        "an older QEMU refuses properties it does not know, so give yours)",
    )
    p.add_argument("--queues", type=int, default=1, help="queue pairs (default 1)")
    p.add_argument(
        "--ring-size", type=int, help="rx (and, with vhost-user, tx) ring size, 256 to 1024"
    )
    p.add_argument("--json", action="store_true")
    add_remotes(p)


def register(
    subparsers: argparse._SubParsersAction[ParserT],
    add_remotes: AddRemotes,
    remotes: Remotes,
    parser_class: type[ParserT],
) -> None:
    """Adds `vhost modes|check|qemu-args|libvirt-xml` to the liveport command."""
    commands = Commands(remotes)
    vh = subparsers.add_parser("vhost", help="vhost-user compatibility modes")
    vh_sub = vh.add_subparsers(dest="vhost_command", required=True, parser_class=parser_class)

    p = vh_sub.add_parser("modes", help="modes per chassis and the newest common one")
    p.add_argument("--chassis", help="only these chassis (comma-separated)")
    p.add_argument("--json", action="store_true")
    add_remotes(p)
    p.set_defaults(func=commands.modes)

    p = vh_sub.add_parser("check", help="can a port's vhost-user mode run on a chassis?")
    p.add_argument("port")
    p.add_argument("--to", required=True, metavar="CHASSIS")
    p.add_argument("--json", action="store_true")
    add_remotes(p)
    p.set_defaults(func=commands.check)

    p = vh_sub.add_parser(
        "qemu-args", help="the virtio-net-pci properties that hold a guest to a mode"
    )
    _add_selectors(p, add_remotes)
    p.set_defaults(func=commands.qemu_args)

    p = vh_sub.add_parser(
        "libvirt-xml", help="the same as a libvirt <interface> and <qemu:override>"
    )
    _add_selectors(p, add_remotes)
    p.add_argument(
        "--socket",
        help="vhost-user: the socket path, QEMU being its server (default "
        "/run/openvswitch/PORT, or .../vhost-user0 without --port)",
    )
    p.add_argument("--bridge", default="br-int", help="vhost-net: the Open vSwitch bridge")
    p.add_argument("--iface-id", help="vhost-net: external_ids:iface-id (default: --port)")
    p.add_argument("--mac", help="the interface's MAC address")
    p.add_argument("--alias", default="ua-net0", help="the device alias (ua-...)")
    p.set_defaults(func=commands.libvirt_xml)
