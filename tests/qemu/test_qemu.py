"""QEMU as the referee of liveport's compatibility modes (DESIGN.md V4 to V7).

Each scenario boots a tiny guest on liveport's back-end in one mode, migrates it to a
second QEMU whose back-end runs another (or the same) mode, and checks that liveport's
verdict — computed from what the SOURCE back-end recorded — agrees with what QEMU does:
the migration completes exactly when virtio.check_negotiated finds nothing missing, and
when it fails, QEMU's own complaint names exactly the bits liveport names.

Reference behaviour (QEMU 7.2, measured in /work/shared/reference/qemu-notes.md): the
destination prints `Features 0x<acked> unsupported. Allowed features: 0x<host>`, exits with
status 1, and with the return-path capability the source reports `failed` and runs on.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from liveport.model import virtio
from liveport.model.catalogue import Catalogue
from liveport.vhostuser.backend import VhostUserBackend
from liveport.vhostuser.catalogue import CATALOGUE_ENV

from .conftest import NO_ANNOUNCE
from .harness import HEARTBEAT, UNSUPPORTED, MigrationResult, Rig, Vm

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(120)]

F = virtio.Feature
MAC = "52:54:00:12:34:56"
PROTOCOL_FEATURES_BIT = 1 << F.VHOST_USER_F_PROTOCOL_FEATURES
GUEST_ANNOUNCE = 1 << F.VIRTIO_NET_F_GUEST_ANNOUNCE

#: Backend-controlled bits this guest (Linux 6.1 virtio_net behind QEMU 7.2's virtio-net-pci
#: with default properties) acknowledges whenever the back-end offers them; measured with
#: every shipped mode up to v2.17. Offered but never acked: MTU (needs host_mtu), GSO and
#: ANY_LAYOUT (legacy only), MQ (mq=off), RING_PACKED (packed=off), IN_ORDER (not in QEMU
#: 7.2). CSUM, first offered by v3.2, is in the driver's feature table (not yet measured).
GUEST_ACKS = virtio.mask(
    "CSUM GUEST_CSUM GUEST_TSO4 GUEST_TSO6 GUEST_ECN GUEST_UFO HOST_ECN HOST_UFO MRG_RXBUF "
    "GUEST_ANNOUNCE INDIRECT_DESC EVENT_IDX VERSION_1"
)
#: The bits QEMU emulates itself that the guest acknowledges, whatever the mode.
EMULATED_ACKS = virtio.mask(
    "CTRL_GUEST_OFFLOADS MAC STATUS CTRL_VQ CTRL_RX CTRL_VLAN CTRL_MAC_ADDR"
)


def refusal_pair(catalogue: Catalogue, bit: int) -> tuple[virtio.Mode, virtio.Mode]:
    """Two shipped modes where the guest of the first acknowledges exactly one bit that the
    second lacks, bit, and whose protocol features fit (newest such source first).

    Protocol features are left out of the difference on purpose: QEMU renegotiates them with
    the destination's back-end and never refuses a migration over them, while liveport's
    check does (a back-end losing, say, NET_MTU under a running guest changes behaviour).
    """
    shipped = [
        mode for mode in catalogue if mode.name != NO_ANNOUNCE and catalogue.family(mode.name) == ""
    ]
    for source in shipped:
        for dest in shipped:
            if (
                source.features & GUEST_ACKS & ~dest.features == 1 << bit
                and source.protocol_features & ~dest.protocol_features == 0
            ):
                return source, dest
    raise AssertionError(f"no pair of modes differs in {virtio.describe(bit)} alone")


def boot(rig: Rig, mode: virtio.Mode) -> tuple[VhostUserBackend, Vm, virtio.Negotiated]:
    """Starts the source back-end and QEMU, waits for the guest driver, and checks V4: the
    guest sees exactly the mode's features and the back-end recorded exactly that."""
    started = time.monotonic()
    backend = rig.backend("src", mode)
    vm = rig.qemu("src", "src", mac=MAC)
    guest = vm.guest_features()
    state = backend.wait_for(lambda s: s.negotiated is not None and len(s.rings) == 2)
    print(f"TIMING boot {mode.name}: {time.monotonic() - started:.2f} s")
    negotiated = state.negotiated
    assert negotiated is not None
    assert state.offered_features == mode.features
    assert state.offered_protocol_features == mode.protocol_features
    assert state.broken is None and state.unexpected == (), state
    # What the guest acknowledged, bit for bit: the mode's share, plus QEMU's own.
    assert guest & ~virtio.QEMU_EMULATED == mode.features & GUEST_ACKS, virtio.names(guest)
    assert guest & virtio.QEMU_EMULATED == EMULATED_ACKS, virtio.names(guest)
    # What QEMU passed on to the back-end: the guest's backend-controlled bits and bit 30.
    assert negotiated.features == guest & ~virtio.QEMU_EMULATED | PROTOCOL_FEATURES_BIT
    assert negotiated.protocol_features & ~mode.protocol_features == 0
    assert (negotiated.queue_pairs, negotiated.ring_sizes) == (1, (256, 256))
    return backend, vm, negotiated


def migrate(
    rig: Rig, source: Vm, dest_mode: virtio.Mode
) -> tuple[VhostUserBackend, Vm, MigrationResult]:
    backend = rig.backend("dst", dest_mode)
    destination = rig.qemu("dst", "dst", mac=MAC, incoming=True)
    result = rig.migrate(source, destination)
    print(f"TIMING migration to {dest_mode.name}: {result.status} in {result.seconds:.2f} s")
    return backend, destination, result


def assert_guest_runs_on(source: Vm, destination: Vm) -> None:
    """The source is paused for good and the guest's heartbeat goes on at the destination."""
    source.wait_status("postmigrate")
    destination.wait_status("running")
    last = source.last_heartbeat()
    destination.wait_serial_where(HEARTBEAT, lambda m: int(m.group(1)) > last + 1, timeout=15)


def assert_qemu_refused(source: Vm, destination: Vm, result: MigrationResult) -> set[int]:
    """QEMU's refusal as measured: returns the bits the destination said it lacks."""
    assert result.status == "failed"
    assert destination.proc.wait(15) == 1
    complaint = UNSUPPORTED.search(destination.stderr_text())
    assert complaint, destination.stderr_text()
    print(f"QEMU destination: {complaint.group(0)}")
    source.wait_status("running")
    acked, allowed = (int(group, 16) for group in complaint.groups())
    return set(virtio.bits_of(acked & ~allowed))


def test_guest_sees_exactly_the_mode_features(rig: Rig, catalogue: Catalogue) -> None:
    """boot() checks V4 on every scenario; here on the test-only distribution mode."""
    mode = catalogue.get(NO_ANNOUNCE)
    backend, vm, negotiated = boot(rig, mode)
    assert not negotiated.features & GUEST_ANNOUNCE
    heartbeat = re.compile(r"GUEST_HEARTBEAT 1\b")
    vm.wait_serial(heartbeat)
    assert backend.snapshot().connections == 1


def test_same_mode_migrates_and_the_guest_runs_on(rig: Rig, catalogue: Catalogue) -> None:
    mode = catalogue.newest()
    source_backend, source, negotiated = boot(rig, mode)
    verdict = virtio.check_migration(mode, negotiated, [mode])
    assert verdict.ok, verdict.text
    dest_backend, destination, result = migrate(rig, source, mode)
    assert result.status == "completed", result.query
    assert_guest_runs_on(source, destination)
    # The source back-end saw the migration: dirty logging on, rings stopped.
    state = source_backend.snapshot()
    assert state.log_all and not any(ring.started for ring in state.rings)
    dest = dest_backend.wait_for(lambda s: all(r.started for r in s.rings) and len(s.rings) == 2)
    assert dest.negotiated == negotiated and dest.unexpected == ()
    # V6: the guest negotiated GUEST_ANNOUNCE, so it announces itself; QEMU asks no RARP.
    assert negotiated.features & GUEST_ANNOUNCE
    assert dest.rarps == () and rig.rarps["dst"] == []


@pytest.mark.parametrize("feature", ["INDIRECT_DESC", "HOST_UFO"])
def test_a_negotiated_feature_the_destination_lacks_is_refused_by_both(
    rig: Rig, catalogue: Catalogue, feature: str
) -> None:
    """Source and destination modes differ, for this guest, in that feature alone (v2.7 ->
    v2.6 for INDIRECT_DESC; v2.11 -> v3.2 for HOST_UFO, which newer OVS stopped offering).
    Only the OVS-DPDK modes (the default family) are looked at."""
    bit = virtio.bit(feature)
    source_mode, dest_mode = refusal_pair(catalogue, bit)
    _, source, negotiated = boot(rig, source_mode)
    assert negotiated.features >> bit & 1, "the guest did not acknowledge the bit"

    problems = virtio.check_negotiated(negotiated, dest_mode)
    verdict = virtio.check_migration(source_mode, negotiated, [dest_mode])
    assert not verdict.ok
    assert virtio.describe(bit) in verdict.text, verdict.text
    print(f"liveport: {verdict.text}")

    _, destination, result = migrate(rig, source, dest_mode)
    assert result.status == "failed", result.query
    lacking = assert_qemu_refused(source, destination, result)
    assert lacking == {bit}
    assert [(p.kind, p.bit) for p in problems] == [(virtio.FEATURE, bit)]


def test_older_to_newer_mode_migrates(rig: Rig, catalogue: Catalogue) -> None:
    newest = catalogue.newest()
    older = next(
        m
        for m in reversed(catalogue.modes)
        if m.name != NO_ANNOUNCE and catalogue.family(m.name) == ""
    )
    _, source, negotiated = boot(rig, older)
    assert virtio.check_negotiated(negotiated, newest) == []
    verdict = virtio.check_migration(older, negotiated, [newest])
    # V5 also wants the port's mode by name; what was negotiated fits, and it says so.
    assert all(problem.kind == virtio.MODE for problem in verdict.problems), verdict.text
    dest_backend, destination, result = migrate(rig, source, newest)
    assert result.status == "completed", result.query
    assert_guest_runs_on(source, destination)
    dest = dest_backend.snapshot()
    assert dest.negotiated is not None and dest.negotiated.features == negotiated.features
    assert dest.broken is None and dest.unexpected == ()


def test_destination_records_send_rarp_without_guest_announce(
    rig: Rig, catalogue: Catalogue, catalogue_file: Path
) -> None:
    """V6 with the back-ends as standalone processes in client mode (QEMU listens)."""
    mode = catalogue.get(NO_ANNOUNCE)
    env = {CATALOGUE_ENV: str(catalogue_file)}
    source_backend = rig.backend_process("src", mode, client=True, env=env)
    source = rig.qemu("src", "src", mac=MAC, server=True)
    source.guest_features()
    state = source_backend.wait_state(lambda s: bool(s.get("negotiated")) and len(s["rings"]) == 2)
    negotiated = virtio.Negotiated(
        int(state["negotiated"]["features"], 16),
        int(state["negotiated"]["protocol_features"], 16),
        state["negotiated"]["queue_pairs"],
        tuple(state["negotiated"]["ring_sizes"]),
    )
    assert not negotiated.features & GUEST_ANNOUNCE
    assert virtio.check_migration(mode, negotiated, [mode]).ok

    dest_backend = rig.backend_process("dst", mode, client=True, env=env)
    destination = rig.qemu("dst", "dst", mac=MAC, server=True, incoming=True)
    dest_backend.wait_state(lambda s: s.get("connected") is True)
    result = rig.migrate(source, destination)
    assert result.status == "completed", result.query
    assert_guest_runs_on(source, destination)
    dest = dest_backend.wait_state(lambda s: MAC in s.get("rarps", []))
    print(f"destination back-end: {len(dest['rarps'])} SEND_RARP for {MAC}")
    assert set(dest["rarps"]) == {MAC}
    assert source_backend.state()["rarps"] == []


def test_guest_keeps_running_across_a_backend_restart(rig: Rig, catalogue: Catalogue) -> None:
    """QEMU (chardev reconnect=1) reconnects to a restarted back-end, which records the same
    negotiation again; the guest never notices."""
    mode = catalogue.newest()
    backend, vm, negotiated = boot(rig, mode)
    backend.stop()
    started = time.monotonic()
    restarted = rig.backend("src", mode)
    state = restarted.wait_for(
        lambda s: len(s.rings) == 2 and all(r.started for r in s.rings), timeout=15
    )
    print(f"TIMING back-end restart to rings running again: {time.monotonic() - started:.2f} s")
    assert state.negotiated == negotiated and state.unexpected == ()
    last = vm.last_heartbeat()
    vm.wait_serial_where(HEARTBEAT, lambda m: int(m.group(1)) > last, timeout=15)
    assert vm.status() == "running"
