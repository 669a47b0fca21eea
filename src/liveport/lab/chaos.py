"""The chaos run (issue 19): a stream of live migrations under continuous traffic in a
clustered lab while a seeded fault injector kills, pauses or cuts off its daemons, agents,
database members and relays; after each migration and each healed fault the evidence must
hold.

What one run does:

- A clustered lab (3+3 Raft members, SB relays, a northd pair, 4 chassis), switch ls0 with
  migrating VMs vm1..vmK and one stationary peer per VM (pN on another chassis) sending it
  UDP continuously (liveport.lab.traffic).
- Migrations one after the other, each of one kind: `complete` (the VM announces itself at
  the destination with one RARP or GARP, the port moves, the hypervisor removes the source
  VIF, the CMS completes), `lost` (the announcement is dropped: the source VIF goes and the
  CMS completes, M4) or `abort` (the destination VIF goes and the CMS aborts, M5).
- With some probability a migration carries a fault, injected at one of its steps and
  healed after a short random time by a timer: SIGKILL then restart (`kill`), SIGSTOP then
  SIGCONT (`pause`), or the chassis' SB link cut then healed (`cut`); the Raft leader of
  NB or SB is a target of its own (`nb-leader`, `sb-leader`: which member it is is found
  when the fault is injected).
- After each migration (once its fault healed): the port's owner changed exactly once (a
  completion) or never (an abort), seen through the SB relays by liveport.lab.watch; every
  VM receives its peer's traffic again within RESTORE_BOUND seconds of the later of the
  heal and the migration's end (the first datagram sent after that moment, as captured on
  the VM's VIF); after a fault and every `doctor_every` migrations liveport.cms.doctor
  settles consistent.

Reproducible: the plan (which VM goes where, how, which fault at which step, for how long)
comes from random.Random(seed) alone and never from what happened, so one seed gives the
same sequence of actions; only the timings differ from run to run.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.cms import doctor
from liveport.cms.migrate import Cms
from liveport.lab import demo, faults, lab, vms
from liveport.lab.pcap import Tail
from liveport.lab.state import editing, load
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model import packets
from liveport.model.errors import InvalidInput, LiveportError

CHASSIS = 4
VMS = 3
RATE = 50.0  # datagrams per second from each peer to its VM
RESTORE_BOUND = 2.0  # seconds: traffic restored after the heal / the migration's end
RESTORE_SLACK = 3.0  # seconds more to wait for a late datagram before calling it lost
DOCTOR_SETTLE = 15.0
STEP_TIMEOUT = 30.0
SLOW = 5.0  # seconds: a migration this slow has its timeline in the progress lines
KINDS = (("complete", 0.5), ("lost", 0.25), ("abort", 0.25))
ACTIONS = (("kill", 0.4), ("pause", 0.35), ("cut", 0.25))
STEPS = ("before", "configured", "ready", "announced", "ending")
FAULT_SECONDS = (0.2, 2.0)  # how long a fault lasts: well below dead_after (10 s)
SEQ_BLOCK = 10_000_000  # each peer's sequence numbers start at its index times this


@dataclass(frozen=True)
class Fault:
    action: str  # kill | pause | cut
    target: str  # a role (kill/pause), "nb-leader"/"sb-leader", or a chassis (cut)
    step: str  # when in its migration it is injected (STEPS)
    duration: float  # seconds until it heals

    def __str__(self) -> str:
        return f"{self.action} {self.target} at {self.step} for {self.duration:.2f}s"


@dataclass(frozen=True)
class Planned:
    number: int
    vm: str
    source: str
    destination: str
    kind: str  # complete | lost | abort
    announce: str  # rarp | garp (complete only)
    fault: Fault | None


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def chassis_names(count: int = CHASSIS) -> list[str]:
    return [f"hv{i}" for i in range(1, count + 1)]


def vm_names(count: int = VMS) -> list[str]:
    return [f"vm{i}" for i in range(1, count + 1)]


def fault_targets(
    chassis: int = CHASSIS, members: int = 3, relays: int = 2
) -> dict[str, list[str]]:
    """What each action may hit."""
    roles = [
        "northd",
        "northd2",
        *(f"{c}/agent" for c in chassis_names(chassis)),
        *(f"nb{i}" for i in range(1, members + 1)),
        *(f"sb{i}" for i in range(1, members + 1)),
        *(f"sb-relay{i}" for i in range(1, relays + 1)),
        "nb-leader",
        "sb-leader",
    ]
    return {"kill": roles, "pause": roles, "cut": chassis_names(chassis)}


def plan(
    seed: int, *, fault_rate: float = 0.6, chassis: int = CHASSIS, vm_count: int = VMS
) -> Iterator[Planned]:
    """The endless, seeded sequence of migrations and their faults. Where each VM is comes
    from the plan itself (a completion moves it, an abort does not)."""
    rng = random.Random(seed)  # noqa: S311 - reproducibility, not secrecy
    hosts = chassis_names(chassis)
    where = {vm: hosts[i % len(hosts)] for i, vm in enumerate(vm_names(vm_count))}
    targets = fault_targets(chassis)
    number = 0
    while True:
        number += 1
        vm = rng.choice(sorted(where))
        source = where[vm]
        destination = rng.choice([h for h in hosts if h != source])
        kind = _weighted(rng, KINDS)
        announce = rng.choice(("rarp", "garp"))
        fault = None
        if rng.random() < fault_rate:
            action = _weighted(rng, ACTIONS)
            fault = Fault(
                action,
                rng.choice(targets[action]),
                rng.choice(STEPS),
                round(rng.uniform(*FAULT_SECONDS), 2),
            )
        if kind != "abort":
            where[vm] = destination
        yield Planned(number, vm, source, destination, kind, announce, fault)


@dataclass
class Failure:
    seed: int
    migration: int
    check: str
    detail: str
    timeline: list[str]
    faults: list[str]  # the faults of the migration (active at some point during it)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "migration": self.migration,
            "check": self.check,
            "detail": self.detail,
            "faults": self.faults,
            "timeline": self.timeline,
        }

    def text(self) -> str:
        lines = [
            f"FAILURE seed={self.seed} migration={self.migration} {self.check}: {self.detail}",
            f"  faults: {', '.join(self.faults) or 'none'}",
        ]
        lines += [f"  {line}" for line in self.timeline]
        return "\n".join(lines)


@dataclass
class Result:
    seed: int
    minutes: float
    migrations: int = 0
    faults: int = 0
    failures: list[Failure] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    doctors: int = 0
    restore_worst: float = 0.0  # seconds: the slowest restoration of traffic seen
    migration_seconds: list[float] = field(default_factory=list)
    by_fault: dict[str, list[float]] = field(default_factory=dict)  # target kind -> seconds
    activations: dict[str, int] = field(default_factory=dict)  # how, for announced ones
    elapsed: float = 0.0
    stopped: str = ""  # why the run ended early, if it did

    def to_json(self) -> dict[str, Any]:
        times = sorted(self.migration_seconds)
        return {
            "seed": self.seed,
            "minutes": self.minutes,
            "elapsed": round(self.elapsed, 1),
            "migrations": self.migrations,
            "faults": self.faults,
            "failures": len(self.failures),
            "failure_details": [f.to_json() for f in self.failures],
            "kinds": self.kinds,
            "actions": self.actions,
            "activations": self.activations,
            "doctor_checks": self.doctors,
            "restore_worst_s": round(self.restore_worst, 3),
            "migration_s_median": round(times[len(times) // 2], 3) if times else None,
            "migration_s_max": round(times[-1], 3) if times else None,
            "seconds_by_fault": {
                kind: {
                    "migrations": len(values),
                    "median_s": round(sorted(values)[len(values) // 2], 3),
                    "max_s": round(max(values), 3),
                }
                for kind, values in sorted(self.by_fault.items())
            },
            "stopped": self.stopped,
        }

    def report(self) -> str:
        lines = [f.text() for f in self.failures]
        doc = self.to_json()
        lines += [
            f"{kind}: {v['migrations']} migrations, median {v['median_s']}s, max {v['max_s']}s"
            for kind, v in doc["seconds_by_fault"].items()
        ]
        lines.append(
            f"seed {self.seed}, {self.elapsed:.0f}s: kinds {self.kinds}, faults {self.actions}, "
            f"activations {self.activations}, "
            f"{self.doctors} doctor checks, slowest restoration {self.restore_worst:.3f}s, "
            f"migration median/max {doc['migration_s_median'] or '-'}/"
            f"{doc['migration_s_max'] or '-'}s"
            + (f"; stopped early: {self.stopped}" if self.stopped else "")
        )
        lines += [
            f"migrations: {self.migrations}",
            f"faults: {self.faults}",
            f"failures: {len(self.failures)}",
        ]
        return "\n".join(lines)


class CheckFailed(Exception):
    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check, self.detail = check, detail


class _Timeline:
    def __init__(self, begin: float) -> None:
        self.begin = begin
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.lines.append(f"{time.time() - self.begin:8.3f}s {text}")

    def copy(self) -> list[str]:
        with self._lock:
            return list(self.lines)


class _ActiveFault:
    """One injected fault and the timer thread that heals it."""

    def __init__(self, directory: Path, fault: Fault, note: Callable[[str], None]) -> None:
        self.directory, self.fault, self.note = directory, fault, note
        self.role = fault.target
        self.healed_at: float | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def inject(self) -> None:
        d, action = self.directory, self.fault.action
        if self.role in ("nb-leader", "sb-leader"):
            self.role = faults.leader(d, self.role.removesuffix("-leader"))
        if action == "kill":
            faults.kill(d, self.role)
        elif action == "pause":
            faults.pause(d, self.role)
        else:
            faults.cut_sb(d, self.role)
        self.note(f"fault: {self.fault.action} {self.role} ({self.fault.target})")
        self._thread = threading.Thread(target=self._heal_later, name="heal", daemon=True)
        self._thread.start()

    def _heal_later(self) -> None:
        time.sleep(self.fault.duration)
        try:
            self.heal()
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.error = f"{type(exc).__name__}: {exc}"
            self.note(f"heal of {self.role} failed: {self.error}")

    def heal(self) -> None:
        d, action = self.directory, self.fault.action
        if action == "kill":
            faults.start(d, self.role)
        elif action == "pause":
            faults.resume(d, self.role)
        else:
            faults.heal_sb(d, self.role)
        self.healed_at = time.time()
        self.note(f"healed: {self.role}")

    def wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise CheckFailed("heal", f"{self.role} not healed within {timeout:g}s")


class _Receiver:
    """Reads one VM's current VIF capture incrementally; finds when the first datagram
    sent at or after a moment was delivered."""

    def __init__(self) -> None:
        self._tails: dict[str, Tail] = {}

    def restored_at(self, path: str, since: float, deadline: float) -> float | None:
        tail = self._tails.setdefault(path, Tail(Path(path)))
        while True:
            for record in tail.read():
                try:
                    info = packets.decode(record.frame)
                except InvalidInput:
                    continue
                if (
                    info.kind is packets.Kind.UDP
                    and info.sent_ns is not None
                    and info.sent_ns / 1e9 >= since
                ):
                    return record.ts
            if time.time() >= deadline:
                return None
            time.sleep(0.02)


class Chaos:
    def __init__(
        self,
        directory: Path,
        seed: int,
        *,
        fault_rate: float = 0.6,
        doctor_every: int = 10,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.seed = seed
        self.fault_rate = fault_rate
        self.doctor_every = doctor_every
        self.progress = progress or (lambda _: None)
        self.receivers: dict[str, _Receiver] = {}
        self.traffic: list[Traffic] = []
        # How the destinations recorded the announced migrations' activations: "rarp" or
        # "garp" from the packet-in, "learned" from the learned flows (the agent missed it).
        self.activations: dict[str, int] = {}

    # ----- setting up ----------------------------------------------------------------------

    def up(self) -> None:
        lab.up(self.directory, CHASSIS, members=3, relays=2, northds=2)
        d = self.directory
        hosts = chassis_names()
        demo.nbctl(d, "ls-add", "ls0")
        for i, vm in enumerate(vm_names(), start=1):
            peer = f"p{i}"
            for name, index, where in (
                (vm, i, hosts[(i - 1) % CHASSIS]),
                (peer, 100 + i, hosts[(i + 1) % CHASSIS]),
            ):
                mac = f"00:00:00:00:{index // 256:02x}:{index % 256:02x}"
                ip = f"10.0.{index // 256}.{index % 256}"
                demo.nbctl(
                    d, "lsp-add", "ls0", name, "--", "lsp-set-addresses", name, f"{mac} {ip}"
                )
                vms.add(d, name, chassis=where, port=name, mac=mac, ips=[ip])
        for name in (*vm_names(), *(f"p{i}" for i in range(1, VMS + 1))):
            demo.nbctl(d, "wait-until", "Logical_Switch_Port", name, "up=true")
        demo.nbctl(d, "--wait=hv", "sync")

    def switches(self) -> list[doctor.SwitchAccess]:
        layout = lab.Layout.of(self.directory)
        return [
            doctor.SwitchAccess(
                name, layout.chassis(name).db_remote, str(layout.chassis(name).mgmt_socket())
            )
            for name in chassis_names()
        ]

    # ----- running -------------------------------------------------------------------------

    def run(self, minutes: float, max_migrations: int | None = None) -> Result:
        result = Result(self.seed, minutes)
        begin = time.time()
        deadline = time.monotonic() + minutes * 60
        d = self.directory
        layout = lab.Layout.of(d)
        self._doctor_access = (layout.nb_remote, layout.sb_remote, self.switches())
        for i, vm in enumerate(vm_names(), start=1):
            self.traffic.append(Traffic(d, f"p{i}", vm, rate=RATE, first_seq=i * SEQ_BLOCK).start())
            self.receivers[vm] = _Receiver()
        try:
            with lab.cms(d) as cms, BindingWatch(d, vm_names()) as watch:
                for step in plan(self.seed, fault_rate=self.fault_rate):
                    if time.monotonic() >= deadline or (
                        max_migrations is not None and step.number > max_migrations
                    ):
                        break
                    timeline = _Timeline(begin)
                    started = time.time()
                    ok = self._one(step, cms, watch, timeline, result)
                    result.migrations += 1
                    result.kinds[step.kind] = result.kinds.get(step.kind, 0) + 1
                    took = time.time() - started
                    result.migration_seconds.append(took)
                    result.by_fault.setdefault(_fault_kind(step.fault), []).append(took)
                    self.progress(
                        f"#{step.number} {step.vm} {step.source}->{step.destination} {step.kind}"
                        f"{' + ' + str(step.fault) if step.fault else ''}: "
                        f"{'ok' if ok else 'FAILED'} in {took:.2f}s"
                    )
                    if took > SLOW:
                        for line in timeline.copy():
                            self.progress(f"    {line}")
                    if not ok and not self._repair(step, cms, timeline, result):
                        result.stopped = f"could not repair after migration {step.number}"
                        break
        finally:
            for traffic in self.traffic:
                with contextlib.suppress(BaseException):
                    traffic.stop()
            result.elapsed = time.time() - begin
            result.activations = dict(self.activations)
        return result

    def _one(
        self,
        step: Planned,
        cms: Cms,
        watch: BindingWatch,
        timeline: _Timeline,
        result: Result,
    ) -> bool:
        d = self.directory
        active: _ActiveFault | None = None
        since = time.time()
        timeline(
            f"migration {step.number}: {step.vm} {step.source} -> {step.destination} "
            f"({step.kind}{', ' + step.announce if step.kind == 'complete' else ''})"
        )

        def at(name: str) -> None:
            nonlocal active
            if step.fault is not None and step.fault.step == name and active is None:
                active = _ActiveFault(d, step.fault, timeline)
                result.faults += 1
                result.actions[step.fault.action] = result.actions.get(step.fault.action, 0) + 1
                active.inject()

        try:
            self._drive(step, cms, at, timeline)
            ended = time.time()
            if active is not None:
                active.wait(step.fault.duration + STEP_TIMEOUT if step.fault else STEP_TIMEOUT)
                if active.error is not None:
                    raise CheckFailed("heal", active.error)
            self._check(step, watch, since, ended, active, timeline, result)
        except (CheckFailed, LiveportError, OSError) as exc:
            check, detail = (
                (exc.check, exc.detail)
                if isinstance(exc, CheckFailed)
                else ("step", f"{type(exc).__name__}: {exc}")
            )
            timeline(f"failed: {check}: {detail}")
            if active is not None:
                with contextlib.suppress(BaseException):
                    active.wait(STEP_TIMEOUT)
            result.failures.append(
                Failure(
                    self.seed,
                    step.number,
                    check,
                    detail,
                    timeline.copy(),
                    [str(step.fault)] if step.fault is not None and active is not None else [],
                )
            )
            return False
        return True

    def _drive(
        self, step: Planned, cms: Cms, at: Callable[[str], None], timeline: _Timeline
    ) -> None:
        """The migration's steps, as the CMS and the hypervisor take them; at(step) injects
        the migration's fault when its step comes."""
        d = self.directory
        at("before")
        cms.start(step.vm, step.destination, timeout=STEP_TIMEOUT)
        timeline("configured")
        at("configured")
        with editing(d) as state:
            vm = state.get_vm(step.vm)
            vm.vifs.append(vms.plug_vif(state, vm, step.destination))
        timeline("destination VIF plugged")
        cms.wait_ready(step.vm, step.destination, timeout=STEP_TIMEOUT)
        timeline("destination ready")
        at("ready")
        if step.kind == "complete":
            spec = vms.SendSpec(kind=step.announce)
            vms.send(d, step.vm, spec, chassis=step.destination)
            timeline(f"announced {step.announce}")
            cms.sb.wait_until(
                lambda s: _owner(s, step.vm) == step.destination,
                timeout=STEP_TIMEOUT,
                what=f"{step.vm} activated on {step.destination}",
            )
            migration = cms.migration(step.vm)
            how = migration.activation.get("kind", "?") if migration is not None else "?"
            self.activations[how] = self.activations.get(how, 0) + 1
            timeline(f"bound to {step.destination} (activation: {how})")
        at("announced")
        if step.kind == "abort":
            with editing(d) as state:
                vms.unplug_vif(state, state.get_vm(step.vm), step.destination)
            timeline("destination VIF removed")
            at("ending")
            cms.abort(step.vm, timeout=STEP_TIMEOUT)
            timeline("aborted")
        else:
            with editing(d) as state:
                vms.unplug_vif(state, state.get_vm(step.vm), step.source)
            timeline("source VIF removed")
            at("ending")
            cms.complete(step.vm, timeout=STEP_TIMEOUT)
            timeline("completed")

    def _check(
        self,
        step: Planned,
        watch: BindingWatch,
        since: float,
        ended: float,
        active: _ActiveFault | None,
        timeline: _Timeline,
        result: Result,
    ) -> None:
        owner = step.source if step.kind == "abort" else step.destination
        try:
            watch.wait(lambda s: _owner(s, step.vm) == owner, timeout=20, what=f"owner {owner}")
        except LiveportError as exc:
            raise CheckFailed("owner", f"the watch never saw {step.vm} on {owner}: {exc}") from None
        changes = watch.owner_changes(step.vm, since=since)
        expected = 0 if step.kind == "abort" else 1
        if changes != expected:
            owners = [s.owner for s in watch.seen(step.vm) if s.at >= since]
            raise CheckFailed(
                "owner changes", f"{changes} owner changes, expected {expected} ({owners})"
            )
        moment = max(ended, active.healed_at or ended) if active is not None else ended
        state = load(self.directory)
        for vm in vm_names():
            vif = state.get_vm(vm).vifs[-1]
            got = self.receivers[vm].restored_at(
                vif.tx_pcap, moment, moment + RESTORE_BOUND + RESTORE_SLACK
            )
            if got is None:
                raise CheckFailed(
                    "traffic",
                    f"{vm} on {vif.chassis} received nothing sent after "
                    f"{moment - timeline.begin:.3f}s within {RESTORE_BOUND + RESTORE_SLACK:g}s",
                )
            delay = max(0.0, got - moment)
            result.restore_worst = max(result.restore_worst, delay)
            if delay > RESTORE_BOUND:
                raise CheckFailed(
                    "traffic", f"{vm} on {vif.chassis}: traffic restored only after {delay:.3f}s"
                )
        timeline("owner and traffic checked")
        if active is not None or step.number % self.doctor_every == 0:
            nb, sb, switches = self._doctor_access
            timeline("doctor")
            try:
                report = doctor.examine(nb, sb, switches, settle=DOCTOR_SETTLE)
            except LiveportError as exc:
                raise CheckFailed("doctor", f"{type(exc).__name__}: {exc}") from None
            result.doctors += 1
            if not report.consistent:
                raise CheckFailed(
                    "doctor", "; ".join(str(f) for f in report.differences) or report.summary()
                )
            timeline(f"doctor consistent ({report.rounds} rounds)")

    def _repair(self, step: Planned, cms: Cms, timeline: _Timeline, result: Result) -> bool:
        """After a failure: end the migration the way the plan meant it to end, so the run
        can go on from where the plan believes the VM is."""
        d = self.directory
        try:
            state = load(d)
            vifs = [v.chassis for v in state.get_vm(step.vm).vifs]
            if len(vifs) > 1:
                gone = step.destination if step.kind == "abort" else step.source
                with editing(d) as current:
                    vms.unplug_vif(current, current.get_vm(step.vm), gone)
            if cms.migration(step.vm) is not None:
                if step.kind == "abort":
                    cms.abort(step.vm, timeout=STEP_TIMEOUT)
                else:
                    cms.complete(step.vm, timeout=STEP_TIMEOUT)
            for role in _down_roles(d):
                faults.start(d, role)
                timeline(f"repair: restarted {role}")
            owner = step.source if step.kind == "abort" else step.destination
            cms.sb.wait_until(
                lambda s: _owner(s, step.vm) == owner, timeout=STEP_TIMEOUT, what="repaired"
            )
        except (LiveportError, OSError) as exc:
            result.stopped = f"repair failed: {exc}"
            return False
        return True


def _fault_kind(fault: Fault | None) -> str:
    """What a migration's time is filed under: its fault's action and the kind of target
    ("kill raft-member", "pause agent", "cut link", "none")."""
    if fault is None:
        return "none"
    target = fault.target
    if target.endswith("/agent"):
        kind = "agent"
    elif target.startswith("northd"):
        kind = "northd"
    elif target.startswith("sb-relay"):
        kind = "relay"
    elif target.endswith("-leader"):
        kind = "raft-leader"
    elif fault.action == "cut":
        kind = "sb-link"
    else:
        kind = "raft-member"
    return f"{fault.action} {kind}"


def _owner(snap: Any, port: str) -> str | None:
    row = snap.one("Port_Binding", logical_port=port)
    return None if row is None else row["chassis"]


def _down_roles(directory: Path) -> list[str]:
    """Restartable roles whose process is gone (a heal that failed)."""
    out = []
    for ref in load(directory).daemon_refs():
        restartable = ref.role.startswith(("northd", "nb", "sb")) or ref.role.endswith("/agent")
        if restartable and ref.running_pid() is None:
            out.append(ref.role)
    return out


def run(
    directory: Path,
    seed: int,
    minutes: float,
    *,
    max_migrations: int | None = None,
    fault_rate: float = 0.6,
    doctor_every: int = 10,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Brings a lab up in directory, runs the chaos, and takes the lab down (also when
    interrupted: SIGTERM unwinds like Ctrl-C while it runs)."""
    if directory.exists():
        raise InvalidInput(f"{directory} exists; the chaos run wants a fresh directory")
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, interrupt)
    chaos = Chaos(
        directory, seed, fault_rate=fault_rate, doctor_every=doctor_every, progress=progress
    )
    try:
        chaos.up()
        return chaos.run(minutes, max_migrations)
    finally:
        with contextlib.suppress(BaseException):
            lab.down(directory)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def write_json(result: Result, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
