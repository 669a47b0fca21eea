"""OVSDB's data model on the wire, as pure functions: schemas, values, updates, transactions.

Nothing here does I/O or keeps state between calls. The functions that apply updates
mutate only the row maps they are handed; the client's owner thread (liveport.ovsdb.client)
is their one caller and hands them maps no published Snapshot shares. Everything else is
safe from any thread.

Values are decoded straight into the frozen forms of rows.py, so a database row exists once
in memory, as one `Row`:

| column type (min, max)      | JSON on the wire                     | Row value            |
| --------------------------- | ------------------------------------ | -------------------- |
| scalar (1, 1)               | atom                                 | the atom             |
| optional (0, 1)             | atom, or ["set", [0 or 1 atom]]      | the atom or None     |
| set (any other)             | atom, or ["set", [atoms]]            | frozenset            |
| map (has a value type)      | ["map", [[key, value], ...]]         | FrozenMap            |

Atoms: integer -> int, real -> float, boolean -> bool, string -> str, uuid -> uuid.UUID
(["uuid", "..."] on the wire). Transactions may also name a row inserted earlier in the same
transaction with rows.Ref, sent as ["named-uuid", ...].

Updates ("update2"/"update3" notifications and monitor replies): "initial" and "insert" give
a row's non-default columns; "modify" gives, per changed column, a difference: the new value
of a column that holds at most one value (scalar, optional, a map of at most one pair), the
elements to toggle of a set (symmetric difference), and for a map the pairs to add, to
change (key present, other value) or to remove (key present, same value); "delete" removes
the row. (ovsdb-server computes differences only for columns that may hold several values.)
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveport.model.errors import LiveportError
from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import (
    Delete,
    Insert,
    Mutate,
    Op,
    Ref,
    Row,
    TableRows,
    Update,
    Verify,
)

ATOMIC_TYPES = ("integer", "real", "boolean", "string", "uuid")
ZERO_UUID = uuid.UUID(int=0)
EMPTY_SET: frozenset[Any] = frozenset()
EMPTY_MAP: FrozenMap[Any, Any] = FrozenMap()
Condition = list[Any]
TRUE_CONDITION: Condition = [True]


class SchemaError(LiveportError):
    """A database schema that cannot be read or used."""


class ProtocolError(LiveportError):
    """A server message that does not follow the protocol (or contradicts what we hold)."""


class InvalidOp(LiveportError):
    """A transaction operation that cannot be sent as it is (reported as a TxnError)."""


# ----- schemas -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BaseType:
    """The type of a column's keys or values. Constraints (enum, ranges, lengths) are the
    server's to check; only a reference's target matters here."""

    atomic: str
    ref_table: str | None = None


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    name: str
    kind: str  # scalar | optional | set | map
    key: BaseType
    value: BaseType | None = None
    min: int = 1
    max: int | None = 1  # None: unlimited

    def default(self) -> Any:
        """The value of the column in a row that does not set it."""
        if self.kind == "scalar":
            return _ATOM_DEFAULTS[self.key.atomic]
        if self.kind == "optional":
            return None
        return EMPTY_MAP if self.kind == "map" else EMPTY_SET


@dataclass(frozen=True, slots=True)
class TableSchema:
    name: str
    columns: Mapping[str, ColumnSchema]
    is_root: bool = True


@dataclass(frozen=True, slots=True)
class Schema:
    """A database schema as far as a client needs it. `OvsdbClient(schema=...)` takes it,
    and `fetch_schema` returns it."""

    name: str
    version: str
    tables: Mapping[str, TableSchema]


_ATOM_DEFAULTS: dict[str, Any] = {
    "integer": 0,
    "real": 0.0,
    "boolean": False,
    "string": "",
    "uuid": ZERO_UUID,
}


def load_schema(path: str | Path) -> Schema:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path} is not a readable OVSDB schema: {exc}") from None
    return parse_schema(doc)


def parse_schema(doc: Any) -> Schema:
    """The schema of a get_schema reply or an .ovsschema file."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tables"), Mapping):
        raise SchemaError("an OVSDB schema is an object with a 'tables' object")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError("an OVSDB schema needs a name")
    tables = {t: _parse_table(name, t, body) for t, body in doc["tables"].items()}
    # Before "isRoot" existed every table was a root: a schema that marks none keeps that.
    if not any(body.get("isRoot", False) for body in doc["tables"].values()):
        tables = {t: TableSchema(t, table.columns, True) for t, table in tables.items()}
    return Schema(name, str(doc.get("version", "")), tables)


def _parse_table(db: str, name: str, body: Any) -> TableSchema:
    if not isinstance(body, Mapping) or not isinstance(body.get("columns"), Mapping):
        raise SchemaError(f"{db} table {name} has no 'columns' object")
    columns = {
        column: _parse_column(f"{db}.{name}.{column}", column, spec)
        for column, spec in body["columns"].items()
    }
    return TableSchema(name, columns, bool(body.get("isRoot", False)))


def _parse_column(where: str, name: str, spec: Any) -> ColumnSchema:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise SchemaError(f"column {where} has no type")
    ctype = spec["type"]
    if isinstance(ctype, str):
        return ColumnSchema(name, "scalar", _parse_base(where, ctype))
    if not isinstance(ctype, Mapping) or "key" not in ctype:
        raise SchemaError(f"column {where} has a malformed type")
    key = _parse_base(where, ctype["key"])
    value = _parse_base(where, ctype["value"]) if "value" in ctype else None
    low = ctype.get("min", 1)
    high = ctype.get("max", 1)
    if not isinstance(low, int) or low not in (0, 1):
        raise SchemaError(f"column {where}: min must be 0 or 1")
    if high == "unlimited":
        high = None
    elif not isinstance(high, int) or high < max(low, 1):
        raise SchemaError(f"column {where}: max must be 'unlimited' or at least min and 1")
    if value is not None:
        kind = "map"
    elif low == 1 and high == 1:
        kind = "scalar"
    elif low == 0 and high == 1:
        kind = "optional"
    else:
        kind = "set"
    return ColumnSchema(name, kind, key, value, low, high)


def _parse_base(where: str, spec: Any) -> BaseType:
    if isinstance(spec, str):
        spec = {"type": spec}
    atomic = spec.get("type") if isinstance(spec, Mapping) else None
    if atomic not in ATOMIC_TYPES:
        raise SchemaError(f"column {where} has an unknown atomic type {atomic!r}")
    ref = spec.get("refTable")
    return BaseType(str(atomic), str(ref) if ref is not None else None)


# ----- decoding what the server sends ----------------------------------------------------------


def _decode_uuid(value: Any) -> uuid.UUID:
    if type(value) is list and len(value) == 2 and value[0] == "uuid":
        return uuid.UUID(value[1])
    raise ProtocolError(f"expected a UUID, got {value!r}")


def _same(value: Any) -> Any:
    return value


SHARED_STRING = 64  # strings up to this length are stored once however many rows hold them


def _decode_string(value: Any) -> Any:
    # Names, chassis, enum values and addresses recur across rows and tables (a port's
    # name is in its binding, its claim and its VIF): one object each, not one per use.
    # sys.intern forgets a string once no row holds it any more.
    if type(value) is str and len(value) <= SHARED_STRING:
        return sys.intern(value)
    return value


def _atom_decoder(base: BaseType) -> Callable[[Any], Any]:
    if base.atomic == "uuid":
        return _decode_uuid
    if base.atomic == "real":
        return float
    if base.atomic == "string":
        return _decode_string
    return _same  # JSON already has the right Python type


def _members(value: Any) -> list[Any]:
    """The atoms of a set on the wire: ["set", [...]], or a single atom for one member."""
    if type(value) is list and len(value) == 2 and value[0] == "set":
        members = value[1]
        if type(members) is not list:
            raise ProtocolError(f"malformed set {value!r}")
        return members
    return [value]


def _pairs(value: Any) -> list[Any]:
    if type(value) is list and len(value) == 2 and value[0] == "map" and type(value[1]) is list:
        return value[1]
    raise ProtocolError(f"malformed map {value!r}")


Decoder = Callable[[Any], Any]
Differ = Callable[[Any, Any], Any]


def column_codec(column: ColumnSchema) -> tuple[Decoder, Differ]:
    """(decode, apply_diff) for one column: decode(json) is the Row value of a full column,
    apply_diff(old, json) the value after an update2 "modify" of it."""
    key = _atom_decoder(column.key)
    decode: Decoder
    if column.kind == "scalar":
        decode = key
    elif column.kind == "optional":
        decode = _optional_decoder(key)
    elif column.kind == "set":
        decode = _set_decoder(key)
    else:
        assert column.value is not None
        value = _atom_decoder(column.value)
        decode = _map_decoder(key, value)
        if column.max is None or column.max > 1:
            return decode, _map_differ(key, value)
    if column.kind == "set":
        return decode, _set_differ(key)
    # At most one value: the "difference" is the new value itself.
    return decode, lambda old, raw: decode(raw)


def _optional_decoder(key: Decoder) -> Decoder:
    def decode(raw: Any) -> Any:
        members = _members(raw)
        if len(members) > 1:
            raise ProtocolError(f"more than one value for an optional column: {raw!r}")
        return key(members[0]) if members else None

    return decode


def _set_decoder(key: Decoder) -> Decoder:
    def decode(raw: Any) -> Any:
        members = _members(raw)
        return frozenset(map(key, members)) if members else EMPTY_SET

    return decode


def _set_differ(key: Decoder) -> Differ:
    def apply(old: Any, raw: Any) -> Any:
        result = old.symmetric_difference(map(key, _members(raw)))
        return result if result else EMPTY_SET

    return apply


def _map_decoder(key: Decoder, value: Decoder) -> Decoder:
    def decode(raw: Any) -> Any:
        pairs = _pairs(raw)
        return FrozenMap({key(k): value(v) for k, v in pairs}) if pairs else EMPTY_MAP

    return decode


def _map_differ(key: Decoder, value: Decoder) -> Differ:
    def apply(old: Any, raw: Any) -> Any:
        result = dict(old)
        for raw_key, raw_value in _pairs(raw):
            k, v = key(raw_key), value(raw_value)
            if k in result and result[k] == v:
                del result[k]  # same key, same value: the pair was removed
            else:
                result[k] = v  # a new key, or a new value for a key
        return FrozenMap(result) if result else EMPTY_MAP

    return apply


Sharer = Callable[[ColumnSchema], "Callable[[Any], Any] | None"]


def _shared(
    column: ColumnSchema, codec: tuple[Decoder, Differ], sharer: Sharer | None
) -> tuple[Decoder, Differ]:
    share = sharer(column) if sharer is not None and column.kind in ("set", "map") else None
    if share is None:
        return codec
    decode, apply = codec
    return (lambda raw: share(decode(raw))), (lambda old, raw: share(apply(old, raw)))


class RowCodec:
    """Builds the Rows of one table from update2 row contents, for the monitored columns.

    Every Row's data holds each monitored column (defaults filled in); the column names are
    the schema's own string objects, shared by all rows."""

    __slots__ = ("_decoders", "_defaults", "_differs", "columns", "table")

    def __init__(
        self,
        table: TableSchema,
        columns: Iterable[str],
        sharer: Sharer | None = None,
    ) -> None:
        """sharer(column), if given, gives for a set or map column a function that may
        replace each value by an equal one (a value many rows hold, stored once)."""
        self.table = table.name
        self.columns = tuple(columns)
        specs = [table.columns[name] for name in self.columns]
        self._defaults = {spec.name: spec.default() for spec in specs}
        codecs = {spec.name: _shared(spec, column_codec(spec), sharer) for spec in specs}
        self._decoders = {name: codec[0] for name, codec in codecs.items()}
        self._differs = {name: codec[1] for name, codec in codecs.items()}

    def new_row(self, row_uuid: uuid.UUID, contents: Any) -> Row:
        if not isinstance(contents, dict):
            raise ProtocolError(f"{self.table} row {row_uuid}: contents are not an object")
        data = self._defaults.copy()
        decoders = self._decoders
        for name, raw in contents.items():
            decode = decoders.get(name)
            if decode is not None:  # the server sends only what we asked for; be lenient
                data[name] = decode(raw)
        return Row(row_uuid, self.table, FrozenMap(data))

    def modified(self, row: Row, diff: Any) -> Row:
        if not isinstance(diff, dict):
            raise ProtocolError(f"{self.table} row {row.uuid}: modify is not an object")
        data = dict(row.data)
        differs = self._differs
        for name, raw in diff.items():
            apply = differs.get(name)
            if apply is not None:
                data[name] = apply(data[name], raw)
        return Row(row.uuid, self.table, FrozenMap(data))


def apply_table_update(codec: RowCodec, rows: dict[uuid.UUID, Row], update: Any) -> set[uuid.UUID]:
    """Applies one table's <table-update2> to rows (in place); returns the uuids it touched.

    update is consumed as it is applied, so a large initial reply can be freed row by row
    while the frozen rows are built."""
    if not isinstance(update, dict):
        raise ProtocolError(f"the update of {codec.table} is not an object")
    touched: set[uuid.UUID] = set()
    while update:
        key, row_update = update.popitem()
        try:
            row_uuid = uuid.UUID(key)
        except (TypeError, ValueError):
            raise ProtocolError(f"{codec.table}: {key!r} is not a row UUID") from None
        if not isinstance(row_update, dict) or len(row_update) != 1:
            raise ProtocolError(f"{codec.table} row {key}: malformed <row-update2>")
        action, contents = next(iter(row_update.items()))
        if action in ("initial", "insert"):
            rows[row_uuid] = codec.new_row(row_uuid, contents)
        elif action == "modify":
            old = rows.get(row_uuid)
            if old is None:
                raise ProtocolError(f"{codec.table}: modify of unknown row {key}")
            rows[row_uuid] = codec.modified(old, contents)
        elif action == "delete":
            if rows.pop(row_uuid, None) is None:
                continue  # nothing we held: nothing changed
        else:
            raise ProtocolError(f"{codec.table} row {key}: unknown action {action!r}")
        touched.add(row_uuid)
    return touched


# ----- _Server: may this server be used? -------------------------------------------------------

SERVER_DATABASE = TableSchema(
    "Database",
    {
        "name": ColumnSchema("name", "scalar", BaseType("string")),
        "model": ColumnSchema("model", "scalar", BaseType("string")),
        "connected": ColumnSchema("connected", "scalar", BaseType("boolean")),
        "leader": ColumnSchema("leader", "scalar", BaseType("boolean")),
        "schema": ColumnSchema("schema", "optional", BaseType("string"), min=0),
        "index": ColumnSchema("index", "optional", BaseType("integer"), min=0),
    },
)


@dataclass(frozen=True)
class Verdict:
    usable: bool
    reason: str = ""
    index: int | None = None  # the cluster's log index this server has reached


def judge_server(database: Row | None, *, name: str, leader_only: bool, min_index: int) -> Verdict:
    """Whether a server whose _Server.Database row for our database is `database` may be
    used: a cluster member must be connected to its cluster, be the leader if leader_only,
    and not be behind what we have already seen (min_index); a relay must be synced with
    its source and is never a leader."""
    if database is None:
        return Verdict(False, f"the server does not serve {name}")
    model = database["model"]
    joined = bool(database["schema"])
    if model == "clustered":
        index = database["index"]
        if not joined:
            return Verdict(False, "this cluster member has not joined the cluster yet")
        if not database["connected"]:
            return Verdict(False, "this cluster member is disconnected from the cluster")
        if leader_only and not database["leader"]:
            return Verdict(False, "this cluster member is not the leader")
        if index is not None and index < min_index:
            return Verdict(False, f"this cluster member is behind (index {index} < {min_index})")
        return Verdict(True, index=index)
    if model == "relay":
        if not joined or not database["connected"]:
            return Verdict(False, "this relay is not connected to its source yet")
        if leader_only:
            return Verdict(False, "a relay is not a cluster leader")
    return Verdict(True)


# ----- conditions ------------------------------------------------------------------------------


def normal_condition(condition: Condition) -> Condition:
    """The condition as the server takes it: [] (no rows, for set_condition) is [False]."""
    return list(condition) if condition else [False]


@dataclass
class ConditionState:
    """One table's monitor condition: what the server applies (acked), what was asked and
    not yet acknowledged (requested), what to ask next (new). Owner thread only."""

    acked: Condition = field(default_factory=lambda: list(TRUE_CONDITION))
    requested: Condition | None = None
    new: Condition | None = None

    @property
    def latest(self) -> Condition:
        if self.new is not None:
            return self.new
        return self.requested if self.requested is not None else self.acked

    def want(self, condition: Condition) -> bool:
        """Records condition as the one to apply; False if it is already the latest."""
        if condition == self.latest:
            return False
        self.new = condition
        return True


# ----- encoding transactions -------------------------------------------------------------------


def uuid_where(row_uuid: uuid.UUID) -> list[Any]:
    return [["_uuid", "==", ["uuid", str(row_uuid)]]]


def freeze_value(column: ColumnSchema, value: Any) -> Any:
    """A caller's value for column in its Row form (Refs kept): lists, tuples and sets
    become frozensets, mappings FrozenMaps, None the empty value. Raises InvalidOp."""
    kind = column.kind
    if kind == "map":
        if value is None:
            return EMPTY_MAP
        if not isinstance(value, Mapping):
            raise InvalidOp(f"column {column.name} is a map, not {type(value).__name__}")
        assert column.value is not None
        return FrozenMap(
            {
                _freeze_atom(column, column.key, k): _freeze_atom(column, column.value, v)
                for k, v in value.items()
            }
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        members = frozenset(_freeze_atom(column, column.key, v) for v in value)
    elif value is None:
        members = EMPTY_SET
    else:
        members = frozenset((_freeze_atom(column, column.key, value),))
    if kind == "set":
        return members
    if len(members) > 1:
        raise InvalidOp(f"column {column.name} takes one value, not {len(members)}")
    if kind == "optional":
        return next(iter(members)) if members else None
    if not members:
        raise InvalidOp(f"column {column.name} needs a value")
    return next(iter(members))


def _freeze_atom(column: ColumnSchema, base: BaseType, value: Any) -> Any:
    atomic = base.atomic
    if atomic == "uuid":
        if isinstance(value, (uuid.UUID, Ref)):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    elif atomic == "string":
        if isinstance(value, str):
            return value
    elif atomic == "boolean":
        if isinstance(value, bool):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        return float(value) if atomic == "real" else value
    elif atomic == "real" and isinstance(value, float):
        return value
    raise InvalidOp(f"column {column.name} takes {atomic} values, not {value!r}")


def _atom_json(value: Any, symbols: Mapping[str, str]) -> Any:
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, Ref):
        symbol = symbols.get(value.name)
        if symbol is None:
            raise InvalidOp(f"reference to unknown inserted row {value.name!r}")
        return ["named-uuid", symbol]
    return value


def datum_json(column: ColumnSchema, frozen: Any, symbols: Mapping[str, str]) -> Any:
    """The wire form of a frozen value (freeze_value) of column."""
    kind = column.kind
    if kind == "scalar":
        return _atom_json(frozen, symbols)
    if kind == "optional":
        return ["set", []] if frozen is None else _atom_json(frozen, symbols)
    if kind == "set":
        return ["set", [_atom_json(v, symbols) for v in frozen]]
    return ["map", [[_atom_json(k, symbols), _atom_json(v, symbols)] for k, v in frozen.items()]]


@dataclass(frozen=True)
class TxnRequest:
    """The operations of one "transact" request (without the database name)."""

    operations: list[dict[str, Any]]
    inserted: Mapping[str, uuid.UUID]  # Insert.name -> the UUID the row gets
    row_uuids: Sequence[uuid.UUID]  # the UUIDs of all inserted rows, in order
    changes: bool  # False: nothing would change what we hold; no need to send it


@dataclass
class _Builder:
    schema: Schema
    tables: Mapping[str, TableRows]
    uncertain: bool
    row_uuids: Sequence[uuid.UUID]
    chosen: list[uuid.UUID] = field(default_factory=list)
    symbols: dict[str, str] = field(default_factory=dict)
    inserted: dict[str, uuid.UUID] = field(default_factory=dict)
    written: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    waits: list[dict[str, Any]] = field(default_factory=list)
    operations: list[dict[str, Any]] = field(default_factory=list)
    changes: bool = False
    members: dict[int, set[Any]] = field(default_factory=dict)  # merged sets' members

    def table(self, name: str) -> TableSchema:
        table = self.schema.tables.get(name)
        if table is None:
            raise InvalidOp(f"{self.schema.name} has no table {name}")
        return table

    def column(self, table: TableSchema, name: str) -> ColumnSchema:
        column = table.columns.get(name)
        if column is None:
            raise InvalidOp(f"table {table.name} has no column {name}")
        return column

    def row(self, table: str, row_uuid: uuid.UUID) -> Row | None:
        rows = self.tables.get(table)
        if rows is None:
            raise InvalidOp(f"table {table} is not monitored")
        return rows.get(row_uuid)

    def existing(self, table: str, row_uuid: uuid.UUID) -> Row:
        row = self.row(table, row_uuid)
        if row is None:
            raise InvalidOp(f"{table} row {row_uuid} does not exist (any more)")
        return row

    def insert(self, op: Insert) -> None:
        table = self.table(op.table)
        row_json = {}
        for name, value in op.values.items():
            column = self.column(table, name)
            row_json[name] = datum_json(column, freeze_value(column, value), self.symbols)
        # The row's UUID is chosen by the client (the server accepts it since OVS 2.13),
        # the same in every attempt: a transaction sent again after its reply was lost
        # then fails with "duplicate uuid" instead of inserting the rows twice.
        new_uuid = (
            self.row_uuids[len(self.chosen)]
            if len(self.chosen) < len(self.row_uuids)
            else uuid.uuid4()
        )
        self.chosen.append(new_uuid)
        operation: dict[str, Any] = {
            "op": "insert",
            "table": op.table,
            "uuid": str(new_uuid),
            "row": row_json,
        }
        if op.name is not None:
            if op.name in self.symbols:
                raise InvalidOp(f"two rows are inserted as {op.name!r}")
            # Callers' names need not be OVSDB identifiers; the symbols sent are ours.
            symbol = f"row{len(self.symbols)}"
            self.symbols[op.name] = symbol
            self.inserted[op.name] = new_uuid
            operation["uuid-name"] = symbol
        self.operations.append(operation)
        self.changes = True

    def update(self, op: Update) -> None:
        table = self.table(op.table)
        row = self.existing(op.table, op.uuid)
        row_json = {}
        for name, value in op.values.items():
            column = self.column(table, name)
            frozen = freeze_value(column, value)
            row_json[name] = datum_json(column, frozen, self.symbols)
            self.written.add((op.uuid, name))
            if name not in row.data or row.data[name] != frozen:
                self.changes = True
        if row_json:
            self.operations.append(
                {"op": "update", "table": op.table, "where": uuid_where(op.uuid), "row": row_json}
            )

    def delete(self, op: Delete) -> None:
        table = self.table(op.table)
        if self.row(op.table, op.uuid) is None:
            if self.uncertain:
                return  # gone, most likely by this very transaction's lost first attempt
            raise InvalidOp(f"{op.table} row {op.uuid} does not exist (any more)")
        if not table.is_root:
            # A row outside the root set lives as long as something refers to it: the
            # server deletes it once the references go (and refuses to while they remain).
            return
        self.operations.append({"op": "delete", "table": op.table, "where": uuid_where(op.uuid)})
        self.changes = True

    def mutate(self, op: Mutate) -> None:
        table = self.table(op.table)
        column = self.column(table, op.column)
        row = self.existing(op.table, op.uuid)
        mutations, changes = _mutations(column, op, row, self.symbols)
        self.written.add((op.uuid, op.column))
        self.changes = self.changes or changes
        where = uuid_where(op.uuid)
        last = self.operations[-1] if self.operations else None
        if last is not None and (last["op"], last["table"], last.get("where")) == (
            "mutate",
            op.table,
            where,
        ):
            # Consecutive mutations of one row go in one operation (1000 ports added to a
            # switch: one copy of its port set on the server, not 1000).
            for mutation in mutations:
                self.merge_mutation(last["mutations"], mutation)
            return
        self.operations.append(
            {"op": "mutate", "table": op.table, "where": where, "mutations": mutations}
        )
        self.members.clear()

    def merge_mutation(self, mutations: list[Any], mutation: list[Any]) -> None:
        """Appends mutation, or adds its elements to the last one when both insert into (or
        delete from) the same column a set of elements: the same as applying them in turn."""
        column, mutator, operand = mutation
        if operand[0] == "set" and mutations:
            last_column, last_mutator, last_operand = mutations[-1]
            if (last_column, last_mutator, last_operand[0]) == (column, mutator, "set"):
                members = last_operand[1]
                seen = self.members.setdefault(id(members), {_key(m) for m in members})
                for member in operand[1]:
                    if _key(member) not in seen:  # a set has no repeats
                        seen.add(_key(member))
                        members.append(member)
                return
        mutations.append(mutation)

    def verify(self, op: Verify) -> None:
        table = self.table(op.table)
        column = self.column(table, op.column)
        row = self.existing(op.table, op.uuid)
        if (op.uuid, op.column) in self.written:
            return  # already written in this transaction: there is nothing left to verify
        if op.column not in row.data:
            raise InvalidOp(f"{op.table}.{op.column} is not monitored: it cannot be verified")
        self.waits.append(
            {
                "op": "wait",
                "table": op.table,
                "timeout": 0,
                "where": uuid_where(op.uuid),
                "until": "==",
                "columns": [op.column],
                "rows": [{op.column: datum_json(column, row.data[op.column], {})}],
            }
        )


def _mutations(
    column: ColumnSchema, op: Mutate, row: Row, symbols: Mapping[str, str]
) -> tuple[list[Any], bool]:
    """The mutations of one Mutate and whether they change the row as we hold it (a column
    we do not monitor counts as changed)."""
    monitored = op.column in row.data
    current: Any = row.data.get(op.column)
    if op.op in ("add", "remove"):
        if column.kind in ("map", "scalar"):
            raise InvalidOp(f"{op.op} needs a set column; {column.name} is a {column.kind}")
        atom = _freeze_atom(column, column.key, op.key)
        member = ["set", [_atom_json(atom, symbols)]]
        present = monitored and (current == atom if column.kind == "optional" else atom in current)
        if op.op == "add":
            return [[column.name, "insert", member]], not present
        return [[column.name, "delete", member]], present or not monitored
    if op.op in ("setkey", "delkey"):
        if column.kind != "map":
            raise InvalidOp(f"{op.op} needs a map column; {column.name} is a {column.kind}")
        assert column.value is not None
        key = _freeze_atom(column, column.key, op.key)
        deletion = [column.name, "delete", ["set", [_atom_json(key, symbols)]]]
        if op.op == "delkey":
            return [deletion], not monitored or key in current
        value = _freeze_atom(column, column.value, op.value)
        pair = ["map", [[_atom_json(key, symbols), _atom_json(value, symbols)]]]
        # A map "insert" leaves an existing key alone: delete it first to replace it.
        unchanged = monitored and key in current and current[key] == value
        return [deletion, [column.name, "insert", pair]], not unchanged
    raise InvalidOp(f"unknown mutation {op.op!r}")


def _key(member: Any) -> Any:
    """A set member on the wire, hashable (["uuid", "..."] is a list)."""
    return tuple(member) if isinstance(member, list) else member


def build_transaction(
    schema: Schema,
    ops: Sequence[Op],
    tables: Mapping[str, TableRows],
    *,
    lock: str | None = None,
    comment: str = "",
    uncertain: bool = False,
    row_uuids: Sequence[uuid.UUID] = (),
) -> TxnRequest:
    """The "transact" operations for ops, checked against the rows we hold (tables).

    Verify becomes a "wait" placed before every write, so it checks the value read before
    this transaction (and is dropped for a column an earlier op already writes). A client
    holding a lock asserts it first, so a client that lost its lock writes nothing.
    uncertain: an earlier attempt may have been applied (its reply was lost), so a Delete
    of a row already gone is done. row_uuids: the UUIDs of the inserted rows, in order
    (give the same ones to every attempt; missing ones are made up). Raises InvalidOp.
    """
    builder = _Builder(schema, tables, uncertain, row_uuids)
    for op in ops:
        if isinstance(op, Insert):
            builder.insert(op)
        elif isinstance(op, Update):
            builder.update(op)
        elif isinstance(op, Delete):
            builder.delete(op)
        elif isinstance(op, Mutate):
            builder.mutate(op)
        elif isinstance(op, Verify):
            builder.verify(op)
        else:
            raise InvalidOp(f"unknown operation {op!r}")
    operations: list[dict[str, Any]] = []
    if lock is not None:
        operations.append({"op": "assert", "lock": lock})
    operations += builder.waits + builder.operations
    if comment:
        operations.append({"op": "comment", "comment": comment})
    return TxnRequest(operations, dict(builder.inserted), tuple(builder.chosen), builder.changes)


@dataclass(frozen=True)
class TxnOutcome:
    """What a "transact" reply says. status: success, try again (a wait failed, or the
    server canceled the transaction), not owner (the asserted lock is not held),
    duplicate uuid (an inserted row's UUID exists), or error."""

    status: str
    detail: str = ""  # the server's error object as JSON text


def txn_outcome(result: Any, rpc_error: Any = None) -> TxnOutcome:
    if rpc_error is not None:
        if rpc_error == "canceled":  # the database went away or changed under it
            return TxnOutcome("try again", json.dumps({"error": "canceled"}))
        return TxnOutcome("error", json.dumps(rpc_error))
    if not isinstance(result, list):
        return TxnOutcome("error", f"reply to transact is not an array: {result!r}")
    # The server stops at the first failing operation (null results follow it), or adds
    # the error of the commit itself (a constraint) after the operations' results.
    for item in result:
        if item is None:
            continue
        error = item.get("error") if isinstance(item, dict) else "malformed result"
        if error is None or error == "aborted":
            continue
        status = _SOFT_ERRORS.get(error, "error") if isinstance(error, str) else "error"
        return TxnOutcome(status, json.dumps(item))
    return TxnOutcome("success")


_SOFT_ERRORS = {
    "timed out": "try again",
    "not owner": "not owner",
    "duplicate uuid": "duplicate uuid",
}
