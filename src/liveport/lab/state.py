"""The lab's state file (lab.json): what was started, where, and which VMs and external
hosts exist.

Format 2 added the top-of-rack switch (options["tor"]), external hosts and the chassis'
host names; a format-1 file (a lab made before) is still read, as a lab without a ToR.

The file is written before any process starts and updated under an exclusive lock with an
atomic rename, so a lab interrupted at any point can still be found and torn down, and two
commands editing the same lab never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liveport.model.errors import InvalidInput, NotFound
from liveport.runtime.process import DaemonRef

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
FORMAT_VERSION = 2
OLDEST_VERSION = 1


class NotALab(NotFound):
    pass


@dataclass
class DaemonEntry:
    role: str
    pidfile: str

    def ref(self, marker: str) -> DaemonRef:
        return DaemonRef(role=self.role, pidfile=Path(self.pidfile), marker=marker)


@dataclass
class ChassisEntry:
    name: str
    index: int
    encap_ip: str
    underlay_mac: str
    directory: str
    hostname: str = ""  # external_ids:hostname (empty in labs of format 1: the name)

    @property
    def db_socket(self) -> str:
        return f"{self.directory}/db.sock"

    @property
    def vswitchd_ctl(self) -> str:
        return f"{self.directory}/vswitchd.ctl"

    @property
    def mgmt_socket(self) -> str:
        return f"{self.directory}/br-int.mgmt"


@dataclass
class VifEntry:
    chassis: str
    ifname: str
    bridge: str
    tx_pcap: str
    rx_pcap: str


@dataclass
class VmEntry:
    name: str
    port: str
    mac: str
    ips: list[str]
    vifs: list[VifEntry] = field(default_factory=list)
    # VIFs that were unplugged (e.g. the source after a migration); their captures remain.
    unplugged: list[VifEntry] = field(default_factory=list)

    def vif_on(self, chassis: str) -> VifEntry | None:
        for vif in self.vifs:
            if vif.chassis == chassis:
                return vif
        return None


@dataclass
class HostEntry:
    """An external host plugged into an access port of the top-of-rack switch."""

    name: str
    mac: str
    addresses: list[str]  # IP/plen
    vlan: int | None  # the access port's VLAN; None: untagged
    ifname: str  # the ToR port
    tx_pcap: str  # what the host received
    rx_pcap: str  # what it sent

    @property
    def ips(self) -> list[str]:
        return [text.split("/")[0] for text in self.addresses]


@dataclass
class LabState:
    directory: str
    status: str  # starting | up | stopping
    created: float
    engine: str = "liveport"
    options: dict[str, Any] = field(default_factory=dict)
    daemons: list[DaemonEntry] = field(default_factory=list)
    chassis: list[ChassisEntry] = field(default_factory=list)
    vms: dict[str, VmEntry] = field(default_factory=dict)
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def marker(self) -> str:
        """Must appear in the command line of every process of this lab."""
        return self.directory.rstrip("/") + "/"

    def daemon_refs(self) -> list[DaemonRef]:
        return [entry.ref(self.marker) for entry in self.daemons]

    def get_chassis(self, name: str) -> ChassisEntry:
        for entry in self.chassis:
            if entry.name == name:
                return entry
        known = ", ".join(c.name for c in self.chassis) or "none"
        raise NotFound(f"unknown chassis {name!r} (this lab has: {known})")

    def get_vm(self, name: str) -> VmEntry:
        try:
            return self.vms[name]
        except KeyError:
            raise NotFound(f"unknown VM {name!r}") from None

    def get_host(self, name: str) -> HostEntry:
        try:
            return self.hosts[name]
        except KeyError:
            raise NotFound(f"unknown host {name!r}") from None

    def get_endpoint(self, name: str) -> VmEntry | HostEntry:
        """A VM or an external host by name (the two share one namespace)."""
        if name in self.vms:
            return self.vms[name]
        if name in self.hosts:
            return self.hosts[name]
        raise NotFound(f"unknown VM {name!r} (and no external host of that name)")

    @property
    def has_tor(self) -> bool:
        """False for a lab made before the top-of-rack switch existed."""
        return "tor" in self.options

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LabState:
        vms = {
            name: VmEntry(
                name=vm["name"],
                port=vm["port"],
                mac=vm["mac"],
                ips=list(vm["ips"]),
                vifs=[VifEntry(**vif) for vif in vm.get("vifs", [])],
                unplugged=[VifEntry(**vif) for vif in vm.get("unplugged", [])],
            )
            for name, vm in doc.get("vms", {}).items()
        }
        version = int(doc.get("version", OLDEST_VERSION))
        if version > FORMAT_VERSION:
            raise InvalidInput(
                f"lab.json is of format {version}, newer than this liveport reads "
                f"({FORMAT_VERSION}): use the liveport that made the lab"
            )
        hosts = {name: HostEntry(**host) for name, host in doc.get("hosts", {}).items()}
        return cls(
            directory=doc["directory"],
            status=doc["status"],
            created=doc["created"],
            engine=doc.get("engine", "liveport"),
            options=dict(doc.get("options", {})),
            daemons=[DaemonEntry(**d) for d in doc.get("daemons", [])],
            chassis=[ChassisEntry(**c) for c in doc.get("chassis", [])],
            vms=vms,
            hosts=hosts,
            version=version,
        )


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def is_lab(directory: Path) -> bool:
    return state_path(directory).is_file()


def load(directory: Path) -> LabState:
    path = state_path(directory)
    if not directory.exists():
        raise NotALab(f"no lab at {directory} (the directory does not exist)")
    if not path.is_file():
        raise NotALab(f"{directory} is not a liveport lab (no {STATE_FILE})")
    try:
        doc = json.loads(path.read_text())
        return LabState.from_json(doc)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path} is damaged: {exc}") from None


def save(state: LabState) -> None:
    path = state_path(Path(state.directory))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialises commands that read-modify-write the same lab's state."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def editing(directory: Path) -> Iterator[LabState]:
    """Loads the state under the lock, yields it for changes, saves it on success."""
    with locked(directory):
        state = load(directory)
        yield state
        save(state)
