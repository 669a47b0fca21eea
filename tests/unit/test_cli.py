"""The command line's shape: every documented option exists and reaches its handler."""

from __future__ import annotations

import subprocess
import sys

import pytest

from liveport.cli import main as cli
from liveport.cli.main import build_parser
from liveport.lab import lab as lablib


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
