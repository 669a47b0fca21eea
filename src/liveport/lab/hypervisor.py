"""The hypervisor's side of a live migration, emulated the way libvirt and QEMU do it.

1. Before anything moves, the destination VIF is plugged with the same iface-id (as Nova's
   pre_live_migration does) and, by default, the emulator waits until the destination
   chassis reports that it is ready (its blocking flows are installed, M9).
2. The VM's memory is copied (`precopy_ms`), then the source is paused: from then on the
   VM neither receives nor sends there.
3. After `pause_ms` of downtime the VM resumes on the destination and announces itself on
   QEMU's schedule: 50, 150, 250, 350 and 450 ms after resuming -- a RARP from QEMU when
   the guest did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE, otherwise a gratuitous ARP and
   an IPv6 unsolicited NA from the guest itself (or nothing: lost announcements).
4. On success the source VIF is removed.

The hypervisor-driven form (M6) marks the VIFs with external_ids:migration-status
(outgoing on the source, incoming on the destination) for the duration.
Every step is recorded with its wall-clock time in lab.json, for timelines and analysis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liveport.lab import lab, vms
from liveport.lab.state import editing, load
from liveport.model.errors import Conflict, InvalidInput, LiveportError, Timeout
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient

ANNOUNCE_SCHEDULE_MS = (50, 150, 250, 350, 450)
ANNOUNCE_CHOICES = ("auto", "rarp", "garp", "na", "garp+na", "none")


@dataclass
class HypervisorMigration:
    vm: str
    port: str
    source: str
    destination: str
    announce: str
    events: list[tuple[str, float]] = field(default_factory=list)
    outcome: str = "running"

    def at(self, name: str) -> float | None:
        for event, when in self.events:
            if event == name:
                return when
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def announcement_kinds(announce: str, guest_announce: bool) -> list[str]:
    if announce not in ANNOUNCE_CHOICES:
        raise InvalidInput(f"--announce must be one of {', '.join(ANNOUNCE_CHOICES)}")
    if announce == "auto":
        return ["garp", "na"] if guest_announce else ["rarp"]
    if announce == "none":
        return []
    return announce.split("+")


def wait_destination_ready(directory: Path, port: str, destination: str, timeout: float) -> None:
    """Waits until the destination's claim on port says its blocking flows are installed
    (in an OVN lab: until D claimed the port as additional chassis and every chassis caught
    up, the most OVN tells)."""
    layout = lab.Layout.of(directory)
    if layout.engine == "ovn":
        with lab.ovn_cms(directory) as ovn:
            ovn.wait_ready(port, destination, timeout)
        return
    remote = layout.sb_remote
    with OvsdbClient(
        remote,
        schema.SB_NAME,
        {
            "Port_Claim": ["logical_port", "chassis", "installed"],
            "Port_Binding": ["logical_port", "migration_destination"],
        },
    ) as sb:

        def ready(s: Any) -> bool:
            return any(
                r["logical_port"] == port
                and r["chassis"] == destination
                and r["installed"] in ("pending", "owner")
                for r in s.rows("Port_Claim")
            )

        try:
            sb.wait_until(ready, timeout=timeout, what=f"{destination} to be ready")
        except Timeout:
            pb = sb.snapshot().one("Port_Binding", logical_port=port)
            configured = pb is not None and pb["migration_destination"] == destination
            hint = (
                ""
                if configured
                else (
                    f"; no migration of {port} to {destination} is configured (run "
                    f"'liveport migrate {port} --to {destination}' first, or use "
                    "--hypervisor-status)"
                )
            )
            raise Timeout(
                f"{destination} did not become ready for {port} within {timeout:g}s{hint}"
            ) from None


def migrate(
    directory: Path,
    vm_name: str,
    destination: str,
    *,
    announce: str = "auto",
    guest_announce: bool = False,
    precopy_ms: float = 0.0,
    pause_ms: float = 30.0,
    wait_ready: bool = True,
    ready_timeout: float = 30.0,
    hypervisor_status: bool = False,
    remove_source: bool = True,
    on_event: Callable[[str, float], None] | None = None,
) -> HypervisorMigration:
    kinds = announcement_kinds(announce, guest_announce)
    state = load(directory)
    vm = state.get_vm(vm_name)
    state.get_chassis(destination)
    if len(vm.vifs) != 1:
        raise Conflict(
            f"VM {vm_name!r} is already migrating (VIFs on {', '.join(v.chassis for v in vm.vifs)})"
        )
    source = vm.vifs[0].chassis
    if source == destination:
        raise InvalidInput(f"VM {vm_name!r} already runs on {destination}")
    record = HypervisorMigration(vm_name, vm.port, source, destination, "+".join(kinds) or "none")

    def event(name: str) -> None:
        now = time.time()
        record.events.append((name, now))
        if on_event is not None:
            on_event(name, now)

    try:
        if hypervisor_status:
            vms.set_vif_external_id(directory, vm_name, source, "migration-status", "outgoing")
        # The destination VIF runs in the port's mode: as libvirt would, copy what the
        # source runs in (V3: the mode is chosen once, when the port is added).
        mode = vms.vif_external_id(directory, vm_name, source, "liveport-vhost-mode")
        extra = {"migration-status": "incoming"} if hypervisor_status else {}
        if mode:
            extra["vhost-compat"] = mode
        with editing(directory) as current:
            cvm = current.get_vm(vm_name)
            cvm.vifs.append(vms.plug_vif(current, cvm, destination, external_ids=extra))
        event("destination VIF plugged")
        if wait_ready:
            wait_destination_ready(directory, vm.port, destination, ready_timeout)
            event("destination ready")
        if precopy_ms:
            time.sleep(precopy_ms / 1000)  # emulated memory copy
        event("source paused")
        time.sleep(pause_ms / 1000)  # emulated downtime
        event("resumed on destination")
        _announce(directory, vm_name, destination, kinds, event)
        if remove_source:
            finish(directory, vm_name, hypervisor_status=hypervisor_status, on_event=event)
        record.outcome = "completed"
    except LiveportError:
        record.outcome = "failed"
        raise
    finally:
        _save(directory, record)
    return record


def finish(
    directory: Path,
    vm_name: str,
    *,
    hypervisor_status: bool = False,
    on_event: Callable[[str], None] | None = None,
) -> None:
    """The migration succeeded: the source VIF goes away (and the statuses are cleared)."""
    state = load(directory)
    vm = state.get_vm(vm_name)
    if len(vm.vifs) < 2:
        raise Conflict(f"VM {vm_name!r} is not migrating")
    source, destination = vm.vifs[0].chassis, vm.vifs[-1].chassis
    with editing(directory) as current:
        vms.unplug_vif(current, current.get_vm(vm_name), source)
    if on_event is not None:
        on_event("source VIF removed")
    if hypervisor_status:
        vms.set_vif_external_id(directory, vm_name, destination, "migration-status", None)
        if on_event is not None:
            on_event("migration status cleared")


def abort(directory: Path, vm_name: str, *, hypervisor_status: bool = False) -> None:
    """The hypervisor gives up: the destination VIF goes away, the source runs on."""
    state = load(directory)
    vm = state.get_vm(vm_name)
    if len(vm.vifs) < 2:
        raise Conflict(f"VM {vm_name!r} is not migrating")
    destination = vm.vifs[-1].chassis
    with editing(directory) as current:
        vms.unplug_vif(current, current.get_vm(vm_name), destination)
    if hypervisor_status:
        vms.set_vif_external_id(directory, vm_name, vm.vifs[0].chassis, "migration-status", None)


def _announce(
    directory: Path, vm_name: str, chassis: str, kinds: list[str], event: Callable[[str], None]
) -> None:
    """QEMU's self-announcement rounds after resuming, from the VM's VIF on chassis."""
    resumed = time.monotonic()
    with vms.Injector(directory, vm_name, chassis) as inject:
        for delay_ms in ANNOUNCE_SCHEDULE_MS:
            wait = resumed + delay_ms / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            for kind in kinds:
                inject.send(vms.build_frame(inject.state, inject.vm, vms.SendSpec(kind=kind), 0))
                event(f"announced {kind}")


def _save(directory: Path, record: HypervisorMigration) -> None:
    with editing(directory) as current:
        history = current.options.setdefault("migrations", [])
        history.append(record.to_json())
