"""TCP in the lab: sessions of hand-numbered segments, on a plain bridge and through OVS's
userspace conntrack (the dummy datapath's), which judges every segment as a firewall
would."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from liveport.cli.main import main
from liveport.lab import vms
from liveport.lab.sim import SimHost
from liveport.lab.tcp import TcpSession, TcpTraffic
from liveport.model import packets
from liveport.model.errors import Timeout
from liveport.model.tcp import DATA_SIZE, Side

from tests.conftest import LabFactory
from tests.lab.helpers import kernel_links

pytestmark = pytest.mark.lab

BRIDGE = "test0"


def _two_vms(directory: Path, *, secure: bool = False) -> SimHost:
    """Bridge test0 on hv1 with VMs a (10.0.0.10) and b (10.0.0.11); secure: no NORMAL,
    only the test's flows."""
    host = SimHost("hv1", directory / "hv1")
    host.vsctl(
        "add-br",
        BRIDGE,
        "--",
        "set",
        "bridge",
        BRIDGE,
        f"fail-mode={'secure' if secure else 'standalone'}",
    )
    for name, mac, ip in (
        ("a", "00:00:00:00:00:0a", "10.0.0.10"),
        ("b", "00:00:00:00:00:0b", "10.0.0.11"),
    ):
        vms.add(directory, name, chassis="hv1", port=name, mac=mac, ips=[ip], bridge=BRIDGE)
    return host


def _tcp(frames: list[vms.Captured]) -> list[packets.FrameInfo]:
    return [f.info for f in frames if f.info.kind is packets.Kind.TCP]


def _ofctl(directory: Path, *args: str) -> str:
    mgmt = f"unix:{directory}/hv1/{BRIDGE}.mgmt"
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", *args[:-1], mgmt, *args[-1:]]
        if args[0] == "add-flows"
        else ["ovs-ofctl", "-O", "OpenFlow13", *args, mgmt],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_session_on_a_plain_bridge(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False)
    links_before = kernel_links()
    _two_vms(directory)
    with TcpSession(directory, "a", "b", connections=2) as session:
        session.open()
        session.send(Side.CLIENT, count=3)
        session.send(Side.SERVER, connection=1)
        session.close()
    at_b = _tcp(vms.wait_capture(directory, "b", lambda f: len(_tcp(f)) >= 2 + 2 + 6 + 2 + 2))
    at_a = _tcp(vms.wait_capture(directory, "a", lambda f: len(_tcp(f)) >= 2 + 1 + 2))
    # What b (the server) received: SYNs, handshake ACKs, data, FINs, last ACKs.
    flags = [(i.src_port, packets.TcpFlags(i.tcp_flags or 0)) for i in at_b]
    assert flags[:4] == [
        (40000, packets.TcpFlags.SYN),
        (40001, packets.TcpFlags.SYN),
        (40000, packets.TcpFlags.ACK),
        (40001, packets.TcpFlags.ACK),
    ]
    data = [i for i in at_b if i.payload_len]
    assert [(i.src_port, i.seq) for i in data] == [
        (40000, 1),
        (40001, 2),
        (40000, 3),
        (40001, 4),
        (40000, 5),
        (40001, 6),
    ]
    # Each connection's stream is contiguous: every segment starts where the last ended.
    for port in (40000, 40001):
        mine = [i for i in data if i.src_port == port]
        assert [i.tcp_seq for i in mine] == [
            (mine[0].tcp_seq or 0) + k * DATA_SIZE for k in range(3)
        ]
    assert [(i.dst_port, i.seq) for i in at_a if i.payload_len] == [(40001, 1)]
    assert kernel_links() == links_before


def _firewall(directory: Path) -> None:
    """a is the client side, b the server side, zone 1. a's segments are tracked and
    committed (like a stateful ACL that allows a's connections); b's are tracked, not
    committed, and pass only if they belong to an established connection."""
    flows = "\n".join(
        [
            "table=0,priority=10,tcp,in_port=a,actions=ct(zone=1,table=1)",
            "table=0,priority=10,tcp,in_port=b,actions=ct(zone=1,table=2)",
            "table=1,priority=10,tcp,ct_state=+trk+new,actions=ct(commit,zone=1),output:b",
            "table=1,priority=10,tcp,ct_state=+trk+est,actions=ct(commit,zone=1),output:b",
            "table=1,priority=5,tcp,actions=drop",
            "table=2,priority=10,tcp,ct_state=+trk+est,actions=output:a",
            "table=2,priority=5,tcp,ct_state=+trk+new,actions=drop",
            "table=2,priority=5,tcp,ct_state=+trk+inv,actions=drop",
            "table=2,priority=1,tcp,actions=drop",
        ]
    )
    subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "add-flows", f"unix:{directory}/hv1/{BRIDGE}.mgmt", "-"],
        input=flows,
        text=True,
        check=True,
        capture_output=True,
    )


def _counts(directory: Path) -> dict[str, int]:
    """n_packets of the firewall's flows, by table and ct_state. The datapath's flows hand
    their statistics to OpenFlow's only from time to time: purging them hands them now."""
    SimHost("hv1", directory / "hv1").appctl("revalidator/purge")
    out: dict[str, int] = {}
    for line in _ofctl(directory, "dump-flows").splitlines():
        table = re.search(r"table=(\d+)", line)
        packets_ = re.search(r"n_packets=(\d+)", line)
        state = re.search(r"ct_state=([^, ]+)", line)
        if table and packets_ and table.group(1) != "0":
            key = f"{table.group(1)}:{state.group(1) if state else 'other'}"
            out[key] = out.get(key, 0) + int(packets_.group(1))
    return out


def test_conntrack_sees_the_session_established_and_refuses_an_unknown_connection(
    lab_factory: LabFactory,
) -> None:
    directory = lab_factory(chassis=1, agents=False)
    _two_vms(directory, secure=True)
    _firewall(directory)
    connections = 3
    with TcpSession(directory, "a", "b", connections=connections) as session:
        session.open()  # raises if any handshake step is dropped
        session.send(Side.CLIENT, count=4)
        session.send(Side.SERVER, count=4, wait=True)  # every server segment passes
        session.ack(Side.CLIENT, wait=True)
        conntrack = SimHost("hv1", directory / "hv1").appctl("dpctl/dump-conntrack")
        established = [line for line in conntrack.splitlines() if "ESTABLISHED" in line]
        assert len(established) == connections, conntrack
        assert all("zone=1" in line for line in established)
        session.close()
    counts = _counts(directory)
    client_segments = connections * (1 + 1 + 4 + 1 + 2)  # SYN, ACK, data, ACK, FIN+ACK
    server_segments = connections * (1 + 4 + 1)  # SYN-ACK, data, FIN
    # Only the SYNs were new; everything else of a's was established, and every segment of
    # b's belonged to an established connection.
    assert counts["1:+new+trk"] == connections, counts
    assert counts["1:+est+trk"] == client_segments - connections, counts
    assert counts.get("1:other", 0) == 0
    assert counts["2:+est+trk"] == server_segments, counts
    assert counts["2:+new+trk"] == counts["2:+inv+trk"] == counts["2:other"] == 0, counts

    # A connection conntrack never saw (established before the firewall existed, or on
    # another chassis before a migration): its server's mid-stream segment arrives first
    # from the other side, is new to conntrack, is not committed and does not pass.
    with TcpSession(directory, "a", "b", first_port=41000, timeout=0.5) as unknown:
        unknown.open(silent=True)
        with pytest.raises(Timeout, match=r"data \(PA\) of connection 0 .* did not reach a"):
            unknown.send(Side.SERVER, wait=True)
        # Its client's next segment is tracked as new (ct_state=+new: a non-SYN may start
        # a connection in OVS) and committed by a's side -- from then on b's segments pass.
        unknown.send(Side.CLIENT, wait=True)
        unknown.send(Side.SERVER, wait=True)
    after = _counts(directory)
    assert after["2:+new+trk"] == 1, after
    assert after["2:+est+trk"] == server_segments + 1, after


def test_an_out_of_window_segment_is_invalid(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False)
    _two_vms(directory, secure=True)
    _firewall(directory)
    with TcpSession(directory, "a", "b", timeout=0.5) as session:
        session.open()
        flow = session.flows[0]
        # Data 200 kB past the window the client advertised (a pure ACK's sequence number
        # is not checked: conntrack eases the rules for segments without data).
        far = flow.segment(
            Side.SERVER,
            packets.TcpFlags.ACK | packets.TcpFlags.PSH,
            seq=flow.nxt[Side.SERVER] + 200_000,
            payload=packets.seq_payload(99),
        )
        session.inject(far)
        with pytest.raises(Timeout):
            session.wait_delivered([(0, far)])
        session.send(Side.SERVER, wait=True)  # the connection itself is unharmed
    assert _counts(directory)["2:+inv+trk"] == 1


def test_tcp_traffic_keeps_connections_going_both_ways(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False)
    _two_vms(directory, secure=True)
    _firewall(directory)
    traffic = TcpTraffic(directory, "a", "b", connections=4, rate=2000, both=True, ack_every=4)
    with traffic:
        vms.wait_capture(
            directory, "a", lambda f: sum(1 for i in _tcp(f) if i.payload_len) >= 300, timeout=10
        )
    sent = traffic.sent
    by_side = {side: [s.seq for s in sent if s.side is side] for side in Side}
    assert by_side[Side.CLIENT][:3] == [1, 2, 3] and by_side[Side.SERVER][:3] == [1, 2, 3]
    assert {s.connection for s in sent} == {0, 1, 2, 3}
    server_data = [s.seq for s in sent if s.side is Side.SERVER]
    got = vms.wait_capture(
        directory,
        "a",
        lambda f: {i.seq for i in _tcp(f) if i.payload_len} >= set(server_data),
        timeout=5,
    )
    assert sorted(i.seq or 0 for i in _tcp(got) if i.payload_len) == server_data  # none dropped
    counts = _counts(directory)
    assert counts["2:+new+trk"] == counts["2:+inv+trk"] == counts["2:other"] == 0, counts
    assert counts.get("1:other", 0) == 0, counts


def test_tcp_from_the_command_line(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = lab_factory(chassis=1, agents=False)
    _two_vms(directory)
    d = ["--dir", str(directory)]
    assert main(["lab", "send", "a", *d, "--kind", "tcp", "--to", "b", "--flags", "PA",
                 "--sport", "1234", "--dport", "80", "--seq", "1000", "--ack", "77",
                 "--payload-seq", "5", "--count", "2"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["lab", "capture", "b", *d, "--kind", "tcp", "--expect", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [
        (f["src_port"], f["dst_port"], f["tcp_flags"], f["tcp_seq"], f["tcp_ack"], f["seq"])
        for f in got
    ] == [(1234, 80, 0x18, 1000, 77, 5), (1234, 80, 0x18, 1000 + DATA_SIZE, 77, 6)]
    assert all(f["payload_len"] == DATA_SIZE for f in got)
    assert main(["lab", "traffic", "a", *d, "--to", "b", "--tcp", "--connections", "2",
                 "--both", "--duration", "0.3", "--rate", "200", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "tcp" and len(doc["connections"]) == 2
    assert doc["sent"]["client"]["sent"] > 0 and doc["sent"]["server"]["sent"] > 0
    assert {c["state"] for c in doc["connections"]} == {"done"}
    for argv, message in [
        (["lab", "send", "a", *d, "--kind", "tcp", "--to", "b", "--flags", "SX"], "'X' is not"),
        (["lab", "send", "a", *d, "--kind", "tcp", "--to", "b", "--sport", "0"], "--sport"),
        (["lab", "send", "a", *d, "--kind", "udp", "--to", "b", "--flags", "S"], "for --kind tcp"),
        (["lab", "traffic", "a", *d, "--to", "b", "--connections", "2"], "are for --tcp"),
        (["lab", "traffic", "a", *d, "--to", "a", "--tcp"], "cannot connect to itself"),
        (["lab", "traffic", "a", *d, "--to", "b", "--tcp", "--connections", "0"], "between 1"),
    ]:
        capsys.readouterr()
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
