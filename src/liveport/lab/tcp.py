"""TCP in the lab: connections between VMs or external hosts that stateful firewalls
(OVS conntrack) accept, without any TCP stack.

`TcpSession` plays both ends of N connections between a client and a server (each a VM
or a host), numbering every segment with `model.tcp.TcpFlow`. The steps where a real
stack only answers what it received (the handshake, the close) wait until the segment has
reached the peer's capture before the answer is sent: segments injected on two ports (or
two switches) are otherwise not ordered, and a SYN-ACK that overtakes its SYN is invalid
to conntrack. Data segments are not waited for (one sender's segments stay in order, and
conntrack accepts an acknowledgement of data it has not seen yet, within a window).
When a segment does not arrive, the step raises Timeout: that is how a test sees a
firewall drop a handshake.

`TcpTraffic` opens a session and sends paced data segments on its connections in a
thread of its own, one direction or both, with the receiver acknowledging every
`ack_every` segments (and always before the sender's window runs out), recording every
data segment sent like `lab.traffic.Traffic` does for UDP.

Concurrency model: a session belongs to one thread at a time (its unixctl connections are
not shared); TcpTraffic's thread owns its session from start() until stop() returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.lab import pcap, vms
from liveport.lab.state import load
from liveport.model import packets
from liveport.model.addr import Mac, parse_ip
from liveport.model.errors import InvalidInput, Timeout
from liveport.model.tcp import Endpoint, Segment, Side, TcpFlow, flags_text

DEFAULT_PORT = 7002  # the server's port; the lab's UDP uses 7001
FIRST_CLIENT_PORT = 40000
MAX_CONNECTIONS = 1000
MAX_RATE = 20000.0  # data segments per second, both directions together


@dataclass(frozen=True)
class TcpSent:
    """One data segment sent: its lab sequence number, on which connection, which way."""

    seq: int
    at: float  # wall clock, seconds
    connection: int
    side: Side  # the sender

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": round(self.at, 6),
            "connection": self.connection,
            "from": str(self.side),
        }


def _address(endpoint: vms.Endpoint, version: int | None) -> str:
    for text in endpoint.ips:
        if version is None or parse_ip(text).version == version:
            return text
    family = f"an IPv{version}" if version else "an IP"
    raise InvalidInput(f"{endpoint.name!r} has no {family} address for TCP")


class _Receiver:
    """What one endpoint received, read incrementally from its captures."""

    def __init__(self, directory: Path, name: str, chassis: str | None) -> None:
        self.directory, self.name, self.chassis = directory, name, chassis
        self._tails: dict[Path, pcap.Tail] = {}
        self._seen: set[tuple[int, int, int, int]] = set()  # sport, dport, seq, flags
        self.refresh()

    def refresh(self) -> None:
        """Follows VIFs added since (a VM that migrated)."""
        files = vms.capture_files(load(self.directory), self.name, self.chassis)
        for _, path in files:
            self._tails.setdefault(path, pcap.Tail(path))

    def poll(self) -> None:
        for tail in self._tails.values():
            for record in tail.read():
                try:
                    info = packets.decode(record.frame)
                except InvalidInput:
                    continue
                if info.kind is packets.Kind.TCP and info.tcp_seq is not None:
                    key = (
                        info.src_port or 0,
                        info.dst_port or 0,
                        info.tcp_seq,
                        info.tcp_flags or 0,
                    )
                    self._seen.add(key)

    def has(self, flow: TcpFlow, segment: Segment) -> bool:
        src = flow.endpoint(segment.side)
        dst = flow.endpoint(segment.side.other)
        return (src.port, dst.port, segment.seq, segment.flags) in self._seen


@dataclass
class TcpSession:
    """N connections from client to server (VMs or hosts, by name): client ports
    first_port, first_port+1, ..., all to server_port."""

    directory: Path
    client: str
    server: str
    connections: int = 1
    server_port: int = DEFAULT_PORT
    first_port: int = FIRST_CLIENT_PORT
    client_chassis: str | None = None  # which VIF of a VM sends (default: its newest)
    server_chassis: str | None = None
    ip_version: int | None = None  # default: the family of the server's first address
    timeout: float = 5.0  # seconds a waited-for segment may take to arrive
    first_seq: int = 1  # the first lab sequence number of each direction's data
    flows: list[TcpFlow] = field(init=False)
    sent: list[TcpSent] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise InvalidInput(
                f"connections must be between 1 and {MAX_CONNECTIONS}, not {self.connections}"
            )
        if self.first_port + self.connections - 1 >= 1 << 16 or self.first_port < 1:
            raise InvalidInput(f"client ports from {self.first_port} do not fit in 1-65535")
        if self.client == self.server:
            raise InvalidInput(f"{self.client!r} cannot connect to itself in the lab")
        state = load(self.directory)
        client, server = state.get_endpoint(self.client), state.get_endpoint(self.server)
        version = self.ip_version or parse_ip(_address(server, None)).version
        server_end = Endpoint(
            Mac.parse(server.mac), parse_ip(_address(server, version)), self.server_port
        )
        client_ip = parse_ip(_address(client, version))
        # Distinct, deterministic ISNs per connection and side, far from 0 and from each
        # other (conntrack treats seqhi == 1 as "nothing seen").
        self.flows = [
            TcpFlow(
                Endpoint(Mac.parse(client.mac), client_ip, self.first_port + i),
                server_end,
                client_isn=0x1000_0000 + i * 0x1_0000,
                server_isn=0x9000_0000 + i * 0x1_0000,
            )
            for i in range(self.connections)
        ]
        client_injector = vms.Injector(self.directory, self.client, self.client_chassis)
        try:
            server_injector = vms.Injector(self.directory, self.server, self.server_chassis)
        except BaseException:
            client_injector.close()
            raise
        self._inject = {Side.CLIENT: client_injector, Side.SERVER: server_injector}
        self._receivers: dict[Side, _Receiver] = {}
        self._next_seq = {Side.CLIENT: self.first_seq, Side.SERVER: self.first_seq}

    # ----- life cycle ----------------------------------------------------------------------

    def close_sockets(self) -> None:
        for injector in self._inject.values():
            injector.close()

    def __enter__(self) -> TcpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sockets()

    def name(self, side: Side) -> str:
        return self.client if side is Side.CLIENT else self.server

    def moved(self, side: Side, chassis: str) -> None:
        """side's VM now sends and receives on chassis only (it migrated there): its
        segments are injected on its VIF there, and only what reaches that VIF counts as
        received by it."""
        if side is Side.CLIENT:
            self.client_chassis = chassis
        else:
            self.server_chassis = chassis
        injector = vms.Injector(self.directory, self.name(side), chassis)
        self._inject[side].close()
        self._inject[side] = injector
        self._receivers.pop(side, None)

    def _receiver(self, side: Side) -> _Receiver:
        """The captures of side (created on first use: only waited-for steps need them)."""
        if side not in self._receivers:
            chassis = self.client_chassis if side is Side.CLIENT else self.server_chassis
            self._receivers[side] = _Receiver(self.directory, self.name(side), chassis)
        return self._receivers[side]

    # ----- sending ---------------------------------------------------------------------------

    def inject(self, segment: Segment) -> None:
        """Sends one segment as its side (any segment, e.g. a hand-made one)."""
        self._inject[segment.side].send(segment.frame)

    def _steps(
        self,
        make: Callable[[int, TcpFlow], Segment],
        indices: Iterable[int],
        wait: bool,
        what: str,
    ) -> list[Segment]:
        """Sends make(flow) on each connection, then waits for all to arrive if asked."""
        done = []
        for i in indices:
            segment = make(i, self.flows[i])
            self.inject(segment)
            done.append((i, segment))
        if wait:
            self.wait_delivered(done, what)
        return [segment for _, segment in done]

    def wait_delivered(self, sent: list[tuple[int, Segment]], what: str = "segment") -> None:
        """Waits until every (connection, segment) reached the other side's captures."""
        deadline = time.monotonic() + self.timeout
        refreshed = False
        while True:
            missing = []
            for i, segment in sent:
                receiver = self._receiver(segment.side.other)
                receiver.poll()
                if not receiver.has(self.flows[i], segment):
                    missing.append((i, segment))
            if not missing:
                return
            if not refreshed and time.monotonic() > deadline - self.timeout / 2:
                for side in Side:
                    self._receiver(side).refresh()
                refreshed = True
            if time.monotonic() >= deadline:
                i, segment = missing[0]
                flow = self.flows[i]
                raise Timeout(
                    f"the {what} ({flags_text(segment.flags)}) of connection {i} "
                    f"({self.client}:{flow.client.port} > {self.server}:{flow.server.port}) "
                    f"did not reach {self.name(segment.side.other)} within {self.timeout:g}s"
                    + (f" ({len(missing)} of {len(sent)} missing)" if len(sent) > 1 else "")
                )
            time.sleep(0.002)

    def arrived(self, sent: Iterable[tuple[int, Segment]]) -> set[int]:
        """The connections whose segment in sent (connection, segment) has reached the
        other side's captures by now; waits for nothing (a benchmark counts what a firewall
        let through where a test would wait_delivered)."""
        out = set()
        for i, segment in sent:
            receiver = self._receiver(segment.side.other)
            receiver.poll()
            if receiver.has(self.flows[i], segment):
                out.add(i)
        return out

    def _all(self, connection: int | None) -> range | list[int]:
        if connection is None:
            return range(len(self.flows))
        if not 0 <= connection < len(self.flows):
            raise InvalidInput(f"connection {connection}: this session has {len(self.flows)}")
        return [connection]

    def open(
        self, connection: int | None = None, *, wait: bool = True, silent: bool = False
    ) -> None:
        """The 3-way handshake on every connection (or one), each step waiting for the
        previous to arrive. silent: send nothing, only number the connections as open (a
        connection established before the firewall or the switch saw it -- before a
        migration, say)."""
        indices = self._all(connection)
        if silent:
            for i in indices:
                self.flows[i].handshake()
            return
        self._steps(lambda _, f: f.syn(), indices, wait, "SYN")
        self._steps(lambda _, f: f.syn_ack(), indices, wait, "SYN-ACK")
        self._steps(lambda _, f: f.handshake_ack(), indices, wait, "handshake's ACK")

    def send(
        self, side: Side, connection: int | None = None, *, count: int = 1, wait: bool = False
    ) -> list[Segment]:
        """count data segments from side on each connection (or one), the receiver
        acknowledging whenever the sender's window requires it."""
        if count < 1:
            raise InvalidInput("count must be at least 1")
        out = []
        for _ in range(count):
            out += self._steps(
                lambda i, f: self._data(i, f, side), self._all(connection), wait, "data"
            )
        return out

    def _data(self, index: int, flow: TcpFlow, side: Side) -> Segment:
        if flow.ack_due(side.other):
            self.inject(flow.ack(side.other))
        seq = self._next_seq[side]
        self._next_seq[side] = seq + 1
        segment = flow.data(side, seq, time.time_ns())
        self.sent.append(TcpSent(seq, time.time(), index, side))
        return segment

    def ack(self, side: Side, connection: int | None = None, *, wait: bool = False) -> None:
        """A pure ACK from side on each connection (or one)."""
        self._steps(lambda _, f: f.ack(side), self._all(connection), wait, "ACK")

    def close(self, connection: int | None = None, *, wait: bool = True) -> None:
        """The orderly close (FIN, FIN, ACK) of every connection (or one)."""
        indices = self._all(connection)
        self._steps(lambda _, f: f.fin(Side.CLIENT), indices, wait, "client's FIN")
        self._steps(lambda _, f: f.fin(Side.SERVER), indices, wait, "server's FIN")
        self._steps(lambda _, f: f.ack(Side.CLIENT), indices, wait, "last ACK")

    def reset(self, side: Side, connection: int | None = None, *, wait: bool = False) -> None:
        self._steps(lambda _, f: f.rst(side), self._all(connection), wait, "RST")


class TcpTraffic:
    """Paced data segments on a session's connections, round robin, in a thread."""

    def __init__(
        self,
        directory: Path,
        src: str,
        dst: str,
        *,
        connections: int = 1,
        rate: float = 1000.0,
        both: bool = False,
        first_seq: int = 1,
        ack_every: int = 8,
        server_port: int = DEFAULT_PORT,
        timeout: float = 5.0,
    ) -> None:
        if not 0 < rate <= MAX_RATE:
            raise InvalidInput(f"rate must be between 0 and {MAX_RATE:g} segments/s, not {rate}")
        if ack_every < 1:
            raise InvalidInput("ack_every must be at least 1")
        self.session = TcpSession(
            directory,
            src,
            dst,
            connections,
            server_port=server_port,
            timeout=timeout,
            first_seq=first_seq,
        )
        self.rate, self.both, self.ack_every = rate, both, ack_every
        self._unacked = {(i, side): 0 for i in range(connections) for side in Side}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def sent(self) -> list[TcpSent]:
        return self.session.sent

    def start(self) -> TcpTraffic:
        """Opens the connections (raising if a handshake does not get through), then
        starts sending."""
        try:
            self.session.open()
        except BaseException:
            self.session.close_sockets()
            raise
        self._thread = threading.Thread(
            target=self._run,
            name=f"tcp traffic {self.session.client}->{self.session.server}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, *, close: bool = True) -> list[TcpSent]:
        """Stops sending and closes the connections (FIN, FIN, ACK; not waited for: the
        network may be broken by then, which is what a test measures)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if close and self.error is None:
                self.session.close(wait=False)
        finally:
            self.session.close_sockets()
        if self.error is not None:
            raise self.error
        return list(self.sent)

    def __enter__(self) -> TcpTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sides = [Side.CLIENT, Side.SERVER] if self.both else [Side.CLIENT]
        n = len(self.session.flows)
        try:
            begin = time.perf_counter()
            i = 0
            while not self._stop.is_set():
                due = begin + i / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                side = sides[i % len(sides)]
                connection = (i // len(sides)) % n
                self.session.send(side, connection)
                self._unacked[(connection, side.other)] = 0  # data carries an ACK
                key = (connection, side)
                self._unacked[key] += 1
                if self._unacked[key] >= self.ack_every:
                    self.session.ack(side.other, connection)
                    self._unacked[key] = 0
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
