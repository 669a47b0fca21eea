"""The report of a liveport-vs-OVN comparison (liveport.lab.compare): one Figure per measured
quantity with both engines' values, their ratio and which engine is better, rendered as a
table and as JSON. Pure: no I/O.

ratio = liveport / OVN on the headline value (a median for distributions). "better" follows
each figure's direction (lower is better for times, losses, rates, CPU and memory; for a
yes/no figure, yes is better); equal values are a tie, and a figure without a direction
("info") or with a missing value gets no verdict. Nothing is rounded in anyone's favour:
the verdict compares the raw values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["lower", "higher", "yes", "info"]
Value = float | bool | None
ENGINE_NAMES = {"liveport": "liveport", "ovn": "OVN 23.03"}


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    liveport: Value
    ovn: Value
    unit: str = ""
    better: Direction = "lower"
    liveport_text: str = ""  # shown instead of the value (e.g. min / median / max)
    ovn_text: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """liveport / OVN, or None where it means nothing (a yes/no or info figure, a
        missing or infinite value, or OVN at 0)."""
        a, b = self.liveport, self.ovn
        if self.better in ("yes", "info") or isinstance(a, bool) or isinstance(b, bool):
            return None
        if a is None or b is None or b == 0 or math.isinf(a) or math.isinf(b):
            return None
        return float(a) / float(b)

    @property
    def winner(self) -> str:
        """'liveport', 'OVN', 'tie' or '-' (no direction or a value missing)."""
        a, b = self.liveport, self.ovn
        if self.better == "info" or a is None or b is None:
            return "-"
        if self.better == "yes":
            if bool(a) == bool(b):
                return "tie"
            return "liveport" if a else "OVN"
        if float(a) == float(b):
            return "tie"
        lower = float(a) < float(b)
        return "liveport" if lower == (self.better == "lower") else "OVN"

    def text(self, engine: str) -> str:
        value = self.liveport if engine == "liveport" else self.ovn
        custom = self.liveport_text if engine == "liveport" else self.ovn_text
        return custom or format_value(value, self.unit)

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "better": self.better,
            "liveport": self.liveport,
            "ovn": self.ovn,
            "liveport_text": self.text("liveport"),
            "ovn_text": self.text("ovn"),
            "ratio": self.ratio,
            "winner": self.winner,
            "note": self.note,
        }


def format_value(value: Value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if math.isinf(value):
        return "never"
    if float(value).is_integer() and abs(value) < 1e6 and unit not in ("ms", "s"):
        number = f"{int(value)}"
    elif abs(value) >= 100:
        number = f"{value:.0f}"
    elif abs(value) >= 10:
        number = f"{value:.1f}"
    else:
        number = f"{value:.2f}"
    return f"{number} {unit}".strip()


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    return f"{ratio:.2f}x"


def min_med_max(values: Sequence[float], unit: str = "ms") -> str:
    """'min / median / max unit' of values (already in unit)."""
    if not values:
        return "n/a"
    return (
        f"{format_value(min(values))} / {format_value(statistics.median(values))} / "
        f"{format_value(max(values))} {unit}"
    ).strip()


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def tally(figures: Sequence[Figure]) -> dict[str, int]:
    """How many figures each engine wins, ties, and how many have no verdict."""
    counts = {"liveport": 0, "OVN": 0, "tie": 0, "-": 0}
    for figure in figures:
        counts[figure.winner] += 1
    return counts


def render_table(figures: Sequence[Figure]) -> str:
    """A plain-text table, one section after another, then the tally."""
    head = ("figure", "liveport", ENGINE_NAMES["ovn"], "liveport/OVN", "better")
    rows = [
        (f.name, f.text("liveport"), f.text("ovn"), format_ratio(f.ratio), f.winner)
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out: list[str] = []
    section = None
    for figure, row in zip(figures, rows, strict=True):
        if figure.section != section:
            section = figure.section
            out += ["", f"== {section}", line(head)]
        out.append(line(row))
        if figure.note:
            out.append(f"   ({figure.note})")
    counts = tally(figures)
    out += [
        "",
        f"better: liveport in {counts['liveport']}, OVN in {counts['OVN']}, tie in "
        f"{counts['tie']}, no verdict in {counts['-']} of {len(figures)} figures "
        "(ratio = liveport / OVN; every figure is reported as measured)",
    ]
    return "\n".join(out).lstrip("\n")


def report_json(
    figures: Sequence[Figure],
    *,
    machine: dict[str, Any],
    config: dict[str, Any],
    fairness: Sequence[str],
    raw: dict[str, Any],
) -> dict[str, Any]:
    return {
        "machine": machine,
        "config": config,
        "fairness": list(fairness),
        "tally": tally(figures),
        "figures": [f.to_json() for f in figures],
        "raw": raw,
    }
