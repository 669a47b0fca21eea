"""A tiny synchronous QMP client (QEMU's JSON monitor protocol) over a unix socket.

One JSON object per line each way. Commands are answered in order; asynchronous events
that arrive in between are kept, so a test can wait for one (MIGRATION, RESUME, ...)
instead of polling.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class QMPError(Exception):
    """QEMU answered a command with an error, or the monitor went away."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        super().__init__(f"{command}: {error.get('class')}: {error.get('desc')}")
        self.error_class = error.get("class")
        self.desc = str(error.get("desc", ""))


class QMP:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._sock = _connect(path, timeout)
        self._sock.settimeout(timeout)
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError("greeting", {"class": "Protocol", "desc": str(greeting)})
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self._sock.close()

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                raise QMPError(command, message["error"])
            return message.get("return")

    def wait_event(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda data: True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """The first event called name whose data satisfies predicate (already received
        ones included); consumed events stay in self.events."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["event"] == name and predicate(event.get("data", {})):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event within {timeout} s on {self.path}")
            self._sock.settimeout(remaining)
            try:
                message = self._read()
            finally:
                self._sock.settimeout(timeout)
            if "event" in message:
                self.events.append(message)

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QMPError("read", {"class": "Closed", "desc": f"{self.path} closed"})
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


def _connect(path: Path, timeout: float) -> socket.socket:
    """Connects, retrying while QEMU has not created the socket yet."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        return sock
