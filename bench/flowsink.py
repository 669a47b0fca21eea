"""A recording switch for control-plane benchmarks: what ovs-vswitchd does for liveport-agent,
without a datapath, for many chassis in one process.

Per chassis it

- listens on the bridge's OpenFlow management socket (`<chassis dir>/br-int.mgmt`) and speaks
  what `liveport.openflow.conn` sends: Hello (OpenFlow 1.3), FeaturesRequest, SetConfig,
  NXT_SET_PACKET_IN_FORMAT, ONF bundles (open / add / commit / discard), FlowMods (add,
  modify, delete and delete-strict, with cookie masks), flow-stats requests (answered from
  what it holds), barriers and echo;
- keeps one flow table keyed as OVS keys it, (table, priority, match), and records when each
  cookie appeared in it;
- assigns `ofport` to every Interface row of the chassis' Open_vSwitch database that has
  none (VIFs the harness plugs, tunnel ports the agent creates), as ovs-vswitchd would;
- on request plays a VM's announcement into the datapath: the flows of table 0 for the
  announcing VIF run on the packet (`liveport.model.flowsim`), so the agent's own activation
  flows `learn` their unblocking flows into the table and send the NXT_PACKET_IN2 carrying
  the activation userdata -- exactly the in-datapath activation of DESIGN.md M3.

Flow-mods are parsed with `struct` on the hot path (a 10,000-port run installs a few hundred
thousand) and stored as the bytes the agent sent, so a flow dump hands back exactly what was
installed; os-ken's codec decodes stored flows only for announcements.

A control socket (`<base>/sinks.ctl`, one JSON object per line each way) lets the harness
ask: `wait_cookie` (when did every chassis first hold a flow with this cookie),
`announce`, `stats`. Times are CLOCK_MONOTONIC (time.monotonic), shared by every process.

Run: `python bench/flowsink.py BASE CHASSIS...` -- chassis directories are BASE/CHASSIS, each
holding the chassis' Open_vSwitch database socket `conf.sock`. It prints "ready" once every
socket listens and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Iterator, Mapping  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ovs.db.idl  # noqa: E402
import ovs.poller  # noqa: E402
from os_ken.ofproto import ofproto_parser  # noqa: E402
from os_ken.ofproto import ofproto_v1_3 as ofp  # noqa: E402

import liveport.ovsdb.client  # noqa: E402,F401  (python-ovs on poll(2), not select())
from liveport.model.addr import Mac  # noqa: E402
from liveport.model.flows import Flow, FlowSet  # noqa: E402
from liveport.model.flowsim import Switch, packet_fields  # noqa: E402
from liveport.model.packets import rarp  # noqa: E402
from liveport.openflow.encode import DATAPATH, flow_from_mod, flow_mod  # noqa: E402
from liveport.ovsdb import schema  # noqa: E402

log = logging.getLogger("flowsink")

OFP_VERSION = 4
HEADER = struct.Struct("!BBHI")
FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")  # after the header: cookie ... flags, pad
FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
MULTIPART = struct.Struct("!HH4x")
FLOW_STATS_REQUEST = struct.Struct("!B3xII4xQQ")
EXPERIMENTER = struct.Struct("!II")
BUNDLE_CTRL = struct.Struct("!IHH")
BUNDLE_ADD = struct.Struct("!I2xH")
NX, ONF = 0x00002320, 0x4F4E4600
NXT_SET_PACKET_IN_FORMAT, NXT_PACKET_IN2 = 16, 30
ONF_BUNDLE_CONTROL, ONF_BUNDLE_ADD = 2300, 2301
OXM_IN_PORT = 0x80000004  # OXM_OF_IN_PORT, 4 bytes
OXM_ETH_SRC = 0x80000806  # OXM_OF_ETH_SRC, 6 bytes, no mask
MAX_REPLY = 60_000  # bytes of flow stats per multipart reply message
LOCAL_OFPORT = 65534  # what OVS's database shows for OFPP_LOCAL, the bridge's own port
ALL_ONES = (1 << 64) - 1


def _message(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def _error(xid: int, err_type: int, code: int, offending: bytes) -> bytes:
    return _message(ofp.OFPT_ERROR, xid, struct.pack("!HH", err_type, code) + offending[:64])


def _oxms(match: bytes) -> frozenset[bytes]:
    """The OXM TLVs of an ofp_match (type, length, fields, padding) as a set of byte strings."""
    _, length = struct.unpack_from("!HH", match)
    out = set()
    offset = 4
    while offset + 4 <= length:
        (header,) = struct.unpack_from("!I", match, offset)
        size = 4 + (header & 0xFF)
        out.add(match[offset : offset + size])
        offset += size
    return frozenset(out)


# ----- the flow table -----------------------------------------------------------------------------

Key = tuple[int, int, bytes]  # table, priority, ofp_match bytes (canonical: the agent's encoding)


@dataclass
class Entry:
    cookie: int
    match: bytes
    instructions: bytes


@dataclass
class FlowMod:
    cookie: int
    cookie_mask: int
    table: int
    command: int
    priority: int
    flags: int
    match: bytes
    instructions: bytes


def parse_flow_mod(message: bytes) -> FlowMod:
    """A whole OFPT_FLOW_MOD message (header included)."""
    (cookie, mask, table, command, _idle, _hard, priority, _buf, _port, _group, flags) = (
        FLOW_MOD.unpack_from(message, HEADER.size)
    )
    at = HEADER.size + FLOW_MOD.size
    _, length = struct.unpack_from("!HH", message, at)
    padded = (length + 7) // 8 * 8
    return FlowMod(
        cookie,
        mask,
        table,
        command,
        priority,
        flags,
        bytes(message[at : at + padded]),
        bytes(message[at + padded :]),
    )


class FlowTable:
    """One bridge's flows, keyed like OVS's classifier: (table, priority, match)."""

    def __init__(self) -> None:
        self.flows: dict[Key, Entry] = {}
        self.by_cookie: dict[int, set[Key]] = {}
        self.appeared: dict[int, float] = {}  # cookie -> when it last went from 0 flows to some
        self.mods = 0

    def __len__(self) -> int:
        return len(self.flows)

    def apply(self, mod: FlowMod, now: float) -> None:
        self.mods += 1
        if mod.command == ofp.OFPFC_ADD:
            self._put((mod.table, mod.priority, mod.match), mod.cookie, mod, now)
        elif mod.command in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            strict = mod.command == ofp.OFPFC_MODIFY_STRICT
            for key in list(self._select(mod, strict=strict)):
                entry = self.flows[key]
                entry.instructions = mod.instructions
        elif mod.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            for key in list(self._select(mod, strict=mod.command == ofp.OFPFC_DELETE_STRICT)):
                self._remove(key)

    def _put(self, key: Key, cookie: int, mod: FlowMod, now: float) -> None:
        old = self.flows.get(key)
        if old is not None:
            if old.cookie == cookie:
                old.instructions = mod.instructions
                return
            self._remove(key)
        self.flows[key] = Entry(cookie, mod.match, mod.instructions)
        keys = self.by_cookie.get(cookie)
        if keys is None:
            self.by_cookie[cookie] = {key}
            self.appeared[cookie] = now
        else:
            keys.add(key)

    def _remove(self, key: Key) -> None:
        entry = self.flows.pop(key)
        keys = self.by_cookie[entry.cookie]
        keys.discard(key)
        if not keys:
            del self.by_cookie[entry.cookie]

    def _cookies(self, cookie: int, mask: int) -> Iterator[int]:
        if mask == ALL_ONES:
            if cookie in self.by_cookie:
                yield cookie
            return
        if mask == 0:
            yield from list(self.by_cookie)
            return
        want = cookie & mask
        yield from [c for c in self.by_cookie if c & mask == want]

    def _select(self, mod: FlowMod, *, strict: bool) -> Iterator[Key]:
        if strict:
            key = (mod.table, mod.priority, mod.match)
            entry = self.flows.get(key)
            if entry is not None and entry.cookie & mod.cookie_mask == mod.cookie & mod.cookie_mask:
                yield key
            return
        wanted = _oxms(mod.match)
        for cookie in self._cookies(mod.cookie, mod.cookie_mask):
            for key in self.by_cookie[cookie]:
                if mod.table not in (ofp.OFPTT_ALL, key[0]):
                    continue
                if wanted and not wanted <= _oxms(key[2]):
                    continue
                yield key

    def dump(self, table: int, cookie: int, mask: int) -> Iterator[tuple[Key, Entry]]:
        for c in self._cookies(cookie, mask):
            for key in self.by_cookie[c]:
                if table in (ofp.OFPTT_ALL, key[0]):
                    yield key, self.flows[key]

    def holds(self, cookie: int) -> bool:
        return cookie in self.by_cookie

    def decode(self, keys: Iterable[Key]) -> list[Flow]:
        """liveport's model of the flows at keys, through os-ken's codec."""
        out = []
        for key in keys:
            entry = self.flows[key]
            body = FLOW_MOD.pack(
                entry.cookie, 0, key[0], ofp.OFPFC_ADD, 0, 0, key[1], 0xFFFFFFFF, 0, 0, 0
            )
            raw = body + entry.match + entry.instructions
            message = HEADER.pack(OFP_VERSION, ofp.OFPT_FLOW_MOD, HEADER.size + len(raw), 0) + raw
            parsed = ofproto_parser.msg(
                DATAPATH, OFP_VERSION, ofp.OFPT_FLOW_MOD, len(message), 0, message
            )
            out.append(flow_from_mod(parsed))
        return out


# ----- one bridge ------------------------------------------------------------------------------


class Bridge:
    """One chassis' br-int: its flow table and the controller connection to it."""

    def __init__(self, name: str, directory: Path, datapath_id: int, changed: asyncio.Event):
        self.name = name
        self.directory = directory
        self.datapath_id = datapath_id
        self.table = FlowTable()
        self.changed = changed  # set after every change of any bridge's table
        self.connection: _Connection | None = None
        self.connections = 0
        self.bundles = 0
        self.packet_ins = 0
        self.packet_outs = 0
        self.server: asyncio.AbstractServer | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "br-int.mgmt"

    async def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(lambda: _Connection(self), str(self.socket))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.connection is not None:
            self.connection.close()

    def committed(self) -> None:
        self.changed.set()

    # ----- announcements ------------------------------------------------------------------

    def announce(self, mac: str) -> dict[str, Any]:
        """A RARP from mac arrives on the VIF whose activation flows expect it: runs table 0
        for that VIF on the packet, installs what it learns, sends the controller actions'
        packet-ins. Reports what happened (found: False when no flow expects it)."""
        address = Mac.parse(mac)
        needle = struct.pack("!I", OXM_ETH_SRC) + address.value.to_bytes(6, "big")
        candidates = [
            key for key in self.table.flows if key[0] == 0 and key[1] > 1000 and needle in key[2]
        ]
        in_ports = {
            port
            for f in self.table.decode(candidates)
            if (port := f.match.value("in_port")) is not None
        }
        if len(in_ports) != 1:
            return {"found": False, "in_ports": sorted(in_ports)}
        in_port = next(iter(in_ports))
        port_oxm = struct.pack("!II", OXM_IN_PORT, in_port)
        keys = [key for key in self.table.flows if key[0] == 0 and port_oxm in key[2]]
        frame = rarp(address)
        fields = packet_fields(frame, in_port)
        flows = FlowSet.of(self.table.decode(keys))
        result, _ = Switch(flows).process(fields)
        now = time.monotonic()
        for learned in result.learned:
            message = flow_mod(learned)
            message.serialize()
            self.table.apply(parse_flow_mod(bytes(message.buf)), now)
        hit = Switch(flows).lookup(0, fields)
        sent = 0
        for userdata in result.controller:
            if self.connection is not None and hit is not None:
                self.connection.packet_in(frame, in_port, hit.cookie, userdata)
                sent += 1
        self.packet_ins += sent
        self.committed()
        return {
            "found": True,
            "in_port": in_port,
            "learned": len(result.learned),
            "packet_ins": sent,
        }


class _Connection(asyncio.Protocol):
    """The controller's OpenFlow 1.3 session with one bridge."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.bundles: dict[int, list[FlowMod]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        old = self.bridge.connection
        if old is not None:
            old.close()  # one controller per bridge, as the agent expects
        self.bridge.connection = self
        self.bridge.connections += 1
        bitmap = struct.pack("!HHI", ofp.OFPHET_VERSIONBITMAP, 8, 1 << OFP_VERSION)
        transport.write(_message(ofp.OFPT_HELLO, 0, bitmap))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bridge.connection is self:
            self.bridge.connection = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            _, _, length, _ = HEADER.unpack_from(self.buffer)
            if length < HEADER.size:
                log.warning("%s: bad message length %d; closing", self.bridge.name, length)
                self.close()
                return
            if len(self.buffer) < length:
                return
            message = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.handle(message)

    def handle(self, message: bytes) -> None:
        version, msg_type, _, xid = HEADER.unpack_from(message)
        if msg_type == ofp.OFPT_HELLO:
            return
        if version != OFP_VERSION:
            self.send(_error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_VERSION, message))
            return
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self.send(_message(ofp.OFPT_ECHO_REPLY, xid, message[HEADER.size :]))
        elif msg_type == ofp.OFPT_FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", self.bridge.datapath_id, 0, 254, 0, 0, 0)
            self.send(_message(ofp.OFPT_FEATURES_REPLY, xid, body))
        elif msg_type == ofp.OFPT_SET_CONFIG:
            pass
        elif msg_type == ofp.OFPT_BARRIER_REQUEST:
            self.send(_message(ofp.OFPT_BARRIER_REPLY, xid))
        elif msg_type == ofp.OFPT_FLOW_MOD:
            self.bridge.table.apply(parse_flow_mod(message), time.monotonic())
            self.bridge.committed()
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            self._multipart(xid, message)
        elif msg_type == ofp.OFPT_PACKET_OUT:
            self.bridge.packet_outs += 1
        elif msg_type == ofp.OFPT_EXPERIMENTER:
            self._experimenter(xid, message)
        else:
            self.send(_error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, message))

    def _experimenter(self, xid: int, message: bytes) -> None:
        experimenter, exp_type = EXPERIMENTER.unpack_from(message, HEADER.size)
        at = HEADER.size + EXPERIMENTER.size
        if experimenter == NX and exp_type == NXT_SET_PACKET_IN_FORMAT:
            return
        if experimenter == ONF and exp_type == ONF_BUNDLE_CONTROL:
            bundle_id, kind, flags = BUNDLE_CTRL.unpack_from(message, at)
            self._bundle_control(xid, bundle_id, kind, flags, message)
            return
        if experimenter == ONF and exp_type == ONF_BUNDLE_ADD:
            bundle_id, _flags = BUNDLE_ADD.unpack_from(message, at)
            inner = message[at + BUNDLE_ADD.size :]
            _, inner_type, inner_len, _ = HEADER.unpack_from(inner)
            bundle = self.bundles.get(bundle_id)
            if bundle is None:
                self.send(_error(xid, ofp.OFPET_EXPERIMENTER, 0, message))
            elif inner_type != ofp.OFPT_FLOW_MOD:
                self.send(_error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, message))
            else:
                bundle.append(parse_flow_mod(inner[:inner_len]))
            return
        self.send(_error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER, message))

    def _bundle_control(self, xid: int, bundle_id: int, kind: int, flags: int, raw: bytes) -> None:
        if kind == ofp.ONF_BCT_OPEN_REQUEST:
            self.bundles[bundle_id] = []
        elif kind == ofp.ONF_BCT_COMMIT_REQUEST:
            mods = self.bundles.pop(bundle_id, None)
            if mods is None:
                self.send(_error(xid, ofp.OFPET_EXPERIMENTER, 0, raw))
                return
            now = time.monotonic()
            for mod in mods:
                self.bridge.table.apply(mod, now)
            self.bridge.bundles += 1
            self.bridge.committed()
        elif kind == ofp.ONF_BCT_DISCARD_REQUEST:
            self.bundles.pop(bundle_id, None)
        elif kind != ofp.ONF_BCT_CLOSE_REQUEST:
            self.send(_error(xid, ofp.OFPET_EXPERIMENTER, 0, raw))
            return
        reply = EXPERIMENTER.pack(ONF, ONF_BUNDLE_CONTROL) + BUNDLE_CTRL.pack(
            bundle_id, kind + 1, flags
        )
        self.send(_message(ofp.OFPT_EXPERIMENTER, xid, reply))

    def _multipart(self, xid: int, message: bytes) -> None:
        mp_type, _ = MULTIPART.unpack_from(message, HEADER.size)
        if mp_type != ofp.OFPMP_FLOW:
            self.send(_error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART, message))
            return
        table, _out_port, _out_group, cookie, mask = FLOW_STATS_REQUEST.unpack_from(
            message, HEADER.size + MULTIPART.size
        )
        parts: list[bytes] = []
        size = 0
        for key, entry in self.bridge.table.dump(table, cookie, mask):
            length = FLOW_STATS.size + len(entry.match) + len(entry.instructions)
            stats = FLOW_STATS.pack(length, key[0], 0, 0, key[1], 0, 0, 0, entry.cookie, 0, 0)
            part = stats + entry.match + entry.instructions
            if size + len(part) > MAX_REPLY and parts:
                self._multipart_reply(xid, parts, more=True)
                parts, size = [], 0
            parts.append(part)
            size += len(part)
        self._multipart_reply(xid, parts, more=False)

    def _multipart_reply(self, xid: int, parts: list[bytes], *, more: bool) -> None:
        flags = ofp.OFPMPF_REPLY_MORE if more else 0
        body = MULTIPART.pack(ofp.OFPMP_FLOW, flags) + b"".join(parts)
        self.send(_message(ofp.OFPT_MULTIPART_REPLY, xid, body))

    def packet_in(self, frame: bytes, in_port: int, cookie: int, userdata: bytes) -> None:
        """An NXT_PACKET_IN2 as OVS sends it for a controller() action in table 0."""

        def prop(kind: int, value: bytes) -> bytes:
            raw = struct.pack("!HH", kind, 4 + len(value)) + value
            return raw + b"\x00" * (-len(raw) % 8)

        metadata = struct.pack("!II", OXM_IN_PORT, in_port)
        props = b"".join(
            [
                prop(0, frame),  # NXPINT_PACKET
                prop(1, struct.pack("!I", len(frame))),  # NXPINT_FULL_LEN
                prop(3, struct.pack("!B", 0)),  # NXPINT_TABLE_ID
                prop(4, struct.pack("!4xQ", cookie)),  # NXPINT_COOKIE
                prop(5, struct.pack("!B", ofp.OFPR_ACTION)),  # NXPINT_REASON
                prop(6, metadata),  # NXPINT_METADATA
                prop(7, userdata),  # NXPINT_USERDATA
            ]
        )
        body = EXPERIMENTER.pack(NX, NXT_PACKET_IN2) + props
        self.send(_message(ofp.OFPT_EXPERIMENTER, 0, body))


# ----- ofport assignment ----------------------------------------------------------------------


@dataclass
class _Db:
    name: str
    idl: Any
    seen: int = -1
    next_ofport: int = 1
    txn: Any = None
    assigned: int = 0


class OfportAssigner:
    """Gives every Interface row without an ofport one, in many Open_vSwitch databases, from
    one thread (one poll loop over all the IDLs): the part of ovs-vswitchd the agent reads."""

    def __init__(self, remotes: Mapping[str, str]) -> None:
        path = str(schema.vswitch_path())
        self.dbs: list[_Db] = []
        for name, remote in remotes.items():
            helper = ovs.db.idl.SchemaHelper(location=path)
            helper.register_columns("Interface", ["name", "type", "ofport"])
            self.dbs.append(_Db(name, ovs.db.idl.Idl(remote, helper, leader_only=False)))
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._run, name="ofports", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        for db in self.dbs:
            db.idl.close()

    @property
    def assigned(self) -> int:
        return sum(db.assigned for db in self.dbs)

    def _run(self) -> None:
        while not self._stop:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass
            poller = ovs.poller.Poller()
            for db in self.dbs:
                self._step(db)
                db.idl.wait(poller)
                if db.txn is not None:
                    db.txn.wait(poller)
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            poller.block()

    def _step(self, db: _Db) -> None:
        db.idl.run()
        if db.txn is not None:
            status = db.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                return
            if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                log.warning("%s: ofport transaction: %s", db.name, db.txn.get_error() or status)
                db.seen = -1  # look again
            db.txn = None
        if db.idl.change_seqno == db.seen:
            return
        db.seen = db.idl.change_seqno
        rows = db.idl.tables["Interface"].rows.values()
        missing = []
        for row in rows:
            ofport = row.ofport
            if ofport:
                if ofport[0] != LOCAL_OFPORT:
                    db.next_ofport = max(db.next_ofport, ofport[0] + 1)
            else:
                missing.append(row)
        if not missing:
            return
        txn = ovs.db.idl.Transaction(db.idl)
        for row in sorted(missing, key=lambda r: r.name):
            if row.type == "internal":
                row.ofport = [LOCAL_OFPORT]
            else:
                row.ofport = [db.next_ofport]
                db.next_ofport += 1
            db.assigned += 1
        db.txn = txn
        status = txn.commit()
        if status != ovs.db.idl.Transaction.INCOMPLETE:
            db.txn = None
            if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                db.seen = -1


# ----- the process: many bridges, one control socket ------------------------------------------


@dataclass
class SinkHost:
    base: Path
    names: list[str]
    bridges: dict[str, Bridge] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    assigner: OfportAssigner | None = None

    async def start(self) -> None:
        for index, name in enumerate(self.names, start=1):
            bridge = Bridge(name, self.base / name, 0x4C50_0000_0000 | index, self.changed)
            await bridge.listen()
            self.bridges[name] = bridge

    def close(self) -> None:
        for bridge in self.bridges.values():
            bridge.close()

    async def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "wait_cookie":
            return await self.wait_cookie(
                int(request["cookie"]), request.get("chassis"), float(request.get("timeout", 60))
            )
        if op == "announce":
            bridge = self.bridges.get(str(request["chassis"]))
            if bridge is None:
                return {"error": f"unknown chassis {request['chassis']}"}
            return bridge.announce(str(request["mac"]))
        if op == "stats":
            return self.stats()
        return {"error": f"unknown op {op!r}"}

    async def wait_cookie(
        self, cookie: int, chassis: list[str] | None, timeout: float
    ) -> dict[str, Any]:
        """When each chassis (default: all) first held a flow with this exact cookie."""
        names = chassis or self.names
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            missing = [n for n in names if not self.bridges[n].table.holds(cookie)]
            if not missing:
                times = [self.bridges[n].table.appeared[cookie] for n in names]
                return {"first": min(times), "last": max(times), "missing": []}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"missing": missing}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.changed.wait()

    def stats(self) -> dict[str, Any]:
        bridges = {
            name: {
                "flows": len(b.table),
                "flow_mods": b.table.mods,
                "bundles": b.bundles,
                "connected": b.connection is not None,
                "connections": b.connections,
                "packet_ins": b.packet_ins,
                "packet_outs": b.packet_outs,
            }
            for name, b in self.bridges.items()
        }
        ofports = self.assigner.assigned if self.assigner is not None else 0
        return {"bridges": bridges, "ofports_assigned": ofports}


async def _serve_control(host: SinkHost, path: Path) -> asyncio.AbstractServer:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await host.handle(json.loads(line))
                except Exception as exc:  # a harness bug must not kill every sink
                    log.exception("control request failed")
                    answer = {"error": repr(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return await asyncio.start_unix_server(client, str(path), limit=1 << 20)


def control_path(base: Path) -> Path:
    return base / "sinks.ctl"


async def serve(base: Path, names: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assigner = OfportAssigner({n: f"unix:{base / n / 'conf.sock'}" for n in names})
    host = SinkHost(base, names, assigner=assigner)
    await host.start()
    assigner.start()
    control = await _serve_control(host, control_path(base))
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        control.close()
        host.close()
        await asyncio.to_thread(assigner.close)


class SinkControl:
    """The harness's side of the control socket (blocking; one request at a time per
    instance, so give each thread its own)."""

    def __init__(self, base: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(control_path(base)))
        self.file = self.sock.makefile("rb")

    def call(self, **request: Any) -> dict[str, Any]:
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        line = self.file.readline()
        if not line:
            raise ConnectionError("the flow sink process closed its control socket")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"flow sink: {answer['error']}")
        return answer

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> SinkControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: flowsink.py BASE CHASSIS...", file=sys.stderr)
        return 2
    base = Path(argv[0])
    logging.basicConfig(
        filename=str(base / "flowsink.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(base, argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
