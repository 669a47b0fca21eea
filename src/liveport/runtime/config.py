"""The configuration file /etc/liveport/liveport.conf (TOML) and the precedence of settings.

Every key is a program's command-line flag without its dashes (`nb-db`, `dead-after`,
`log-file`, ...), one to one: a program's options are declared once (`Option`), and the
parser and the file both come from that declaration. Keys at the top of the file are
shared: every program that has the flag takes them. A table per program (`[northd]`,
`[agent]`, `[client]` for the `liveport` commands) overrides them for that program.

Precedence, per setting: flag > environment variable (where the option has one) > the
program's table > the shared keys > the default. Options of a group (TLS: private key,
certificate, CA certificate) come together from the first of those sources that names any
of them: a key from one identity with the certificate of another fails obscurely.

The file is `--config PATH`, else `$LIVEPORT_CONFIG`, else /etc/liveport/liveport.conf
when it exists. A file that was named but is missing, a TOML syntax error, an unknown key or
a value of the wrong type is a one-line error naming the file and the key. The whole file is
checked by every program that reads it, tables of other programs included.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from liveport.model.errors import InvalidInput, NotFound

DEFAULT_PATH: Final = Path("/etc/liveport/liveport.conf")
CONFIG_ENV: Final = "LIVEPORT_CONFIG"
KINDS: Final = ("str", "float", "int", "bool", "path", "optional-path")


@dataclass(frozen=True)
class Option:
    """One setting: flag `--KEY`, configuration key KEY, attribute KEY with '_' for '-'.

    kinds: str, float, int, bool (a flag without value), path, optional-path (a flag whose
    value may be left out, `--pidfile[=FILE]`: True then means the default file).
    """

    key: str
    kind: str
    help: str
    default: Any = None
    env: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    short: tuple[str, ...] = ()
    group: str = ""
    metavar: str | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def dest(self) -> str:
        return self.key.replace("-", "_")

    def convert(self, value: Any, where: str) -> Any:
        """A value from the file (TOML types) or the environment (strings), checked."""
        kind = self.kind
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                return value.lower() in ("1", "true", "yes")
            raise InvalidInput(f"{where}: expected true or false, not {value!r}")
        if kind == "optional-path":
            if isinstance(value, bool):
                return value or None
            if isinstance(value, str) and value:
                return Path(value).expanduser().absolute()
            raise InvalidInput(f"{where}: expected true, false or a path, not {value!r}")
        if kind == "path":
            if isinstance(value, str) and value:
                return Path(value).expanduser().absolute()
            raise InvalidInput(f"{where}: expected a path, not {value!r}")
        if kind in ("float", "int"):
            if isinstance(value, bool):
                raise InvalidInput(f"{where}: expected a number, not {value!r}")
            try:
                number = float(value) if kind == "float" else int(value)
            except (TypeError, ValueError):
                what = "a number" if kind == "float" else "an integer"
                raise InvalidInput(f"{where}: expected {what}, not {value!r}") from None
            return number
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{where}: expected a string, not {value!r}")
        if self.choices and value not in self.choices:
            raise InvalidInput(f"{where}: expected one of {', '.join(self.choices)}, not {value!r}")
        return value


def add_arguments(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """The options as flags; every default is None so that resolve() sees what was given."""
    groups: dict[str, Any] = {}
    for option in options:
        target: Any = parser
        if option.group:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            target = groups[option.group]
        names = [*option.short, f"--{option.key}"]
        where = [f"config {option.key}"] + [f"${e}" for e in option.env]
        default = "" if option.default in (None, False) else f"; default {option.default}"
        text = f"{option.help} ({', '.join(where)}{default})"
        if option.kind == "bool":
            target.add_argument(
                *names, dest=option.dest, action="store_true", default=None, help=text
            )
        elif option.kind == "optional-path":
            target.add_argument(
                *names,
                dest=option.dest,
                nargs="?",
                const=True,
                default=None,
                type=Path,
                metavar=option.metavar or "FILE",
                help=text,
            )
        else:
            convert = {"float": float, "int": int, "path": Path}.get(option.kind, str)
            target.add_argument(
                *names,
                dest=option.dest,
                type=convert,
                default=None,
                choices=list(option.choices) or None,
                metavar=option.metavar,
                help=text,
            )


@dataclass(frozen=True)
class ConfigFile:
    path: Path | None  # None: no file
    shared: Mapping[str, Any]
    tables: Mapping[str, Mapping[str, Any]]

    def lookup(self, program: str, key: str) -> tuple[bool, Any, str]:
        """(found, value, where) for a program's key: its table, then the shared keys."""
        table = self.tables.get(program, {})
        if key in table:
            return True, table[key], f"{self.path}: [{program}] {key}"
        if key in self.shared:
            return True, self.shared[key], f"{self.path}: {key}"
        return False, None, ""


EMPTY: Final = ConfigFile(None, {}, {})


def config_path(
    given: Path | None, env: Mapping[str, str] = os.environ
) -> tuple[Path | None, bool]:
    """The file to read and whether it was named (a named file must exist)."""
    if given is not None:
        return given, True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return DEFAULT_PATH, False


def load(
    given: Path | None,
    programs: Mapping[str, Sequence[Option]],
    env: Mapping[str, str] = os.environ,
) -> ConfigFile:
    """Reads and checks the whole file (see the module docstring)."""
    path, named = config_path(given, env)
    if path is None:
        return EMPTY
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        if named:
            raise NotFound(f"configuration file {path} does not exist") from None
        return EMPTY
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    known: dict[str, Option] = {}
    for options in programs.values():
        for option in options:
            known.setdefault(option.key, option)
    shared: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in doc.items():
        if key in programs:
            if not isinstance(value, dict):
                raise InvalidInput(f"{path}: [{key}] must be a table")
            mine = {o.key: o for o in programs[key]}
            tables[key] = {}
            for sub, sub_value in value.items():
                if sub not in mine:
                    raise InvalidInput(f"{path}: [{key}] {sub}: unknown key ({_known(mine)})")
                tables[key][sub] = mine[sub].convert(sub_value, f"{path}: [{key}] {sub}")
        elif key in known:
            shared[key] = known[key].convert(value, f"{path}: {key}")
        else:
            raise InvalidInput(
                f"{path}: {key}: unknown key (tables: {', '.join(f'[{p}]' for p in programs)})"
            )
    return ConfigFile(path, shared, tables)


def _known(options: Mapping[str, Option]) -> str:
    return "keys: " + ", ".join(sorted(options))


def resolve(
    args: argparse.Namespace,
    options: Sequence[Option],
    program: str,
    config: ConfigFile,
    env: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Fills every option's attribute of args by precedence; returns where each came from
    (flag, $VAR, the file, default)."""
    sources: dict[str, str] = {}
    grouped: dict[str, list[Option]] = {}
    for option in options:
        if option.group:
            grouped.setdefault(option.group, []).append(option)
            continue
        value, source = _one(args, option, program, config, env)
        setattr(args, option.dest, value)
        sources[option.key] = source
    for members in grouped.values():
        for found in (_from_flags, _from_env, _from_file):
            values = found(args, members, program, config, env)
            if any(v is not None for v, _ in values.values()):
                break
        else:
            values = {o.key: (o.default, "default") for o in members}
        for option in members:
            value, source = values[option.key]
            setattr(args, option.dest, value)
            sources[option.key] = source
    return sources


def _one(
    args: argparse.Namespace,
    option: Option,
    program: str,
    config: ConfigFile,
    env: Mapping[str, str],
) -> tuple[Any, str]:
    for found in (_from_flags, _from_env, _from_file):
        value, source = found(args, [option], program, config, env)[option.key]
        if value is not None:
            return value, source
    return option.default, "default"


Found = dict[str, tuple[Any, str]]


def _from_flags(
    args: argparse.Namespace,
    options: Sequence[Option],
    program: str,
    config: ConfigFile,
    env: Mapping[str, str],
) -> Found:
    out: Found = {}
    for option in options:
        value = getattr(args, option.dest, None)
        if isinstance(value, Path):
            value = value.expanduser().absolute()
        out[option.key] = (value, f"--{option.key}")
    return out


def _from_env(
    args: argparse.Namespace,
    options: Sequence[Option],
    program: str,
    config: ConfigFile,
    env: Mapping[str, str],
) -> Found:
    out: Found = {}
    for option in options:
        out[option.key] = (None, "")
        for var in option.env:
            if env.get(var):
                out[option.key] = (option.convert(env[var], f"${var}"), f"${var}")
                break
    return out


def _from_file(
    args: argparse.Namespace,
    options: Sequence[Option],
    program: str,
    config: ConfigFile,
    env: Mapping[str, str],
) -> Found:
    out: Found = {}
    for option in options:
        found, value, where = config.lookup(program, option.key)
        out[option.key] = (value if found else None, where)
    return out
