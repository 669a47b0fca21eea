"""Real QEMU on liveport's vhost-user back-end: launching, watching and stopping VMs.

A Rig owns one short /tmp directory and everything started in it: liveport back-ends
(in-process, or as `python -m liveport.vhostuser.backend` subprocesses) and QEMUs. It stops
each by the PID it started, never by name, and checks that they are gone.

QEMU runs under TCG with the choices measured in /work/shared/reference/qemu-notes.md:
memfd shared memory (vhost-user needs fds for guest RAM), `vectors=0` on virtio-net-pci
(QEMU 7.2 segfaults in vhost_net_start under TCG when MSI-X is on), no network, the guest's
serial console in a file, QMP on a unix socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.model import virtio
from liveport.vhostuser.backend import VhostUserBackend

from .qmp import QMP, QMPError

QEMU = "qemu-system-x86_64"
MEMORY_MB = 128
FEATURES_LINE = re.compile(r"GUEST_VIRTIO_FEATURES=([01]{64})")
HEARTBEAT = re.compile(r"GUEST_HEARTBEAT (\d+)")
# A TCG guest boots in seconds on a quiet machine; on a loaded one (other labs beside the
# tests) its kernel can starve for a minute. Waits return as soon as the line appears.
GUEST_TIMEOUT = 120.0
#: The destination's complaint when the guest acknowledged features it cannot offer.
UNSUPPORTED = re.compile(r"Features 0x([0-9a-f]+) unsupported\. Allowed features: 0x([0-9a-f]+)")


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path


@dataclass
class Vm:
    """One QEMU process and its files."""

    name: str
    proc: subprocess.Popen[bytes]
    qmp: QMP
    serial: Path
    stderr: Path
    argv: list[str]

    def serial_text(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self) -> str:
        try:
            return self.stderr.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_serial(
        self, pattern: re.Pattern[str], timeout: float = GUEST_TIMEOUT
    ) -> re.Match[str]:
        """The first match of pattern in the serial log, waiting for it to appear."""
        return self.wait_serial_where(pattern, lambda match: True, timeout)

    def wait_serial_where(
        self,
        pattern: re.Pattern[str],
        accept: Callable[[re.Match[str]], bool],
        timeout: float = GUEST_TIMEOUT,
    ) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for match in pattern.finditer(self.serial_text()):
                if accept(match):
                    return match
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) before {pattern.pattern!r}: "
                    f"{self.stderr_text().strip()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {pattern.pattern!r} in {timeout} s; serial tail: "
                    f"{self.serial_text()[-500:]!r}"
                )
            time.sleep(0.02)

    def guest_features(self, timeout: float = GUEST_TIMEOUT) -> int:
        """The feature bits the guest driver negotiated, from its console line."""
        bits = self.wait_serial(FEATURES_LINE, timeout).group(1)
        return sum(1 << i for i, char in enumerate(bits) if char == "1")

    def last_heartbeat(self) -> int:
        beats = HEARTBEAT.findall(self.serial_text())
        return int(beats[-1]) if beats else 0

    def status(self) -> str:
        result = self.qmp.execute("query-status")
        return str(result["status"])

    def wait_status(self, wanted: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.status()) != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is {status!r}, not {wanted!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stops this QEMU by PID: SIGTERM, then SIGKILL after 5 s."""
        with contextlib.suppress(Exception):
            self.qmp.close()
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stops a process this harness started, by PID: SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class MigrationResult:
    status: str
    query: dict[str, Any]
    seconds: float


@dataclass
class BackendProcess:
    """A back-end run as `python -m liveport.vhostuser.backend` with a state file."""

    proc: subprocess.Popen[bytes]
    state_file: Path
    log: Path

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def wait_state(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not predicate(state := self.state()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"back-end state never matched: {state}; log: {self.log.read_text()}"
                )
            time.sleep(0.02)
        return state

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Rig:
    """Back-ends and VMs of one test, all in one short directory, all stopped at the end."""

    guest: Guest
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lpq-")))
    vms: list[Vm] = field(default_factory=list)
    backends: list[VhostUserBackend] = field(default_factory=list)
    processes: list[BackendProcess] = field(default_factory=list)
    rarps: dict[str, list[str]] = field(default_factory=dict)

    def backend(self, name: str, mode: virtio.Mode, *, client: bool = False) -> VhostUserBackend:
        """An in-process back-end on <dir>/<name>.sock; its RARPs land in rarps[name]."""
        heard = self.rarps.setdefault(name, [])
        backend = VhostUserBackend(
            mode, self.directory / f"{name}.sock", client=client, port=name, on_rarp=heard.append
        )
        self.backends.append(backend)
        backend.start()
        return backend

    def backend_process(
        self,
        name: str,
        mode: virtio.Mode,
        *,
        client: bool = False,
        env: dict[str, str] | None = None,
    ) -> BackendProcess:
        """`python -m liveport.vhostuser.backend` on <dir>/<name>.sock, with a state file."""
        state_file = self.directory / f"{name}.state.json"
        log = self.directory / f"{name}.log"
        argv = [
            sys.executable,
            "-m",
            "liveport.vhostuser.backend",
            "--socket",
            str(self.directory / f"{name}.sock"),
            "--mode",
            mode.name,
            "--state-file",
            str(state_file),
            "--port",
            name,
        ]
        if client:
            argv.append("--client")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, **(env or {})},
            )
        process = BackendProcess(proc, state_file, log)
        self.processes.append(process)
        return process

    def qemu(
        self,
        name: str,
        socket_name: str,
        *,
        mac: str = "52:54:00:12:34:56",
        server: bool = False,
        incoming: bool = False,
        append: str = "",
        nic_args: str = "",
    ) -> Vm:
        """Starts QEMU with its NIC on <dir>/<socket_name>.sock: QEMU listens if server, else
        it connects and reconnects within a second when the back-end goes away. append
        goes on the guest kernel's command line (the guest's lp.* network settings),
        nic_args on virtio-net-pci's (front-end properties, `liveport vhost qemu-args`)."""
        sock = self.directory / f"{socket_name}.sock"
        serial = self.directory / f"{name}.serial"
        stderr = self.directory / f"{name}.stderr"
        qmp_path = self.directory / f"{name}.qmp"
        chardev = f"socket,id=vu,path={sock}" + (",server=on" if server else ",reconnect=1")
        argv = [
            QEMU,
            "-name", name,
            "-machine", "pc",
            "-accel", "tcg",
            "-m", f"{MEMORY_MB}M",
            "-object", f"memory-backend-memfd,id=ram,size={MEMORY_MB}M,share=on",
            "-numa", "node,memdev=ram",
            "-nodefaults", "-display", "none", "-no-reboot", "-no-user-config",
            "-chardev", chardev,
            "-netdev", "vhost-user,id=net0,chardev=vu",
            "-device",
            f"virtio-net-pci,netdev=net0,id=nic0,mac={mac},vectors=0"
            + (f",{nic_args}" if nic_args else ""),
            "-kernel", str(self.guest.kernel),
            "-initrd", str(self.guest.initrd),
            "-append", f"console=ttyS0 panic=-1 quiet {append}".strip(),
            "-serial", f"file:{serial}",
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
        ]  # fmt: skip
        if incoming:
            argv += ["-incoming", "defer"]
        with stderr.open("wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            qmp = QMP(qmp_path, timeout=15)
        except (OSError, QMPError):
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name}: QMP never came up: {stderr.read_text()}") from None
        vm = Vm(name, proc, qmp, serial, stderr, argv)
        self.vms.append(vm)
        return vm

    def migrate(self, source: Vm, destination: Vm, timeout: float = 30.0) -> MigrationResult:
        """Live-migrates over a unix socket with return-path on both sides; returns the
        source's final query-migrate."""
        capabilities = [
            {"capability": "return-path", "state": True},
            {"capability": "events", "state": True},
        ]
        for vm in (source, destination):
            vm.qmp.execute("migrate-set-capabilities", capabilities=capabilities)
        source.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 8 << 30})
        uri = f"unix:{self.directory / 'migration.sock'}"
        destination.qmp.execute("migrate-incoming", uri=uri)
        started = time.monotonic()
        source.qmp.execute("migrate", uri=uri)
        final = ("completed", "failed", "cancelled")
        event = source.qmp.wait_event(
            "MIGRATION", lambda data: data.get("status") in final, timeout
        )
        seconds = time.monotonic() - started
        query = source.qmp.execute("query-migrate")
        assert query["status"] == event["data"]["status"], (query, event)
        return MigrationResult(str(query["status"]), query, seconds)

    def close(self) -> None:
        """Stops every VM and back-end this rig started, by PID, and removes the directory."""
        for vm in self.vms:
            vm.stop()
        for process in self.processes:
            process.stop()
        for backend in self.backends:
            backend.stop()
        leftovers = [vm.proc.pid for vm in self.vms if vm.proc.poll() is None]
        leftovers += [p.proc.pid for p in self.processes if p.proc.poll() is None]
        if os.environ.get("LIVEPORT_KEEP_QEMU_DIR") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)
        assert not leftovers, f"processes still running: {leftovers}"
