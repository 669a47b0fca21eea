"""A daemon's life around its work: detach, pidfile, logs, control socket, metrics endpoint,
signals, and the clean-up at the end. liveport-northd and liveport-agent both run in one.

Start-up order (what `--detach` waits for): fork (if detaching), pidfile, log file, the
control socket, the metrics endpoint; then the parent exits and the child carries on with
its work (connecting to databases is part of the work: it retries, and
`connection-status` shows how it goes). Any failure before that point is one line on the
starting terminal and the matching exit status (runtime.daemon).

Signals: SIGTERM and SIGINT stop the daemon (`stop`, an Event its loop watches, or a
callback the agent's event loop installs in their place); SIGHUP reopens the log file.

Concurrency model: created and started on the main thread before any other thread exists;
the control socket and the metrics endpoint then run on their own threads.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from liveport.model.errors import LiveportError
from liveport.runtime import daemon, logs
from liveport.runtime.control import ControlServer, Reply, default_path
from liveport.runtime.metrics import MetricsServer, new_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("liveport.service")


@dataclass(frozen=True)
class ServiceOptions:
    program: str  # liveport-northd | liveport-agent
    version: str
    pidfile: Path | None = None
    overwrite_pidfile: bool = False
    detach: bool = False
    chdir: bool = True
    log_file: Path | None = None
    log_level: str = "info"
    log_format: str = "text"
    unixctl: Path | None = None  # None: <rundir>/<program>.<pid>.ctl
    metrics: tuple[str, int] | None = None


class Service:
    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.stop = threading.Event()
        self.on_stop: list[Callable[[], None]] = []
        self._detacher = daemon.Detacher(options.program, chdir=options.chdir)
        self._pidfile: daemon.Pidfile | None = None
        self.logs: logs.Logs | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.registry: CollectorRegistry | None = None
        self.ready = False

    def start(self) -> None:
        """Everything up to readiness (see the module docstring). Raises LiveportError; a
        detached child reports it to the parent with fail()."""
        o = self.options
        if o.detach:
            self._detacher.start()
        # Ours before python-ovs binds the control socket: it installs its own handlers
        # (unlink the socket, then die) on signals still at their default.
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        if o.pidfile is not None:
            self._pidfile = daemon.Pidfile(o.pidfile, overwrite=o.overwrite_pidfile)
            self._pidfile.create()
        self.logs = logs.configure(o.log_level, o.log_file, o.log_format)
        path = o.unixctl or default_path(daemon.rundir(), o.program)
        self.control = ControlServer(path, o.program, o.version)
        self.control.on_exit = self.request_stop
        if o.metrics is not None:
            self.registry = new_registry()
            self.metrics = MetricsServer(o.metrics[0], o.metrics[1], self.registry)
            self.control.register(
                "metrics/address",
                "",
                0,
                0,
                lambda _: Reply(self._metrics_address(), {"address": self._metrics_address()}),
            )
        self.control.start()
        if self.metrics is not None:
            self.metrics.start()
        log.info(
            "%s %s starting: control socket %s%s",
            o.program,
            o.version,
            path,
            f", metrics http://{self.metrics.address}/metrics" if self.metrics else "",
        )
        self._detacher.ready()
        self.ready = True

    def _metrics_address(self) -> str:
        return self.metrics.address if self.metrics is not None else ""

    def fail(self, exc: LiveportError) -> bool:
        """A detached child that fails before it is ready tells the parent, which prints it;
        True if it did (the child then exits without a word)."""
        return self._detacher.failed(str(exc), exc.exit_code)

    def request_stop(self) -> None:
        """Thread-safe: the daemon stops (SIGTERM, SIGINT, the `exit` command)."""
        self.stop.set()
        for callback in list(self.on_stop):
            callback()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.request_stop()

    def _on_hangup(self, signum: int, frame: object) -> None:
        # Not in the handler: it may interrupt a thread that holds the log file's lock.
        threading.Thread(target=self._reopen, name="reopen", daemon=True).start()

    def _reopen(self) -> None:
        if self.logs is None:
            return
        try:
            self.logs.reopen()
        except LiveportError as exc:
            log.warning("%s", exc)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.control is not None:
            self.control.close()
        if self._pidfile is not None:
            self._pidfile.remove()
