"""The kernel's pool of huge pages, which DPDK's memory comes from (`lab up --dpdk`).

A lab that runs DPDK chassis reserves what they need before they start and gives back at
`lab down` exactly what it added: it raises /proc/sys/vm/nr_hugepages only by the pages
that are missing (free pages left by someone else are used, not taken twice), records the
value before and the pages it added in lab.json, and on the way down lowers the pool by
those pages only (another lab, or anything else, may have raised it since). Changes of the
pool are serialised between labs by a lock file, so no write is lost; but free pages are
counted before the switches take them, so two labs starting at the same moment can count
the same free pages, and the later DPDK switch then fails to start (its log says so).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from liveport.model.errors import LiveportError

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
MEMINFO = Path("/proc/meminfo")
LOCK = Path("/tmp/liveport-hugepages.lock")


class HugepageError(LiveportError):
    pass


@dataclass(frozen=True)
class Pool:
    total: int  # HugePages_Total
    free: int  # HugePages_Free
    page_kb: int  # Hugepagesize


def pool(meminfo: Path = MEMINFO) -> Pool:
    values: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("HugePages_Total", "HugePages_Free", "Hugepagesize"):
            values[key] = int(rest.split()[0])
    try:
        return Pool(values["HugePages_Total"], values["HugePages_Free"], values["Hugepagesize"])
    except KeyError:
        raise HugepageError(f"{meminfo} says nothing of huge pages (no hugetlb support)") from None


def pages_for(megabytes: int, page_kb: int) -> int:
    return -(-megabytes * 1024 // page_kb)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(nr: int) -> None:
    try:
        NR_HUGEPAGES.write_text(f"{nr}\n")
    except OSError as exc:
        raise HugepageError(f"cannot set {NR_HUGEPAGES} to {nr}: {exc}") from None


def reserve(megabytes: int, record: dict[str, int]) -> int:
    """Makes at least megabytes of huge pages free; returns the pages added to the pool.

    record (a dict kept in lab.json) gets "previous" (nr_hugepages before) and "wanted"
    before the pool is touched, and "added" once the kernel has answered: a lab killed in
    between can still give back what it took."""
    with _locked():
        now = pool()
        missing = pages_for(megabytes, now.page_kb) - now.free
        record["previous"] = int(NR_HUGEPAGES.read_text())
        record["added"] = 0
        if missing <= 0:
            return 0
        record["wanted"] = record["previous"] + missing
        _write(record["wanted"])
        got = int(NR_HUGEPAGES.read_text()) - record["previous"]
        record["added"] = max(0, got)
        if got < missing:
            if got > 0:
                _write(int(NR_HUGEPAGES.read_text()) - got)
            record["added"] = 0
            record.pop("wanted")
            raise HugepageError(
                f"DPDK needs {megabytes} MB of huge pages; {now.free} pages of "
                f"{now.page_kb} kB were free and the kernel gave only {max(0, got)} of the "
                f"{missing} more asked for (memory too fragmented or too little)"
            )
        return got


def release(record: dict[str, int]) -> int:
    """Gives back the pages reserve() added (never more); returns how many."""
    added = int(record.get("added", 0))
    if not added and "wanted" in record:
        # Killed between the write and the record: what the pool holds beyond the value
        # before, up to what was asked for, is ours.
        current = int(NR_HUGEPAGES.read_text())
        added = max(0, min(current, int(record["wanted"])) - int(record["previous"]))
    if added <= 0:
        return 0
    with _locked():
        current = int(NR_HUGEPAGES.read_text())
        _write(max(0, current - added))
    record["added"] = 0
    record.pop("wanted", None)
    return added
