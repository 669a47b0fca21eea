"""In-memory databases for unit tests: rows edited freely, frozen into the same Snapshot
values the OVSDB client hands out, so pure daemon code (northd's plan, the agent's step,
doctor) runs on them without a server."""

from __future__ import annotations

import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import Row, Snapshot


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
    """Rows of one database, edited freely, frozen into a Snapshot on demand."""

    def __init__(self, schema_path: Path) -> None:
        self.defaults = _defaults(schema_path)
        self.tables: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}

    def insert(self, table: str, **values: Any) -> uuid.UUID:
        row_uuid = uuid.uuid4()
        self.tables.setdefault(table, {})[row_uuid] = {**self.defaults[table], **values}
        return row_uuid

    def find(self, table: str, **equals: Any) -> uuid.UUID:
        for row_uuid, data in self.tables.get(table, {}).items():
            if all(data[k] == v for k, v in equals.items()):
                return row_uuid
        raise KeyError(f"{table} {equals}")

    def update(self, table: str, row_uuid: uuid.UUID, **values: Any) -> None:
        self.tables[table][row_uuid].update(values)

    def delete(self, table: str, row_uuid: uuid.UUID) -> None:
        del self.tables[table][row_uuid]

    def snapshot(self) -> Snapshot:
        tables = {
            table: {
                u: Row(u, table, FrozenMap({k: _freeze(v) for k, v in data.items()}))
                for u, data in rows.items()
            }
            for table, rows in self.tables.items()
        }
        return Snapshot(1, tables, connected=True)


def _freeze(value: Any) -> Any:
    if isinstance(value, set | list | tuple):
        return frozenset(value)
    if isinstance(value, dict):
        return FrozenMap(value)
    return value
