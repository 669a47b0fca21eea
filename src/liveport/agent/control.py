"""The agent's control commands (on top of runtime.control's built-in ones):

- `connection-status`: the local Open_vSwitch database and the SB (server, monitoring,
  model, leader), and the OpenFlow connection to the bridge.
- `recompute`: the next pass looks at everything (both databases read whole, every port
  compiled again and diffed against what is installed).
- `port/list`: the ports with a role on this chassis.
- `port/show PORT`: a port's role here, its binding as the SB says, this chassis' claim,
  its migration, the flows installed for it by table, and its learned flows (dumped from
  the switch).

Concurrency model: handlers run on the control thread. The agent's memory is an immutable
value, read with one attribute access; database snapshots too. What only the event loop
may touch (the OpenFlow connection) is handed to it and awaited with a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Sequence
from typing import Any

from liveport.agent.agent import Agent
from liveport.agent.observe import RECOMPUTES, migration_id
from liveport.model import cookies
from liveport.model.binding import LocalRole
from liveport.model.cookies import Kind
from liveport.model.errors import LiveportError
from liveport.ovsdb.status import database_status, render_database
from liveport.runtime.control import CommandError, ControlServer, Reply

LOOP_TIMEOUT = 2.0  # seconds the event loop has to answer a command


def register(control: ControlServer, agent: Agent, loop: asyncio.AbstractEventLoop) -> None:
    def connection_status(args: Sequence[str]) -> Reply:
        docs: list[dict[str, Any]] = []
        lines = []
        for name, client in (("ovs", agent.ovs), ("sb", agent.sb)):
            if client is None:
                doc: dict[str, Any] = {"db": name, "connected": False, "remote": "not yet"}
                lines.append(f"{name}: not connected yet")
            else:
                doc = database_status(name, client)
                lines.append(render_database(doc))
            docs.append(doc)
        of = agent.of
        connected = of is not None and not of.closed
        path = agent.mgmt_socket if agent.identity is not None else agent.config.mgmt_socket
        dropped = of.dropped_packet_ins if of is not None else 0
        docs.append({"db": "openflow", "connected": connected, "remote": path, "dropped": dropped})
        lines.append(
            f"openflow: {'connected' if connected else 'NOT connected'} to {path or 'unknown'}"
            f" ({dropped} packet-ins dropped)"
        )
        return Reply("\n".join(lines), docs)

    def recompute(args: Sequence[str]) -> Reply:
        RECOMPUTES.inc()
        agent.recompute()
        return Reply("", {"recompute": "scheduled"})

    def port_list(args: Sequence[str]) -> Reply:
        memory = agent.memory
        roles = dict(memory.roles) if memory is not None else {}
        docs = [{"port": name, "role": str(role)} for name, role in sorted(roles.items())]
        text = "\n".join(f"{d['port']:<20} {d['role']}" for d in docs) or "no port here"
        return Reply(text, docs)

    def port_show(args: Sequence[str]) -> Reply:
        name = args[0]
        memory = agent.memory
        if memory is None:
            raise CommandError("the agent is starting: no memory yet")
        view = memory.ports.get(name)
        role = memory.roles.get(name, LocalRole.NONE)
        if view is None and name not in memory.vifs and name not in memory.claims:
            raise CommandError(f"port {name} is not known on this chassis")
        claim = memory.claims.get(name)
        compiled = memory.table.ports.get(name)
        by_table = Counter(f.table for f in compiled.flows) if compiled is not None else Counter()
        doc: dict[str, Any] = {
            "port": name,
            "role": str(role),
            "vif": name in memory.vifs,
            "binding": None
            if view is None
            else {
                "datapath": view.dp_key,
                "key": view.key,
                "owner": view.owner,
                "destination": view.destination,
                "migration_state": str(view.migration_state) if view.migration_state else None,
            },
            "claim": None
            if claim is None
            else {
                "uuid": str(claim.uuid),
                "role": claim["role"],
                "installed": claim["installed"],
                "activated": claim["activated"],
            },
            "migration": migration_id(memory, name),
            "activated_here": name in memory.activated,
            "flows": {str(t): n for t, n in sorted(by_table.items())},
            "learned": learned(view.dp_key, view.key) if view is not None else [],
        }
        return Reply(render_port(doc), doc)

    def learned(dp_key: int, port_key: int) -> list[str] | str:
        """The port's learned flows in the switch, dumped on the event loop."""
        of = agent.of
        if of is None or of.closed:
            return "unknown (no OpenFlow connection)"
        future = asyncio.run_coroutine_threadsafe(
            of.dump_flows(*cookies.owned_by(Kind.LEARNED, dp_key, port_key), timeout=LOOP_TIMEOUT),
            loop,
        )
        try:
            flows = future.result(timeout=LOOP_TIMEOUT + 0.5)
        except (concurrent.futures.TimeoutError, LiveportError) as exc:
            future.cancel()
            return f"unknown ({exc or 'no answer'})"
        return [str(f) for f in flows.flows.values()]

    control.register("connection-status", "", 0, 0, connection_status)
    control.register("recompute", "", 0, 0, recompute)
    control.register("port/list", "", 0, 0, port_list)
    control.register("port/show", "PORT", 1, 1, port_show)


def render_port(doc: dict[str, Any]) -> str:
    lines = [f"port {doc['port']}: role {doc['role']}, VIF {'here' if doc['vif'] else 'not here'}"]
    binding = doc["binding"]
    if binding is not None:
        state = binding["migration_state"] or "-"
        lines.append(
            f"  binding: datapath {binding['datapath']} key {binding['key']}, owner "
            f"{binding['owner'] or '-'}, destination {binding['destination'] or '-'}, "
            f"migration {state}"
        )
    claim = doc["claim"]
    if claim is not None:
        lines.append(
            f"  claim {claim['uuid'][:8]}: role {claim['role']}, installed "
            f"{claim['installed'] or '-'}, activated {claim['activated'] or '-'}"
        )
    if doc["migration"]:
        lines.append(f"  migration {doc['migration']}")
    flows = doc["flows"]
    total = sum(flows.values())
    per_table = ", ".join(f"table {t}: {n}" for t, n in flows.items())
    lines.append(f"  flows installed: {total}" + (f" ({per_table})" if per_table else ""))
    learned = doc["learned"]
    if isinstance(learned, str):
        lines.append(f"  learned flows: {learned}")
    else:
        lines.append(f"  learned flows: {len(learned)}")
        lines += [f"    {flow}" for flow in learned]
    return "\n".join(lines)
