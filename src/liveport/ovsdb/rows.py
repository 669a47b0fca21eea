"""Immutable views of database contents: Row, Snapshot, Change, and transaction operations.

Values in a Row follow the column's type: a scalar column gives its value; an optional
column (min 0, max 1) gives the value or None; a set gives a frozenset; a map gives a
FrozenMap. References are uuid.UUID. Snapshots are never mutated after publication, so any
thread may hold and read one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from liveport.model.frozen import FrozenMap


@dataclass(frozen=True, slots=True)
class Row:
    uuid: uuid.UUID
    table: str
    data: FrozenMap[str, Any]

    def __getitem__(self, column: str) -> Any:
        return self.data[column]

    def get(self, column: str, default: Any = None) -> Any:
        return self.data.get(column, default)


TableRows = Mapping[uuid.UUID, Row]


class Snapshot:
    """A consistent, immutable view of the monitored tables at one point."""

    __slots__ = ("_acked", "_indexes", "_tables", "cond_seqno", "connected", "has_lock", "seqno")

    def __init__(
        self,
        seqno: int,
        tables: Mapping[str, TableRows],
        *,
        connected: bool,
        has_lock: bool = False,
        cond_seqno: int = 0,
        indexes: Mapping[tuple[str, str], Index] | None = None,
        acked_conditions: Mapping[str, Any] | None = None,
    ) -> None:
        self.seqno = seqno
        self._tables = tables
        self.connected = connected
        self.has_lock = has_lock
        self.cond_seqno = cond_seqno
        self._indexes = indexes or {}
        self._acked = acked_conditions or {}

    def condition_applied(self, table: str, condition: Any) -> bool:
        """True if the server has applied `condition` to table, so the snapshot holds exactly
        the rows it selects ([] means none, as for OvsdbClient.set_condition)."""
        return self._acked.get(table) == (condition or [False])

    def lookup(self, table: str, column: str, value: Any) -> list[Row]:
        """Rows whose column equals value (or, for a set column, contains it). Uses an index
        when the client maintains one for (table, column); scans otherwise."""
        index = self._indexes.get((table, column))
        rows = self.table(table)
        if index is not None:
            found = index.get(value)
            if found is None:
                return []
            members = (found,) if isinstance(found, uuid.UUID) else found
            return [rows[u] for u in members if u in rows]
        return [r for r in rows.values() if _holds(r.data.get(column), value)]

    def table(self, name: str) -> TableRows:
        return self._tables.get(name, {})

    def rows(self, name: str) -> Iterator[Row]:
        return iter(self.table(name).values())

    def get(self, table: str, row_uuid: uuid.UUID | None) -> Row | None:
        if row_uuid is None:
            return None
        return self.table(table).get(row_uuid)

    def find(self, table: str, **equals: Any) -> list[Row]:
        return [row for row in self.rows(table) if _matches(row, equals)]

    def one(self, table: str, **equals: Any) -> Row | None:
        for row in self.rows(table):
            if _matches(row, equals):
                return row
        return None

    def row_count(self) -> int:
        # Deliberately not __len__: an empty snapshot must still be truthy when returned
        # from a wait_until predicate.
        return sum(len(rows) for rows in self._tables.values())


# An index maps a value to the row that holds it, or to the set of rows when several do:
# most values are held by one row (a port's name), and a set for each would cost 216 bytes.
Index = Mapping[Any, "uuid.UUID | frozenset[uuid.UUID]"]


def index_add(index: dict[Any, Any], key: Any, row_uuid: uuid.UUID) -> None:
    found = index.get(key)
    if found is None:
        index[key] = row_uuid
    elif isinstance(found, uuid.UUID):
        if found != row_uuid:
            index[key] = frozenset((found, row_uuid))
    else:
        index[key] = found | {row_uuid}


def index_remove(index: dict[Any, Any], key: Any, row_uuid: uuid.UUID) -> None:
    found = index.get(key)
    if found == row_uuid:
        del index[key]
    elif isinstance(found, frozenset) and row_uuid in found:
        rest = found - {row_uuid}
        index[key] = next(iter(rest)) if len(rest) == 1 else rest


def index_keys(value: Any) -> tuple[Any, ...]:
    """The index entries of a column value: each element of a set, else the value itself."""
    if value is None:
        return ()
    if isinstance(value, frozenset):
        return tuple(value)
    return (value,)


def _holds(value: Any, wanted: Any) -> bool:
    return wanted in value if isinstance(value, frozenset) else value == wanted


def _matches(row: Row, equals: Mapping[str, Any]) -> bool:
    return all(row.data.get(column) == value for column, value in equals.items())


@dataclass(frozen=True)
class Change:
    """What one update from the server changed (uuids per table) and the new snapshot."""

    snapshot: Snapshot
    changed: Mapping[str, frozenset[uuid.UUID]]
    reloaded: bool = False  # the whole contents were fetched again (reconnect)


@dataclass(frozen=True)
class Ref:
    """Inside a transaction, the row inserted under this name."""

    name: str


@dataclass(frozen=True)
class Insert:
    table: str
    values: Mapping[str, Any]
    name: str | None = None


@dataclass(frozen=True)
class Update:
    table: str
    uuid: uuid.UUID
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    table: str
    uuid: uuid.UUID


@dataclass(frozen=True)
class Mutate:
    """Adds to / removes from a set column, or sets / deletes one key of a map column."""

    table: str
    uuid: uuid.UUID
    column: str
    op: str  # "add", "remove", "setkey", "delkey"
    key: Any
    value: Any = None


@dataclass(frozen=True)
class Verify:
    """Fails the transaction (and retries it) if the column changed since it was read."""

    table: str
    uuid: uuid.UUID
    column: str


Op = Insert | Update | Delete | Mutate | Verify


@dataclass(frozen=True)
class TxnResult:
    inserted: Mapping[str, uuid.UUID] = field(default_factory=dict)
    attempts: int = 1


def ops_summary(ops: Iterable[Op]) -> str:
    counts: dict[str, int] = {}
    for op in ops:
        key = f"{type(op).__name__.lower()} {op.table}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}x {key}" for key, n in sorted(counts.items()))
