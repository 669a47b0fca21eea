"""Clients of unixctl control sockets (what ovs-appctl talks to): OVS daemons' and liveport's.

Built on python-ovs: its stream and JSON-RPC connection (framing, the C JSON parser) carry
every call. `call()` and `UnixctlClient` add what python-ovs's own unixctl client does not
have: a deadline on every call (a stopped daemon must not hang a lab or a test) and errors
as exceptions. `liveport ctl` uses python-ovs's client itself (cli.ctl), as ovs-appctl's
Python twin does.

One connection, reused: injecting a thousand packets a second through netdev-dummy/receive
is cheap this way, where spawning ovs-appctl per packet is not. Not thread-safe: one owner.
"""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path
from typing import Any

import ovs.jsonrpc
import ovs.poller
import ovs.stream

from liveport.model.errors import LiveportError, Timeout, Unavailable


class UnixctlError(LiveportError):
    """The daemon answered a command with an error."""


class Unreachable(UnixctlError, Unavailable):
    """The daemon's control socket could not be reached, or it closed the connection."""


class UnixctlTimeout(UnixctlError, Timeout):
    """The daemon did not answer in time."""


class UnixctlClient:
    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        error, stream = ovs.stream.Stream.open_block(
            ovs.stream.Stream.open(f"unix:{self.path}"), int(timeout * 1000)
        )
        if error:
            raise Unreachable(f"cannot reach {self.path}: {os.strerror(error)}")
        self._rpc: Any = ovs.jsonrpc.Connection(stream)
        sock = getattr(stream, "socket", None)
        self._poll: select.poll | None = None
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def __enter__(self) -> UnixctlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._rpc.close()

    def call(self, command: str, *args: str) -> str:
        """Runs a command and returns its text output; raises UnixctlError on error."""
        request = ovs.jsonrpc.Message.create_request(command, list(args))
        error = self._rpc.send(request)
        deadline = time.monotonic() + self.timeout
        while not error:
            error, reply = self._rpc.recv()
            if error == errno.EAGAIN:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UnixctlTimeout(
                        f"{self.path}: no answer to {command} in {self.timeout:g}s"
                    )
                self._wait(remaining)
                error = 0
                continue
            if error:
                break
            if reply.id != request.id:
                continue
            if reply.error is not None:
                raise UnixctlError(f"{command}: {str(reply.error).strip()}")
            return "" if reply.result is None else str(reply.result)
        text = "closed the connection" if error == ovs.jsonrpc.EOF else os.strerror(error)
        raise Unreachable(f"{self.path}: {text}")

    def _wait(self, seconds: float) -> None:
        """Until the reply may have come. A request is written whole at once (it is small),
        so this waits for input alone, with poll(2) on the socket: a python-ovs Poller per
        call costs a third more when packets are injected by the thousand."""
        self._rpc.run()
        if self._poll is not None and not self._rpc.get_backlog():
            self._poll.poll(max(1, int(seconds * 1000)))
            return
        poller = ovs.poller.Poller()
        self._rpc.wait(poller)
        self._rpc.recv_wait(poller)
        poller.timer_wait(max(1, int(seconds * 1000)))
        poller.block()


def call(path: Path | str, command: str, *args: str, timeout: float = 10.0) -> str:
    """One command on a fresh connection."""
    with UnixctlClient(path, timeout) as client:
        return client.call(command, *args)
