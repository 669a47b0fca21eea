"""`liveport doctor`: compares the NB, the SB and every chassis' flows, and reports each
difference.

No rule of liveport is re-derived here: each comparison runs liveport's own code on the
current inputs and reports what that code would change.

- NB -> SB: northd's reconciliation (the batch it runs on a full recompute) applied to a
  snapshot of both databases must have nothing to write. Every operation it would do is a
  finding: a missing or extra Datapath_Binding, Port_Binding or Port_Claim, a column that
  differs (addresses, port security, requested chassis, migration fields, activation
  strategy, owner, state, up, ...), a Logical_Switch_Port `up` that differs. Structural
  checks add what northd itself would not repair: two datapaths for one switch, tunnel
  keys used twice, an owner that is no registered chassis. nb_cfg/sb_cfg/hv_cfg lagging
  behind and chassis that are not alive are notes (level "info"), not differences.
- SB -> each chassis whose Open_vSwitch database and br-int the caller can reach: the
  agent's view of the chassis (the agent's own step, agent.step; a pending
  destination whose learned activation flows are in the switch counts as activated, as the
  agent counts it), compiled with the pure compiler, against the flows carrying
  liveport's cookie dumped from the switch -- plus the chassis' registration, its tunnel
  ports, its Chassis_VIF rows and the `installed` state of its claims. Learned flows are
  legitimate only for a port that is a pending destination there.

`check_databases` and `check_chassis` are pure. `examine` does the I/O: one client per
database, kept for the whole run, and one short OpenFlow connection per switch and round
(asyncio). A system still converging is checked again after every database change until
nothing differs or `settle` seconds have passed; only what still differs is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from liveport.agent import localswitch, southbound
from liveport.agent import step as agent_step
from liveport.model import cookies
from liveport.model.catalogue import Catalogue, supported_modes
from liveport.model.cookies import Kind
from liveport.model.errors import InvalidInput, LiveportError, Unavailable
from liveport.model.flows import Flow, FlowSet
from liveport.model.untrusted import chassis_problem, escape
from liveport.northd import limits, northd
from liveport.openflow.conn import OpenFlowConnection
from liveport.openflow.encode import CodecError
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Delete, Insert, Op, Ref, Row, Snapshot, Update
from liveport.vhostuser.catalogue import load_catalogue

Level = Literal["error", "info"]

# Everything northd and the agents read and write in the SB.
FINDING_LIMIT = 2000  # characters of one finding as printed

SB_TABLES: dict[str, list[str] | None] = {
    "SB_Global": None,
    "Chassis": None,
    "Chassis_Private": None,
    "Datapath_Binding": None,
    "Port_Binding": None,
    "Port_Claim": None,
    "Chassis_VIF": None,
    "ACL": None,
    "Port_Group": None,
    "Address_Set": None,
    "Port_Connections": None,
}
DEFAULT_RUNDIR = "/var/run/openvswitch"


class DoctorError(Unavailable):
    """A database or switch could not be read: nothing can be said about consistency."""


@dataclass(frozen=True)
class Finding:
    """One difference (level "error") or one note about progress (level "info")."""

    where: str  # "port vm1", "switch ls0", "chassis hv2", "global"
    what: str
    expected: str | None = None
    actual: str | None = None
    level: Level = "error"

    def __str__(self) -> str:
        """One printable line (what chassis wrote is escaped, untrusted.escape)."""
        text = f"{self.where}: {self.what}"
        if self.expected is not None or self.actual is not None:
            text += f": expected {self.expected or 'nothing'}, found {self.actual or 'nothing'}"
        return escape(text, FINDING_LIMIT)

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "what": self.what,
            "expected": self.expected,
            "actual": self.actual,
            "level": self.level,
        }


def _note(where: str, what: str, expected: Any = None, actual: Any = None) -> Finding:
    return Finding(
        where,
        what,
        None if expected is None else show(expected),
        None if actual is None else show(actual),
        "info",
    )


def show(value: Any) -> str:
    """A database value as one short line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={show(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, frozenset | set | list | tuple):
        return "[" + ", ".join(sorted(show(v) for v in value)) + "]"
    return str(value)


# ----- NB -> SB -------------------------------------------------------------------------------


def check_databases(nb: Snapshot, sb: Snapshot) -> list[Finding]:
    """Differences between the NB and the SB (and the NB's `up`), the ACLs that cannot be
    used as written, then notes on progress."""
    return [
        *_structure(nb, sb),
        *_northd_would_write(nb, sb),
        *_broken_acls(sb),
        *_limited(nb, sb),
        *_progress(nb, sb),
    ]


def _limited(nb: Snapshot, sb: Snapshot) -> list[Finding]:
    """Chassis that write more than their share (northd.limits): over their share of VIF
    reports (from the snapshots, as northd decides it), or over their rate (as northd
    reports it in SB_Global options:limited)."""
    out = []
    over = limits.shares(nb, sb)
    for name, share in sorted(over.items()):
        out.append(
            Finding(
                f"chassis {name}",
                f"writes more VIF reports than its share: northd ignores {share.shed} of "
                f"{share.reports} (it uses {share.limit}: its {share.ports} ports + "
                f"{limits.VIF_MARGIN})",
            )
        )
    sb_global = next(sb.rows("SB_Global"), None)
    reported = limits.parse_limited(sb_global["options"].get("limited", "")) if sb_global else {}
    for name, why in sorted(reported.items()):
        if "rate" in why:
            out.append(
                _note(
                    f"chassis {name}",
                    f"writes VIF reports faster than {limits.VIF_RATE:g} changes/s: northd "
                    "acts on them once a second",
                )
            )
    return out


def _broken_acls(sb: Snapshot) -> list[Finding]:
    """ACLs enforced fail-closed (their match cannot be used; model.acl)."""
    out = []
    for row in sorted(sb.rows("ACL"), key=lambda r: r["key"]):
        if row["error"]:
            label = f"ACL {row['name']!r}" if row["name"] else f"ACL key {row['key']}"
            groups = ", ".join(sorted(row["port_groups"])) or "its switches"
            out.append(
                Finding(
                    label, f"enforced fail-closed ({row['direction']} on {groups}): {row['error']}"
                )
            )
    return out


def northd_plan(nb: Snapshot, sb: Snapshot) -> tuple[list[Op], list[Op]]:
    """The SB and NB operations northd would do now on a full recompute of these snapshots
    (with the chassis liveness it published in SB_Global.live_chassis)."""
    batch = northd.plan(nb, sb, schema.live_chassis(sb), northd.all_keys(nb, sb))
    return batch.sb_ops, batch.nb_ops


def _northd_would_write(nb: Snapshot, sb: Snapshot) -> list[Finding]:
    sb_ops, nb_ops = northd_plan(nb, sb)
    out = [f for op in sb_ops for f in _sb_op_findings(op, nb, sb)]
    for op in nb_ops:
        row = nb.get(op.table, op.uuid) if isinstance(op, Update) else None
        if isinstance(op, Update) and row is not None and op.table == "Logical_Switch_Port":
            out += [
                Finding(
                    f"port {row['name']}",
                    f"Logical_Switch_Port {column}",
                    show(v),
                    show(row[column]),
                )
                for column, v in sorted(op.values.items())
            ]
        else:
            out.append(Finding("NB", f"northd would write {op}"))
    return out


def _dp_name(sb: Snapshot, value: Any) -> str:
    if isinstance(value, Ref):
        return "a datapath northd would create"
    dp = sb.get("Datapath_Binding", value)
    return f"{dp['name']} (key {dp['tunnel_key']})" if dp is not None else str(value)


def _sb_op_findings(op: Op, nb: Snapshot, sb: Snapshot) -> list[Finding]:
    if isinstance(op, Insert):
        values = op.values
        if op.table == "Datapath_Binding":
            return [Finding(f"switch {values['name']}", "no Datapath_Binding")]
        if op.table == "Port_Binding":
            return [Finding(f"port {values['logical_port']}", "no Port_Binding")]
        if op.table == "Port_Claim":
            return [
                Finding(
                    f"port {values['logical_port']}",
                    f"no Port_Claim for chassis {values['chassis']}",
                    f"role {values['role']}",
                    None,
                )
            ]
    row = sb.get(op.table, op.uuid) if isinstance(op, Update | Delete) else None
    if row is None:
        return [Finding("SB", f"northd would do {op}")]
    if isinstance(op, Delete):
        return [_deletion(row, nb)]
    assert isinstance(op, Update)
    if op.table == "Datapath_Binding":
        return [
            Finding(f"switch {row['name']}", f"Datapath_Binding {c}", show(v), show(row[c]))
            for c, v in sorted(op.values.items())
        ]
    if op.table == "Port_Claim":
        where = f"port {row['logical_port']}"
        if "role" in op.values:
            what = f"Port_Claim of {row['chassis']}: role"
            return [Finding(where, what, show(op.values["role"]), show(row["role"]))]
        what = f"Port_Claim of {row['chassis']} keeps an announcement northd would clear"
        return [Finding(where, what, "none", f"activated {row['activated']}")]
    where = f"port {row['logical_port']}"
    out = []
    for column, value in sorted(op.values.items()):
        if column == "datapath":
            expected, actual = _dp_name(sb, value), _dp_name(sb, row[column])
        else:
            expected, actual = show(value), show(row[column])
        out.append(Finding(where, f"{op.table} {column}", expected, actual))
    return out


def _deletion(row: Row, nb: Snapshot) -> Finding:
    if row.table == "Datapath_Binding":
        return Finding(
            f"datapath {row['name']} (key {row['tunnel_key']})",
            "Datapath_Binding without a Logical_Switch",
        )
    if row.table == "Port_Claim":
        return Finding(
            f"port {row['logical_port']}",
            f"Port_Claim for chassis {row['chassis']} (role {row['role']}), "
            "a chassis northd would not name",
        )
    name = row.get("logical_port", "?")
    if not nb.lookup("Logical_Switch_Port", "name", name):
        return Finding(f"port {name}", f"{row.table} without a Logical_Switch_Port")
    return Finding(f"port {name}", f"{row.table} that northd would delete")


def _structure(nb: Snapshot, sb: Snapshot) -> list[Finding]:
    """What northd's reconciliation keeps as it is, yet must not be."""
    out: list[Finding] = []
    by_switch: dict[str, list[Row]] = {}
    for dp in sb.rows("Datapath_Binding"):
        by_switch.setdefault(dp["external_ids"].get("nb-uuid", ""), []).append(dp)
    for ls in nb.rows("Logical_Switch"):
        found = by_switch.get(str(ls.uuid), [])
        if len(found) > 1:
            keys = sorted(dp["tunnel_key"] for dp in found)
            out.append(Finding(f"switch {ls['name']}", "Datapath_Bindings", "1", f"{keys}"))
    dp_keys = Counter(dp["tunnel_key"] for dp in sb.rows("Datapath_Binding"))
    for key, n in sorted(dp_keys.items()):
        if n > 1:
            out.append(Finding(f"datapath key {key}", f"tunnel key used by {n} datapaths"))
    port_keys = Counter((pb["datapath"], pb["tunnel_key"]) for pb in sb.rows("Port_Binding"))
    for (dp_uuid, key), n in sorted(port_keys.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if n > 1:
            where = f"datapath {_dp_name(sb, dp_uuid)}"
            out.append(Finding(where, f"port tunnel key {key} used by {n} ports"))
    registered = northd.usable_chassis(sb)
    for pb in sorted(sb.rows("Port_Binding"), key=lambda r: r["logical_port"]):
        owner = pb["chassis"]
        if owner is not None and owner not in registered:
            out.append(
                Finding(
                    f"port {pb['logical_port']}",
                    "owner is not a registered chassis",
                    "a registered chassis",
                    owner,
                )
            )
    return out


def _progress(nb: Snapshot, sb: Snapshot) -> list[Finding]:
    """Notes: configuration sequence numbers not yet carried through, chassis not alive."""
    nb_global = next(nb.rows("NB_Global"), None)
    sb_global = next(sb.rows("SB_Global"), None)
    if sb_global is None:
        return [Finding("SB", "no SB_Global row (has northd ever run?)")]
    out: list[Finding] = []
    registered = northd.usable_chassis(sb)
    for row in sorted(sb.rows("Chassis"), key=lambda r: str(r.uuid)):
        problem = chassis_problem(row["name"], row["hostname"], row["encap_ip"])
        if problem is not None:
            out.append(_note(f"chassis row {row.uuid}", f"ignored: {problem}"))
    alive = schema.live_chassis(sb)
    for name in sorted(registered - alive):
        out.append(_note(f"chassis {name}", "not alive (northd sees no heartbeat)"))
    if nb_global is None:
        out.append(_note("NB", "no NB_Global row"))
        return out
    sb_cfg = sb_global["nb_cfg"]
    if sb_cfg != nb_global["nb_cfg"]:
        out.append(_note("global", "SB_Global.nb_cfg lags the NB", nb_global["nb_cfg"], sb_cfg))
    if nb_global["sb_cfg"] != sb_cfg:
        out.append(_note("global", "NB_Global.sb_cfg lags the SB", sb_cfg, nb_global["sb_cfg"]))
    applied = []
    for private in sorted(sb.rows("Chassis_Private"), key=lambda r: r["name"]):
        if private["name"] in alive and private["name"] in registered:
            applied.append(private["nb_cfg"])
            if private["nb_cfg"] != sb_cfg:
                out.append(
                    _note(f"chassis {private['name']}", "nb_cfg applied", sb_cfg, private["nb_cfg"])
                )
    hv_cfg = min([sb_cfg, *applied])
    if nb_global["hv_cfg"] != hv_cfg:
        out.append(
            _note("global", "NB_Global.hv_cfg lags the chassis", hv_cfg, nb_global["hv_cfg"])
        )
    return out


# ----- SB -> a chassis ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChassisCheck:
    chassis: str
    findings: tuple[Finding, ...]
    flows: int  # flows liveport should hold on the chassis' switch


def bridge_of(ovs: Snapshot) -> str:
    """The integration bridge the chassis' agent programs."""
    return localswitch.read_identity(ovs).bridge


def check_chassis(
    name: str, sb: Snapshot, ovs: Snapshot, installed: FlowSet, catalogue: Catalogue
) -> ChassisCheck:
    """Compares chassis `name` -- its local database `ovs` and the flows with liveport's
    cookie `installed` on its bridge -- with what its agent would make of the SB: the
    agent's own step, run on these snapshots as if it had just connected to the switch."""
    where = f"chassis {name}"
    identity = localswitch.read_identity(ovs)
    if identity.chassis != name:
        what = "Open_vSwitch external_ids:system-id (the chassis name)"
        return ChassisCheck(name, (Finding(where, what, name, show(identity.chassis)),), 0)
    local = localswitch.read_local(ovs, identity)
    if local.bridge_uuid is None:
        return ChassisCheck(name, (Finding(where, f"no bridge {identity.bridge}"),), 0)
    try:
        modes = supported_modes(catalogue, identity.vhost_backend, identity.vhost_modes)
    except LiveportError as exc:
        return ChassisCheck(name, (Finding(where, f"vhost-user modes: {exc}"),), 0)
    chosen = localswitch.choose_modes(local, catalogue, modes)
    out = [
        *_registration(where, sb, identity, modes),
        *_tunnels(where, sb, local),
        *_vifs(where, sb, name, local, chosen),
    ]
    learned = installed.with_cookie(*cookies.of_kind(Kind.LEARNED))
    memory = agent_step.Memory(agent_step.Config(identity, catalogue, modes)).connected(installed)
    # As the agent: a pending port whose learned flows are in the switch has been activated
    # by its announcement inside the datapath.
    inputs = agent_step.Inputs(
        ovs,
        sb,
        learned=frozenset(cookies.port_of(f.cookie) for f in learned),
        sb_complete=True,
    )
    outcome = agent_step.step(memory, inputs)
    if not outcome.installed:
        return ChassisCheck(name, (*out, Finding(where, "the agent's view would be partial")), 0)
    view = outcome.memory.view
    assert view is not None
    namer = _Namer(sb, view.ports.values())
    change = outcome.flows.diff  # from what the switch holds (learned flows aside)
    current = memory.installed
    for flow in change.adds:
        out.append(Finding(where, f"{namer(flow)}: flow missing", str(flow), None))
    for flow in change.deletes:
        out.append(Finding(where, f"{namer(flow)}: unexpected flow", None, str(flow)))
    for flow in change.modifies:
        found = current.get(flow.key)
        out.append(Finding(where, f"{namer(flow)}: flow differs", str(flow), str(found)))
    # Legitimate learned flows: those of a port pending here, or just activated by them.
    carrying = outcome.memory.pending | outcome.memory.activated_role
    pending = {(p.dp_key, p.key) for n in carrying if (p := view.ports.get(n)) is not None}
    for flow in learned:
        if cookies.port_of(flow.cookie) not in pending:
            out.append(
                Finding(
                    where,
                    f"{namer(flow)}: learned flow of a port not pending here",
                    None,
                    str(flow),
                )
            )
    for op in outcome.reports:
        if isinstance(op, Update) and op.table == "Port_Claim" and "installed" in op.values:
            row = sb.get("Port_Claim", op.uuid)
            assert row is not None
            out.append(
                Finding(
                    where,
                    f"port {row['logical_port']}: Port_Claim installed",
                    show(op.values["installed"]),
                    show(row["installed"]),
                )
            )
    return ChassisCheck(name, tuple(out), len(outcome.memory.table.flows()))


class _Namer:
    """Names the owner of a flow by its cookie: a port, a switch, or the pipeline."""

    def __init__(self, sb: Snapshot, ports: Iterable[Any]) -> None:
        self.ports = {(p.dp_key, p.key): p.name for p in ports}
        self.switches = {dp["tunnel_key"]: dp["name"] for dp in sb.rows("Datapath_Binding")}

    def __call__(self, flow: Flow) -> str:
        kind = cookies.kind_of(flow.cookie)
        dp, key = cookies.port_of(flow.cookie)
        if kind in (Kind.PORT, Kind.ACTIVATION, Kind.LEARNED):
            name = self.ports.get((dp, key))
            return f"port {name}" if name else f"port key {key} of datapath key {dp}"
        if kind is Kind.DATAPATH:
            return f"switch {self.switches.get(dp, f'with key {dp}')}"
        return "pipeline"


def _registration(
    where: str, sb: Snapshot, identity: localswitch.Identity, modes: Sequence[str]
) -> list[Finding]:
    out = []
    for op in southbound.registration_ops(sb, identity, 0, modes):
        if isinstance(op, Insert):
            out.append(Finding(where, f"no {op.table} row in the SB (not registered)"))
        elif isinstance(op, Update):
            row = sb.get(op.table, op.uuid)
            for column, value in sorted(op.values.items()):
                actual = show(row[column]) if row is not None else None
                out.append(Finding(where, f"{op.table} {column}", show(value), actual))
    return out


def _tunnels(where: str, sb: Snapshot, local: localswitch.LocalState) -> list[Finding]:
    """One tunnel port per other chassis of the SB, to its encap IP (as the agent keeps)."""
    me = local.identity.chassis
    assert me is not None
    wanted = southbound.tunnel_endpoints(sb, me)
    out = []
    for chassis, ip in sorted(wanted.items()):
        tunnel = local.tunnels.get(chassis)
        if tunnel is None:
            out.append(Finding(where, f"tunnel port to {chassis}", ip, None))
        elif tunnel.remote_ip != ip:
            out.append(Finding(where, f"tunnel port to {chassis}: remote_ip", ip, tunnel.remote_ip))
        elif tunnel.ofport is None:
            out.append(Finding(where, f"tunnel port to {chassis} has no OpenFlow port number"))
    for chassis in sorted(set(local.tunnels) - set(wanted)):
        out.append(Finding(where, f"tunnel port to {chassis}, which the SB does not list"))
    return out


def _vifs(
    where: str,
    sb: Snapshot,
    me: str,
    local: localswitch.LocalState,
    chosen: localswitch.VifModes,
) -> list[Finding]:
    """The Chassis_VIF rows the agent keeps for exactly the VIFs of the switch."""
    out = []
    for op in southbound.vif_ops(sb, me, local.vifs, chosen.modes, chosen.errors):
        if isinstance(op, Insert):
            out.append(
                Finding(where, f"VIF {op.values['iface_id']} is not in the SB (Chassis_VIF)")
            )
            continue
        row = sb.get(op.table, op.uuid)
        if row is None:
            continue
        if isinstance(op, Delete):
            what = f"the SB lists VIF {row['iface_id']}, which the switch does not have (once)"
            out.append(Finding(where, what))
        elif isinstance(op, Update):
            for column, value in sorted(op.values.items()):
                what = f"VIF {row['iface_id']}: Chassis_VIF {column}"
                out.append(Finding(where, what, show(value), show(row[column])))
    return out


# ----- a whole check, and the I/O around it -------------------------------------------------


@dataclass(frozen=True)
class SwitchAccess:
    """How to reach a chassis' switch: its Open_vSwitch database (remote, comma-separated
    for several) and its bridge's OpenFlow management socket (default: next to a unix
    database socket, as OVS keeps both in its run directory, else /var/run/openvswitch)."""

    chassis: str
    ovs_remote: str
    mgmt_socket: str | None = None

    def mgmt_path(self, bridge: str) -> str:
        if self.mgmt_socket:
            return self.mgmt_socket.removeprefix("unix:")
        first = self.ovs_remote.split(",")[0]
        rundir = str(Path(first[5:]).parent) if first.startswith("unix:") else DEFAULT_RUNDIR
        return f"{rundir}/{bridge}.mgmt"


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    switches: int  # logical switches in the NB
    ports: int  # logical switch ports in the NB
    chassis: tuple[str, ...]  # chassis registered in the SB
    checked: tuple[str, ...] = ()  # chassis whose switches were compared
    flows: int = 0  # flows liveport should hold on those switches
    rounds: int = 1

    @property
    def differences(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")

    @property
    def notes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "info")

    @property
    def consistent(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        n = len(self.differences)
        if n:
            return f"{n} difference{'s' if n != 1 else ''}"
        counts = [
            _count(self.switches, "switch", "switches"),
            _count(self.ports, "port", "ports"),
            _count(len(self.chassis), "chassis", "chassis"),
            _count(self.flows, "flow", "flows"),
        ]
        text = f"consistent: {', '.join(counts)}"
        unchecked = sorted(set(self.chassis) - set(self.checked))
        if unchecked:
            text += f" (flows not compared on {', '.join(unchecked)})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "summary": self.summary(),
            "findings": [f.to_json() for f in self.differences],
            "notes": [f.to_json() for f in self.notes],
            "switches": self.switches,
            "ports": self.ports,
            "chassis": list(self.chassis),
            "checked": list(self.checked),
            "flows": self.flows,
            "rounds": self.rounds,
        }


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def check(
    nb: Snapshot,
    sb: Snapshot,
    switches: Mapping[str, tuple[Snapshot, FlowSet]],
    catalogue: Catalogue,
) -> Report:
    """One pure check of everything: the databases, then each chassis given as (its
    Open_vSwitch snapshot, the flows with liveport's cookie dumped from its bridge)."""
    findings = check_databases(nb, sb)
    flows = 0
    for name, (ovs, installed) in sorted(switches.items()):
        result = check_chassis(name, sb, ovs, installed, catalogue)
        findings += result.findings
        flows += result.flows
    return Report(
        findings=tuple(sorted(findings, key=lambda f: f.level == "info")),
        switches=len(nb.table("Logical_Switch")),
        ports=len(nb.table("Logical_Switch_Port")),
        chassis=tuple(sorted(c["name"] for c in sb.rows("Chassis"))),
        checked=tuple(sorted(switches)),
        flows=flows,
    )


@dataclass
class _Clients:
    nb: OvsdbClient
    sb: OvsdbClient
    switches: dict[str, tuple[SwitchAccess, OvsdbClient]] = field(default_factory=dict)

    def all(self) -> Iterator[OvsdbClient]:
        yield self.nb
        yield self.sb
        for _, client in self.switches.values():
            yield client


def examine(
    nb_remote: str,
    sb_remote: str,
    switches: Sequence[SwitchAccess] = (),
    *,
    settle: float = 0.0,
    timeout: float = 10.0,
    catalogue: Catalogue | None = None,
) -> Report:
    """Checks until consistent or `settle` seconds have passed (re-checking after each
    change in any of the databases); DoctorError if a database or switch is unreachable.
    Runs its own asyncio loop for the flow dumps: call it from plain (non-async) code."""
    catalogue = catalogue or load_catalogue()
    names = [s.chassis for s in switches]
    if len(set(names)) != len(names):
        raise InvalidInput(f"a chassis is given twice: {', '.join(sorted(names))}")
    changed = threading.Event()
    with contextlib.ExitStack() as stack:

        def connect(remote: str, database: str, tables: Any, what: str) -> OvsdbClient:
            try:
                helper = fetch_schema(remote, database, timeout)
                client = stack.enter_context(
                    OvsdbClient(remote, database, tables, schema=helper, name=what)
                )
                client.add_listener(lambda _: changed.set())
                client.wait_connected(timeout)
            except LiveportError as exc:
                raise DoctorError(f"cannot read the {what} at {remote}: {exc}") from None
            return client

        clients = _Clients(
            connect(nb_remote, schema.NB_NAME, northd.NB_TABLES, "NB"),
            connect(sb_remote, schema.SB_NAME, SB_TABLES, "SB"),
        )
        for access in switches:
            client = connect(
                access.ovs_remote,
                schema.VSWITCH_NAME,
                localswitch.OVS_TABLES,
                f"Open_vSwitch database of {access.chassis}",
            )
            clients.switches[access.chassis] = (access, client)
        deadline = time.monotonic() + settle
        rounds = 0
        while True:
            changed.clear()
            rounds += 1
            report = replace(_round(clients, catalogue, timeout), rounds=rounds)
            remaining = deadline - time.monotonic()
            if report.consistent or remaining <= 0:
                return report
            changed.wait(remaining)


def _round(clients: _Clients, catalogue: Catalogue, timeout: float) -> Report:
    for client in clients.all():
        if not client.snapshot().connected:
            try:
                client.wait_connected(timeout)
            except LiveportError as exc:
                raise DoctorError(f"lost the {client.name} at {client.remote}: {exc}") from None
    nb, sb = clients.nb.snapshot(), clients.sb.snapshot()
    local = {name: client.snapshot() for name, (_, client) in clients.switches.items()}
    sockets = {
        name: access.mgmt_path(bridge_of(local[name]))
        for name, (access, _) in clients.switches.items()
    }
    dumped = asyncio.run(_dump_all(sockets, timeout))
    switches: dict[str, tuple[Snapshot, FlowSet]] = {}
    failures: list[Finding] = []
    for name, result in dumped.items():
        if isinstance(result, FlowSet):
            switches[name] = (local[name], result)
        else:
            failures.append(Finding(f"chassis {name}", f"flows cannot be compared: {result}"))
    report = check(nb, sb, switches, catalogue)
    if failures:
        report = replace(report, findings=(*failures, *report.findings))
    return report


async def _dump_all(sockets: Mapping[str, str], timeout: float) -> dict[str, FlowSet | str]:
    """The flows with liveport's cookie on each bridge (or why they could not be decoded)."""

    async def dump(name: str, path: str) -> FlowSet | str:
        try:
            conn = await OpenFlowConnection.open(path, timeout=timeout)
        except LiveportError as exc:
            raise DoctorError(f"cannot reach the switch of {name} at {path}: {exc}") from None
        async with conn:
            try:
                return await conn.dump_flows(*cookies.ALL, timeout=timeout)
            except CodecError as exc:
                return str(exc)
            except LiveportError as exc:
                raise DoctorError(f"cannot dump the flows of {name} at {path}: {exc}") from None

    names = sorted(sockets)
    results = await asyncio.gather(*(dump(n, sockets[n]) for n in names))
    return dict(zip(names, results, strict=True))
