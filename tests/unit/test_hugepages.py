"""The huge-page pool as `lab up --dpdk` reserves and `lab down` releases it (on fake
/proc files), and --dpdk's chassis list."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveport.lab import hugepages, lab
from liveport.model.errors import InvalidInput


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake nr_hugepages whose pool is all free: meminfo follows what is written."""
    nr = tmp_path / "nr_hugepages"
    meminfo = tmp_path / "meminfo"
    nr.write_text("600\n")

    def pool(_: Path = meminfo) -> hugepages.Pool:
        total = int(nr.read_text())
        used = int((tmp_path / "used").read_text()) if (tmp_path / "used").exists() else 0
        return hugepages.Pool(total, max(0, total - used), 2048)

    monkeypatch.setattr(hugepages, "NR_HUGEPAGES", nr)
    monkeypatch.setattr(hugepages, "LOCK", tmp_path / "lock")
    monkeypatch.setattr(hugepages, "pool", pool)
    return tmp_path


def test_free_pages_are_used_and_nothing_is_added(proc: Path) -> None:
    record: dict[str, int] = {}
    assert hugepages.reserve(1024, record) == 0  # 512 pages, 600 free
    assert record == {"previous": 600, "added": 0}
    assert hugepages.release(record) == 0
    assert (proc / "nr_hugepages").read_text().strip() == "600"


def test_only_the_missing_pages_are_added_and_exactly_those_given_back(proc: Path) -> None:
    (proc / "used").write_text("500")  # someone else holds 500 of the 600
    record: dict[str, int] = {}
    assert hugepages.reserve(1024, record) == 412  # 512 needed, 100 free
    assert (proc / "nr_hugepages").read_text().strip() == "1012"
    (proc / "nr_hugepages").write_text("1100\n")  # another lab raised it meanwhile
    assert hugepages.release(record) == 412
    assert (proc / "nr_hugepages").read_text().strip() == "688"
    assert hugepages.release(record) == 0  # never twice


def test_a_lab_killed_before_recording_what_it_added_still_gives_it_back(proc: Path) -> None:
    (proc / "nr_hugepages").write_text("812\n")
    record = {"previous": 600, "added": 0, "wanted": 812}
    assert hugepages.release(record) == 212
    assert (proc / "nr_hugepages").read_text().strip() == "600"


def test_pages_for_rounds_up() -> None:
    assert hugepages.pages_for(512, 2048) == 256
    assert hugepages.pages_for(1, 2048) == 1
    assert hugepages.pages_for(512, 1048576) == 1


def test_dpdk_chassis_list() -> None:
    assert lab.parse_dpdk(None, 3) == []
    assert lab.parse_dpdk("all", 3) == ["hv1", "hv2", "hv3"]
    assert lab.parse_dpdk("hv3,hv1", 3) == ["hv1", "hv3"]
    with pytest.raises(InvalidInput, match="hv4"):
        lab.parse_dpdk("hv1,hv4", 3)
