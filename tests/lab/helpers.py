"""Checks shared by lab tests: which processes and sockets of a directory still exist."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from liveport.runtime.process import cmdline, is_alive

LIVEPORT = [sys.executable, "-m", "liveport.cli.main"]


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line mentions marker."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(os.getpid()):
            pid = int(entry)
            text = cmdline(pid)
            if marker in text and is_alive(pid):
                out.append((pid, text))
    return out


def unix_sockets_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return [line.split()[-1] for line in lines if line.split()[-1].startswith(prefix)]


def kernel_links() -> set[str]:
    result = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines()}


def wait_for_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.001)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIVEPORT, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def nbctl(directory: Path, *args: str, timeout: float = 20.0) -> str:
    """ovn-nbctl against the lab's NB; fails the test on error."""
    result = subprocess.run(
        ["ovn-nbctl", f"--db=unix:{directory}/nb/nb.sock", f"--timeout={int(timeout)}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout + 5,
    )
    if result.returncode != 0:
        raise AssertionError(f"ovn-nbctl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def dump_flows(directory: Path, chassis: str) -> list[str]:
    """br-int flows without statistics, sorted (OVN's strip_duration/strip_stats idea)."""
    out = subprocess.run(
        [
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "--no-stats",
            "dump-flows",
            f"unix:{directory}/{chassis}/br-int.mgmt",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)
