"""The lab itself: real ovsdb-server and ovs-vswitchd processes, found and stopped by PID."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from liveport.cli.main import main
from liveport.lab import lab, vms
from liveport.lab.sim import SimHost
from liveport.model import packets
from liveport.model.errors import Conflict, InvalidInput, NotFound

from tests.conftest import LabFactory
from tests.lab.helpers import (
    LIVEPORT,
    kernel_links,
    processes_mentioning,
    run_cli,
    unix_sockets_under,
    wait_for_file,
)

pytestmark = pytest.mark.lab


def _add_test_bridge(directory: Path, chassis: str) -> None:
    SimHost(chassis, directory / chassis).vsctl(
        "add-br", "test0", "--", "set", "bridge", "test0", "fail-mode=standalone"
    )


def test_up_status_and_down_leave_nothing_behind(short_tmp: Path) -> None:
    directory = short_tmp / "lab"
    links_before = kernel_links()
    result = run_cli("lab", "up", "--dir", str(directory), "--chassis", "3", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "up"
    for part in ("nb", "sb"):
        assert doc[part]["running"] and doc[part]["pid"] > 0
        assert Path(doc[part]["socket"]).exists()
    assert [c["name"] for c in doc["chassis"]] == ["hv1", "hv2", "hv3"]
    for ch in doc["chassis"]:
        assert ch["ovsdb"]["running"] and ch["vswitchd"]["running"]
        out = subprocess.run(
            ["ovs-vsctl", f"--db={ch['ovsdb']['remote']}", "list-br"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "br-int" in out and "br-phys" in out
    assert doc["northd"]["running"] and all(ch["agent"]["running"] for ch in doc["chassis"])
    status = json.loads(run_cli("lab", "status", "--dir", str(directory), "--json").stdout)
    # NB, SB, underlay and ToR (2 each), 3 chassis (2 each), northd, 3 agents.
    assert status["processes"] == {"registered": 16, "running": 16}
    assert processes_mentioning(str(directory) + "/")
    assert kernel_links() == links_before  # the dummy datapath creates no kernel interface

    down = run_cli("lab", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped 16 processes" in down.stdout
    assert processes_mentioning(str(directory) + "/") == []
    assert unix_sockets_under(directory) == []
    assert not directory.exists()


def test_injected_frame_reaches_another_vif_of_a_plain_bridge(lab_factory: LabFactory) -> None:
    directory = lab_factory(chassis=1, agents=False)
    _add_test_bridge(directory, "hv1")
    vms.add(
        directory,
        "a",
        chassis="hv1",
        port="pa",
        mac="00:00:00:00:00:0a",
        ips=["10.0.0.10"],
        bridge="test0",
    )
    vms.add(
        directory,
        "b",
        chassis="hv1",
        port="pb",
        mac="00:00:00:00:00:0b",
        ips=["10.0.0.11"],
        bridge="test0",
    )
    vms.send(directory, "a", vms.SendSpec(kind="udp", to="b", seq=41), count=3)
    got = vms.wait_capture(directory, "b", lambda frames: len(frames) >= 3)
    assert [(f.info.kind, f.info.seq) for f in got] == [
        (packets.Kind.UDP, 41 + i) for i in range(3)
    ]
    assert all(f.chassis == "hv1" and str(f.info.src) == "00:00:00:00:00:0a" for f in got)
    assert got[0].ts <= got[1].ts <= got[2].ts
    assert vms.capture(directory, "a") == []  # a learned nothing back; NORMAL did not hairpin
    sent = vms.wait_capture(directory, "a", lambda frames: len(frames) >= 3, received=False)
    assert [f.info.seq for f in sent] == [41, 42, 43]


def test_vm_errors_are_one_clear_line(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = lab_factory(chassis=2, agents=False)
    d = ["--dir", str(directory)]
    assert (
        main(
            [
                "lab",
                "vm",
                "add",
                "vm1",
                *d,
                "--chassis",
                "hv1",
                "--port",
                "p1",
                "--mac",
                "00:00:00:00:00:01",
                "--ip",
                "10.0.0.1",
            ]
        )
        == 0
    )
    cases = [
        (
            [
                "lab",
                "vm",
                "add",
                "vm2",
                *d,
                "--chassis",
                "hv7",
                "--port",
                "p2",
                "--mac",
                "00:00:00:00:00:02",
            ],
            "unknown chassis 'hv7'",
        ),
        (
            [
                "lab",
                "vm",
                "add",
                "vm1",
                *d,
                "--chassis",
                "hv2",
                "--port",
                "p2",
                "--mac",
                "00:00:00:00:00:02",
            ],
            "VM 'vm1' already exists",
        ),
        (
            [
                "lab",
                "vm",
                "add",
                "vm3",
                *d,
                "--chassis",
                "hv1",
                "--port",
                "p3",
                "--mac",
                "00:00:00:00:0:03",
            ],
            "malformed MAC address",
        ),
        (
            [
                "lab",
                "vm",
                "add",
                "vm3",
                *d,
                "--chassis",
                "hv1",
                "--port",
                "p3",
                "--mac",
                "00:00:00:00:00:03",
                "--ip",
                "10.0.0.999",
            ],
            "malformed IP address",
        ),
        (
            [
                "lab",
                "vm",
                "add",
                "bad name",
                *d,
                "--chassis",
                "hv1",
                "--port",
                "p3",
                "--mac",
                "00:00:00:00:00:03",
            ],
            "invalid VM name",
        ),
        (["lab", "status", "--dir", "/proc/self"], "is not a liveport lab"),
        (["lab", "up", *d], "a lab is already running"),
        (["lab", "send", "nobody", *d, "--kind", "rarp"], "unknown VM 'nobody'"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    # Nothing half-created: the refused VMs do not exist, on the switch or in the lab.
    assert set(lab.load_state(directory).vms) == {"vm1"}
    host = SimHost("hv1", directory / "hv1")
    assert host.vsctl("list-ports", "br-int").split() == ["vm1"]


def test_up_refuses_a_directory_that_is_not_a_lab(short_tmp: Path) -> None:
    (short_tmp / "precious").write_text("keep me")
    with pytest.raises(Conflict, match="is not a liveport lab"):
        lab.up(short_tmp, 1)
    assert (short_tmp / "precious").read_text() == "keep me"
    with pytest.raises(NotFound):
        lab.down(short_tmp)
    with pytest.raises(InvalidInput):
        lab.up(short_tmp / "x", 0)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("LIVEPORT_NB_SCHEMA", "OVN_Northbound schema not found at /nonexistent/x.ovsschema"),
        ("LIVEPORT_VSWITCH_SCHEMA", "Open_vSwitch schema not found at /nonexistent/x.ovsschema"),
    ],
)
def test_a_missing_schema_is_one_clear_line_and_creates_nothing(
    short_tmp: Path, variable: str, message: str
) -> None:
    directory = short_tmp / "lab"
    result = run_cli(
        "lab",
        "up",
        "--dir",
        str(directory),
        "--chassis",
        "1",
        env={variable: "/nonexistent/x.ovsschema"},
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not directory.exists()
    assert processes_mentioning(str(directory) + "/") == []


@pytest.mark.parametrize(
    "kill_after",
    [
        "nb/nb.pid",
        "underlay/vswitchd.pid",
        "tor/vswitchd.pid",
        "hv3/vswitchd.pid",
        "hv2/agent.pid",
    ],
)
def test_killing_up_midway_leaves_nothing_down_cannot_find(
    short_tmp: Path, kill_after: str
) -> None:
    directory = short_tmp / "lab"
    proc = subprocess.Popen(
        [*LIVEPORT, "lab", "up", "--dir", str(directory), "--chassis", "3", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_file(directory / kill_after)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    result = run_cli("lab", "down", "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    assert processes_mentioning(str(directory) + "/") == []
    assert not directory.exists()


def test_sigterm_during_up_rolls_back(short_tmp: Path) -> None:
    directory = short_tmp / "lab"
    proc = subprocess.Popen(
        [*LIVEPORT, "lab", "up", "--dir", str(directory), "--chassis", "3", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(directory / "sb/sb.pid")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if proc.returncode == 0:
        # up finished before the signal arrived; then down must still clean everything.
        assert run_cli("lab", "down", "--dir", str(directory)).returncode == 0
    else:
        assert "interrupted" in err
    assert processes_mentioning(str(directory) + "/") == []
    assert not directory.exists()


def test_two_labs_side_by_side_do_not_interfere(lab_factory: LabFactory) -> None:
    first = lab_factory(chassis=1, name="a", agents=False)
    second = lab_factory(chassis=1, name="b", agents=False)
    for directory in (first, second):
        _add_test_bridge(directory, "hv1")
        for name, mac in (("x", "00:00:00:00:00:01"), ("y", "00:00:00:00:00:02")):
            vms.add(
                directory, name, chassis="hv1", port=name, mac=mac, ips=["10.0.0.1"], bridge="test0"
            )
    vms.send(first, "x", vms.SendSpec(kind="udp", to="y", dst_ip="10.0.0.2", seq=1))
    assert [f.info.seq for f in vms.wait_capture(first, "y", bool)] == [1]
    assert vms.capture(second, "y") == []
    lab.down(first)
    assert lab.status(second)["processes"] == {"registered": 8, "running": 8}
    vms.send(second, "x", vms.SendSpec(kind="udp", to="y", dst_ip="10.0.0.2", seq=2))
    assert [f.info.seq for f in vms.wait_capture(second, "y", bool)] == [2]
