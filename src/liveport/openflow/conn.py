"""One OpenFlow 1.3 connection to a bridge's management socket (`<rundir>/br-int.mgmt`).

Concurrency model: asyncio, one event loop. The connection's reader task is the only reader
of the socket; every other method runs in the caller's task and only writes (each message is
written whole by one synchronous call, so concurrent callers never interleave bytes).
Requests with a reply (barrier, features, flow dump, bundle control) are matched to it by
xid through a future. Requests without one (flow mods in a bundle, packet-out, set-config)
are confirmed by the next barrier reply, because OVS handles a connection's messages
strictly in order; an OFPT_ERROR for one of them is collected under its xid until then.

Packet-ins (NXT_PACKET_IN2) go into a bounded asyncio.Queue that callers read with
`next_packet_in()`; the reader never blocks on a slow consumer (it drops and counts instead,
in `dropped_packet_ins`). Each PacketIn carries the monotonic time it was read. When the
connection closes or drops, pending requests fail with ConnectionLost and so does
`next_packet_in()` once the queued packet-ins are consumed.

Only os-ken's message codec is used: no app manager, no eventlet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from liveport.model.errors import Timeout
from liveport.model.flows import Action, Flow, FlowDiff, FlowSet
from liveport.openflow import wire
from liveport.openflow.encode import (
    ALL_ONES,
    DATAPATH,
    OFP_NO_BUFFER,
    CodecError,
    delete_by_cookie,
    encode_action,
    flow_from_stats,
)
from liveport.openflow.errors import ConnectionLost, OpenFlowError, ProtocolError, describe
from liveport.openflow.packetin import (
    NXPIF_NXT_PACKET_IN2,
    PacketIn,
    decode_packet_in2,
    is_packet_in2,
)

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHI")  # version, type, length, xid
BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
# Without a miss_send_len the switch sends no packet-ins on a management connection.
MISS_SEND_LEN = 0xFFFF
# Bundle adds written between waits for the socket's write buffer to empty.
_DRAIN_EVERY = 512
_MAX_XID = 0xFFFFFFFF


@dataclass
class _Reply:
    """A request awaiting its reply (all parts of it, for a multipart request)."""

    future: asyncio.Future[list[Any]]
    what: str
    parts: list[Any] = field(default_factory=list)


@dataclass
class _Sink:
    """Errors for requests that have no reply of their own, gathered until a barrier."""

    errors: list[OpenFlowError] = field(default_factory=list)


@dataclass(frozen=True)
class _Silent:
    sink: _Sink
    what: str
    flow: Flow | None


def _hello_versions(version: int, message: bytes) -> set[int]:
    """The OpenFlow versions a HELLO offers: its version bitmap, else 1..version."""
    offset = _HEADER.size
    while offset + 4 <= len(message):
        elem_type, elem_len = struct.unpack_from("!HH", message, offset)
        if elem_len < 4:
            break
        if elem_type == ofp.OFPHET_VERSIONBITMAP:
            versions: set[int] = set()
            for index, word_at in enumerate(range(offset + 4, offset + elem_len - 3, 4)):
                (word,) = struct.unpack_from("!I", message, word_at)
                versions.update(index * 32 + bit for bit in range(32) if word >> bit & 1)
            return versions
        offset += (elem_len + 7) // 8 * 8
    return set(range(1, version + 1))


class OpenFlowConnection:
    """An OpenFlow 1.3 session with one bridge. Create it with `await OpenFlowConnection.open()`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        path: str,
        clock: Callable[[], float],
        packet_in_queue: int,
    ) -> None:
        self.path = path
        self.datapath_id: int | None = None
        self.dropped_packet_ins = 0
        self._reader = reader
        self._writer = writer
        self._clock = clock
        self._xid = 0
        self._bundle_id = 0
        self._replies: dict[int, _Reply] = {}
        self._silent: dict[int, _Silent] = {}
        self._packet_ins: asyncio.Queue[PacketIn | None] = asyncio.Queue(packet_in_queue)
        self._hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost: ConnectionLost | None = None
        self._task = asyncio.create_task(self._read_loop(), name=f"openflow reader {path}")

    # ----- life cycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        packet_in_queue: int = 10_000,
    ) -> OpenFlowConnection:
        """Connects to a unix management socket and completes the OpenFlow 1.3 handshake:
        Hello, FeaturesRequest, SetConfig(miss_send_len), packet-in format NXT_PACKET_IN2."""
        where = str(path)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(where)
        except TimeoutError:
            raise Timeout(f"connecting to {where} took more than {timeout}s") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {where}: {exc.strerror or exc}") from None
        conn = cls(reader, writer, path=where, clock=clock, packet_in_queue=packet_in_queue)
        try:
            async with conn._deadline(timeout, "OpenFlow handshake"):
                await conn._handshake()
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def _handshake(self) -> None:
        self._send(ofpp.OFPHello(DATAPATH))
        await self._hello
        features = await self._call(ofpp.OFPFeaturesRequest(DATAPATH), "features request")
        self.datapath_id = features[0].datapath_id
        sink = _Sink()
        xids = [
            self._send(
                ofpp.OFPSetConfig(DATAPATH, ofp.OFPC_FRAG_NORMAL, MISS_SEND_LEN), sink, "set-config"
            ),
            self._send(
                ofpp.NXTSetPacketInFormatMsg(DATAPATH, NXPIF_NXT_PACKET_IN2),
                sink,
                "packet-in format",
            ),
        ]
        try:
            await self._confirm(sink)
        finally:
            self._forget(xids)

    @property
    def closed(self) -> bool:
        return self._lost is not None

    def close(self) -> None:
        """Closes the connection; pending requests and packet-in readers get ConnectionLost."""
        self._lose(ConnectionLost(f"OpenFlow connection to {self.path} was closed"))
        self._task.cancel()

    async def aclose(self) -> None:
        """close(), then waits until the reader task has finished."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> OpenFlowConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----- requests ---------------------------------------------------------------------------

    async def barrier(self, timeout: float = 10.0) -> None:
        """Returns once the switch has handled everything sent before."""
        async with self._deadline(timeout, "barrier"):
            await self._confirm(_Sink())

    async def apply(
        self,
        change: FlowDiff,
        *,
        delete_cookies: Iterable[tuple[int, int]] = (),
        cookie_mask: int = ALL_ONES,
        timeout: float = 60.0,
    ) -> None:
        """Applies a diff atomically, in one ordered ONF bundle.

        Order: deletes of every flow whose cookie matches a (cookie, mask) of delete_cookies,
        then change.deletes (DELETE_STRICT, and only where the installed cookie equals the
        flow's under cookie_mask, so a flow liveport does not own is never touched), then
        change.adds and change.modifies as OFPFC_ADD of the whole flow (replacing cookie and
        actions). Every flow is encoded before anything is sent (CodecError). If the switch
        refuses any of it nothing changes, and OpenFlowError names the first flow refused.
        """
        mods: list[tuple[bytes, str, Flow | None]] = [
            (
                wire.message_bytes(delete_by_cookie(cookie, mask)),
                f"delete of cookie {cookie:#x}/{mask:#x}",
                None,
            )
            for cookie, mask in delete_cookies
        ]
        mods += [
            (wire.flow_mod_bytes(f, ofp.OFPFC_DELETE_STRICT, cookie_mask), "delete", f)
            for f in change.deletes
        ]
        mods += [(wire.flow_mod_bytes(f), "add", f) for f in (*change.adds, *change.modifies)]
        if not mods:
            return
        async with self._deadline(timeout, f"applying {len(mods)} flow changes"):
            await self._bundle(mods)

    async def delete_cookie(self, cookie: int, mask: int, *, timeout: float = 60.0) -> None:
        """Deletes every flow, in every table, whose cookie matches (cookie, mask)."""
        await self.apply(FlowDiff(), delete_cookies=[(cookie, mask)], timeout=timeout)

    async def dump_flows(
        self,
        cookie: int = 0,
        cookie_mask: int = 0,
        *,
        table: int = ofp.OFPTT_ALL,
        timeout: float = 60.0,
    ) -> FlowSet:
        """The installed flows whose cookie matches, decoded into the model (CodecError if
        one of them uses something liveport does not model)."""
        request = ofpp.OFPFlowStatsRequest(
            DATAPATH, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask, ofpp.OFPMatch()
        )
        async with self._deadline(timeout, "flow dump"):
            parts = await self._call(request, "flow dump")
        return FlowSet.of(flow_from_stats(stats) for part in parts for stats in part.body)

    async def packet_out(
        self, in_port: int, actions: Iterable[Action], data: bytes, *, timeout: float = 10.0
    ) -> None:
        """Sends data through actions as if it arrived on in_port (OFPP_CONTROLLER for none);
        returns once the switch has handled it, raising OpenFlowError if refused."""
        message = ofpp.OFPPacketOut(
            DATAPATH,
            buffer_id=OFP_NO_BUFFER,
            in_port=in_port,
            actions=[encode_action(a) for a in actions],
            data=data,
        )
        sink = _Sink()
        xid = self._send(message, sink, "packet-out")
        try:
            async with self._deadline(timeout, "packet-out"):
                await self._confirm(sink)
        finally:
            self._forget([xid])

    async def next_packet_in(self, timeout: float | None = None) -> PacketIn:
        """The next packet-in; Timeout if none arrives in time, ConnectionLost once the
        connection is gone and every packet-in received before has been handed out."""
        if self._lost is not None and self._packet_ins.empty():
            raise ConnectionLost(str(self._lost))
        async with self._deadline(timeout, "waiting for a packet-in"):
            item = await self._packet_ins.get()
        if item is None:
            self._packet_ins.put_nowait(None)  # tell the next reader too
            raise ConnectionLost(str(self._lost))
        return item

    def queued_packet_ins(self) -> list[PacketIn]:
        """Takes, without waiting, the packet-ins already read and not yet handed out (a
        caller that learned something from a later reply handles them first)."""
        out: list[PacketIn] = []
        while not self._packet_ins.empty():
            item = self._packet_ins.get_nowait()
            if item is None:
                self._packet_ins.put_nowait(None)  # the end stays for next_packet_in
                break
            out.append(item)
        return out

    # ----- bundles ----------------------------------------------------------------------------

    def _bundle_control(self, bundle_id: int, kind: int) -> Any:
        return ofpp.ONFBundleCtrlMsg(DATAPATH, bundle_id, kind, BUNDLE_FLAGS, [])

    async def _bundle(self, mods: list[tuple[bytes, str, Flow | None]]) -> None:
        self._bundle_id = self._bundle_id % _MAX_XID + 1
        bundle_id = self._bundle_id
        sink = _Sink()
        xids: list[int] = []
        committing = False
        try:
            open_request = self._bundle_control(bundle_id, ofp.ONF_BCT_OPEN_REQUEST)
            opened = self._expect(open_request, "bundle open")
            xids.append(opened)
            for index, (mod, what, flow) in enumerate(mods):
                xids.append(self._send_bundle_add(bundle_id, mod, sink, what, flow))
                if index % _DRAIN_EVERY == _DRAIN_EVERY - 1:
                    await self._drain()
            await self._reply(opened)
            # OVS drops a refused add from the bundle but would still commit the rest, so
            # every add must be known good before the commit.
            await self._confirm(sink)
            committing = True
            commit_request = self._bundle_control(bundle_id, ofp.ONF_BCT_COMMIT_REQUEST)
            commit = self._expect(commit_request, "bundle commit")
            xids.append(commit)
            try:
                await self._reply(commit)
            except OpenFlowError as exc:
                # A flow that fails only when applied is reported under its own xid first.
                raise (sink.errors[0] if sink.errors else exc) from None
        except BaseException:
            if not committing and self._lost is None:
                # Best effort, not awaited: the switch would otherwise keep the bundle open.
                self._send(self._bundle_control(bundle_id, ofp.ONF_BCT_DISCARD_REQUEST))
            raise
        finally:
            self._forget(xids)

    # ----- sending ----------------------------------------------------------------------------

    def _send_bundle_add(
        self, bundle_id: int, inner: bytes, sink: _Sink, what: str, flow: Flow | None
    ) -> int:
        """Writes a bundle add of inner (a serialized message) with a fresh xid."""
        if self._lost is not None:
            raise ConnectionLost(str(self._lost))
        self._xid = self._xid % _MAX_XID + 1
        xid = self._xid
        self._writer.write(wire.bundle_add(bundle_id, BUNDLE_FLAGS, inner, xid))
        self._silent[xid] = _Silent(sink, what, flow)
        return xid

    def _send(
        self, message: Any, sink: _Sink | None = None, what: str = "", flow: Flow | None = None
    ) -> int:
        """Writes one message with a fresh xid; errors for it go to sink if given."""
        if self._lost is not None:
            raise ConnectionLost(str(self._lost))
        self._xid = self._xid % _MAX_XID + 1  # xid 0 is left to the switch's async messages
        xid = self._xid
        message.set_xid(xid)
        message.serialize()
        self._writer.write(bytes(message.buf))
        if sink is not None:
            self._silent[xid] = _Silent(sink, what, flow)
        return xid

    def _expect(self, message: Any, what: str) -> int:
        """Sends a request that has a reply; the reply is collected under the returned xid."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        xid = self._send(message)
        self._replies[xid] = _Reply(future, what)
        return xid

    async def _reply(self, xid: int) -> list[Any]:
        entry = self._replies.get(xid)
        if entry is None:  # already failed and forgotten: the connection is gone
            raise ConnectionLost(str(self._lost))
        try:
            return await entry.future
        finally:
            self._replies.pop(xid, None)

    async def _call(self, message: Any, what: str) -> list[Any]:
        return await self._reply(self._expect(message, what))

    async def _confirm(self, sink: _Sink) -> None:
        """Barrier: afterwards every error for what was sent before is in sink."""
        await self._call(ofpp.OFPBarrierRequest(DATAPATH), "barrier")
        if sink.errors:
            raise sink.errors[0]

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ConnectionLost(f"OpenFlow connection to {self.path}: {exc}") from None

    def _forget(self, xids: Iterable[int]) -> None:
        """Drops what is still recorded for requests whose sender has stopped waiting."""
        for xid in xids:
            self._silent.pop(xid, None)
            entry = self._replies.pop(xid, None)
            if entry is None:
                continue
            if not entry.future.done():
                entry.future.cancel()
            elif not entry.future.cancelled():
                entry.future.exception()  # marks a failure as seen, so asyncio does not warn

    @contextlib.asynccontextmanager
    async def _deadline(self, timeout: float | None, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError:
            raise Timeout(f"{what} on {self.path}: no answer within {timeout}s") from None

    # ----- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        lost = ConnectionLost(f"OpenFlow connection to {self.path} was closed by the switch")
        try:
            while True:
                header = await self._reader.readexactly(_HEADER.size)
                version, msg_type, length, xid = _HEADER.unpack(header)
                if length < _HEADER.size:
                    raise ProtocolError(f"{self.path} sent a message of length {length}")
                message = header + await self._reader.readexactly(length - _HEADER.size)
                self._dispatch(version, msg_type, xid, message)
        except asyncio.IncompleteReadError:
            pass
        except ProtocolError as exc:
            lost = exc
        except OSError as exc:
            lost = ConnectionLost(f"OpenFlow connection to {self.path} failed: {exc}")
        except Exception as exc:
            # A bug here must not leave callers waiting forever: drop the connection loudly.
            log.exception("%s: reading OpenFlow failed", self.path)
            lost = ConnectionLost(f"OpenFlow connection to {self.path} failed: {exc!r}")
        finally:
            self._lose(lost)

    def _dispatch(self, version: int, msg_type: int, xid: int, message: bytes) -> None:
        if msg_type == ofp.OFPT_HELLO:
            self._on_hello(version, message)
            return
        if version != ofp.OFP_VERSION:
            raise ProtocolError(f"{self.path} sent OpenFlow version {version} after 1.3")
        if is_packet_in2(message):
            self._on_packet_in(message)
            return
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            # Answered here, so a busy caller never makes the switch think we are dead.
            reply = _HEADER.pack(version, ofp.OFPT_ECHO_REPLY, len(message), xid)
            self._writer.write(reply + message[_HEADER.size :])
            return
        parsed = ofproto_parser.msg(DATAPATH, version, msg_type, len(message), xid, message)
        if parsed is None:
            return  # os-ken has logged why it could not parse it
        if msg_type == ofp.OFPT_ERROR:
            self._on_error(xid, parsed)
            return
        entry = self._replies.get(xid)
        if entry is None:
            log.debug("%s: ignoring %s (xid %d)", self.path, type(parsed).__name__, xid)
            return
        entry.parts.append(parsed)
        if msg_type == ofp.OFPT_MULTIPART_REPLY and parsed.flags & ofp.OFPMPF_REPLY_MORE:
            return
        # The entry stays until its requester has taken the result (see _reply, _forget).
        if not entry.future.done():
            entry.future.set_result(entry.parts)

    def _on_hello(self, version: int, message: bytes) -> None:
        versions = _hello_versions(version, message)
        if ofp.OFP_VERSION not in versions:
            offered = ", ".join(str(v) for v in sorted(versions))
            raise ProtocolError(
                f"{self.path} does not speak OpenFlow 1.3 (wire versions {offered}): "
                "add OpenFlow13 to the bridge's protocols"
            )
        if not self._hello.done():
            self._hello.set_result(None)

    def _on_error(self, xid: int, error: Any) -> None:
        experimenter = getattr(error, "experimenter", None)
        code = error.exp_type if error.type == ofp.OFPET_EXPERIMENTER else error.code
        silent = self._silent.get(xid)
        if silent is not None:
            failure = OpenFlowError(
                error.type, code, silent.what, experimenter=experimenter, flow=silent.flow
            )
            silent.sink.errors.append(failure)
            return
        entry = self._replies.get(xid)
        if entry is not None:
            if not entry.future.done():
                entry.future.set_exception(
                    OpenFlowError(error.type, code, entry.what, experimenter=experimenter)
                )
            return
        if not self._hello.done():
            self._hello.set_exception(OpenFlowError(error.type, code, "hello"))
            return
        text = describe(error.type, code, experimenter)
        log.warning("%s: error for no pending request (xid %d): %s", self.path, xid, text)

    def _on_packet_in(self, message: bytes) -> None:
        try:
            packet_in = decode_packet_in2(message, self._clock())
        except CodecError as exc:
            log.warning("%s: dropping a packet-in: %s", self.path, exc)
            return
        try:
            self._packet_ins.put_nowait(packet_in)
        except asyncio.QueueFull:
            self.dropped_packet_ins += 1
            if self.dropped_packet_ins == 1 or self.dropped_packet_ins % 1000 == 0:
                log.warning(
                    "%s: packet-in queue full, %d dropped so far",
                    self.path,
                    self.dropped_packet_ins,
                )

    def _lose(self, lost: ConnectionLost) -> None:
        """Marks the connection dead and tells everyone waiting; idempotent."""
        if self._lost is not None:
            return
        self._lost = lost
        self._writer.close()
        for entry in self._replies.values():
            if not entry.future.done():
                entry.future.set_exception(ConnectionLost(str(lost)))
        if not self._hello.done():
            self._hello.set_exception(ConnectionLost(str(lost)))
        if self._packet_ins.full():
            self._packet_ins.get_nowait()  # room for the end marker beats one old packet-in
            self.dropped_packet_ins += 1
        self._packet_ins.put_nowait(None)
