"""Daemon options with OVS's meanings, on a daemon that does nothing else
(tests/unit/service_main.py): --detach returns once the control socket is there, the
pidfile is locked and refuses a second instance, SIGHUP reopens the log, `exit` stops it
and it cleans up after itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.runtime import daemon, unixctl
from liveport.runtime.process import is_alive

ROOT = Path(__file__).parents[2]


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.unit.service_main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
    )


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """PIDs to kill at the end, whatever happened."""
    started: list[int] = []
    yield started
    for pid in started:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_until(what: str, predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.01)


def test_detach_pidfile_reopen_exit(short_tmp: Path, pids: list[int]) -> None:
    pidfile, ctl, log = short_tmp / "t.pid", short_tmp / "t.ctl", short_tmp / "t.log"
    options = [f"--pidfile={pidfile}", f"--log-file={log}", f"--unixctl={ctl}", "--detach"]
    result = start(*options)
    assert result.returncode == 0, result.stderr
    assert ctl.is_socket()  # --detach returned once the control socket listens
    pid = int(pidfile.read_text())
    pids.append(pid)
    assert is_alive(pid) and daemon.running_pid(pidfile) == pid
    assert os.readlink(f"/proc/{pid}/cwd") == "/"  # chdir / without --no-chdir
    assert os.getsid(pid) == pid  # its own session

    second = start(*options)
    assert second.returncode == 5  # conflict
    assert (
        second.stderr
        == f"liveport-test: error: {pidfile}: already running as pid {pid}, aborting\n"
    )
    assert ctl.is_socket() and daemon.running_pid(pidfile) == pid

    log.rename(short_tmp / "t.log.1")
    os.kill(pid, signal.SIGHUP)
    wait_until("log reopened", lambda: log.exists() and "reopened" in log.read_text())
    unixctl.call(ctl, "vlog/reopen")

    unixctl.call(ctl, "exit")
    wait_until("the daemon gone", lambda: not is_alive(pid))
    assert not pidfile.exists() and not ctl.exists()
    assert "stopping" in log.read_text()


def test_sigterm_stops_a_foreground_daemon(short_tmp: Path, pids: list[int]) -> None:
    pidfile, ctl = short_tmp / "f.pid", short_tmp / "f.ctl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.service_main",
            f"--pidfile={pidfile}",
            "--unixctl",
            str(ctl),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stderr=subprocess.PIPE,
        text=True,
    )
    pids.append(proc.pid)
    wait_until("the control socket", ctl.is_socket)
    assert daemon.running_pid(pidfile) == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    assert "working" in proc.stderr.read()  # without --log-file it logs to stderr
    assert not pidfile.exists() and not ctl.exists()


def test_a_detached_daemon_that_cannot_start_says_why(short_tmp: Path) -> None:
    blocked = short_tmp / "file"
    blocked.write_text("")
    result = start("--detach", f"--unixctl={blocked}/x.ctl", f"--pidfile={short_tmp}/b.pid")
    assert result.returncode == 6  # unavailable: the control socket cannot be created
    assert result.stderr.startswith(f"liveport-test: error: cannot create {blocked}")
    assert result.stderr.count("\n") == 1
    assert not (short_tmp / "b.pid").exists()


def test_overwrite_pidfile_skips_the_check(short_tmp: Path, pids: list[int]) -> None:
    pidfile = short_tmp / "o.pid"
    first = start("--detach", f"--pidfile={pidfile}", f"--unixctl={short_tmp}/o1.ctl")
    assert first.returncode == 0, first.stderr
    pids.append(int(pidfile.read_text()))
    second = start(
        "--detach", "--overwrite-pidfile", f"--pidfile={pidfile}", f"--unixctl={short_tmp}/o2.ctl"
    )
    assert second.returncode == 0, second.stderr
    pids.append(int(pidfile.read_text()))
    assert pids[0] != pids[1] and daemon.running_pid(pidfile) == pids[1]
    for ctl in ("o1.ctl", "o2.ctl"):
        unixctl.call(short_tmp / ctl, "exit")
    wait_until("both gone", lambda: not any(is_alive(p) for p in pids))


def test_default_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"LIVEPORT_RUNDIR": "/tmp/r", "LIVEPORT_LOGDIR": "/tmp/l"}
    assert daemon.default_pidfile("liveport-agent", env) == Path("/tmp/r/liveport-agent.pid")
    assert daemon.default_log_file("liveport-agent", env) == Path("/tmp/l/liveport-agent.log")
    assert daemon.rundir({}) == Path("/run/liveport")
    assert daemon.logdir({}) == Path("/var/log/liveport")
