"""One TCP connection's sequence and acknowledgement state, as segments both ends send.

The lab has no TCP stack, yet stateful firewalls (OVS conntrack) judge every segment of a
connection against what they saw of it before. `TcpFlow` plays both ends of one
connection: the 3-way handshake, data in either direction carrying the lab's sequence
payload (`packets.seq_payload`, as the UDP traffic does), pure ACKs, FIN and RST, each
with the numbers a real stack would put there.

What OVS's userspace conntrack (lib/conntrack-tcp.c, pf's algorithm) checks, and how the
segments pass it:
- flags: a SYN carries neither RST nor FIN; every other segment carries ACK (or is a bare
  RST); FIN and PSH only with ACK. Data is ACK|PSH, a close is FIN|ACK.
- the window: no window-scale option is sent, so both ends advertise 65535 bytes and a
  segment must end within 65535 bytes of what the peer last acknowledged. `data` refuses a
  segment past that (`window_left`); the lab's senders acknowledge in time (`ack_due`).
- acknowledgements are exact (the peer's next sequence number), well inside the
  +-(65535+1500) skew conntrack allows, so an ACK that overtakes the data it acknowledges
  on another path is still accepted.
- an RST carries exactly the sender's next sequence number (conntrack requires +-1).
- ISNs are never 0 or 1 (conntrack uses seqhi == 1 as "not yet seen").

Pure: no I/O, no clock (callers pass the send time); not thread-safe, one owner per flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from liveport.model import packets
from liveport.model.addr import IPAddress, Mac
from liveport.model.errors import Conflict, InvalidInput
from liveport.model.packets import TcpFlags

WINDOW = 0xFFFF  # what both ends advertise (packets.tcp_segment), unscaled
MOD = 1 << 32
DATA_SIZE = packets.SEQ_PAYLOAD_SIZE  # bytes of payload in each data segment


class Side(StrEnum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def other(self) -> Side:
        return Side.SERVER if self is Side.CLIENT else Side.CLIENT


class State(StrEnum):
    CLOSED = "closed"  # nothing sent yet
    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSING = "closing"  # a FIN was sent by one end or both
    CLOSED_DONE = "done"  # both FINs acknowledged, or reset


@dataclass(frozen=True)
class Endpoint:
    mac: Mac
    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 1 << 16:
            raise InvalidInput(f"TCP port {self.port} is not between 1 and 65535")


@dataclass(frozen=True)
class Segment:
    """One segment and who sends it; frame is the whole Ethernet frame."""

    side: Side
    flags: int
    seq: int
    ack: int
    payload_seq: int | None  # the lab sequence number in the payload, if data
    frame: bytes


def flags_text(flags: int) -> str:
    """Flags as tcpdump-like letters: SA, PA, FA, R..."""
    letters = [("S", TcpFlags.SYN), ("F", TcpFlags.FIN), ("R", TcpFlags.RST)]
    letters += [("P", TcpFlags.PSH), ("U", TcpFlags.URG), ("A", TcpFlags.ACK)]
    letters += [("E", TcpFlags.ECE), ("C", TcpFlags.CWR), ("N", TcpFlags.NS)]
    return "".join(letter for letter, bit in letters if flags & bit) or "none"


def parse_flags(text: str) -> int:
    """Letters S F R P A U E C N (any order, any case) -> the flag bits; '' or 'none' is 0."""
    bits = {
        "S": TcpFlags.SYN,
        "F": TcpFlags.FIN,
        "R": TcpFlags.RST,
        "P": TcpFlags.PSH,
        "A": TcpFlags.ACK,
        "U": TcpFlags.URG,
        "E": TcpFlags.ECE,
        "C": TcpFlags.CWR,
        "N": TcpFlags.NS,
    }
    if text.lower() == "none":
        return 0
    out = 0
    for char in text.upper():
        if char not in bits:
            raise InvalidInput(f"TCP flags {text!r}: {char!r} is not one of S F R P A U E C N")
        out |= bits[char]
    return out


@dataclass
class TcpFlow:
    """Both ends of one connection. `nxt` is each side's next sequence number (SND.NXT),
    `acked` the highest number of each side's bytes the other has acknowledged."""

    client: Endpoint
    server: Endpoint
    client_isn: int = 0x1000_0000
    server_isn: int = 0x2000_0000
    state: State = State.CLOSED
    nxt: dict[Side, int] = field(default_factory=dict)
    acked: dict[Side, int] = field(default_factory=dict)
    fin_sent: set[Side] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name, isn in (("client", self.client_isn), ("server", self.server_isn)):
            if not 2 <= isn < MOD:
                raise InvalidInput(f"{name} ISN {isn} must be between 2 and 2**32-1")
        if self.client.ip.version != self.server.ip.version:
            raise InvalidInput(f"{self.client.ip} and {self.server.ip} are not of one family")
        if not self.nxt:
            self.nxt = {Side.CLIENT: self.client_isn, Side.SERVER: self.server_isn}
            self.acked = dict(self.nxt)

    def endpoint(self, side: Side) -> Endpoint:
        return self.client if side is Side.CLIENT else self.server

    # ----- the segments, each advancing the state as its sender would ----------------------

    def segment(
        self,
        side: Side,
        flags: int,
        *,
        seq: int | None = None,
        ack: int | None = None,
        payload: bytes = b"",
        payload_seq: int | None = None,
    ) -> Segment:
        """Any segment from side, numbered from the flow's state unless told otherwise;
        the state does not change (for hand-made segments: retransmissions, attacks)."""
        src, dst = self.endpoint(side), self.endpoint(side.other)
        seq = self.nxt[side] if seq is None else seq % MOD
        if ack is None:
            ack = self.nxt[side.other] if flags & TcpFlags.ACK else 0
        frame = packets.tcp_segment(
            src.mac, dst.mac, src.ip, dst.ip, src.port, dst.port, flags, seq, ack % MOD, payload
        )
        return Segment(side, flags, seq, ack % MOD, payload_seq, frame)

    def syn(self) -> Segment:
        self._expect(State.CLOSED, "a SYN")
        out = self.segment(Side.CLIENT, TcpFlags.SYN)
        self._advance(Side.CLIENT, 1)
        self.state = State.SYN_SENT
        return out

    def syn_ack(self) -> Segment:
        self._expect(State.SYN_SENT, "a SYN-ACK")
        out = self.segment(Side.SERVER, TcpFlags.SYN | TcpFlags.ACK)
        self._advance(Side.SERVER, 1)
        self.acked[Side.CLIENT] = self.nxt[Side.CLIENT]
        self.state = State.SYN_RECEIVED
        return out

    def handshake_ack(self) -> Segment:
        self._expect(State.SYN_RECEIVED, "the handshake's ACK")
        out = self.ack(Side.CLIENT)
        self.state = State.ESTABLISHED
        return out

    def handshake(self) -> list[Segment]:
        """SYN, SYN-ACK, ACK."""
        return [self.syn(), self.syn_ack(), self.handshake_ack()]

    def window_left(self, side: Side) -> int:
        """Bytes side may still send before the other end must acknowledge."""
        used = (self.nxt[side] - self.acked[side]) % MOD
        return max(0, WINDOW - used)

    def ack_due(self, side: Side) -> bool:
        """True when side has unacknowledged data from the other end of at least half a
        window: a receiver that does not acknowledge now stalls its peer (and a firewall
        would drop the peer's next segments as out of window)."""
        return self.window_left(side.other) <= WINDOW // 2

    def data(self, side: Side, payload_seq: int, sent_ns: int = 0) -> Segment:
        """A data segment (ACK|PSH) from side whose payload carries payload_seq."""
        if self.state not in (State.ESTABLISHED, State.CLOSING) or side in self.fin_sent:
            raise Conflict(f"the {side} cannot send data on a connection that is {self.state}")
        payload = packets.seq_payload(payload_seq, sent_ns)
        if len(payload) > self.window_left(side):
            raise Conflict(
                f"the {side}'s data would pass the {side.other}'s window: "
                f"the {side.other} must acknowledge first"
            )
        out = self.segment(
            side, TcpFlags.ACK | TcpFlags.PSH, payload=payload, payload_seq=payload_seq
        )
        self._sent_ack(side)
        self._advance(side, len(payload))
        return out

    def ack(self, side: Side) -> Segment:
        """A pure ACK from side of everything the other end sent."""
        if self.state in (State.CLOSED, State.SYN_SENT):
            raise Conflict(f"the {side} has nothing to acknowledge yet ({self.state})")
        out = self.segment(side, TcpFlags.ACK)
        self._sent_ack(side)
        return out

    def fin(self, side: Side) -> Segment:
        """FIN|ACK from side (it sends nothing more)."""
        if self.state not in (State.ESTABLISHED, State.CLOSING) or side in self.fin_sent:
            raise Conflict(f"the {side} cannot close a connection that is {self.state}")
        out = self.segment(side, TcpFlags.FIN | TcpFlags.ACK)
        self._sent_ack(side)
        self._advance(side, 1)
        self.fin_sent.add(side)
        self.state = State.CLOSING
        return out

    def close(self) -> list[Segment]:
        """The orderly close: the client's FIN, the server's FIN (acknowledging the
        client's), the client's last ACK."""
        return [self.fin(Side.CLIENT), self.fin(Side.SERVER), self.ack(Side.CLIENT)]

    def rst(self, side: Side) -> Segment:
        """RST|ACK from side, numbered exactly as conntrack requires of a reset."""
        if self.state is State.CLOSED:
            raise Conflict("no connection to reset yet")
        out = self.segment(side, TcpFlags.RST | TcpFlags.ACK)
        self.state = State.CLOSED_DONE
        return out

    # ----- bookkeeping ---------------------------------------------------------------------

    def _expect(self, state: State, what: str) -> None:
        if self.state is not state:
            raise Conflict(f"{what} needs a connection that is {state}, not {self.state}")

    def _advance(self, side: Side, length: int) -> None:
        self.nxt[side] = (self.nxt[side] + length) % MOD

    def _sent_ack(self, side: Side) -> None:
        """side acknowledged everything the other end sent."""
        self.acked[side.other] = self.nxt[side.other]
        if len(self.fin_sent) == 2 and self.acked == self.nxt:
            self.state = State.CLOSED_DONE  # both FINs sent and acknowledged
