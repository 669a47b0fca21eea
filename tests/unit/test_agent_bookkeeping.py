"""The agent's own bookkeeping around activations, learned flows and its SB monitor,
without a switch or a database (fakes for the one client call it makes)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from liveport.agent import southbound
from liveport.agent.agent import Agent, AgentConfig, learning_ports
from liveport.agent.localswitch import Identity, LocalState
from liveport.model.cookies import Kind, cookie
from liveport.model.flows import Flow, match
from liveport.model.frozen import FrozenMap
from liveport.model.pipeline import LocalVif
from liveport.ovsdb.client import Condition
from liveport.ovsdb.rows import Change, Row, Snapshot

IDENTITY = Identity("hv2", "hv2", None, "geneve", "192.0.2.2", "br-int")
DP1, DP2 = uuid.UUID(int=1), uuid.UUID(int=2)
BINDINGS = {"a": DP1, "b": DP2, "c": DP2}  # port -> datapath


class FakeSb:
    """The one OvsdbClient call _monitoring_complete makes."""

    def __init__(self) -> None:
        self.conditions: list[Condition] = []

    def set_condition(self, table: str, condition: Condition) -> None:
        assert table == "Port_Binding"
        self.conditions.append(condition)


def snapshot(ports: list[str], acked: Condition) -> Snapshot:
    rows = {
        (u := uuid.uuid5(uuid.NAMESPACE_OID, name)): Row(
            u, "Port_Binding", FrozenMap({"logical_port": name, "datapath": BINDINGS[name]})
        )
        for name in ports
    }
    return Snapshot(
        1,
        {"Port_Binding": rows},
        connected=True,
        acked_conditions={"Port_Binding": acked or [False]},
    )


def local(*vifs: str) -> LocalState:
    return LocalState(IDENTITY, uuid.uuid4(), {n: LocalVif(n, 10 + i) for i, n in enumerate(vifs)})


def agent_with(sb: FakeSb) -> Agent:
    agent = Agent(AgentConfig(ovs_remote="unix:/nonexistent"))
    agent.sb = sb  # type: ignore[assignment]
    return agent


def by_datapath(*datapaths: uuid.UUID) -> Condition:
    return [["datapath", "==", ["uuid", str(d)]] for d in sorted(datapaths, key=str)]


def test_condition_covers() -> None:
    both = by_datapath(DP1, DP2)
    assert southbound.condition_covers(both, by_datapath(DP1))
    assert southbound.condition_covers(both, [])
    assert southbound.condition_covers(both, list(reversed(both)))
    assert not southbound.condition_covers(by_datapath(DP1), both)
    assert not southbound.condition_covers(both, [["logical_port", "==", "c"]])


def test_a_vif_that_goes_does_not_hold_the_pass_back() -> None:
    """A pass that sees a VIF go must install (remove its flows) although the server has
    not applied the narrower condition yet: the snapshot holds all the rows it needs. A
    new VIF plugged there before the next pass must not inherit the old one's flows."""

    async def passes() -> None:
        sb = FakeSb()
        agent = agent_with(sb)
        both = by_datapath(DP1, DP2)
        rows = ["a", "b", "c"]
        # A new agent: nothing applied yet.
        assert not await agent._monitoring_complete(snapshot([], []), local("a", "b"))
        assert not await agent._monitoring_complete(snapshot(rows, []), local("a", "b"))
        assert sb.conditions[-1] == both
        assert await agent._monitoring_complete(snapshot(rows, both), local("a", "b"))
        # b goes: the server still applies both datapaths, a superset.
        assert await agent._monitoring_complete(snapshot(rows, both), local("a"))
        assert sb.conditions[-1] == by_datapath(DP1)
        assert await agent._monitoring_complete(snapshot(["a"], by_datapath(DP1)), local("a"))
        # b comes back: its datapath's rows are not there yet.
        assert not await agent._monitoring_complete(
            snapshot(["a"], by_datapath(DP1)), local("a", "b")
        )
        # A superset the server no longer applies proves nothing.
        agent = agent_with(FakeSb())
        assert await agent._monitoring_complete(snapshot(rows, both), local("a", "b"))
        moved = by_datapath(DP2)
        assert not await agent._monitoring_complete(snapshot(["b", "c"], moved), local("a"))

    asyncio.run(passes())


def test_an_unplugged_vif_takes_its_activation_along() -> None:
    agent = agent_with(FakeSb())
    agent._activated = {"a", "b"}
    agent._activations = {"a": {"kind": "rarp", "at": "1"}, "b": {"kind": "garp", "at": "2"}}
    agent._forget_unplugged(local("a", "c").vifs.keys())
    assert agent._activated == {"a"}
    assert agent._activations == {"a": {"kind": "rarp", "at": "1"}}


def test_ports_that_may_learn_count_as_holding_learned_flows() -> None:
    """At connect: a port with learned flows, and a port whose activation flows are in the
    switch (it may learn before the first pass; that packet-in finds no view)."""

    def flow(kind: Kind, dp: int, key: int, **fields: Any) -> Flow:
        return Flow(0, 100, match(**fields), (), cookie(kind, dp, key))

    flows = [
        flow(Kind.PORT, 1, 1, in_port=11),
        flow(Kind.ACTIVATION, 1, 2, in_port=12),
        flow(Kind.LEARNED, 1, 3, in_port=13),
        flow(Kind.DATAPATH, 1, 0, tunnel_id=1),
    ]
    assert learning_ports(flows) == {(1, 2), (1, 3)}


# ----- what wakes the agent ------------------------------------------------------------------

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


# ----- the view's ports, rebuilt only where rows changed ----------------------------------------


def pb_row(name: str, dp: uuid.UUID, key: int, chassis: str | None) -> Row:
    return Row(
        uuid.uuid5(uuid.NAMESPACE_OID, name),
        "Port_Binding",
        FrozenMap(
            {
                "logical_port": name,
                "datapath": dp,
                "tunnel_key": key,
                "addresses": frozenset({f"0a:00:00:00:00:{key:02x} 10.0.0.{key}"}),
                "port_security": frozenset(),
                "chassis": chassis,
                "migration_destination": None,
                "migration_state": None,
                "activation_strategy": frozenset({"rarp"}),
            }
        ),
    )


def dp_row(u: uuid.UUID, key: int) -> Row:
    return Row(u, "Datapath_Binding", FrozenMap({"tunnel_key": key}))


def sb_with(pbs: list[Row], dps: list[Row]) -> Snapshot:
    return Snapshot(
        1,
        {"Port_Binding": {r.uuid: r for r in pbs}, "Datapath_Binding": {r.uuid: r for r in dps}},
        connected=True,
    )


def test_port_views_are_rebuilt_only_for_rows_that_changed() -> None:
    a, b, dp = pb_row("a", DP1, 1, "hv1"), pb_row("b", DP1, 2, None), dp_row(DP1, 7)
    views = southbound.PortViews()
    first = views.build(sb_with([a, b], [dp]))
    assert (first["a"].dp_key, first["a"].owner, first["b"].owner) == (7, "hv1", None)
    b2 = pb_row("b", DP1, 2, "hv2")  # b is bound: a new row object
    second = views.build(sb_with([a, b2], [dp]))
    assert second["a"] is first["a"] and second["b"].owner == "hv2"
    assert second == southbound.PortViews().build(sb_with([a, b2], [dp]))  # same as fresh
    third = views.build(sb_with([a, b2], [dp_row(DP1, 9)]))  # the datapath's key changed
    assert third["a"].dp_key == third["b"].dp_key == 9
    assert views.build(sb_with([b2], [dp])).keys() == {"b"}  # a is gone
