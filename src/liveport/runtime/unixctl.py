"""A client for the unixctl JSON-RPC sockets of OVS daemons (what ovs-appctl talks to).

One connection, reused: injecting a thousand packets a second through netdev-dummy/receive
is cheap this way, where spawning ovs-appctl per packet is not. Not thread-safe: one owner.
"""

from __future__ import annotations

import codecs
import json
import socket
from pathlib import Path

from liveport.model.errors import LiveportError


class UnixctlError(LiveportError):
    """The daemon answered a command with an error, or could not be reached."""


class UnixctlClient:
    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise UnixctlError(f"cannot reach {self.path}: {exc.strerror}") from None
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._next_id = 0

    def __enter__(self) -> UnixctlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, command: str, *args: str) -> str:
        """Runs a command and returns its text output; raises UnixctlError on error."""
        self._next_id += 1
        request = {"method": command, "params": list(args), "id": self._next_id}
        self._sock.sendall(json.dumps(request).encode())
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                break
        if reply.get("error") is not None:
            raise UnixctlError(f"{command}: {str(reply['error']).strip()}")
        result = reply.get("result")
        return "" if result is None else str(result)

    def _read_message(self) -> dict[str, object]:
        while True:
            stripped = self._buffer.lstrip()
            if stripped:
                try:
                    obj, end = self._decoder.raw_decode(stripped)
                except json.JSONDecodeError:
                    pass
                else:
                    self._buffer = stripped[end:]
                    if isinstance(obj, dict):
                        return obj
                    continue
            chunk = self._sock.recv(65536)
            if not chunk:
                raise UnixctlError(f"{self.path} closed the connection")
            self._buffer += self._utf8.decode(chunk)


def call(path: Path | str, command: str, *args: str) -> str:
    """One command on a fresh connection."""
    with UnixctlClient(path) as client:
        return client.call(command, *args)
