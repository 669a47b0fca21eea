"""The IDL client against a real ovsdb-server serving Liveport_Southbound."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.model.errors import Timeout
from liveport.ovsdb import schema, server
from liveport.ovsdb.client import OvsdbClient, TxnError, json_parser
from liveport.ovsdb.rows import Change, Delete, Insert, Mutate, Ref, Update
from liveport.runtime.process import stop_daemons

pytestmark = pytest.mark.lab

TABLES = {"SB_Global": None, "Datapath_Binding": None, "Port_Binding": None, "Chassis": None}


@pytest.fixture
def sb(short_tmp: Path) -> Iterator[server.ServerSpec]:
    spec = server.ServerSpec("sb", short_tmp / "sb", schema.southbound_path())
    server.start(spec)
    yield spec
    stop_daemons([spec.daemon("sb", str(short_tmp))])


@pytest.fixture
def client(sb: server.ServerSpec) -> Iterator[OvsdbClient]:
    with OvsdbClient(sb.remote, schema.SB_NAME, TABLES, schema=str(sb.schema)) as c:
        c.wait_connected(timeout=10)
        yield c


def test_json_parser_is_reported() -> None:
    """The C parser is reported exactly when python-ovs can load its C extension (Debian's
    python3-openvswitch ships it: the lab runs with it)."""
    import importlib.util  # noqa: PLC0415

    has_c = importlib.util.find_spec("ovs._json") is not None
    assert json_parser() == ("C" if has_c else "PYTHON")


def test_insert_reference_update_and_delete(client: OvsdbClient) -> None:
    result = client.transact(
        [
            Insert("Datapath_Binding", {"tunnel_key": 7, "name": "ls0"}, name="dp"),
            Insert(
                "Port_Binding",
                {
                    "logical_port": "p1",
                    "datapath": Ref("dp"),
                    "tunnel_key": 1,
                    "addresses": ["00:00:00:00:00:01 10.0.0.1"],
                },
                name="pb",
            ),
        ]
    )
    pb_uuid = result.inserted["pb"]
    snap = client.wait_until(lambda s: s.get("Port_Binding", pb_uuid), timeout=5)
    assert snap["datapath"] == result.inserted["dp"]
    assert snap["addresses"] == frozenset({"00:00:00:00:00:01 10.0.0.1"})
    assert snap["chassis"] is None and snap["status"] == {}

    client.transact(
        [
            Update("Port_Binding", pb_uuid, {"chassis": "hv1", "up": True}),
            Mutate("Port_Binding", pb_uuid, "status", "setkey", "why", "test"),
        ]
    )
    row = client.wait_until(
        lambda s: (r := s.get("Port_Binding", pb_uuid)) is not None and r["up"] and r, timeout=5
    )
    assert row["chassis"] == "hv1" and row["status"] == {"why": "test"}

    client.transact([Update("Port_Binding", pb_uuid, {"chassis": None})])
    client.wait_until(lambda s: s.table("Port_Binding")[pb_uuid]["chassis"] is None, timeout=5)

    client.transact([Delete("Port_Binding", pb_uuid)])
    client.wait_until(lambda s: s.get("Port_Binding", pb_uuid) is None, timeout=5)


def test_constraint_violations_are_reported_not_swallowed(client: OvsdbClient) -> None:
    client.transact([Insert("Datapath_Binding", {"tunnel_key": 5, "name": "a"})])
    with pytest.raises(TxnError, match=r"constraint violation: .*identical values \(5\)"):
        client.transact([Insert("Datapath_Binding", {"tunnel_key": 5, "name": "b"})])
    with pytest.raises(TxnError, match="not in the valid range"):
        client.transact([Insert("Datapath_Binding", {"tunnel_key": 0, "name": "c"})])
    # Nothing of a refused transaction is applied.
    snap = client.snapshot()
    assert sorted(r["name"] for r in snap.rows("Datapath_Binding")) == ["a"]


def test_wait_until_times_out_with_what_was_awaited(client: OvsdbClient) -> None:
    with pytest.raises(Timeout, match="waiting for port p9"):
        client.wait_until(
            lambda s: s.one("Port_Binding", logical_port="p9"), timeout=0.2, what="port p9"
        )


def test_snapshots_are_immutable_and_events_name_changed_rows(client: OvsdbClient) -> None:
    events: queue.SimpleQueue[Change] = queue.SimpleQueue()
    client.add_listener(events.put)
    before = client.snapshot()
    r = client.transact(
        [
            Insert(
                "Chassis",
                {"name": "hv1", "hostname": "h", "encap_type": "geneve", "encap_ip": "198.18.0.1"},
                name="ch",
            )
        ]
    )
    ch = r.inserted["ch"]
    while True:
        change = events.get(timeout=5)
        if ch in change.changed.get("Chassis", ()):
            break
    assert change.snapshot.table("Chassis")[ch]["name"] == "hv1"
    assert before.get("Chassis", ch) is None  # the old snapshot did not move


def test_transactions_from_many_threads(client: OvsdbClient) -> None:
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(20):
                client.transact(
                    [Insert("Datapath_Binding", {"tunnel_key": base + i, "name": f"dp{base + i}"})]
                )
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(100 * n + 1,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    client.wait_until(lambda s: len(s.table("Datapath_Binding")) == 80, timeout=5)


def test_client_recovers_when_the_server_restarts(
    sb: server.ServerSpec, client: OvsdbClient, short_tmp: Path
) -> None:
    client.transact([Insert("Datapath_Binding", {"tunnel_key": 9, "name": "keep"})])
    client.wait_until(lambda s: s.one("Datapath_Binding", name="keep"), timeout=5)
    stop_daemons([sb.daemon("sb", str(short_tmp))])
    client.wait_until(lambda s: not s.connected, timeout=10, what="the client to notice")
    server.start(sb)
    snap = client.wait_until(
        lambda s: s if s.connected else None, timeout=20, what="the client to reconnect"
    )
    assert snap.one("Datapath_Binding", name="keep") is not None
    client.transact([Insert("Datapath_Binding", {"tunnel_key": 10, "name": "after"})])
    client.wait_until(lambda s: s.one("Datapath_Binding", name="after"), timeout=5)


def test_a_transaction_larger_than_the_socket_buffer(client: OvsdbClient) -> None:
    ops = [
        Insert("Datapath_Binding", {"tunnel_key": i, "name": f"dp{i}" * 20}) for i in range(1, 3001)
    ]
    result = client.transact(ops, timeout=30)
    assert result.attempts == 1
    snap = client.wait_until(
        lambda s: s if len(s.table("Datapath_Binding")) == 3000 else None, timeout=30
    )
    assert snap.lookup("Datapath_Binding", "tunnel_key", 2999)[0]["name"] == "dp2999" * 20


def test_indexes_follow_inserts_updates_and_deletes(sb: server.ServerSpec) -> None:
    with OvsdbClient(
        sb.remote,
        schema.SB_NAME,
        TABLES,
        schema=str(sb.schema),
        indexes={"Port_Binding": ["chassis", "addresses"]},
    ) as c:
        c.wait_connected(10)
        r = c.transact(
            [
                Insert("Datapath_Binding", {"tunnel_key": 1, "name": "ls"}, name="dp"),
                Insert(
                    "Port_Binding",
                    {
                        "logical_port": "a",
                        "datapath": Ref("dp"),
                        "tunnel_key": 1,
                        "chassis": "hv1",
                        "addresses": ["m1", "m2"],
                    },
                    name="a",
                ),
            ]
        )
        a = r.inserted["a"]
        c.wait_until(lambda s: s.lookup("Port_Binding", "chassis", "hv1"), timeout=5)
        assert [x.uuid for x in c.snapshot().lookup("Port_Binding", "addresses", "m2")] == [a]
        c.transact([Update("Port_Binding", a, {"chassis": "hv2", "addresses": ["m3"]})])
        snap = c.wait_until(
            lambda s: s if s.lookup("Port_Binding", "chassis", "hv2") else None, timeout=5
        )
        assert snap.lookup("Port_Binding", "chassis", "hv1") == []
        assert snap.lookup("Port_Binding", "addresses", "m1") == []
        assert [x.uuid for x in snap.lookup("Port_Binding", "addresses", "m3")] == [a]
        c.transact([Delete("Port_Binding", a)])
        snap = c.wait_until(
            lambda s: None if s.lookup("Port_Binding", "chassis", "hv2") else s, timeout=5
        )
        assert snap.lookup("Port_Binding", "addresses", "m3") == []


def test_rows_whose_monitored_columns_hold_defaults_are_seen(sb: server.ServerSpec) -> None:
    """python-ovs neither notifies nor bumps its change counter for such a row; the client
    must still show it (a bug that hid every pre-policy row from `liveport sb setup`)."""
    with OvsdbClient(
        sb.remote, schema.SB_NAME, {"Datapath_Binding": ["tunnel_key", "name"]}
    ) as writer:
        writer.wait_connected(timeout=10)
        writer.transact([Insert("Datapath_Binding", {"tunnel_key": 1, "name": "a"})])
        with OvsdbClient(
            sb.remote, schema.SB_NAME, {"Datapath_Binding": ["external_ids"]}
        ) as sparse:
            sparse.wait_until(lambda s: len(s.table("Datapath_Binding")) == 1, timeout=10)
            writer.transact([Insert("Datapath_Binding", {"tunnel_key": 2, "name": "b"})])
            sparse.wait_until(lambda s: len(s.table("Datapath_Binding")) == 2, timeout=10)
            writer.transact(
                [Delete("Datapath_Binding", u) for u in writer.snapshot().table("Datapath_Binding")]
            )
            sparse.wait_until(lambda s: not s.table("Datapath_Binding"), timeout=10)


def test_a_row_of_defaults_is_really_inserted(sb: server.ServerSpec) -> None:
    """python-ovs sends nothing for a new row none of whose columns was written (the lab's
    NB_Global was never created that way); the client writes one default explicitly."""
    with OvsdbClient(sb.remote, schema.SB_NAME, {"SB_Global": ["nb_cfg"]}) as client:
        client.wait_connected(timeout=10)
        for old in list(client.snapshot().table("SB_Global")):
            client.transact([Delete("SB_Global", old)])
        client.transact([Insert("SB_Global", {})])
        snap = client.wait_until(lambda s: s if s.table("SB_Global") else None, timeout=10)
        assert next(snap.rows("SB_Global"))["nb_cfg"] == 0
