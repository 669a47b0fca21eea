"""Logging for liveport's daemons and commands, run as OVS's vlog is.

Destinations are `console` (stderr) and `file` (`--log-file`); modules are liveport's
loggers without their `liveport.` prefix (`agent`, `northd`, `ovsdb.client`, ...) and
`other` for every other library's. Each (module, destination) pair has a level, set at start
from `--log-level` and changed at run time with OVS's `vlog/set` syntax
(`module:destination:level`, any part may be left out or be `ANY`); levels are OVS's names
(`off`, `emer`, `err`, `warn`, `info`, `dbg`). A setting for a module covers its submodules
(`ovsdb` covers `ovsdb.client`) unless they have their own.

Lines are text (`2024-05-01T12:00:00.123 INFO  liveport.agent: ...`) or, with
`--log-format json`, one JSON object per line with `time` (UTC, ISO 8601, milliseconds),
`level`, `logger` and `message`, plus `migration` on every line that belongs to a
migration: passed as `extra={"migration": id}` or set for a whole context with
`migration(id)` (a contextvar, so asyncio tasks started inside inherit it). Text lines end
with ` [migration ID]` then.

The log file is reopened (after logrotate moved it) by `reopen()`: on SIGHUP and by the
`vlog/reopen` control command.

Concurrency model: handlers serialise their own output (logging's per-handler lock); level
changes happen on the control thread and are plain attribute writes that logging reads
without locks, as logging itself allows.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final, TextIO

from liveport.model.errors import InvalidInput

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"
OFF: Final = logging.CRITICAL + 10
LEVELS: Final = {
    "off": OFF,
    "emer": logging.CRITICAL,
    "err": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "dbg": logging.DEBUG,
}
# The names --log-level has always taken, as well as OVS's.
ALIASES: Final = {"debug": "dbg", "warning": "warn", "error": "err", "critical": "emer"}
DESTINATIONS: Final = ("console", "file")
FORMATS: Final = ("text", "json")
PREFIX: Final = "liveport"
OTHER: Final = "other"

MIGRATION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "liveport_migration", default=None
)


@contextlib.contextmanager
def migration(migration_id: str | None) -> Iterator[None]:
    """Every line logged inside (this thread or task) belongs to this migration."""
    token = MIGRATION.set(migration_id)
    try:
        yield
    finally:
        MIGRATION.reset(token)


def migration_tag(port: str, destination: str, claim: object | None = None) -> str:
    """A migration's id: PORT@DESTINATION/CLAIM, CLAIM the first 8 hex digits of the UUID of
    the destination's Port_Claim row (northd.observe says why); without it, the prefix."""
    base = f"{port}@{destination}"
    return f"{base}/{str(claim)[:8]}" if claim is not None else base


def event_port(line: str) -> str | None:
    """The port an event line of northd's or an agent's is about ("port NAME: ...")."""
    if not line.startswith("port "):
        return None
    name, sep, _ = line[5:].partition(": ")
    return name if sep else None


def migration_of(record: logging.LogRecord) -> str | None:
    value = getattr(record, "migration", None)
    return str(value) if value else MIGRATION.get()


def level_name(level: int) -> str:
    for name, value in LEVELS.items():
        if value == level:
            return name
    return logging.getLevelName(level).lower()


def parse_level(text: str) -> int:
    name = ALIASES.get(text.lower(), text.lower())
    if name not in LEVELS:
        raise InvalidInput(f"unknown log level {text!r} (levels: {', '.join(LEVELS)})")
    return LEVELS[name]


def module_of(logger_name: str) -> str:
    if logger_name == PREFIX:
        return PREFIX
    if logger_name.startswith(PREFIX + "."):
        return logger_name[len(PREFIX) + 1 :]
    return OTHER


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT, DATEFMT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        found = migration_of(record)
        return f"{text} [migration {found}]" if found else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        doc: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        found = migration_of(record)
        if found:
            doc["migration"] = found
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ReopeningFileHandler(logging.FileHandler):
    """A log file that can be opened again under its name (after a rotation)."""

    def reopen(self) -> None:
        """Opens the file again; on failure keeps writing where it wrote (raises OSError)."""
        self.acquire()
        try:
            new = self._open()
            old, self.stream = self.stream, new
            if old is not None:
                with contextlib.suppress(OSError):
                    old.flush()
                    old.close()
        finally:
            self.release()


class _Levels(logging.Filter):
    """A destination's level per module."""

    def __init__(self, logs: Logs, destination: str) -> None:
        super().__init__()
        self.logs = logs
        self.destination = destination

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.logs.level_for(module_of(record.name), self.destination)


class Logs:
    """The process' log destinations and levels (one per process: it owns the root logger)."""

    def __init__(
        self,
        level: str = "info",
        log_file: Path | None = None,
        log_format: str = "text",
        *,
        stream: TextIO | None = None,
    ) -> None:
        if log_format not in FORMATS:
            raise InvalidInput(f"unknown log format {log_format!r} (formats: text, json)")
        default = parse_level(level)
        self.log_file = log_file
        self.format = log_format
        formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
        console = logging.StreamHandler(stream if stream is not None else sys.stderr)
        self.handlers: dict[str, logging.Handler] = {"console": console}
        # Without a log file the console gets everything, with one the file does (and the
        # console nothing until vlog/set says otherwise: a detached daemon has no console).
        self.defaults = {"console": default if log_file is None else OFF, "file": OFF}
        if log_file is not None:
            try:
                self.handlers["file"] = ReopeningFileHandler(log_file)
            except OSError as exc:
                raise InvalidInput(f"cannot open log file {log_file}: {exc.strerror}") from None
            self.defaults["file"] = default
        self.overrides: dict[tuple[str, str], int] = {}
        for destination, handler in self.handlers.items():
            handler.setFormatter(formatter)
            handler.addFilter(_Levels(self, destination))
        root = logging.getLogger()
        for old in root.handlers[:]:
            root.removeHandler(old)
            if isinstance(old, ReopeningFileHandler):
                old.close()
        for handler in self.handlers.values():
            root.addHandler(handler)
        self._apply()

    # ----- levels ----------------------------------------------------------------------------

    def level_for(self, module: str, destination: str) -> int:
        """The level of a module at a destination: its own, else its closest parent's."""
        name = module
        while True:
            found = self.overrides.get((name, destination))
            if found is not None:
                return found
            if "." not in name:
                return self.defaults[destination]
            name = name.rsplit(".", 1)[0]

    def modules(self) -> list[str]:
        """liveport's loggers that exist (and those named in settings), and `other`."""
        names = {
            module_of(name)
            for name in logging.root.manager.loggerDict
            if name == PREFIX or name.startswith(PREFIX + ".")
        }
        names |= {module for module, _ in self.overrides}
        names.discard(PREFIX)
        return [*sorted(names - {OTHER}), OTHER]

    def set(self, spec: str) -> None:
        """`vlog/set` syntax: words separated by ':' (or spaces), each a module, a
        destination or a level; a missing part or ANY means every one."""
        modules: list[str] | None = None
        destinations: list[str] | None = None
        level: int | None = None
        for word in spec.replace(" ", ":").split(":"):
            if not word or word.upper() == "ANY":
                continue
            lowered = word.lower()
            if lowered in DESTINATIONS:
                destinations = [lowered]
            elif lowered in LEVELS or lowered in ALIASES:
                level = parse_level(lowered)
            elif lowered in ("syslog", "pattern", "facility"):
                raise InvalidInput(f"{word}: liveport logs to console and file only")
            else:
                modules = [word.removeprefix(PREFIX + ".")]
        if level is None:
            level = logging.DEBUG  # OVS: a spec without a level means the most verbose
        for destination in destinations or list(DESTINATIONS):
            if destination not in self.handlers:
                if destinations is not None:
                    raise InvalidInput("no log file: start the daemon with --log-file")
                continue
            if modules is None:
                self.defaults[destination] = level
                for key in [k for k in self.overrides if k[1] == destination]:
                    del self.overrides[key]
            else:
                for module in modules:
                    self.overrides[(module, destination)] = level
        self._apply()

    def _apply(self) -> None:
        """Logger levels let through the most verbose level any destination wants, so that
        records nobody wants are not even made."""
        enabled = [d for d in DESTINATIONS if d in self.handlers]
        modules = {m for m, _ in self.overrides} - {OTHER}
        root_level = min(self.level_for(OTHER, d) for d in enabled)
        logging.getLogger().setLevel(min(root_level, logging.CRITICAL))
        for name, logger in list(logging.root.manager.loggerDict.items()):
            # A module without its own setting follows the root again.
            if isinstance(logger, logging.Logger) and module_of(name) not in (OTHER, *modules):
                logger.setLevel(logging.NOTSET)
        for module in modules:
            wanted = min(self.level_for(module, d) for d in enabled)
            logging.getLogger(f"{PREFIX}.{module}").setLevel(min(wanted, logging.CRITICAL))

    def render(self) -> str:
        """`vlog/list`'s table."""
        width = max(len(m) for m in self.modules()) + 2
        lines = [
            " " * width + "".join(f"{d:<10}" for d in DESTINATIONS),
            " " * width + "".join(f"{'-' * len(d):<10}" for d in DESTINATIONS),
        ]
        for module in self.modules():
            cells = [
                level_name(self.level_for(module, d)).upper() if d in self.handlers else "-"
                for d in DESTINATIONS
            ]
            lines.append(f"{module:<{width}}" + "".join(f"{c:<10}" for c in cells))
        return "\n".join(line.rstrip() for line in lines)

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            module: {
                d: level_name(self.level_for(module, d)) if d in self.handlers else "none"
                for d in DESTINATIONS
            }
            for module in self.modules()
        }

    # ----- files -----------------------------------------------------------------------------

    def reopen(self) -> None:
        """Opens the log file again under its name (logrotate moved it); raises
        InvalidInput when it cannot (the old file keeps being written)."""
        handler = self.handlers.get("file")
        if not isinstance(handler, ReopeningFileHandler):
            return
        try:
            handler.reopen()
        except OSError as exc:
            raise InvalidInput(f"cannot reopen {self.log_file}: {exc.strerror}") from None
        logging.getLogger(f"{PREFIX}.logs").info("log file %s reopened", self.log_file)

    def close(self) -> None:
        for handler in self.handlers.values():
            logging.getLogger().removeHandler(handler)
            handler.close()


_current: Logs | None = None


def configure(level: str = "info", log_file: Path | None = None, log_format: str = "text") -> Logs:
    """Sends the process' log records to log_file (or stderr); returns the set-up, which the
    control commands change."""
    global _current  # noqa: PLW0603 - logging's configuration is process-wide
    _current = Logs(level, log_file, log_format)
    return _current


def current() -> Logs | None:
    return _current
