"""The simulator's connection tracking against ovs-vswitchd's userspace conntrack (the dummy
datapath): one flow table with ct actions, installed through liveport's OpenFlow
connection, and the packets of tests/conntrack_cases.py (a TCP handshake with data both
ways, a UDP exchange, ICMP echoes, ICMP errors, and what conntrack finds new or invalid).
Each packet must leave by the ports the simulator predicts, and the switch must end up
with the connections, marks and labels the simulator holds."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liveport.lab import pcap
from liveport.lab.sim import SimHost
from liveport.model.conntrack import Connection, ConnTuple
from liveport.model.flows import (
    ETH_IPV4,
    ETH_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Ct,
    CtState,
    Flow,
    FlowSet,
    Load,
    Output,
    Resubmit,
    SetField,
    diff,
    match,
)
from liveport.model.flowsim import Switch, packet_fields
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.encode import ALL_ONES
from liveport.runtime import unixctl
from liveport.runtime.process import stop_daemons

from tests.conntrack_cases import SEQUENCE, A, udp

pytestmark = pytest.mark.lab

COOKIE = 0x1C00_0000_0000_0C7C
ZONE = 7
NEW_PORT, EST_PORT, REPLY_PORT, REL_REPLY_PORT, REL_PORT, INV_PORT, OTHER_PORT = range(10, 17)
TRACKED_PORT, UNTRACKED_PORT = 21, 22
SENTINEL_PORT, SENTINEL_TYPE = 99, 0x88B5  # IEEE's local experimental ethertype
OUTPUTS = (*range(10, 17), TRACKED_PORT, UNTRACKED_PORT, SENTINEL_PORT)
TRK, NEW, EST, REL, RPL, INV = (
    CtState.TRK,
    CtState.NEW,
    CtState.EST,
    CtState.REL,
    CtState.RPL,
    CtState.INV,
)


def state(value: CtState, mask: CtState) -> tuple[int, int]:
    return int(value), int(mask)


def firewall() -> FlowSet:
    """Zone 7 from reg12: a new connection is committed with ct_mark bit 0 and bits 64..127
    of ct_label, a reply sets ct_mark bit 1 (exec on an existing connection); each
    ct_state leaves by a port of its own (the fork), and the original by 21 (tracked) or
    22 (untracked) after the ct."""
    zone = Load("reg12", ZONE, 0, 16)
    flows = [Flow(0, 20, match(eth_type=SENTINEL_TYPE), (Output(SENTINEL_PORT),))]
    for eth_type in (ETH_IPV4, ETH_IPV6):
        ip = {"eth_type": eth_type}
        flows += [
            Flow(0, 10, match(**ip), (zone, Ct(zone_field="reg12", table=1), Resubmit(2))),
            Flow(
                1,
                10,
                match(**ip, ct_state=state(TRK | NEW, TRK | NEW)),
                (
                    Ct(
                        commit=True,
                        zone_field="reg12",
                        exec=(Load("ct_mark", 1, 0, 1), Load("ct_label", 0xABC, 64, 64)),
                    ),
                    Output(NEW_PORT),
                ),
            ),
            Flow(
                1,
                10,
                match(**ip, ct_state=state(TRK | EST | RPL, TRK | NEW | EST | RPL)),
                (
                    Ct(commit=True, zone_field="reg12", exec=(Load("ct_mark", 1, 1, 1),)),
                    Output(REPLY_PORT),
                ),
            ),
        ]
    flows += [
        Flow(
            1,
            10,
            match(ct_state=state(TRK | EST, TRK | NEW | EST | RPL), ct_mark=(1, 1)),
            (Output(EST_PORT),),
        ),
        Flow(
            1,
            10,
            match(ct_state=state(TRK | REL | RPL, TRK | REL | RPL)),
            (Output(REL_REPLY_PORT),),
        ),
        Flow(1, 9, match(ct_state=state(TRK | REL, TRK | REL)), (Output(REL_PORT),)),
        Flow(1, 10, match(ct_state=state(TRK | INV, TRK | INV)), (Output(INV_PORT),)),
        Flow(1, 0, match(), (Output(OTHER_PORT),)),
        Flow(2, 10, match(ct_state=state(TRK, TRK)), (Output(TRACKED_PORT),)),
        Flow(2, 0, match(), (Output(UNTRACKED_PORT),)),
    ]
    return FlowSet.of(Flow(f.table, f.priority, f.match, f.actions, COOKIE) for f in flows)


@pytest.fixture
def host(short_tmp: Path) -> Iterator[SimHost]:
    directory = short_tmp / "ct"
    sim = SimHost("ct", directory)
    try:
        sim.start()
        sim.vsctl(
            "add-br", "br-int", "--", "set", "bridge", "br-int", "fail-mode=secure",
            "other-config:disable-in-band=true", "protocols=OpenFlow13",
        )  # fmt: skip
        for n in (1, 2, *OUTPUTS):
            sim.vsctl(
                "add-port", "br-int", f"p{n}", "--", "set", "Interface", f"p{n}", "type=dummy",
                f"ofport_request={n}", f"options:tx_pcap={directory / f'p{n}-tx.pcap'}",
            )  # fmt: skip
        yield sim
    finally:
        stop_daemons(sim.daemons(str(directory)))


def install(host: SimHost, flows: FlowSet) -> None:
    async def main() -> None:
        async with await OpenFlowConnection.open(host.mgmt_socket(), timeout=10) as conn:
            await conn.apply(diff(FlowSet(), flows))
            assert await conn.dump_flows(COOKIE, ALL_ONES) == flows

    asyncio.run(main())


def numbered(frame: bytes, n: int) -> bytes:
    """frame with its IP TTL (hop limit) made 200 - n, so that every frame sent is unique
    and its copies can be told apart in the captures. Conntrack ignores the TTL."""
    out = bytearray(frame)
    if frame[12:14] == struct.pack("!H", ETH_IPV6):
        out[14 + 7] = 200 - n
        return bytes(out)
    out[14 + 8] = 200 - n
    ihl = (out[14] & 0x0F) * 4
    if len(out) >= 14 + ihl:
        out[14 + 10 : 14 + 12] = b"\0\0"
        words = struct.unpack(f"!{ihl // 2}H", out[14 : 14 + ihl])
        total = sum(words)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        out[14 + 10 : 14 + 12] = struct.pack("!H", ~total & 0xFFFF)
    return bytes(out)


def captured(host: SimHost) -> dict[bytes, Counter[int]]:
    """Every frame sent on an output port -> the ports it left by (a multiset)."""
    seen: dict[bytes, Counter[int]] = {}
    for port in OUTPUTS:
        for record in pcap.read(host.directory / f"p{port}-tx.pcap"):
            seen.setdefault(record.frame, Counter())[port] += 1
    return seen


def wait_until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_for_outputs(
    host: SimHost, frame: bytes, predicted: Counter[int], what: str, timeout: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while (got := captured(host).get(frame, Counter())) != predicted:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: OVS sent it to ports {dict(got)}, the simulator to {dict(predicted)}"
            )
        time.sleep(0.005)


def ip_text(eth_type: int, value: int) -> str:
    version = ipaddress.IPv4Address if eth_type == ETH_IPV4 else ipaddress.IPv6Address
    return str(version(value))


PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp"}


def simulated_entry(zone: int, conn: Connection) -> tuple[object, ...]:
    """A connection as (zone, protocol, original tuple, mark, label, TCP states), the way
    dump_entries reads it from dpctl/dump-conntrack."""
    orig: ConnTuple = conn.orig
    proto = {**PROTO_NAMES, IPPROTO_ICMPV6: "icmpv6", 132: "sctp"}.get(orig.proto)
    fields = {"src": ip_text(orig.eth_type, orig.src), "dst": ip_text(orig.eth_type, orig.dst)}
    if orig.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        fields |= {"id": str(orig.icmp_id), "type": str(orig.icmp_type), "code": "0"}
    else:
        fields |= {"sport": str(orig.src_port), "dport": str(orig.dst_port)}
    tcp = None
    if conn.tcp_orig is not None and conn.tcp_reply is not None:
        tcp = (conn.tcp_orig.name, conn.tcp_reply.name)
    return zone, proto, tuple(sorted(fields.items())), conn.mark, conn.label, tcp


def dump_entries(text: str) -> set[tuple[object, ...]]:
    """`ovs-appctl dpctl/dump-conntrack -m` lines, as simulated_entry gives them."""
    entries: set[tuple[object, ...]] = set()
    for line in text.splitlines():
        proto = line.split(",", 1)[0]
        orig = re.search(r"orig=\(([^)]*)\)", line)
        assert orig is not None, line
        fields = tuple(sorted(tuple(kv.split("=", 1)) for kv in orig.group(1).split(",")))
        zone = re.search(r",zone=(\d+)", line)
        mark = re.search(r",mark=(\d+)", line)
        labels = re.search(r",labels=(0x[0-9a-f]+)", line)
        states = re.search(r"state_orig=(\w+),state_reply=(\w+)", line)
        entries.add(
            (
                int(zone.group(1)) if zone else 0,
                proto,
                fields,
                int(mark.group(1)) if mark else 0,
                int(labels.group(1), 16) if labels else 0,
                states.groups() if states else None,
            )
        )
    return entries


def test_the_simulator_predicts_what_ovs_conntrack_does(host: SimHost) -> None:
    flows = firewall()
    install(host, flows)
    switch = Switch(flows)
    sent: list[tuple[str, bytes, Counter[int]]] = []
    for n, (what, original, _) in enumerate(SEQUENCE):
        if original[12:14] not in (b"\x08\x00", b"\x86\xdd"):
            continue  # OVS refuses ct on a flow that does not match IP: nothing to compare
        frame = numbered(original, n)
        in_port = 1 if frame[6:12] == A.packed else 2
        result, switch = switch.process(packet_fields(frame, in_port))
        predicted = Counter(result.outputs)
        unixctl.call(host.vswitchd_ctl, "netdev-dummy/receive", f"p{in_port}", frame.hex())
        # The next packet goes in once this one is out: conntrack sees them in order.
        wait_for_outputs(host, frame, predicted, what)
        sent.append((what, frame, predicted))
    # Anything still on its way comes out before a frame sent after it.
    sentinel = b"\xff" * 6 + A.packed + struct.pack("!H", SENTINEL_TYPE) + b"end"
    unixctl.call(host.vswitchd_ctl, "netdev-dummy/receive", "p1", sentinel.hex())
    wait_until(lambda: sentinel in captured(host), "the sentinel")

    seen = captured(host)
    wrong = [
        f"{what}: OVS {dict(seen.get(frame, Counter()))}, simulator {dict(predicted)}"
        for what, frame, predicted in sent
        if seen.get(frame, Counter()) != predicted
    ]
    assert wrong == []
    assert len(seen) == len(sent) + 1  # nothing else left the switch

    dumped = unixctl.call(host.vswitchd_ctl, "dpctl/dump-conntrack", "-m")
    simulated = {simulated_entry(zone, conn) for zone, conn in switch.conntrack}
    assert dump_entries(dumped) == simulated
    assert {entry[0] for entry in simulated} == {ZONE}
    assert any(entry[3] == 3 for entry in simulated)  # a reply set bit 1 by exec


def test_the_sequence_covers_every_ct_state_port() -> None:
    # Guards the comparison above against a table that stopped telling states apart.
    switch = Switch(firewall())
    ports: set[int] = set()
    for _, frame, _ in SEQUENCE:
        in_port = 1 if frame[6:12] == A.packed else 2
        result, switch = switch.process(packet_fields(frame, in_port))
        ports.update(result.outputs)
    assert ports == {
        NEW_PORT,
        EST_PORT,
        REPLY_PORT,
        REL_REPLY_PORT,
        REL_PORT,
        INV_PORT,
        UNTRACKED_PORT,
    }


def test_ovs_runs_the_fork_first_and_the_original_goes_on_untracked(host: SimHost) -> None:
    # The fork (ct table=1) leaves port 16 unchanged; the original, its destination MAC
    # rewritten after the ct, leaves port 16 after it. In the fork, a packet tracked in
    # zone 1 goes through ct(zone=9) without a table and reads -trk afterwards.
    rewritten = 0x020000000099
    flows = FlowSet.of(
        Flow(f.table, f.priority, f.match, f.actions, COOKIE)
        for f in [
            Flow(
                0,
                10,
                match(eth_type=ETH_IPV4),
                (Ct(zone=1, table=1), SetField("eth_dst", rewritten), Output(OTHER_PORT)),
            ),
            Flow(1, 10, match(eth_type=ETH_IPV4), (Output(OTHER_PORT), Ct(zone=9), Resubmit(2))),
            Flow(2, 10, match(ct_state=state(TRK, TRK)), (Output(TRACKED_PORT),)),
            Flow(2, 0, match(), (Output(UNTRACKED_PORT),)),
        ]
    )
    install(host, flows)
    frame = udp(5000, 53)
    result, _ = Switch(flows).process(packet_fields(frame, 1))
    assert result.outputs == (OTHER_PORT, UNTRACKED_PORT, OTHER_PORT)

    unixctl.call(host.vswitchd_ctl, "netdev-dummy/receive", "p1", frame.hex())
    changed = rewritten.to_bytes(6, "big") + frame[6:]
    wait_until(lambda: changed in captured(host), "the original's copy")
    assert [r.frame for r in pcap.read(host.directory / f"p{OTHER_PORT}-tx.pcap")] == [
        frame,
        changed,
    ]
    assert captured(host)[frame] == Counter({OTHER_PORT: 1, UNTRACKED_PORT: 1})
