"""Bringing a lab up, describing it, and tearing it down.

A lab lives in one directory: lab.json (see state.py), NB and SB ovsdb-servers, a shared
underlay switch, a top-of-rack switch (the provider networks' physical network), and
chassis hv1..hvN, each with its own ovsdb-server and ovs-vswitchd, plus (once started)
liveport-northd and one liveport-agent per chassis. Every daemon's pidfile is
registered in lab.json before the daemon starts, so `down` finds everything even after an
interrupted `up`, and it stops exactly those PIDs (checked against their command lines).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveport.cms.migrate import Cms
from liveport.cms.ovn import OvnCms
from liveport.lab import control, hugepages, sim
from liveport.lab import secure as secure_lab
from liveport.lab.secure import LabTls
from liveport.lab.state import (
    LOCK_FILE,
    ChassisEntry,
    DaemonEntry,
    HostEntry,
    LabState,
    NotALab,
    VmEntry,
    editing,
    is_lab,
    load,
    locked,
    save,
)
from liveport.model.errors import Conflict, InvalidInput
from liveport.model.security import CHASSIS_ROLE, CONTROL_ROLE
from liveport.ovsdb import rbac, schema
from liveport.ovsdb.client import OvsdbClient, configure_tls
from liveport.ovsdb.rows import Insert
from liveport.ovsdb.server import ServerError, ServerSpec, cluster_status
from liveport.ovsdb.server import start as start_ovsdb
from liveport.runtime.process import stop_daemons
from liveport.vhostuser.catalogue import load_catalogue

DEFAULT_DIR = Path(os.environ.get("LIVEPORT_LAB_DIR", "/tmp/liveport-lab"))
MAX_CHASSIS = 64
MAX_MEMBERS = 7
MAX_RELAYS = 8
MAX_NORTHDS = 3
ENGINES = ("liveport", "ovn")
OVN_SB_NAME = "OVN_Southbound"
CONNECT_TIMEOUT = 30.0  # seconds: a new cluster elects its leader first
LATE_PIDFILE_GRACE = 1.0  # seconds a detaching daemon may take to write its pidfile

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Layout:
    """Where each part of a lab lives inside its directory."""

    directory: Path
    tls: LabTls | None = None  # a secure lab's PKI and listeners
    members: int = 0  # 0: standalone NB and SB; otherwise Raft clusters of this many members
    relays: int = 0  # SB relays the agents connect to (clustered labs)
    northds: int = 1  # northd processes; one is active (it holds the NB lock)
    engine: str = "liveport"  # or "ovn": ovn-northd and ovn-controller on OVN's SB schema
    metrics: bool = False  # liveport's daemons serve Prometheus metrics on loopback

    @classmethod
    def of(cls, directory: Path) -> Layout:
        """The layout of an existing lab, as lab.json says."""
        state = load(directory)
        return cls(
            directory,
            lab_tls(state),
            members=int(state.options.get("members", 0)),
            relays=int(state.options.get("relays", 0)),
            northds=int(state.options.get("northds", 1)),
            engine=state.engine,
            metrics=bool(state.options.get("metrics", False)),
        )

    @property
    def clustered(self) -> bool:
        return self.members > 0

    def _member(self, db: str, index: int, schema_path: Path, database: str) -> ServerSpec:
        where = self.directory / db
        name = f"{db}{index}"
        tls = self.tls
        options: tuple[str, ...] = ()
        extra: tuple[str, ...] = ()
        listeners: tuple[tuple[str, str], ...] = ()
        if tls is not None:
            options = tls.server_options(db)
            if db == "nb":
                extra = (secure_lab.listener(tls.nb_ports[index - 1]),)
            else:
                listeners = ((secure_lab.listener(tls.sb_control_ports[index - 1]), CONTROL_ROLE),)
        return ServerSpec(
            name,
            where,
            schema_path,
            extra_remotes=extra,
            raft=f"unix:{where / name}.raft",
            join=tuple(f"unix:{where / db}{i}.raft" for i in range(1, index)),
            database=database,
            db_remotes=(
                (f"db:{schema.SB_NAME},SB_Global,connections",)
                if db == "sb" and tls is None
                else ()
            ),
            options=options,
            listeners=listeners,
        )

    @property
    def nb_servers(self) -> list[ServerSpec]:
        if self.clustered:
            path = schema.northbound_path()
            return [self._member("nb", i, path, schema.NB_NAME) for i in range(1, self.members + 1)]
        if self.tls is None:
            return [ServerSpec("nb", self.directory / "nb", schema.northbound_path())]
        return [
            ServerSpec(
                "nb",
                self.directory / "nb",
                schema.northbound_path(),
                extra_remotes=(self.tls.nb_listener,),
                options=self.tls.server_options("nb"),
            )
        ]

    @property
    def sb_servers(self) -> list[ServerSpec]:
        if self.engine == "ovn":
            return [ServerSpec("sb", self.directory / "sb", schema.ovn_southbound_path())]
        if self.clustered:
            path = schema.southbound_path()
            return [self._member("sb", i, path, schema.SB_NAME) for i in range(1, self.members + 1)]
        return [
            ServerSpec(
                "sb",
                self.directory / "sb",
                schema.southbound_path(),
                db_remotes=(f"db:{schema.SB_NAME},SB_Global,connections",),
                options=self.tls.server_options("sb") if self.tls is not None else (),
            )
        ]

    @property
    def sb_relays(self) -> list[ServerSpec]:
        """The relays of the whole SB cluster (--relays); in a secure lab they are chassis
        relays, each with its own chassis listener."""
        tls = self.tls
        first = self.members  # in a secure lab, the members' own chassis relays come first
        return [
            ServerSpec(
                f"sb-relay{i}",
                self.directory / "sb",
                schema.southbound_path(),
                relay=self.sb_remote,
                database=schema.SB_NAME,
                **(self._chassis_relay(tls.sb_chassis_ports[first + i - 1]) if tls else {}),
            )
            for i in range(1, self.relays + 1)
        ]

    def _chassis_relay(self, port: int | None) -> dict[str, Any]:
        """What makes a relay a chassis relay: TLS trusting only the chassis CA, and the
        chassis role on its listener (its own, or SB_Global.chassis_connections)."""
        assert self.tls is not None
        creds = self.tls.relay_credentials()
        return {
            "options": (
                f"--private-key={creds.private_key}",
                f"--certificate={creds.certificate}",
                f"--ca-cert={creds.ca_cert}",
            ),
            **(
                {"listeners": ((secure_lab.listener(port), CHASSIS_ROLE),)}
                if port is not None
                else {"db_remotes": (f"db:{schema.SB_NAME},SB_Global,chassis_connections",)}
            ),
        }

    @property
    def sb_chassis_relays(self) -> list[ServerSpec]:
        """A secure lab's chassis-facing SB servers: relays of the SB whose TLS trusts only
        the chassis CA and whose listeners have the chassis role. The SB server itself
        trusts only the control CA, so no certificate of the chassis CA can act as northd.
        Standalone: one relay of the SB server, listening on SB_Global.chassis_connections.
        Clustered: one beside each member, each on its own port (and --relays more,
        sb_relays). It relays its own member, and the others only once that one is gone: a
        relay keeps its clients when its source dies (they would see an SB that no longer
        changes, and be declared dead for their missing heartbeats)."""
        if self.tls is None:
            return []
        if not self.clustered:
            return [
                ServerSpec(
                    "sb-chassis",
                    self.directory / "sb",
                    schema.southbound_path(),
                    relay=self.sb.remote,
                    database=schema.SB_NAME,
                    **self._chassis_relay(None),
                )
            ]
        members = self.sb_servers
        return [
            ServerSpec(
                f"sb-chassis{i}",
                self.directory / "sb",
                schema.southbound_path(),
                relay=",".join(m.remote for m in [member, *members[: i - 1], *members[i:]]),
                database=schema.SB_NAME,
                **self._chassis_relay(self.tls.sb_chassis_ports[i - 1]),
            )
            for i, member in enumerate(members, start=1)
        ]

    @property
    def relay_servers(self) -> list[ServerSpec]:
        """Every relay of the lab: they start once the servers they relay are up."""
        return [*self.sb_relays, *self.sb_chassis_relays]

    def tls_listeners(self) -> list[tuple[str, str, str]]:
        """(server, listener, role) for every TLS listener of a secure lab."""
        if self.tls is None:
            return []
        if not self.clustered:
            return [
                ("nb", self.tls.nb_listener, ""),
                ("sb", secure_lab.listener(self.tls.sb_control_port), CONTROL_ROLE),
                ("sb-chassis", secure_lab.listener(self.tls.sb_chassis_port), CHASSIS_ROLE),
            ]
        out = []
        for spec in self.servers:
            out += [(spec.name, r, "") for r in spec.extra_remotes if r.startswith("pssl:")]
            out += [(spec.name, target, role) for target, role in spec.listeners]
        return out

    @property
    def servers(self) -> list[ServerSpec]:
        """Every database server of the lab, in start order."""
        return [*self.nb_servers, *self.sb_servers, *self.relay_servers]

    @property
    def nb(self) -> ServerSpec:
        """The NB server (the first member of a cluster)."""
        return self.nb_servers[0]

    @property
    def sb(self) -> ServerSpec:
        """The SB server (the first member of a cluster)."""
        return self.sb_servers[0]

    @property
    def nb_remote(self) -> str:
        """Every NB server, as clients list them (comma-separated)."""
        return ",".join(spec.remote for spec in self.nb_servers)

    @property
    def sb_remote(self) -> str:
        return ",".join(spec.remote for spec in self.sb_servers)

    @property
    def agent_sb_remotes(self) -> list[str]:
        """Where the agents find the SB: the relays if any, else every SB server."""
        return [spec.remote for spec in (self.sb_relays or self.sb_servers)]

    def link_socket(self, host: str, index: int) -> Path:
        return self.directory / host / f"sb-link{index}.sock"

    def chassis_sb_remote(self, host: str) -> str:
        """The SB remote(s) written into a chassis' Open_vSwitch database for its agent: in
        a clustered lab through the chassis' link (lab.link, which faults can cut)."""
        if self.tls is not None:
            return self.tls.sb_chassis_remote
        if not self.clustered:
            return self.sb.remote
        return ",".join(
            f"unix:{self.link_socket(host, i)}" for i in range(1, len(self.agent_sb_remotes) + 1)
        )

    @property
    def underlay(self) -> sim.SimHost:
        return sim.SimHost("underlay", self.directory / "underlay")

    @property
    def tor(self) -> sim.SimHost:
        return sim.SimHost("tor", self.directory / "tor")

    def chassis(self, name: str) -> sim.SimHost:
        return sim.SimHost(name, self.directory / name)

    @property
    def northd_dir(self) -> Path:
        return self.directory / "northd"


def lab_tls(state: LabState) -> LabTls | None:
    doc = state.options.get("tls")
    return LabTls.from_json(doc) if doc else None


def chassis_names(count: int) -> list[str]:
    return [f"hv{i}" for i in range(1, count + 1)]


def resolve(directory: Path | str | None) -> Path:
    return Path(directory).absolute() if directory is not None else DEFAULT_DIR.absolute()


def agent_role(state: LabState, chassis: str) -> str:
    """The role of the chassis' control-plane daemon: liveport's agent or ovn-controller."""
    return f"{chassis}/ovn-controller" if state.engine == "ovn" else f"{chassis}/agent"


def dpdk_chassis(state: LabState) -> list[str]:
    """The chassis that run OVS-DPDK (`lab up --dpdk`)."""
    return list(state.options.get("dpdk", {}).get("chassis", []))


def parse_dpdk(value: str | None, chassis: int) -> list[str]:
    """--dpdk's value: None (no DPDK), "all" or "" (every chassis), or CHASSIS[,CHASSIS...]."""
    if value is None:
        return []
    names = chassis_names(chassis)
    if value in ("", "all"):
        return names
    wanted = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown or not wanted:
        raise InvalidInput(
            f"--dpdk names unknown chassis {', '.join(unknown) or repr(value)} "
            f"(this lab has {names[0]}..{names[-1]})"
        )
    return [n for n in names if n in wanted]


def running_daemons(state: LabState) -> list[tuple[str, int]]:
    out = []
    for ref in state.daemon_refs():
        pid = ref.running_pid()
        if pid is not None:
            out.append((ref.role, pid))
    return out


def _prepare_directory(directory: Path) -> None:
    """Refuses a directory that holds a running lab or something that is not a lab."""
    if is_lab(directory):
        state = load(directory)
        alive = running_daemons(state)
        if alive:
            raise Conflict(
                f"a lab is already running in {directory} ({len(alive)} processes); "
                "run 'liveport lab down' first"
            )
        _remove_lab_files(directory)
    elif _holds_foreign_files(directory):
        raise Conflict(f"{directory} exists and is not a liveport lab; refusing to use it")


def _holds_foreign_files(directory: Path) -> bool:
    """True if directory has content and is not a lab (a leftover lock file does not count)."""
    if not directory.exists() or is_lab(directory):
        return False
    return any(p.name != LOCK_FILE for p in directory.iterdir())


def _remove_lab_files(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_options(
    chassis: int,
    members: int,
    relays: int,
    northds: int | None,
    engine: str,
    secure: bool,
    backends: Mapping[str, str],
    mac_aging: int = sim.DEFAULT_MAC_AGING,
    dpdk: Collection[str] = (),
) -> int:
    """Refuses a bad combination before anything starts; returns the northd count."""
    low, high = sim.MAC_AGING_RANGE
    if not low <= mac_aging <= high:
        raise InvalidInput(
            f"--mac-aging must be between {low} and {high} seconds (what OVS applies), "
            f"not {mac_aging}"
        )
    if not 1 <= chassis <= MAX_CHASSIS:
        raise InvalidInput(f"--chassis must be between 1 and {MAX_CHASSIS}, not {chassis}")
    if not 0 <= members <= MAX_MEMBERS:
        raise InvalidInput(f"--members must be between 1 and {MAX_MEMBERS}, not {members}")
    if not 0 <= relays <= MAX_RELAYS:
        raise InvalidInput(f"--relays must be between 0 and {MAX_RELAYS}, not {relays}")
    if relays and not members:
        raise InvalidInput("--relays needs --clustered (relays serve the clustered SB)")
    if engine not in ENGINES:
        raise InvalidInput(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "ovn":
        if secure or members or backends or northds not in (None, 1):
            raise InvalidInput(
                "the OVN engine lab is plain: --secure, --clustered, --northds and "
                "--vhost-backend are liveport's"
            )
        schema.ovn_southbound_path()
        control.ovn_binaries()
    northds = northds if northds is not None else (2 if members else 1)
    if not 1 <= northds <= MAX_NORTHDS:
        raise InvalidInput(f"--northds must be between 1 and {MAX_NORTHDS}, not {northds}")
    unknown = sorted(set(backends) - set(chassis_names(chassis)))
    if unknown:
        raise InvalidInput(f"--vhost-backend names unknown chassis {', '.join(unknown)}")
    unknown = sorted(set(dpdk) - set(chassis_names(chassis)))
    if unknown:
        raise InvalidInput(f"--dpdk names unknown chassis {', '.join(unknown)}")
    if dpdk and not os.access(sim.DPDK_VSWITCHD, os.X_OK):
        raise InvalidInput(
            f"--dpdk needs {sim.DPDK_VSWITCHD} (Debian's openvswitch-switch-dpdk; "
            "scripts/setup.sh dpdk installs it)"
        )
    catalogue = load_catalogue()
    for name in backends.values():
        catalogue.get(name)  # an unknown mode is refused before anything starts
    return northds


def up(
    directory: Path,
    chassis: int = 3,
    *,
    agents: bool = True,
    heartbeat: float = 2.0,
    dead_after: float = 10.0,
    vhost_backends: Mapping[str, str] | None = None,
    secure: bool = False,
    members: int = 0,
    relays: int = 0,
    northds: int | None = None,
    engine: str = "liveport",
    mac_aging: int = sim.DEFAULT_MAC_AGING,
    metrics: bool = False,
    dpdk: Collection[str] = (),
    progress: Progress = _quiet,
) -> LabState:
    """Starts a lab; on any failure or interruption, stops what it started and cleans up.

    members > 0 makes NB and SB Raft clusters of that many members; relays adds SB relays
    for the agents; northds (default: 2 when clustered, else 1) northd processes share
    the work through the NB lock (one active, the others standing by); mac_aging is the
    top-of-rack switch's MAC aging time in seconds; metrics has liveport's daemons serve
    Prometheus metrics on a free loopback port each (`metrics/address` on their control
    sockets says which); dpdk names the chassis that run OVS-DPDK (their huge pages are
    reserved first and given back by `down`)."""
    backends = dict(vhost_backends or {})
    northds = _check_options(
        chassis, members, relays, northds, engine, secure, backends, mac_aging, dpdk
    )
    # Resolve schemas before touching anything: a missing one is a clear error, not a mess.
    schema.northbound_path()
    schema.southbound_path()
    sim.SimHost("check", directory).ovsdb.schema  # noqa: B018
    started = time.monotonic()
    if _holds_foreign_files(directory):
        raise Conflict(f"{directory} exists and is not a liveport lab; refusing to use it")
    with locked(directory):
        _prepare_directory(directory)
        tls = (
            secure_lab.prepare(directory, chassis_names(chassis), members, relays)
            if secure
            else None
        )
        layout = Layout(
            directory,
            tls,
            members=members,
            relays=relays,
            northds=northds,
            engine=engine,
            metrics=metrics,
        )
        state = LabState(
            directory=str(directory),
            status="starting",
            created=time.time(),
            engine=engine,
            options={
                "vhost_backends": backends,
                "chassis": chassis,
                "agents": agents,
                "heartbeat": heartbeat,
                "dead_after": dead_after,
                "secure": secure,
                "members": members,
                "relays": relays,
                "northds": northds,
                "tor": {"mac_aging": mac_aging},
                "metrics": metrics,
                **({"tls": tls.to_json()} if tls is not None else {}),
            },
        )
        hosts = [layout.chassis(name) for name in chassis_names(chassis)]
        dpdk = [name for name in chassis_names(chassis) if name in set(dpdk)]
        if dpdk:
            state.options["dpdk"] = {
                "chassis": dpdk,
                "socket_mem": sim.DPDK_SOCKET_MEM,
                "hugepages": {},
            }
        marker = state.marker
        state.daemons = [
            DaemonEntry(ref.role, str(ref.pidfile))
            for ref in [
                *(spec.daemon(spec.name, marker) for spec in layout.servers),
                *layout.underlay.daemons(marker),
                *layout.tor.daemons(marker),
                *(ref for host in hosts for ref in host.daemons(marker)),
            ]
        ]
        state.chassis = [
            ChassisEntry(
                name=host.name,
                index=i,
                encap_ip=str(sim.encap_ip(i)),
                underlay_mac=sim.underlay_mac(i),
                directory=str(host.directory),
                hostname=sim.chassis_hostname(host.name),
            )
            for i, host in enumerate(hosts, start=1)
        ]
        save(state)
    try:
        if dpdk:
            record: dict[str, int] = {}
            try:
                added = hugepages.reserve(sim.DPDK_SOCKET_MEM * len(dpdk), record)
            finally:
                with editing(directory) as current:
                    current.options["dpdk"]["hugepages"] = record
            progress(
                f"huge pages: {added} added to the pool (it held {record['previous']})"
                if added
                else f"huge pages: enough free in the pool ({record['previous']})"
            )
        _start_all(layout, state, hosts, progress, backends, dpdk)
        if agents:
            control.start(
                directory,
                layout,
                hosts,
                state,
                progress,
                heartbeat=heartbeat,
                dead_after=dead_after,
            )
    except BaseException:
        progress("start-up failed; stopping what was started")
        _teardown(directory)
        raise
    with editing(directory) as current:
        current.status = "up"
        state = current
    progress(f"lab up in {time.monotonic() - started:.2f}s")
    return state


def _start_all(
    layout: Layout,
    state: LabState,
    hosts: list[sim.SimHost],
    progress: Progress,
    backends: Mapping[str, str],
    dpdk: Collection[str] = (),
) -> None:
    t0 = time.monotonic()

    def step(text: str) -> None:
        progress(f"[{time.monotonic() - t0:6.3f}s] {text}")

    with ThreadPoolExecutor(max_workers=min(8, len(hosts) + 4)) as pool:
        relays = set(layout.relay_servers)
        databases = [pool.submit(start_ovsdb, s) for s in layout.servers if s not in relays]
        underlay = pool.submit(sim.start_underlay, layout.underlay)
        tor = pool.submit(sim.start_tor, layout.tor, int(state.options["tor"]["mac_aging"]))
        host_starts = [pool.submit(host.start, host.name in dpdk) for host in hosts]
        _wait_all(databases)
        # A relay that finds no server retries only after a back-off: start it after them.
        relaying = [pool.submit(start_ovsdb, spec) for spec in layout.relay_servers]
        # A standalone secure SB's listeners are its Connection rows; a cluster's members
        # and relays have their own (ServerSpec.listeners).
        tls = layout.tls
        _init_databases(layout, tls.sb_listeners if tls and not layout.clustered else None)
        _wait_all(relaying)
        if layout.tls is not None:
            secure_lab.wait_listening(layout.tls.ports, CONNECT_TIMEOUT)
        if layout.clustered:
            step(
                f"NB and SB clusters of {layout.members} up"
                + (f", {layout.relays} SB relays" if layout.relays else "")
            )
        else:
            step("NB and SB databases up")
        underlay.result()
        tor.result()
        # The ToR's trunk ports listen before the chassis connect (a dummy stream port
        # that finds no listener retries only after a back-off).
        trunks = pool.submit(sim.add_tor_trunks, layout.tor, [host.name for host in hosts])
        step("underlay and top-of-rack switches up")
        _wait_all(host_starts)
        trunks.result()
        step(f"{len(hosts)} chassis switches up")
        honoured: dict[str, tuple[str, ...]] = {}
        for host in hosts:
            if host.name in dpdk and host.name not in backends:
                # A DPDK chassis publishes the modes its OVS-DPDK release can honour (its
                # agent checks them again against the running switch).
                honoured[host.name] = sim.dpdk_modes(host)
                step(f"{host.name}: OVS-DPDK honours {', '.join(honoured[host.name])}")
        _wait_all(
            pool.submit(
                sim.attach_chassis,
                layout.underlay,
                host,
                entry.index,
                layout.chassis_sb_remote(host.name),
                backends.get(host.name),
                layout.engine,
                layout.tor,
                honoured.get(host.name, ()),
            )
            for host, entry in zip(hosts, state.chassis, strict=True)
        )
        step("chassis attached to the underlay and the ToR")
        _wait_all(
            pool.submit(
                sim.set_neighbours,
                host,
                [(c.encap_ip, c.underlay_mac) for c in state.chassis if c.name != host.name],
            )
            for host in hosts
        )
        step("tunnel neighbours set")


def _wait_all(futures: Iterable[Future[Any]]) -> None:
    """Waits for every future (so none is left running) and raises the first failure."""
    failure: BaseException | None = None
    for future in list(futures):
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below after the others finish
            failure = failure or exc
    if failure is not None:
        raise failure


def _init_databases(layout: Layout, listeners: Mapping[str, str] | None = None) -> None:
    """Creates the NB_Global row that ovn-nbctl expects, and sets the SB up as an operator
    would (`liveport sb setup`): SB_Global, the RBAC roles, the listeners with their roles."""
    with OvsdbClient(
        layout.nb_remote, schema.NB_NAME, {"NB_Global": None}, schema=str(layout.nb.schema)
    ) as client:
        snap = client.wait_connected(timeout=CONNECT_TIMEOUT)
        if not snap.table("NB_Global"):
            client.transact([Insert("NB_Global", {})], comment="liveport lab: initial row")
    if layout.engine == "ovn":
        with OvsdbClient(
            layout.sb_remote, OVN_SB_NAME, {"SB_Global": None}, schema=str(layout.sb.schema)
        ) as client:
            snap = client.wait_connected(timeout=CONNECT_TIMEOUT)
            if not snap.table("SB_Global"):
                client.transact([Insert("SB_Global", {})], comment="liveport lab: initial row")
        return
    with OvsdbClient(
        layout.sb_remote, schema.SB_NAME, rbac.SETUP_TABLES, schema=str(layout.sb.schema)
    ) as client:
        ops, _ = rbac.setup_operations(client.wait_connected(timeout=CONNECT_TIMEOUT), listeners)
        client.transact(ops, comment="liveport lab: SB set-up")


def down(directory: Path, *, progress: Progress = _quiet) -> list[tuple[str, int]]:
    """Stops every process of the lab and removes its directory."""
    if not is_lab(directory):
        raise NotALab(
            f"{directory} is not a liveport lab (no lab.json)"
            if directory.exists()
            else f"no lab at {directory}"
        )
    return _teardown(directory, progress)


def _teardown(directory: Path, progress: Progress = _quiet) -> list[tuple[str, int]]:
    with locked(directory):
        state = load(directory)
        interrupted = state.status == "starting"
        state.status = "stopping"
        save(state)
        refs = list(reversed(state.daemon_refs()))
        # Control plane first, then switches, databases last (reverse start order).
        stopped = stop_daemons(refs)
        if interrupted:
            # An interrupted `up` may have left a daemon in the middle of detaching: it writes
            # its pidfile within milliseconds. Look again until every registered daemon has
            # either never started (no directory for it) or been stopped.
            deadline = time.monotonic() + LATE_PIDFILE_GRACE
            while time.monotonic() < deadline:
                stopped += stop_daemons(refs)
                if all(ref.pid() is not None or not ref.pidfile.parent.exists() for ref in refs):
                    break
                time.sleep(0.02)
            stopped += stop_daemons(refs)
        for role, pid in stopped:
            progress(f"stopped {role} (pid {pid})")
        record = state.options.get("dpdk", {}).get("hugepages")
        if record:
            # The DPDK chassis are gone with their pages: give back what up added.
            given = hugepages.release(record)
            if given:
                progress(f"huge pages: {given} given back to the pool")
            save(state)
    shutil.rmtree(directory, ignore_errors=True)
    return stopped


def load_state(directory: Path) -> LabState:
    return load(directory)


def status(directory: Path) -> dict[str, Any]:
    """A description of the lab: every daemon with its PID and sockets, every chassis, VM."""
    state = load(directory)
    layout = Layout.of(directory)
    refs = {ref.role: ref for ref in state.daemon_refs()}

    def proc(role: str, **extra: Any) -> dict[str, Any]:
        ref = refs.get(role)
        pid = ref.running_pid() if ref is not None else None
        return {"pid": pid, "running": pid is not None, **extra}

    chassis = []
    for entry in state.chassis:
        host = layout.chassis(entry.name)
        chassis.append(
            {
                "name": entry.name,
                "hostname": entry.hostname or entry.name,
                "encap_ip": entry.encap_ip,
                "ovsdb": proc(
                    f"{entry.name}/ovsdb-server", socket=str(host.db_socket), remote=host.db_remote
                ),
                "vswitchd": proc(
                    f"{entry.name}/ovs-vswitchd",
                    ctl=str(host.vswitchd_ctl),
                    mgmt=str(host.mgmt_socket()),
                    dpdk=entry.name in dpdk_chassis(state),
                ),
                **(
                    {"agent": proc(agent)}
                    if (agent := agent_role(state, entry.name)) in refs
                    else {}
                ),
                **(
                    {"sb_link": proc(f"{entry.name}/sb-link")}
                    if f"{entry.name}/sb-link" in refs
                    else {}
                ),
            }
        )
    doc: dict[str, Any] = {
        "directory": state.directory,
        "status": state.status,
        "engine": state.engine,
        "created": state.created,
        "nb": _database(layout.nb_servers, proc, layout.nb_remote, schema.NB_NAME),
        "sb": _database(layout.sb_servers, proc, layout.sb_remote, schema.SB_NAME),
        **(
            {"sb_relays": [proc(s.name, socket=str(s.socket)) for s in layout.sb_relays]}
            if layout.relays
            else {}
        ),
        **({"tls": _tls_status(layout, proc)} if layout.tls is not None else {}),
        "underlay": proc("underlay/ovs-vswitchd", ctl=str(layout.underlay.vswitchd_ctl)),
        **(
            {
                "tor": proc(
                    "tor/ovs-vswitchd",
                    ctl=str(layout.tor.vswitchd_ctl),
                    bridge=sim.TOR_BRIDGE,
                    mac_aging=int(state.options["tor"]["mac_aging"]),
                )
            }
            if state.has_tor
            else {}
        ),
        "chassis": chassis,
        "vms": [vm_json(vm) for vm in state.vms.values()],
        "hosts": [host_json(host) for host in state.hosts.values()],
    }
    if "northd" in refs:
        doc["northd"] = proc("northd")
    elif "ovn-northd" in refs:
        doc["northd"] = proc("ovn-northd")
    if layout.northds > 1:
        doc["northds"] = [
            proc(role) for role in (control.northd_role(i) for i in range(1, layout.northds + 1))
        ]
    alive = sum(1 for ref in refs.values() if ref.running_pid() is not None)
    doc["processes"] = {"registered": len(refs), "running": alive}
    return doc


def vm_json(vm: VmEntry) -> dict[str, Any]:
    return {
        "name": vm.name,
        "port": vm.port,
        "mac": vm.mac,
        "ips": vm.ips,
        "chassis": [vif.chassis for vif in vm.vifs],
    }


def host_json(host: HostEntry) -> dict[str, Any]:
    return {
        "name": host.name,
        "mac": host.mac,
        "addresses": host.addresses,
        "vlan": host.vlan,
        "port": host.ifname,
    }


def _database(
    servers: list[ServerSpec], proc: Callable[..., dict[str, Any]], remote: str, database: str
) -> dict[str, Any]:
    """One database's status: its server, or for a cluster every member with its Raft role."""
    if not servers[0].clustered:
        return proc(servers[0].name, socket=str(servers[0].socket), remote=remote)
    members = []
    for spec in servers:
        doc = proc(spec.name, socket=str(spec.socket))
        role = "down"
        if doc["running"]:
            try:
                role = cluster_status(spec.ctl, database).get("Role", "unknown")
            except ServerError:
                role = "unknown"
        members.append({"name": spec.name, "role": role, **doc})
    leader = next((m["name"] for m in members if m["role"] == "leader"), None)
    return {
        "remote": remote,
        "running": any(m["running"] for m in members),
        "leader": leader,
        "members": members,
    }


def cluster_leader(servers: list[ServerSpec], database: str) -> ServerSpec | None:
    """The member that is the Raft leader now, if one is."""
    for spec in servers:
        if not spec.pidfile.exists():
            continue
        try:
            if cluster_status(spec.ctl, database).get("Role") == "leader":
                return spec
        except ServerError:
            continue
    return None


def _tls_status(layout: Layout, proc: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    tls = layout.tls
    assert tls is not None
    return {
        "pki": tls.pki_dir,
        "nb": tls.nb_remote,
        "sb_chassis": tls.sb_chassis_remote,
        "sb_control": tls.sb_control_remote,
        "listeners": [
            {"server": server, "listener": target, "role": role, **proc(server)}
            for server, target, role in layout.tls_listeners()
        ],
    }


def cms(directory: Path, timeout: float = 10.0) -> Cms:
    """A CMS client of the lab, connected as a cloud would: over TLS with the CMS
    certificate in a secure lab (this process then has the CMS's TLS identity)."""
    layout = Layout.of(directory)
    if layout.engine == "ovn":
        raise InvalidInput(f"{directory} is an OVN lab: use its OVN CMS (lab.ovn_cms)")
    if layout.tls is None:
        return Cms(layout.nb_remote, layout.sb_remote, connect_timeout=timeout)
    creds = layout.tls.credentials("cms")
    configure_tls(creds.private_key, creds.certificate, creds.ca_cert, replace=True)
    return Cms(layout.tls.nb_remote, layout.tls.sb_control_remote, connect_timeout=timeout)


def ovn_cms(directory: Path, timeout: float = 10.0) -> OvnCms:
    """The CMS client of an OVN-engine lab (OVN's form and OVN's database state)."""
    layout = Layout.of(directory)
    if layout.engine != "ovn":
        raise InvalidInput(f"{directory} is not an OVN lab (lab up --engine ovn)")
    return OvnCms(layout.nb_remote, layout.sb_remote, connect_timeout=timeout)


def engine_cms(directory: Path, timeout: float = 10.0) -> Cms | OvnCms:
    """The lab's CMS client, whichever engine runs it."""
    if Layout.of(directory).engine == "ovn":
        return ovn_cms(directory, timeout)
    return cms(directory, timeout)


def client_env(directory: Path) -> dict[str, str]:
    """Environment variables that point ovn-nbctl and liveport at a lab's databases (over
    TLS with the CMS certificate in a secure lab)."""
    layout = Layout.of(directory)
    if layout.tls is not None:
        return layout.tls.client_env()
    return {
        "OVN_NB_DB": layout.nb_remote,
        "LIVEPORT_NB_DB": layout.nb_remote,
        "LIVEPORT_SB_DB": layout.sb_remote,
    }
