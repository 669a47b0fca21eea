"""A chassis' modes checked against its real vhost-user back-end (pure).

A chassis publishes the modes it offers (Open_vSwitch external_ids liveport-vhost-backend
or liveport-vhost-modes, or the whole catalogue). When the VIFs are OVS-DPDK vhost-user
ports, what a guest is offered is decided by OVS-DPDK, not by liveport: the agent can only
compare. What OVS reports reliably (OVS 2.10 and later):

- `Open_vSwitch:dpdk_initialized` and `dpdk_version` ("DPDK 22.11.11"), written by
  ovs-vswitchd itself, and `ovs_version` ("3.1.0"), written by the start-up script
  (ovs-ctl, or the lab) -- with `other_config:userspace-tso-enable`, enough to name the
  catalogue mode the back-end implements: the OVS-DPDK modes record the OVS and DPDK
  releases they follow (extra "ovs", "dpdk", e.g. "2.17-3.1" and "21.11-22.11"). What a
  release offers is not readable from OVS; the catalogue's mode is that release's offer.
- `Interface:status:features` of a connected dpdkvhostuser/dpdkvhostuserclient port: the
  features its guest negotiated (a subset of the offer), as hex.

Two findings follow, both reported, neither changes what the agent binds:

- a published mode with virtio features (or limits) the back-end lacks: a guest that
  negotiated them elsewhere cannot arrive here (QEMU refuses it: `Features 0x…
  unsupported`), so the chassis publishes a promise its back-end cannot keep;
- a VIF whose guest negotiated features outside the VIF's mode: the back-end offers more
  than the mode and the front-end (QEMU's virtio-net properties, `liveport vhost
  qemu-args`) did not hold the guest to it, so it may not be able to move to a chassis
  that offers exactly the mode.

A back-end offering more than a published mode is not a finding by itself: that is what
the front-end is for (docs/vhost.md, "Two places to enforce a mode").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from liveport.model import virtio
from liveport.model.catalogue import Catalogue
from liveport.model.virtio import Mode

#: Where the outcome is recorded: Open_vSwitch external_ids and the SB's Chassis other_config.
CHECK_KEY = "liveport-vhost-backend-check"
DPDK_PORT_TYPES = frozenset({"dpdkvhostuser", "dpdkvhostuserclient"})
TSO_FAMILY = "ovs-dpdk-tso"
_VERSION = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class DpdkSwitch:
    """What the local Open_vSwitch row says of an OVS-DPDK switch."""

    initialized: bool
    dpdk_version: str  # "DPDK 22.11.11", or ""
    ovs_version: str  # "3.1.0", or "" (nobody wrote it)
    tso: bool  # other_config:userspace-tso-enable=true


def _release(text: str) -> tuple[int, int] | None:
    found = _VERSION.search(text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _within(release: tuple[int, int], span: str) -> bool:
    """Whether release lies in span: "2.17-3.1", "20.11", "3.2-" or "-6.1" (inclusive)."""
    low_text, dash, high_text = span.partition("-")
    low = _release(low_text) if low_text else None
    high = _release(high_text) if dash and high_text else (None if dash else low)
    return (low is None or release >= low) and (high is None or release <= high)


def identify(catalogue: Catalogue, switch: DpdkSwitch) -> Mode | None:
    """The catalogue mode of the OVS-DPDK release that runs (None: not DPDK, a version
    unknown, or a release no mode follows)."""
    ovs, dpdk = _release(switch.ovs_version), _release(switch.dpdk_version)
    if not switch.initialized or ovs is None or dpdk is None:
        return None
    family = TSO_FAMILY if switch.tso else ""
    for mode in catalogue:
        if catalogue.family(mode.name) != family:
            continue
        ovs_span, dpdk_span = mode.extra.get("ovs"), mode.extra.get("dpdk")
        if ovs_span and dpdk_span and _within(ovs, ovs_span) and _within(dpdk, dpdk_span):
            return mode
    return None


def honoured(catalogue: Catalogue, backend: Mode) -> tuple[str, ...]:
    """The modes of backend's family, it and older, that it can honour: what a chassis
    running it should publish (liveport-vhost-modes). Not simply "it and every older
    mode": OVS 2.13 dropped HOST_UFO, so no later OVS-DPDK honours upstream.ovs-dpdk.v2.11."""
    names = catalogue.names()
    family = catalogue.family(backend.name)
    return tuple(
        name
        for name in names[names.index(backend.name) :]
        if catalogue.family(name) == family
        and not published_problems(backend, [catalogue.get(name)])
    )


def _names(mask: int) -> str:
    return ", ".join(virtio.names(mask))


def published_problems(backend: Mode, published: Sequence[Mode]) -> tuple[str, ...]:
    """Each published mode the back-end cannot honour, with what it lacks. QEMU's own
    control-queue features are QEMU's to offer, not the back-end's."""
    problems = []
    for mode in published:
        missing = mode.features & ~backend.features & ~virtio.QEMU_EMULATED
        lacks = []
        if missing:
            lacks.append(_names(missing))
        if mode.max_queue_pairs > backend.max_queue_pairs:
            lacks.append(f"{mode.max_queue_pairs} queue pairs (it has {backend.max_queue_pairs})")
        if mode.max_ring_size > backend.max_ring_size:
            lacks.append(f"rings of {mode.max_ring_size} (it has {backend.max_ring_size})")
        if lacks:
            problems.append(
                f"publishes {mode.name}, which its back-end ({backend.name}) cannot honour: "
                f"it lacks {'; '.join(lacks)}"
            )
    return tuple(problems)


def vif_problems(
    catalogue: Catalogue, modes: Mapping[str, str], negotiated: Mapping[str, int]
) -> tuple[str, ...]:
    """Each VIF whose guest negotiated (with the real back-end) features outside its mode."""
    problems = []
    for iface_id, features in sorted(negotiated.items()):
        name = modes.get(iface_id)
        if name is None or name not in catalogue:
            continue
        beyond = features & ~catalogue.get(name).features & ~virtio.QEMU_EMULATED
        if beyond:
            problems.append(
                f"VIF {iface_id}: its guest negotiated {_names(beyond)} with the back-end, "
                f"outside its mode {name} (the front-end does not hold it to the mode)"
            )
    return tuple(problems)


@dataclass(frozen=True)
class BackendCheck:
    """The outcome: the back-end's mode (None: not OVS-DPDK or unknown), and problems."""

    backend: str | None
    problems: tuple[str, ...] = ()
    unknown: str | None = None  # why the back-end could not be named (DPDK chassis only)

    @property
    def summary(self) -> str:
        """One line for the local database and the SB ("" when there is nothing to say)."""
        if self.problems:
            return "; ".join(self.problems)
        return self.unknown or ""


def check(
    catalogue: Catalogue,
    switch: DpdkSwitch,
    published: Sequence[str],
    modes: Mapping[str, str],
    negotiated: Mapping[str, int],
) -> BackendCheck:
    """The whole check of one chassis (see the module's description)."""
    if not switch.initialized:
        return BackendCheck(None)
    backend = identify(catalogue, switch)
    if backend is None:
        why = (
            "ovs_version is not set in Open_vSwitch (ovs-ctl writes it)"
            if _release(switch.ovs_version) is None
            else f"no mode of the catalogue follows OVS {switch.ovs_version} with "
            f"{switch.dpdk_version or 'an unknown DPDK'}"
            + (" and userspace TSO" if switch.tso else "")
        )
        return BackendCheck(
            None,
            vif_problems(catalogue, modes, negotiated),
            f"the OVS-DPDK back-end cannot be checked: {why}",
        )
    offered = [catalogue.get(n) for n in published if n in catalogue]
    return BackendCheck(
        backend.name,
        published_problems(backend, offered) + vif_problems(catalogue, modes, negotiated),
    )
