"""A chassis' flow table, compiled incrementally: a change costs work in the ports it affects.

`FlowTable` is an immutable value: the flows compiled for one `ChassisView`, grouped by
what they belong to (a port, or a datapath's own flows), plus the indexes that say which
ports a change affects. `update(view, dirty)` returns the table for a new view and the
`FlowChange` that turns a switch holding the old table into one holding the new: only the
ports named in `dirty` (and those they affect) are looked at again. The result always
equals `pipeline.compile_flows(view)`; the tests check that over random sequences.

What a port's change can affect beyond the port itself:
- its datapath's own flows: the flood reaches each local port that may receive, and goes
  to every other chassis a port of the datapath names (owner or destination);
- the ports that share one of its MACs (the lowest tunnel key wins the L2 lookup);
- every port of its datapath, when its VIF is the first to arrive in that datapath on this
  chassis (the datapath becomes local: all its ports are compiled) or the last to leave.
A tunnel port that appears, goes or changes number affects the ports that name its
chassis and the datapaths whose flood goes there (`Dirty.tunnels`).

A datapath's ACL stages (model.acl) are compiled as one group per local datapath, again
when `Dirty.datapaths` names it (its ACLs, or an address set or port group they refer to,
changed) or when one of its ports appears, goes or changes key; each ACL's flows are
memoised, so only the ACLs whose inputs changed are compiled again. When a datapath gains
its first ACL (or its first stateful one) or loses its last, its local ports are compiled
again too: their flood and carried connections depend on it.

Only dictionaries are copied per update (copy-on-write, at C speed); no Python loop runs
over all ports or all flows, except for `everything` (a new or reconnected agent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from liveport.model.acl import Direction
from liveport.model.cookies import EXACT
from liveport.model.flows import Action, Flow, FlowDiff, FlowKey, FlowSet
from liveport.model.pipeline import (
    LOCALNET,
    ChassisView,
    PortInputs,
    PortView,
    acl_stage,
    datapath_flows,
    flood_member,
    naming,
    port_flows,
    port_inputs,
    port_macs,
)


@dataclass(frozen=True)
class Dirty:
    """What may have changed since the last update. Ports: their PortView, VIF, claim or
    announcement. Tunnels: chassis whose tunnel port appeared, went or was renumbered."""

    ports: frozenset[str] = frozenset()
    tunnels: frozenset[str] = frozenset()
    datapaths: frozenset[int] = frozenset()  # whose ACL stages may have changed
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.ports or self.tunnels or self.datapaths or self.everything)


@dataclass(frozen=True)
class FlowChange:
    """What to send to the switch: delete whole cookies, then the diff."""

    diff: FlowDiff = field(default_factory=FlowDiff)
    delete_cookies: tuple[tuple[int, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.diff or self.delete_cookies)


@dataclass(frozen=True)
class _Port:
    inputs: PortInputs
    flows: tuple[Flow, ...]


@dataclass(frozen=True)
class _Datapath:
    members: tuple[tuple[int, tuple[Action, ...]], ...]  # port key -> flood actions, by key
    remote: tuple[int, ...]  # tunnel ofports of the flood to other chassis
    flows: tuple[Flow, ...]


@dataclass(frozen=True)
class _Acls:
    flows: tuple[Flow, ...]
    problems: Mapping[int, str]  # ACL key -> why it is enforced fail-closed


Group = tuple[str, object]  # ("port", name) | ("dp", key)
_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FlowTable:
    view: ChassisView = field(default_factory=lambda: ChassisView(""))
    ports: Mapping[str, _Port] = field(default_factory=dict)  # ports of local datapaths
    datapaths: Mapping[int, _Datapath] = field(default_factory=dict)  # local datapaths
    # Indexes over every port of the view.
    dp_ports: Mapping[int, frozenset[str]] = field(default_factory=dict)
    local: Mapping[int, frozenset[str]] = field(default_factory=dict)  # ports with a VIF here
    macs: Mapping[tuple[int, int], frozenset[tuple[int, str]]] = field(default_factory=dict)
    naming: Mapping[str, frozenset[str]] = field(default_factory=dict)  # chassis -> ports
    remote: Mapping[int, Mapping[str, int]] = field(default_factory=dict)  # dp -> chassis -> n
    # The flood: which local ports receive it, per datapath ((port key, name) -> actions).
    flood: Mapping[int, Mapping[tuple[int, str], tuple[Action, ...]]] = field(default_factory=dict)
    members: Mapping[str, tuple[int, int, tuple[Action, ...]]] = field(default_factory=dict)
    acls: Mapping[int, _Acls] = field(default_factory=dict)  # local datapaths' ACL stages

    def flows(self) -> FlowSet:
        """Every flow (a Python loop over the whole table: for tests and first syncs)."""
        return FlowSet.of(
            [
                *(f for p in self.ports.values() for f in p.flows),
                *(f for d in self.datapaths.values() for f in d.flows),
                *(f for a in self.acls.values() for f in a.flows),
            ]
        )

    def acl_problems(self) -> dict[int, str]:
        """ACL key -> why this chassis enforces it fail-closed (or not at all)."""
        return {k: v for a in self.acls.values() for k, v in a.problems.items()}

    def inputs(self, name: str) -> PortInputs | None:
        """What the port was compiled for (None if its datapath is not local here)."""
        port = self.ports.get(name)
        return port.inputs if port is not None else None

    def update(self, view: ChassisView, dirty: Dirty) -> tuple[FlowTable, FlowChange]:
        return _Update(self, view, dirty).run()


def compile_table(view: ChassisView) -> FlowTable:
    """The table of a view, from nothing."""
    table, _ = FlowTable().update(view, Dirty(everything=True))
    return table


class _Update:
    """One update; its dictionaries are the new table's, copied on first write."""

    def __init__(self, old: FlowTable, view: ChassisView, dirty: Dirty) -> None:
        self.old = old
        self.view = view
        everything = dirty.everything or old.view.chassis != view.chassis
        if everything:
            old = FlowTable(ChassisView(view.chassis))
            self.old = old
            self.names = set(view.ports)
            self.tunnels: frozenset[str] = frozenset(view.tunnels)
        else:
            self.names = set(dirty.ports)
            self.tunnels = dirty.tunnels
        self.acl_dps: set[int] = (
            set(view.acls) | set(old.view.acls) if everything else set(dirty.datapaths)
        )
        self.ports = old.ports
        self.datapaths = old.datapaths
        self.dp_ports = old.dp_ports
        self.local = old.local
        self.macs = old.macs
        self.naming = old.naming
        self.remote = old.remote
        self.flood = old.flood
        self.members = old.members
        self.acls = old.acls
        self._copied: set[str] = set()
        self.dps: set[int] = set()  # datapaths whose own flows must be looked at again
        self.deletes: list[Flow] = []
        self.adds: list[Flow] = []
        self.modifies: list[Flow] = []
        self.delete_cookies: list[tuple[int, int]] = []

    def _own(self, name: str) -> dict[object, object]:
        """The new table's dictionary `name`, copied from the old one on first write."""
        if name not in self._copied:
            setattr(self, name, dict(getattr(self, name)))
            self._copied.add(name)
        own: dict[object, object] = getattr(self, name)
        return own

    # ----- the indexes ---------------------------------------------------------------------

    def run(self) -> tuple[FlowTable, FlowChange]:
        for chassis in self.tunnels:
            self.names |= self.old.naming.get(chassis, _NOTHING)
        affected: set[str] = set()
        for name in list(self.names):
            affected |= self._index(name)
        self.names |= affected
        for chassis in self.tunnels:
            self.names |= self.naming.get(chassis, _NOTHING)
            self.dps |= {dp for dp, counts in self.remote.items() if chassis in counts}
        old_view = self.old.view
        for dp in self.acl_dps:
            if old_view.filtered(dp) != self.view.filtered(dp) or old_view.stateful(
                dp
            ) != self.view.stateful(dp):
                self.names |= self.local.get(dp, _NOTHING)
        self._uplinks(old_view)
        for name in sorted(self.names):
            self._compile_port(name)
        for dp in sorted(self.dps):
            self._compile_datapath(dp)
        for dp in sorted(self.acl_dps):
            self._compile_acls(dp)
        table = FlowTable(
            self.view,
            self.ports,
            self.datapaths,
            self.dp_ports,
            self.local,
            self.macs,
            self.naming,
            self.remote,
            self.flood,
            self.members,
            self.acls,
        )
        change = FlowChange(
            FlowDiff(tuple(self.deletes), tuple(self.adds), tuple(self.modifies)),
            tuple(self.delete_cookies),
        )
        return table, change

    def _index(self, name: str) -> set[str]:
        """Updates the indexes for one port; returns the other ports this affects."""
        before = self.old.view.ports.get(name)
        after = self.view.ports.get(name)
        was_local = name in self.old.view.vifs
        is_local = name in self.view.vifs
        affected: set[str] = set()
        if (before is None) != (after is None) or (
            before is not None
            and after is not None
            and (before.dp_key, before.key) != (after.dp_key, after.key)
        ):
            # Port names in ACL matches stand for keys.
            self.acl_dps |= {p.dp_key for p in (before, after) if p is not None}
        if before != after:
            if before is not None:
                self._set_remove("dp_ports", before.dp_key, name)
                for chassis in naming(self.old.view, before):
                    self._set_remove("naming", chassis, name)
                    self._count("remote", before.dp_key, chassis, -1)
                affected |= self._macs(before, add=False)
            if after is not None:
                self._set_add("dp_ports", after.dp_key, name)
                for chassis in naming(self.view, after):
                    self._set_add("naming", chassis, name)
                    self._count("remote", after.dp_key, chassis, 1)
                affected |= self._macs(after, add=True)
        was = before.dp_key if before is not None and was_local else None
        now = after.dp_key if after is not None and is_local else None
        if was != now:
            if was is not None and self._set_remove("local", was, name):
                affected |= self.dp_ports.get(was, _NOTHING)  # no longer local
                self.dps.add(was)
                self.acl_dps.add(was)
            if now is not None and self._set_add("local", now, name):
                affected |= self.dp_ports.get(now, _NOTHING)  # newly local
                self.dps.add(now)
                self.acl_dps.add(now)
        return affected

    def _uplinks(self, old_view: ChassisView) -> None:
        """A datapath whose way to the physical network changed (its localnet port, or
        this chassis' patch to the network) is compiled again whole: every port of it is
        reached another way."""
        dps = {
            p.dp_key
            for name in self.names
            for p in (old_view.ports.get(name), self.view.ports.get(name))
            if p is not None and p.kind == LOCALNET
        }
        if old_view.localnets != self.view.localnets or old_view.uplinks != self.view.uplinks:
            dps |= set(old_view.uplinks) | set(self.view.uplinks)
        for dp in dps:
            if old_view.uplink(dp) != self.view.uplink(dp):
                self.names |= self.dp_ports.get(dp, _NOTHING)
                self.dps.add(dp)

    def _set_add(self, index: str, key: object, name: str) -> bool:
        """Adds name to index[key]; True if the set was empty before."""
        mapping = self._own(index)
        current: frozenset[str] = mapping.get(key, _NOTHING)  # type: ignore[assignment]
        mapping[key] = current | {name}
        return not current

    def _set_remove(self, index: str, key: object, name: str) -> bool:
        """Removes name from index[key]; True if the set is empty afterwards."""
        mapping = self._own(index)
        current: frozenset[str] = mapping.get(key, _NOTHING)  # type: ignore[assignment]
        left = current - {name}
        if left:
            mapping[key] = left
        else:
            mapping.pop(key, None)
        return bool(current) and not left

    def _count(self, index: str, dp: int, chassis: str, delta: int) -> None:
        """Counts the ports of dp that name chassis; a chassis that appears or goes changes
        where the datapath's flood goes."""
        mapping = self._own(index)
        counts = dict(mapping.get(dp, {}))  # type: ignore[call-overload]
        counts[chassis] = counts.get(chassis, 0) + delta
        if counts[chassis] <= 0:
            del counts[chassis]
            self.dps.add(dp)
        elif counts[chassis] == delta:
            self.dps.add(dp)
        if counts:
            mapping[dp] = counts
        else:
            mapping.pop(dp, None)

    def _macs(self, port: PortView, *, add: bool) -> set[str]:
        """Adds or removes a port's MACs; returns the ports whose L2 lookup may change."""
        affected: set[str] = set()
        mapping = self._own("macs")
        for mac in port_macs(port):
            key = (port.dp_key, mac)
            current: frozenset[tuple[int, str]] = mapping.get(key, frozenset())  # type: ignore[assignment]
            new = current | {(port.key, port.name)} if add else current - {(port.key, port.name)}
            if new:
                mapping[key] = new
            else:
                mapping.pop(key, None)
            affected |= {n for _, n in current | new}
        return affected

    # ----- compiling ----------------------------------------------------------------------

    def _compile_port(self, name: str) -> None:
        port = self.view.ports.get(name)
        self._flood(name, port)
        old = self.ports.get(name)
        if port is None or port.dp_key not in self.local:
            if old is not None:
                del self._own("ports")[name]
                self._replace(old.flows, ())
            return
        macs = tuple(
            mac for mac in port_macs(port) if min(self.macs[(port.dp_key, mac)])[1] == name
        )
        inputs = port_inputs(self.view, port, macs)
        if old is not None and old.inputs == inputs:
            return
        flows = port_flows(inputs)
        self._own("ports")[name] = _Port(inputs, flows)
        self._replace(old.flows if old is not None else (), flows)

    def _flood(self, name: str, port: PortView | None) -> None:
        """Whether and how the flood of the port's datapath reaches it here."""
        member = None
        if port is not None and (actions := flood_member(self.view, port)) is not None:
            member = (port.dp_key, port.key, actions)
        old = self.members.get(name)
        if member == old:
            return
        flood = self._own("flood")
        if old is not None:
            left = dict(flood[old[0]])  # type: ignore[call-overload]
            left.pop((old[1], name), None)
            flood[old[0]] = left
            self.dps.add(old[0])
            del self._own("members")[name]
        if member is not None:
            grown = dict(flood.get(member[0], {}))  # type: ignore[call-overload]
            grown[(member[1], name)] = member[2]
            flood[member[0]] = grown
            self.dps.add(member[0])
            self._own("members")[name] = member

    def _compile_datapath(self, dp: int) -> None:
        old = self.datapaths.get(dp)
        if dp not in self.local:
            if old is not None:
                del self._own("datapaths")[dp]
                self._replace(old.flows, ())
            return
        members = tuple(
            (key, actions) for (key, _), actions in sorted(self.flood.get(dp, {}).items())
        )
        counts = self.remote.get(dp, {})
        remote = tuple(sorted({self.view.tunnels[c] for c in counts if c in self.view.tunnels}))
        if self.view.uplink(dp) is not None:
            remote = ()  # the physical network carries the flood to the other chassis
        if old is not None and (old.members, old.remote) == (members, remote):
            return
        flows = datapath_flows(dp, members, remote)
        self._own("datapaths")[dp] = _Datapath(members, remote, flows)
        self._replace(old.flows if old is not None else (), flows)

    def _compile_acls(self, dp: int) -> None:
        """A local datapath's ACL stages, both directions (`dps` includes the datapaths
        that became local or stopped being local)."""
        old = self.acls.get(dp)
        if dp not in self.local:
            if old is not None:
                del self._own("acls")[dp]
                self._replace(old.flows, ())
            return
        ports = _PortKeys(self.dp_ports.get(dp, _NOTHING), self.view.ports)
        flows: list[Flow] = []
        problems: dict[int, str] = {}
        for direction in Direction:
            stage = acl_stage(self.view, dp, direction, ports)
            flows.extend(stage.flows)
            problems.update(stage.problems)
        new = _Acls(tuple(flows), problems)
        if old is not None and old.flows == new.flows and old.problems == new.problems:
            return
        self._own("acls")[dp] = new
        self._replace(old.flows if old is not None else (), new.flows)

    def _replace(self, old: Iterable[Flow], new: tuple[Flow, ...]) -> None:
        """The diff from one group's old flows to its new ones. A cookie none of whose
        flows survives is deleted whole (one message instead of one per flow)."""
        before: dict[FlowKey, Flow] = {f.key: f for f in old}
        after: dict[FlowKey, Flow] = {f.key: f for f in new}
        survivors = {f.cookie for f in new}
        doomed: dict[int, list[Flow]] = {}
        for key, flow in before.items():
            if key not in after:
                doomed.setdefault(flow.cookie, []).append(flow)
        for cookie_value, flows in doomed.items():
            total = sum(1 for f in before.values() if f.cookie == cookie_value)
            if cookie_value not in survivors and total == len(flows) and total > 1:
                self.delete_cookies.append((cookie_value, EXACT))
            else:
                self.deletes.extend(flows)
        for key, flow in after.items():
            previous = before.get(key)
            if previous is None:
                self.adds.append(flow)
            elif previous != flow:
                self.modifies.append(flow)


class _PortKeys(Mapping[str, int]):
    """A datapath's ports, name -> key, looked up when asked: the ACL stages ask only for
    the ports their ACLs name, so a datapath's port count does not cost every change."""

    def __init__(self, names: frozenset[str], ports: Mapping[str, PortView]) -> None:
        self._names = names
        self._ports = ports

    def __getitem__(self, name: str) -> int:
        if name not in self._names:
            raise KeyError(name)
        return self._ports[name].key

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
