"""Security groups, liveport beside upstream OVN 23.03 in the same run: the `sg` part of
`liveport bench compare` (liveport.lab.compare runs it and reports its figures).

Both engines get the NB exactly as Neutron's ML2/OVN driver writes it, through ovsdbapp
(liveport.lab.neutron), each in a fresh lab of 3 chassis:

1. connections through a migration (`carried`): vm1 (hv1) opens N TCP connections to peer
   (hv3) through an allow-related from-lport rule and accepts nothing new (the drop group,
   nothing to-lport); each engine's own CMS client migrates it hv1 -> hv2 in OVN's
   requested-chassis form while peer sends vm1 UDP the ACLs forbid. After the migration
   completed the remote side speaks first on every connection: how many of its segments
   reach vm1 at hv2 within a bounded wait; then vm1 speaks and the remote answers (what
   a connection that survived, or was re-established by the VM, carries). Also counted:
   what hv2 delivered to vm1 before its activation (the first RARP there), and the
   forbidden datagrams delivered anywhere to vm1.
2. N ports in Neutron's default security group bound on one chassis (`bound`): the
   network, the drop group, the default group (egress IPv4/IPv6, ingress from the group's
   members) and N ports in it; hv1 plugs their N VIFs in one OVSDB transaction: time to all
   bound and all up, OpenFlow flows in hv1's br-int, RSS of hv1's daemon, northd and the SB
   server. Then a port joins the group (its IP enters the group's derived address set):
   NB write -> `ovn-nbctl --wait=hv sync` returned, a few times.

A figure that could not be measured (a size that did not finish within the timeout on this
machine, a scenario that failed) is reported as such, with the reason and the largest size
that did finish; nothing is estimated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.lab import analysis, demo, hypervisor, lab, neutron, vms
from liveport.lab.comparison import Direction, Figure, median, min_med_max
from liveport.lab.engines import BindClients, engine_lab, flow_count, memory
from liveport.lab.tcp import TcpSession
from liveport.lab.traffic import Traffic
from liveport.model import packets
from liveport.model.errors import InvalidInput, LiveportError
from liveport.model.tcp import Segment, Side
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Snapshot

Say = Callable[[str], None]
ENGINES = ("liveport", "ovn")
VM, PEER = neutron.VM1.name, neutron.PEER.name
SOURCE, DESTINATION = "hv1", "hv2"
SERVER_PORT = 5432
FORBIDDEN_RATE = 200.0  # datagrams/s peer -> vm1 during the migration, all refused by ACLs


@dataclass(frozen=True)
class SgConfig:
    connections: int = 20
    sizes: tuple[int, ...] = (100, 1000)
    wait_s: float = 2.0  # per batch of segments after the migration: then count what arrived
    timeout_s: float = 300.0  # per binding stage; a size that takes longer is not measured
    joins: int = 3  # ports joining the group, one at a time

    def check(self) -> SgConfig:
        if not 1 <= self.connections <= 1000:
            raise InvalidInput("--sg-connections must be between 1 and 1000")
        if any(n < 1 or n > 10000 for n in self.sizes):
            raise InvalidInput("--sg-sizes must be between 1 and 10000 ports")
        if self.wait_s <= 0 or self.timeout_s <= 0 or self.joins < 1:
            raise InvalidInput("the security-group waits, timeout and joins must be positive")
        return self


@dataclass(frozen=True)
class MigrationForm:
    """How the comparison migrates (its Config): pre-copy, pause, completion order."""

    precopy_ms: float = 100.0
    pause_ms: float = 20.0
    unplug_first: bool = False


# ----- 1. connections through a migration ----------------------------------------------------


def _published(directory: Path, count: int, timeout: float) -> float | None:
    """liveport: seconds until the source published count connections of vm1 in the SB's
    Port_Connections (None if it did not within timeout). OVN has no such thing."""
    t0 = time.monotonic()
    with OvsdbClient(
        lab.Layout.of(directory).sb_remote, schema.SB_NAME, {"Port_Connections": None}
    ) as sb:

        def enough(s: Snapshot) -> bool:
            return any(
                r["logical_port"] == VM
                and r["chassis"] == SOURCE
                and len(r["connections"]) >= count
                for r in s.rows("Port_Connections")
            )

        try:
            sb.wait_until(enough, timeout=timeout, what=f"{SOURCE} to publish {VM}'s connections")
        except LiveportError:
            return None
    return time.monotonic() - t0


def _count_arrived(session: TcpSession, segments: Sequence[Segment], wait_s: float) -> int:
    """How many connections' segment (one per connection, in order) arrived within wait_s."""
    sent = list(enumerate(segments))
    deadline = time.monotonic() + wait_s
    while True:
        got = session.arrived(sent)
        if len(got) == len(sent) or time.monotonic() >= deadline:
            return len(got)
        time.sleep(0.01)


def carried(engine: str, cfg: SgConfig, form: MigrationForm = MigrationForm()) -> dict[str, Any]:
    """Scenario 1 in a fresh lab of engine. Connections that do not open, or a migration
    that fails, are recorded in "error" (the counts are then missing); anything else is
    raised (run() reports it the same way)."""
    result: dict[str, Any] = {"engine": engine, "connections": cfg.connections}
    with engine_lab(engine) as d:
        neutron.egress_only(d)
        with (
            lab.engine_cms(d) as cms,
            TcpSession(d, VM, PEER, connections=cfg.connections, server_port=SERVER_PORT) as s,
        ):
            try:
                s.open()  # through vm1's allow-related from-lport rule
                s.send(Side.CLIENT, wait=True)
                s.send(Side.SERVER, wait=True)
            except LiveportError as exc:
                result["error"] = f"the connections did not open before the migration: {exc}"
                return result
            forbidden = Traffic(d, PEER, VM, rate=FORBIDDEN_RATE).start()
            try:
                cms.start(VM, DESTINATION)  # requested-chassis=hv1,hv2 for both engines
                if engine == "liveport":
                    result["published_s"] = _published(d, cfg.connections, timeout=10.0)
                # Data while the VM moves: delivered at the source until the pause.
                s.send(Side.SERVER)
                record = hypervisor.migrate(
                    d,
                    VM,
                    DESTINATION,
                    announce="rarp",
                    precopy_ms=form.precopy_ms,
                    pause_ms=form.pause_ms,
                    remove_source=form.unplug_first,
                )
                cms.complete(VM)
                if not form.unplug_first:
                    hypervisor.finish(d, VM)
                demo.nbctl(d, "--wait=hv", "sync")
            except LiveportError as exc:
                result["error"] = f"the migration failed: {exc}"
                return result
            finally:
                sent = forbidden.stop()
            # The remote side speaks first on every connection, then the VM, then the
            # remote again.
            s.moved(Side.CLIENT, DESTINATION)
            result["remote_first"] = _count_arrived(s, s.send(Side.SERVER), cfg.wait_s)
            result["vm_then"] = _count_arrived(s, s.send(Side.CLIENT), cfg.wait_s)
            result["remote_again"] = _count_arrived(s, s.send(Side.SERVER), cfg.wait_s)
        announced = analysis.announcements(d, VM, DESTINATION)
        activation = min(announced) if announced else None
        at_d = vms.capture(d, VM, chassis=DESTINATION)
        result["activation_known"] = activation is not None
        result["before_activation"] = sum(
            1 for f in at_d if activation is None or f.ts < activation
        )
        udp = [f for f in vms.capture(d, VM) if f.info.kind is packets.Kind.UDP]
        result["forbidden_sent"] = len(sent)
        result["forbidden_at_destination"] = sum(1 for f in udp if f.chassis == DESTINATION)
        result["forbidden_at_source"] = sum(1 for f in udp if f.chassis == SOURCE)
        result["migration_events"] = record.events
    return result


# ----- 2. N ports in the default security group on one chassis --------------------------------


def bound(engine: str, n: int, cfg: SgConfig) -> dict[str, Any]:
    """Scenario 2 in a fresh lab of engine. Raises what stopped it (a Timeout when a stage
    took longer than cfg.timeout_s); run() reports that size as not measured."""
    with engine_lab(engine) as d, BindClients(d) as clients:
        remote = lab.Layout.of(d).nb_remote
        with neutron.nb_api(remote, timeout=max(60.0, cfg.timeout_s)) as api:
            t0 = time.monotonic()
            api.ls_add(neutron.NETWORK).execute(check_error=True)
            neutron.ensure_drop_group(api)
            group = neutron.default_security_group(api, neutron.DEFAULT_SG)
            ports = [neutron.numbered(i, "hv1") for i in range(n)]
            neutron.create_ports(api, neutron.NETWORK, ports, [group])
            # The ports that will join later: in the network, in no group, on no chassis.
            joiners = [neutron.numbered(n + j) for j in range(cfg.joins)]
            neutron.create_ports(api, neutron.NETWORK, joiners, [])
            created = time.monotonic() - t0
            binding = clients.bind(n, timeout=cfg.timeout_s)
            demo.nbctl(d, "--wait=hv", "sync", timeout=cfg.timeout_s)
            result: dict[str, Any] = {
                "engine": engine,
                "ports": n,
                "created_s": created,
                "bound_s": binding.bound_s,
                "up_s": binding.up_s,
                "flows": flow_count(d, "hv1"),
                **memory(d),
            }
            joins = []
            for joiner in joiners:
                uuid = api.lsp_get(joiner.name).execute(check_error=True).uuid
                t0 = time.monotonic()
                neutron.join(api, uuid, [group])
                demo.nbctl(d, "--wait=hv", "sync", timeout=cfg.timeout_s)
                joins.append(time.monotonic() - t0)
            result["join_s"] = joins
            result["flows_after_joins"] = flow_count(d, "hv1")
            return result
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


# ----- the whole part -------------------------------------------------------------------------


@dataclass
class SgResults:
    config: SgConfig
    carried: dict[str, dict[str, Any]] = field(default_factory=dict)
    binds: list[dict[str, Any]] = field(default_factory=list)  # per size and engine, or "error"

    def to_json(self) -> dict[str, Any]:
        return {"migration": self.carried, "bind": self.binds}


def run(
    cfg: SgConfig,
    say: Say,
    form: MigrationForm = MigrationForm(),
    engines: Sequence[str] = ENGINES,
) -> SgResults:
    cfg.check()
    res = SgResults(cfg)
    for engine in engines:
        say(f"{engine}: security groups: {cfg.connections} TCP connections through a migration")
        try:
            r = carried(engine, cfg, form)
        except Exception as exc:  # noqa: BLE001 - reported as not measured, with the reason
            r = {"engine": engine, "connections": cfg.connections, "error": _failure(exc)}
        res.carried[engine] = r
        say(f"{engine}: security groups: {_carried_text(r)}")
    failed: dict[str, str] = {}
    for k, n in enumerate(sorted(cfg.sizes)):
        for engine in engines if k % 2 == 0 else tuple(reversed(engines)):
            if engine in failed:
                res.binds.append(
                    {"engine": engine, "ports": n, "error": f"not attempted: {failed[engine]}"}
                )
                continue
            say(f"{engine}: security groups: {n} ports in the default group, binding on hv1")
            started = time.monotonic()
            try:
                b = bound(engine, n, cfg)
            except Exception as exc:  # noqa: BLE001 - reported as not measured, with the reason
                seconds = time.monotonic() - started
                reason = (
                    f"{n} ports did not finish ({_failure(exc)}; gave up after {seconds:.0f} s)"
                )
                failed[engine] = reason
                res.binds.append({"engine": engine, "ports": n, "error": reason})
                say(f"{engine}: security groups: {reason}")
                continue
            res.binds.append(b)
            say(
                f"{engine}: security groups: {n} ports bound in {b['bound_s'] * 1000:.0f} ms, "
                f"up in {b['up_s'] * 1000:.0f} ms, {b['flows']} flows on hv1, chassis daemon "
                f"{b['chassis_daemon_mb']:.0f} MB; a port joins the group: --wait=hv after "
                f"{_ms_list(b['join_s'])}"
            )
    return res


def _failure(exc: Exception) -> str:
    """What stopped a scenario, in one line (the exception's type where it is not ours)."""
    text = " ".join(str(exc).split()) or "no message"
    return text if isinstance(exc, LiveportError) else f"{type(exc).__name__}: {text}"


def _carried_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"not measured: {r['error']}"
    return (
        f"{r['remote_first']} of {r['connections']} delivered at {DESTINATION} when the remote "
        f"speaks first, {r['before_activation']} packets before activation, "
        f"{r['forbidden_at_destination']} forbidden datagrams at {DESTINATION}"
    )


def _ms_list(seconds: Sequence[float]) -> str:
    return " / ".join(f"{s * 1000:.0f}" for s in seconds) + " ms"


# ----- figures --------------------------------------------------------------------------------


def _missing(engine: str, r: dict[str, Any] | None) -> str:
    if r is None:
        return f"{engine}: not run"
    return f"{engine}: {r.get('error', 'not measured')}"


def _of(r: dict[str, Any] | None, key: str) -> float | None:
    if r is None or "error" in r or r.get(key) is None:
        return None
    return float(r[key])


def carried_figures(res: SgResults) -> list[Figure]:
    cfg = res.config
    n = cfg.connections
    sec = (
        f"security groups: {n} TCP connections through a migration hv1 -> hv2 (vm1: "
        "allow-related egress only, Neutron's drop group; remote speaks first)"
    )
    lr, orr = res.carried.get("liveport"), res.carried.get("ovn")
    missing = "; ".join(
        _missing(e, r)
        for e, r in (("liveport", lr), ("ovn", orr))
        if _of(r, "remote_first") is None
    )

    def figure(key: str, name: str, better: Direction, note: str, *, of_n: bool = False) -> Figure:
        lv, ov = _of(lr, key), _of(orr, key)

        def text(value: float | None) -> str:
            if value is None:
                return "not measured"
            return f"{int(value)} of {n}" if of_n else ""

        return Figure(
            sec,
            name,
            lv,
            ov,
            better=better,
            liveport_text=text(lv),
            ovn_text=text(ov),
            note="; ".join(x for x in (note, missing) if x),
        )

    published = _of(lr, "published_s")
    return [
        figure(
            "remote_first",
            f"delivered at D when the remote speaks first (within {cfg.wait_s:g} s)",
            "higher",
            "the remote's first segment after completion, per connection",
            of_n=True,
        ),
        figure(
            "remote_again",
            "then the VM speaks, then the remote: delivered at D",
            "higher",
            "a connection the VM speaks on first is new, and allowed, to D's tracker",
            of_n=True,
        ),
        figure(
            "before_activation",
            "packets delivered at D before activation",
            "lower",
            "before the first RARP at D; must be 0",
        ),
        figure(
            "forbidden_at_destination",
            "datagrams the ACLs forbid delivered at D",
            "lower",
            f"peer -> vm1 UDP at {FORBIDDEN_RATE:.0f}/s during the migration; must be 0",
        ),
        Figure(
            sec,
            "CMS start -> source published the connections",
            None if published is None else published * 1000,
            None,
            "ms",
            better="info",
            ovn_text="-",
            note="liveport's Port_Connections, waited for before the VM moves; OVN carries nothing",
        ),
    ]


def bind_figures(res: SgResults) -> list[Figure]:
    out: list[Figure] = []
    for n in sorted(res.config.sizes):
        rows = {b["engine"]: b for b in res.binds if b["ports"] == n}
        if not rows:
            continue
        sec = (
            f"security groups: {n} ports in Neutron's default group bound on hv1 (one OVSDB "
            "transaction; 3 chassis)"
        )
        notes = []
        for engine in ENGINES:
            r = rows.get(engine)
            if r is None or "error" in r:
                notes.append(_missing(engine, r) + _largest(res, engine))
        note = "; ".join(notes)
        specs: tuple[tuple[str, str, str, float, Direction, str], ...] = (
            ("bound_s", "all bound (SB)", "ms", 1000.0, "lower", ""),
            ("up_s", "all up (NB)", "ms", 1000.0, "lower", ""),
            ("flows", "OpenFlow flows in hv1's br-int", "", 1.0, "info", "ovs-ofctl dump-flows"),
            ("chassis_daemon_mb", "chassis daemon RSS", "MB", 1.0, "lower", _RSS_NOTE),
            ("northd_mb", "northd RSS", "MB", 1.0, "lower", ""),
            ("sb_mb", "SB ovsdb-server RSS", "MB", 1.0, "lower", ""),
        )
        for key, name, unit, scale, better, extra in specs:
            lv = _of(rows.get("liveport"), key)
            ov = _of(rows.get("ovn"), key)
            out.append(
                Figure(
                    sec,
                    f"{n} ports: {name}",
                    None if lv is None else lv * scale,
                    None if ov is None else ov * scale,
                    unit,
                    better=better,
                    liveport_text="not measured" if lv is None else "",
                    ovn_text="not measured" if ov is None else "",
                    note="; ".join(x for x in (extra, note) if x),
                )
            )
        lj = _joins(rows.get("liveport"))
        oj = _joins(rows.get("ovn"))
        out.append(
            Figure(
                sec,
                f"{n} ports: a port joins the group -> --wait=hv sync returned (min / med / max)",
                median(lj),
                median(oj),
                "ms",
                liveport_text=min_med_max(lj) if lj else "not measured",
                ovn_text=min_med_max(oj) if oj else "not measured",
                note="; ".join(
                    x
                    for x in (
                        f"{res.config.joins} times: its IP enters $pg_..._ip4; NB write -> every "
                        "chassis installed it",
                        note,
                    )
                    if x
                ),
            )
        )
    return out


_RSS_NOTE = "liveport-agent / ovn-controller on hv1"


def _joins(r: dict[str, Any] | None) -> list[float]:
    if r is None or "error" in r:
        return []
    return [s * 1000 for s in r["join_s"]]


def _largest(res: SgResults, engine: str) -> str:
    done = [b["ports"] for b in res.binds if b["engine"] == engine and "error" not in b]
    return f" (largest size measured: {max(done)} ports)" if done else ""


def figures(res: SgResults) -> list[Figure]:
    return carried_figures(res) + bind_figures(res)


FAIRNESS = (
    "Security groups: both engines get the NB as Neutron's ML2/OVN driver writes it, through "
    "ovsdbapp (port groups, the neutron_pg_drop group, allow-related ACLs; ports created "
    "100 per transaction in create_port's form); fresh lab per scenario and size.",
    "Security groups, migration: liveport's source publishes the port's connections when "
    "the migration starts and the harness waits for that (up to 10 s) before the VM moves, "
    "as a real pre-copy of seconds would; OVN has nothing to wait for. The segments after "
    "the migration are counted, not waited for: what has not arrived after the wait is lost.",
)
