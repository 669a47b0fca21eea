"""liveport.ovsdb.protocol without a server: schemas, update2/update3 application for every
column kind, transaction encoding and replies, the _Server verdict; and the snapshots'
indexes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model.frozen import FrozenMap
from liveport.ovsdb import schema as schemas
from liveport.ovsdb.protocol import (
    EMPTY_MAP,
    EMPTY_SET,
    SERVER_DATABASE,
    ZERO_UUID,
    ConditionState,
    InvalidOp,
    ProtocolError,
    RowCodec,
    SchemaError,
    TxnRequest,
    apply_table_update,
    build_transaction,
    column_codec,
    judge_server,
    load_schema,
    normal_condition,
    parse_schema,
    txn_outcome,
)
from liveport.ovsdb.rows import (
    Delete,
    Insert,
    Mutate,
    Ref,
    Row,
    Snapshot,
    TableRows,
    Update,
    Verify,
    index_add,
    index_remove,
)

U1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
U2 = uuid.UUID("22222222-2222-2222-2222-222222222222")
U3 = uuid.UUID("33333333-3333-3333-3333-333333333333")

SCHEMA_DOC: dict[str, Any] = {
    "name": "Test",
    "version": "1.0.0",
    "tables": {
        "T": {
            "isRoot": True,
            "columns": {
                "i": {"type": "integer"},
                "r": {"type": "real"},
                "b": {"type": "boolean"},
                "s": {"type": {"key": {"type": "string", "enum": ["set", ["a", "b"]]}}},
                "u": {"type": {"key": {"type": "uuid", "refTable": "C"}}},
                "opt": {"type": {"key": "string", "min": 0, "max": 1}},
                "optu": {"type": {"key": {"type": "uuid", "refTable": "C"}, "min": 0, "max": 1}},
                "set": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "set1": {"type": {"key": "integer", "min": 1, "max": 3}},
                "uset": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
                "map": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "map1": {"type": {"key": "string", "value": "integer", "min": 0, "max": 1}},
                "umap": {"type": {"key": "integer", "value": "uuid", "min": 0, "max": "unlimited"}},
            },
        },
        "C": {"columns": {"name": {"type": "string"}}},
    },
}
SCHEMA = parse_schema(SCHEMA_DOC)
T = SCHEMA.tables["T"]


def wire_uuid(u: uuid.UUID) -> list[str]:
    return ["uuid", str(u)]


# ----- schemas ---------------------------------------------------------------------------------


def test_schema_kinds_follow_min_and_max() -> None:
    kinds = {name: column.kind for name, column in T.columns.items()}
    assert kinds == {
        "i": "scalar",
        "r": "scalar",
        "b": "scalar",
        "s": "scalar",
        "u": "scalar",
        "opt": "optional",
        "optu": "optional",
        "set": "set",
        "set1": "set",
        "uset": "set",
        "map": "map",
        "map1": "map",
        "umap": "map",
    }
    assert T.columns["u"].key.ref_table == "C"
    assert T.columns["set"].max is None and T.columns["set1"].min == 1
    assert T.is_root and not SCHEMA.tables["C"].is_root
    assert (SCHEMA.name, SCHEMA.version) == ("Test", "1.0.0")


def test_defaults_per_kind() -> None:
    defaults = {name: column.default() for name, column in T.columns.items()}
    assert defaults["i"] == 0 and defaults["r"] == 0.0 and defaults["b"] is False
    assert defaults["s"] == "" and defaults["u"] == ZERO_UUID
    assert defaults["opt"] is None and defaults["set"] is EMPTY_SET
    assert defaults["map"] is EMPTY_MAP


def test_a_schema_without_is_root_makes_every_table_a_root() -> None:
    doc = {"name": "Old", "tables": {"A": {"columns": {}}, "B": {"columns": {}}}}
    assert all(t.is_root for t in parse_schema(doc).tables.values())


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"tables": {}},
        {"name": "X", "tables": {"T": {}}},
        {"name": "X", "tables": {"T": {"columns": {"c": {}}}}},
        {"name": "X", "tables": {"T": {"columns": {"c": {"type": "float"}}}}},
        {"name": "X", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "min": 2}}}}}},
        {"name": "X", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "max": 0}}}}}},
    ],
)
def test_malformed_schemas_are_refused(doc: Any) -> None:
    with pytest.raises(SchemaError):
        parse_schema(doc)


def test_the_schemas_liveport_uses_parse() -> None:
    sb = load_schema(schemas.southbound_path())
    assert sb.name == schemas.SB_NAME
    pb = sb.tables["Port_Binding"].columns
    assert pb["datapath"].kind == "scalar" and pb["datapath"].key.ref_table == "Datapath_Binding"
    assert pb["chassis"].kind == "optional" and pb["status"].kind == "map"
    for path in (schemas.northbound_path(), schemas.vswitch_path()):
        assert load_schema(path).tables


def test_an_unreadable_schema_file_is_a_schema_error(tmp_path: Any) -> None:
    bad = tmp_path / "bad.ovsschema"
    bad.write_text("{")
    with pytest.raises(SchemaError, match="not a readable OVSDB schema"):
        load_schema(bad)


# ----- decoding and update2 differences -----------------------------------------------------------


def decode(column: str, raw: Any) -> Any:
    return column_codec(T.columns[column])[0](raw)


def diff(column: str, old: Any, raw: Any) -> Any:
    return column_codec(T.columns[column])[1](old, raw)


def test_decoding_every_kind() -> None:
    assert decode("i", 5) == 5
    assert decode("r", 2) == 2.0 and isinstance(decode("r", 2), float)
    assert decode("u", wire_uuid(U1)) == U1
    assert decode("opt", ["set", []]) is None
    assert decode("opt", "x") == "x" and decode("opt", ["set", ["x"]]) == "x"
    assert decode("optu", wire_uuid(U2)) == U2
    assert decode("set", "one") == frozenset({"one"})  # a one-member set may be a bare atom
    assert decode("set", ["set", ["a", "b"]]) == frozenset({"a", "b"})
    assert decode("set", ["set", []]) is EMPTY_SET
    assert decode("uset", ["set", [wire_uuid(U1), wire_uuid(U2)]]) == frozenset({U1, U2})
    assert decode("uset", wire_uuid(U3)) == frozenset({U3})
    assert decode("map", ["map", [["k", "v"]]]) == FrozenMap({"k": "v"})
    assert decode("umap", ["map", [[1, wire_uuid(U1)]]]) == {1: U1}
    assert decode("map", ["map", []]) is EMPTY_MAP


@pytest.mark.parametrize(
    ("column", "raw"),
    [("u", "not-a-uuid"), ("opt", ["set", ["a", "b"]]), ("map", ["set", []]), ("set", ["set", 1])],
)
def test_malformed_values_are_protocol_errors(column: str, raw: Any) -> None:
    with pytest.raises(ProtocolError):
        decode(column, raw)


def test_a_column_of_at_most_one_value_takes_the_new_value() -> None:
    # ovsdb-server sends the new value, not a difference, when max is 1.
    assert diff("i", 1, 7) == 7
    assert diff("opt", "hv1", ["set", []]) is None
    assert diff("opt", None, "hv1") == "hv1"
    assert diff("opt", "hv1", "hv2") == "hv2"
    assert diff("map1", FrozenMap({"a": 1}), ["map", [["b", 2]]]) == {"b": 2}
    assert diff("map1", FrozenMap({"a": 1}), ["map", []]) is EMPTY_MAP


def test_a_set_difference_toggles_members() -> None:
    old = frozenset({"a", "b"})
    assert diff("set", old, ["set", ["b", "c"]]) == frozenset({"a", "c"})
    assert diff("set", old, "a") == frozenset({"b"})
    assert diff("set", frozenset({"a"}), "a") is EMPTY_SET
    assert diff("uset", frozenset({U1}), ["set", [wire_uuid(U1), wire_uuid(U2)]]) == {U2}


def test_a_map_difference_adds_changes_and_removes_pairs() -> None:
    old = FrozenMap({"keep": "1", "change": "2", "drop": "3"})
    new = diff("map", old, ["map", [["change", "20"], ["drop", "3"], ["add", "4"]]])
    assert new == {"keep": "1", "change": "20", "add": "4"}
    assert old == {"keep": "1", "change": "2", "drop": "3"}  # frozen values never move
    assert diff("map", FrozenMap({"x": "1"}), ["map", [["x", "1"]]]) is EMPTY_MAP


def server_diff(old: Any, new: Any) -> Any:
    """What ovsdb-server sends for a column of several values (a reference model)."""
    if isinstance(old, frozenset):
        return ["set", sorted(old ^ new)]
    pairs = [[k, v] for k, v in new.items() if old.get(k) != v]
    pairs += [[k, v] for k, v in old.items() if k not in new]
    return ["map", pairs]


@given(st.frozensets(st.text(max_size=3)), st.frozensets(st.text(max_size=3)))
def test_any_set_is_reached_through_its_difference(
    old: frozenset[str], new: frozenset[str]
) -> None:
    assert diff("set", old, server_diff(old, new)) == new


@given(
    st.dictionaries(st.text(max_size=2), st.text(max_size=2)),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2)),
)
def test_any_map_is_reached_through_its_difference(
    old: dict[str, str], new: dict[str, str]
) -> None:
    assert diff("map", FrozenMap(old), server_diff(old, new)) == new


# ----- applying table updates ------------------------------------------------------------------


def test_insert_fills_defaults_modify_and_delete() -> None:
    codec = RowCodec(T, ["i", "opt", "set", "map", "u"])
    rows: dict[uuid.UUID, Row] = {}
    touched = apply_table_update(
        codec,
        rows,
        {str(U1): {"initial": {"i": 3}}, str(U2): {"insert": {"set": "x", "map": ["map", []]}}},
    )
    assert touched == {U1, U2}
    assert rows[U1].data == {"i": 3, "opt": None, "set": EMPTY_SET, "map": {}, "u": ZERO_UUID}
    assert rows[U2]["set"] == frozenset({"x"}) and rows[U2]["i"] == 0
    first = rows[U1]
    touched = apply_table_update(
        codec, rows, {str(U1): {"modify": {"opt": "o", "map": ["map", [["k", "v"]]]}}}
    )
    assert touched == {U1}
    assert rows[U1]["opt"] == "o" and rows[U1]["map"] == {"k": "v"} and rows[U1]["i"] == 3
    assert first["opt"] is None  # the old Row is untouched (a snapshot may hold it)
    assert rows[U1].uuid is first.uuid
    assert apply_table_update(codec, rows, {str(U2): {"delete": None}}) == {U2}
    assert set(rows) == {U1}
    assert apply_table_update(codec, rows, {str(U3): {"delete": None}}) == set()


def test_a_row_of_only_defaults_is_a_row() -> None:
    codec = RowCodec(T, ["map"])
    rows: dict[uuid.UUID, Row] = {}
    assert apply_table_update(codec, rows, {str(U1): {"insert": {}}}) == {U1}
    assert rows[U1].data == {"map": {}}


def test_rows_hold_only_monitored_columns_and_share_their_names() -> None:
    codec = RowCodec(T, ["i", "b"])
    rows: dict[uuid.UUID, Row] = {}
    apply_table_update(codec, rows, {str(U1): {"insert": {"i": 1, "opt": "ignored"}}})
    apply_table_update(codec, rows, {str(U2): {"insert": {"i": 2}}})
    assert set(rows[U1].data) == {"i", "b"}
    names = [next(k for k in row.data if k == "i") for row in rows.values()]
    assert names[0] is names[1] is T.columns["i"].name


def test_the_update_is_consumed_as_it_is_applied() -> None:
    update: dict[str, Any] = {str(U1): {"insert": {}}, str(U2): {"insert": {}}}
    apply_table_update(RowCodec(T, []), {}, update)
    assert update == {}


@pytest.mark.parametrize(
    "update",
    [
        {str(U1): {"modify": {"i": 1}}},  # a row we do not hold
        {"nonsense": {"insert": {}}},
        {str(U1): {"upsert": {}}},
        {str(U1): {"insert": {}, "delete": None}},
        {str(U1): {"insert": []}},
        [],
    ],
)
def test_malformed_updates_are_protocol_errors(update: Any) -> None:
    with pytest.raises(ProtocolError):
        apply_table_update(RowCodec(T, ["i"]), {}, update)


# ----- transactions ------------------------------------------------------------------------


def row(u: uuid.UUID, table: str = "T", **data: Any) -> Row:
    return Row(u, table, FrozenMap(data))


HELD: dict[str, TableRows] = {
    "T": {
        U1: row(
            U1,
            i=1,
            opt="o",
            set=frozenset({"a"}),
            map=FrozenMap({"k": "v"}),
            uset=frozenset({U3}),
        )
    },
    "C": {U2: row(U2, "C", name="c")},
}


def build(*ops: Any, **kwargs: Any) -> TxnRequest:
    return build_transaction(SCHEMA, ops, HELD, **kwargs)


def test_inserts_carry_chosen_uuids_and_named_references() -> None:
    request = build(
        Insert("C", {"name": "new"}, name="c-1"),
        Insert("T", {"u": Ref("c-1"), "uset": [Ref("c-1"), U3], "opt": None}, name="t"),
        Insert("T", {}),
        row_uuids=(U1, U2),
    )
    first, second, third = request.operations
    assert first == {
        "op": "insert",
        "table": "C",
        "uuid": str(U1),
        "uuid-name": "row0",
        "row": {"name": "new"},
    }
    assert second["uuid"] == str(U2) and second["uuid-name"] == "row1"
    assert second["row"]["u"] == ["named-uuid", "row0"]
    assert sorted(map(json.dumps, second["row"]["uset"][1])) == sorted(
        [json.dumps(["named-uuid", "row0"]), json.dumps(wire_uuid(U3))]
    )
    assert second["row"]["opt"] == ["set", []]
    assert third["row"] == {} and "uuid-name" not in third  # a row of defaults is inserted
    assert request.inserted == {"c-1": U1, "t": U2}
    assert request.row_uuids[:2] == (U1, U2) and len(request.row_uuids) == 3
    assert request.changes


def test_a_second_attempt_reuses_the_uuids_of_the_first() -> None:
    first = build(Insert("C", {"name": "a"}, name="a"))
    second = build(Insert("C", {"name": "a"}, name="a"), row_uuids=first.row_uuids)
    assert first.operations == second.operations


def test_updates_mutations_and_deletes() -> None:
    request = build(
        Update("T", U1, {"i": 2, "opt": None, "map": {"x": "y"}, "set": ("p", "q")}),
        Mutate("T", U1, "set", "add", "z"),
        Mutate("T", U1, "set", "remove", "a"),
        Mutate("T", U1, "map", "setkey", "k", "w"),
        Mutate("T", U1, "map", "delkey", "k"),
        Delete("T", U1),
        comment="why",
    )
    where = [["_uuid", "==", wire_uuid(U1)]]
    update, mutate, delete, comment = request.operations
    assert update["op"] == "update" and update["where"] == where
    assert update["row"]["i"] == 2 and update["row"]["opt"] == ["set", []]
    assert update["row"]["map"] == ["map", [["x", "y"]]]
    assert sorted(update["row"]["set"][1]) == ["p", "q"]
    # Consecutive mutations of a row are one operation, applied in order.
    assert mutate["op"] == "mutate" and mutate["where"] == where
    assert mutate["mutations"] == [
        ["set", "insert", ["set", ["z"]]],
        ["set", "delete", ["set", ["a"]]],
        # A map insert does not replace a key: setkey deletes it first.
        ["map", "delete", ["set", ["k"]]],
        ["map", "insert", ["map", [["k", "w"]]]],
        ["map", "delete", ["set", ["k"]]],
    ]
    assert delete == {"op": "delete", "table": "T", "where": where}
    assert comment == {"op": "comment", "comment": "why"}


def test_many_additions_to_a_set_are_one_mutation() -> None:
    request = build(
        Insert("C", {}, name="c"),
        *(Mutate("T", U1, "uset", "add", u) for u in (U2, Ref("c"), U2, str(U2))),
        Mutate("T", U1, "set", "add", "x"),
        Mutate("T", U1, "uset", "add", U3),
    )
    _, mutate = request.operations
    assert mutate["mutations"] == [
        ["uset", "insert", ["set", [wire_uuid(U2), ["named-uuid", "row0"]]]],
        ["set", "insert", ["set", ["x"]]],
        ["uset", "insert", ["set", [wire_uuid(U3)]]],
    ]


def test_a_transaction_that_changes_nothing_is_not_sent() -> None:
    unchanged = [
        Update("T", U1, {"i": 1, "opt": "o", "set": ["a"], "map": {"k": "v"}}),
        Mutate("T", U1, "set", "add", "a"),
        Mutate("T", U1, "set", "remove", "nope"),
        Mutate("T", U1, "map", "setkey", "k", "v"),
        Mutate("T", U1, "map", "delkey", "nope"),
        Mutate("T", U1, "uset", "add", str(U3)),
        Verify("T", U1, "i"),
    ]
    for op in unchanged:
        assert not build(op).changes, op
    changed = [
        Update("T", U1, {"i": 2}),
        Update("T", U1, {"b": True}),  # not monitored: it may change
        Mutate("T", U1, "set", "add", "b"),
        Mutate("T", U1, "set", "remove", "a"),
        Mutate("T", U1, "map", "setkey", "k", "w"),
        Mutate("T", U1, "map", "delkey", "k"),
        Delete("T", U1),
        Insert("C", {}),
    ]
    for op in changed:
        assert build(op).changes, op


def test_verify_waits_on_the_value_read_before_any_write() -> None:
    request = build(Update("C", U2, {"name": "d"}), Verify("T", U1, "map"), Verify("C", U2, "name"))
    wait, update = request.operations  # C.name was written first: nothing to verify there
    assert wait == {
        "op": "wait",
        "table": "T",
        "timeout": 0,
        "where": [["_uuid", "==", wire_uuid(U1)]],
        "until": "==",
        "columns": ["map"],
        "rows": [{"map": ["map", [["k", "v"]]]}],
    }
    assert update["op"] == "update"


def test_a_lock_holder_asserts_its_lock_first() -> None:
    request = build(Update("T", U1, {"i": 5}), lock="northd")
    assert request.operations[0] == {"op": "assert", "lock": "northd"}


def test_rows_outside_the_root_set_are_left_to_the_server() -> None:
    request = build(Delete("C", U2))
    assert request.operations == [] and not request.changes


def test_a_delete_of_a_gone_row_is_done_only_after_a_lost_reply() -> None:
    with pytest.raises(InvalidOp, match="does not exist"):
        build(Delete("T", U3))
    assert build(Delete("T", U3), uncertain=True).operations == []


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Insert("Nope", {}), "no table Nope"),
        (Insert("T", {"nope": 1}), "no column nope"),
        (Insert("T", {"i": "1"}), "takes integer values"),
        (Insert("T", {"i": True}), "takes integer values"),
        (Insert("T", {"b": 1}), "takes boolean values"),
        (Insert("T", {"u": "not-a-uuid"}), "takes uuid values"),
        (Insert("T", {"i": None}), "needs a value"),
        (Insert("T", {"opt": ["a", "b"]}), "takes one value"),
        (Insert("T", {"map": ["a"]}), "is a map"),
        (Insert("T", {"u": Ref("later")}), "unknown inserted row 'later'"),
        (Update("T", U3, {"i": 1}), "does not exist"),
        (Update("Nope", U1, {}), "no table Nope"),
        (Mutate("T", U1, "map", "add", "x"), "needs a set column"),
        (Mutate("T", U1, "set", "setkey", "x", "y"), "needs a map column"),
        (Mutate("T", U1, "set", "append", "x"), "unknown mutation"),
        (Verify("T", U1, "b"), "not monitored"),
    ],
)
def test_operations_that_cannot_be_sent(op: Any, message: str) -> None:
    with pytest.raises(InvalidOp, match=message):
        build(op)


def test_a_table_we_do_not_monitor_has_no_rows_to_name() -> None:
    with pytest.raises(InvalidOp, match="not monitored"):
        build_transaction(SCHEMA, [Update("T", U1, {"i": 1})], {})


def test_two_inserts_may_not_share_a_name() -> None:
    with pytest.raises(InvalidOp, match="two rows are inserted as 'x'"):
        build(Insert("C", {}, name="x"), Insert("C", {}, name="x"))


# ----- replies ----------------------------------------------------------------------------------


def test_transaction_replies() -> None:
    assert txn_outcome([{}, {"uuid": wire_uuid(U1)}]).status == "success"
    waited = txn_outcome([{"error": "timed out", "details": "..."}, None])
    assert waited.status == "try again"
    assert txn_outcome([{"error": "not owner"}, None]).status == "not owner"
    assert txn_outcome([{}, {"error": "duplicate uuid"}]).status == "duplicate uuid"
    violation = {"error": "constraint violation", "details": "identical values (5)"}
    refused = txn_outcome([{"uuid": wire_uuid(U1)}, violation])
    assert refused.status == "error" and json.loads(refused.detail) == violation
    assert txn_outcome([{"error": "aborted"}]).status == "success"
    assert txn_outcome(None, "canceled").status == "try again"
    assert txn_outcome(None, {"error": "unknown database"}).status == "error"
    assert txn_outcome({"not": "a list"}).status == "error"


# ----- _Server ---------------------------------------------------------------------------------


def database(**data: Any) -> Row:
    full = {"name": "DB", "model": "clustered", "connected": True, "leader": True}
    full |= {"schema": "{}", "index": 10} | data
    return Row(U1, "Database", FrozenMap(full))


@pytest.mark.parametrize(
    ("row", "leader_only", "usable", "reason"),
    [
        (database(), True, True, ""),
        (database(leader=False), True, False, "not the leader"),
        (database(leader=False), False, True, ""),
        (database(connected=False), False, False, "disconnected"),
        (database(schema=None), False, False, "not joined"),
        (database(index=3), False, False, "behind"),
        (database(model="relay", leader=False, index=None), False, True, ""),
        (database(model="relay", leader=False), True, False, "relay"),
        (database(model="relay", connected=False), False, False, "not connected"),
        (database(model="standalone", leader=True, index=None), True, True, ""),
        (None, False, False, "does not serve"),
    ],
)
def test_which_servers_may_be_used(
    row: Row | None, leader_only: bool, usable: bool, reason: str
) -> None:
    verdict = judge_server(row, name="DB", leader_only=leader_only, min_index=5)
    assert verdict.usable == usable
    assert reason in verdict.reason


def test_the_server_database_row_decodes() -> None:
    codec = RowCodec(SERVER_DATABASE, SERVER_DATABASE.columns)
    rows: dict[uuid.UUID, Row] = {}
    contents = {"name": "DB", "model": "clustered", "leader": True, "connected": True}
    apply_table_update(codec, rows, {str(U1): {"initial": contents | {"index": 7}}})
    assert judge_server(rows[U1], name="DB", leader_only=True, min_index=0).reason == (
        "this cluster member has not joined the cluster yet"
    )
    apply_table_update(codec, rows, {str(U1): {"modify": {"schema": "{...}"}}})
    assert judge_server(rows[U1], name="DB", leader_only=True, min_index=0).index == 7


# ----- conditions ------------------------------------------------------------------------------


def test_conditions() -> None:
    assert normal_condition([]) == [False]
    state = ConditionState()
    assert state.acked == [True] and state.latest == [True]
    assert not state.want([True])
    assert state.want([["name", "==", "a"]])
    assert state.latest == [["name", "==", "a"]] and state.acked == [True]


# ----- indexes -----------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.sampled_from([U1, U2, U3]))))
def test_an_index_holds_what_was_added_and_not_removed(
    steps: list[tuple[bool, int, uuid.UUID]],
) -> None:
    index: dict[Any, Any] = {}
    reference: dict[int, set[uuid.UUID]] = {}
    for add, key, row_uuid in steps:
        if add:
            index_add(index, key, row_uuid)
            reference.setdefault(key, set()).add(row_uuid)
        else:
            index_remove(index, key, row_uuid)
            reference.get(key, set()).discard(row_uuid)
    expected = {key: rows for key, rows in reference.items() if rows}
    # One row is held as itself, several as a frozenset.
    assert {k: {v} if isinstance(v, uuid.UUID) else set(v) for k, v in index.items()} == expected
    assert all(isinstance(v, uuid.UUID) or len(v) > 1 for v in index.values())
    rows = {u: row(u, name="x") for u in (U1, U2, U3)}
    snap = Snapshot(1, {"T": rows}, connected=True, indexes={("T", "name"): index})
    for key, members in expected.items():
        assert {r.uuid for r in snap.lookup("T", "name", key)} == members
    assert snap.lookup("T", "name", 99) == []


def test_sets_and_maps_may_be_shared_between_rows() -> None:
    shared: dict[Any, Any] = {}
    asked = []

    def sharer(column: Any) -> Any:
        asked.append(column.name)
        return lambda v: shared.setdefault(v, v)

    codec = RowCodec(T, ["set", "map", "opt", "i"], sharer)
    assert asked == ["set", "map"]
    rows: dict[uuid.UUID, Row] = {}
    same = {"set": "a", "map": ["map", [["k", "v"]]], "opt": "o", "i": 1}
    apply_table_update(codec, rows, {str(U1): {"insert": same}, str(U2): {"insert": same}})
    assert rows[U1]["set"] is rows[U2]["set"] and rows[U1]["map"] is rows[U2]["map"]
    apply_table_update(codec, rows, {str(U3): {"insert": {"set": ["set", ["b", "a"]]}}})
    apply_table_update(codec, rows, {str(U3): {"modify": {"set": "b"}}})  # now {"a"}
    assert rows[U3]["set"] is rows[U1]["set"]
    assert set(shared) == {frozenset({"a"}), frozenset({"a", "b"}), FrozenMap({"k": "v"})}
