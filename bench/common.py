"""Shared helpers for benchmarks: statistics and the side-by-side table with DESIGN.md's
reference figures (real OVN 23.03 + OVS 3.1 on this machine class)."""

from __future__ import annotations

import signal
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


# A benchmark stopped with SIGTERM (a CI timeout, `kill PID`) unwinds like Ctrl-C, so each
# benchmark's `finally` tears its lab down instead of leaving daemons without a directory.
signal.signal(signal.SIGTERM, _interrupt)


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    reference: str = "-"  # the OVN 23.03 figure from DESIGN.md, or "-" where there is none
    note: str = ""


def min_med_max(values: Sequence[float], unit: str = "ms", scale: float = 1e3) -> str:
    if not values:
        return "n/a"
    vals = [v * scale for v in values]
    return f"{min(vals):.2f} / {statistics.median(vals):.2f} / {max(vals):.2f} {unit}"


def print_table(title: str, figures: Sequence[Figure]) -> None:
    width = max(len(f.name) for f in figures)
    vwidth = max(len(f.value) for f in figures)
    print(f"\n== {title}")
    print(f"{'figure':<{width}}  {'liveport':<{vwidth}}  OVN 23.03 (DESIGN.md)")
    for f in figures:
        note = f"   ({f.note})" if f.note else ""
        print(f"{f.name:<{width}}  {f.value:<{vwidth}}  {f.reference}{note}")
