"""A database client's connection as an operator wants to see it (`connection-status`).

Concurrency model: called from any thread; the client's owner thread answers with what it
knows of its connection (a future), within ASK_TIMEOUT or reported as unknown.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from liveport.ovsdb.client import ClientClosed, OvsdbClient

ASK_TIMEOUT = 1.0  # seconds a database client's owner thread has to answer


def database_status(name: str, client: OvsdbClient) -> dict[str, Any]:
    """One database's connection, as the client's owner thread sees it."""
    doc: dict[str, Any] = {"db": name, "remotes": client.remote}
    try:
        doc.update(client.server_status().result(timeout=ASK_TIMEOUT))
    except (concurrent.futures.TimeoutError, ClientClosed):
        doc["connected"] = client.snapshot().connected
        doc["remote"] = "unknown (the client did not answer)"
    return doc


def render_database(doc: dict[str, Any]) -> str:
    state = "connected" if doc.get("connected") else "NOT connected"
    where = doc.get("remote") or doc["remotes"]
    model = doc.get("model")
    details = []
    if model:
        details.append(model)
    if "leader" in doc:
        details.append("leader" if doc["leader"] else "follower")
    suffix = f" ({', '.join(details)})" if details else ""
    line = f"{doc['db']}: {state} to {where}{suffix}"
    if "lock" in doc:
        line += f"; lock {doc['lock']}: {'held' if doc['lock_held'] else 'not held'}"
    return line
