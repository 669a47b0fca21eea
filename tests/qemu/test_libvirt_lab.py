"""`virsh migrate` between two real libvirtd instances moves a lab port (M6), with liveport's
qemu hook and event watcher on each host and nothing else telling anybody.

Each libvirtd stands for one lab chassis (hv1, hv2): its qemu hook plugs the guest's
vhost-user VIF into that chassis' Open_vSwitch database from the domain's metadata (libvirt
9.0 refuses <virtualport> on vhost-user interfaces, so it cannot plug them itself) and marks
it `incoming` when the domain migrates there; its watcher marks the source `outgoing` from
libvirt's events and clears the statuses when the migration ends. The agent on each chassis
serves the VIF's socket with liveport's back-end; the guest's mode lacks GUEST_ANNOUNCE, so
after the switch-over QEMU asks hv2's back-end to announce it (SEND_RARP), which activates
the port on hv2.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import pytest

from liveport.cms.migrate import Cms
from liveport.lab import lab
from liveport.lab.watch import BindingWatch
from liveport.ovsdb.rows import Snapshot
from liveport.vhostuser.catalogue import CATALOGUE_ENV

from .conftest import NO_ANNOUNCE
from .harness import Guest
from .libvirtd import Libvirtd, LibvirtRig, domain_xml, free_port, missing
from tests.conftest import LabFactory
from tests.lab.helpers import nbctl

pytestmark = [pytest.mark.qemu, pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(420)]

MAC = "52:54:00:12:34:56"
PORT = "7c1f0d6e-5a3b-4c2d-9e8f-0123456789ab"  # a Neutron port's UUID is Nova's iface-id
DOMAIN = "vm1"
DOMAIN_UUID = "0d9c2e4a-8b7f-4e6d-a5c3-b2a190817263"
T = TypeVar("T")
DEV = "vhu7c1f0d6e-5a"  # os-vif names vhost-user ports vhu + the port ID's first 11 characters
PB_COLUMNS = ["logical_port", "chassis", "migration_destination", "requested_chassis"]


@dataclass
class Hosts:
    directory: Path  # the lab
    rig: LibvirtRig
    hv1: Libvirtd
    hv2: Libvirtd
    guest: Guest

    def ovs_db(self, chassis: str) -> str:
        return f"unix:{self.directory / chassis / 'conf.sock'}"

    def xml(self, chassis: str) -> Path:
        """The domain as Nova would define it on chassis: the socket is that host's."""
        path = self.rig.directory / f"{DOMAIN}-{chassis}.xml"
        path.write_text(
            domain_xml(
                self.guest,
                name=DOMAIN,
                uuid=DOMAIN_UUID,
                mac=MAC,
                iface_id=PORT,
                dev=DEV,
                socket_path=self.rig.directory / f"{chassis}-{DEV}.sock",
                serial=self.rig.directory / f"{DOMAIN}.serial",
                vhost_compat=NO_ANNOUNCE,
            )
        )
        return path

    def migrate_argv(self) -> list[str]:
        """`virsh migrate` from hv1 to hv2 over loopback, with the destination's domain XML
        (as Nova passes it: its vhost-user socket is the destination host's)."""
        return [
            "virsh", "-c", self.hv1.uri, "migrate", "--live", "--p2p", DOMAIN, self.hv2.uri,
            "--migrateuri", f"tcp://127.0.0.1:{free_port()}", "--listen-address", "127.0.0.1",
            "--xml", str(self.xml("hv2")),
        ]  # fmt: skip

    def interface(self, chassis: str) -> dict[str, str] | None:
        """external_ids of the VIF's Interface on chassis (None: not plugged)."""
        host = lab.Layout(self.directory).chassis(chassis)
        out = host.vsctl(
            "--format=json", "--columns=external_ids", "find", "Interface", f"name={DEV}"
        )
        rows = json.loads(out)["data"]
        return dict(rows[0][0][1]) if rows else None


@pytest.fixture
def hosts(
    lab_factory: LabFactory,
    catalogue_file: Path,
    guest: Guest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Hosts]:
    why = missing()
    if why is not None:
        pytest.skip(why)
    monkeypatch.setenv(CATALOGUE_ENV, str(catalogue_file))  # the agents offer NO_ANNOUNCE
    d = lab_factory(chassis=2)
    nbctl(d, "ls-add", "ls0", "--", "lsp-add", "ls0", PORT)
    nbctl(d, "lsp-set-addresses", PORT, f"{MAC} 10.0.0.1")
    rig = LibvirtRig(guest)
    try:
        hv1 = rig.daemon("hv1", "11111111-1111-4111-8111-111111111111", f"unix:{d}/hv1/conf.sock")
        hv2 = rig.daemon("hv2", "22222222-2222-4222-8222-222222222222", f"unix:{d}/hv2/conf.sock")
        hosts = Hosts(d, rig, hv1, hv2, guest)
        for daemon, chassis in ((hv1, "hv1"), (hv2, "hv2")):
            rig.watcher(daemon, hosts.ovs_db(chassis))
        yield hosts
    finally:
        rig.close()


def history(w: BindingWatch, since: float) -> str:
    """The binding's and claims' story since the migration started, for failure messages."""
    lines = [
        f"{s.at - since:+.3f} owner={s.owner} {s.state} dest={s.destination}" for s in w.seen(PORT)
    ]
    for (port, chassis), states in w.installed.items():
        lines += [f"{at - since:+.3f} {chassis} installed={v}" for at, v in states if port == PORT]
    lines.append(f"activations: {w.activations}")
    return "\n".join(sorted(lines))


def wait_for(check: Callable[[], T | Literal[False] | None], timeout: float = 60.0) -> T:
    """check's first true result (a local condition no database announces)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.1)
    return result


def owner(sb: Snapshot, chassis: str) -> bool:
    row = sb.one("Port_Binding", logical_port=PORT)
    return row is not None and row["chassis"] == chassis and row["migration_destination"] is None


def boot_on_hv1(hosts: Hosts, cms: Cms) -> None:
    """Defines and starts the domain on hv1 (its hook plugs the VIF) and waits until the
    guest's driver negotiated with hv1's back-end and hv1 owns the port."""
    hosts.hv1.virsh("define", str(hosts.xml("hv1")))
    hosts.hv1.virsh("start", DOMAIN)
    cms.sb.wait_until(
        lambda s: any(
            r["logical_port"] == PORT and r["chassis"] == "hv1" and "features" in r["vhost"]
            for r in s.rows("Port_Claim")
        ),
        timeout=120,
        what="the guest's negotiation in hv1's claim",
    )
    cms.sb.wait_until(lambda s: owner(s, "hv1"), timeout=30, what="hv1 owning the port")


def wait_settled_on_hv2(hosts: Hosts, cms: Cms) -> None:
    cms.sb.wait_until(lambda s: owner(s, "hv2"), timeout=120, what="hv2 owning the port")
    cms.sb.wait_until(
        lambda s: (
            not [
                r for r in s.rows("Chassis_VIF") if r["iface_id"] == PORT and r["migration_status"]
            ]
        ),
        timeout=60,
        what="no migration status left on any VIF",
    )


def test_virsh_migrate_moves_an_unnamed_port_with_one_owner_change(hosts: Hosts) -> None:
    layout = lab.Layout(hosts.directory)
    with Cms(layout.nb.remote, layout.sb.remote) as cms, BindingWatch(hosts.directory, [PORT]) as w:
        boot_on_hv1(hosts, cms)
        since = time.time()
        result = subprocess.run(
            hosts.migrate_argv(), capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr + hosts.hv1.log_tail()
        wait_settled_on_hv2(hosts, cms)
        assert w.owner_changes(PORT, since=since) == 1, history(w, since)
        # hv2 waited for the guest (pending) and QEMU's SEND_RARP activated it (M6 -> M2, M3).
        assert w.installed_at(PORT, "hv2", "pending") is not None, history(w, since)
        who, _, how = w.activations[PORT]
        assert who == "hv2" and how["kind"] == "rarp", history(w, since)
    # The source's hook unplugged its VIF after the move; the destination's status is gone.
    assert hosts.interface("hv1") is None
    hv2 = hosts.interface("hv2")
    assert hv2 is not None and hv2["iface-id"] == PORT and "migration-status" not in hv2
    assert "VIFs outgoing" in hosts.rig.watchers[0].text()
    assert "migrate begin: VIFs plugged" in hosts.hv2.hook_log()


def test_a_migration_libvirt_aborts_leaves_the_port_on_the_source(hosts: Hosts) -> None:
    """The migration is throttled to 1 MiB/s and aborted (`virsh domjobabort`) once hv2 is
    waiting for the guest: hv1 keeps the port throughout, hv2's hook unplugs its VIF when
    libvirt kills the incoming QEMU, and hv1's watcher clears `outgoing` when the job ends
    with the domain still running there (M5)."""
    layout = lab.Layout(hosts.directory)
    with Cms(layout.nb.remote, layout.sb.remote) as cms, BindingWatch(hosts.directory, [PORT]) as w:
        boot_on_hv1(hosts, cms)
        since = time.time()
        hosts.hv1.virsh("migrate-setspeed", DOMAIN, "--bandwidth", "1")
        with (hosts.rig.directory / "migrate.err").open("w") as err:
            migration = subprocess.Popen(hosts.migrate_argv(), stdout=err, stderr=err, text=True)
        try:
            cms.sb.wait_until(
                lambda s: any(
                    r["logical_port"] == PORT
                    and r["chassis"] == "hv2"
                    and r["installed"] == "pending"
                    for r in s.rows("Port_Claim")
                ),
                timeout=120,
                what="hv2 waiting for the guest (incoming on hv2, outgoing on hv1)",
            )
            hosts.hv1.virsh("domjobabort", DOMAIN)
            assert migration.wait(120) != 0
        finally:
            if migration.poll() is None:
                migration.kill()
                migration.wait()
        cms.sb.wait_until(
            lambda s: (
                owner(s, "hv1")
                and not [
                    r
                    for r in s.rows("Chassis_VIF")
                    if r["iface_id"] == PORT and r["chassis"] == "hv2"
                ]
                and not [
                    r
                    for r in s.rows("Port_Claim")
                    if r["logical_port"] == PORT and r["chassis"] == "hv2"
                ]
            ),
            timeout=120,
            what="the port back to hv1 alone",
        )
        assert w.owner_changes(PORT, since=since) == 0, history(w, since)
    assert "running" in hosts.hv1.virsh("domstate", DOMAIN).stdout
    assert hosts.interface("hv2") is None
    hv1 = wait_for(lambda: (i := hosts.interface("hv1")) and "migration-status" not in i and i)
    assert hv1["iface-id"] == PORT
    assert "still here: cleared" in hosts.rig.watchers[0].text()


def test_a_named_port_moves_when_the_cloud_names_the_destination_as_neutron_does(
    hosts: Hosts,
) -> None:
    """requested-chassis=hv1: the hypervisor's `incoming` alone may not make hv2 the
    destination (M6: only where hv2 may bind the port; M8), so the cloud names it as Neutron
    does around Nova's live migration (requested-chassis=hv1,hv2 before, hv2 after), and
    the hook and watcher mark the VIFs as for any port: one owner change, at the RARP."""
    layout = lab.Layout(hosts.directory)
    nbctl(hosts.directory, "lsp-set-options", PORT, "requested-chassis=hv1")
    with Cms(layout.nb.remote, layout.sb.remote) as cms, BindingWatch(hosts.directory, [PORT]) as w:
        boot_on_hv1(hosts, cms)
        since = time.time()
        nbctl(hosts.directory, "lsp-set-options", PORT, "requested-chassis=hv1,hv2")
        result = subprocess.run(
            hosts.migrate_argv(), capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr + hosts.hv1.log_tail()
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port=PORT)) is not None
                and r["chassis"] == "hv2"
            ),
            timeout=120,
            what="hv2 activated",
        )
        nbctl(hosts.directory, "lsp-set-options", PORT, "requested-chassis=hv2")
        wait_settled_on_hv2(hosts, cms)
        assert w.owner_changes(PORT, since=since) == 1, history(w, since)
        who, _, how = w.activations[PORT]
        assert who == "hv2" and how["kind"] == "rarp", history(w, since)
    assert hosts.interface("hv1") is None
