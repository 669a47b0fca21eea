"""OpenFlowConnection against a scripted switch on a unix socket: the handshake, xid matching,
echo, errors, bundle ordering, packet-in delivery, and what callers see when the switch goes.

The lab tests run the same connection against a real ovs-vswitchd; these cover what a real
switch will not do on demand (drop mid-request, refuse OpenFlow 1.3, flood packet-ins).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from liveport.model.errors import Timeout
from liveport.model.flows import Flow, FlowDiff, Output, match
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.errors import ConnectionLost, OpenFlowError

OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY, OFPT_EXPERIMENTER = 0, 1, 2, 3, 4
OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY, OFPT_SET_CONFIG = 5, 6, 9
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY = 20, 21
ONF, NX = 0x4F4E4600, 0x2320
ONF_BUNDLE_CONTROL, ONF_BUNDLE_ADD = 2300, 2301
OPEN_REQUEST, OPEN_REPLY, COMMIT_REQUEST, DISCARD_REQUEST = 0, 1, 4, 6

Handler = Callable[[int, int, bytes], bytes | None]


def header(msg_type: int, xid: int, body: bytes = b"", version: int = 4) -> bytes:
    return struct.pack("!BBHI", version, msg_type, 8 + len(body), xid) + body


def hello(*versions: int) -> bytes:
    bitmap = sum(1 << v for v in versions)
    return header(OFPT_HELLO, 1, struct.pack("!HHI", 1, 8, bitmap), version=max(versions))


def error(xid: int, type_: int, code: int) -> bytes:
    return header(OFPT_ERROR, xid, struct.pack("!HH", type_, code) + b"\x00" * 8)


def packet_in(frame: bytes, cookie: int = 0x99) -> bytes:
    props = struct.pack("!HH", 0, 4 + len(frame)) + frame
    props += b"\x00" * (-len(props) % 8)
    props += struct.pack("!HH4xQ", 4, 16, cookie)
    return header(OFPT_EXPERIMENTER, 0, struct.pack("!II", NX, 30) + props)


class FakeSwitch:
    """Speaks just enough OpenFlow 1.3: hello, features, barriers, bundle open replies.

    Every message received is recorded as (type, xid, body); `handler` may answer any
    message instead of the defaults (return bytes to send, or b"" to stay silent).
    """

    def __init__(self, path: Path, greeting: bytes = hello(1, 4, 6)) -> None:
        self.path = path
        self.greeting = greeting
        self.received: list[tuple[int, int, bytes]] = []
        self.handler: Handler = lambda msg_type, xid, body: None
        self.writer: asyncio.StreamWriter | None = None
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> FakeSwitch:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        self.server.close()
        await self.server.wait_closed()

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def types(self) -> list[int]:
        return [msg_type for msg_type, _, _ in self.received]

    async def wait_for(self, msg_type: int, after: int = 0) -> tuple[int, bytes]:
        """The xid and body of the first message of msg_type from the after'th received on,
        once it has arrived."""
        while True:
            for got_type, xid, body in self.received[after:]:
                if got_type == msg_type:
                    return xid, body
            self.arrived.clear()
            await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(self.greeting)
        try:
            while True:
                _, msg_type, length, xid = struct.unpack("!BBHI", await reader.readexactly(8))
                body = await reader.readexactly(length - 8)
                self.received.append((msg_type, xid, body))
                self.arrived.set()
                answer = self.handler(msg_type, xid, body)
                writer.write(answer if answer is not None else self._default(msg_type, xid, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    def _default(msg_type: int, xid: int, body: bytes) -> bytes:
        if msg_type == OFPT_FEATURES_REQUEST:
            return header(OFPT_FEATURES_REPLY, xid, struct.pack("!QIBB2xII", 0xD1, 0, 254, 0, 0, 0))
        if msg_type == OFPT_BARRIER_REQUEST:
            return header(OFPT_BARRIER_REPLY, xid)
        if msg_type == OFPT_EXPERIMENTER:
            experimenter, exp_type = struct.unpack_from("!II", body)
            if (experimenter, exp_type) == (ONF, ONF_BUNDLE_CONTROL):
                bundle_id, kind, flags = struct.unpack_from("!IHH", body, 8)
                reply = struct.pack("!IIIHH", ONF, ONF_BUNDLE_CONTROL, bundle_id, kind + 1, flags)
                return header(OFPT_EXPERIMENTER, xid, reply)
        return b""


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):
            await test()

    asyncio.run(bounded())


def with_switch(
    short_tmp: Path,
    body: Callable[[FakeSwitch, OpenFlowConnection], Awaitable[None]],
    **options: Any,
) -> None:
    async def test() -> None:
        async with FakeSwitch(short_tmp / "br.mgmt") as switch:
            conn = await OpenFlowConnection.open(switch.path, timeout=5, **options)
            try:
                await body(switch, conn)
            finally:
                await conn.aclose()

    run(test)


def test_handshake_configures_packet_ins(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        assert conn.datapath_id == 0xD1
        assert switch.types() == [
            OFPT_HELLO,
            OFPT_FEATURES_REQUEST,
            OFPT_SET_CONFIG,
            OFPT_EXPERIMENTER,
            OFPT_BARRIER_REQUEST,
        ]
        _, _, set_config = switch.received[2]
        assert struct.unpack("!HH", set_config) == (0, 0xFFFF)  # flags, miss_send_len
        _, _, pin_format = switch.received[3]
        assert struct.unpack("!III", pin_format) == (NX, 16, 2)  # NXT_PACKET_IN2

    with_switch(short_tmp, body)


def test_a_switch_without_openflow13_is_refused(short_tmp: Path) -> None:
    async def test() -> None:
        async with FakeSwitch(short_tmp / "br.mgmt", greeting=hello(1, 6)) as switch:
            with pytest.raises(ConnectionLost, match="add OpenFlow13 to the bridge's protocols"):
                await OpenFlowConnection.open(switch.path, timeout=5)

    run(test)


def test_a_missing_socket_is_connection_lost(short_tmp: Path) -> None:
    async def test() -> None:
        with pytest.raises(ConnectionLost, match="cannot connect"):
            await OpenFlowConnection.open(short_tmp / "nothing.mgmt", timeout=5)

    run(test)


def test_echo_requests_are_answered_with_their_xid_and_data(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        switch.send(header(OFPT_ECHO_REQUEST, 4242, b"are you there"))
        xid, data = await switch.wait_for(OFPT_ECHO_REPLY)
        assert (xid, data) == (4242, b"are you there")

    with_switch(short_tmp, body)


def test_an_error_reply_fails_its_request_with_a_readable_error(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        switch.handler = lambda t, xid, b: error(xid, 1, 1) if t == OFPT_BARRIER_REQUEST else None
        with pytest.raises(OpenFlowError, match="barrier: BAD_REQUEST/BAD_TYPE") as caught:
            await conn.barrier()
        assert (caught.value.type, caught.value.code) == (1, 1)

    with_switch(short_tmp, body)


def test_a_barrier_without_reply_times_out(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        switch.handler = lambda t, xid, b: b"" if t == OFPT_BARRIER_REQUEST else None
        with pytest.raises(Timeout, match="barrier"):
            await conn.barrier(timeout=0.05)

    with_switch(short_tmp, body)


def test_a_refused_bundle_add_is_discarded_never_committed(short_tmp: Path) -> None:
    flows = [Flow(0, p, match(in_port=p), (Output(1),), cookie=7) for p in (1, 2, 3)]
    adds: list[int] = []

    def refuse_second_add(msg_type: int, xid: int, body: bytes) -> bytes | None:
        if msg_type == OFPT_EXPERIMENTER and struct.unpack_from("!I", body, 4)[0] == ONF_BUNDLE_ADD:
            adds.append(xid)
            return error(xid, 4, 9) if len(adds) == 2 else b""
        return None

    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        switch.handler = refuse_second_add
        with pytest.raises(OpenFlowError, match="BAD_PREREQ") as caught:
            await conn.apply(FlowDiff(adds=tuple(flows)))
        assert caught.value.flow == flows[1]
        await conn.barrier()  # the discard has been sent before this
        controls = [
            struct.unpack_from("!H", b, 12)[0]
            for t, _, b in switch.received
            if t == OFPT_EXPERIMENTER and struct.unpack_from("!I", b, 4)[0] == ONF_BUNDLE_CONTROL
        ]
        assert controls == [OPEN_REQUEST, DISCARD_REQUEST]

    with_switch(short_tmp, body)


def test_a_clean_bundle_commits_after_its_adds_are_confirmed(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        start = len(switch.received)
        flow = Flow(0, 1, match(in_port=1), (Output(2),), cookie=7)
        await conn.apply(FlowDiff(deletes=(flow,), adds=(flow,)))
        kinds = []
        for t, _, b in switch.received[start:]:
            if t == OFPT_EXPERIMENTER:
                exp_type = struct.unpack_from("!I", b, 4)[0]
                kinds.append(
                    "add" if exp_type == ONF_BUNDLE_ADD else struct.unpack_from("!H", b, 12)[0]
                )
            else:
                kinds.append(t)
        assert kinds == [OPEN_REQUEST, "add", "add", OFPT_BARRIER_REQUEST, COMMIT_REQUEST]

    with_switch(short_tmp, body)


def test_an_empty_diff_sends_nothing(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        start = len(switch.received)
        await conn.apply(FlowDiff())
        await conn.barrier()
        assert switch.types()[start:] == [OFPT_BARRIER_REQUEST]

    with_switch(short_tmp, body)


def test_packet_ins_outlive_the_connection_then_the_reader_is_told(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        switch.send(packet_in(b"first"))
        switch.send(packet_in(b"second"))
        await conn.barrier()  # the switch answers in order: both packet-ins are in
        switch.drop()
        first = await conn.next_packet_in(timeout=1)
        assert (first.data, first.cookie, first.received_at) == (b"first", 0x99, 42.0)
        assert (await conn.next_packet_in(timeout=1)).data == b"second"
        with pytest.raises(ConnectionLost):
            await conn.next_packet_in(timeout=1)
        with pytest.raises(ConnectionLost):
            await conn.barrier()

    with_switch(short_tmp, body, clock=lambda: 42.0)


def test_a_pending_request_fails_when_the_switch_goes(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        start = len(switch.received)
        switch.handler = lambda t, xid, b: b"" if t == OFPT_BARRIER_REQUEST else None
        pending = asyncio.create_task(conn.barrier())
        await switch.wait_for(OFPT_BARRIER_REQUEST, after=start)
        switch.drop()
        with pytest.raises(ConnectionLost, match="closed by the switch"):
            await pending
        assert conn.closed

    with_switch(short_tmp, body)


def test_close_wakes_a_waiting_packet_in_reader(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        waiting = asyncio.create_task(conn.next_packet_in())
        await asyncio.sleep(0)  # let it start waiting
        conn.close()
        with pytest.raises(ConnectionLost, match="was closed"):
            await waiting

    with_switch(short_tmp, body)


def test_a_full_packet_in_queue_drops_and_counts(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        for n in range(5):
            switch.send(packet_in(bytes([n])))
        await conn.barrier()
        assert conn.dropped_packet_ins == 3
        assert [(await conn.next_packet_in(timeout=1)).data for _ in range(2)] == [b"\0", b"\1"]
        with pytest.raises(Timeout):
            await conn.next_packet_in(timeout=0.01)

    with_switch(short_tmp, body, packet_in_queue=2)


def test_queued_packet_ins_are_taken_without_waiting_and_the_end_stays(short_tmp: Path) -> None:
    async def body(switch: FakeSwitch, conn: OpenFlowConnection) -> None:
        assert conn.queued_packet_ins() == []
        switch.send(packet_in(b"first"))
        switch.send(packet_in(b"second"))
        await conn.barrier()  # both are read before the barrier's reply
        assert [p.data for p in conn.queued_packet_ins()] == [b"first", b"second"]
        assert conn.queued_packet_ins() == []
        switch.send(packet_in(b"third"))
        await conn.barrier()
        switch.drop()
        with pytest.raises(ConnectionLost):
            await conn.barrier()
        assert [p.data for p in conn.queued_packet_ins()] == [b"third"]
        with pytest.raises(ConnectionLost):  # the end of the stream is still there
            await conn.next_packet_in(timeout=1)

    with_switch(short_tmp, body)
