"""ovsdb-server processes: create a database file from a schema and serve it.

A ServerSpec says where everything lives (all paths inside one directory). Standalone
databases are created with `ovsdb-tool create`; clustered members (created with
create-cluster / join-cluster) use the same spec with a cluster role, so callers do not care
which they got.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from liveport.model.errors import LiveportError
from liveport.runtime.process import DaemonRef, spawn_ovs_daemon

# Unix socket paths are limited to 108 bytes (sun_path); leave room for OVS's suffixes.
MAX_SOCKET_PATH = 100


class ServerError(LiveportError):
    pass


@dataclass(frozen=True)
class ServerSpec:
    """One ovsdb-server serving one database file, everything under `directory`."""

    name: str  # short name used for files: nb, sb, conf ...
    directory: Path
    schema: Path
    extra_remotes: tuple[str, ...] = ()
    # Remotes read from the database itself, e.g. "db:Liveport_Southbound,SB_Global,connections".
    db_remotes: tuple[str, ...] = ()
    options: tuple[str, ...] = field(default=())
    # Clustered member: its Raft address (unix:... or tcp:/ssl:IP:PORT) and, to join an
    # existing cluster rather than create one, the Raft addresses of members already in it.
    raft: str | None = None
    join: tuple[str, ...] = ()
    # Relay: serves `database` from these source remotes (comma-separated) instead of a file.
    relay: str | None = None
    database: str = ""
    # Listeners of this process alone: (target, role) pairs, e.g. ("pssl:6644:127.0.0.1",
    # "liveport-control"), served from its own Liveport_Listeners database.
    listeners: tuple[tuple[str, str], ...] = ()

    @property
    def clustered(self) -> bool:
        return self.raft is not None

    @property
    def db_file(self) -> Path:
        return self.directory / f"{self.name}.db"

    @property
    def listeners_file(self) -> Path:
        return self.directory / f"{self.name}-listeners.db"

    @property
    def socket(self) -> Path:
        return self.directory / f"{self.name}.sock"

    @property
    def remote(self) -> str:
        return f"unix:{self.socket}"

    @property
    def ctl(self) -> Path:
        return self.directory / f"{self.name}.ctl"

    @property
    def pidfile(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    def daemon(self, role: str, marker: str) -> DaemonRef:
        return DaemonRef(role=role, pidfile=self.pidfile, marker=marker)


def check_socket_path(path: Path) -> None:
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ServerError(
            f"socket path {path} is {len(str(path))} bytes; unix sockets allow at most "
            f"{MAX_SOCKET_PATH} here (use a shorter directory)"
        )


def create_db(spec: ServerSpec) -> None:
    """Creates the database file: standalone, the first member of a new cluster, or a
    member that joins the cluster at spec.join (it fetches the data when it starts). A
    relay has no file."""
    spec.directory.mkdir(parents=True, exist_ok=True)
    if spec.relay is not None or spec.db_file.exists():
        return
    if spec.raft is None:
        run_tool(["ovsdb-tool", "create", str(spec.db_file), str(spec.schema)])
    elif not spec.join:
        run_tool(["ovsdb-tool", "create-cluster", str(spec.db_file), str(spec.schema), spec.raft])
    else:
        name = spec.database or schema_name(spec.schema)
        run_tool(["ovsdb-tool", "join-cluster", str(spec.db_file), name, spec.raft, *spec.join])


LISTENERS_NAME = "Liveport_Listeners"
LISTENERS_REMOTE = f"db:{LISTENERS_NAME},Listeners,connections"


def listeners_schema() -> Path:
    return Path(str(resources.files("liveport.ovsdb") / "schemas" / "liveport_listeners.ovsschema"))


def create_listeners(spec: ServerSpec) -> None:
    """Writes the process' own listener database afresh (the process is not running)."""
    spec.listeners_file.unlink(missing_ok=True)
    run_tool(["ovsdb-tool", "create", str(spec.listeners_file), str(listeners_schema())])
    ops: list[object] = [LISTENERS_NAME]
    names = []
    for i, (target, role) in enumerate(spec.listeners):
        names.append(["named-uuid", f"c{i}"])
        row = {"target": target, "role": role}
        ops.append({"op": "insert", "table": "Connection", "row": row, "uuid-name": f"c{i}"})
    ops.append({"op": "insert", "table": "Listeners", "row": {"connections": ["set", names]}})
    run_tool(["ovsdb-tool", "transact", str(spec.listeners_file), json.dumps(ops)])


def schema_name(path: Path) -> str:
    try:
        return str(json.loads(path.read_text())["name"])
    except (OSError, ValueError, KeyError) as exc:
        raise ServerError(f"cannot read the schema name from {path}: {exc}") from None


def cluster_status(ctl: Path, database: str) -> dict[str, str]:
    """`cluster/status` of one member as a dict ("Role": "leader", "Term": "3", ...)."""
    text = run_tool(["ovs-appctl", "-t", str(ctl), "cluster/status", database])
    status: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" ") and key not in status:
            status[key.strip()] = value.strip()
    return status


def run_tool(argv: Sequence[str]) -> str:
    """Runs an OVS command-line tool; raises ServerError with its last stderr line."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ServerError(f"{argv[0]} is not installed (install openvswitch-common)") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ServerError(f"{' '.join(argv[:2])}: {lines[-1] if lines else 'failed'}")
    return result.stdout


def start(spec: ServerSpec) -> int:
    """Starts ovsdb-server for spec (creating the database if needed); returns its PID."""
    check_socket_path(spec.socket)
    check_socket_path(spec.ctl)
    create_db(spec)
    if spec.relay is not None:
        source = f"relay:{spec.database or schema_name(spec.schema)}:{spec.relay}"
    else:
        source = str(spec.db_file)
    own: list[str] = []
    if spec.listeners:
        create_listeners(spec)
        own = [str(spec.listeners_file), f"--remote={LISTENERS_REMOTE}"]
    argv = [
        "ovsdb-server",
        source,
        *own[:1],
        f"--remote=punix:{spec.socket}",
        *(f"--remote={remote}" for remote in spec.extra_remotes),
        *(f"--remote={remote}" for remote in spec.db_remotes),
        *own[1:],
        f"--unixctl={spec.ctl}",
        *spec.options,
    ]
    return spawn_ovs_daemon(argv, pidfile=spec.pidfile, log_file=spec.log_file)
