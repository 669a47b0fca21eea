"""The device side of one vhost-user connection: what to answer and what to remember.

A Session is fed one decoded message at a time (with the file descriptors that came with it)
and returns the replies to send; it never reads or writes a socket, so every exchange is
unit-testable. It offers exactly its compatibility Mode (GET_FEATURES = the mode's features
plus VHOST_USER_F_PROTOCOL_FEATURES, GET_PROTOCOL_FEATURES = the mode's protocol features,
GET_QUEUE_NUM = its queue pairs), and refuses a front-end that acknowledges anything else or
sets up more or larger rings than the mode allows: it records why and asks for the
connection to be closed, so a guest can never run with a feature the mode does not contain.

It moves no packets: memory, log, kick, call and error descriptors are closed as soon as
they are received (only the back-end request channel is kept open, because QEMU reports an
error when that socket closes). Not thread-safe: the back-end's I/O thread is its only user.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from liveport.model import virtio
from liveport.vhostuser import protocol as p
from liveport.vhostuser.protocol import Request

_PF = virtio.ProtocolFeature
_LOG_ALL = virtio.Feature.VHOST_F_LOG_ALL
_PROTOCOL_FEATURES = virtio.Feature.VHOST_USER_F_PROTOCOL_FEATURES

#: What GET_MAX_MEM_SLOTS answers (QEMU's baseline; only asked with CONFIGURE_MEM_SLOTS).
MAX_MEM_SLOTS = 8

#: Requests that only make sense once a protocol feature was negotiated.
_NEEDS: dict[int, _PF] = {
    Request.GET_QUEUE_NUM: _PF.VHOST_USER_PROTOCOL_F_MQ,
    Request.SEND_RARP: _PF.VHOST_USER_PROTOCOL_F_RARP,
    Request.NET_SET_MTU: _PF.VHOST_USER_PROTOCOL_F_NET_MTU,
    Request.SET_BACKEND_REQ_FD: _PF.VHOST_USER_PROTOCOL_F_BACKEND_REQ,
    Request.SET_VRING_ENDIAN: _PF.VHOST_USER_PROTOCOL_F_CROSS_ENDIAN,
    Request.GET_CONFIG: _PF.VHOST_USER_PROTOCOL_F_CONFIG,
    Request.SET_CONFIG: _PF.VHOST_USER_PROTOCOL_F_CONFIG,
    Request.GET_INFLIGHT_FD: _PF.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
    Request.SET_INFLIGHT_FD: _PF.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
    Request.RESET_DEVICE: _PF.VHOST_USER_PROTOCOL_F_RESET_DEVICE,
    Request.VRING_KICK: _PF.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS,
    Request.GET_MAX_MEM_SLOTS: _PF.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
    Request.ADD_MEM_REG: _PF.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
    Request.REM_MEM_REG: _PF.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
    Request.SET_STATUS: _PF.VHOST_USER_PROTOCOL_F_STATUS,
    Request.GET_STATUS: _PF.VHOST_USER_PROTOCOL_F_STATUS,
}


def offered_features(mode: virtio.Mode) -> int:
    """GET_FEATURES for a mode: its virtio and vhost bits that fit the 64-bit reply, plus
    PROTOCOL_FEATURES, without which QEMU would not negotiate the mode's protocol features."""
    return virtio.backend_offer(mode) | 1 << _PROTOCOL_FEATURES


@dataclass(frozen=True)
class Ring:
    """What the front-end told us about one virtqueue (even = rx, odd = tx for a NIC)."""

    index: int
    size: int | None = None
    base: int = 0
    enabled: bool = False
    started: bool = False
    logging: bool = False


@dataclass(frozen=True)
class Outcome:
    """The result of one message: replies to send, and what the back-end must act on."""

    replies: tuple[p.Message, ...] = ()
    close: bool = False
    rarp: str | None = None


@dataclass
class _Answer:
    """What a handler decided: an explicit reply payload, or success for a REPLY_ACK."""

    payload: bytes | None = None
    ok: bool = True
    rarp: str | None = None
    close: bool = False


class Refused(Exception):
    """The front-end asked for something outside the mode; the connection must end."""


@dataclass
class Session:
    """One front-end connection's device state, offering exactly mode."""

    mode: virtio.Mode
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger(__name__)
    )
    owner: bool = False
    features: int | None = None
    log_all: bool = False
    protocol_features: int = 0
    rings: dict[int, Ring] = field(default_factory=dict)
    regions: list[p.MemoryRegion] = field(default_factory=list)
    log_area: p.LogArea | None = None
    mtu: int | None = None
    status: int = 0
    config: bytearray = field(default_factory=lambda: bytearray(p.MAX_CONFIG_SIZE))
    broken: str | None = None
    unexpected: list[str] = field(default_factory=list)
    backend_channel: int | None = None

    @property
    def offered(self) -> int:
        return offered_features(self.mode)

    def negotiated(self) -> virtio.Negotiated | None:
        """What the guest negotiated so far: None until the first SET_FEATURES.

        features is the last SET_FEATURES without VHOST_F_LOG_ALL, which QEMU switches on
        and off around a migration to start and stop dirty logging; queue_pairs counts the
        pairs up to the highest ring the front-end sized (at least one: a NIC has one
        before its rings are set up); ring_sizes lists those sizes in ring order.
        """
        if self.features is None:
            return None
        sized = sorted((r.index, r.size) for r in self.rings.values() if r.size)
        pairs = sized[-1][0] // 2 + 1 if sized else 1
        return virtio.Negotiated(
            features=self.features,
            protocol_features=self.protocol_features,
            queue_pairs=pairs,
            ring_sizes=tuple(size for _, size in sized if size is not None),
        )

    def has(self, feature: _PF) -> bool:
        return bool(self.protocol_features >> feature & 1)

    def close(self) -> None:
        """Releases the descriptors the session kept."""
        if self.backend_channel is not None:
            _close([self.backend_channel])
            self.backend_channel = None

    # Dispatch ------------------------------------------------------------------------------

    def handle(self, message: p.Message, fds: list[int]) -> Outcome:
        """Processes one request; every fd in fds is either kept by the session or closed."""
        if self.broken is not None:
            _close(fds)
            return Outcome(close=True)
        handler = _HANDLERS.get(message.request)
        needed = _NEEDS.get(message.request)
        if needed is not None and not self.has(needed):
            self._unexpected(f"{message.name} without {needed.name} negotiated")
        try:
            answer = self._unsupported(message) if handler is None else handler(self, message, fds)
        except Refused as exc:
            self.broken = str(exc)
            self.log.error("refusing the front-end: %s", exc)
            answer = _Answer(ok=False, close=True)
        except p.ProtocolError as exc:
            self._unexpected(f"malformed {message.name}: {exc}")
            answer = _Answer(ok=False)
        finally:
            _close(fds)  # handlers pop the descriptors they keep
        return Outcome(self._replies(message, answer), answer.close, answer.rarp)

    def _replies(self, message: p.Message, answer: _Answer) -> tuple[p.Message, ...]:
        if answer.payload is not None:
            return (p.reply(message.request, answer.payload),)
        if message.request in p.ALWAYS_REPLIED:
            # Unsupported or malformed, but the front-end is waiting: a u64 error beats a hang.
            return (p.reply(message.request, p.encode_u64(1)),)
        if message.need_reply:
            if self.has(_PF.VHOST_USER_PROTOCOL_F_REPLY_ACK):
                return (p.ack(message.request, answer.ok),)
            self._unexpected(f"{message.name} asks for a reply but REPLY_ACK is not negotiated")
        return ()

    def _unexpected(self, what: str) -> None:
        self.log.warning("unexpected: %s", what)
        self.unexpected.append(what)

    def _unsupported(self, message: p.Message) -> _Answer:
        self._unexpected(f"{p.describe(message)} is not supported by this back-end")
        return _Answer(ok=False)

    def _ring(self, index: int) -> Ring:
        limit = 2 * self.mode.max_queue_pairs
        if index >= limit:
            raise Refused(
                f"ring {index} is beyond the {self.mode.max_queue_pairs} queue pair(s) of "
                f"mode {self.mode.name}"
            )
        return self.rings.get(index) or Ring(index)

    def _set_ring(self, ring: Ring) -> None:
        self.rings[ring.index] = ring

    # Handlers ------------------------------------------------------------------------------

    def _get_features(self, message: p.Message, fds: list[int]) -> _Answer:
        return _Answer(p.encode_u64(self.offered))

    def _set_features(self, message: p.Message, fds: list[int]) -> _Answer:
        value = p.decode_u64(message.payload)
        extra = value & ~self.offered
        if extra:
            names = ", ".join(virtio.describe(bit) for bit in _bits(extra))
            raise Refused(
                f"SET_FEATURES 0x{value:x} acknowledges {names}, which mode {self.mode.name} "
                f"does not offer (offered 0x{self.offered:x})"
            )
        features = value & ~(1 << _LOG_ALL)
        log_all = bool(value >> _LOG_ALL & 1)
        if features != self.features:
            self.log.info("guest negotiated features 0x%x (mode %s)", features, self.mode.name)
        if log_all != self.log_all:
            self.log.info("dirty logging %s", "on" if log_all else "off")
        self.features, self.log_all = features, log_all
        return _Answer()

    def _get_protocol_features(self, message: p.Message, fds: list[int]) -> _Answer:
        return _Answer(p.encode_u64(self.mode.protocol_features))

    def _set_protocol_features(self, message: p.Message, fds: list[int]) -> _Answer:
        value = p.decode_u64(message.payload)
        extra = value & ~self.mode.protocol_features
        if extra:
            names = ", ".join(virtio.describe_protocol(bit) for bit in _bits(extra))
            raise Refused(
                f"SET_PROTOCOL_FEATURES 0x{value:x} acknowledges {names}, which mode "
                f"{self.mode.name} does not offer (offered 0x{self.mode.protocol_features:x})"
            )
        self.protocol_features = value
        return _Answer()

    def _set_owner(self, message: p.Message, fds: list[int]) -> _Answer:
        if self.owner:
            self._unexpected("SET_OWNER on a session that already has an owner")
        self.owner = True
        return _Answer()

    def _reset_owner(self, message: p.Message, fds: list[int]) -> _Answer:
        # Deprecated; the spec recommends treating it as "disable all rings".
        self.rings = {i: replace(r, enabled=False, started=False) for i, r in self.rings.items()}
        return _Answer()

    def _reset_device(self, message: p.Message, fds: list[int]) -> _Answer:
        self.rings.clear()
        self.features, self.log_all, self.status = None, False, 0
        return _Answer()

    def _get_queue_num(self, message: p.Message, fds: list[int]) -> _Answer:
        return _Answer(p.encode_u64(self.mode.max_queue_pairs))

    def _set_mem_table(self, message: p.Message, fds: list[int]) -> _Answer:
        regions = p.decode_memory_table(message.payload)
        if len(fds) != len(regions):
            self._unexpected(f"SET_MEM_TABLE with {len(regions)} regions and {len(fds)} fds")
            return _Answer(ok=False)
        self.regions = list(regions)
        return _Answer()

    def _add_mem_reg(self, message: p.Message, fds: list[int]) -> _Answer:
        region = p.decode_single_region(message.payload)
        if len(fds) != 1:
            self._unexpected(f"ADD_MEM_REG with {len(fds)} fds")
            return _Answer(ok=False)
        self.regions.append(region)
        return _Answer()

    def _rem_mem_reg(self, message: p.Message, fds: list[int]) -> _Answer:
        region = p.decode_single_region(message.payload)
        kept = [
            r
            for r in self.regions
            if (r.guest_phys_addr, r.userspace_addr, r.memory_size)
            != (region.guest_phys_addr, region.userspace_addr, region.memory_size)
        ]
        found = len(kept) != len(self.regions)
        self.regions = kept
        return _Answer(ok=found)

    def _get_max_mem_slots(self, message: p.Message, fds: list[int]) -> _Answer:
        return _Answer(p.encode_u64(MAX_MEM_SLOTS))

    def _set_log_base(self, message: p.Message, fds: list[int]) -> _Answer:
        self.log_area = p.decode_log(message.payload)
        if self.has(_PF.VHOST_USER_PROTOCOL_F_LOG_SHMFD):
            if len(fds) != 1:
                self._unexpected(f"SET_LOG_BASE with {len(fds)} fds")
            # The front-end waits for this answer before it relies on the log.
            return _Answer(p.encode_u64(0))
        return _Answer()

    def _accept(self, message: p.Message, fds: list[int]) -> _Answer:
        """SET_LOG_FD, SET_VRING_CALL, SET_VRING_ERR, SET_INFLIGHT_FD: nothing to keep."""
        return _Answer()

    def _set_vring_num(self, message: p.Message, fds: list[int]) -> _Answer:
        state = p.decode_vring_state(message.payload)
        ring = self._ring(state.index)
        if state.num > self.mode.max_ring_size:
            raise Refused(
                f"ring {state.index} of size {state.num} exceeds the maximum "
                f"{self.mode.max_ring_size} of mode {self.mode.name}"
            )
        self._set_ring(replace(ring, size=state.num))
        return _Answer()

    def _set_vring_addr(self, message: p.Message, fds: list[int]) -> _Answer:
        addr = p.decode_vring_addr(message.payload)
        self._set_ring(replace(self._ring(addr.index), logging=addr.logging))
        return _Answer()

    def _set_vring_base(self, message: p.Message, fds: list[int]) -> _Answer:
        state = p.decode_vring_state(message.payload)
        self._set_ring(replace(self._ring(state.index), base=state.num))
        return _Answer()

    def _get_vring_base(self, message: p.Message, fds: list[int]) -> _Answer:
        # Stops the ring. Moving no packets, the base is still the one we were given.
        state = p.decode_vring_state(message.payload)
        ring = replace(self._ring(state.index), started=False)
        self._set_ring(ring)
        return _Answer(p.encode_vring_state(p.VringState(ring.index, ring.base)))

    def _set_vring_kick(self, message: p.Message, fds: list[int]) -> _Answer:
        file = p.decode_vring_file(message.payload)
        self._set_ring(replace(self._ring(file.index), started=True))
        return _Answer()

    def _vring_kick(self, message: p.Message, fds: list[int]) -> _Answer:
        state = p.decode_vring_state(message.payload)
        self._set_ring(replace(self._ring(state.index), started=True))
        return _Answer()

    def _set_vring_enable(self, message: p.Message, fds: list[int]) -> _Answer:
        state = p.decode_vring_state(message.payload)
        self._set_ring(replace(self._ring(state.index), enabled=state.num != 0))
        return _Answer()

    def _set_vring_endian(self, message: p.Message, fds: list[int]) -> _Answer:
        state = p.decode_vring_state(message.payload)
        return _Answer(ok=state.num in (0, 1))

    def _send_rarp(self, message: p.Message, fds: list[int]) -> _Answer:
        mac = p.decode_mac(message.payload)
        self.log.info("front-end asks to announce %s (RARP)", mac)
        return _Answer(rarp=mac)

    def _net_set_mtu(self, message: p.Message, fds: list[int]) -> _Answer:
        mtu = p.decode_u64(message.payload)
        valid = 68 <= mtu <= 65535
        if valid:
            self.mtu = mtu
        return _Answer(ok=valid)

    def _set_backend_req_fd(self, message: p.Message, fds: list[int]) -> _Answer:
        if len(fds) != 1:
            self._unexpected(f"SET_BACKEND_REQ_FD with {len(fds)} fds")
            return _Answer(ok=False)
        self.close()
        self.backend_channel = fds.pop()
        return _Answer()

    def _iotlb_msg(self, message: p.Message, fds: list[int]) -> _Answer:
        # Without packet processing there are no translations to keep; acknowledge.
        return _Answer(p.encode_u64(0))

    def _get_config(self, message: p.Message, fds: list[int]) -> _Answer:
        request = p.decode_config(message.payload)
        end = request.offset + request.size
        if end > len(self.config):
            return _Answer(b"")  # an empty payload is GET_CONFIG's error answer
        window = bytes(self.config[request.offset : end])
        return _Answer(p.encode_config(replace(request, data=window)))

    def _set_config(self, message: p.Message, fds: list[int]) -> _Answer:
        request = p.decode_config(message.payload)
        data = request.data[: request.size]
        end = request.offset + len(data)
        if end > len(self.config) or len(data) != request.size:
            return _Answer(ok=False)
        self.config[request.offset : end] = data
        return _Answer()

    def _set_status(self, message: p.Message, fds: list[int]) -> _Answer:
        self.status = p.decode_u64(message.payload) & 0xFF
        return _Answer()

    def _get_status(self, message: p.Message, fds: list[int]) -> _Answer:
        return _Answer(p.encode_u64(self.status))


_Handler = Callable[[Session, p.Message, list[int]], _Answer]

_HANDLERS: dict[int, _Handler] = {
    Request.GET_FEATURES: Session._get_features,
    Request.SET_FEATURES: Session._set_features,
    Request.SET_OWNER: Session._set_owner,
    Request.RESET_OWNER: Session._reset_owner,
    Request.SET_MEM_TABLE: Session._set_mem_table,
    Request.SET_LOG_BASE: Session._set_log_base,
    Request.SET_LOG_FD: Session._accept,
    Request.SET_VRING_NUM: Session._set_vring_num,
    Request.SET_VRING_ADDR: Session._set_vring_addr,
    Request.SET_VRING_BASE: Session._set_vring_base,
    Request.GET_VRING_BASE: Session._get_vring_base,
    Request.SET_VRING_KICK: Session._set_vring_kick,
    Request.SET_VRING_CALL: Session._accept,
    Request.SET_VRING_ERR: Session._accept,
    Request.GET_PROTOCOL_FEATURES: Session._get_protocol_features,
    Request.SET_PROTOCOL_FEATURES: Session._set_protocol_features,
    Request.GET_QUEUE_NUM: Session._get_queue_num,
    Request.SET_VRING_ENABLE: Session._set_vring_enable,
    Request.SEND_RARP: Session._send_rarp,
    Request.NET_SET_MTU: Session._net_set_mtu,
    Request.SET_BACKEND_REQ_FD: Session._set_backend_req_fd,
    Request.IOTLB_MSG: Session._iotlb_msg,
    Request.SET_VRING_ENDIAN: Session._set_vring_endian,
    Request.GET_CONFIG: Session._get_config,
    Request.SET_CONFIG: Session._set_config,
    Request.SET_INFLIGHT_FD: Session._accept,
    Request.RESET_DEVICE: Session._reset_device,
    Request.VRING_KICK: Session._vring_kick,
    Request.GET_MAX_MEM_SLOTS: Session._get_max_mem_slots,
    Request.ADD_MEM_REG: Session._add_mem_reg,
    Request.REM_MEM_REG: Session._rem_mem_reg,
    Request.SET_STATUS: Session._set_status,
    Request.GET_STATUS: Session._get_status,
}


def _bits(value: int) -> list[int]:
    return [bit for bit in range(64) if value >> bit & 1]


def _close(fds: list[int]) -> None:
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())
