"""`liveport pki`: create a deployment's two CAs, issue certificates, list them.

The trust model and the directory layout are described in liveport.runtime.pki.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from liveport.model.errors import InvalidInput
from liveport.runtime import pki

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)

# northd and the CMS have one identity per deployment; NAME only names their files.
DEFAULT_NAMES = {"northd": "northd", "cms": "cms"}


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_pki_init(args: argparse.Namespace) -> int:
    directory = pki.resolve(args.dir)
    pki.init(directory, days=args.days)
    if args.json:
        _print_json(
            {
                "directory": str(directory),
                "control_ca": str(directory / "control-ca.pem"),
                "chassis_ca": str(directory / "chassis-ca.pem"),
            }
        )
        return 0
    print(f"PKI created in {directory}")
    print(f"  control CA  {directory / 'control-ca.pem'}  (NB, SB, northd, CMS)")
    print(f"  chassis CA  {directory / 'chassis-ca.pem'}  (hypervisors)")
    print("  the NB and SB servers trust the control CA, the SB's chassis relay the chassis CA")
    return 0


def cmd_pki_issue(args: argparse.Namespace) -> int:
    name = args.name or DEFAULT_NAMES.get(args.kind)
    if not name:
        raise InvalidInput(f"pki issue {args.kind} needs a NAME")
    creds = pki.issue(
        pki.resolve(args.dir),
        args.kind,
        name,
        days=args.days,
        hosts=args.host or (),
        force=args.force,
    )
    if args.json:
        _print_json({"name": name, "kind": args.kind, **creds.to_json()})
    else:
        print(f"private key  {creds.private_key}")
        print(f"certificate  {creds.certificate}")
        print(f"CA cert      {creds.ca_cert}")
    return 0


def cmd_pki_list(args: argparse.Namespace) -> int:
    infos = pki.list_certificates(pki.resolve(args.dir))
    if args.json:
        _print_json([info.to_json() for info in infos])
        return 0
    rows = [("NAME", "KIND", "CN", "ISSUER", "EXPIRES", "")]
    rows += [
        (
            info.name,
            info.kind,
            info.common_name,
            info.issuer,
            info.not_after.strftime("%Y-%m-%d %H:%M"),
            "EXPIRED" if info.expired else "",
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _add_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help=f"PKI directory (default ${pki.DIR_ENV} or {pki.DEFAULT_DIR})")


def register(subparsers: argparse._SubParsersAction[ParserT]) -> None:
    """Add `pki init|issue|list` to the command's sub-commands."""
    pki_p = subparsers.add_parser("pki", help="the CAs and certificates for TLS to the databases")
    pki_sub = pki_p.add_subparsers(dest="pki_command", required=True, parser_class=type(pki_p))

    p = pki_sub.add_parser("init", help="create the control and chassis CAs")
    _add_dir(p)
    p.add_argument("--days", type=int, default=3650, help="CA validity in days (default 3650)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pki_init)

    p = pki_sub.add_parser("issue", help="issue a key and certificate")
    p.add_argument(
        "kind",
        choices=pki.KINDS,
        help="chassis: a hypervisor (CN = NAME, chassis CA); northd, cms: the control "
        "identities; server: a database server (CN = NAME)",
    )
    p.add_argument(
        "name", nargs="?", help="file name (and CN of chassis and server); default northd/cms"
    )
    _add_dir(p)
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument(
        "--host",
        action="append",
        help="server only: a subjectAltName, IP or DNS name (repeatable; "
        "default 127.0.0.1 and localhost)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing key and certificate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pki_issue)

    p = pki_sub.add_parser("list", help="the CAs and issued certificates, with expiry")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pki_list)
