"""Binding N new ports on one chassis: time from plugging N VIFs (one OVSDB transaction on
the chassis) to all Port_Bindings bound, and to all Logical_Switch_Ports `up` in the NB;
RSS of the agent, northd and the SB server afterwards. Then the same N ports are unplugged
and plugged again into the now-used switch (re-binding).

Reference (DESIGN.md, OVN 23.03 + OVS 3.1, this machine class): 1 -> 8 / 9 ms;
100 -> 59 / 97 ms; 1000 -> 0.73 / 3.6 s; re-binding 1000: 3.0 / 5.8 s; RSS at 1/100/1000
ports: ovn-controller 9/13/40 MB, SB ovsdb-server 8/11/41 MB.

Usage: bench/bind.py [N ...]   (default 1 100 1000 10000; under `make bench` 1 100 1000
unless LIVEPORT_BENCH_FULL=1, because 10000 dummy ports keep ovs-vswitchd itself busy for
minutes -- see docs/benchmarks.md)
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from liveport.lab import faults, lab  # noqa: E402
from liveport.lab.compare import create_ports  # noqa: E402
from liveport.lab.engines import plug, rss_mb  # noqa: E402
from liveport.lab.state import is_lab  # noqa: E402
from liveport.ovsdb import schema  # noqa: E402
from liveport.ovsdb.client import OvsdbClient, fetch_schema  # noqa: E402
from liveport.ovsdb.rows import Delete, Mutate  # noqa: E402

from common import Figure, print_table  # noqa: E402

REFERENCE = {
    1: ("8 ms", "9 ms", "9 MB", "8 MB"),
    100: ("59 ms", "97 ms", "13 MB", "11 MB"),
    1000: ("0.73 s", "3.6 s", "40 MB", "41 MB"),
}
REBIND_REFERENCE = {1000: ("3.0 s", "5.8 s")}
BATCH = 1000


@dataclass
class Result:
    n: int
    bound: float
    up: float
    rebound: float
    reup: float
    agent_mb: float
    northd_mb: float
    sb_mb: float


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def unplug(ovs: OvsdbClient) -> None:
    snap = ovs.snapshot()
    bridge = snap.one("Bridge", name="br-int")
    assert bridge is not None
    ports = [p for p in snap.rows("Port") if p["name"].startswith("b")]
    ops: list[Mutate | Delete] = [
        Mutate("Bridge", bridge.uuid, "ports", "remove", p.uuid) for p in ports
    ]
    ops += [Delete("Port", p.uuid) for p in ports]
    ovs.transact(ops, timeout=120)


def measure(n: int) -> Result:
    base = Path(tempfile.mkdtemp(prefix="lpb-", dir="/tmp"))
    directory = base / "lab"
    try:
        lab.up(directory, 3)
        layout = lab.Layout(directory)
        host = layout.chassis("hv1")
        nb = OvsdbClient(
            layout.nb.remote,
            schema.NB_NAME,
            {
                "Logical_Switch": ["name", "ports"],
                "Logical_Switch_Port": ["name", "up", "addresses"],
                "NB_Global": ["nb_cfg", "hv_cfg"],
            },
            schema=fetch_schema(layout.nb.remote, schema.NB_NAME),
        )
        sb = OvsdbClient(
            layout.sb.remote, schema.SB_NAME, {"Port_Binding": ["logical_port", "chassis", "up"]}
        )
        ovs = OvsdbClient(
            host.db_remote,
            schema.VSWITCH_NAME,
            {
                "Bridge": ["name", "ports"],
                "Port": ["name", "interfaces"],
                "Interface": ["name", "type", "external_ids"],
            },
            schema=str(host.ovsdb.schema),
        )
        for c in (nb, sb, ovs):
            c.wait_connected(30)
        create_ports(nb, n)
        sb.wait_until(
            lambda s: len(s.table("Port_Binding")) >= n, timeout=600, what=f"{n} port bindings"
        )

        def all_bound(s: object) -> bool:
            rows = s.table("Port_Binding")  # type: ignore[attr-defined]
            return len(rows) >= n and all(r["chassis"] == "hv1" for r in rows.values())

        def all_up(s: object) -> bool:
            rows = s.table("Logical_Switch_Port")  # type: ignore[attr-defined]
            return len(rows) >= n and all(r["up"] for r in rows.values())

        def run_once() -> tuple[float, float]:
            t0 = time.monotonic()
            plug(ovs, n, batch=BATCH)
            sb.wait_until(all_bound, timeout=900, what="all ports bound")
            bound = time.monotonic() - t0
            nb.wait_until(all_up, timeout=900, what="all ports up")
            return bound, time.monotonic() - t0

        bound, up = run_once()
        agent_mb = rss_mb(faults.pid(directory, "hv1/agent"))
        northd_mb = rss_mb(faults.pid(directory, "northd"))
        sb_mb = rss_mb(faults.pid(directory, "sb"))
        unplug(ovs)
        sb.wait_until(
            lambda s: all(r["chassis"] is None for r in s.table("Port_Binding").values()),
            timeout=900,
            what="all ports unbound",
        )
        nb.wait_until(
            lambda s: not any(r["up"] for r in s.table("Logical_Switch_Port").values()),
            timeout=900,
            what="all ports down",
        )
        rebound, reup = run_once()
        for c in (nb, sb, ovs):
            c.close()
        return Result(n, bound, up, rebound, reup, agent_mb, northd_mb, sb_mb)
    finally:
        if is_lab(directory):
            lab.down(directory)
        shutil.rmtree(base, ignore_errors=True)


def main(sizes: list[int]) -> None:
    figures = []
    for n in sizes:
        r = measure(n)
        ref = REFERENCE.get(n, ("-", "-", "-", "-"))
        figures.append(Figure(f"{n} ports: all bound", _fmt(r.bound), ref[0]))
        figures.append(Figure(f"{n} ports: all up in NB", _fmt(r.up), ref[1]))
        rref = REBIND_REFERENCE.get(n, ("-", "-"))
        figures.append(
            Figure(f"{n} ports re-bound into a used switch: bound", _fmt(r.rebound), rref[0])
        )
        figures.append(Figure(f"{n} ports re-bound: up", _fmt(r.reup), rref[1]))
        figures.append(
            Figure(f"{n} ports: agent RSS", f"{r.agent_mb:.0f} MB", ref[2], "OVN: ovn-controller")
        )
        figures.append(Figure(f"{n} ports: SB ovsdb-server RSS", f"{r.sb_mb:.0f} MB", ref[3]))
        figures.append(Figure(f"{n} ports: northd RSS", f"{r.northd_mb:.0f} MB"))
        print(f"  measured {n} ports", file=sys.stderr, flush=True)
    print_table("binding N new ports on one chassis", figures)


def default_sizes() -> list[int]:
    if os.environ.get("LIVEPORT_BENCH_RUN") and not os.environ.get("LIVEPORT_BENCH_FULL"):
        return [1, 100, 1000]
    return [1, 100, 1000, 10000]


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or default_sizes())
