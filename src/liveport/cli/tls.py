"""TLS options shared by the daemons and the client commands, named as in ovn-controller and
ovn-nbctl (-p/-c/-C), with environment defaults for scripts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from liveport.model.errors import InvalidInput
from liveport.ovsdb.client import configure_tls

ENV = {
    "private_key": "LIVEPORT_PRIVATE_KEY",
    "certificate": "LIVEPORT_CERTIFICATE",
    "ca_cert": "LIVEPORT_CA_CERT",
}


def add_tls_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS (for ssl: remotes)")
    g.add_argument(
        "-p", "--private-key", type=Path, help=f"this client's private key (${ENV['private_key']})"
    )
    g.add_argument(
        "-c", "--certificate", type=Path, help=f"its certificate (${ENV['certificate']})"
    )
    g.add_argument(
        "-C", "--ca-cert", type=Path, help=f"the CA that signed the servers (${ENV['ca_cert']})"
    )


def tls_files(
    args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> tuple[Path, Path, Path] | None:
    """The three files, all from the options or else all from the environment (never a mix:
    a key from one identity with the certificate of another fails obscurely); None when
    neither names any."""
    options = {attr: getattr(args, attr, None) for attr in ENV}
    if any(v is not None for v in options.values()):
        given, where = options, "--"
    else:
        given = {attr: Path(env[var]) if var in env else None for attr, var in ENV.items()}
        where = "$"
    missing = [attr for attr, value in given.items() if value is None]
    if len(missing) == len(given):
        return None
    if missing:
        names = ", ".join(
            f"--{a.replace('_', '-')}" if where == "--" else f"${ENV[a]}" for a in missing
        )
        raise InvalidInput(
            f"TLS needs all three of --private-key, --certificate, --ca-cert ({names} missing)"
        )
    key, cert, ca = (given[a] for a in ENV)
    assert key is not None and cert is not None and ca is not None
    return key, cert, ca


def apply_tls(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str | None:
    """Configures this process' TLS identity; returns the certificate's Common Name (the
    identity the SB server's RBAC sees), or None without TLS."""
    files = tls_files(args, env)
    if files is None:
        return None
    configure_tls(*files)
    from liveport.runtime import pki  # noqa: PLC0415 - cryptography only when TLS is on

    return pki.common_name(files[1])
