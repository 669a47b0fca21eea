"""liveport against upstream OVN 23.03, measured in the same run on the same machine: the
measuring behind `liveport bench compare` and bench/compare.py.

Two labs run side by side -- `lab up --engine liveport` and `--engine ovn` -- with the same
chassis, underlay, VMs, traffic generator (peer on hv3 -> vm1 UDP at 1000 packets/s),
captures and clock; each engine is driven by its own CMS client in its own form
(lab.engine_cms). Measured for both:

1. migrations: vm1 hv1 <-> hv2 through hypervisor.migrate (destination plugged, ready, 100 ms
   pre-copy, 20 ms pause, RARPs on QEMU's schedule), then the CMS completes and the source
   VIF goes (Nova's order; Config.unplug_first reverses the last two).
   One unmeasured warm-up each; the measured runs are interleaved (liveport's run i, OVN's
   run i, in alternating order) so that load from elsewhere falls on both alike.
2. a guest that announces with GARP and NA only: does the destination deliver before the CMS
   completes (within garp_wait seconds of the first announcement)?
3. two chassis holding a VIF with the same iface-id and no options: owner changes per second
   and the CPU time of the chassis' control-plane daemons meanwhile (and before and after).
4. binding N new ports on one chassis (fresh labs): time to all bound in the SB and all up in
   the NB; RSS of the chassis daemon, the SB server and northd afterwards.
5. security groups (liveport.lab.compare_sg, fresh labs): TCP connections through a
   migration, and N ports in Neutron's default security group bound on one chassis.
6. a provider network (liveport.lab.compare_provider, two more labs): an external host on a
   VLAN behind the lab's ToR sends a VM UDP while it migrates; what the VM got and what the
   physical switch did (stale forwarding to the source, MAC moves).

Config.parts (`--only`) selects among migrations (1-3, which share two labs), bind (4),
sg (5) and provider (6).

The report is liveport.lab.comparison's: every figure with both values, the ratio and the
better engine, reported as measured.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Container, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liveport.cms.migrate import Cms
from liveport.cms.ovn import OvnCms
from liveport.lab import analysis, compare_provider, compare_sg, demo, hypervisor, lab, vms
from liveport.lab.compare_provider import ProviderConfig, ProviderResults
from liveport.lab.compare_sg import MigrationForm, SgConfig, SgResults
from liveport.lab.comparison import Figure, median, min_med_max, report_json
from liveport.lab.engines import (
    LAB_RETRIES,
    BindClients,
    central_daemons,
    chassis_daemons,
    cpu_ms,
    cpu_of,
    destination_vif,
    engine_lab,
    lost_after_handover,
    mac,
    machine,
    memory,
    ms,
    run_vifs,
    vif_deliveries,
    wait_for_seq,
)
from liveport.lab.owners import OwnerWatch, collapse, empty_blips, same_owner_blips
from liveport.lab.traffic import Traffic
from liveport.model.errors import InvalidInput, LiveportError
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Insert, Mutate, Ref

Progress = Callable[[str], None]
ENGINES = ("liveport", "ovn")
RUNS_ENV = "LIVEPORT_COMPARE_RUNS"
VM, PEER, TWIN = "vm1", "peer", "twin"
WINDOW_MS = (-100.0, 300.0)  # timeline plot: around the first announcement
BATCH = 1000
# The parts of the comparison: migrations (with the GARP-only guest and the twins, in the
# same two labs), binding N ports, security groups (liveport.lab.compare_sg), a provider
# network (liveport.lab.compare_provider).
PARTS = ("migrations", "bind", "sg", "provider")


@dataclass(frozen=True)
class Config:
    runs: int = 20
    rate: float = 1000.0
    precopy_ms: float = 100.0
    pause_ms: float = 20.0
    garp_wait: float = 5.0
    flap_seconds: float = 5.0
    idle_seconds: float = 2.0  # CPU baseline before, and the tail after, the twin episode
    bind_sizes: tuple[int, ...] = (1, 100, 1000)
    bind_repeats: int = 3  # fresh labs per size up to 100 ports (larger sizes: one)
    # Nova's order: the CMS completes (migrate_instance_start activates the destination
    # binding), then the source VIF goes (post_live_migration_at_source unplugs it).
    # unplug_first reverses it, as bench/migration.py does.
    unplug_first: bool = False
    parts: tuple[str, ...] = PARTS  # which parts of the comparison run (--only)
    sg: SgConfig = field(default_factory=SgConfig)
    provider: ProviderConfig = field(default_factory=ProviderConfig)

    def check(self) -> Config:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise InvalidInput(
                f"--only takes parts among {', '.join(PARTS)} (comma-separated), not "
                f"{','.join(self.parts)!r}"
            )
        self.sg.check()
        self.provider.check()
        if self.runs < 1:
            raise InvalidInput("--runs must be at least 1")
        if not 0 < self.rate <= 5000:
            raise InvalidInput("--rate must be between 0 and 5000 packets/s")
        if self.garp_wait <= 0 or self.flap_seconds <= 0:
            raise InvalidInput("--garp-wait and --flap-seconds must be positive")
        if any(n < 1 or n > 10000 for n in self.bind_sizes):
            raise InvalidInput("--bind-sizes must be between 1 and 10000 ports")
        return self

    def repeats(self, ports: int) -> int:
        return self.bind_repeats if ports <= 100 else 1

    def runs_part(self, part: str) -> bool:
        return part in self.parts

    @property
    def migration_form(self) -> MigrationForm:
        return MigrationForm(self.precopy_ms, self.pause_ms, self.unplug_first)


def default_runs(fallback: int = 20) -> int:
    text = os.environ.get(RUNS_ENV, "")
    try:
        return int(text) if text else fallback
    except ValueError:
        raise InvalidInput(f"${RUNS_ENV} must be a number of runs, not {text!r}") from None


# ----- one engine's lab -----------------------------------------------------------------------


def build_network(directory: Path) -> None:
    """The same logical network for both engines: vm1 (requested-chassis=hv1, so both
    engines' CMS use OVN's requested-chassis=S,D form) on hv1, peer on hv3."""
    demo.build_network(directory, requested_chassis="hv1")


@dataclass
class Engine:
    """One engine's migration lab: its CMS, its owner watch, where vm1 runs now."""

    name: str
    directory: Path
    cms: Cms | OvnCms
    watch: OwnerWatch
    where: str = "hv1"
    runs: list[dict[str, Any]] = field(default_factory=list)
    timelines: list[list[tuple[float, bool]]] = field(default_factory=list)
    garp: dict[str, Any] = field(default_factory=dict)
    twins: dict[str, Any] = field(default_factory=dict)

    @property
    def other(self) -> str:
        return "hv2" if self.where == "hv1" else "hv1"


# ----- captures -------------------------------------------------------------------------------


def _complete(e: Engine, cfg: Config) -> None:
    e.cms.complete(VM)
    if not cfg.unplug_first:
        hypervisor.finish(e.directory, VM)


def _first_delivery(path: Path, seqs: Container[int], since: float) -> float | None:
    return next((d.at for d in vif_deliveries(path, "", seqs) if d.at >= since), None)


# ----- 1. migrations --------------------------------------------------------------------------


def one_migration(e: Engine, run: int, cfg: Config, *, record_timeline: bool = True) -> None:
    source, destination = e.where, e.other
    start = time.time()
    traffic = Traffic(e.directory, PEER, VM, rate=cfg.rate, first_seq=run * 1_000_000).start()
    try:
        time.sleep(0.2)  # steady traffic first
        e.cms.start(VM, destination)
        record = hypervisor.migrate(
            e.directory,
            VM,
            destination,
            announce="rarp",
            precopy_ms=cfg.precopy_ms,
            pause_ms=cfg.pause_ms,
            remove_source=cfg.unplug_first,
        )
        _complete(e, cfg)
        time.sleep(0.2)  # steady traffic after completion (an emptied binding shows here)
    finally:
        sent = traffic.stop()
    e.where = destination
    src_pcap, dst_pcap = run_vifs(e.directory, VM, source, destination)
    wait_for_seq(dst_pcap, sent[-1].seq, timeout=1.0)
    end = time.time()
    if not record_timeline:
        return
    seqs = {s.seq for s in sent}
    got = vif_deliveries(src_pcap, source, seqs) + vif_deliveries(dst_pcap, destination, seqs)
    announced = [t for t in analysis.announcements(e.directory, VM, destination) if t >= start]
    report = analysis.analyse(sent, got, announced, record)
    history = e.watch.history
    owners = collapse(s.owner for s in history.seen(VM, start) if s.at <= end)
    handover = history.handover_at(VM, destination, since=start)
    zero = report.announced_at
    e.runs.append(
        {
            "run": run,
            "source": source,
            "destination": destination,
            "sent": report.sent,
            "announce_to_delivery_ms": ms(report.announce_to_delivery),
            "announce_to_handover_ms": ms(handover - zero)
            if handover is not None and zero is not None
            else None,
            "handoff_gap_ms": ms(report.handoff_gap),
            "lost_at_announcement": report.lost_at_announcement,
            "lost_running": report.lost_running,
            "lost_after_handover": lost_after_handover(sent, got, destination, zero),
            "leaked": report.leaked,
            "owners": owners,
            "owner_changes": max(0, len(owners) - 1),
            "empty_blips": empty_blips(owners),
            "same_owner_blips": same_owner_blips(owners),
        }
    )
    lo, hi = WINDOW_MS
    e.timelines.append(
        [
            ((d.at - zero) * 1000, d.chassis == destination)
            for d in got
            if zero is not None and lo <= (d.at - zero) * 1000 <= hi
        ]
    )


# ----- 2. a guest that announces with GARP and NA only ------------------------------------------


def garp_only(e: Engine, cfg: Config) -> None:
    source, destination = e.where, e.other
    run = 999
    start = time.time()
    traffic = Traffic(e.directory, PEER, VM, rate=cfg.rate, first_seq=run * 1_000_000).start()
    result: dict[str, Any] = {"source": source, "destination": destination}
    try:
        time.sleep(0.2)
        e.cms.start(VM, destination)
        hypervisor.migrate(
            e.directory,
            VM,
            destination,
            announce="garp+na",
            precopy_ms=cfg.precopy_ms,
            pause_ms=cfg.pause_ms,
            remove_source=cfg.unplug_first,
        )
        announced = min(
            (t for t in analysis.announcements(e.directory, VM, destination) if t >= start),
            default=None,
        )
        if announced is None:
            raise LiveportError("the GARP-only migration's announcements were not captured")
        dst_pcap = destination_vif(e.directory, VM, destination)
        window = range(run * 1_000_000, (run + 1) * 1_000_000)  # this run's datagrams
        first = None
        while first is None and time.time() < announced + cfg.garp_wait:
            first = _first_delivery(dst_pcap, window, announced)
            time.sleep(0.02)
        result["activated_before_completion"] = first is not None
        result["announce_to_delivery_ms"] = ms(first - announced) if first is not None else None
        completed = time.time()
        _complete(e, cfg)
        after = None
        while after is None and time.time() < completed + cfg.garp_wait:
            after = _first_delivery(dst_pcap, window, completed)
            time.sleep(0.02)
        result["completion_to_delivery_ms"] = ms(after - completed) if after is not None else None
        result["waited_s"] = completed - announced
        time.sleep(0.1)
    finally:
        traffic.stop()
    e.where = destination
    e.garp = result


# ----- 3. the same iface-id on two chassis -----------------------------------------------------


def twins(e: Engine, cfg: Config) -> None:
    d = e.directory
    demo.nbctl(
        d, "lsp-add", "ls0", TWIN, "--", "lsp-set-addresses", TWIN, "00:00:00:00:00:44 10.0.0.44"
    )
    vms.add(d, TWIN, chassis="hv1", port=TWIN, mac="00:00:00:00:00:44", ips=["10.0.0.44"])
    demo.nbctl(d, "wait-until", "Logical_Switch_Port", TWIN, "up=true")
    demo.nbctl(d, "--wait=hv", "sync")
    pids = chassis_daemons(d)
    central = central_daemons(d)
    both = {**pids, **central}
    t0, c0 = time.time(), cpu_of(both)
    time.sleep(cfg.idle_seconds)  # idle baseline
    t1, c1 = time.time(), cpu_of(both)
    vms.add(d, "twin2", chassis="hv2", port=TWIN, mac="00:00:00:00:00:44", ips=["10.0.0.44"])
    end = t1 + cfg.flap_seconds
    while time.time() < end:
        vms.send(d, "twin2", vms.SendSpec(kind="garp"))  # it even announces itself
        time.sleep(0.25)
    t2, c2 = time.time(), cpu_of(both)
    vms.delete(d, "twin2")
    time.sleep(cfg.idle_seconds)
    t3, c3 = time.time(), cpu_of(both)
    owners = collapse(s.owner for s in e.watch.history.seen(TWIN, t1) if s.at <= t2)
    only = list(pids)
    e.twins = {
        "seconds": t2 - t1,
        "owners": owners,
        "owner_changes": max(0, len(owners) - 1),
        "changes_per_s": max(0, len(owners) - 1) / (t2 - t1),
        "idle_seconds": t1 - t0,
        "after_seconds": t3 - t2,
        "chassis_cpu_idle_ms": cpu_ms(_pick(c0, only), _pick(c1, only)),
        "chassis_cpu_ms": cpu_ms(_pick(c1, only), _pick(c2, only)),
        "chassis_cpu_after_ms": cpu_ms(_pick(c2, only), _pick(c3, only)),
        "central_cpu_ms": cpu_ms(_pick(c1, central), _pick(c2, central)),
        "per_daemon_cpu_ms": {r: cpu_ms({r: c1[r]}, {r: c2[r]}) for r in both},
    }


def _pick(values: dict[str, float], roles: Sequence[str] | dict[str, int]) -> dict[str, float]:
    return {r: values[r] for r in roles}


# ----- 4. binding N ports -----------------------------------------------------------------------


def bind(engine: str, n: int) -> dict[str, Any]:
    """A fresh lab; n ports created in the NB and caught up everywhere; then hv1 plugs n VIFs
    in one OVSDB transaction: time to all bound (SB) and all up (NB), RSS afterwards."""
    with engine_lab(engine) as d, BindClients(d) as clients:
        create_ports(clients.nb, n)
        binding = clients.bind(n)
        return {
            "engine": engine,
            "ports": n,
            "bound_s": binding.bound_s,
            "up_s": binding.up_s,
            **memory(d),
        }
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


def create_ports(nb: OvsdbClient, n: int) -> None:
    """Switch `bench` with n ports b0..b(n-1), a MAC and an IPv4 address each."""
    nb.transact([Insert("Logical_Switch", {"name": "bench"}, name="ls")])
    ls = nb.wait_until(lambda s: s.one("Logical_Switch", name="bench"), timeout=30)
    for first in range(0, n, BATCH):
        ops: list[Insert | Mutate] = []
        refs = []
        for i in range(first, min(n, first + BATCH)):
            refs.append(Ref(f"p{i}"))
            ops.append(
                Insert(
                    "Logical_Switch_Port",
                    {
                        "name": f"b{i}",
                        "addresses": [f"{mac(i)} 10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"],
                    },
                    name=f"p{i}",
                )
            )
        ops += [Mutate("Logical_Switch", ls.uuid, "ports", "add", r) for r in refs]
        nb.transact(ops, timeout=120)


# ----- the whole comparison ---------------------------------------------------------------------


@dataclass
class Results:
    config: Config
    machine: dict[str, Any]
    engines: dict[str, Engine]
    binds: list[dict[str, Any]]
    sg: SgResults | None = None
    provider: ProviderResults | None = None
    seconds: float = 0.0

    def figures(self) -> list[Figure]:
        return figures(self)

    def to_json(self) -> dict[str, Any]:
        return report_json(
            self.figures(),
            machine=self.machine,
            config={**asdict(self.config), "seconds": self.seconds},
            fairness=fairness(self.config),
            raw={
                "migrations": {name: e.runs for name, e in self.engines.items()},
                "garp_only": {name: e.garp for name, e in self.engines.items()},
                "same_iface_id": {name: e.twins for name, e in self.engines.items()},
                "bind": self.binds,
                "security_groups": self.sg.to_json() if self.sg is not None else None,
                "provider": self.provider.to_json() if self.provider is not None else None,
            },
        )


FAIRNESS = (
    "Same machine, same run, same lab code for both engines: identical OVS 3.1 chassis on the "
    "dummy datapath, underlay, VMs, traffic generator (one Python thread, 1000 packets/s), "
    "pcap captures and one clock.",
    "Migrations are interleaved (run i of each engine, in alternating order) after one "
    "unmeasured warm-up migration each, so load from other work falls on both alike.",
    "Each engine is driven by its own CMS client in its own form. OVN: "
    "requested-chassis=S,D plus activation-strategy=rarp (the only strategy OVN 23.03 has), "
    "completion requested-chassis=D. liveport: the same requested-chassis values, with its "
    "default strategy (rarp, garp, na).",
    "The hypervisor starts moving the VM when the engine says D is ready: liveport's per-port, "
    "barrier-confirmed 'installed'; OVN has no per-port signal, so D's additional-chassis "
    "claim plus an hv_cfg sync (ovn-nbctl --wait=hv sync). That wait is in no figure.",
    "'announcement -> SB records the handover' is a different event per engine: liveport "
    "binds the port to D; OVN sets options:additional-chassis-activated (its "
    "Port_Binding.chassis stays S until completion).",
    "Owner changes are counted from each engine's own SB Port_Binding.chassis by the same "
    "watcher; OVSDB may merge states shorter than an update, for both engines, so the counts "
    "are lower bounds.",
    "CPU is utime+stime from /proc of ovn-controller (C) and liveport-agent (Python), "
    "including each daemon's idle background (shown separately).",
    "Binding: both engines' chassis have caught up with the new ports (hv_cfg sync) before "
    "hv1 plugs them in one OVSDB transaction; fresh lab per size.",
)
ORDER = {
    False: "Completion in Nova's order for both: the CMS completes (Nova's "
    "migrate_instance_start activates the destination binding), then the source VIF is "
    "removed (post_live_migration_at_source unplugs it).",
    True: "Completion after the source VIF is removed (--unplug-first, bench/migration.py's "
    "order): OVN's source chassis then releases the port before the CMS completes, so its "
    "binding goes S -> none -> D; Nova completes first.",
}


# Which parts each line of FAIRNESS concerns, in its order.
_FAIRNESS_PARTS = (
    PARTS,
    ("migrations", "provider"),
    ("migrations", "sg", "provider"),
    ("migrations", "sg", "provider"),
    ("migrations",),
    ("migrations",),
    ("migrations",),
    ("bind",),
)


def fairness(cfg: Config) -> list[str]:
    """The fairness notes that concern the parts that ran."""
    out = [
        line
        for line, parts in zip(FAIRNESS, _FAIRNESS_PARTS, strict=True)
        if any(cfg.runs_part(p) for p in parts)
    ]
    if any(cfg.runs_part(p) for p in ("migrations", "sg", "provider")):
        out.append(ORDER[cfg.unplug_first])
    if cfg.runs_part("sg"):
        out += compare_sg.FAIRNESS
    if cfg.runs_part("provider"):
        out += compare_provider.fairness(cfg.provider)
    return out


def run(cfg: Config, progress: Progress) -> Results:
    cfg.check()
    began = time.monotonic()
    LAB_RETRIES.clear()

    def say(text: str) -> None:
        progress(f"[{time.monotonic() - began:6.1f}s] {text}")

    info = machine()
    engines = migrations(cfg, say) if cfg.runs_part("migrations") else {}
    binds = bind_all(cfg, say) if cfg.runs_part("bind") else []
    sg = compare_sg.run(cfg.sg, say, cfg.migration_form) if cfg.runs_part("sg") else None
    provider = (
        compare_provider.run(cfg.provider, say, cfg.migration_form)
        if cfg.runs_part("provider")
        else None
    )
    info["loadavg_end"] = list(os.getloadavg())
    info["lab_start_retries"] = list(LAB_RETRIES)
    for failure in LAB_RETRIES:
        say(f"note: a lab start-up failed and was retried once ({failure})")
    results = Results(cfg, info, engines, binds, sg, provider, seconds=time.monotonic() - began)
    say("done")
    return results


def migrations(cfg: Config, say: Progress) -> dict[str, Engine]:
    """Parts 1-3 in two labs, one per engine."""
    engines: dict[str, Engine] = {}
    with ExitStack() as stack:
        for name in ENGINES:
            say(f"{name}: lab up (3 chassis), network, vm1 on hv1, peer on hv3")
            directory = stack.enter_context(engine_lab(name))
            build_network(directory)
            cms: Cms | OvnCms = lab.engine_cms(directory)
            stack.callback(cms.close)
            watch = stack.enter_context(OwnerWatch(directory, [VM, TWIN]))
            engines[name] = Engine(name, directory, cms, watch)
        for e in engines.values():
            one_migration(e, 0, cfg, record_timeline=False)
            say(f"{e.name}: warm-up migration done")
        for run_no in range(1, cfg.runs + 1):
            order = ENGINES if run_no % 2 else tuple(reversed(ENGINES))
            for name in order:
                e = engines[name]
                one_migration(e, run_no, cfg)
                r = e.runs[-1]
                say(
                    f"{name:<8} migration {run_no}/{cfg.runs} {r['source']} -> "
                    f"{r['destination']}: announcement -> delivery "
                    f"{_fmt_ms(r['announce_to_delivery_ms'])}, lost {r['lost_at_announcement']}"
                    f", leaked {r['leaked']}, owners {_owners(r['owners'])}"
                )
        for e in engines.values():
            garp_only(e, cfg)
            g = e.garp
            say(f"{e.name}: GARP/NA-only guest, D delivers before completion: {_garp_text(g)}")
        for e in engines.values():
            twins(e, cfg)
            say(
                f"{e.name}: same iface-id on hv1 and hv2: {e.twins['changes_per_s']:.2f} owner "
                f"changes/s, chassis daemons {e.twins['chassis_cpu_ms']:.0f} ms CPU"
            )
    return engines


def bind_all(cfg: Config, say: Progress) -> list[dict[str, Any]]:
    """Part 4: every size, fresh labs, the engines in alternating order."""
    binds = []
    for n in cfg.bind_sizes:
        for rep in range(cfg.repeats(n)):
            for name in ENGINES if rep % 2 == 0 else tuple(reversed(ENGINES)):
                result = bind(name, n)
                binds.append(result)
                say(
                    f"{name}: {n} ports bound in {result['bound_s'] * 1000:.0f} ms, up in "
                    f"{result['up_s'] * 1000:.0f} ms, chassis daemon "
                    f"{result['chassis_daemon_mb']:.0f} MB"
                )
    return binds


def _owners(owners: Sequence[str | None]) -> str:
    return " -> ".join(o or "none" for o in owners)


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


# ----- figures ------------------------------------------------------------------------------


def _series(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None]


def _dist(section: str, name: str, res: Results, key: str, unit: str, note: str = "") -> Figure:
    lv = _series(res.engines["liveport"].runs, key)
    ov = _series(res.engines["ovn"].runs, key)
    return Figure(
        section,
        name + " (min / med / max)",
        median(lv),
        median(ov),
        unit,
        liveport_text=min_med_max(lv, unit),
        ovn_text=min_med_max(ov, unit),
        note=note,
    )


def _runs_with(res: Results, engine: str, key: str) -> tuple[int, int, int]:
    """(runs where key > 0, runs, max value)."""
    values = [int(v) for v in _series(res.engines[engine].runs, key)]
    return sum(1 for v in values if v), len(values), max(values, default=0)


def figures(res: Results) -> list[Figure]:
    """The figures of the parts that ran, in the order of the table."""
    out = []
    if res.config.runs_part("migrations"):
        out += migration_figures(res)
    if res.config.runs_part("bind"):
        out += bind_figures(res)
    if res.sg is not None:
        out += compare_sg.figures(res.sg)
    if res.provider is not None:
        out += compare_provider.figures(res.provider)
    return out


def migration_figures(res: Results) -> list[Figure]:
    cfg = res.config
    sec = f"live migration, {cfg.runs} runs each at {cfg.rate:.0f} packets/s (RARP)"
    out = [
        _dist(sec, "RARP at D -> first delivery at D", res, "announce_to_delivery_ms", "ms"),
        _dist(
            sec,
            "RARP at D -> SB records the handover",
            res,
            "announce_to_handover_ms",
            "ms",
            "liveport: bound to D; OVN: additional-chassis-activated=D",
        ),
        _dist(sec, "handoff gap (last at S -> first at D)", res, "handoff_gap_ms", "ms"),
        _dist(sec, "lost if the source pauses at the RARP", res, "lost_at_announcement", "pkts"),
        _dist(
            sec,
            "lost with the emulated 20 ms pause",
            res,
            "lost_running",
            "pkts",
            "both: the pause plus 50 ms until QEMU's first RARP",
        ),
        _dist(
            sec,
            "lost at D after the handover",
            res,
            "lost_after_handover",
            "pkts",
            "sent after D's first delivery, never delivered at D (completion included)",
        ),
    ]
    for key, name in (
        ("leaked", "runs with deliveries to D before any RARP"),
        ("empty_blips", "runs whose binding went empty (X -> none -> Y)"),
        ("same_owner_blips", "runs with D -> none -> D"),
    ):
        lk, ln, lmax = _runs_with(res, "liveport", key)
        ok, on, omax = _runs_with(res, "ovn", key)
        unit = "pkts" if key == "leaked" else "times"
        out.append(
            Figure(
                sec,
                name,
                float(lk),
                float(ok),
                liveport_text=f"{lk} of {ln} (max {lmax} {unit})",
                ovn_text=f"{ok} of {on} (max {omax} {unit})",
            )
        )
    lc = _series(res.engines["liveport"].runs, "owner_changes")
    oc = _series(res.engines["ovn"].runs, "owner_changes")
    out.append(
        Figure(
            sec,
            "owner changes per migration (min / med / max)",
            median(lc),
            median(oc),
            better="info",
            liveport_text=min_med_max(lc, ""),
            ovn_text=min_med_max(oc, ""),
            note="1 is right: S -> D once",
        )
    )
    out.append(
        Figure(
            sec,
            "runs without exactly one owner change",
            float(sum(1 for c in lc if c != 1)),
            float(sum(1 for c in oc if c != 1)),
            liveport_text=f"{sum(1 for c in lc if c != 1)} of {len(lc)}",
            ovn_text=f"{sum(1 for c in oc if c != 1)} of {len(oc)}",
        )
    )
    sec = "a guest that announces with GARP and NA only (no RARP)"
    lg, og = res.engines["liveport"].garp, res.engines["ovn"].garp
    out.append(
        Figure(
            sec,
            f"D delivers before completion (wait {cfg.garp_wait:g} s)",
            bool(lg.get("activated_before_completion")),
            bool(og.get("activated_before_completion")),
            better="yes",
            liveport_text=_garp_text(lg),
            ovn_text=_garp_text(og),
        )
    )
    out.append(
        Figure(
            sec,
            "announcement -> first delivery at D",
            lg.get("announce_to_delivery_ms") or float("inf"),
            og.get("announce_to_delivery_ms") or float("inf"),
            "ms",
            note="'never': blocked until the CMS completed",
        )
    )
    sec = f"the same iface-id on two chassis, no options ({cfg.flap_seconds:g} s)"
    lt, ot = res.engines["liveport"].twins, res.engines["ovn"].twins
    out += [
        Figure(sec, "owner changes per second", lt["changes_per_s"], ot["changes_per_s"], "/s"),
        Figure(
            sec,
            f"CPU time of the 3 chassis daemons in the {cfg.flap_seconds:g} s",
            lt["chassis_cpu_ms"],
            ot["chassis_cpu_ms"],
            "ms",
            note="utime+stime, summed: liveport-agents / ovn-controllers; 10 ms resolution",
        ),
        Figure(
            sec,
            f"the same, idle, in the {cfg.idle_seconds:g} s before",
            lt["chassis_cpu_idle_ms"],
            ot["chassis_cpu_idle_ms"],
            "ms",
        ),
        Figure(
            sec,
            f"the same, in the {cfg.idle_seconds:g} s after the second VIF left",
            lt["chassis_cpu_after_ms"],
            ot["chassis_cpu_after_ms"],
            "ms",
        ),
        Figure(
            sec,
            f"CPU time of northd + SB server in the {cfg.flap_seconds:g} s",
            lt["central_cpu_ms"],
            ot["central_cpu_ms"],
            "ms",
        ),
    ]
    return out


def bind_figures(res: Results) -> list[Figure]:
    cfg = res.config
    out: list[Figure] = []
    sec = "binding N new ports on one chassis (one OVSDB transaction)"
    for n in cfg.bind_sizes:
        ports = f"{n} port{'' if n == 1 else 's'}"
        lb = [b for b in res.binds if b["engine"] == "liveport" and b["ports"] == n]
        ob = [b for b in res.binds if b["engine"] == "ovn" and b["ports"] == n]
        if not lb or not ob:
            continue
        for key, name, unit, scale, note in (
            ("bound_s", "all bound (SB)", "ms", 1000.0, ""),
            ("up_s", "all up (NB)", "ms", 1000.0, ""),
            ("chassis_daemon_mb", "chassis daemon RSS", "MB", 1.0, _RSS_NOTE),
            ("sb_mb", "SB ovsdb-server RSS", "MB", 1.0, ""),
            ("northd_mb", "northd RSS", "MB", 1.0, ""),
        ):
            lv = [b[key] * scale for b in lb]
            ov = [b[key] * scale for b in ob]
            many = len(lv) > 1 or len(ov) > 1
            out.append(
                Figure(
                    sec,
                    f"{ports}: {name}" + (" (min / med / max)" if many else ""),
                    median(lv),
                    median(ov),
                    unit,
                    liveport_text=min_med_max(lv, unit) if many else "",
                    ovn_text=min_med_max(ov, unit) if many else "",
                    note=note,
                )
            )
    return out


_RSS_NOTE = "liveport-agent / ovn-controller on hv1"


def _garp_text(g: dict[str, Any]) -> str:
    if not g:
        return "n/a"
    if g.get("activated_before_completion"):
        return f"yes, {_fmt_ms(g['announce_to_delivery_ms'])} after the GARP"
    after = g.get("completion_to_delivery_ms")
    return "no" + (f" (delivers {_fmt_ms(after)} after completion)" if after is not None else "")


# ----- output ------------------------------------------------------------------------------------


def plot_timelines(res: Results, path: Path) -> Path:
    """Every measured migration of both engines: deliveries at S and at D around the first
    RARP (one row per run), and the distribution of RARP -> first delivery at D."""
    import matplotlib  # noqa: PLC0415 - optional extra, slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(15, 0.22 * res.config.runs + 3.5))
    for ax, name in zip(axes[:2], ENGINES, strict=True):
        e = res.engines[name]
        for i, line in enumerate(e.timelines, start=1):
            s = [t for t, at_d in line if not at_d]
            d = [t for t, at_d in line if at_d]
            ax.scatter(d, [i + 0.15] * len(d), s=9, marker="|", color="tab:orange", linewidths=0.7)
            ax.scatter(s, [i - 0.15] * len(s), s=9, marker="|", color="tab:blue", linewidths=0.7)
        ax.axvline(0, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlim(*WINDOW_MS)
        ax.set_ylim(0.3, max(1, len(e.timelines)) + 0.7)
        ax.invert_yaxis()
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("ms from the first RARP at D")
        ax.set_ylabel("migration")
        med = median(_series(e.runs, "announce_to_delivery_ms"))
        ax.set_title(
            f"{'liveport' if name == 'liveport' else 'OVN 23.03'}: delivered at S (blue), "
            f"at D (orange)\nRARP -> D median {_fmt_ms(med)}",
            fontsize=9,
        )
    ax = axes[2]
    for name, color in zip(ENGINES, ("tab:green", "tab:red"), strict=True):
        values = sorted(_series(res.engines[name].runs, "announce_to_delivery_ms"))
        if values:
            ax.step(
                [values[0], *values],
                [0.0] + [(i + 1) / len(values) for i in range(len(values))],
                where="post",
                color=color,
                label="liveport" if name == "liveport" else "OVN 23.03",
            )
    ax.set_xlabel("RARP at D -> first delivery at D (ms)")
    ax.set_ylabel("fraction of migrations")
    ax.set_title("distribution", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"live migration under {res.config.rate:.0f} packets/s, same lab, same run", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bind(res: Results, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in zip(ENGINES, ("tab:green", "tab:red"), strict=True):
        rows = [b for b in res.binds if b["engine"] == name]
        label = "liveport" if name == "liveport" else "OVN 23.03"
        ns = sorted({b["ports"] for b in rows})

        for key, style, what in (("bound_s", "o-", "all bound"), ("up_s", "s--", "all up")):
            medians = [statistics.median(b[key] for b in rows if b["ports"] == n) for n in ns]
            ax.plot(ns, medians, style, color=color, label=f"{label}: {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ports plugged at once on one chassis")
    ax.set_ylabel("seconds")
    ax.set_title("binding N new ports (medians)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(res: Results, output: Path) -> list[Path]:
    """compare.json and, with matplotlib, the two plots, into output."""
    import json  # noqa: PLC0415

    output.mkdir(parents=True, exist_ok=True)
    written = [output / "compare.json"]
    written[0].write_text(json.dumps(res.to_json(), indent=2) + "\n")
    try:
        if res.engines:
            written.append(plot_timelines(res, output / "compare-timelines.png"))
        if res.binds:
            written.append(plot_bind(res, output / "compare-bind.png"))
    except ImportError:
        pass  # matplotlib is the bench extra; the JSON and the table stand alone
    return written
