"""`make bench`: runs every benchmark in turn and prints each figure beside DESIGN.md's
reference figure for OVN 23.03."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "lab_startup.py",
    "bind.py",
    "migration.py",
    "compare.py",
    "scale.py",
    "agent_cpu.py",
    "chaos.py",
]


def main() -> int:
    sys.path.insert(0, str(HERE))
    os.environ["LIVEPORT_BENCH_RUN"] = "1"
    for name in BENCHMARKS:
        runpy.run_path(str(HERE / name), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
