"""The vhost-user wire format, as pure functions over bytes.

A message is a 12-byte header (request u32, flags u32, payload size u32, in the machine's byte
order) followed by the payload; file descriptors travel beside it as SCM_RIGHTS ancillary
data. Flags: bits 0-1 carry the protocol version (1), bit 2 marks a reply (a back-end sets it
on everything it sends), bit 3 asks for an acknowledgement (only meaningful once the
REPLY_ACK protocol feature is negotiated). Request numbers, payload layouts and the list of
requests that always expect an answer follow QEMU's docs/interop/vhost-user.rst; feature and
protocol feature bits are named in liveport.model.virtio.

Nothing here touches a socket: the back-end (liveport.vhostuser.backend) reads and writes,
this module only packs and unpacks, so every layout is unit-tested on plain bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

# "=": the machine's own byte order with standard sizes and no padding, as the spec says.
_HEADER = struct.Struct("=III")
_U64 = struct.Struct("=Q")
_VRING_STATE = struct.Struct("=II")
_VRING_ADDR = struct.Struct("=IIQQQQ")
_MEMORY_HEAD = struct.Struct("=II")
_REGION = struct.Struct("=QQQQ")
_LOG = struct.Struct("=QQ")
_CONFIG_HEAD = struct.Struct("=III")
_INFLIGHT = struct.Struct("=QQHH")

HEADER_SIZE = _HEADER.size
VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

#: The most payload a well-behaved front-end sends (QEMU's largest is a crypto session of a
#: few hundred bytes); anything above is treated as a broken stream, not allocated.
MAX_PAYLOAD = 4096
#: Memory regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
MAX_REGIONS = 8
#: File descriptors accepted with one message.
MAX_FDS = 16
#: Largest device configuration space carried by GET_CONFIG / SET_CONFIG.
MAX_CONFIG_SIZE = 256

VRING_INDEX_MASK = 0xFF
VRING_NOFD = 0x100
#: SET_VRING_ADDR flag: the used ring's writes must be logged (migration in progress).
VRING_F_LOG = 0x1


class Request(enum.IntEnum):
    """Front-end (QEMU) to back-end requests."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


#: Requests the front-end always waits an answer for (SET_LOG_BASE too, but only once
#: LOG_SHMFD is negotiated). Anything else is answered only when it asks with NEED_REPLY.
ALWAYS_REPLIED = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_VRING_BASE,
        Request.GET_QUEUE_NUM,
        Request.GET_CONFIG,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
        Request.GET_INFLIGHT_FD,
        Request.CREATE_CRYPTO_SESSION,
        Request.POSTCOPY_ADVISE,
        Request.POSTCOPY_END,
        Request.IOTLB_MSG,
    }
)


class ProtocolError(ValueError):
    """Bytes that are not a valid vhost-user message or payload."""


def request_name(request: int) -> str:
    """'GET_FEATURES' for 1; 'REQUEST_99' for a number the spec does not define."""
    try:
        return Request(request).name
    except ValueError:
        return f"REQUEST_{request}"


@dataclass(frozen=True)
class Header:
    request: int
    flags: int
    size: int

    @property
    def version(self) -> int:
        return self.flags & FLAG_VERSION_MASK

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)


@dataclass(frozen=True)
class Message:
    """One message without its file descriptors."""

    request: int
    flags: int = VERSION
    payload: bytes = b""

    @property
    def header(self) -> Header:
        return Header(self.request, self.flags, len(self.payload))

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def name(self) -> str:
        return request_name(self.request)


def encode_header(header: Header) -> bytes:
    return _HEADER.pack(header.request, header.flags, header.size)


def decode_header(data: bytes) -> Header:
    """Decodes the 12-byte header; refuses a payload size above MAX_PAYLOAD."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"header is {HEADER_SIZE} bytes, got {len(data)}")
    request, flags, size = _HEADER.unpack(data)
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"{request_name(request)}: payload of {size} bytes is too large")
    return Header(request, flags, size)


def encode(message: Message) -> bytes:
    """Header and payload, ready for the socket."""
    return encode_header(message.header) + message.payload


def decode(data: bytes) -> Message:
    """Decodes one whole message (header and exactly its payload)."""
    header = decode_header(data[:HEADER_SIZE])
    payload = data[HEADER_SIZE:]
    if len(payload) != header.size:
        raise ProtocolError(
            f"{request_name(header.request)}: header says {header.size} payload bytes, "
            f"got {len(payload)}"
        )
    return Message(header.request, header.flags, payload)


def reply(request: int, payload: bytes = b"") -> Message:
    """A back-end's answer: same request number, version 1 and the REPLY flag, nothing else
    (QEMU refuses a reply whose flags are anything but exactly 0x5)."""
    return Message(request, VERSION | FLAG_REPLY, payload)


def ack(request: int, ok: bool) -> Message:
    """The REPLY_ACK answer to a NEED_REPLY request: u64 0 for success, 1 for failure."""
    return reply(request, encode_u64(0 if ok else 1))


# Payloads --------------------------------------------------------------------------------


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise ProtocolError(f"{what} payload needs {size} bytes, got {len(payload)}")


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(payload: bytes) -> int:
    _need(payload, _U64.size, "u64")
    value: int = _U64.unpack_from(payload)[0]
    return value


@dataclass(frozen=True)
class VringState:
    """index and num: a ring size, a base index, or an enable flag, depending on the request."""

    index: int
    num: int


def encode_vring_state(state: VringState) -> bytes:
    return _VRING_STATE.pack(state.index, state.num)


def decode_vring_state(payload: bytes) -> VringState:
    _need(payload, _VRING_STATE.size, "vring state")
    index, num = _VRING_STATE.unpack_from(payload)
    return VringState(index, num)


@dataclass(frozen=True)
class VringAddr:
    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int

    @property
    def logging(self) -> bool:
        return bool(self.flags & VRING_F_LOG)


def encode_vring_addr(addr: VringAddr) -> bytes:
    return _VRING_ADDR.pack(addr.index, addr.flags, addr.desc, addr.used, addr.avail, addr.log)


def decode_vring_addr(payload: bytes) -> VringAddr:
    _need(payload, _VRING_ADDR.size, "vring address")
    return VringAddr(*_VRING_ADDR.unpack_from(payload))


@dataclass(frozen=True)
class VringFile:
    """The u64 of SET_VRING_KICK/CALL/ERR: a ring index and whether no fd came with it."""

    index: int
    no_fd: bool


def encode_vring_file(file: VringFile) -> bytes:
    return encode_u64((file.index & VRING_INDEX_MASK) | (VRING_NOFD if file.no_fd else 0))


def decode_vring_file(payload: bytes) -> VringFile:
    value = decode_u64(payload)
    return VringFile(value & VRING_INDEX_MASK, bool(value & VRING_NOFD))


@dataclass(frozen=True)
class MemoryRegion:
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int


def encode_memory_table(regions: tuple[MemoryRegion, ...]) -> bytes:
    if len(regions) > MAX_REGIONS:
        raise ProtocolError(f"at most {MAX_REGIONS} memory regions, got {len(regions)}")
    body = b"".join(
        _REGION.pack(r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset)
        for r in regions
    )
    return _MEMORY_HEAD.pack(len(regions), 0) + body


def decode_memory_table(payload: bytes) -> tuple[MemoryRegion, ...]:
    _need(payload, _MEMORY_HEAD.size, "memory table")
    count, _padding = _MEMORY_HEAD.unpack_from(payload)
    if count > MAX_REGIONS:
        raise ProtocolError(f"memory table with {count} regions (at most {MAX_REGIONS})")
    _need(payload, _MEMORY_HEAD.size + count * _REGION.size, "memory table")
    return tuple(
        MemoryRegion(*_REGION.unpack_from(payload, _MEMORY_HEAD.size + i * _REGION.size))
        for i in range(count)
    )


def encode_single_region(region: MemoryRegion) -> bytes:
    """ADD_MEM_REG / REM_MEM_REG: 64 bits of padding, then one region."""
    return _U64.pack(0) + _REGION.pack(
        region.guest_phys_addr, region.memory_size, region.userspace_addr, region.mmap_offset
    )


def decode_single_region(payload: bytes) -> MemoryRegion:
    _need(payload, _U64.size + _REGION.size, "single memory region")
    return MemoryRegion(*_REGION.unpack_from(payload, _U64.size))


@dataclass(frozen=True)
class LogArea:
    """SET_LOG_BASE: the dirty-page log's size and its offset in the passed fd."""

    size: int
    offset: int


def encode_log(log: LogArea) -> bytes:
    return _LOG.pack(log.size, log.offset)


def decode_log(payload: bytes) -> LogArea:
    _need(payload, _LOG.size, "log")
    size, offset = _LOG.unpack_from(payload)
    return LogArea(size, offset)


@dataclass(frozen=True)
class ConfigSpace:
    """GET_CONFIG / SET_CONFIG: a window of the device configuration space."""

    offset: int
    size: int
    flags: int
    data: bytes


def encode_config(config: ConfigSpace) -> bytes:
    return _CONFIG_HEAD.pack(config.offset, config.size, config.flags) + config.data


def decode_config(payload: bytes) -> ConfigSpace:
    _need(payload, _CONFIG_HEAD.size, "config")
    offset, size, flags = _CONFIG_HEAD.unpack_from(payload)
    data = payload[_CONFIG_HEAD.size :]
    if size > MAX_CONFIG_SIZE:
        raise ProtocolError(f"config access of {size} bytes (at most {MAX_CONFIG_SIZE})")
    return ConfigSpace(offset, size, flags, data)


@dataclass(frozen=True)
class Inflight:
    mmap_size: int
    mmap_offset: int
    num_queues: int
    queue_size: int


def encode_inflight(inflight: Inflight) -> bytes:
    return _INFLIGHT.pack(
        inflight.mmap_size, inflight.mmap_offset, inflight.num_queues, inflight.queue_size
    )


def decode_inflight(payload: bytes) -> Inflight:
    _need(payload, _INFLIGHT.size, "inflight")
    return Inflight(*_INFLIGHT.unpack_from(payload))


def encode_mac(mac: str) -> bytes:
    """SEND_RARP's u64: the MAC's six bytes first, then two zero bytes."""
    raw = bytes(int(part, 16) for part in mac.split(":"))
    if len(raw) != 6:
        raise ProtocolError(f"not a MAC address: {mac!r}")
    return raw + b"\0\0"


def decode_mac(payload: bytes) -> str:
    _need(payload, 6, "MAC")
    return ":".join(f"{byte:02x}" for byte in payload[:6])


def describe(message: Message, fds: int = 0) -> str:
    """A one-line human rendering of a request, for logs."""
    flags = []
    if message.flags & FLAG_REPLY:
        flags.append("reply")
    if message.flags & FLAG_NEED_REPLY:
        flags.append("need_reply")
    text = message.name
    try:
        detail = _detail(message)
    except ProtocolError as exc:
        detail = f"malformed: {exc}"
    if detail:
        text += f" {detail}"
    if flags:
        text += f" [{','.join(flags)}]"
    if fds:
        text += f" +{fds}fd"
    return text


def _detail(message: Message) -> str:
    request, payload = message.request, message.payload
    if not payload:
        return ""
    if request in (Request.SET_FEATURES, Request.SET_PROTOCOL_FEATURES, Request.SET_STATUS):
        return f"0x{decode_u64(payload):x}"
    if request in (Request.NET_SET_MTU,):
        return str(decode_u64(payload))
    if request in (
        Request.SET_VRING_NUM,
        Request.SET_VRING_BASE,
        Request.GET_VRING_BASE,
        Request.SET_VRING_ENABLE,
    ):
        state = decode_vring_state(payload)
        return f"ring={state.index} num={state.num}"
    if request == Request.SET_VRING_ADDR:
        addr = decode_vring_addr(payload)
        return f"ring={addr.index} flags=0x{addr.flags:x}"
    if request in (Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR):
        file = decode_vring_file(payload)
        return f"ring={file.index}" + (" nofd" if file.no_fd else "")
    if request == Request.SET_MEM_TABLE:
        return f"regions={len(decode_memory_table(payload))}"
    if request == Request.SET_LOG_BASE:
        log = decode_log(payload)
        return f"size={log.size} offset={log.offset}"
    if request == Request.SEND_RARP:
        return decode_mac(payload)
    return f"{len(payload)}B"
