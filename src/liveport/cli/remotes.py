"""Where the `liveport` commands that talk to databases (status, migrate, migrations, vhost,
doctor, sb setup) find them, and never a lab by surprise:

1. `--dir LAB`: that lab's databases (and, in a secure lab, its CMS credentials);
   `--nb-db`/`--sb-db` and the TLS flags still override.
2. Otherwise flags, then the environment (`$LIVEPORT_NB_DB` or `$OVN_NB_DB`,
   `$LIVEPORT_SB_DB`, `$LIVEPORT_PRIVATE_KEY`, ...), then liveport.conf's `[client]` table and
   shared keys (runtime.config).
3. What is still missing comes from the lab `$LIVEPORT_LAB_DIR` names, if it names one.
4. Otherwise one line says what to give.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from liveport.cli import options
from liveport.cli.tls import apply_tls
from liveport.lab import lab
from liveport.model.errors import InvalidInput
from liveport.runtime import config

LAB_ENV = "LIVEPORT_LAB_DIR"
TLS_KEYS = ("private_key", "certificate", "ca_cert")


def add_options(
    p: argparse.ArgumentParser, *, timeout: float | None = 10.0, with_dir: bool = True
) -> None:
    """--nb-db, --sb-db, TLS, --config, and --dir and --timeout unless told not to."""
    config.add_arguments(p, options.CLIENT)
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"configuration file (default ${config.CONFIG_ENV} or {config.DEFAULT_PATH})",
    )
    if with_dir:
        p.add_argument(
            "--dir", help=f"take the databases from this lab (default: ${LAB_ENV}, if set)"
        )
    if timeout is not None:
        p.add_argument(
            "--timeout",
            type=float,
            default=timeout,
            help="seconds to wait (for the databases, and for migration phases)",
        )


def missing_text(need: Sequence[str], *, with_dir: bool = True) -> str:
    flags = " and ".join(f"--{n}-db" for n in need)
    env = " and ".join("$LIVEPORT_NB_DB" if n == "nb" else "$LIVEPORT_SB_DB" for n in need)
    keys = " and ".join(f"{n}-db" for n in need)
    return (
        f"no database to talk to: give {flags}, set {env}, put {keys} in "
        f"{config.DEFAULT_PATH} (or --config FILE), or name a lab with "
        + (f"--dir or ${LAB_ENV}" if with_dir else f"${LAB_ENV}")
    )


def resolve(
    args: argparse.Namespace,
    need: Sequence[str] = ("nb", "sb"),
    env: Mapping[str, str] = os.environ,
) -> tuple[str, str]:
    """The NB and SB remotes (one may be "" when not needed), with TLS configured."""
    flags = {key: getattr(args, key, None) for key in ("nb_db", "sb_db", *TLS_KEYS)}
    directory = getattr(args, "dir", None)
    if directory is not None:
        return _from_lab(args, Path(directory), flags, need)
    cfg = config.load(getattr(args, "config", None), options.PROGRAMS, env)
    config.resolve(args, options.CLIENT, "client", cfg, env)
    if all(getattr(args, f"{n}_db") for n in need):
        apply_tls(args, {})
        return args.nb_db or "", args.sb_db or ""
    if env.get(LAB_ENV):
        found = {k: v for k, v in vars(args).items() if k in ("nb_db", "sb_db") and v}
        return _from_lab(args, Path(env[LAB_ENV]), {**flags, **found}, need)
    missing = [n for n in need if not getattr(args, f"{n}_db")]
    raise InvalidInput(missing_text(missing, with_dir=hasattr(args, "dir")))


def _from_lab(
    args: argparse.Namespace,
    directory: Path,
    flags: Mapping[str, object],
    need: Sequence[str],
) -> tuple[str, str]:
    path = lab.resolve(directory)
    lab.load_state(path)  # refuses a directory that is not a lab
    lab_env = lab.client_env(path)
    for key, value in flags.items():
        setattr(args, key, value)
    nb = str(args.nb_db or lab_env["LIVEPORT_NB_DB"])
    sb = str(args.sb_db or lab_env["LIVEPORT_SB_DB"])
    apply_tls(args, lab_env)  # a secure lab hands out the CMS credentials
    return nb, sb
