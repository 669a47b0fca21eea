"""The incremental flow table always equals a compilation from scratch, its changes turn
the old table into the new one, and a change touches only the ports it affects."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from liveport.model.acl import AclView, Direction, Verdict
from liveport.model.binding import MigrationState, claim_report
from liveport.model.carried import Connection
from liveport.model.compiler import Dirty, FlowChange, FlowTable, compile_table
from liveport.model.flows import FlowSet, apply_diff
from liveport.model.logical import Strategy
from liveport.model.pipeline import ChassisView, LocalVif, PortView, compile_flows

ME = "hv1"
OTHERS = ("hv2", "hv3", "hv4")
NAMES = tuple(f"p{i}" for i in range(1, 9))
MACS = ("00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03", "0a:00:00:00:00:04")
# ACL matches the tables draw from: port groups, address sets, port names, sets that
# need a conjunction, a broken one (enforced fail-closed).
MATCHES = (
    "inport == @g1 && ip4",
    "outport == @g1 && ip4 && ip4.src == $g1_ip4",
    "outport == @g2 && tcp && tcp.dst == {22, 80, 443} && "
    "ip4.src == {10.0.1.1, 10.0.1.2, 10.0.2.3}",
    'inport == "p3" && udp',
    "outport == @g2 && ip &&",
    "arp",
)


def apply(installed: FlowSet, change: FlowChange) -> FlowSet:
    """What a switch holds after a FlowChange (deletes by cookie first, as the bundle)."""
    kept = {
        k: f
        for k, f in installed.flows.items()
        if not any(f.cookie & mask == c & mask for c, mask in change.delete_cookies)
    }
    return apply_diff(FlowSet(kept), change.diff)


@st.composite
def views(draw: st.DrawFn) -> ChassisView:
    chassis = st.sampled_from((None, ME, *OTHERS))
    ports: dict[str, PortView] = {}
    for key, name in enumerate(draw(st.lists(st.sampled_from(NAMES), unique=True)), start=1):
        dp = draw(st.sampled_from((1, 2)))
        owner, destination = draw(chassis), draw(chassis)
        mac = draw(st.sampled_from(MACS))
        ports[name] = PortView(
            name,
            dp,
            key,
            addresses=(f"{mac} 10.0.{dp}.{key}",),
            owner=owner,
            destination=destination if destination != owner else None,
            migration_state=draw(st.sampled_from((None, *MigrationState))),
            strategy=frozenset(draw(st.sets(st.sampled_from(list(Strategy)), min_size=1))),
        )
    local = draw(st.sets(st.sampled_from(sorted(ports)))) if ports else set()
    claims = (
        {
            name: claim_report(
                ME,
                draw(st.sampled_from(("main", "destination"))),
                None,
                draw(st.sampled_from((None, 5))),
            )
            for name in draw(st.sets(st.sampled_from(sorted(ports))))
            if ports
        }
        if ports
        else {}
    )
    tunnels = {
        c: draw(st.sampled_from((100, 101, 102, 103)))
        for c in draw(st.sets(st.sampled_from(OTHERS)))
    }
    acls: dict[int, tuple[AclView, ...]] = {}
    for dp in draw(st.sets(st.sampled_from((1, 2)))):
        found = []
        for key in draw(st.sets(st.integers(1, 6), max_size=4)):
            found.append(
                AclView(
                    key,
                    draw(st.sampled_from(list(Direction))),
                    draw(st.sampled_from((1000, 1001, 1002))),
                    MATCHES[key - 1],
                    draw(st.sampled_from(list(Verdict))),
                    port_groups=("g2",) if "@g2" in MATCHES[key - 1] else ("g1",),
                )
            )
        acls[dp] = tuple(sorted(found, key=lambda a: a.key))
    groups = {g: frozenset(draw(st.sets(st.sampled_from(NAMES)))) for g in ("g1", "g2")}
    sets = {"g1_ip4": frozenset(draw(st.sets(st.sampled_from(("10.0.1.1", "10.0.2.2")))))}
    peer = ipaddress.IPv4Address("10.9.9.9")
    chosen = draw(st.sets(st.sampled_from(sorted(ports)))) if ports else set()
    carried = {
        n: (Connection(6, ipaddress.IPv4Address(f"10.0.{p.dp_key}.{p.key}"), 40000, peer, 22),)
        for n in chosen
        for p in (ports[n],)
    }
    return ChassisView(
        ME,
        vifs={n: LocalVif(n, 10 + NAMES.index(n)) for n in local},
        tunnels=tunnels,
        ports=ports,
        claims=claims,
        activated=frozenset(draw(st.sets(st.sampled_from(sorted(ports)))))
        if ports
        else frozenset(),
        acls=acls,
        address_sets=sets,
        port_groups=groups,
        zones={n: draw(st.sampled_from((1, 2, 3))) for n in local},
        carried=carried,
    )


def dirty_between(old: ChassisView, new: ChassisView) -> Dirty:
    """What an agent tells the table: everything whose inputs changed."""
    names = {
        n
        for n in set(old.ports) | set(new.ports) | set(old.vifs) | set(new.vifs)
        if old.ports.get(n) != new.ports.get(n)
        or old.vifs.get(n) != new.vifs.get(n)
        or old.claims.get(n) != new.claims.get(n)
        or (n in old.activated) != (n in new.activated)
        or old.zones.get(n) != new.zones.get(n)
        or old.carried.get(n) != new.carried.get(n)
    }
    tunnels = {
        c for c in set(old.tunnels) | set(new.tunnels) if old.tunnels.get(c) != new.tunnels.get(c)
    }
    # Datapaths whose ACLs, or the sets and groups they name, changed (as agent.security
    # finds them: every datapath with ACLs when a set or group changed).
    named_changed = old.address_sets != new.address_sets or old.port_groups != new.port_groups
    datapaths = {
        dp
        for dp in set(old.acls) | set(new.acls)
        if old.acls.get(dp) != new.acls.get(dp) or named_changed
    }
    return Dirty(frozenset(names), frozenset(tunnels), frozenset(datapaths))


@settings(max_examples=300, deadline=None)
@given(st.lists(views(), min_size=1, max_size=6))
def test_an_updated_table_equals_a_table_compiled_from_scratch(sequence: list[ChassisView]) -> None:
    table = FlowTable()
    installed = FlowSet()
    previous = ChassisView(ME)
    for view in sequence:
        table, change = table.update(view, dirty_between(previous, view))
        assert table.flows() == compile_flows(view)
        installed = apply(installed, change)
        assert installed == compile_flows(view)
        previous = view


def _port(name: str, key: int, owner: str | None, dp: int = 1) -> PortView:
    return PortView(name, dp, key, (f"00:00:00:00:01:{key:02x} 10.0.0.{key}",), owner=owner)


def _view(ports: list[PortView], vifs: list[str], **kwargs: object) -> ChassisView:
    return ChassisView(
        ME,
        vifs={n: LocalVif(n, 10 + i) for i, n in enumerate(vifs)},
        tunnels={"hv2": 102, "hv3": 103},
        ports={p.name: p for p in ports},
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_change_to_one_remote_port_recompiles_only_that_port() -> None:
    ports = [_port("local", 1, ME), *(_port(f"r{k}", k, "hv2") for k in range(2, 200))]
    table = compile_table(_view(ports, ["local"]))
    moved = _port("r7", 7, "hv3")
    new_view = _view([*ports[:6], moved, *ports[7:]], ["local"])
    new, change = table.update(new_view, Dirty(frozenset({"r7"})))
    recompiled = [n for n in table.ports if new.ports[n] is not table.ports[n]]
    assert recompiled == ["r7"]
    assert new.flows() == compile_flows(new_view)
    # Its flows changed (tunnel to hv3), and the flood now also goes to hv3.
    assert change.diff.modifies and new.datapaths[1] is not table.datapaths[1]


def test_the_first_local_vif_of_a_datapath_compiles_all_its_ports_and_the_last_removes_them() -> (
    None
):
    ports = [_port("a", 1, "hv2"), _port("b", 2, "hv2"), _port("c", 3, "hv2", dp=2)]
    empty = _view(ports, [])
    table = compile_table(empty)
    assert not table.ports and not table.flows()
    with_vif = _view([_port("a", 1, ME), *ports[1:]], ["a"])
    table, change = table.update(with_vif, Dirty(frozenset({"a"})))
    assert sorted(table.ports) == ["a", "b"] and table.flows() == compile_flows(with_vif)
    assert len(change.diff.adds) == len(table.flows())
    table, change = table.update(empty, Dirty(frozenset({"a"})))
    assert not table.ports and not table.datapaths
    assert not table.flows() and not change.diff.adds
    # A port's or datapath's flows that all go are deleted by cookie, not one by one.
    assert change.delete_cookies and len(change.diff.deletes) < len(compile_flows(with_vif))


def test_a_new_tunnel_reaches_the_ports_and_floods_that_name_its_chassis() -> None:
    ports = [_port("local", 1, ME), _port("r2", 2, "hv4"), _port("r3", 3, "hv2")]
    view = _view(ports, ["local"])
    table = compile_table(view)
    tunnelled = ChassisView(
        ME, view.vifs, {**view.tunnels, "hv4": 104}, view.ports, view.claims, view.activated
    )
    new, change = table.update(tunnelled, Dirty(tunnels=frozenset({"hv4"})))
    assert new.flows() == compile_flows(tunnelled)
    assert new.ports["r3"] is table.ports["r3"] and new.ports["r2"] is not table.ports["r2"]
    assert change
