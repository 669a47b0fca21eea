"""Control-plane scale: many chassis without a switch each. NB and SB as 3-member Raft clusters,
2 SB relays, liveport-northd, and per chassis its own Open_vSwitch ovsdb-server plus a real,
unmodified liveport-agent (AgentConfig(...).run, many per process) -- with the recording
switch of bench/flowsink.py in place of ovs-vswitchd (it holds the flows the agents install
and assigns ofports as vswitchd would). For each size (chassis x ports) it measures:

- start-up: every agent registered and alive, its tunnels to every other chassis, the
  spanning switch (one port per chassis) bound, `--wait=hv` synced;
- binding: the NB gets the ports (100 per logical switch, each switch on 4 chassis; one
  transaction per 1000 ports, as ovn-nbctl batches would), then every chassis plugs its VIFs
  at once (one OVSDB transaction per chassis): time until every Port_Binding is bound to its
  chassis, until every Logical_Switch_Port is `up`, until `--wait=hv` syncs after it;
- propagation: one NB transaction that every chassis must install (a new port on the switch
  spanning every chassis, nb_cfg bumped in the same transaction, as `ovn-nbctl --wait=hv
  lsp-add` does): time until northd wrote it to the SB (sb_cfg), until every chassis' flow
  table holds the new port's flow (seen by the recording switches), until hv_cfg reaches it
  (every Chassis_Private.nb_cfg); repeated a few times;
- a migration storm: 100 concurrent migrations through liveport's CMS API (OVN form
  `requested-chassis=S,D`): each pre-plugs the VIF on D, waits until D is ready (M9), then
  the VM announces itself with a RARP on D -- played into D's recording switch, where D's
  own activation flows `learn` the unblocking flows and send the agent its packet-in (M3) --,
  waits until bound to D, completes (requested-chassis=D) and unplugs the source VIF. Time
  until all 100 are complete, and every owner change of those Port_Bindings (must be 100).

Reference (DESIGN.md, this machine class): "100 conditional agents on one server are cheap
(1000-row change reaches all in ~76 ms)"; OVN 23.03 binding 1000 ports on one chassis:
0.73 s bound / 3.6 s up.

Usage: bench/scale.py [CHASSISxPORTS ...]   default 10x2000 50x2000 50x10000; also
LIVEPORT_SCALE_SIZES="50x10000,200x20000", LIVEPORT_SCALE_WORKERS (agent processes),
LIVEPORT_SCALE_STORM (migrations, default 100), LIVEPORT_SCALE_KEEP=1 (keep the directory
and its logs, every process stopped), LIVEPORT_SCALE_PROFILE=1 (cProfile of each agent
process, agentsK.prof there). Writes bench/out/scale.json. docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import flowsink  # noqa: E402
from liveport.agent.agent import Agent, AgentConfig  # noqa: E402
from liveport.cms.migrate import Cms  # noqa: E402
from liveport.lab import lab, sim  # noqa: E402
from liveport.model.cookies import Kind, cookie  # noqa: E402
from liveport.ovsdb import rbac, schema  # noqa: E402
from liveport.ovsdb.client import OvsdbClient, fetch_schema  # noqa: E402
from liveport.ovsdb.rows import Change, Insert, Mutate, Op, Ref, Update  # noqa: E402
from liveport.ovsdb.server import ServerSpec  # noqa: E402
from liveport.ovsdb.server import start as start_ovsdb  # noqa: E402
from liveport.runtime import logs  # noqa: E402
from liveport.runtime.process import DaemonRef, spawn_detached, stop_daemons  # noqa: E402

from common import Figure, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DEFAULT_SIZES = [(10, 2000), (50, 2000), (50, 10000)]  # chassis x5, then ports x5
PORTS_PER_SWITCH = 100
SPAN = 4  # chassis per logical switch
BATCH = 1000  # NB rows per transaction
HEARTBEAT = 5.0  # seconds; the lab's 2 s would be 100 SB writes/s from 200 agents
DEAD_AFTER = 60.0  # northd: generous, the machine is saturated on purpose
AGENTS_PER_WORKER = 25
MAX_WORKERS = 4
PROBES = 5
QUIET = 5.0  # seconds of nothing happening, to measure the agents' idle load
REPORT_EVERY = 0.25  # seconds between the agent processes' counter reports
TIMEOUT = 900.0


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def mac(i: int) -> str:
    return (
        f"0a:{(i >> 24) & 0xFF:02x}:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:02"
    )


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----- the chassis' Open_vSwitch databases, written as a hypervisor's tools would --------------


def ovsdb_transact(sock: Path, ops: list[dict[str, Any]], timeout: float = 60.0) -> list[Any]:
    """One OVSDB transaction on a chassis database over JSON-RPC (what ovs-vsctl --no-wait
    does, without a process per call); raises on any error."""
    request = {"method": "transact", "params": [schema.VSWITCH_NAME, *ops], "id": 1}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(json.dumps(request).encode())
        decoder = json.JSONDecoder()
        buf = ""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{sock}: closed before answering")
            buf += chunk.decode()
            try:
                reply, _ = decoder.raw_decode(buf)
            except ValueError:
                continue
            if reply.get("id") != 1:
                buf = ""
                continue
            result: list[Any] = reply.get("result") or []
            errors = [r for r in result if isinstance(r, dict) and "error" in r]
            if reply.get("error") or errors:
                raise RuntimeError(f"{sock}: {reply.get('error') or errors[0]}")
            return result


def plug_ops(vifs: Sequence[str]) -> list[dict[str, Any]]:
    """Interfaces (external_ids:iface-id, no ofport: the switch assigns it) on br-int."""
    ops: list[dict[str, Any]] = []
    for i, name in enumerate(vifs):
        ops.append(
            {
                "op": "insert",
                "table": "Interface",
                "row": {"name": name, "external_ids": ["map", [["iface-id", name]]]},
                "uuid-name": f"i{i}",
            }
        )
        ops.append(
            {
                "op": "insert",
                "table": "Port",
                "row": {"name": name, "interfaces": ["named-uuid", f"i{i}"]},
                "uuid-name": f"p{i}",
            }
        )
    return ops


def plug(sock: Path, vifs: Sequence[str]) -> None:
    ops = plug_ops(vifs)
    ports = ["set", [["named-uuid", f"p{i}"] for i in range(len(vifs))]]
    ops.append(
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", "br-int"]],
            "mutations": [["ports", "insert", ports]],
        }
    )
    ovsdb_transact(sock, ops)


def unplug(sock: Path, vif: str) -> None:
    (found,) = ovsdb_transact(
        sock,
        [{"op": "select", "table": "Port", "where": [["name", "==", vif]], "columns": ["_uuid"]}],
    )
    uuids = [["uuid", row["_uuid"][1]] for row in found["rows"]]
    ovsdb_transact(
        sock,
        [
            {
                "op": "mutate",
                "table": "Bridge",
                "where": [["name", "==", "br-int"]],
                "mutations": [["ports", "delete", ["set", uuids]]],
            }
        ],
    )


def init_chassis(sock: Path, name: str, index: int, sb_remote: str, vifs: Sequence[str]) -> None:
    """The chassis identity as liveport.lab.sim.attach_chassis writes it, br-int, and vifs."""
    ops = plug_ops(vifs)
    ports = [["named-uuid", "pbr"], *(["named-uuid", f"p{i}"] for i in range(len(vifs)))]
    ops += [
        {
            "op": "insert",
            "table": "Interface",
            "row": {"name": "br-int", "type": "internal"},
            "uuid-name": "ibr",
        },
        {
            "op": "insert",
            "table": "Port",
            "row": {"name": "br-int", "interfaces": ["named-uuid", "ibr"]},
            "uuid-name": "pbr",
        },
        {
            "op": "insert",
            "table": "Bridge",
            "row": {
                "name": "br-int",
                "ports": ["set", ports],
                "fail_mode": "secure",
                "protocols": ["set", ["OpenFlow13"]],
                "other_config": ["map", [["disable-in-band", "true"]]],
            },
            "uuid-name": "br",
        },
        {
            "op": "insert",
            "table": "Open_vSwitch",
            "row": {
                "bridges": ["named-uuid", "br"],
                "external_ids": [
                    "map",
                    [
                        ["system-id", name],
                        ["hostname", name],
                        ["liveport-remote", sb_remote],
                        ["liveport-encap-type", "geneve"],
                        ["liveport-encap-ip", str(sim.encap_ip(index))],
                        ["liveport-bridge", "br-int"],
                    ],
                ],
            },
        },
    ]
    ovsdb_transact(sock, ops)


# ----- watching the databases -------------------------------------------------------------------


class Goals:
    """Conditions on a watcher's state, checked on the client's owner thread after each
    update, so the time recorded is when the database showed it (monotonic clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._goals: list[tuple[Callable[[], bool], threading.Event, list[float]]] = []

    def check(self) -> None:
        now = time.monotonic()
        with self._lock:
            for predicate, event, at in self._goals:
                if not event.is_set() and predicate():
                    at.append(now)
                    event.set()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        event = threading.Event()
        at: list[float] = []
        with self._lock:
            if predicate():
                return time.monotonic()
            self._goals.append((predicate, event, at))
        try:
            if not event.wait(timeout):
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            return float(at[0])
        finally:
            with self._lock:
                self._goals = [g for g in self._goals if g[1] is not event]


class SbWatch:
    """Port_Binding owners (and every owner change of the watched ports, timed)."""

    def __init__(self, remote: str) -> None:
        self.goals = Goals()
        self.owner: dict[str, str | None] = {}
        self.names: dict[Any, str] = {}
        self.expected: dict[str, str] = {}
        self.bound = 0  # ports whose owner is the expected chassis
        self.watched: set[str] = set()
        self.changes: list[tuple[float, str, str | None]] = []
        self.client = OvsdbClient(
            remote,
            schema.SB_NAME,
            {
                "Port_Binding": ["logical_port", "chassis", "tunnel_key", "datapath"],
                "Datapath_Binding": ["tunnel_key"],
                "Chassis": ["name"],
                "SB_Global": ["live_chassis"],
            },
            leader_only=False,
            indexes={"Port_Binding": ["logical_port"]},
            name="bench-sb",
        )
        self.client.wait_connected(60)
        self.client.add_listener(self._on_change).result(60)

    def expect(self, owners: dict[str, str]) -> None:
        with self.goals._lock:
            for port, chassis in owners.items():
                before = (
                    port in self.owner
                    and port in self.expected
                    and self.owner[port] == self.expected[port]
                )
                self.expected[port] = chassis
                after = port in self.owner and self.owner[port] == chassis
                self.bound += int(after) - int(before)

    def _on_change(self, change: Change) -> None:
        now = time.monotonic()
        snap = change.snapshot
        with self.goals._lock:
            for row_uuid in change.changed.get("Port_Binding", ()):
                row = snap.get("Port_Binding", row_uuid)
                if row is None:
                    name = self.names.pop(row_uuid, None)
                    if name is not None:
                        self._set(name, None, now, gone=True)
                    continue
                self.names[row_uuid] = row["logical_port"]
                self._set(row["logical_port"], row["chassis"], now)
        self.goals.check()

    def _set(self, port: str, owner: str | None, now: float, gone: bool = False) -> None:
        known = port in self.owner
        old = self.owner.get(port)
        if known and old == owner and not gone:
            return
        want = self.expected.get(port)
        self.bound -= int(known and want is not None and old == want)
        if gone:
            self.owner.pop(port, None)
        else:
            self.owner[port] = owner
            self.bound += int(want is not None and owner == want)
        if port in self.watched and known:
            self.changes.append((now, port, owner))

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        return self.goals.wait(predicate, timeout, what)

    def port_cookie(self, port: str) -> int:
        snap = self.client.snapshot()
        (pb,) = snap.lookup("Port_Binding", "logical_port", port)
        dp = snap.get("Datapath_Binding", pb["datapath"])
        assert dp is not None
        return cookie(Kind.PORT, dp["tunnel_key"], pb["tunnel_key"])

    def close(self) -> None:
        self.client.close()


class NbWatch:
    """Logical_Switch_Port `up` of the ports counted, and NB_Global's cfg counters."""

    def __init__(self, remote: str) -> None:
        self.goals = Goals()
        self.counted: set[str] = set()
        self.up: set[str] = set()
        self.up_counted = 0
        self.cfg = {"nb_cfg": 0, "sb_cfg": 0, "hv_cfg": 0}
        self.client = OvsdbClient(
            remote,
            schema.NB_NAME,
            {
                "Logical_Switch": ["name", "ports"],
                "Logical_Switch_Port": ["name", "up", "addresses", "options"],
                "NB_Global": ["nb_cfg", "sb_cfg", "hv_cfg"],
            },
            schema=fetch_schema(remote, schema.NB_NAME, 60),
            indexes={"Logical_Switch": ["name"]},
            name="bench-nb",
        )
        self.client.wait_connected(60)
        self.client.add_listener(self._on_change).result(60)

    def count(self, names: set[str]) -> None:
        with self.goals._lock:
            self.counted |= names
            self.up_counted = len(self.counted & self.up)

    def _on_change(self, change: Change) -> None:
        snap = change.snapshot
        with self.goals._lock:
            for row_uuid in change.changed.get("Logical_Switch_Port", ()):
                row = snap.get("Logical_Switch_Port", row_uuid)
                if row is None:
                    continue
                name, up = row["name"], bool(row["up"])
                if up and name not in self.up:
                    self.up.add(name)
                    self.up_counted += name in self.counted
                elif not up and name in self.up:
                    self.up.discard(name)
                    self.up_counted -= name in self.counted
            row = next(snap.rows("NB_Global"), None)
            if row is not None:
                self.cfg = {k: row[k] or 0 for k in self.cfg}
        self.goals.check()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        return self.goals.wait(predicate, timeout, what)

    def bump(self, extra: Sequence[Op] = ()) -> tuple[int, float]:
        """One transaction: extra ops and nb_cfg + 1 (ovn-nbctl --wait=hv); returns the new
        nb_cfg and the monotonic time just before it was sent."""
        row = next(self.client.snapshot().rows("NB_Global"))
        target = (row["nb_cfg"] or 0) + 1
        t0 = time.monotonic()
        self.client.transact(
            [*extra, Update("NB_Global", row.uuid, {"nb_cfg": target})], timeout=TIMEOUT
        )
        return target, t0

    def wait_hv(self, target: int, timeout: float = TIMEOUT) -> float:
        return self.wait(lambda: self.cfg["hv_cfg"] >= target, timeout, f"hv_cfg {target}")

    def close(self) -> None:
        self.client.close()


# ----- one run: every process of one size --------------------------------------------------------


@dataclass
class Result:
    chassis: int
    ports: int
    agent_processes: int
    startup_s: float = 0.0
    nb_to_sb_s: float = 0.0
    bound_s: float = 0.0
    up_s: float = 0.0
    bind_hv_sync_s: float = 0.0
    flows_total: int = 0
    flow_mods_total: int = 0
    propagation_sb_ms: list[float] = field(default_factory=list)
    propagation_flows_first_ms: list[float] = field(default_factory=list)
    propagation_flows_ms: list[float] = field(default_factory=list)
    propagation_hv_ms: list[float] = field(default_factory=list)
    # The agents' own counters: reconcile passes (Agent.passes) and their processes' CPU.
    agent_idle_passes_per_s: float = 0.0  # per agent, nothing changing (heartbeats only)
    agent_idle_cpu_pct: float = 0.0  # per agent, of one CPU
    agent_passes_per_change: float = 0.0  # per agent and NB change
    agent_cpu_per_pass_ms: float = 0.0  # while NB changes are propagated
    idle_hv_sync_ms: list[float] = field(default_factory=list)
    storm: dict[str, Any] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


class ScaleRun:
    def __init__(self, chassis: int, ports: int, workers: int | None, storm: int) -> None:
        self.n = chassis
        self.p = ports
        self.storm_size = min(storm, ports)
        self.base = Path(tempfile.mkdtemp(prefix="lps-", dir="/tmp"))
        self.marker = str(self.base)
        self.layout = lab.Layout(self.base, members=3, relays=2, northds=1)
        self.names = [f"hv{i}" for i in range(1, chassis + 1)]
        self.workers = workers or min(MAX_WORKERS, math.ceil(chassis / AGENTS_PER_WORKER))
        self.daemons: list[DaemonRef] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.sinks: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.northd: DaemonRef | None = None
        self.nb: NbWatch | None = None
        self.sb: SbWatch | None = None
        self.result = Result(chassis, ports, self.workers)
        # Port i of switch s lives on one of the switch's SPAN chassis.
        self.switches = max(1, math.ceil(ports / PORTS_PER_SWITCH))
        self.home: dict[str, str] = {}
        self.index: dict[str, int] = {}
        span = min(SPAN, chassis)
        for i in range(ports):
            s, j = divmod(i, PORTS_PER_SWITCH)
            name = f"p{i}"
            self.home[name] = self.names[(s * span + j % span) % chassis]
            self.index[name] = i

    def chassis_spec(self, name: str) -> ServerSpec:
        return sim.SimHost(name, self.base / name).ovsdb

    def chassis_sock(self, name: str) -> Path:
        return self.chassis_spec(name).socket

    # ----- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for spec in self.layout.servers:
                self.daemons.append(spec.daemon(spec.name, self.marker))
            list(pool.map(start_ovsdb, self.layout.servers))
            elapsed = time.monotonic() - t0
            say(f"[{self.label}] NB and SB clusters of 3, 2 SB relays: {elapsed:.1f} s")
            self.init_databases()
            self.start_northd()
            specs = [self.chassis_spec(n) for n in self.names]
            self.daemons += [
                s.daemon(f"{s.directory.name}/ovsdb-server", self.marker) for s in specs
            ]
            list(pool.map(start_ovsdb, specs))
            relays = ",".join(self.layout.agent_sb_remotes)
            list(
                pool.map(
                    lambda a: init_chassis(
                        self.chassis_sock(a[1]), a[1], a[0], relays, [f"all-{a[1]}"]
                    ),
                    enumerate(self.names, start=1),
                )
            )
        say(f"[{self.label}] {self.n} chassis databases: {time.monotonic() - t0:.1f} s")
        self.nb = NbWatch(self.layout.nb_remote)
        self.sb = SbWatch(self.layout.sb_remote)
        spanning = [f"all-{n}" for n in self.names]
        self.nb.client.transact(
            [
                *(
                    Insert(
                        "Logical_Switch_Port",
                        {
                            "name": f"all-{n}",
                            "addresses": [f"{mac(1_000_000 + i)} {ip(1_000_000 + i)}"],
                            "options": {"requested-chassis": n},
                        },
                        name=f"a{i}",
                    )
                    for i, n in enumerate(self.names)
                ),
                Insert(
                    "Logical_Switch",
                    {"name": "ls-all", "ports": [Ref(f"a{i}") for i in range(self.n)]},
                ),
            ],
            timeout=TIMEOUT,
        )
        self.nb.count(set(spanning))
        self.sb.expect({f"all-{n}": n for n in self.names})
        self.start_sinks()
        self.start_agents()
        names = set(self.names)
        nb, sb = self.nb, self.sb
        sb.client.wait_until(
            lambda s: names <= schema.live_chassis(s), timeout=TIMEOUT, what="every chassis alive"
        )
        # Every chassis: br-int, the spanning switch's VIF and a tunnel to each other chassis,
        # each with the ofport the recording switch gave it.
        tunnels = self.n * (self.n - 1)
        with flowsink.SinkControl(self.base) as ctl:
            deadline = time.monotonic() + TIMEOUT
            while ctl.call(op="stats")["ofports_assigned"] < tunnels + 2 * self.n:
                if time.monotonic() > deadline:
                    raise TimeoutError("tunnel ports did not all get an ofport")
                time.sleep(0.1)  # the switch's counter; the database waits below are exact
        sb.wait(lambda: sb.bound >= self.n, TIMEOUT, "spanning ports bound")
        nb.wait(lambda: nb.up_counted >= self.n, TIMEOUT, "spanning ports up")
        target, _ = nb.bump()
        nb.wait_hv(target)
        self.result.startup_s = time.monotonic() - t0
        say(
            f"[{self.label}] {self.n} agents in {self.workers} processes up (registered, "
            f"{tunnels} tunnels, spanning switch bound, hv_cfg synced): "
            f"{self.result.startup_s:.1f} s"
        )

    @property
    def label(self) -> str:
        return f"{self.n}x{self.p}"

    def init_databases(self) -> None:
        with OvsdbClient(
            self.layout.nb_remote,
            schema.NB_NAME,
            {"NB_Global": None},
            schema=str(self.layout.nb.schema),
        ) as client:
            snap = client.wait_connected(60)
            if not snap.table("NB_Global"):
                client.transact(
                    [Insert("NB_Global", {"external_ids": {"created-by": "bench/scale.py"}})]
                )
        with OvsdbClient(
            self.layout.sb_remote,
            schema.SB_NAME,
            rbac.SETUP_TABLES,
            schema=str(self.layout.sb.schema),
        ) as client:
            ops, _ = rbac.setup_operations(client.wait_connected(60), None)
            client.transact(ops)

    def start_northd(self) -> None:
        directory = self.base / "northd"
        directory.mkdir()
        ref = DaemonRef("northd", directory / "northd.pid", self.marker)
        self.northd = ref
        self.daemons.append(ref)
        spawn_detached(
            [
                sys.executable,
                "-m",
                "liveport.cli.daemons",
                "northd",
                "--nb-db",
                self.layout.nb_remote,
                "--sb-db",
                self.layout.sb_remote,
                "--dead-after",
                str(DEAD_AFTER),
                "--pidfile",
                str(ref.pidfile),
                "--log-file",
                str(directory / "northd.log"),
                # Its control socket with its files, and not this machine's liveport.conf.
                "--unixctl",
                str(directory / "northd.ctl"),
                f"--config={os.devnull}",
            ],
            pidfile=ref.pidfile,
            log_file=directory / "northd.out",
        )

    def start_sinks(self) -> None:
        log = (self.base / "flowsink.out").open("wb")
        self.sinks = subprocess.Popen(
            [sys.executable, str(HERE / "flowsink.py"), str(self.base), *self.names],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        self.children.append(self.sinks)
        assert self.sinks.stdout is not None
        if self.sinks.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the flow sinks did not start (see {self.base}/flowsink.out)")

    def start_agents(self) -> None:
        groups = [self.names[i :: self.workers] for i in range(self.workers)]
        for k, group in enumerate(groups):
            log = (self.base / f"agents{k}.out").open("wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--agents",
                    str(self.base),
                    str(k),
                    str(HEARTBEAT),
                    *group,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.children.append(proc)
            self.agents.append(proc)

    def stop(self) -> None:
        for watch in (self.nb, self.sb):
            if watch is not None:
                watch.close()
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.children):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_daemons(list(reversed(self.daemons)))
        if os.environ.get("LIVEPORT_SCALE_KEEP"):
            say(f"[{self.label}] logs kept in {self.base} (every process stopped)")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # ----- measurements ----------------------------------------------------------------------

    def agent_counters(self) -> tuple[int, float]:
        """Reconcile passes of every agent and CPU seconds of their processes, as the agent
        processes last reported them (every REPORT_EVERY s)."""
        passes, cpu = 0, 0.0
        for k in range(len(self.agents)):
            doc = json.loads((self.base / f"agents{k}.stats").read_text())
            passes += doc["passes"]
            cpu += doc["cpu"]
        return passes, cpu

    def measure_resources(self, phase: str) -> None:
        pids: dict[str, list[int]] = {
            "agents": [p.pid for p in self.agents],
            "flowsink": [self.sinks.pid] if self.sinks is not None else [],
        }
        for ref in self.daemons:
            pid = ref.running_pid()
            if pid is None:
                continue
            role = ref.role
            group = (
                "chassis ovsdb-servers"
                if role.endswith("/ovsdb-server")
                else "SB relays"
                if role.startswith("sb-relay")
                else "SB members"
                if role.startswith("sb")
                else "NB members"
                if role.startswith("nb")
                else role
            )
            pids.setdefault(group, []).append(pid)
        for group, group_pids in pids.items():
            self.result.rss_mb[group] = round(sum(rss_mb(p) for p in group_pids), 1)
            self.result.cpu_s[group] = round(sum(cpu_seconds(p) for p in group_pids), 1)
        self.result.rss_mb["agent average"] = round(
            self.result.rss_mb.get("agents", 0.0) / self.n, 1
        )
        say(f"[{self.label}] after {phase}: RSS {self.result.rss_mb} MB; CPU {self.result.cpu_s} s")

    def bind(self) -> None:
        assert self.nb is not None and self.sb is not None
        names = list(self.home)
        self.nb.count(set(names))
        self.sb.expect(self.home)
        t0 = time.monotonic()
        per_txn = max(1, BATCH // PORTS_PER_SWITCH)
        for first in range(0, self.switches, per_txn):
            ops: list[Op] = []
            for s in range(first, min(self.switches, first + per_txn)):
                members = [n for n in names[s * PORTS_PER_SWITCH : (s + 1) * PORTS_PER_SWITCH]]
                for n in members:
                    ops.append(
                        Insert(
                            "Logical_Switch_Port",
                            {
                                "name": n,
                                "addresses": [f"{mac(self.index[n])} {ip(self.index[n])}"],
                                "options": {"requested-chassis": self.home[n]},
                            },
                            name=f"r{n}",
                        )
                    )
                ops.append(
                    Insert(
                        "Logical_Switch",
                        {"name": f"ls{s}", "ports": [Ref(f"r{n}") for n in members]},
                    )
                )
            self.nb.client.transact(ops, timeout=TIMEOUT)
        total = len(names) + self.n
        nb, sb = self.nb, self.sb
        created = sb.wait(lambda: len(sb.owner) >= total, TIMEOUT, "port bindings")
        self.result.nb_to_sb_s = created - t0
        say(f"[{self.label}] NB -> SB: {self.p} port bindings in {self.result.nb_to_sb_s:.1f} s")
        by_chassis: dict[str, list[str]] = {}
        for n in names:
            by_chassis.setdefault(self.home[n], []).append(n)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c: plug(self.chassis_sock(c), by_chassis[c]), sorted(by_chassis)))
        want = len(sb.expected)
        bound = sb.wait(lambda: sb.bound >= want, TIMEOUT, "every port bound")
        self.result.bound_s = bound - t0
        say(f"[{self.label}] {self.p} VIFs plugged -> all bound: {self.result.bound_s:.1f} s")
        counted = len(nb.counted)
        up = nb.wait(lambda: nb.up_counted >= counted, TIMEOUT, "every port up")
        self.result.up_s = up - t0
        say(f"[{self.label}] ... all up in the NB: {self.result.up_s:.1f} s")
        target, _ = self.nb.bump()
        self.result.bind_hv_sync_s = self.nb.wait_hv(target) - t0
        say(f"[{self.label}] ... and --wait=hv synced: {self.result.bind_hv_sync_s:.1f} s")
        with flowsink.SinkControl(self.base) as ctl:
            bridges = ctl.call(op="stats")["bridges"]
        self.result.flows_total = sum(v["flows"] for v in bridges.values())
        self.result.flow_mods_total = sum(v["flow_mods"] for v in bridges.values())

    def propagate(self) -> None:
        """--wait=hv sync with nothing to do, then PROBES new ports on the spanning switch."""
        assert self.nb is not None and self.sb is not None
        nb, sb = self.nb, self.sb
        passes0, cpu0 = self.agent_counters()
        time.sleep(QUIET)  # measuring the idle load: nothing is awaited here
        passes1, cpu1 = self.agent_counters()
        self.result.agent_idle_passes_per_s = (passes1 - passes0) / self.n / QUIET
        self.result.agent_idle_cpu_pct = (cpu1 - cpu0) / self.n / QUIET * 100
        for _ in range(PROBES):
            target, t0 = nb.bump()
            self.result.idle_hv_sync_ms.append((nb.wait_hv(target) - t0) * 1e3)
        ls_all = nb.client.snapshot().lookup("Logical_Switch", "name", "ls-all")[0]
        for k in range(PROBES):
            name = f"probe{k}"
            lsp = Insert(
                "Logical_Switch_Port",
                {"name": name, "addresses": [f"{mac(2_000_000 + k)} {ip(2_000_000 + k)}"]},
                name="probe",
            )
            add = Mutate("Logical_Switch", ls_all.uuid, "ports", "add", Ref("probe"))
            target, t0 = nb.bump([lsp, add])
            sb_at = nb.wait(lambda: nb.cfg["sb_cfg"] >= target, TIMEOUT, "sb_cfg")  # noqa: B023
            sb.wait(lambda: name in sb.owner, TIMEOUT, name)  # noqa: B023
            probe_cookie = sb.port_cookie(name)
            with flowsink.SinkControl(self.base) as ctl:
                seen = ctl.call(op="wait_cookie", cookie=probe_cookie, timeout=TIMEOUT)
            if seen["missing"]:
                raise RuntimeError(f"{name}: no flow on {', '.join(seen['missing'])}")
            hv_at = nb.wait_hv(target)
            self.result.propagation_sb_ms.append((sb_at - t0) * 1e3)
            self.result.propagation_flows_first_ms.append((seen["first"] - t0) * 1e3)
            self.result.propagation_flows_ms.append((seen["last"] - t0) * 1e3)
            self.result.propagation_hv_ms.append((hv_at - t0) * 1e3)
        time.sleep(2 * REPORT_EVERY)  # the agents' counters include the last change
        passes2, cpu2 = self.agent_counters()
        self.result.agent_passes_per_change = (passes2 - passes1) / (2 * PROBES * self.n)
        self.result.agent_cpu_per_pass_ms = (cpu2 - cpu1) / max(1, passes2 - passes1) * 1e3
        say(
            f"[{self.label}] one NB change -> every chassis' flows: median "
            f"{statistics.median(self.result.propagation_flows_ms):.0f} ms, hv_cfg "
            f"{statistics.median(self.result.propagation_hv_ms):.0f} ms"
        )

    def storm(self) -> None:
        """STORM concurrent migrations through the CMS API, each to the next chassis."""
        assert self.nb is not None and self.sb is not None
        count = self.storm_size
        step = max(1, self.p // count)
        ports = [f"p{i * step}" for i in range(count)]
        plan = {
            p: (self.home[p], self.names[(self.names.index(self.home[p]) + 1) % self.n])
            for p in ports
        }
        self.sb.watched = set(ports)
        cms = Cms(self.layout.nb_remote, self.layout.sb_remote, connect_timeout=120)
        # The CMS's own SB view must have caught up with the bindings before it checks them.
        cms.sb.wait_until(
            lambda s: all(s.lookup("Port_Binding", "logical_port", p) for p in ports),
            timeout=TIMEOUT,
            what="the CMS's SB view",
        )
        timings: dict[str, dict[str, float]] = {}
        outcomes: dict[str, dict[str, Any]] = {}
        say(f"[{self.label}] migration storm: {count} concurrent migrations ...")
        t0 = time.monotonic()

        def migrate(port: str) -> None:
            source, dest = plan[port]
            t = {"start": time.monotonic()}
            plug(self.chassis_sock(dest), [port])
            cms.start(port, dest, form="ovn", wait="ready", timeout=TIMEOUT)
            t["ready"] = time.monotonic()
            with flowsink.SinkControl(self.base) as ctl:
                outcomes[port] = ctl.call(op="announce", chassis=dest, mac=mac(self.index[port]))
            t["announced"] = time.monotonic()
            cms.sb.wait_until(
                lambda s: s.lookup("Port_Binding", "logical_port", port)[0]["chassis"] == dest,
                timeout=TIMEOUT,
                what=f"{port} bound to {dest}",
            )
            t["bound"] = time.monotonic()
            claims = cms.sb.snapshot().lookup("Port_Claim", "logical_port", port)
            kinds = [c["activation"].get("kind") for c in claims if c["chassis"] == dest]
            outcomes[port]["recorded"] = kinds[0] if kinds else None
            cms.complete(port, timeout=TIMEOUT)
            t["completed"] = time.monotonic()
            unplug(self.chassis_sock(source), port)
            timings[port] = t

        try:
            with ThreadPoolExecutor(max_workers=count) as pool:
                list(pool.map(migrate, ports))
            done = time.monotonic()
            self.sb.expect({p: plan[p][1] for p in ports})
            target, _ = self.nb.bump()
            self.nb.wait_hv(target)
            settled = time.monotonic()
        finally:
            cms.close()
        changes = {p: 0 for p in ports}
        for at, port, _owner in self.sb.changes:
            if at >= t0:
                changes[port] += 1
        found = sum(1 for o in outcomes.values() if o.get("found"))
        recorded: dict[str, int] = {}
        for o in outcomes.values():
            recorded[str(o.get("recorded"))] = recorded.get(str(o.get("recorded")), 0) + 1
        self.result.storm = {
            "migrations": count,
            "completion_s": done - t0,
            "settled_s": settled - t0,
            "all_bound_to_destination_s": max(t["bound"] for t in timings.values()) - t0,
            "ready_ms": [(t["ready"] - t["start"]) * 1e3 for t in timings.values()],
            "announce_to_bound_ms": [(t["bound"] - t["announced"]) * 1e3 for t in timings.values()],
            "complete_ms": [(t["completed"] - t["bound"]) * 1e3 for t in timings.values()],
            "per_migration_s": [t["completed"] - t["start"] for t in timings.values()],
            "owner_changes": sum(changes.values()),
            "ports_not_exactly_one_change": sorted(p for p, c in changes.items() if c != 1),
            "announced_in_datapath": found,
            "activation_recorded_by_destination": recorded,
            "activation": "RARP played into D's recording switch (learn + NXT_PACKET_IN2)",
        }
        say(
            f"[{self.label}] storm: {count} migrations complete in {done - t0:.1f} s, "
            f"{sum(changes.values())} owner changes"
        )

    def run(self) -> Result:
        started = time.monotonic()
        try:
            self.start()
            self.bind()
            self.measure_resources("binding")
            self.propagate()
            self.storm()
            self.measure_resources("the storm")
        finally:
            self.stop()
        self.result.wall_s = time.monotonic() - started
        return self.result


# ----- agent worker processes -------------------------------------------------------------------


def agents_worker(argv: list[str]) -> int:
    """`scale.py --agents BASE K HEARTBEAT CHASSIS...`: runs one liveport-agent per chassis in
    this process (one asyncio loop), as `liveport agent` would, until SIGTERM."""
    base, k, heartbeat, names = Path(argv[0]), argv[1], float(argv[2]), argv[3:]
    logs.configure("info", base / f"agents{k}.log")
    log = logging.getLogger("bench.agents")

    async def report(agents: list[Agent], stop: asyncio.Event) -> None:
        """The agents' pass counts and this process's CPU time, for the harness."""
        path = base / f"agents{k}.stats"
        while True:
            doc = {"passes": sum(a.passes for a in agents), "cpu": time.process_time()}
            path.with_suffix(".tmp").write_text(json.dumps(doc))
            path.with_suffix(".tmp").replace(path)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_EVERY):
                    await stop.wait()
            if stop.is_set():
                return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agents = [
            Agent(
                AgentConfig(
                    ovs_remote=f"unix:{base / name / 'conf.sock'}",
                    mgmt_socket=str(base / name / "br-int.mgmt"),
                    heartbeat_interval=heartbeat,
                )
            )
            for name in names
        ]
        reporter = asyncio.create_task(report(agents, stop))
        results = await asyncio.gather(*(a.run(stop) for a in agents), return_exceptions=True)
        await reporter
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.error("agent %s failed: %r", name, result)

    if os.environ.get("LIVEPORT_SCALE_PROFILE"):
        import cProfile  # noqa: PLC0415 - only when asked for

        with cProfile.Profile() as profile:
            asyncio.run(main())
        profile.dump_stats(base / f"agents{k}.prof")
    else:
        asyncio.run(main())
    return 0


# ----- reporting --------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mmm(values: Sequence[float], unit: str = "ms") -> str:
    if not values:
        return "n/a"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f} {unit}"


def figures(r: Result) -> list[Figure]:
    storm = r.storm
    changes = storm.get("owner_changes", 0)
    off = storm.get("ports_not_exactly_one_change", [])
    return [
        Figure("start-up: agents registered, tunnels, hv synced", _s(r.startup_s)),
        Figure(f"NB -> SB: {r.ports} port bindings created", _s(r.nb_to_sb_s)),
        Figure(
            f"bind {r.ports} ports on {r.chassis} chassis: all bound",
            _s(r.bound_s),
            "0.73 s",
            "OVN: 1000 ports, 1 chassis",
        ),
        Figure(f"bind {r.ports} ports: all up in NB", _s(r.up_s), "3.6 s", "OVN: 1000 / 1"),
        Figure(f"bind {r.ports} ports: --wait=hv synced", _s(r.bind_hv_sync_s)),
        Figure("flows in all chassis' tables after binding", f"{r.flows_total:,}"),
        Figure("--wait=hv with nothing to do (min/med/max)", _mmm(r.idle_hv_sync_ms)),
        Figure("one NB change -> SB (sb_cfg)", _mmm(r.propagation_sb_ms)),
        Figure(
            f"one NB change -> flows on all {r.chassis} chassis",
            _mmm(r.propagation_flows_ms),
            "~76 ms",
            "DESIGN: 1000-row change to 100 cond. monitors, no flows",
        ),
        Figure("one NB change -> first chassis' flows", _mmm(r.propagation_flows_first_ms)),
        Figure("one NB change -> hv_cfg (every Chassis_Private)", _mmm(r.propagation_hv_ms)),
        Figure(
            "agent: CPU per reconcile pass",
            f"{r.agent_cpu_per_pass_ms:.0f} ms",
            "-",
            f"{r.agent_passes_per_change:.1f} passes per agent per NB change; "
            f"{r.chassis} agents share {os.cpu_count()} CPUs here",
        ),
        Figure(
            "agent: when nothing changes",
            f"{r.agent_idle_passes_per_s:.2f} passes/s, {r.agent_idle_cpu_pct:.1f} % CPU",
            "-",
            f"heartbeat every {HEARTBEAT:g} s",
        ),
        Figure(
            f"storm: {storm.get('migrations', 0)} concurrent migrations complete",
            _s(storm.get("completion_s", 0.0)),
        ),
        Figure(
            "storm: all bound to their destination",
            _s(storm.get("all_bound_to_destination_s", 0.0)),
        ),
        Figure("storm: start -> D ready (M9), per migration", _mmm(storm.get("ready_ms", []))),
        Figure("storm: announcement -> SB bound to D", _mmm(storm.get("announce_to_bound_ms", []))),
        Figure("storm: complete -> settled", _mmm(storm.get("complete_ms", []))),
        Figure(
            "storm: activations the destinations recorded",
            ", ".join(
                f"{n} {kind}"
                for kind, n in sorted(storm.get("activation_recorded_by_destination", {}).items())
            )
            or "n/a",
            "-",
            "rarp: from the packet-in; learned: from the learned flows",
        ),
        Figure(
            "storm: owner changes",
            f"{changes} (expected {storm.get('migrations', 0)}"
            + (f"; not exactly 1: {', '.join(off[:5])}" if off else "")
            + ")",
            "1 per migration",
        ),
        Figure(
            "RSS: agent average",
            f"{r.rss_mb.get('agent average', 0):.0f} MB",
            "13-40 MB",
            "ovn-controller",
        ),
        Figure(
            "RSS: SB members (3) / relays (2)",
            f"{r.rss_mb.get('SB members', 0):.0f} / {r.rss_mb.get('SB relays', 0):.0f} MB",
        ),
        Figure("RSS: northd", f"{r.rss_mb.get('northd', 0):.0f} MB"),
    ]


def growth_table(results: Sequence[Result]) -> None:
    print("\n== growth with size (chassis x ports)")
    head = (
        f"{'chassis':>7} {'ports':>6} {'start-up':>9} {'NB->SB':>7} {'bound':>7} {'up':>7} "
        f"{'change->flows':>13} {'->hv_cfg':>9} {'cpu/pass':>8} {'storm':>7} "
        f"{'owner chg':>9} {'flows':>9}"
    )
    print(head)
    for r in results:
        print(
            f"{r.chassis:>7} {r.ports:>6} {_s(r.startup_s):>9} {_s(r.nb_to_sb_s):>7} "
            f"{_s(r.bound_s):>7} {_s(r.up_s):>7} "
            f"{_med(r.propagation_flows_ms):>10.0f} ms {_med(r.propagation_hv_ms):>6.0f} ms "
            f"{r.agent_cpu_per_pass_ms:>5.0f} ms "
            f"{_s(r.storm.get('completion_s', 0.0)):>7} {r.storm.get('owner_changes', 0):>9} "
            f"{r.flows_total:>9,}"
        )
    for a, b in itertools.combinations(results, 2):
        if a.chassis == b.chassis and a.ports != b.ports:
            print(f"   {growth(a, b, 'ports', a.ports, b.ports)} at {a.chassis} chassis")
        elif a.ports == b.ports and a.chassis != b.chassis:
            print(f"   {growth(a, b, 'chassis', a.chassis, b.chassis)} at {a.ports} ports")


def _exponent(x0: float, x1: float, y0: float, y1: float) -> str:
    if x1 == x0 or y0 <= 0 or y1 <= 0 or math.isnan(y0) or math.isnan(y1):
        return "n/a"
    return f"{math.log(y1 / y0) / math.log(x1 / x0):.2f}"


def growth(a: Result, b: Result, what: str, x0: float, x1: float) -> str:
    """One line: how each time grew from a to b, as a factor and as an exponent of what."""
    pairs = [
        ("bind (all bound)", a.bound_s, b.bound_s),
        ("all up", a.up_s, b.up_s),
        ("NB->SB", a.nb_to_sb_s, b.nb_to_sb_s),
        ("change->all flows", _med(a.propagation_flows_ms), _med(b.propagation_flows_ms)),
        ("->hv_cfg", _med(a.propagation_hv_ms), _med(b.propagation_hv_ms)),
        ("start-up", a.startup_s, b.startup_s),
        ("storm", a.storm.get("completion_s", 0.0), b.storm.get("completion_s", 0.0)),
    ]
    parts = [
        f"{name} x{y1 / y0:.1f} (^{_exponent(x0, x1, y0, y1)})" for name, y0, y1 in pairs if y0 > 0
    ]
    return f"{what} x{x1 / x0:g}: " + ", ".join(parts)


def parse_sizes(items: Sequence[str]) -> list[tuple[int, int]]:
    sizes = []
    for item in items:
        chassis, _, ports = item.lower().partition("x")
        sizes.append((int(chassis), int(ports)))
    return sizes


def main(sizes: list[tuple[int, int]]) -> None:
    OUT.mkdir(exist_ok=True)
    workers = int(os.environ.get("LIVEPORT_SCALE_WORKERS", "0")) or None
    storm = int(os.environ.get("LIVEPORT_SCALE_STORM", "100"))
    results: list[Result] = []
    started = time.monotonic()
    for chassis, ports in sizes:
        say(f"scale: {chassis} chassis, {ports} ports")
        results.append(ScaleRun(chassis, ports, workers, storm).run())
    wall = time.monotonic() - started
    biggest = results[-1]
    print_table(
        f"control-plane scale: {biggest.chassis} chassis ({biggest.agent_processes} agent "
        f"processes), {biggest.ports} ports, 3+3 Raft members, 2 SB relays, "
        f"{os.cpu_count()} CPUs",
        figures(biggest),
    )
    growth_table(results)
    print(
        "   activation in the storm: a RARP played into D's recording switch (its activation "
        "flows learn + NXT_PACKET_IN2), not completion by requested-chassis=D alone"
    )
    print(f"   total run time {wall:.0f} s")
    (OUT / "scale.json").write_text(
        json.dumps(
            {"sizes": [asdict(r) for r in results], "wall_s": wall, "cpus": os.cpu_count()},
            indent=2,
        )
        + "\n"
    )
    print(f"   raw results: {OUT / 'scale.json'}")


def default_sizes() -> list[tuple[int, int]]:
    env = os.environ.get("LIVEPORT_SCALE_SIZES")
    return parse_sizes(env.split(",")) if env else DEFAULT_SIZES


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--agents":
        sys.exit(agents_worker(sys.argv[2:]))
    main(parse_sizes(sys.argv[1:]) or default_sizes())
