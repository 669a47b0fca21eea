"""Checks shared by lab tests: which processes and sockets of a directory still exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from liveport.lab import lab
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
    """ovn-nbctl against the lab's NB as its CMS would reach it (over TLS with the CMS
    certificate in a secure lab); fails the test on error."""
    result = subprocess.run(
        ["ovn-nbctl", f"--timeout={int(timeout)}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout + 5,
        env={**os.environ, **lab.client_env(directory)},
    )
    if result.returncode != 0:
        raise AssertionError(f"ovn-nbctl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def dump_flows(directory: Path, chassis: str) -> list[str]:
    """br-int flows without statistics, port numbers replaced by port names, sorted (OVN's
    strip_duration/strip_stats idea): comparable across restarts and across labs, whose
    tunnel ports may have been numbered in another order. (ovs-ofctl --names leaves some
    outputs numeric, so the names are substituted here.)"""
    mgmt = f"unix:{directory}/{chassis}/br-int.mgmt"

    def ofctl(*args: str) -> str:
        return subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", *args, mgmt],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    names = dict(re.findall(r"^\s*(\d+)\(([^)]+)\):", ofctl("dump-ports-desc"), re.M))
    out = ofctl("--no-stats", "--no-names", "dump-flows")

    def named(match: re.Match[str]) -> str:
        number = str(match.group(2))
        return f"{match.group(1)}{names.get(number, number)}"

    return sorted(
        re.sub(r"(in_port=|output:)(\d+)", named, line.strip())
        for line in out.splitlines()
        if "cookie=" in line
    )
