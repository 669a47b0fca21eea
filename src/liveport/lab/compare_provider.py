"""A migration on a provider network, liveport beside upstream OVN 23.03 in the same run: the
`provider` part of `liveport bench compare` (liveport.lab.compare runs it and reports its
figures).

The scenario of tests/lab/test_provider.py's migration, measured. In each engine's lab (3
chassis and the ToR), switch net100 has a localnet port on physnet1 with VLAN tag 100 (the
lab maps physnet1 to br-provider on every chassis, for both engines), P (vm1) runs on hv1
with requested-chassis=hv1, and the external host ext100 sits on the ToR's access port in
VLAN 100. ext100 sends P UDP at the configured rate (1000 datagrams/s) while P migrates
between hv1 and hv3, driven by each engine's own CMS client in OVN's form
(requested-chassis=S,D; OVN's client adds activation-strategy=rarp; completion
requested-chassis=D) and by hypervisor.migrate as in the overlay migrations (destination
plugged and ready, pre-copy, pause, QEMU's RARPs), then the source VIF goes. Before each
run P sends ext100 one datagram from S: a VM that has spoken recently, so the ToR has P's
MAC behind S when the run starts. One unmeasured warm-up migration per engine, then the
runs interleaved (run i of each engine, in alternating order); P goes hv1 -> hv3 -> hv1...

Measured per run:
- what P received (liveport.lab.analysis on its VIF captures): announcement at D -> first
  delivery at D, the handoff gap, lost if the source pauses at the announcement, lost
  running (the emulated pause), lost at D after the handover, and leaked (delivered at D
  before the announcement);
- what the physical network did, from the ToR's trunk captures: when the ToR first got a
  frame with P's source MAC from D's trunk (it learns P behind D then), how many of P's
  datagrams it still sent towards S after the announcement (and after it had learned) and
  until when, and every move of P's MAC between trunks: a frame with P's source MAC from
  another trunk than the last one moves the ToR's entry (MAC flapping when it happens
  before the announcement or back to S after it);
- the ToR's own table, sampled (fdb/show over one unixctl connection every
  `fdb_interval_ms`) for the whole run: where it put P's MAC, and when.

The ToR's datapath flow cache is emptied before each run (ProviderConfig.purge_tor_flows):
an OVS bridge does not learn at once from a frame that hits a flow it has cached, so a MAC
returning to a trunk within seconds was learned up to 455 ms late in trials, for both engines;
a hardware switch learns from the first frame. See fairness().

A failure of one engine (its lab, a migration) is recorded with its reason and ends that
engine's runs; the other engine's go on. Nothing is estimated.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.cms.migrate import Cms
from liveport.cms.ovn import OvnCms
from liveport.lab import analysis, demo, hosts, hypervisor, lab, sim, vms
from liveport.lab.compare_sg import MigrationForm
from liveport.lab.comparison import Figure, median, min_med_max
from liveport.lab.engines import (
    engine_lab,
    lost_after_handover,
    ms,
    run_vifs,
    vif_deliveries,
    wait_for_seq,
)
from liveport.lab.traffic import Sent, Traffic
from liveport.model import packets
from liveport.model.errors import InvalidInput, LiveportError
from liveport.runtime.unixctl import UnixctlClient

Say = Callable[[str], None]
ENGINES = ("liveport", "ovn")
NETWORK, LOCALNET, PHYSNET = "net100", "ln-net100", "physnet1"
VM, VM_MAC, VM_IP = "vm1", "fa:16:3e:00:10:01", "10.10.0.1"
HOST, HOST_MAC, HOST_IP = "ext100", "02:00:00:10:00:aa", "10.10.0.100"
PAIR = ("hv1", "hv3")
DEFAULT_FORM = MigrationForm()


@dataclass(frozen=True)
class ProviderConfig:
    runs: int = 5
    rate: float = 1000.0  # ext100 -> P datagrams/s
    vlan: int = 100
    fdb_interval_ms: float = 10.0  # how often the ToR's table is read during a run
    # Empty the ToR's datapath flow cache before each run, so that it learns P's move from
    # the first frame as a hardware switch does (see fairness()).
    purge_tor_flows: bool = True

    def check(self) -> ProviderConfig:
        if self.runs < 1:
            raise InvalidInput("--provider-runs must be at least 1")
        if not 0 < self.rate <= 5000:
            raise InvalidInput("--rate must be between 0 and 5000 packets/s")
        hosts.check_vlan(self.vlan)
        if not 1 <= self.fdb_interval_ms <= 1000:
            raise InvalidInput("the ToR table's sampling interval must be 1-1000 ms")
        return self


# ----- the lab --------------------------------------------------------------------------------


def build_network(directory: Path, vlan: int) -> None:
    """net100 with its localnet port (VLAN vlan) on physnet1, P on hv1, ext100 on the ToR;
    every chassis caught up; P speaks once, so the ToR has its MAC behind hv1."""
    demo.nbctl(
        directory,
        "ls-add", NETWORK,
        "--", "lsp-add", NETWORK, LOCALNET,
        "--", "lsp-set-type", LOCALNET, "localnet",
        "--", "lsp-set-addresses", LOCALNET, "unknown",
        "--", "lsp-set-options", LOCALNET, f"network_name={PHYSNET}",
        "--", "set", "Logical_Switch_Port", LOCALNET, f"tag={vlan}",
        "--", "lsp-add", NETWORK, VM,
        "--", "lsp-set-addresses", VM, f"{VM_MAC} {VM_IP}",
        "--", "lsp-set-options", VM, f"requested-chassis={PAIR[0]}",
    )  # fmt: skip
    vms.add(directory, VM, chassis=PAIR[0], port=VM, mac=VM_MAC, ips=[VM_IP])
    hosts.add(directory, HOST, mac=HOST_MAC, addresses=[HOST_IP], vlan=vlan)
    demo.nbctl(directory, "wait-until", "Logical_Switch_Port", VM, "up=true")
    demo.nbctl(directory, "--wait=hv", "sync")
    vms.send(directory, VM, vms.SendSpec(kind="udp", to=HOST))


@dataclass
class ProviderLab:
    """One engine's provider-network lab: its CMS, where P runs now, what was measured."""

    name: str
    directory: Path
    cms: Cms | OvnCms
    where: str = PAIR[0]
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def other(self) -> str:
        return PAIR[1] if self.where == PAIR[0] else PAIR[0]


# ----- the ToR's table, sampled ------------------------------------------------------------


class FdbWatch:
    """Reads the ToR's learned MAC table every interval in a thread (one unixctl connection
    to its ovs-vswitchd) and records where it had mac on vlan each time: (wall-clock time,
    port name or None). A failed read ends the watch; `error` says why."""

    def __init__(self, directory: Path, mac: str, vlan: int, interval: float) -> None:
        tor = lab.Layout.of(directory).tor
        self._ctl_path = tor.vswitchd_ctl
        self._names = hosts.port_names(tor)
        self.mac, self.vlan, self.interval = mac, vlan, interval
        self.samples: list[tuple[float, str | None]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FdbWatch:
        self._thread = threading.Thread(target=self._run, name="tor fdb watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            with UnixctlClient(self._ctl_path) as ctl:
                while not self._stop.is_set():
                    text = ctl.call("fdb/show", sim.TOR_BRIDGE)
                    at = time.time()
                    port = next(
                        (
                            self._names.get(p, p)
                            for p, vlan, mac, _ in hosts.parse_fdb(text)
                            if vlan == self.vlan and mac == self.mac
                        ),
                        None,
                    )
                    self.samples.append((at, port))
                    self._stop.wait(self.interval)
        except LiveportError as exc:
            self.error = str(exc)

    def changes(self) -> list[tuple[float, str | None]]:
        """The samples where the entry differs from the sample before (the first included)."""
        out: list[tuple[float, str | None]] = []
        for at, port in self.samples:
            if not out or out[-1][1] != port:
                out.append((at, port))
        return out


# ----- one run ---------------------------------------------------------------------------------


def one_run(e: ProviderLab, run: int, cfg: ProviderConfig, form: MigrationForm) -> None:
    """P migrates from where it runs to the other chassis of PAIR under ext100's traffic;
    appends what was measured to e.runs (run 0 is the warm-up: measured, not kept)."""
    d = e.directory
    source, destination = e.where, e.other
    start = time.time()
    if cfg.purge_tor_flows:
        lab.Layout.of(d).tor.appctl("revalidator/purge")
    vms.send(d, VM, vms.SendSpec(kind="udp", to=HOST))  # P speaks at S: the ToR has it there
    with FdbWatch(d, VM_MAC, cfg.vlan, cfg.fdb_interval_ms / 1000) as fdb:
        traffic = Traffic(d, HOST, VM, rate=cfg.rate, first_seq=run * 1_000_000 + 1).start()
        try:
            time.sleep(0.2)  # steady traffic first
            e.cms.start(VM, destination)
            record = hypervisor.migrate(
                d,
                VM,
                destination,
                announce="rarp",
                precopy_ms=form.precopy_ms,
                pause_ms=form.pause_ms,
                remove_source=form.unplug_first,
            )
            e.cms.complete(VM)
            completed = time.time()
            if not form.unplug_first:
                hypervisor.finish(d, VM)
            time.sleep(0.2)  # steady traffic after completion
        finally:
            sent = traffic.stop()
    e.where = destination
    src_pcap, dst_pcap = run_vifs(d, VM, source, destination)
    wait_for_seq(dst_pcap, sent[-1].seq, timeout=1.0)
    end = time.time()
    if run == 0:
        return
    seqs = {s.seq for s in sent}
    got = vif_deliveries(src_pcap, source, seqs) + vif_deliveries(dst_pcap, destination, seqs)
    announced = [t for t in analysis.announcements(d, VM, destination) if t >= start]
    report = analysis.analyse(sent, got, announced, record)
    zero = report.announced_at
    result: dict[str, Any] = {
        "run": run,
        "source": source,
        "destination": destination,
        "sent": report.sent,
        "announce_to_delivery_ms": ms(report.announce_to_delivery),
        "handoff_gap_ms": ms(report.handoff_gap),
        "lost_at_announcement": report.lost_at_announcement,
        "lost_running": report.lost_running,
        "lost_after_handover": lost_after_handover(sent, got, destination, zero),
        "leaked": report.leaked,
        "delivered_source": report.delivered_source,
        "delivered_destination": report.delivered_destination,
    }
    result["completed_ms"] = ms(completed - zero) if zero is not None else None
    result["longest_hole_at_destination"] = longest_hole(sent, got, destination, zero)
    result["lost_at_announcement_went"] = lost_where(d, sent, got, source, destination, zero)
    result.update(tor_figures(d, source, destination, seqs, zero, (start, end)))
    result.update(fdb_figures(fdb, source, destination, zero))
    result["migration_events"] = [(name, round(at - start, 6)) for name, at in record.events]
    e.runs.append(result)


def lost_where(
    directory: Path,
    sent: Sequence[Sent],
    got: Sequence[analysis.Delivery],
    source: str,
    destination: str,
    zero: float | None,
) -> dict[str, int]:
    """Where the datagrams lost if the source pauses at the announcement went (the ToR's
    trunk captures): sent towards S (by the ToR, before it learned P behind D, or after),
    towards D (lost inside D), or to neither."""
    horizon = zero if zero is not None else float("inf")
    last_s = max((g.seq for g in got if g.chassis == source and g.at < horizon), default=0)
    at_d = {g.seq for g in got if g.chassis == destination and g.at >= horizon}
    lost = {s.seq for s in sent if s.seq > last_s and s.seq not in at_d}

    def towards(chassis: str) -> set[int]:
        return {
            f.info.seq
            for f in hosts.tor_port_capture(directory, chassis)
            if f.info.seq in lost and str(f.info.dst) == VM_MAC
        }

    to_s, to_d = towards(source), towards(destination)
    return {
        "to_source": len(to_s),
        "to_destination": len(to_d - to_s),
        "neither": len(lost - to_s - to_d),
    }


def longest_hole(
    sent: Sequence[Sent], got: Sequence[analysis.Delivery], destination: str, zero: float | None
) -> dict[str, Any] | None:
    """The longest run of consecutive datagrams D never got after its first delivery: how
    many, and when the first of them was sent (ms after the announcement). Says where a
    loss after the handover happened."""
    if zero is None:
        return None
    at_d = {g.seq for g in got if g.chassis == destination and g.at >= zero}
    if not at_d:
        return None
    first = min(at_d)
    best: tuple[int, float] = (0, 0.0)
    count, began = 0, 0.0
    for s in sent:
        if s.seq < first:
            continue
        if s.seq in at_d:
            count = 0
            continue
        if count == 0:
            began = s.at
        count += 1
        if count > best[0]:
            best = (count, began)
    return {"datagrams": best[0], "sent_ms": ms(best[1] - zero) if best[0] else None}


def tor_figures(
    directory: Path,
    source: str,
    destination: str,
    seqs: set[int],
    zero: float | None,
    window: tuple[float, float],
) -> dict[str, Any]:
    """What the ToR's trunks carried during the run (window): P's MAC arriving from each
    chassis, and P's datagrams the ToR still sent towards the source."""
    since, until = window
    frames = sorted(
        (
            (f.ts, chassis, f.info)
            for chassis in (source, destination)
            for f in hosts.tor_port_capture(directory, chassis, received=False)
            if since <= f.ts <= until and str(f.info.src) == VM_MAC
        ),
        key=lambda frame: frame[0],
    )
    arrivals = [(ts, chassis) for ts, chassis, _ in frames]
    trunks = [chassis for _, chassis in arrivals]
    moves = sum(1 for a, b in itertools.pairwise(trunks) if a != b)
    horizon = zero if zero is not None else float("inf")
    early = sum(1 for ts, chassis in arrivals if chassis == destination and ts < horizon)
    learned = next(
        (ts for ts, chassis in arrivals if chassis == destination and ts >= horizon), None
    )
    back = sum(
        1 for ts, chassis in arrivals if chassis == source and learned is not None and ts > learned
    )
    to_source = [
        f.ts
        for f in hosts.tor_port_capture(directory, source)
        if since <= f.ts <= until
        and f.info.kind is packets.Kind.UDP
        and f.info.seq in seqs
        and str(f.info.dst) == VM_MAC
    ]
    stale = [ts for ts in to_source if ts >= horizon]
    after_learned = [ts for ts in to_source if learned is not None and ts > learned]
    return {
        "mac_frames_from_source": trunks.count(source),
        "mac_frames_from_destination": trunks.count(destination),
        "mac_moves": moves,
        "mac_from_destination_before_announcement": early,
        "mac_back_to_source_after_learned": back,
        "tor_learned_ms": ms(learned - zero) if learned is not None and zero is not None else None,
        "tor_to_source_total": len(to_source),
        "stale_to_source": len(stale),
        "stale_last_ms": ms(max(stale) - horizon) if stale else 0.0,
        "stale_after_learned": len(after_learned),
        "stale_after_learned_ms": (
            ms(max(after_learned) - learned) if after_learned and learned is not None else 0.0
        ),
        "stale_until_end": bool(stale) and until - max(stale) < 0.05,
        # Every frame with P's MAC the ToR received: ms from the announcement, trunk, kind.
        "mac_frames": [
            (round((ts - horizon) * 1000, 3) if zero is not None else None, chassis, str(info.kind))
            for ts, chassis, info in frames
        ],
    }


def fdb_figures(fdb: FdbWatch, source: str, destination: str, zero: float | None) -> dict[str, Any]:
    """Where the ToR's table had P's MAC while the run lasted (sampled)."""
    horizon = zero if zero is not None else float("inf")
    changes = fdb.changes()
    ports = [port for _, port in changes if port is not None]
    at_d_before = [at for at, port in fdb.samples if port == destination and at < horizon]
    at_s_after = [at for at, port in fdb.samples if port == source and at >= horizon]
    at_d = [at for at, port in fdb.samples if port == destination and at >= horizon]
    return {
        "fdb_samples": len(fdb.samples),
        "fdb_error": fdb.error,
        "fdb_changes": [
            (round(at - horizon, 6) if zero is not None else None, port) for at, port in changes
        ],
        "fdb_moves": sum(1 for a, b in itertools.pairwise(ports) if a != b),
        "fdb_at_destination_before_announcement": len(at_d_before),
        "fdb_source_after_ms": ms(max(at_s_after) - horizon) if at_s_after else 0.0,
        "fdb_destination_ms": ms(min(at_d) - horizon) if at_d and zero is not None else None,
    }


# ----- the whole part ----------------------------------------------------------------------


@dataclass
class ProviderResults:
    config: ProviderConfig
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "errors": self.errors}


def run(
    cfg: ProviderConfig,
    say: Say,
    form: MigrationForm = DEFAULT_FORM,
    engines: Sequence[str] = ENGINES,
) -> ProviderResults:
    """Both engines' labs side by side, a warm-up each, then the runs interleaved."""
    cfg.check()
    res = ProviderResults(cfg)
    labs: dict[str, ProviderLab] = {}
    with ExitStack() as stack:
        for name in engines:
            say(
                f"{name}: provider network: lab up (3 chassis, ToR), {NETWORK} on VLAN "
                f"{cfg.vlan}, {VM} on {PAIR[0]}, {HOST} on the ToR"
            )
            try:
                directory = stack.enter_context(engine_lab(name))
                build_network(directory, cfg.vlan)
                cms: Cms | OvnCms = lab.engine_cms(directory)
                stack.callback(cms.close)
            except Exception as exc:  # noqa: BLE001 - reported as not measured, with the reason
                res.errors[name] = f"the lab did not come up: {_failure(exc)}"
                say(f"{name}: provider network: {res.errors[name]}")
                continue
            labs[name] = ProviderLab(name, directory, cms)
        for run_no in range(cfg.runs + 1):  # 0: the warm-up
            order = tuple(engines) if run_no % 2 == 0 else tuple(reversed(engines))
            for name in order:
                e = labs.get(name)
                if e is None or e.error is not None:
                    continue
                try:
                    one_run(e, run_no, cfg, form)
                except Exception as exc:  # noqa: BLE001 - reported as not measured
                    what = "warm-up migration" if run_no == 0 else f"migration {run_no}"
                    e.error = f"the {what} failed: {_failure(exc)}"
                    res.errors[name] = e.error
                    say(f"{name}: provider network: {e.error}")
                    continue
                if run_no == 0:
                    say(f"{name}: provider network: warm-up migration done")
                else:
                    say(f"{name:<8} provider migration {run_no}/{cfg.runs} {_run_text(e.runs[-1])}")
    for name in engines:
        if name in labs:
            res.runs[name] = labs[name].runs
    return res


def _failure(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return text if isinstance(exc, LiveportError) else f"{type(exc).__name__}: {text}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _run_text(r: dict[str, Any]) -> str:
    return (
        f"{r['source']} -> {r['destination']}: announcement -> delivery "
        f"{_fmt(r['announce_to_delivery_ms'])}, lost {r['lost_at_announcement']} "
        f"(running {r['lost_running']}), leaked {r['leaked']}; ToR: learned D "
        f"{_fmt(r['tor_learned_ms'])} after, sent S {r['stale_to_source']} after the "
        f"announcement (last {_fmt(r['stale_last_ms'])}), P's MAC moved {r['mac_moves']}x "
        f"({r['mac_from_destination_before_announcement']} early from D)"
    )


# ----- figures ---------------------------------------------------------------------------------


def _series(res: ProviderResults, engine: str, key: str) -> list[float]:
    return [float(r[key]) for r in res.runs.get(engine, []) if r.get(key) is not None]


def _missing(res: ProviderResults) -> str:
    return "; ".join(
        f"{engine}: {res.errors.get(engine, 'not run')}"
        for engine in ENGINES
        if not res.runs.get(engine)
    )


def figures(res: ProviderResults) -> list[Figure]:
    cfg = res.config
    sec = (
        f"provider network: {HOST} on VLAN {cfg.vlan} sends P {cfg.rate:.0f} datagrams/s while "
        f"P migrates {PAIR[0]} <-> {PAIR[1]} ({cfg.runs} runs each, RARP)"
    )
    missing = _missing(res)

    def note(text: str) -> str:
        return "; ".join(x for x in (text, missing) if x)

    def dist(name: str, key: str, unit: str, text: str = "") -> Figure:
        lv, ov = _series(res, "liveport", key), _series(res, "ovn", key)
        return Figure(
            sec,
            name + " (min / med / max)",
            median(lv),
            median(ov),
            unit,
            liveport_text=min_med_max(lv, unit) if lv else "not measured",
            ovn_text=min_med_max(ov, unit) if ov else "not measured",
            note=note(text),
        )

    def runs_with(name: str, key: str, unit: str, text: str = "") -> Figure:
        values: dict[str, float | None] = {}
        texts: dict[str, str] = {}
        for engine in ENGINES:
            v = [int(x) for x in _series(res, engine, key)]
            if not v:
                texts[engine] = "not measured"
                values[engine] = None
                continue
            hit = sum(1 for x in v if x)
            values[engine] = float(hit)
            texts[engine] = f"{hit} of {len(v)} (max {max(v)} {unit})"
        return Figure(
            sec,
            name,
            values["liveport"],
            values["ovn"],
            liveport_text=texts["liveport"],
            ovn_text=texts["ovn"],
            note=note(text),
        )

    def where_lost() -> Figure:
        texts = {}
        for engine in ENGINES:
            went = [r.get("lost_at_announcement_went") for r in res.runs.get(engine, [])]
            sums = {
                k: sum(w[k] for w in went if w) for k in ("to_source", "to_destination", "neither")
            }
            texts[engine] = (
                f"S {sums['to_source']}, D {sums['to_destination']}, neither {sums['neither']}"
                if went
                else "not measured"
            )
        return Figure(
            sec,
            "the same, all runs: where the ToR had sent them",
            None,
            None,
            better="info",
            liveport_text=texts["liveport"],
            ovn_text=texts["ovn"],
            note=note("S: still towards the source; D: reached D's chassis, not P"),
        )

    def info(figure: Figure) -> Figure:
        return Figure(
            figure.section,
            figure.name,
            figure.liveport,
            figure.ovn,
            better="info",
            liveport_text=figure.liveport_text,
            ovn_text=figure.ovn_text,
            note=figure.note,
        )

    return [
        dist(
            "announcement at D -> first delivery at D",
            "announce_to_delivery_ms",
            "ms",
            "the issue's handoff-gap goal: median <= 5 ms",
        ),
        dist("handoff gap (last at S -> first at D)", "handoff_gap_ms", "ms"),
        dist(
            "lost if the source pauses at the announcement",
            "lost_at_announcement",
            "pkts",
            "goal: 0",
        ),
        where_lost(),
        dist(
            "datagrams lost running (the emulated 20 ms pause)",
            "lost_running",
            "pkts",
            "both: the pause plus 50 ms until QEMU's first RARP",
        ),
        dist(
            "lost at D after the handover",
            "lost_after_handover",
            "pkts",
            "sent after D's first delivery, never delivered at D (completion included)",
        ),
        runs_with("runs with deliveries to D before the announcement", "leaked", "pkts"),
        dist(
            "announcement at D -> ToR gets P's MAC from D's trunk",
            "tor_learned_ms",
            "ms",
            "the ToR learns P behind D then",
        ),
        dist(
            "ToR still sent P's datagrams to S after the announcement: last at",
            "stale_last_ms",
            "ms",
            "ms after the first announcement at D; 0: none after it",
        ),
        dist(
            "ToR still sent P's datagrams to S after the announcement",
            "stale_to_source",
            "pkts",
        ),
        runs_with(
            "runs where the ToR sent P's datagrams to S after learning P behind D",
            "stale_after_learned",
            "pkts",
            "goal: no stale forwarding after activation",
        ),
        runs_with(
            "runs with P's MAC from D's trunk before the announcement",
            "mac_from_destination_before_announcement",
            "frames",
            "MAC flapping while both chassis hold P: each frame moves the ToR's entry to D",
        ),
        runs_with(
            "runs with P's MAC from S's trunk after the ToR learned D",
            "mac_back_to_source_after_learned",
            "frames",
            "flapping back to the source",
        ),
        info(
            dist(
                "moves of P's MAC between trunks per run",
                "mac_moves",
                "",
                "from the ToR's trunk captures; 1 is right: S -> D at the announcement",
            )
        ),
        info(
            dist(
                "moves of P's entry in the ToR's table per run",
                "fdb_moves",
                "",
                f"fdb/show every {cfg.fdb_interval_ms:g} ms: a move shorter than that can be "
                "missed; 1 is right",
            )
        ),
        runs_with(
            "runs where the ToR's table had P behind D before the announcement",
            "fdb_at_destination_before_announcement",
            "samples",
            f"fdb/show every {cfg.fdb_interval_ms:g} ms during the run",
        ),
        dist(
            "ToR's table still had P behind S after the announcement: last sample at",
            "fdb_source_after_ms",
            "ms",
            "0: no sample after it",
        ),
    ]


def fairness(cfg: ProviderConfig) -> list[str]:
    """The provider part's fairness notes."""
    out = [
        "Provider network: both engines get the same NB (a localnet port on physnet1 with "
        "a VLAN tag, P with requested-chassis=S) and the same physical network (the ToR: an "
        "ovs-vswitchd bridge with NORMAL, MAC learning per VLAN, trunks to every chassis' "
        "br-provider); each engine patches br-int to br-provider itself from "
        "ovn-bridge-mappings. The migration is the overlay part's (each engine's CMS in "
        "OVN's form, the same emulated hypervisor), P alternating between hv1 and hv3; P "
        "sends the host one datagram from S before each run.",
        "Provider network, the ToR: MAC moves and stale forwarding are read from the ToR's "
        "trunk pcaps (the frames it received from and sent to each chassis), its table from "
        f"fdb/show every {cfg.fdb_interval_ms:g} ms during the run.",
    ]
    if cfg.purge_tor_flows:
        out.append(
            "Provider network: the ToR's datapath flow cache is emptied (revalidator/purge) "
            "before each run, so that it learns P's first move of the run from the first "
            "frame, as a hardware switch does. An OVS bridge does not learn at once from a "
            "frame that hits a flow already in its datapath cache: in trials here, with "
            "the cache kept (--provider-keep-tor-flows), the ToR still sent P's traffic to "
            "S up to 455 ms after P's announcement had reached it from D (a MAC returning "
            "to a trunk within seconds), for both engines alike (a revalidator interval of "
            "10 ms did not change that). A "
            "second move within a run (a flap back and forth) is still learned late."
        )
    else:
        out.append(
            "Provider network: the ToR's datapath flow cache is kept between runs "
            "(--provider-keep-tor-flows): a MAC that returns to a trunk whose flow for it "
            "is still cached is learned late (up to 455 ms in trials), for both engines "
            "alike."
        )
    return out
