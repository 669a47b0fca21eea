"""The command line's shape: every documented option exists and reaches its handler."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from liveport.cli import main as cli
from liveport.cli import vhost as vhost_cli
from liveport.cli.main import build_parser
from liveport.cms import vhost
from liveport.lab import lab as lablib
from liveport.vhostuser.catalogue import load_catalogue


@pytest.mark.parametrize(
    "argv",
    [
        [
            "lab",
            "up",
            "--chassis",
            "2",
            "--heartbeat",
            "0.5",
            "--dead-after",
            "3",
            "--vhost-backend",
            "hv2=upstream.ovs-dpdk.v2.9",
            "--no-agents",
            "--json",
            "--quiet",
        ],
        [
            "lab",
            "vm",
            "add",
            "vm1",
            "--chassis",
            "hv1",
            "--port",
            "p",
            "--mac",
            "00:00:00:00:00:01",
            "--ip",
            "10.0.0.1",
            "--vhost-mode",
            "upstream.ovs-dpdk.v2.9",
        ],
        [
            "lab",
            "vm",
            "migrate",
            "vm1",
            "--to",
            "hv2",
            "--announce",
            "garp+na",
            "--pause-ms",
            "5",
            "--hypervisor-status",
            "--no-wait-ready",
            "--keep-source",
        ],
        ["lab", "traffic", "peer", "--to", "vm1", "--rate", "100", "--duration", "1"],
        ["lab", "capture", "vm1", "--expect", "3", "--kind", "udp", "--json"],
        ["migrate", "vm1", "--to", "hv2", "--wait", "--form", "seed", "--timeout", "5"],
        ["migrate", "vm1", "--complete"],
        ["migrations", "--json"],
        ["migration", "show", "vm1", "--json", "--timeout", "3"],
        [
            "trace",
            "--chassis",
            "hv2",
            "--from-chassis",
            "hv1",
            "--switch",
            "ls0",
            "--ovs-db",
            "unix:/x",
            "--mgmt-socket",
            "/y",
            "--json",
            "ip4.dst=10.0.0.1, udp",
        ],
        ["trace", "--chassis", "hv1", "--inport", "vm1", 'inport == "vm1" && udp'],
        ["vhost", "modes", "--chassis", "hv1,hv2", "--json"],
        ["vhost", "check", "vm1", "--to", "hv3"],
        ["status", "--json", "--nb-db", "unix:/x", "--sb-db", "unix:/y"],
        ["demo", "--rate", "100"],
    ],
)
def test_every_option_parses_and_has_a_handler(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_lab_up_options_reach_their_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_up(directory: object, chassis: int, **kwargs: object) -> None:
        seen.update(kwargs, chassis=chassis)

    monkeypatch.setattr(lablib, "up", fake_up)
    monkeypatch.setattr(lablib, "status", lambda d: {})
    monkeypatch.setattr(cli, "_print_lab_status", lambda doc: None)
    cli.main(
        [
            "lab",
            "up",
            "--dir",
            "/tmp/x",
            "--chassis",
            "2",
            "--heartbeat",
            "0.5",
            "--dead-after",
            "3",
            "--vhost-backend",
            "hv2=m",
            "--secure",
            "--quiet",
        ]
    )
    assert seen["chassis"] == 2 and seen["heartbeat"] == 0.5 and seen["dead_after"] == 3
    assert seen["vhost_backends"] == {"hv2": "m"} and seen["secure"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["pki", "issue", "chassis", "hv1"],
        ["sb", "setup", "--sb-db", "unix:/x", "--chassis-listener", "pssl:6642"],
        ["status", "-p", "k", "-c", "c", "-C", "ca"],
        ["northd", "--private-key", "k", "--certificate", "c", "--ca-cert", "ca"],
        ["agent", "-p", "k", "-c", "c", "-C", "ca"],
    ],
)
def test_security_commands_and_tls_options_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_the_daemon_entry_loads_only_its_daemon() -> None:
    probe = (
        "import sys\n"
        "from liveport.cli import daemons\n"
        "heavy = ['os_ken', 'liveport.agent.agent', 'liveport.northd.northd', 'liveport.lab.lab',"
        " 'liveport.cms.migrate', 'liveport.cli.main']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
    usage = subprocess.run(
        [sys.executable, "-m", "liveport.cli.daemons", "nothing"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.returncode == 2 and "northd|agent" in usage.stderr


# ----- vhost qemu-args / libvirt-xml ------------------------------------------------------


@pytest.fixture
def no_distribution_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped catalogue only, whatever the machine has in /etc or the environment."""
    monkeypatch.setattr(
        vhost_cli, "load_catalogue", lambda: load_catalogue(environ={}, config_dir=None)
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["vhost", "qemu-args", "upstream.ovs-dpdk.v2.17", "--qemu", "9.2", "--json"],
        ["vhost", "qemu-args", "--port", "vm1", "--to", "hv2", "--to", "hv3,hv4"],
        ["vhost", "qemu-args", "m", "--queues", "4", "--ring-size", "1024", "--sb-db", "unix:/y"],
        ["vhost", "libvirt-xml", "m", "--socket", "/run/vhu0", "--mac", "52:54:00:00:00:01"],
        ["vhost", "libvirt-xml", "--port", "vm1", "--bridge", "br0", "--alias", "ua-nic1"],
    ],
)
def test_the_vhost_device_commands_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("no_distribution_modes")
def test_qemu_args_prints_the_properties_then_comments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["vhost", "qemu-args", "qemu-7.2.vhost-net", "--qemu", "9.2.4"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "guest_uso4=off,guest_uso6=off,host_uso=off,queue_reset=off"
    assert lines[1] == (
        "# mode qemu-7.2.vhost-net on QEMU 9.2: the guest sees none of the 28 features the "
        "mode lacks (QEMU's own control-queue features aside)"
    )
    assert all(line.startswith("# ") for line in lines[1:])


@pytest.mark.usefixtures("no_distribution_modes")
def test_qemu_args_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vhost", "qemu-args", "upstream.ovs-dpdk.v3.2", "--qemu", "8.2", "--queues", "2"]
    code, out, _ = run([*argv, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0
    assert doc["mode"] == "upstream.ovs-dpdk.v3.2" and doc["qemu"] == "8.2"
    assert doc["args"] == (
        "host_tso4=off,host_tso6=off,host_ufo=off,mq=on,guest_uso4=off,guest_uso6=off,"
        "host_uso=off,notify_on_empty=off,queue_reset=off,vectors=6"
    )
    assert doc["properties"]["mq"] == "on" and doc["netdev"] == {"queues": 2}
    assert doc["selected"] == "named" and doc["exact"] is True


@pytest.mark.usefixtures("no_distribution_modes")
def test_libvirt_xml_prints_a_domain_document(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vhost", "libvirt-xml", "upstream.ovs-dpdk.v2.17", "--qemu", "7.2"]
    code, out, _ = run([*argv, "--socket", "/run/vhu0"], capsys)
    assert code == 0
    root = ET.fromstring(out)
    assert root.find("devices/interface/source").attrib["path"] == "/run/vhu0"  # type: ignore[union-attr]
    code, out, _ = run([*argv, "--json"], capsys)
    doc = json.loads(out)
    assert doc["overrides"] == ["notify_on_empty", "queue_reset"]
    assert ET.fromstring(doc["xml"]).tag == "domain"


@pytest.mark.usefixtures("no_distribution_modes")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "unknown vhost-user mode 'nope'; known: upstream.ovs-dpdk.v3.2, "),
        ([], "give a MODE or --port PORT (one of them)"),
        (["m", "--port", "vm1"], "give a MODE or --port PORT (one of them)"),
        (["upstream.ovs-dpdk.v2.9", "--to", "hv2"], "--to CHASSIS needs --port PORT"),
        (["upstream.ovs-dpdk.v2.9", "--qemu", "8.3"], "QEMU 8.3 is no release liveport knows"),
        (
            ["upstream.ovs-dpdk.v2.9", "--queues", "129"],
            "mode upstream.ovs-dpdk.v2.9 allows at most 128 queue pairs, not 129",
        ),
        (
            ["upstream.ovs-dpdk.v2.9", "--ring-size", "100"],
            "QEMU's virtio-net rings are a power of two from 256 to 1024 entries, not 100",
        ),
    ],
)
def test_vhost_device_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("qemu-args", "libvirt-xml"):
        code, out, err = run(["vhost", command, *argv], capsys)
        # An unknown mode is a name that does not exist (4), the rest bad input (2).
        assert code == (4 if argv == ["nope"] else 2) and out == ""
        assert err.startswith(f"liveport: error: {message}")
        assert err.count("\n") == 1


def test_port_selection_reaches_the_device_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--port goes to the SB (lab tests cover that part); here the selection is given."""
    seen: list[list[str]] = []
    catalogue = load_catalogue(environ={}, config_dir=None)

    def fake(self: object, args: object, to: list[str]) -> vhost.Selection:
        seen.append(to)
        return vhost.Selection("vm1", catalogue.get("upstream.ovs-dpdk.v2.9"), "the reason")

    monkeypatch.setattr(vhost_cli.Commands, "port_selection", fake)
    argv = ["vhost", "qemu-args", "--port", "vm1", "--to", "hv2", "--to", "hv3, hv4", "--json"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and seen == [["hv2", "hv3", "hv4"]]
    doc = json.loads(out)
    assert doc["mode"] == "upstream.ovs-dpdk.v2.9" and doc["port"] == "vm1"
    assert doc["selected"] == "the reason"
    code, out, _ = run(["vhost", "libvirt-xml", "--port", "vm1", "--qemu", "9.2"], capsys)
    assert code == 0 and "<source type='unix' path='/run/openvswitch/vm1' mode='server'/>" in out
