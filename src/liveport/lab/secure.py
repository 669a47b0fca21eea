"""A secure lab (`lab up --secure`): TLS everywhere and the SB's RBAC, set up as an operator
would, on loopback ports.

What it adds to a plain lab:
- a PKI in DIR/pki (liveport.runtime.pki): server certificates for NB and SB, one for
  northd, one for the CMS, one per chassis (CN = chassis name);
- NB listens on pssl:NB_PORT (trusting the control CA only: no chassis can connect);
- SB listens on pssl:CONTROL_PORT with role liveport-control, trusting only the control CA
  (SB_Global.connections); an SB relay beside it (the chassis relay) listens on
  pssl:CHASSIS_PORT with role liveport-chassis, trusting only the chassis CA
  (SB_Global.chassis_connections), and forwards through the SB's unix socket; RBAC roles
  from liveport.model.security;
- northd connects to NB and to the SB control listener with its certificate, agents to the
  chassis listener with theirs, and lab clients (`liveport status --dir`, `lab.cms`) with the
  CMS certificate. The unix sockets stay for the lab's own tooling (the operator's access).

Clustered (`--secure --clustered`): every NB member listens on a port of its own; every SB
member has its own control listener, and beside each SB member runs a chassis relay of that
member (its member's unix socket first, the others once that one is gone), each on its own
chassis port, plus
`--relays N` chassis relays of the whole cluster. All members and relays share one host, so
each process reads its listener (with its role) from its own listener database
(ovsdb.server, ServerSpec.listeners) rather than from the SB's replicated Connection rows.
Clients get every port of a kind as one comma-separated remote.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveport.model.errors import Timeout
from liveport.model.security import CHASSIS_ROLE, CONTROL_ROLE
from liveport.runtime import pki

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LabTls:
    """The PKI and the TLS ports of a secure lab. Each port is one process' own listener:
    an NB server (or Raft member), an SB server or member (the control listeners), a chassis
    relay (the chassis listeners). Standalone labs have one of each."""

    pki_dir: str  # the PKI directory
    nb_ports: tuple[int, ...]
    sb_chassis_ports: tuple[int, ...]
    sb_control_ports: tuple[int, ...]

    @property
    def nb_port(self) -> int:
        return self.nb_ports[0]

    @property
    def sb_chassis_port(self) -> int:
        return self.sb_chassis_ports[0]

    @property
    def sb_control_port(self) -> int:
        return self.sb_control_ports[0]

    @property
    def nb_remote(self) -> str:
        return remotes(self.nb_ports)

    @property
    def sb_chassis_remote(self) -> str:
        return remotes(self.sb_chassis_ports)

    @property
    def sb_control_remote(self) -> str:
        return remotes(self.sb_control_ports)

    @property
    def ports(self) -> list[int]:
        return [*self.nb_ports, *self.sb_control_ports, *self.sb_chassis_ports]

    @property
    def nb_listener(self) -> str:
        return listener(self.nb_port)

    @property
    def sb_listeners(self) -> dict[str, str]:
        """A standalone SB's listeners (in SB_Global, as `liveport sb setup` sets them)."""
        return {
            listener(self.sb_chassis_port): CHASSIS_ROLE,
            listener(self.sb_control_port): CONTROL_ROLE,
        }

    def credentials(self, name: str) -> pki.Credentials:
        return pki.credentials(Path(self.pki_dir), name)

    def relay_credentials(self) -> pki.Credentials:
        return pki.relay_credentials(Path(self.pki_dir))

    def server_options(self, name: str) -> tuple[str, ...]:
        """ovsdb-server's TLS options for the server certificate `name` (nb or sb)."""
        creds = self.credentials(name)
        return (
            f"--private-key={creds.private_key}",
            f"--certificate={creds.certificate}",
            f"--ca-cert={creds.ca_cert}",
        )

    def client_args(self, name: str) -> list[str]:
        creds = self.credentials(name)
        return [
            "-p",
            str(creds.private_key),
            "-c",
            str(creds.certificate),
            "-C",
            str(creds.ca_cert),
        ]

    def client_env(self) -> dict[str, str]:
        """What a CMS-side client of the lab (liveport, ovn-nbctl) needs."""
        cms = self.credentials("cms")
        return {
            "OVN_NB_DB": self.nb_remote,
            "LIVEPORT_NB_DB": self.nb_remote,
            "LIVEPORT_SB_DB": self.sb_control_remote,
            "LIVEPORT_PRIVATE_KEY": str(cms.private_key),
            "LIVEPORT_CERTIFICATE": str(cms.certificate),
            "LIVEPORT_CA_CERT": str(cms.ca_cert),
            "OVN_NBCTL_OPTIONS": " ".join(
                [f"-p {cms.private_key}", f"-c {cms.certificate}", f"-C {cms.ca_cert}"]
            ),
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LabTls:
        return cls(
            str(doc["pki_dir"]),
            tuple(int(p) for p in doc["nb_ports"]),
            tuple(int(p) for p in doc["sb_chassis_ports"]),
            tuple(int(p) for p in doc["sb_control_ports"]),
        )


def listener(port: int) -> str:
    return f"pssl:{port}:{LOOPBACK}"


def remotes(ports: tuple[int, ...]) -> str:
    return ",".join(f"ssl:{LOOPBACK}:{port}" for port in ports)


def prepare(directory: Path, chassis: list[str], members: int = 0, relays: int = 0) -> LabTls:
    """Creates the lab's PKI and picks its ports: one per NB and SB server (every member of
    a cluster), and one per chassis relay (one beside each SB member, plus `relays`)."""
    root = directory / "pki"
    pki.init(root)
    pki.issue(root, "server", "nb")
    pki.issue(root, "server", "sb")
    pki.issue(root, "northd", "northd")
    pki.issue(root, "cms", "cms")
    for name in chassis:
        pki.issue(root, "chassis", name)
    servers = max(1, members)
    chassis_relays = servers + relays if members else 1
    ports = free_ports(2 * servers + chassis_relays)
    return LabTls(
        str(root),
        tuple(ports[:servers]),
        tuple(ports[2 * servers :]),
        tuple(ports[servers : 2 * servers]),
    )


def wait_listening(ports: list[int], timeout: float) -> None:
    """Waits until every loopback TCP port accepts connections (a relay listens only once
    it has the data it relays)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise Timeout(
                        f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f}s"
                    ) from None
                time.sleep(0.01)


def free_ports(count: int) -> list[int]:
    """Loopback TCP ports that are free right now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]
