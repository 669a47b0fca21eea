"""Live migration under traffic: N migrations of vm1 between hv1 and hv2 (peer on hv3 sends
vm1 UDP at 1000 packets/s), RARP announcements on QEMU's schedule, through liveport's CMS
and the lab's emulated hypervisor. Then two chassis with the same iface-id and no options.

Reference (DESIGN.md, OVN 23.03 + OVS 3.1, 50 migrations, activation-strategy=rarp):
RARP -> first delivery at D 1.4 / 3.1 / 7.1 ms; RARP -> SB activated 1.3 / 2.7 / 4.7 ms;
handoff gap median 3.1 ms; lost if the source pauses at the RARP 0 / 1 / 8 packets; 7 of 50
runs delivered 2-7 packets to D before any RARP; 10 of 50 completions emptied the binding
(D -> none -> D); same iface-id on two chassis: 4 binding changes per second.

The same again in a secure lab (TLS everywhere, the SB's RBAC), with the cost of TLS + RBAC
per SB transaction (reference: ~0.1 ms).

Usage: bench/migration.py [RUNS]   (default 10); writes bench/out/migration.json
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from liveport.cms.migrate import Cms  # noqa: E402
from liveport.lab import analysis, demo, hypervisor, lab, vms  # noqa: E402
from liveport.lab.state import is_lab  # noqa: E402
from liveport.lab.traffic import Traffic  # noqa: E402
from liveport.lab.watch import BindingWatch  # noqa: E402
from liveport.ovsdb import schema  # noqa: E402
from liveport.ovsdb.client import OvsdbClient, configure_tls  # noqa: E402
from liveport.ovsdb.rows import Mutate  # noqa: E402

from common import Figure, min_med_max, print_table  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
RATE = 1000.0


def one_migration(
    directory: Path, cms: Cms, watch: BindingWatch, run: int, source: str, destination: str
) -> dict[str, float | int | None]:
    start = time.time()
    traffic = Traffic(directory, "peer", "vm1", rate=RATE, first_seq=run * 1_000_000).start()
    try:
        time.sleep(0.2)  # steady traffic first
        cms.start("vm1", destination)
        record = hypervisor.migrate(
            directory, "vm1", destination, announce="rarp", precopy_ms=100, pause_ms=20
        )
        cms.complete("vm1")
        time.sleep(0.1)
    finally:
        sent = traffic.stop()
    last = sent[-1].seq
    vms.wait_capture(
        directory,
        "vm1",
        lambda f: any(x.info.seq == last for x in f),
        timeout=10,
        what="the run's last datagram",
    )
    seqs = {s.seq for s in sent}
    got = [d for d in analysis.deliveries(directory, "vm1") if d.seq in seqs]
    announced = [t for t in analysis.announcements(directory, "vm1", destination) if t >= start]
    report = analysis.analyse(sent, got, announced, record)
    bound = watch.first_owner_at("vm1", destination, since=start)
    activated = watch.activations.get("vm1")
    return {
        "announce_to_delivery": report.announce_to_delivery,
        "announce_to_bound": (bound - report.announced_at)
        if bound is not None and report.announced_at is not None
        else None,
        "handoff_gap": report.handoff_gap,
        "lost_at_announcement": report.lost_at_announcement,
        "leaked": report.leaked,
        "owner_changes": watch.owner_changes("vm1", since=start),
        "activated_ms": activated[1] if activated else None,
        "sent": report.sent,
    }


def flapping(directory: Path, seconds: float = 5.0) -> float:
    """Owner changes per second while two chassis hold a VIF for one port, no options."""
    demo.nbctl(
        directory,
        "lsp-add",
        "ls0",
        "twin",
        "--",
        "lsp-set-addresses",
        "twin",
        "00:00:00:00:00:44 10.0.0.44",
    )
    vms.add(
        directory, "twin", chassis="hv1", port="twin", mac="00:00:00:00:00:44", ips=["10.0.0.44"]
    )
    demo.nbctl(directory, "wait-until", "Logical_Switch_Port", "twin", "up=true")
    with BindingWatch(directory, ["twin"]) as watch:
        vms.add(
            directory,
            "twin2",
            chassis="hv2",
            port="twin",
            mac="00:00:00:00:00:44",
            ips=["10.0.0.44"],
        )
        since = time.time()
        end = since + seconds
        while time.time() < end:
            vms.send(directory, "twin2", vms.SendSpec(kind="garp"))  # it even announces itself
            time.sleep(0.25)
        return watch.owner_changes("twin", since=since) / seconds


def migrations(
    runs: int, *, secure: bool
) -> tuple[list[dict[str, float | int | None]], float, tuple[float, float] | None]:
    """runs migrations in a fresh lab; the flapping rate; in a secure lab also the cost of
    TLS + RBAC per SB transaction (median ms through the unix socket and the TLS listener)."""
    base = Path(tempfile.mkdtemp(prefix="lpm-", dir="/tmp"))
    directory = base / "lab"
    results = []
    try:
        lab.up(directory, 3, secure=secure)
        demo.build_network(directory)
        with lab.cms(directory) as cms, BindingWatch(directory, ["vm1"]) as watch:
            where = "hv1"
            for run in range(1, runs + 1):
                to = "hv2" if where == "hv1" else "hv1"
                results.append(one_migration(directory, cms, watch, run, where, to))
                watch.activations.clear()
                label = "secure" if secure else "plain"
                print(
                    f"  {label} migration {run}/{runs}: {where} -> {to}",
                    file=sys.stderr,
                    flush=True,
                )
                where = to
        flaps = flapping(directory)
        cost = transaction_cost(directory) if secure else None
    finally:
        if is_lab(directory):
            lab.down(directory)
        shutil.rmtree(base, ignore_errors=True)
    return results, flaps, cost


def transaction_cost(directory: Path, count: int = 300) -> tuple[float, float]:
    """hv3 writing its own Chassis_Private row, one transaction at a time: through the SB's
    unix socket (no TLS, no role) and through the chassis listener (TLS, RBAC checked)."""
    layout = lab.Layout.of(directory)
    assert layout.tls is not None
    creds = layout.tls.credentials("hv3")
    configure_tls(creds.private_key, creds.certificate, creds.ca_cert, replace=True)
    medians = []
    for remote in (layout.sb.remote, layout.tls.sb_chassis_remote):
        with OvsdbClient(
            remote, schema.SB_NAME, {"Chassis_Private": ["name", "external_ids"]}
        ) as c:
            row = c.wait_until(lambda s: s.one("Chassis_Private", name="hv3"), timeout=10)
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                c.transact(
                    [Mutate("Chassis_Private", row.uuid, "external_ids", "setkey", "bench", str(i))]
                )
                times.append(time.perf_counter() - t0)
            medians.append(statistics.median(times) * 1e3)
    return medians[0], medians[1]


def figures_for(results: list[dict[str, float | int | None]], flaps: float) -> list[Figure]:
    def series(key: str) -> list[float]:
        return [float(r[key]) for r in results if r[key] is not None]  # type: ignore[arg-type]

    def counts(key: str) -> str:
        values = [int(v) for v in series(key)]
        return f"{min(values)} / {statistics.median(values):g} / {max(values)}"

    leaks = [int(v) for v in series("leaked")]
    changes = [int(v) for v in series("owner_changes")]
    return [
        Figure(
            "RARP -> first delivery at D (min/med/max)",
            min_med_max(series("announce_to_delivery")),
            "1.4 / 3.1 / 7.1 ms",
        ),
        Figure(
            "RARP -> SB bound to D",
            min_med_max(series("announce_to_bound")),
            "1.3 / 2.7 / 4.7 ms",
            "OVN: RARP -> SB activated",
        ),
        Figure(
            "handoff gap (last at S -> first at D)",
            min_med_max(series("handoff_gap")),
            "median 3.1 ms",
        ),
        Figure(
            "lost if the source pauses at the RARP",
            counts("lost_at_announcement") + " pkts",
            "0 / 1 / 8 pkts",
        ),
        Figure(
            "delivered to D before activation",
            f"{sum(1 for v in leaks if v)} of {len(leaks)} runs (max {max(leaks)} pkts)",
            "7 of 50 runs (2-7 pkts)",
        ),
        Figure(
            "owner changes per migration",
            f"{min(changes)}..{max(changes)} "
            f"({sum(1 for c in changes if c != 1)} runs not exactly 1)",
            "1; 10 of 50 completions D -> none -> D",
        ),
        Figure("same iface-id on 2 chassis: owner changes/s", f"{flaps:.2f}", "4 per second"),
    ]


def main(runs: int) -> None:
    OUT.mkdir(exist_ok=True)
    plain, flaps, _ = migrations(runs, secure=False)
    secure, secure_flaps, cost = migrations(runs, secure=True)
    assert cost is not None
    print_table(f"live migration, {runs} runs at {RATE:.0f} packets/s", figures_for(plain, flaps))
    secure_figures = figures_for(secure, secure_flaps)
    secure_figures.append(
        Figure(
            "SB transaction, chassis row: unix / TLS+RBAC",
            f"{cost[0]:.2f} / {cost[1]:.2f} ms (+{cost[1] - cost[0]:.2f})",
            "+~0.1 ms",
            "median of 300, sequential",
        )
    )
    print_table(f"the same in a secure lab (TLS everywhere, SB RBAC), {runs} runs", secure_figures)
    (OUT / "migration.json").write_text(
        json.dumps(
            {
                "plain": {"runs": plain, "flaps_per_second": flaps},
                "secure": {
                    "runs": secure,
                    "flaps_per_second": secure_flaps,
                    "sb_transaction_ms": {"unix": cost[0], "tls_rbac": cost[1]},
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"   raw results: {OUT / 'migration.json'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
