"""In-memory databases for unit tests: rows edited freely, frozen into the same Snapshot
values the OVSDB client hands out, so pure daemon code (northd's plan, the agent's step,
doctor) runs on them without a server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import Delete, Insert, Mutate, Op, Ref, Row, Snapshot, Update, Verify


@cache
def _defaults(path: Path) -> dict[str, dict[str, Any]]:
    """table -> column -> the value a client shows for a column left at its default."""
    doc = json.loads(path.read_text())
    out: dict[str, dict[str, Any]] = {}
    for table, spec in doc["tables"].items():
        columns: dict[str, Any] = {}
        for name, column in spec["columns"].items():
            ctype = column["type"]
            if isinstance(ctype, str) or ("value" not in ctype and ctype.get("min", 1) == 1):
                key = ctype if isinstance(ctype, str) else ctype["key"]
                atom = key if isinstance(key, str) else key["type"]
                columns[name] = {"integer": 0, "string": "", "boolean": False, "real": 0.0}.get(
                    atom
                )
            elif "value" in ctype:
                columns[name] = FrozenMap()
            elif ctype.get("max", 1) == 1:
                columns[name] = None
            else:
                columns[name] = frozenset()
        out[table] = columns
    return out


class Db:
    """Rows of one database, edited freely or by transactions of ops (as daemons send
    them), frozen into a Snapshot on demand. Row UUIDs are deterministic (a counter), so
    tests that iterate rows behave the same on every run."""

    def __init__(self, schema_path: Path, name: str = "db") -> None:
        self.defaults = _defaults(schema_path)
        self.tables: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}
        self._namespace = uuid.uuid5(uuid.NAMESPACE_OID, name)
        self._next = 0
        self.version = 0  # bumped by every write
        self._frozen: dict[str, dict[uuid.UUID, Row]] = {}
        self._stale: set[tuple[str, uuid.UUID]] | None = None  # None: all
        self._snapshot: Snapshot | None = None

    def new_uuid(self) -> uuid.UUID:
        self._next += 1
        return uuid.uuid5(self._namespace, str(self._next))

    def _touch(self, table: str, row_uuid: uuid.UUID) -> None:
        self.version += 1
        self._snapshot = None
        if self._stale is not None:
            self._stale.add((table, row_uuid))

    def insert(self, table: str, **values: Any) -> uuid.UUID:
        row_uuid = self.new_uuid()
        self.tables.setdefault(table, {})[row_uuid] = {**self.defaults[table], **values}
        self._touch(table, row_uuid)
        return row_uuid

    def find(self, table: str, **equals: Any) -> uuid.UUID:
        for row_uuid, data in self.tables.get(table, {}).items():
            if all(data[k] == v for k, v in equals.items()):
                return row_uuid
        raise KeyError(f"{table} {equals}")

    def rows(self, table: str) -> dict[uuid.UUID, dict[str, Any]]:
        return self.tables.get(table, {})

    def update(self, table: str, row_uuid: uuid.UUID, **values: Any) -> None:
        self.tables[table][row_uuid].update(values)
        self._touch(table, row_uuid)

    def delete(self, table: str, row_uuid: uuid.UUID) -> None:
        del self.tables[table][row_uuid]
        self._touch(table, row_uuid)

    def transact(self, ops: Iterable[Op]) -> dict[str, uuid.UUID]:
        """Applies ops as a server would (inserted rows by their Ref names are returned);
        a row an op names that does not exist raises KeyError, like a server's error."""
        names: dict[str, uuid.UUID] = {}
        ops = list(ops)
        for op in ops:  # references to rows inserted in the same transaction
            if isinstance(op, Insert) and op.name is not None:
                names[op.name] = self.new_uuid()

        def resolve(value: Any) -> Any:
            if isinstance(value, Ref):
                return names[value.name]
            if isinstance(value, list | tuple | set | frozenset):
                return frozenset(resolve(v) for v in value)
            if isinstance(value, Mapping):
                return FrozenMap({k: resolve(v) for k, v in value.items()})
            return value

        for op in ops:
            if isinstance(op, Update | Delete | Mutate):
                self._touch(op.table, op.uuid)
            if isinstance(op, Insert):
                row_uuid = names[op.name] if op.name is not None else self.new_uuid()
                self._touch(op.table, row_uuid)
                values = {k: resolve(v) for k, v in op.values.items()}
                self.tables.setdefault(op.table, {})[row_uuid] = {
                    **self.defaults[op.table],
                    **values,
                }
            elif isinstance(op, Update):
                row = self.tables[op.table][op.uuid]
                row.update({k: resolve(v) for k, v in op.values.items()})
            elif isinstance(op, Delete):
                del self.tables[op.table][op.uuid]
            elif isinstance(op, Mutate):
                row = self.tables[op.table][op.uuid]
                current = row[op.column]
                if op.op == "add":
                    row[op.column] = frozenset(current) | {resolve(op.key)}
                elif op.op == "remove":
                    row[op.column] = frozenset(current) - {resolve(op.key)}
                elif op.op == "setkey":
                    row[op.column] = FrozenMap({**current, op.key: resolve(op.value)})
                elif op.op == "delkey":
                    row[op.column] = FrozenMap({k: v for k, v in current.items() if k != op.key})
                else:
                    raise ValueError(f"unknown mutation {op.op}")
            elif isinstance(op, Verify):
                self.tables[op.table][op.uuid]
        return names

    def snapshot(self, **kwargs: Any) -> Snapshot:
        """The rows as a client would see them; rows not written since the last snapshot
        keep their Row objects (as the OVSDB client keeps them)."""
        if self._snapshot is not None and not kwargs:
            return self._snapshot
        if self._stale is None:
            self._frozen = {
                table: {u: _row(table, u, data) for u, data in rows.items()}
                for table, rows in self.tables.items()
            }
        else:
            for table, row_uuid in self._stale:
                frozen = self._frozen.setdefault(table, {})
                data = self.tables.get(table, {}).get(row_uuid)
                if data is None:
                    frozen.pop(row_uuid, None)
                else:
                    frozen[row_uuid] = _row(table, row_uuid, data)
        self._stale = set()
        tables = {table: dict(rows) for table, rows in self._frozen.items()}
        snap = Snapshot(self.version, tables, connected=True, **kwargs)
        if not kwargs:
            self._snapshot = snap
        return snap


def changed_between(old: Snapshot | None, new: Snapshot) -> dict[str, frozenset[uuid.UUID]] | None:
    """The rows that differ between two snapshots, per table (None: no old snapshot), as a
    client's change events would have said."""
    if old is None:
        return None
    out: dict[str, frozenset[uuid.UUID]] = {}
    for table in {*old._tables, *new._tables}:
        before, after = old.table(table), new.table(table)
        changed = frozenset(
            u for u in before.keys() | after.keys() if before.get(u) != after.get(u)
        )
        if changed:
            out[table] = changed
    return out


def _row(table: str, row_uuid: uuid.UUID, data: dict[str, Any]) -> Row:
    return Row(row_uuid, table, FrozenMap({k: _freeze(v) for k, v in data.items()}))


def _freeze(value: Any) -> Any:
    if isinstance(value, set | list | tuple):
        return frozenset(value)
    if isinstance(value, dict):
        return FrozenMap(value)
    return value
