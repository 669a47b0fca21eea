"""The back-end over real unix sockets, driven by a fake front-end that speaks like QEMU."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from liveport.model import virtio
from liveport.model.errors import Timeout
from liveport.vhostuser import protocol as p
from liveport.vhostuser.backend import BackendError, BackendState, VhostUserBackend
from liveport.vhostuser.catalogue import load_catalogue
from liveport.vhostuser.protocol import Request

FEATURES = virtio.mask(
    "VERSION_1 MRG_RXBUF EVENT_IDX VHOST_F_LOG_ALL VHOST_USER_F_PROTOCOL_FEATURES"
)
PROTOCOL = virtio.protocol_mask("MQ LOG_SHMFD RARP REPLY_ACK")
MODE = virtio.Mode("test.v1", FEATURES, PROTOCOL, max_queue_pairs=1, max_ring_size=1024)
GUEST = virtio.mask("VERSION_1 EVENT_IDX VHOST_USER_F_PROTOCOL_FEATURES")
LOG_ALL = 1 << virtio.Feature.VHOST_F_LOG_ALL
MAC = "52:54:00:12:34:56"


class Frontend:
    """Just enough of QEMU's side: messages with fds out, replies in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(5)

    @classmethod
    def connect(cls, path: Path) -> Frontend:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def send(
        self,
        request: int,
        payload: bytes = b"",
        *,
        need_reply: bool = False,
        fds: tuple[int, ...] = (),
    ) -> None:
        flags = p.VERSION | (p.FLAG_NEED_REPLY if need_reply else 0)
        data = p.encode(p.Message(request, flags, payload))
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], ancillary)

    def recv(self) -> p.Message:
        head = self._exact(p.HEADER_SIZE)
        header = p.decode_header(head)
        return p.Message(header.request, header.flags, self._exact(header.size))

    def call(self, request: int, payload: bytes = b"", **kwargs: object) -> p.Message:
        self.send(request, payload, **kwargs)  # type: ignore[arg-type]
        answer = self.recv()
        assert answer.request == request and answer.flags == p.VERSION | p.FLAG_REPLY
        return answer

    def call_u64(self, request: int, payload: bytes = b"", **kwargs: object) -> int:
        return p.decode_u64(self.call(request, payload, **kwargs).payload)

    def at_eof(self) -> bool:
        return self.sock.recv(1) == b""

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("back-end closed the connection")
            data += chunk
        return data

    def start_device(self, features: int = GUEST, protocol: int = PROTOCOL) -> None:
        """QEMU's start-up sequence, as measured in qemu-notes.md."""
        assert self.call_u64(Request.GET_FEATURES) == FEATURES
        assert self.call_u64(Request.GET_PROTOCOL_FEATURES) == PROTOCOL
        self.send(Request.SET_PROTOCOL_FEATURES, p.encode_u64(protocol))
        assert self.call_u64(Request.GET_QUEUE_NUM) == 1
        self.send(Request.SET_OWNER)
        self.send(Request.SET_FEATURES, p.encode_u64(features))
        memory = os.memfd_create("guest-ram")
        try:
            table = p.encode_memory_table((p.MemoryRegion(0, 1 << 20, 0x7F0000000000, 0),))
            assert self.call_u64(Request.SET_MEM_TABLE, table, need_reply=True, fds=(memory,)) == 0
        finally:
            os.close(memory)
        for ring in (0, 1):
            self.send(Request.SET_VRING_NUM, p.encode_vring_state(p.VringState(ring, 256)))
            self.send(Request.SET_VRING_BASE, p.encode_vring_state(p.VringState(ring, 0)))
            self.send(Request.SET_VRING_ADDR, p.encode_vring_addr(p.VringAddr(ring, 0, 1, 2, 3, 0)))
            for request in (Request.SET_VRING_KICK, Request.SET_VRING_CALL):
                event = os.eventfd(0)
                self.send(request, p.encode_vring_file(p.VringFile(ring, False)), fds=(event,))
                os.close(event)
            self.send(Request.SET_VRING_ENABLE, p.encode_vring_state(p.VringState(ring, 1)))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair() -> Iterator[tuple[VhostUserBackend, Frontend, list[BackendState], list[str]]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    changes: list[BackendState] = []
    rarps: list[str] = []
    backend = VhostUserBackend(
        MODE, connection=ours, port="vm1", on_change=changes.append, on_rarp=rarps.append
    )
    backend.start()
    frontend = Frontend(theirs)
    yield backend, frontend, changes, rarps
    frontend.close()
    backend.stop()


def test_start_up_is_recorded_and_published(
    pair: tuple[VhostUserBackend, Frontend, list[BackendState], list[str]],
) -> None:
    backend, frontend, changes, _ = pair
    before = open_fds()
    frontend.start_device()
    frontend.call_u64(Request.GET_FEATURES)  # a round trip: everything before is handled
    state = backend.snapshot()
    assert state.connected and state.broken is None and state.unexpected == ()
    assert state.negotiated == virtio.Negotiated(GUEST, PROTOCOL, 1, (256, 256))
    assert state.offered_features == FEATURES and state.mode == "test.v1"
    assert all(r.enabled and r.started for r in state.rings)
    assert changes[-1] == state  # callbacks of earlier messages ran before the next one
    assert open_fds() == before  # memory, kick and call fds were not kept


def test_migration_messages_are_answered(
    pair: tuple[VhostUserBackend, Frontend, list[BackendState], list[str]],
) -> None:
    backend, frontend, _, rarps = pair
    frontend.start_device()
    log = os.memfd_create("dirty-log")
    assert (
        frontend.call_u64(Request.SET_LOG_BASE, p.encode_log(p.LogArea(4096, 0)), fds=(log,)) == 0
    )
    os.close(log)
    assert (
        frontend.call_u64(Request.SET_FEATURES, p.encode_u64(GUEST | LOG_ALL), need_reply=True) == 0
    )
    logged = p.VringAddr(0, p.VRING_F_LOG, 1, 2, 3, 4)
    assert (
        frontend.call_u64(Request.SET_VRING_ADDR, p.encode_vring_addr(logged), need_reply=True) == 0
    )
    state = backend.wait_for(lambda s: s.log_all)
    assert state.negotiated is not None and state.negotiated.features == GUEST
    assert state.rings[0].logging
    for ring in (0, 1):
        answer = frontend.call(Request.GET_VRING_BASE, p.encode_vring_state(p.VringState(ring, 0)))
        assert p.decode_vring_state(answer.payload) == p.VringState(ring, 0)
    frontend.send(Request.SEND_RARP, p.encode_mac(MAC))
    frontend.call_u64(Request.GET_FEATURES)  # a round trip: the RARP callback has run
    state = backend.snapshot()
    assert state.rarps == (MAC,) and not state.rings[1].started
    assert rarps == [MAC]


def test_unexpected_messages_never_hang_or_desynchronise(
    pair: tuple[VhostUserBackend, Frontend, list[BackendState], list[str]],
) -> None:
    backend, frontend, _, _ = pair
    frontend.start_device()
    frontend.send(99, b"whatever")  # no reply expected, none sent
    assert frontend.call_u64(Request.GET_FEATURES) == FEATURES
    assert frontend.call_u64(99, need_reply=True) == 1
    assert frontend.call_u64(Request.SET_VRING_NUM, b"\0", need_reply=True) == 1
    assert frontend.call_u64(Request.GET_INFLIGHT_FD, b"\0" * 20) == 1
    state = backend.wait_for(lambda s: len(s.unexpected) >= 4)
    assert state.connected and state.broken is None
    assert any("REQUEST_99" in text for text in state.unexpected)


def test_a_feature_not_offered_breaks_the_connection(
    pair: tuple[VhostUserBackend, Frontend, list[BackendState], list[str]],
) -> None:
    backend, frontend, _, _ = pair
    frontend.call_u64(Request.GET_FEATURES)
    frontend.send(Request.SET_PROTOCOL_FEATURES, p.encode_u64(PROTOCOL))
    packed = GUEST | 1 << virtio.Feature.VIRTIO_F_RING_PACKED
    assert frontend.call_u64(Request.SET_FEATURES, p.encode_u64(packed), need_reply=True) == 1
    assert frontend.at_eof()
    state = backend.wait_for(lambda s: not s.connected)
    assert state.broken is not None and "VIRTIO_F_RING_PACKED (bit 34)" in state.broken
    assert state.negotiated is None


def test_callback_failures_do_not_stop_the_backend(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()

    def explode(value: object) -> None:
        raise RuntimeError("agent bug")

    with VhostUserBackend(MODE, connection=ours, on_change=explode, on_rarp=explode) as backend:
        frontend = Frontend(theirs)
        frontend.start_device()
        frontend.send(Request.SEND_RARP, p.encode_mac(MAC))
        assert frontend.call_u64(Request.GET_FEATURES) == FEATURES
        assert backend.snapshot().rarps == (MAC,)
        frontend.close()


def test_server_survives_disconnect_garbage_and_reconnect(short_tmp: Path) -> None:
    path = short_tmp / "vu.sock"
    with VhostUserBackend(MODE, path) as backend:
        first = Frontend.connect(path)
        first.start_device()
        backend.wait_for(lambda s: s.negotiated is not None)
        first.close()
        state = backend.wait_for(lambda s: not s.connected)
        assert state.negotiated == virtio.Negotiated(GUEST, PROTOCOL, 1, (256, 256))
        assert state.rings == ()

        garbage = Frontend.connect(path)
        garbage.sock.sendall(struct.pack("=III", 1, 1, 1 << 20))  # absurd payload size
        assert garbage.at_eof()
        garbage.close()

        again = Frontend.connect(path)
        new_features = virtio.mask("VERSION_1 MRG_RXBUF VHOST_USER_F_PROTOCOL_FEATURES")
        again.start_device(new_features)
        state = backend.wait_for(
            lambda s: s.negotiated is not None and s.negotiated.features == new_features
        )
        assert state.connections == 3 and state.connected
        again.close()
    assert not path.exists()


def test_server_refuses_a_second_frontend(short_tmp: Path) -> None:
    path = short_tmp / "vu.sock"
    with VhostUserBackend(MODE, path) as backend:
        first = Frontend.connect(path)
        assert first.call_u64(Request.GET_FEATURES) == FEATURES
        second = Frontend.connect(path)
        assert second.at_eof()
        assert first.call_u64(Request.GET_FEATURES) == FEATURES
        assert backend.snapshot().connections == 1
        first.close()
        second.close()


def test_client_mode_connects_and_reconnects(short_tmp: Path) -> None:
    path = short_tmp / "qemu.sock"
    with VhostUserBackend(MODE, path, client=True, reconnect_interval=0.02) as backend:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))  # QEMU's server=on socket appears after the back-end started
        listener.listen(1)
        listener.settimeout(5)
        for round_ in (1, 2):
            conn, _ = listener.accept()
            frontend = Frontend(conn)
            frontend.start_device()
            frontend.call_u64(Request.GET_FEATURES)
            state = backend.snapshot()
            assert state.connections == round_ and len(state.rings) == 2
            frontend.close()
        listener.close()
    assert path.exists()  # the client never removes QEMU's socket


def test_stop_is_prompt_while_waiting(short_tmp: Path) -> None:
    backend = VhostUserBackend(MODE, short_tmp / "absent.sock", client=True)
    backend.start()
    stopper = threading.Thread(target=backend.stop)
    stopper.start()
    stopper.join(2)
    assert not stopper.is_alive()


def test_socket_path_rules(short_tmp: Path) -> None:
    path = short_tmp / "vu.sock"
    with VhostUserBackend(MODE, path), pytest.raises(BackendError, match="in use"):
        VhostUserBackend(MODE, path).start()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: replaced
    with VhostUserBackend(MODE, path) as backend:
        assert backend.snapshot().socket == str(path)
    regular = short_tmp / "file"
    regular.write_text("not a socket")
    with pytest.raises(BackendError, match="not a socket"):
        VhostUserBackend(MODE, regular).start()


def test_wait_for_times_out_with_the_state(short_tmp: Path) -> None:
    with (
        VhostUserBackend(MODE, short_tmp / "vu.sock") as backend,
        pytest.raises(Timeout, match="connected=False"),
    ):
        backend.wait_for(lambda s: s.connected, timeout=0.05)


def _standalone(*args: str) -> list[str]:
    return [sys.executable, "-m", "liveport.vhostuser.backend", *args]


def _wait_json(path: Path, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        if data and predicate(data):
            return data
        assert time.monotonic() < deadline, f"state file never matched: {data}"
        time.sleep(0.01)


def test_standalone_backend_serves_and_writes_its_state(short_tmp: Path) -> None:
    mode = load_catalogue(config_dir=None, environ={}).newest()
    path, state_file = short_tmp / "vu.sock", short_tmp / "state.json"
    proc = subprocess.Popen(
        _standalone("--socket", str(path), "--mode", mode.name, "--state-file", str(state_file)),
        stderr=subprocess.PIPE,
    )
    try:
        _wait_json(state_file, lambda s: s["mode"] == mode.name)
        frontend = Frontend.connect(path)
        assert frontend.call_u64(Request.GET_FEATURES) == mode.features
        acked = virtio.mask("VERSION_1 MRG_RXBUF VHOST_USER_F_PROTOCOL_FEATURES")
        frontend.send(Request.SET_FEATURES, p.encode_u64(acked))
        frontend.send(Request.SET_VRING_NUM, p.encode_vring_state(p.VringState(0, 512)))
        frontend.send(Request.SEND_RARP, p.encode_mac(MAC))
        state = _wait_json(state_file, lambda s: s["rarps"] == [MAC])
        assert state["connected"] is True
        assert state["offered_features"] == f"0x{mode.features:x}"
        assert state["negotiated"] == {
            "features": f"0x{acked:x}",
            "protocol_features": "0x0",
            "queue_pairs": 1,
            "ring_sizes": [512],
        }
        frontend.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        proc.stderr.close()
    assert not path.exists()


def test_standalone_backend_refuses_an_unknown_mode(short_tmp: Path) -> None:
    result = subprocess.run(
        _standalone("--socket", str(short_tmp / "vu.sock"), "--mode", "no.such.mode"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 4  # not found
    assert result.stderr.startswith("error: unknown vhost-user mode 'no.such.mode'; known: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_standalone_backend_serves_a_handed_socket_until_it_closes() -> None:
    mode = load_catalogue(config_dir=None, environ={}).newest()
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        _standalone("--fd", str(ours.fileno()), "--mode", mode.name),
        pass_fds=(ours.fileno(),),
        stderr=subprocess.DEVNULL,
    )
    ours.close()
    frontend = Frontend(theirs)
    assert frontend.call_u64(Request.GET_QUEUE_NUM) == mode.max_queue_pairs
    frontend.close()
    assert proc.wait(10) == 0
