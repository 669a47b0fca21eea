"""The agent's step on a whole liveport in memory (tests.world): what a pass looks at,
what it keeps in memory, and the pure helpers around it."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from typing import Any

from liveport.agent import southbound
from liveport.agent.agent import ChangeLog
from liveport.agent.step import Inputs, learning_ports, step
from liveport.model.binding import LocalRole
from liveport.model.cookies import Kind, cookie
from liveport.model.flows import Flow, match
from liveport.model.frozen import FrozenMap
from liveport.model.logical import Strategy
from liveport.ovsdb.client import Condition
from liveport.ovsdb.rows import Change, Row, Snapshot

from tests.snapshots import changed_between
from tests.world import CHASSIS, IP4, IP6, MAC, OFPORT, PORTS, World, announcement

DP1, DP2 = uuid.UUID(int=1), uuid.UUID(int=2)


def settled() -> World:
    """vm1 and vm2 on hv1, the peer on hv3, everything converged."""
    world = World("hv3")
    for port, home in zip(PORTS, ("hv1", "hv1", "hv3"), strict=True):
        world.hv[home][port] = None
    assert world.converge()
    return world


def readdress(world: World, port: str, addresses: str) -> None:
    world.nb_db.update("Logical_Switch_Port", world.lsps[port], addresses={addresses})


def by_datapath(*datapaths: uuid.UUID) -> Condition:
    return [["datapath", "==", ["uuid", str(d)]] for d in sorted(datapaths, key=str)]


def test_condition_covers() -> None:
    both = by_datapath(DP1, DP2)
    assert southbound.condition_covers(both, by_datapath(DP1))
    assert southbound.condition_covers(both, [])
    assert southbound.condition_covers(both, list(reversed(both)))
    assert not southbound.condition_covers(by_datapath(DP1), both)
    assert not southbound.condition_covers(both, [["logical_port", "==", "c"]])


def test_a_step_never_changes_the_memory_it_is_given() -> None:
    world = settled()
    state = world.agents["hv1"]
    before = copy.deepcopy(state.memory)
    readdress(world, "peer", "0a:00:00:00:00:33 10.0.0.33")
    world.northd_run()
    sb = world.sb_view("hv1")
    inputs = Inputs(world.ovs_db["hv1"].snapshot(), sb, {}, changed_between(state.last_sb, sb), 5)
    outcome = step(state.memory, inputs)
    assert outcome.installed and outcome.flows
    assert state.memory == before


def test_a_change_to_one_remote_port_looks_at_that_port_only() -> None:
    """hv1 holds vm1 and vm2; the peer (on hv3) gets another address: hv1's step
    recompiles the peer alone."""
    world = settled()
    state = world.agents["hv1"]
    old = state.memory.table
    readdress(world, "peer", "0a:00:00:00:00:33 10.0.0.33")
    world.northd_run()
    world.agent_run("hv1")
    new = world.agents["hv1"].memory.table
    assert {n for n in new.ports if new.ports[n] is not old.ports[n]} == {"peer"}
    assert new.datapaths == old.datapaths  # the flood did not change


def test_a_pass_that_cannot_compile_remembers_what_changed() -> None:
    """A VIF appears whose datapath the agent does not monitor yet: the pass asks for the
    Port_Binding and cannot compile; the VIF is looked at when it can."""
    world = settled()
    world.hv["hv2"]["vm1"] = None  # a second VIF for vm1, on a chassis with no port yet
    world.agent_run("hv2")
    memory = world.agents["hv2"].memory
    assert world.agents["hv2"].requested is not None and "vm1" in memory.unsettled
    world.agent_run("hv2")  # the condition the server applied now selects the rows
    world.agent_run("hv2")
    memory = world.agents["hv2"].memory
    assert not memory.unsettled
    view = memory.view
    assert view is not None and view.role(view.ports["vm1"]) is LocalRole.STANDBY


def test_an_announcement_is_looked_at_in_the_next_step() -> None:
    world = settled()
    world.nb["vm1"] = {"requested-chassis": "hv1,hv2"}
    world.hv["hv2"]["vm1"] = None
    assert world.converge()
    assert world.role("hv2", "vm1") is LocalRole.PENDING
    frame = announcement(Strategy.RARP, MAC["vm1"], IP4["vm1"], IP6["vm1"])
    world.send("hv2", frame, OFPORT["vm1"])
    world.handle_packet_in("hv2")
    assert "vm1" in world.agents["hv2"].memory.unsettled
    world.agent_run("hv2")
    assert world.role("hv2", "vm1") is LocalRole.ACTIVATED


def test_an_unplugged_vif_takes_its_activation_along() -> None:
    world = settled()
    memory = world.agents["hv1"].memory
    world.agents["hv1"].memory = dataclasses.replace(
        memory,
        activated=frozenset({"vm1", "vm2"}),
        activations={"vm1": {"kind": "rarp", "at": "1"}, "vm2": {"kind": "garp", "at": "2"}},
    )
    world.hv["hv1"]["vm1"] = None
    world.hv["hv2"]["vm2"] = None
    del world.hv["hv1"]["vm2"]
    world.agent_run("hv1")
    memory = world.agents["hv1"].memory
    assert "vm2" not in memory.activated and "vm2" not in memory.activations


def test_ports_that_may_learn_count_as_holding_learned_flows() -> None:
    """At connect: a port with learned flows, and a port whose activation flows are in the
    switch (it may learn before the first step; that packet-in finds no view)."""

    def flow(kind: Kind, dp: int, key: int, **fields: Any) -> Flow:
        return Flow(0, 100, match(**fields), (), cookie(kind, dp, key))

    flows = [
        flow(Kind.PORT, 1, 1, in_port=11),
        flow(Kind.ACTIVATION, 1, 2, in_port=12),
        flow(Kind.LEARNED, 1, 3, in_port=13),
        flow(Kind.DATAPATH, 1, 0, tunnel_id=1),
    ]
    assert learning_ports(flows) == {(1, 2), (1, 3)}


def test_every_chassis_of_a_settled_world_agrees_with_a_fresh_agent() -> None:
    """A restarted agent on an unchanged world changes no flow (M10)."""
    world = settled()
    before = {c: world.switches[c] for c in CHASSIS}
    for chassis in CHASSIS:
        world.restart_agent(chassis)
        world.agent_run(chassis)
        world.agent_run(chassis)
    assert world.converge()
    assert {c: world.switches[c] for c in CHASSIS} == before


# ----- what the agent's loop is told ---------------------------------------------------------

MINE, THEIRS = uuid.UUID(int=10), uuid.UUID(int=11)


def sb_snapshot(
    *, private: dict[uuid.UUID, str], cond_seqno: int = 1, connected: bool = True
) -> Snapshot:
    rows = {
        u: Row(u, "Chassis_Private", FrozenMap({"name": name, "heartbeat": 1}))
        for u, name in private.items()
    }
    return Snapshot(2, {"Chassis_Private": rows}, connected=connected, cond_seqno=cond_seqno)


def test_the_agents_own_heartbeat_coming_back_does_not_wake_it() -> None:
    before = sb_snapshot(private={MINE: "hv2"})
    after = sb_snapshot(private={MINE: "hv2"})
    own = {"Chassis_Private": frozenset({MINE}), "Port_Binding": frozenset()}
    assert not southbound.wakes_agent(Change(after, own), "hv2", before)
    # Everything else does.
    assert southbound.wakes_agent(Change(after, own, reloaded=True), "hv2", before)
    assert southbound.wakes_agent(Change(after, own), "hv2", None)
    gone = sb_snapshot(private={})
    assert southbound.wakes_agent(Change(gone, own), "hv2", before)  # our row was deleted
    other = sb_snapshot(private={MINE: "hv2", THEIRS: "hv3"})
    assert southbound.wakes_agent(
        Change(other, {"Chassis_Private": frozenset({THEIRS})}), "hv2", before
    )
    assert southbound.wakes_agent(
        Change(after, {**own, "Port_Binding": frozenset({THEIRS})}), "hv2", before
    )
    acked = sb_snapshot(private={MINE: "hv2"}, cond_seqno=2)  # a condition just applied
    assert southbound.wakes_agent(Change(acked, own), "hv2", before)
    lost = sb_snapshot(private={MINE: "hv2"}, connected=False)
    assert southbound.wakes_agent(Change(lost, {}), "hv2", before)
    assert southbound.wakes_agent(Change(after, {}), "hv2", before)  # nothing named: wake


def test_a_change_log_pairs_the_latest_snapshot_with_every_row_changed_up_to_it() -> None:
    log = ChangeLog()
    first, second = sb_snapshot(private={MINE: "hv2"}), sb_snapshot(private={THEIRS: "hv3"})
    fallback = sb_snapshot(private={})
    assert log.take(fallback) == (fallback, None)  # a first pass looks at everything
    assert log.take(fallback) == (fallback, {})
    log.add(Change(first, {"Chassis_Private": frozenset({MINE})}))
    log.add(Change(second, {"Chassis_Private": frozenset({THEIRS}), "Chassis": frozenset()}))
    snap, changed = log.take(fallback)
    assert snap is second
    assert changed == {"Chassis_Private": frozenset({MINE, THEIRS}), "Chassis": frozenset()}
    assert log.take(fallback) == (second, {})
    log.add(Change(first, {}, reloaded=True))
    log.add(Change(second, {"Chassis": frozenset({MINE})}))
    assert log.take(fallback) == (second, None)  # a reload: look at everything
    log.everything()
    assert log.take(fallback) == (second, None)


def test_a_localnet_network_the_chassis_does_not_map_is_logged_once() -> None:
    """A switch gets a localnet port on physnet1; hv1 maps nothing, then a malformed entry,
    then physnet1 to a bridge it has: each problem is logged once, when it appears."""
    world = settled()
    ln = world.nb_db.insert(
        "Logical_Switch_Port", name="ln0", type="localnet", addresses={"unknown"},
        options={"network_name": "physnet1"},
    )  # fmt: skip
    ls = next(iter(world.nb_db.snapshot().rows("Logical_Switch")))
    world.nb_db.update("Logical_Switch", ls.uuid, ports=set(ls["ports"]) | {ln})
    assert world.converge()
    unmapped = [e for e in world.events["hv1"] if "without a mapping" in e]
    assert unmapped == [
        "localnet ports without a mapping in ovn-bridge-mappings here: ln0 (physnet1)"
    ]
    assert world.converge()  # nothing new: not logged again
    assert [e for e in world.events["hv1"] if "without a mapping" in e] == unmapped
    db = world.ovs_db["hv1"]
    root = next(iter(db.snapshot().rows("Open_vSwitch")))
    # A mapping to a bridge that does not exist maps nothing yet: still unmapped.
    ids = dict(root["external_ids"], **{"ovn-bridge-mappings": "physnet1:br-ex,oops"})
    db.update("Open_vSwitch", root.uuid, external_ids=ids)
    world.events["hv1"].clear()
    assert world.converge()
    assert world.events["hv1"] == ["ovn-bridge-mappings entry 'oops' is not NETWORK:BRIDGE"]
    bridge = db.insert("Bridge", name="br-ex")
    db.update("Open_vSwitch", root.uuid, bridges=set(root["bridges"]) | {bridge})
    world.events["hv1"].clear()
    assert world.converge()
    assert world.events["hv1"] == []  # mapped now; the malformed entry was told already
    assert world.agents["hv1"].memory.unmapped == frozenset()
