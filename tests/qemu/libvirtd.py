"""Real libvirtd instances on one machine, each standing for one hypervisor host.

A root libvirtd always uses /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt
and /var/log/libvirt (two daemons sharing them fail on the QEMU driver's pid file), so each
runs in its own mount namespace (`unshare -m`, private propagation) with those directories
bind-mounted from its own directory, its own unix socket directory and host UUID, and only
the QEMU driver loaded (LIBVIRT_DRIVER_DIR holds a link to it). qemu.conf: no security
driver, root, no cgroups or namespaces, QEMU's output in files (no virtlogd). Its qemu hook
runs liveport's (`python -m liveport.cli.virt hook`) against the host's lab chassis.

Everything lives in one /tmp/libvirt-* directory. close() destroys the domains still
running, stops every QEMU, watcher and libvirtd it started by PID (SIGTERM, then SIGKILL),
and checks that they are gone. Nothing here talks to anything but unix sockets and
127.0.0.1; QEMU's NICs are vhost-user.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import liveport

from .harness import MEMORY_MB, Guest

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU_DRIVER = Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so")
# The directories a root libvirtd uses, each bind-mounted from the daemon's own directory.
MOUNTS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
SRC = Path(liveport.__file__).resolve().parents[1]


def missing() -> str | None:
    """Why libvirt cannot run here, or None."""
    if not Path(LIBVIRTD).is_file() or not QEMU_DRIVER.is_file():
        return "libvirtd with its QEMU driver is not installed (scripts/setup.sh installs it)"
    if shutil.which("virsh") is None:
        return "virsh is not installed (libvirt-clients)"
    try:
        import libvirt  # noqa: F401, PLC0415
    except ImportError:
        return "python3-libvirt is not installed"
    if os.geteuid() != 0:
        return "two system libvirtd instances need root (mount namespaces)"
    return None


def _stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL; a process we started, by PID."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Libvirtd:
    """One libvirtd standing for one host (a lab chassis)."""

    name: str
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.directory}/sock/libvirt-sock"

    def virsh(
        self, *args: str, timeout: float = 180.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"virsh {' '.join(args)} on {self.name}: {result.stderr.strip()}\n{self.log_tail()}"
            )
        return result

    def log_tail(self) -> str:
        try:
            return "\n".join((self.directory / "libvirtd.log").read_text().splitlines()[-10:])
        except FileNotFoundError:
            return ""

    def qemu_pids(self) -> list[int]:
        pids = []
        for pidfile in (self.directory / "run" / "qemu").glob("*.pid"):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pids.append(int(pidfile.read_text().strip()))
        return [p for p in pids if _alive(p)]

    def hook_log(self) -> str:
        try:
            return (self.directory / "hook.log").read_text()
        except FileNotFoundError:
            return ""


@dataclass
class Watcher:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""


@dataclass
class LibvirtRig:
    guest: Guest
    directory: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="libvirt-", dir="/tmp"))
    )
    daemons: list[Libvirtd] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)

    def daemon(self, name: str, host_uuid: str, ovs_db: str) -> Libvirtd:
        """Starts libvirtd NAME whose qemu hook marks (and plugs) VIFs in ovs_db."""
        d = self.directory / name
        for sub in (*MOUNTS, "sock", "drivers"):
            (d / sub).mkdir(parents=True)
        (d / "drivers" / QEMU_DRIVER.name).symlink_to(QEMU_DRIVER)
        (d / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{d}/sock"\n'
            'auth_unix_ro = "none"\nauth_unix_rw = "none"\n'
            f'host_uuid = "{host_uuid}"\n'
            f'log_outputs = "3:file:{d}/libvirtd.log"\n'
        )
        (d / "etc" / "qemu.conf").write_text(
            'stdio_handler = "file"\nsecurity_driver = "none"\n'
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
            "cgroup_controllers = [ ]\nnamespaces = [ ]\n"
        )
        hooks = d / "etc" / "hooks"
        hooks.mkdir()
        # libvirtd gives its hooks a fixed environment: say everything on the command line.
        command = [
            "env",
            f"PYTHONPATH={SRC}",
            sys.executable,
            "-m",
            "liveport.cli.virt",
            "hook",
            "--ovs-db",
            ovs_db,
            "--plug-type",
            "dummy",
            "--log-file",
            str(d / "hook.log"),
        ]
        (hooks / "qemu").write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
        (hooks / "qemu").chmod(0o755)
        for target in MOUNTS.values():
            Path(target).mkdir(parents=True, exist_ok=True)  # mount points (libvirt's own)
        binds = " && ".join(f"mount --bind {d / sub} {target}" for sub, target in MOUNTS.items())
        script = (
            f"{binds} && exec env LIBVIRT_DRIVER_DIR={d / 'drivers'} {LIBVIRTD} "
            f"-f /etc/libvirt/libvirtd.conf -p {d / 'libvirtd.pid'}"
        )
        with (d / "stdout.log").open("wb") as out:
            # unshare and sh exec: the PID is libvirtd's.
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        daemon = Libvirtd(name, d, proc)
        self.daemons.append(daemon)
        deadline = time.monotonic() + 60
        while daemon.virsh("version", check=False, timeout=30).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"libvirtd {name} did not come up: {(d / 'stdout.log').read_text()}"
                    f"\n{daemon.log_tail()}"
                )
            time.sleep(0.2)
        return daemon

    def watcher(self, daemon: Libvirtd, ovs_db: str, hold: float = 2.0) -> Watcher:
        """Starts `liveport libvirt-watch` for daemon and waits until it follows it."""
        log = daemon.directory / "watch.log"
        argv = [sys.executable, "-m", "liveport.cli.virt", "watch", "--connect", daemon.uri]
        argv += ["--ovs-db", ovs_db, "--hold", str(hold), "--log-file", str(log)]
        with (daemon.directory / "watch.out").open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, "PYTHONPATH": str(SRC)},
            )
        watcher = Watcher(proc, log)
        self.watchers.append(watcher)
        deadline = time.monotonic() + 60
        while "libvirt-watch: following" not in watcher.text():
            if proc.poll() is not None or time.monotonic() > deadline:
                out_text = (daemon.directory / "watch.out").read_text()
                raise AssertionError(f"libvirt-watch did not start: {out_text}{watcher.text()}")
            time.sleep(0.1)
        return watcher

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                listed = daemon.virsh("list", "--name", check=False, timeout=60).stdout
                for name in listed.split():
                    daemon.virsh("destroy", name, check=False, timeout=60)
        qemus = [pid for daemon in self.daemons for pid in daemon.qemu_pids()]
        for pid in qemus:
            _stop(pid)
        for watcher in self.watchers:
            _stop(watcher.proc.pid)
            watcher.proc.wait()
        for daemon in self.daemons:
            _stop(daemon.proc.pid)
            daemon.proc.wait()
        leftovers = [p for p in qemus if _alive(p)]
        leftovers += [w.proc.pid for w in self.watchers if w.proc.poll() is None]
        leftovers += [d.proc.pid for d in self.daemons if d.proc.poll() is None]
        if os.environ.get("LIVEPORT_KEEP_QEMU_DIR") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)
        assert not leftovers, f"processes still running: {leftovers}"


METADATA_NS = "urn:liveport:libvirt:1"


def domain_xml(
    guest: Guest,
    *,
    name: str,
    uuid: str,
    mac: str,
    iface_id: str,
    dev: str,
    socket_path: Path,
    serial: Path,
    vhost_compat: str | None = None,
) -> str:
    """A TCG guest whose one NIC is vhost-user (QEMU the socket's client, reconnecting), with
    liveport's metadata naming its iface-id as Nova's port would. `vectors=0` through
    <qemu:override>: QEMU 7.2 under TCG crashes in vhost_net_start with MSI-X on."""
    compat = f" vhost-compat='{vhost_compat}'" if vhost_compat else ""
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <liveport:vifs xmlns:liveport='{METADATA_NS}'>
      <liveport:vif dev='{dev}' mac='{mac}' iface-id='{iface_id}'{compat}/>
    </liveport:vifs>
  </metadata>
  <memory unit='MiB'>{MEMORY_MB}</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel>
    <initrd>{guest.initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <interface type='vhostuser'>
      <mac address='{mac}'/>
      <source type='unix' path='{socket_path}' mode='client'>
        <reconnect enabled='yes' timeout='1'/>
      </source>
      <target dev='{dev}'/>
      <model type='virtio'/>
      <alias name='ua-net0'/>
    </interface>
    <serial type='file'>
      <source path='{serial}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>
        <qemu:property name='vectors' type='unsigned' value='0'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
"""
