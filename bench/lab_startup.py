"""How long `liveport lab up` takes (and `down`), for the README's claim.

There is no OVN reference figure: OVN's sandbox is a shell script (ovn-sandbox.sh took a few
seconds here); this measures liveport's own lab only.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from liveport.lab import lab  # noqa: E402

from common import Figure, min_med_max, print_table  # noqa: E402


def measure(chassis: int, runs: int) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for _ in range(runs):
        base = Path(tempfile.mkdtemp(prefix="lpb-", dir="/tmp"))
        try:
            t0 = time.monotonic()
            lab.up(base / "lab", chassis)
            ups.append(time.monotonic() - t0)
            t0 = time.monotonic()
            lab.down(base / "lab")
            downs.append(time.monotonic() - t0)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return ups, downs


def main() -> None:
    figures = []
    for chassis, runs in ((3, 5), (10, 3)):
        ups, downs = measure(chassis, runs)
        figures.append(Figure(f"lab up, {chassis} chassis (min/med/max)", min_med_max(ups, "s", 1)))
        figures.append(Figure(f"lab down, {chassis} chassis", min_med_max(downs, "s", 1)))
    print_table(
        "lab start-up (databases, switches, northd, agents; until every chassis is alive "
        "with its tunnels)",
        figures,
    )


if __name__ == "__main__":
    main()
