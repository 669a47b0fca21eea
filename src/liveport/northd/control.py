"""northd's control commands (on top of runtime.control's built-in ones):

- `connection-status`: per database, the server it is connected to (or trying), whether
  it monitors, the server's model and, clustered, whether it is the leader; and the NB lock.
- `status`: `Status: active` (holds the NB lock and writes) or `Status: standby`, as
  ovn-northd answers.
- `recompute`: the next batch recomputes everything.

Concurrency model: handlers run on the control thread. They read database snapshots
(immutable), ask each database client's owner thread for its server (a future, answered
within a second or reported as unknown) and set northd's thread-safe recompute flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from liveport.northd.northd import NORTHD_LOCK, Northd
from liveport.ovsdb.status import database_status, render_database
from liveport.runtime.control import ControlServer, Reply


def register(control: ControlServer, northd: Northd) -> None:
    def connection_status(args: Sequence[str]) -> Reply:
        nb = database_status("nb", northd.nb)
        nb["lock"] = NORTHD_LOCK
        nb["lock_held"] = northd.nb.snapshot().has_lock
        docs = [nb, database_status("sb", northd.sb)]
        return Reply("\n".join(render_database(d) for d in docs), docs)

    def status(args: Sequence[str]) -> Reply:
        active = northd.active
        return Reply(
            f"Status: {'active' if active else 'standby'}",
            {"active": active, "identity": northd.identity},
        )

    def recompute(args: Sequence[str]) -> Reply:
        northd.recompute()
        return Reply("", {"recompute": "scheduled"})

    control.register("connection-status", "", 0, 0, connection_status)
    control.register("status", "", 0, 0, status)
    control.register("recompute", "", 0, 0, recompute)
