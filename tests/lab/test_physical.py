"""The lab's physical network: a VLAN-aware top-of-rack switch, a provider bridge on every
chassis linked to one of its trunk ports, and external hosts on its access ports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from liveport.cli.main import main
from liveport.lab import hosts, lab, vms
from liveport.lab.sim import SimHost
from liveport.lab.tcp import TcpSession
from liveport.lab.traffic import Traffic
from liveport.model import packets
from liveport.model.errors import InvalidInput
from liveport.model.tcp import Side

from tests.conftest import LabFactory
from tests.lab.helpers import kernel_links, processes_mentioning, run_cli, unix_sockets_under

pytestmark = pytest.mark.lab

P1, P2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
H10, H10B, H20, HU = (f"02:00:00:00:01:{i:02x}" for i in (1, 2, 3, 4))


def _udp(frames: list[vms.Captured]) -> list[packets.FrameInfo]:
    return [f.info for f in frames if f.info.kind is packets.Kind.UDP]


@pytest.mark.parametrize("engine", ["liveport", "ovn"])
def test_every_chassis_has_a_provider_bridge_on_a_tor_trunk(
    lab_factory: LabFactory, engine: str
) -> None:
    directory = lab_factory(chassis=2, agents=False, engine=engine)
    doc = lab.status(directory)
    assert doc["tor"]["running"] and doc["tor"]["mac_aging"] == 300
    tor = SimHost("tor", directory / "tor")
    assert tor.vsctl("list-ports", "tor").split() == ["hv1", "hv2"]
    for port in ("hv1", "hv2"):  # trunks: no tag, every VLAN
        assert tor.vsctl("get", "Port", port, "tag").strip() == "[]"
    assert tor.vsctl("get", "Bridge", "tor", "fail_mode").strip() == "standalone"
    for ch in doc["chassis"]:
        host = SimHost(ch["name"], directory / ch["name"])
        assert host.vsctl("list-ports", "br-provider").split() == ["tor"]
        ids = host.vsctl("get", "Open_vSwitch", ".", "external_ids")
        assert 'ovn-bridge-mappings="physnet1:br-provider"' in ids
        # The host name is never the chassis name (requested-chassis accepts both).
        assert ch["hostname"] == f"{ch['name']}.lab.example"
        assert f"hostname={ch['hostname']}" in ids and f"system-id={ch['name']}" in ids
        # br-phys stays the underlay's.
        assert host.vsctl("list-ports", "br-phys").split() == ["underlay"]


def test_vlans_on_the_tor_and_its_learned_macs(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=2, agents=False)
    links_before = kernel_links()
    # A VM-like port on each chassis' provider bridge stands for what br-int will patch in.
    vms.add(
        directory, "p1", chassis="hv1", port="p1", mac=P1, ips=["192.0.2.1"], bridge="br-provider"
    )
    vms.add(
        directory, "p2", chassis="hv2", port="p2", mac=P2, ips=["192.0.2.2"], bridge="br-provider"
    )
    hosts.add(directory, "h10", mac=H10, addresses=["192.0.2.10/24"], vlan=10)
    hosts.add(directory, "h10b", mac=H10B, addresses=["192.0.2.11"], vlan=10)
    hosts.add(directory, "h20", mac=H20, addresses=["192.0.2.20"], vlan=20)
    hosts.add(directory, "hu", mac=HU, addresses=["192.0.2.30", "2001:db8::30"])

    # p1 sends on VLAN 10 to h10: the ToR delivers it untagged to h10's access port.
    vms.send(directory, "p1", vms.SendSpec(kind="udp", to="h10", vlan=10, seq=1))
    got = _udp(vms.wait_capture(directory, "h10", lambda f: bool(_udp(f))))
    assert [(i.seq, i.vlan_tci) for i in got] == [(1, None)]
    # On the wire from hv1 it was tagged.
    wire = hosts.tor_port_capture(directory, "hv1", received=False)
    assert [(f.info.seq, f.info.vlan_tci) for f in wire] == [(1, 10)]
    # h10 answers: back on hv1's trunk, tagged, to p1 (learned behind hv1 on VLAN 10).
    vms.send(directory, "h10", vms.SendSpec(kind="udp", to="p1", seq=2))
    got = _udp(vms.wait_capture(directory, "p1", lambda f: bool(_udp(f))))
    assert [(i.seq, i.vlan_tci) for i in got] == [(2, 10)]
    # Chassis to chassis through the ToR, on VLAN 10 (p2 also got the flood of seq 1,
    # when the ToR had not learned h10 yet).
    vms.send(directory, "p1", vms.SendSpec(kind="udp", to="p2", vlan=10, seq=3))
    at_p2 = vms.wait_capture(directory, "p2", lambda f: any(i.seq == 3 for i in _udp(f)))
    assert [(i.seq, i.vlan_tci) for i in _udp(at_p2)] == [(1, 10), (3, 10)]
    # An untagged host's frame stays on the untagged network (VLAN 0 in the ToR's table).
    vms.send(directory, "hu", vms.SendSpec(kind="udp", to="h10", seq=4))
    vms.wait_capture(directory, "p2", lambda f: any(i.seq == 4 for i in _udp(f)))
    assert [(i.seq, i.vlan_tci) for i in _udp(vms.capture(directory, "p2"))][-1] == (4, None)
    assert [i.seq for i in _udp(vms.capture(directory, "h10"))] == [1, 3]  # floods of VLAN 10
    assert [i.seq for i in _udp(vms.capture(directory, "h10b"))] == [1, 3]
    assert _udp(vms.capture(directory, "h20")) == []  # VLAN 20 saw nothing at all

    table = {(e.mac, e.vlan): e for e in hosts.fdb(directory)}
    assert (table[(P1, 10)].port, table[(P1, 10)].peer) == ("hv1", "chassis")
    assert (table[(H10, 10)].port, table[(H10, 10)].peer) == ("h10", "host")
    assert (table[(HU, 0)].port, table[(HU, 0)].peer) == ("hu", "host")
    assert all(e.age is not None and 0 <= e.age < 60 for e in table.values())

    # The VM moves to hv2 (unplugged, plugged, no announcement): the ToR still sends its
    # MAC to hv1 -- until the VM sends from hv2.
    vms.delete(directory, "p1")
    vms.add(
        directory, "p1", chassis="hv2", port="p1", mac=P1, ips=["192.0.2.1"], bridge="br-provider"
    )
    assert {e.port for e in hosts.fdb(directory) if e.mac == P1} == {"hv1"}
    vms.send(directory, "p1", vms.SendSpec(kind="garp", vlan=10))
    deadline = time.monotonic() + 5
    while {e.port for e in hosts.fdb(directory) if e.mac == P1} != {"hv2"}:
        assert time.monotonic() < deadline, hosts.fdb(directory)
        time.sleep(0.01)
    hosts.flush_fdb(directory)
    assert hosts.fdb(directory) == []
    assert kernel_links() == links_before


def test_the_tor_ages_macs_out(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False, mac_aging=15)
    assert lab.status(directory)["tor"]["mac_aging"] == 15
    tor = SimHost("tor", directory / "tor")
    assert tor.vsctl("get", "Bridge", "tor", "other_config:mac-aging-time").strip() == '"15"'
    hosts.add(directory, "h", mac=H10, addresses=["192.0.2.10"])
    vms.send(directory, "h", vms.SendSpec(kind="garp"))
    deadline = time.monotonic() + 5
    while not hosts.fdb(directory):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    learned = time.monotonic()
    while hosts.fdb(directory):
        assert time.monotonic() < learned + 40, hosts.fdb(directory)
        time.sleep(0.5)
    assert time.monotonic() - learned >= 14


def test_host_errors_are_one_line_and_create_nothing(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = lab_factory(chassis=2, agents=False)
    d = ["--dir", str(directory)]
    assert (
        main(
            [
                "lab",
                "host",
                "add",
                "h1",
                *d,
                "--mac",
                H10,
                "--ip",
                "192.0.2.1/28",
                "--vlan",
                "10",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "name": "h1",
        "mac": H10,
        "addresses": ["192.0.2.1/28"],
        "vlan": 10,
        "port": "h1",
    }
    assert (
        main(["lab", "vm", "add", "v1", *d, "--chassis", "hv1", "--port", "v1", "--mac", P1]) == 0
    )
    add = ["lab", "host", "add"]
    cases = [
        ([*add, "h2", *d, "--mac", "02:00:00:00:01"], "malformed MAC address"),
        ([*add, "h2", *d, "--mac", "01:00:5e:00:00:01"], "--mac 01:00:5e:00:00:01"),
        ([*add, "h2", *d, "--mac", H10B, "--ip", "192.0.2.300"], "malformed IP address"),
        ([*add, "h2", *d, "--mac", H10B, "--ip", "192.0.2.1/33"], "malformed IP address"),
        ([*add, "h2", *d, "--mac", H10B, "--vlan", "0"], "between 1 and 4094, not 0"),
        ([*add, "h2", *d, "--mac", H10B, "--vlan", "4095"], "between 1 and 4094, not 4095"),
        ([*add, "h1", *d, "--mac", H10B], "host 'h1' already exists"),
        ([*add, "v1", *d, "--mac", H10B], "'v1' is already a VM"),
        ([*add, "hv2", *d, "--mac", H10B], "'hv2' names a port of the top-of-rack switch"),
        ([*add, "tor", *d, "--mac", H10B], "'tor' names a port of the top-of-rack switch"),
        ([*add, "bad name", *d, "--mac", H10B], "invalid host name"),
        (
            ["lab", "vm", "add", "h1", *d, "--chassis", "hv1", "--port", "x", "--mac", P2],
            "'h1' is already an external host",
        ),
        (["lab", "host", "del", "nobody", *d], "unknown host 'nobody'"),
        (["lab", "capture", "h1", *d, "--chassis", "hv1"], "is an external host"),
        (["lab", "capture", *d], "name a VM or host, or --tor-port"),
        (["lab", "capture", *d, "--tor-port", "hv9"], "unknown chassis 'hv9'"),
        (["lab", "send", "h1", *d, "--kind", "udp", "--to", "v1", "--vlan", "4096"], "--vlan"),
        (["lab", "up", "--dir", "/tmp/lp-never", "--mac-aging", "5"], "--mac-aging must be"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not Path("/tmp/lp-never").exists()
    assert set(lab.load_state(directory).hosts) == {"h1"}
    tor = SimHost("tor", directory / "tor")
    assert tor.vsctl("list-ports", "tor").split() == ["h1", "hv1", "hv2"]
    assert tor.vsctl("get", "Port", "h1", "tag").strip() == "10"
    assert main(["lab", "host", "list", *d, "--json"]) == 0
    assert [h["name"] for h in json.loads(capsys.readouterr().out)] == ["h1"]
    assert main(["lab", "host", "del", "h1", *d]) == 0
    assert tor.vsctl("list-ports", "tor").split() == ["hv1", "hv2"]
    capsys.readouterr()
    assert main(["lab", "tor", "fdb", *d, "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_capture_of_a_tor_port_from_the_command_line(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = lab_factory(chassis=1, agents=False)
    d = ["--dir", str(directory)]
    hosts.add(directory, "h", mac=H10, addresses=["192.0.2.10"], vlan=7)
    vms.add(
        directory, "p", chassis="hv1", port="p", mac=P1, ips=["192.0.2.1"], bridge="br-provider"
    )
    assert main(["lab", "send", "h", *d, "--kind", "udp", "--to", "p", "--seq", "9"]) == 0
    capsys.readouterr()
    argv = ["lab", "capture", *d, "--tor-port", "hv1", "--kind", "udp", "--expect", "1", "--json"]
    assert main(argv) == 0
    (frame,) = json.loads(capsys.readouterr().out)
    assert (frame["seq"], frame["vlan_tci"], frame["chassis"]) == (9, 7, "hv1")
    assert main(["lab", "capture", "p", *d, "--kind", "udp", "--expect", "1"]) == 0
    assert "vlan 7 udp seq=9" in capsys.readouterr().out
    assert main(["lab", "tor", "fdb", *d]) == 0
    out = capsys.readouterr().out
    assert H10 in out and "host" in out


def test_down_leaves_nothing_of_the_physical_network(short_tmp: Path) -> None:
    directory = short_tmp / "lab"
    assert (
        run_cli(
            "lab", "up", "--dir", str(directory), "--chassis", "1", "--no-agents", "--quiet"
        ).returncode
        == 0
    )
    result = run_cli("lab", "host", "add", "h", "--dir", str(directory), "--mac", H10)
    assert result.returncode == 0, result.stderr
    tor_pid = lab.status(directory)["tor"]["pid"]
    assert tor_pid in [pid for pid, _ in processes_mentioning(str(directory) + "/")]
    down = run_cli("lab", "down", "--dir", str(directory))
    assert "stopped 8 processes" in down.stdout, down.stdout
    assert processes_mentioning(str(directory) + "/") == []
    assert unix_sockets_under(directory) == []
    assert not directory.exists()


def test_a_lab_of_format_1_is_read_and_a_newer_one_refused(short_tmp: Path) -> None:
    directory = short_tmp / "old"
    directory.mkdir()
    old = {
        "directory": str(directory),
        "status": "up",
        "created": 0.0,
        "version": 1,
        "chassis": [
            {
                "name": "hv1",
                "index": 1,
                "encap_ip": "198.18.0.1",
                "underlay_mac": "02:4c:50:00:00:01",
                "directory": str(directory / "hv1"),
            }
        ],
        "vms": {},
    }
    (directory / "lab.json").write_text(json.dumps(old))
    state = lab.load_state(directory)
    assert state.version == 1 and state.hosts == {} and not state.has_tor
    assert state.chassis[0].hostname == ""
    with pytest.raises(Exception, match="has no top-of-rack switch"):
        hosts.add(directory, "h", mac=H10)
    with pytest.raises(Exception, match="has no top-of-rack switch"):
        hosts.fdb(directory)
    doc = lab.status(directory)
    assert "tor" not in doc and doc["hosts"] == [] and doc["chassis"][0]["hostname"] == "hv1"
    (directory / "lab.json").write_text(json.dumps({**old, "version": 99}))
    with pytest.raises(InvalidInput, match="format 99, newer than this liveport reads"):
        lab.load_state(directory)


def test_the_agents_register_the_host_names(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=2)
    deadline = time.monotonic() + 20
    while True:
        result = run_cli("status", "--dir", str(directory), "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["chassis"]
        if len(rows) == 2:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert [(r["name"], r["hostname"], r["problem"]) for r in rows] == [
        ("hv1", "hv1.lab.example", None),
        ("hv2", "hv2.lab.example", None),
    ]


def test_a_host_is_an_end_of_tcp_sessions_and_udp_traffic(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False)
    hosts.add(directory, "h", mac=H10, addresses=["192.0.2.10"])
    vms.add(
        directory, "p", chassis="hv1", port="p", mac=P1, ips=["192.0.2.1"], bridge="br-provider"
    )
    # Across two switches (the ToR's vswitchd and hv1's): the handshake's steps wait.
    with TcpSession(directory, "h", "p", connections=2) as session:
        session.open()
        session.send(Side.CLIENT, count=2, wait=True)
        session.send(Side.SERVER, wait=True)
        session.close()
    at_p = [f.info for f in vms.capture(directory, "p") if f.info.kind is packets.Kind.TCP]
    assert sorted(i.seq or 0 for i in at_p if i.payload_len) == [1, 2, 3, 4]
    with Traffic(directory, "p", "h", rate=500):
        vms.wait_capture(directory, "h", lambda f: len(_udp(f)) >= 20)
    with Traffic(directory, "h", "p", rate=500, first_seq=100):
        vms.wait_capture(directory, "p", lambda f: len(_udp(f)) >= 20)
