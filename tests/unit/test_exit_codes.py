"""One table of exit statuses (model.errors) for every command: each leaf of `liveport
--help` (and each daemon) is run in a failure mode and must end with its status and one
line on stderr. Commands that print take --json, and what they print then parses."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.cli import daemons
from liveport.cli.main import build_parser, main
from liveport.model import errors

NOLAB = "/tmp/liveport-no-such-lab"
LAB = "no lab at|not a liveport lab"

# Every leaf command: (its path, argv after the path, exit status, words of the message).
CASES: list[tuple[str, list[str], int, str]] = [
    ("lab up", ["--dir", NOLAB, "--chassis", "0"], errors.USAGE, "--chassis must be"),
    ("lab fault", ["kill", "northd", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab status", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab down", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab env", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    (
        "lab vm add",
        ["v", "--dir", NOLAB, "--chassis", "hv1", "--port", "p", "--mac", "00:00:00:00:00:01"],
        errors.NOT_FOUND,
        LAB,
    ),
    ("lab vm del", ["v", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab vm list", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab vm migrate", ["v", "--to", "h", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab vm abort", ["v", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab host add", ["h", "--mac", "00:00:00:00:00:09", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab host del", ["h", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab host list", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab tor fdb", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab tor flush", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab traffic", ["a", "--to", "b", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab send", ["a", "--kind", "udp", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab capture", ["a", "--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("lab doctor", ["--dir", NOLAB], errors.NOT_FOUND, LAB),
    ("status", [], errors.USAGE, "no database to talk to"),
    ("migrate", ["vm1", "--nb-db", "unix:/x", "--sb-db", "unix:/y"], errors.USAGE, "exactly one"),
    ("migrations", [], errors.USAGE, "no database to talk to"),
    ("migration show", ["vm1"], errors.USAGE, "no database to talk to"),
    ("trace", ["udp || tcp", "--chassis", "hv1"], errors.USAGE, "not a field == value term"),
    ("vhost modes", [], errors.USAGE, "no database to talk to"),
    ("vhost check", ["vm1", "--to", "hv2"], errors.USAGE, "no database to talk to"),
    ("vhost qemu-args", ["nope"], errors.NOT_FOUND, "unknown vhost-user mode"),
    ("vhost libvirt-xml", ["nope"], errors.NOT_FOUND, "unknown vhost-user mode"),
    ("sb setup", [], errors.USAGE, "give --sb-db"),
    ("pki init", ["--days", "0"], errors.USAGE, "days"),
    ("pki issue", ["chassis"], errors.USAGE, "needs a NAME"),
    ("pki list", [], errors.NOT_FOUND, ""),
    ("bench compare", ["--bind-sizes", "x"], errors.USAGE, "--bind-sizes takes numbers"),
    ("doctor", [], errors.USAGE, "no database to talk to"),
    ("northd", [], errors.USAGE, "northd needs the NB and the SB"),
    ("agent", ["--metrics-address", "nowhere"], errors.USAGE, "--metrics-address takes"),
    ("demo", ["--chassis", "0"], errors.USAGE, "--chassis must be"),
    ("ctl", ["--target", "northd", "status"], errors.NOT_FOUND, "liveport-northd is not running"),
    ("libvirt-hook", ["vm1"], errors.USAGE, "DOMAIN OPERATION SUB-OPERATION"),
    ("libvirt-watch", ["--hold", "-1"], errors.USAGE, "--hold takes seconds"),
]


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path)
        return
    for name, sub in subs[0].choices.items():
        yield from leaves(sub, (*path, name))


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    """No databases, lab, configuration or PKI from this machine's environment."""
    for var in (
        "LIVEPORT_NB_DB",
        "OVN_NB_DB",
        "LIVEPORT_SB_DB",
        "LIVEPORT_LAB_DIR",
        "LIVEPORT_PRIVATE_KEY",
        "LIVEPORT_CERTIFICATE",
        "LIVEPORT_CA_CERT",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIVEPORT_CONFIG", "/dev/null")
    monkeypatch.setenv("LIVEPORT_PKI_DIR", str(short_tmp / "pki"))
    monkeypatch.setenv("LIVEPORT_RUNDIR", str(short_tmp / "run"))


def test_every_command_has_a_failure_case() -> None:
    assert sorted(leaves(build_parser())) == sorted(path for path, *_ in CASES)


@pytest.mark.parametrize(("path", "argv", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_failure_statuses(
    path: str, argv: list[str], code: int, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path.split(), *argv]) == code
    captured = capsys.readouterr()
    assert captured.err.startswith("liveport: error: ") and captured.err.count("\n") == 1
    assert re.search(words, captured.err), captured.err


def test_usage_errors_are_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["status", "--no-such-option"])
    assert caught.value.code == errors.USAGE
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("entry", "argv", "code"),
    [
        (daemons.northd_main, [], errors.USAGE),
        (daemons.northd_main, ["--config", "/no/such/liveport.conf"], errors.NOT_FOUND),
        (daemons.agent_main, ["--log-level", "loud"], errors.USAGE),
    ],
)
def test_daemon_statuses(
    entry: daemons.Runner, argv: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv and argv[0] == "--log-level":
        with pytest.raises(SystemExit) as caught:
            entry(argv)  # type: ignore[arg-type]
        assert caught.value.code == code
    else:
        assert entry(argv) == code  # type: ignore[arg-type]
    assert capsys.readouterr().err.count("\n") == 1


def test_versions(capsys: pytest.CaptureFixture[str]) -> None:
    for entry, text in (
        (main, "liveport 0.1.0"),
        (daemons.northd_main, "liveport-northd (liveport) 0.1.0"),
        (daemons.agent_main, "liveport-agent (liveport) 0.1.0"),
    ):
        with pytest.raises(SystemExit) as caught:
            entry(["--version"])
        assert caught.value.code == 0
        assert capsys.readouterr().out == f"{text}\n"


def test_every_printing_command_takes_json() -> None:
    def options(path: str) -> set[str]:
        parser: argparse.ArgumentParser = build_parser()
        for word in path.split():
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[word]
        return {o for a in parser._actions for o in a.option_strings}

    # Daemons and libvirt's hook log and print nothing (for `migrate begin` libvirt would
    # take the hook's stdout as the domain's new XML).
    quiet = {"northd", "agent", "libvirt-hook", "libvirt-watch"}
    assert [
        p for p in leaves(build_parser()) if p not in quiet and "--json" not in options(p)
    ] == []


def test_json_output_parses(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = ["--dir", str(short_tmp / "pki")]
    runs = [
        ["pki", "init", *pki, "--json"],
        ["pki", "issue", "chassis", "hv1", *pki, "--json"],
        ["pki", "list", *pki, "--json"],
        ["vhost", "qemu-args", "upstream.ovs-dpdk.v2.9", "--json"],
    ]
    for argv in runs:
        assert main(argv) == 0, argv
        json.loads(capsys.readouterr().out)
