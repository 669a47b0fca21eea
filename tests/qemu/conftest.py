"""Fixtures for the real-QEMU tests: the guest (built once per session), the mode catalogue
with one test-only distribution mode, and a Rig per test that stops what it started."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.model import virtio
from liveport.model.catalogue import Catalogue
from liveport.vhostuser.catalogue import CATALOGUE_ENV, load_catalogue

from .harness import QEMU, Guest, Rig

REPO = Path(__file__).resolve().parents[2]
BUILD_GUEST = REPO / "scripts" / "build-guest.sh"
#: A distribution mode that lacks GUEST_ANNOUNCE (every shipped mode has it), so that QEMU
#: has to ask the back-end to announce the guest after a migration (V6).
NO_ANNOUNCE = "test.no-guest-announce"


@pytest.fixture(scope="session")
def guest() -> Guest:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (scripts/setup.sh installs qemu-system-x86)")
    result = subprocess.run(
        [str(BUILD_GUEST), str(REPO / ".cache" / "guest")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build-guest.sh failed: {result.stderr.strip()}")
    kernel, initrd = (Path(line) for line in result.stdout.split())
    return Guest(kernel, initrd)


@pytest.fixture(scope="session")
def catalogue_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution catalogue file: the oldest shipped mode without GUEST_ANNOUNCE."""
    shipped = load_catalogue(config_dir=None, environ={})
    # The oldest OVS-DPDK mode: the default family's last (other families sort after it).
    oldest = [mode for mode in shipped if shipped.family(mode.name) == ""][-1]
    features = oldest.features & ~(1 << virtio.Feature.VIRTIO_NET_F_GUEST_ANNOUNCE)
    path = tmp_path_factory.mktemp("catalogue") / "test-modes.json"
    entry = {
        "name": NO_ANNOUNCE,
        "based_on": f"{oldest.name} without VIRTIO_NET_F_GUEST_ANNOUNCE (tests only)",
        "features": list(virtio.names(features)),
        "protocol_features": list(virtio.protocol_names(oldest.protocol_features)),
        "max_queue_pairs": oldest.max_queue_pairs,
        "max_ring_size": oldest.max_ring_size,
        "after": oldest.name,
    }
    path.write_text(json.dumps([entry], indent=2))
    return path


@pytest.fixture(scope="session")
def catalogue(catalogue_file: Path) -> Catalogue:
    return load_catalogue(environ={CATALOGUE_ENV: str(catalogue_file)}, config_dir=None)


@pytest.fixture
def rig(guest: Guest) -> Iterator[Rig]:
    rig = Rig(guest)
    try:
        yield rig
    finally:
        rig.close()
