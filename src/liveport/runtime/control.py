"""A daemon's control socket: python-ovs's unixctl server, so that `ovs-appctl -t SOCKET
COMMAND` and `liveport ctl` work as they do with OVS daemons.

Every daemon gets `version`, `exit`, `coverage/show`, `vlog/list`, `vlog/set`,
`vlog/reopen` here (and python-ovs's `help`); the daemon registers its own commands
(`connection-status`, `recompute`, `port/show`, ...). Each command takes an optional
leading `--json` argument and then answers with one JSON document instead of text.

Concurrency model: the server runs on its own thread (python-ovs's unixctl server is
poller-based); every handler runs on that thread, one command at a time. Handlers that read
daemon state must be thread-safe: read immutable values (snapshots, the agent's memory) or
hand the work to the daemon's own loop and wait for it. The same thread samples the
coverage counters about once a second.

python-ovs keeps one command table per process (ovs.unixctl.commands): there is one control
server per process, and the last one created answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovs.poller
import ovs.unixctl
import ovs.unixctl.server

from liveport.model.errors import InvalidInput, LiveportError, Unavailable
from liveport.runtime import coverage
from liveport.runtime import logs as logslib

log = logging.getLogger("liveport.control")


class CommandError(LiveportError):
    """A command's one-line refusal (sent to the client as an error)."""


@dataclass(frozen=True)
class Reply:
    text: str
    doc: Any = None  # what --json prints (default: {"text": text})


Handler = Callable[[Sequence[str]], Reply]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    min_args: int
    max_args: int
    handler: Handler


_active: dict[str, Command] = {}  # what the process' server answers (see the docstring)


def _dispatch(conn: Any, argv: list[str], name: str) -> None:
    command = _active.get(name)
    if command is None:
        conn.reply_error(f'"{name}" is not a valid command')
        return
    as_json = bool(argv) and argv[0] == "--json"
    args = argv[1:] if as_json else argv
    if len(args) < command.min_args or len(args) > command.max_args:
        usage = f"{name} {command.usage}".strip()
        conn.reply_error(f"usage: {usage}")
        return
    try:
        reply = command.handler(args)
    except LiveportError as exc:
        conn.reply_error(str(exc))
        return
    except Exception as exc:  # a bug must not take the control socket down
        log.exception("control: %s failed", name)
        conn.reply_error(f"{name} failed: {exc!r}")
        return
    if as_json:
        doc = reply.doc if reply.doc is not None else {"text": reply.text}
        conn.reply(json.dumps(doc, sort_keys=True, default=str))
    else:
        conn.reply(reply.text)


def _install(command: Command) -> None:
    _active[command.name] = command
    # python-ovs counts the --json argument too; _dispatch checks the real limits.
    ovs.unixctl.commands.pop(command.name, None)
    ovs.unixctl.command_register(
        command.name, command.usage, 0, command.max_args + 1, _dispatch, command.name
    )


def default_path(rundir: Path, program: str, pid: int | None = None) -> Path:
    """OVS's default: <rundir>/<program>.<pid>.ctl."""
    return rundir / f"{program}.{os.getpid() if pid is None else pid}.ctl"


class ControlServer:
    def __init__(self, path: Path, program: str, version: str) -> None:
        self.path = path
        self.program = program
        self.version = version
        self._commands: dict[str, Command] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.on_exit: Callable[[], None] | None = None
        self.register("help", "", 0, 0, self._help)
        self.register("version", "", 0, 0, lambda _: Reply(f"{program} (liveport) {version}"))
        self.register("exit", "", 0, 0, self._exit)
        self.register(
            "coverage/show",
            "",
            0,
            0,
            lambda _: Reply(
                coverage.REGISTRY.render(),
                [r.to_json() for r in coverage.REGISTRY.rates()],
            ),
        )
        self.register("vlog/list", "", 0, 0, self._vlog_list)
        self.register("vlog/set", "{module[:destination[:level]]}...", 1, 8, self._vlog_set)
        self.register("vlog/reopen", "", 0, 0, self._vlog_reopen)

    def register(
        self, name: str, usage: str, min_args: int, max_args: int, handler: Handler
    ) -> None:
        """Adds a command (before or after start()). Its handler runs on the server's thread
        and raises LiveportError for a one-line refusal."""
        command = Command(name, usage, min_args, max_args, handler)
        self._commands[name] = command
        if self._server is not None:
            _install(command)

    # ----- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Listens on the socket (a failure is the daemon's: raised here, before it runs)."""
        _active.clear()
        for command in self._commands.values():
            _install(command)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None
        error, server = ovs.unixctl.server.UnixctlServer.create(str(self.path))
        if error:
            raise Unavailable(
                f"could not initialize control socket {self.path}: {os.strerror(error)}"
            )
        self._server = server
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        server = self._server
        try:
            while not self._stop.is_set():
                server.run()
                coverage.REGISTRY.run()
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 64):
                        pass
                if self._stop.is_set():
                    break
                poller = ovs.poller.Poller()
                server.wait(poller)
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                poller.timer_wait(1000)
                poller.block()
        except Exception:
            log.exception("control: the control socket's thread failed")
        finally:
            server.close()

    # ----- built-in commands -------------------------------------------------------------

    def _help(self, args: Sequence[str]) -> Reply:
        commands = sorted(_active.values(), key=lambda c: c.name)
        lines = ["The available commands are:"]
        lines += [f"  {c.name:<23} {c.usage}".rstrip() for c in commands]
        return Reply("\n".join(lines), {c.name: c.usage for c in commands})

    def _exit(self, args: Sequence[str]) -> Reply:
        if self.on_exit is None:
            raise CommandError("this daemon cannot be stopped from here")
        log.info("control: exit requested")
        self.on_exit()
        return Reply("")

    @staticmethod
    def _logs() -> logslib.Logs:
        current = logslib.current()
        if current is None:
            raise CommandError("logging is not configured")
        return current

    def _vlog_list(self, args: Sequence[str]) -> Reply:
        current = self._logs()
        return Reply(current.render(), current.to_json())

    def _vlog_set(self, args: Sequence[str]) -> Reply:
        current = self._logs()
        try:
            for spec in args:
                current.set(spec)
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None
        return Reply("", current.to_json())

    def _vlog_reopen(self, args: Sequence[str]) -> Reply:
        current = self._logs()
        if current.log_file is None:
            raise CommandError("no log file (start the daemon with --log-file)")
        current.reopen()
        return Reply("", {"log_file": str(current.log_file)})
