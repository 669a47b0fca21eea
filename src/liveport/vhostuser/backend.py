"""liveport's vhost-user back-end for one VM port, enforcing the port's compatibility mode.

QEMU (the front-end) drives a vhost-user NIC over a unix socket. This back-end answers it
with exactly one Mode of the catalogue (liveport.vhostuser.session decides every answer),
records what the guest negotiated and the RARP announcements QEMU asks for, and moves no
packets. It works as a server (it listens and QEMU connects with `-chardev socket,path=P`)
or as a client (it connects to QEMU's `-chardev socket,path=P,server=on`), and serves one
front-end at a time for as long as it runs: when QEMU disconnects, the back-end waits for
(server) or re-establishes (client) the next connection. It can also serve one connection
it is handed (the `--fd` convention of vhost-user back-end programs; tests use a
socketpair).

Concurrency model: one I/O thread per back-end, blocked in poll() on its socket and on a
wake-up pipe that stop() writes to. Only that thread touches the socket and the Session.
After each message it publishes an immutable BackendState under a condition variable,
before it answers the front-end; snapshot() and wait_for() read it from any thread. The
on_change(state) and on_rarp(mac) callbacks run on the I/O thread after the answer, outside
the lock; they must not block for long (the agent enqueues, as STYLE.md item 7 asks), and
an exception they raise is logged, never fatal.

Standalone: `python -m liveport.vhostuser.backend --socket PATH --mode NAME [--client]
[--state-file F]` (or `--fd N` instead of --socket) serves until SIGTERM/SIGINT, writing the
state as JSON to F on every change.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from liveport.model import virtio
from liveport.model.errors import LiveportError, Timeout
from liveport.vhostuser import protocol as p
from liveport.vhostuser.session import Ring, Session, offered_features

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds a front-end may take to send the rest of a message once its header arrived.
MESSAGE_TIMEOUT = 5.0
#: The number of unexpected messages and of RARP requests a state keeps (the log has all).
UNEXPECTED_KEPT = 20
RARPS_KEPT = 100


@dataclass(frozen=True)
class BackendState:
    """What the back-end knows, as published after every message.

    negotiated is what the guest negotiated on the latest connection that got that far; it
    survives a disconnect (the record of a VM that migrated away stays readable). broken is
    why the latest connection was refused, if it was. rarps lists the MACs QEMU asked us to
    announce (SEND_RARP), oldest first; QEMU repeats the request a few times per migration.
    """

    port: str
    mode: str
    socket: str
    client: bool
    offered_features: int
    offered_protocol_features: int
    connected: bool = False
    connections: int = 0
    negotiated: virtio.Negotiated | None = None
    log_all: bool = False
    rings: tuple[Ring, ...] = ()
    rarps: tuple[str, ...] = ()
    broken: str | None = None
    unexpected: tuple[str, ...] = ()
    mtu: int | None = None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["negotiated"] = None if self.negotiated is None else asdict(self.negotiated)
        for key in ("offered_features", "offered_protocol_features"):
            data[key] = f"0x{data[key]:x}"
        if self.negotiated is not None:
            negotiated = data["negotiated"]
            assert isinstance(negotiated, dict)
            negotiated["features"] = f"0x{self.negotiated.features:x}"
            negotiated["protocol_features"] = f"0x{self.negotiated.protocol_features:x}"
        return data


StateCallback = Callable[[BackendState], None]
RarpCallback = Callable[[str], None]


class PortLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with the port it is about."""

    def __init__(self, logger: logging.Logger, port: str) -> None:
        super().__init__(logger, {"port": port})
        self.port = port

    def process(self, msg: object, kwargs: MutableMapping[str, Any]) -> tuple[object, Any]:
        return f"{self.port}: {msg}", kwargs


class BackendError(LiveportError):
    """The back-end could not start (socket path in use, unreachable, ...)."""


@dataclass
class _Link:
    """The state of the back-end across connections (owned by the I/O thread)."""

    connections: int = 0
    negotiated: virtio.Negotiated | None = None
    rarps: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


class VhostUserBackend:
    """One port's back-end. start() it, stop() it (or use it as a context manager)."""

    def __init__(
        self,
        mode: virtio.Mode,
        socket_path: str | Path | None = None,
        *,
        client: bool = False,
        connection: socket.socket | None = None,
        port: str = "",
        on_change: StateCallback | None = None,
        on_rarp: RarpCallback | None = None,
        reconnect_interval: float = 0.2,
    ) -> None:
        if (socket_path is None) == (connection is None):
            raise ValueError("give either socket_path or connection")
        self.mode = mode
        self.path = str(socket_path) if connection is None else f"fd:{connection.fileno()}"
        self.client = client
        self.port = port or Path(self.path).name
        self._given = connection
        self._on_change = on_change
        self._on_rarp = on_rarp
        self._reconnect_interval = reconnect_interval
        self._log = PortLog(_log, self.port)
        self._cond = threading.Condition()
        self._state = BackendState(
            port=self.port,
            mode=mode.name,
            socket=self.path,
            client=client,
            offered_features=offered_features(mode),
            offered_protocol_features=mode.protocol_features,
        )
        self._link = _Link()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # Public API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts serving. In server mode the socket is listening when this returns."""
        if self._thread is not None:
            raise BackendError(f"back-end for {self.port} already started")
        if not self.client and self._given is None:
            self._listener = _listen(self.path)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._run, name=f"vhost-user {self.port}", daemon=True
        )
        self._thread.start()
        self._log.info(
            "%s %s in mode %s (features 0x%x, protocol features 0x%x)",
            "connecting to" if self.client else "serving" if self._given else "listening on",
            self.path,
            self.mode.name,
            self._state.offered_features,
            self.mode.protocol_features,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the connection and the I/O thread; removes the socket this back-end created."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread.join(timeout)
        if thread.is_alive():
            self._log.error("I/O thread did not stop within %.1f s", timeout)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._thread = None

    def __enter__(self) -> VhostUserBackend:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def snapshot(self) -> BackendState:
        with self._cond:
            return self._state

    def wait_for(
        self, predicate: Callable[[BackendState], bool], timeout: float = 10.0
    ) -> BackendState:
        """Blocks until predicate(state) holds; raises Timeout with the last state if not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._state):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout(f"back-end {self.port}: condition not met; state {self._state}")
                self._cond.wait(remaining)
            return self._state

    # I/O thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._given is not None:
                with self._given:
                    self._serve(self._given)
                return
            while not self._stopping.is_set():
                conn = self._connect() if self.client else self._accept()
                if conn is None:
                    break
                with conn:
                    self._serve(conn)
        except Exception:  # noqa: BLE001  # a bug must not kill the thread silently
            self._log.exception("vhost-user back-end I/O thread failed")

    def _wait_readable(self, socks: list[socket.socket], timeout: float | None) -> list[int]:
        """poll() on socks and the wake-up pipe; [] when stopping or on timeout."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for sock in socks:
            poller.register(sock.fileno(), select.POLLIN)
        events = poller.poll(None if timeout is None else int(timeout * 1000))
        ready = [fd for fd, _ in events]
        return [] if self._wake_r in ready else ready

    def _accept(self) -> socket.socket | None:
        assert self._listener is not None
        while not self._stopping.is_set():
            if not self._wait_readable([self._listener], None):
                continue
            with contextlib.suppress(BlockingIOError, InterruptedError):
                conn, _ = self._listener.accept()
                return conn
        return None

    def _connect(self) -> socket.socket | None:
        reported = False
        while not self._stopping.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                if not reported:
                    self._log.info("waiting for %s: %s", self.path, exc.strerror)
                    reported = True
                self._wait_readable([], self._reconnect_interval)
                continue
            return sock
        return None

    def _serve(self, conn: socket.socket) -> None:
        session = Session(self.mode, self._log)
        self._link.connections += 1
        self._log.info("front-end connected (connection %d)", self._link.connections)
        self._publish(session, connected=True)
        try:
            self._exchange(conn, session)
        except (OSError, p.ProtocolError) as exc:
            self._log.warning("front-end connection failed: %s", exc)
        except Exception:  # noqa: BLE001  # a bug ends this connection, not the back-end
            self._log.exception("dropping the front-end after an internal error")
        finally:
            session.close()
            self._log.info("front-end disconnected")
            self._publish(session, connected=False)

    def _exchange(self, conn: socket.socket, session: Session) -> None:
        while True:
            socks = [conn] if self._listener is None else [conn, self._listener]
            ready = self._wait_readable(socks, None)
            if not ready:
                if self._stopping.is_set():
                    return
                continue
            if conn.fileno() in ready:
                received = _receive(conn)
                if received is None:
                    return
                message, fds = received
                if self._log.isEnabledFor(logging.DEBUG):
                    self._log.debug("<- %s", p.describe(message, len(fds)))
                outcome = session.handle(message, fds)
                if outcome.rarp is not None:
                    self._link.rarps.append(outcome.rarp)
                    del self._link.rarps[:-RARPS_KEPT]
                # The state is readable before the front-end hears back; callbacks run
                # after, so a slow one never delays QEMU.
                changed = self._update(session, connected=True)
                for answer in outcome.replies:
                    if self._log.isEnabledFor(logging.DEBUG):
                        self._log.debug("-> %s", p.describe(answer))
                    conn.sendall(p.encode(answer))
                if changed is not None and self._on_change is not None:
                    self._call(self._on_change, changed)
                if outcome.rarp is not None and self._on_rarp is not None:
                    self._call(self._on_rarp, outcome.rarp)
                if outcome.close:
                    return
            elif self._listener is not None:
                self._refuse_extra()

    def _refuse_extra(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            extra, _ = self._listener.accept()
            extra.close()
            self._log.warning("refused a second front-end: a port has one")

    def _publish(self, session: Session, *, connected: bool) -> None:
        changed = self._update(session, connected=connected)
        if changed is not None and self._on_change is not None:
            self._call(self._on_change, changed)

    def _update(self, session: Session, *, connected: bool) -> BackendState | None:
        """Publishes the state after a message; returns it if it changed."""
        negotiated = session.negotiated()
        if negotiated is not None:
            self._link.negotiated = negotiated
        self._link.unexpected.extend(session.unexpected)
        session.unexpected.clear()
        del self._link.unexpected[:-UNEXPECTED_KEPT]
        with self._cond:
            old = self._state
            new = BackendState(
                port=old.port,
                mode=old.mode,
                socket=old.socket,
                client=old.client,
                offered_features=old.offered_features,
                offered_protocol_features=old.offered_protocol_features,
                connected=connected,
                connections=self._link.connections,
                negotiated=self._link.negotiated,
                log_all=session.log_all and connected,
                rings=tuple(session.rings[i] for i in sorted(session.rings)) if connected else (),
                rarps=tuple(self._link.rarps),
                broken=session.broken,
                unexpected=tuple(self._link.unexpected),
                mtu=session.mtu,
            )
            if new == old:
                return None
            self._state = new
            self._cond.notify_all()
        return new

    def _call(self, callback: Callable[[_T], None], argument: _T) -> None:
        try:
            callback(argument)
        except Exception:  # noqa: BLE001  # the caller's bug must not break the VM's NIC
            self._log.exception("callback %r failed", callback)


def _listen(path: str) -> socket.socket:
    """A listening unix socket at path; a stale socket file there is replaced, anything else
    is refused."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise BackendError(f"{path} exists and is not a socket")
        if _in_use(path):
            raise BackendError(f"{path} is in use by another back-end")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(2)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BackendError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def _in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


_FD_SPACE = socket.CMSG_SPACE(p.MAX_FDS * array.array("i").itemsize)


def _receive(conn: socket.socket) -> tuple[p.Message, list[int]] | None:
    """Reads one message and its descriptors; None at end of stream."""
    conn.settimeout(MESSAGE_TIMEOUT)
    fds: list[int] = []
    try:
        head = _read_exact(conn, p.HEADER_SIZE, fds)
        if head is None:
            return None
        header = p.decode_header(head)
        payload = _read_exact(conn, header.size, fds) if header.size else b""
        if payload is None:
            raise p.ProtocolError(f"stream ended inside {p.request_name(header.request)}")
    except BaseException:
        _close_all(fds)
        raise
    return p.Message(header.request, header.flags, payload), fds


def _read_exact(conn: socket.socket, size: int, fds: list[int]) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk, ancdata, flags, _ = conn.recvmsg(
            size - len(data), _FD_SPACE, socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, cmsg in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(cmsg[: len(cmsg) - len(cmsg) % received.itemsize])
                fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            raise p.ProtocolError(f"more than {p.MAX_FDS} file descriptors in one message")
        if not chunk:
            if data:
                raise p.ProtocolError(f"stream ended after {len(data)} of {size} bytes")
            return None
        data += chunk
    return data


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


# Standalone ------------------------------------------------------------------------------


def _write_state(path: Path, state: BackendState) -> None:
    """Replaces path atomically with the state as JSON; a failure is logged, not raised."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        _log.warning("cannot write the state file %s: %s", path, exc)


def main(argv: list[str] | None = None) -> int:
    """Runs one back-end until SIGTERM or SIGINT (with --fd: until that connection ends)."""
    from liveport.runtime import logs  # noqa: PLC0415
    from liveport.vhostuser.catalogue import load_catalogue  # noqa: PLC0415  # CLI-only need

    parser = argparse.ArgumentParser(
        prog="python -m liveport.vhostuser.backend",
        description="Serve one vhost-user port in a liveport compatibility mode.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the vhost-user unix socket path")
    where.add_argument("--fd", type=int, help="serve this already connected socket")
    parser.add_argument("--mode", required=True, help="compatibility mode name")
    parser.add_argument("--client", action="store_true", help="connect to QEMU's socket")
    parser.add_argument("--state-file", type=Path, help="write the state as JSON here")
    parser.add_argument("--port", default="", help="name used in logs (default: socket name)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)

    try:
        mode = load_catalogue().get(args.mode)
    except LiveportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    state_file: Path | None = args.state_file

    done = threading.Event()
    writing = threading.Lock()

    def publish(state: BackendState) -> None:
        if state_file is not None:
            with writing:  # the I/O thread and this one both publish; write the latest
                _write_state(state_file, backend.snapshot())
        if args.fd is not None and state.connections and not state.connected:
            done.set()  # the one connection we were handed is over

    connection = None if args.fd is None else socket.socket(fileno=args.fd)
    backend = VhostUserBackend(
        mode,
        args.socket,
        client=args.client,
        connection=connection,
        port=args.port,
        on_change=publish,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        backend.start()
    except LiveportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    publish(backend.snapshot())
    while not done.wait(3600):
        pass
    backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
