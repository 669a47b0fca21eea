"""liveport against upstream OVN 23.03 in the same lab and the same run: migrations under
1000 packets/s, a GARP-only guest, two chassis with one iface-id, binding 1/100/1000 ports,
security groups (TCP connections through a migration; 100 and 1000 ports in Neutron's
default group, and a port joining it) and a migration on a provider network (an external
host on a VLAN behind the ToR). The measuring lives in liveport.lab.compare,
liveport.lab.compare_sg and liveport.lab.compare_provider (also `liveport bench compare`,
whose `--only sg` or `--only provider` runs one part alone); this is its entry point for
`make bench`.

Usage: bench/compare.py [RUNS]   (default $LIVEPORT_COMPARE_RUNS or 20); writes
bench/out/compare.json, compare-timelines.png and compare-bind.png
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

from pathlib import Path  # noqa: E402

from liveport.cli.main import main as liveport  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str]) -> int:
    runs = ["--runs", argv[0]] if argv else []
    return liveport(["bench", "compare", *runs, "--output", str(OUT)])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    if code:
        sys.exit(code)
