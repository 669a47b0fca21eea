"""The source's side of carrying connections (agent.carry) and the destination's reading
of them (agent.security.carried_from): which ports publish, what, and when rows go."""

from __future__ import annotations

import ipaddress

from liveport.agent import carry
from liveport.agent.security import carried_from
from liveport.model.acl import AclView, Direction, Verdict
from liveport.model.carried import MAX_CONNECTIONS, Connection, Tracked
from liveport.model.pipeline import ChassisView, LocalVif, PortView
from liveport.ovsdb import schema
from liveport.ovsdb.rows import Delete, Insert, Update

from tests.snapshots import Db

STATEFUL = (AclView(1, Direction.FROM_LPORT, 1, "ip4", Verdict.ALLOW_RELATED),)
A, B = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.9")


def port(owner: str, destination: str | None = None) -> PortView:
    return PortView(
        "vm1", 1, 1, ("fa:16:3e:00:00:01 10.0.0.1",), owner=owner, destination=destination
    )


def view(p: PortView, acls: tuple[AclView, ...] = STATEFUL, me: str = "hv1") -> ChassisView:
    return ChassisView(
        me,
        vifs={"vm1": LocalVif("vm1", 1)},
        ports={"vm1": p},
        acls={1: acls},
        zones={"vm1": 7},
    )


def tcp(sport: int, zone: int = 7, mark: int = 0) -> Tracked:
    return Tracked(Connection(6, A, sport, B, 22), zone, mark)


def test_only_a_port_migrating_away_on_a_stateful_switch_publishes() -> None:
    assert carry.outgoing(view(port("hv1", "hv2"))) == {"vm1": 7}
    assert carry.outgoing(view(port("hv1"))) == {}  # not migrating
    assert carry.outgoing(view(port("hv2", "hv1"))) == {}  # migrating here, not away
    assert carry.outgoing(view(port("hv1", "hv2"), acls=())) == {}  # nothing tracked


def test_what_is_published() -> None:
    found = [tcp(1000), tcp(1001, mark=1), tcp(1002, zone=8), tcp(1003, mark=2)]
    texts = carry.connections(found, 7)
    assert texts == {"tcp 10.0.0.1 1000 10.0.0.9 22", "tcp 10.0.0.1 1003 10.0.0.9 22"}
    many = [tcp(p) for p in range(1, MAX_CONNECTIONS + 50)]
    assert len(carry.connections(many, 7)) == MAX_CONNECTIONS


def test_publishing_holding_and_withdrawing() -> None:
    db = Db(schema.southbound_path())
    state, ops = carry.Carry().tick(view(port("hv1", "hv2")), db.snapshot(), [tcp(1000)], 1000)
    assert [type(o) for o in ops] == [Insert]
    db.transact(ops)
    # Unchanged: nothing to write. A new connection: an update.
    state, ops = state.tick(view(port("hv1", "hv2")), db.snapshot(), [tcp(1000)], 2000)
    assert ops == []
    state, ops = state.tick(view(port("hv1", "hv2")), db.snapshot(), [tcp(1000), tcp(1001)], 3000)
    assert [type(o) for o in ops] == [Update]
    db.transact(ops)
    # Completed: hv2 owns the port. The row stays for the hold, then goes.
    done = view(port("hv2"))
    state, ops = state.tick(done, db.snapshot(), [], 4000)
    assert ops == [] and state.held == {"vm1": 4000 + carry.HOLD_MS}
    state, ops = state.tick(done, db.snapshot(), [], 4000 + carry.HOLD_MS + 1)
    assert [type(o) for o in ops] == [Delete]


def test_an_abort_withdraws_at_once_and_strangers_rows_are_left_alone() -> None:
    db = Db(schema.southbound_path())
    db.insert("Port_Connections", logical_port="vm1", chassis="hv3", connections={"x"}, time=0)
    state, ops = carry.Carry().tick(view(port("hv1", "hv2")), db.snapshot(), [tcp(1)], 1)
    db.transact(ops)
    state, ops = state.tick(view(port("hv1")), db.snapshot(), [], 2)
    assert [type(o) for o in ops] == [Delete] and state.held == {}
    db.transact(ops)
    assert {r["chassis"] for r in db.snapshot().rows("Port_Connections")} == {"hv3"}


def test_the_destination_reads_only_its_source_and_checks_every_entry() -> None:
    db = Db(schema.southbound_path())
    good = "tcp 10.0.0.1 1000 10.0.0.9 22"
    db.insert(
        "Port_Connections", logical_port="vm1", chassis="hv1", connections={good, "tcp x"}, time=0
    )
    db.insert(
        "Port_Connections",
        logical_port="vm1",
        chassis="hv3",
        connections={"udp 10.0.0.1 53 10.0.0.9 53"},
        time=0,
    )
    found, refused = carried_from(db.snapshot(), "vm1", {"hv1"})
    assert [c.text for c in found] == [good] and refused == 1
    assert carried_from(db.snapshot(), "vm1", set()) == ((), 0)
