"""The control socket: python-ovs's unixctl server, reached by ovs-appctl, by
runtime.unixctl and by `liveport ctl` (python-ovs's client)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from liveport.cli.main import main
from liveport.runtime import coverage, logs, unixctl
from liveport.runtime.control import CommandError, ControlServer, Reply, default_path

COUNTER = coverage.counter("test_control_event", "an event of this test")


@pytest.fixture
def server(short_tmp: Path) -> Iterator[ControlServer]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("info", short_tmp / "test.log")
    control = ControlServer(short_tmp / "t.ctl", "liveport-test", "9.9")
    stopped = threading.Event()
    control.on_exit = stopped.set

    def echo(args: Sequence[str]) -> Reply:
        if args and args[0] == "no":
            raise CommandError("no, not that")
        return Reply(" ".join(args), {"args": list(args)})

    control.register("test/echo", "[WORD...]", 0, 3, echo)
    control.start()
    control.stopped = stopped  # type: ignore[attr-defined]
    yield control
    control.close()
    current = logs.current()
    if current is not None:
        current.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_built_in_and_registered_commands(server: ControlServer) -> None:
    path = server.path
    assert unixctl.call(path, "version").strip() == "liveport-test (liveport) 9.9"
    assert unixctl.call(path, "test/echo", "a", "b").strip() == "a b"
    assert json.loads(unixctl.call(path, "test/echo", "--json", "a")) == {"args": ["a"]}
    help_text = unixctl.call(path, "help")
    for name in ("coverage/show", "vlog/set", "vlog/list", "vlog/reopen", "exit", "test/echo"):
        assert name in help_text
    assert "test/echo" in json.loads(unixctl.call(path, "help", "--json"))
    with pytest.raises(unixctl.UnixctlError, match="no, not that"):
        unixctl.call(path, "test/echo", "no")
    with pytest.raises(unixctl.UnixctlError, match=r"usage: test/echo \[WORD...\]"):
        unixctl.call(path, "test/echo", "1", "2", "3", "4")
    with pytest.raises(unixctl.UnixctlError, match="not a valid command"):
        unixctl.call(path, "nope")


def test_coverage_and_vlog(server: ControlServer) -> None:
    COUNTER.inc(3)
    shown = unixctl.call(server.path, "coverage/show")
    assert shown.startswith("Event coverage") and "test_control_event" in shown
    doc = json.loads(unixctl.call(server.path, "coverage/show", "--json"))
    assert {"name": "test_control_event", "total": 3}.items() <= next(
        d for d in doc if d["name"] == "test_control_event"
    ).items()
    assert unixctl.call(server.path, "vlog/set", "agent:file:dbg") == ""
    assert json.loads(unixctl.call(server.path, "vlog/list", "--json"))["agent"]["file"] == "dbg"
    with pytest.raises(unixctl.UnixctlError, match=r"unknown log level|console and file only"):
        unixctl.call(server.path, "vlog/set", "agent:syslog:dbg")
    assert unixctl.call(server.path, "vlog/reopen") == ""


def test_exit(server: ControlServer) -> None:
    unixctl.call(server.path, "exit")
    assert server.stopped.wait(5)  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("ovs-appctl") is None, reason="needs ovs-appctl")
def test_ovs_appctl_talks_to_it(server: ControlServer) -> None:
    result = subprocess.run(
        ["ovs-appctl", "-t", str(server.path), "test/echo", "hello"],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "hello")
    refused = subprocess.run(
        ["ovs-appctl", "-t", str(server.path), "test/echo", "no"],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    assert refused.returncode != 0 and "no, not that" in refused.stderr


def test_liveport_ctl(server: ControlServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--target", str(server.path), "test/echo", "x", "y"]) == 0
    assert capsys.readouterr().out == "x y\n"
    assert main(["ctl", "-t", str(server.path), "--json", "test/echo", "x"]) == 0
    assert json.loads(capsys.readouterr().out) == {"args": ["x"]}
    assert main(["ctl", "-t", str(server.path), "test/echo", "no"]) == 2
    assert capsys.readouterr().err == "liveport: error: test/echo: no, not that\n"


def test_liveport_ctl_targets(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEPORT_RUNDIR", str(short_tmp))
    assert main(["ctl", "--target", "northd", "version"]) == 4  # not running
    assert main(["ctl", "version"]) == 2  # which one?
    assert main(["ctl", "--target", "nope", "version"]) == 2
    assert main(["ctl", "--target", str(short_tmp / "gone.ctl"), "version"]) == 6


def test_default_path() -> None:
    assert default_path(Path("/run/liveport"), "liveport-agent", 42) == Path(
        "/run/liveport/liveport-agent.42.ctl"
    )
