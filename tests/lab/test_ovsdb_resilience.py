"""The OVSDB client against real ovsdb-servers when things move: reconnects (resumed with
monitor_cond_since, or reloaded), conditions across them, a Raft cluster losing its leader,
relays, locks, TLS and RBAC, and a transaction whose reply is lost."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liveport.lab.lab import cluster_leader
from liveport.lab.secure import free_ports, wait_listening
from liveport.model.errors import Timeout
from liveport.model.security import CHASSIS_ROLE
from liveport.ovsdb import rbac, schema, server
from liveport.ovsdb.client import OvsdbClient, TxnError, configure_tls, fetch_schema
from liveport.ovsdb.rows import Change, Delete, Insert, Snapshot, Update
from liveport.runtime import pki
from liveport.runtime.process import stop_daemons

pytestmark = pytest.mark.lab

SB = schema.SB_NAME
DP = {"Datapath_Binding": None}

ServerFactory = Callable[..., server.ServerSpec]


@pytest.fixture
def servers(short_tmp: Path) -> Iterator[ServerFactory]:
    """servers(name, **spec options) -> a started ovsdb-server of the SB; all stopped."""
    started: list[server.ServerSpec] = []

    def start(name: str, **options: object) -> server.ServerSpec:
        spec = server.ServerSpec(name, short_tmp / name, schema.southbound_path(), **options)  # type: ignore[arg-type]
        started.append(spec)
        server.start(spec)
        return spec

    yield start
    stop_daemons([spec.daemon(spec.name, str(short_tmp)) for spec in reversed(started)])


def appctl(spec: server.ServerSpec, *command: str) -> str:
    return server.run_tool(["ovs-appctl", "-t", str(spec.ctl), *command])


def names(snap: Snapshot) -> set[str]:
    return {row["name"] for row in snap.rows("Datapath_Binding")}


def datapaths(*wanted: str, first_key: int = 1) -> list[Insert]:
    return [
        Insert("Datapath_Binding", {"tunnel_key": first_key + i, "name": name})
        for i, name in enumerate(wanted)
    ]


@contextlib.contextmanager
def unreachable(spec: server.ServerSpec) -> Iterator[None]:
    """Closes the server's main unix socket (and the sessions on it) for a while; its other
    remotes stay."""
    appctl(spec, "ovsdb-server/remove-remote", f"punix:{spec.socket}")
    try:
        yield
    finally:
        appctl(spec, "ovsdb-server/add-remote", f"punix:{spec.socket}")


def test_a_reconnect_resumes_with_only_what_changed(
    servers: ServerFactory, short_tmp: Path
) -> None:
    # A clustered database (even of one member) keeps a transaction history to resume from.
    sb = servers(
        "sb", raft=f"unix:{short_tmp}/sb/sb.raft", extra_remotes=(f"punix:{short_tmp}/w.sock",)
    )
    with (
        OvsdbClient(sb.remote, SB, DP) as reader,
        OvsdbClient(f"unix:{short_tmp}/w.sock", SB, DP) as writer,
    ):
        writer.wait_connected(10)
        writer.transact(datapaths(*(f"dp{i}" for i in range(50))))
        reader.wait_until(lambda s: len(s.table("Datapath_Binding")) == 50, timeout=10)
        # The server keeps a history of at most as many values as the database holds:
        # resuming from a small transaction survives the big one leaving the history.
        dp1 = reader.snapshot().lookup("Datapath_Binding", "name", "dp1")[0]
        writer.transact([Update("Datapath_Binding", dp1.uuid, {"external_ids": {"n": "1"}})])
        reader.wait_until(
            lambda s: s.table("Datapath_Binding")[dp1.uuid]["external_ids"], timeout=5
        )
        events: queue.SimpleQueue[Change] = queue.SimpleQueue()
        reader.add_listener(events.put).result(5)
        assert events.get(timeout=5).reloaded  # the listener's first view
        with unreachable(sb):
            reader.wait_until(lambda s: not s.connected, timeout=10, what="the disconnect")
            old = next(r for r in writer.snapshot().rows("Datapath_Binding") if r["name"] == "dp0")
            writer.transact(
                [*datapaths("late", first_key=100), Delete("Datapath_Binding", old.uuid)]
            )
        snap = reader.wait_until(lambda s: s if s.connected else None, timeout=20)
        assert names(snap) == {f"dp{i}" for i in range(1, 50)} | {"late"}
        seen: list[Change] = []
        while not events.empty():
            seen.append(events.get())
        assert not any(change.reloaded for change in seen)
        # What changed while we were away, and nothing else, is reported.
        late = snap.one("Datapath_Binding", name="late")
        assert late is not None
        assert set().union(*(c.changed.get("Datapath_Binding", ()) for c in seen)) == {
            late.uuid,
            old.uuid,
        }


def test_a_server_restart_reloads_everything(servers: ServerFactory, short_tmp: Path) -> None:
    sb = servers("sb")
    with OvsdbClient(sb.remote, SB, DP) as client:
        client.wait_connected(10)
        client.transact(datapaths("stays", "goes"))
        gone = client.wait_until(lambda s: s.one("Datapath_Binding", name="goes"), timeout=5)
        events: queue.SimpleQueue[Change] = queue.SimpleQueue()
        client.add_listener(events.put).result(5)
        stop_daemons([sb.daemon("sb", str(short_tmp))])
        client.wait_until(lambda s: not s.connected, timeout=10, what="the disconnect")
        # A standalone server keeps no history: whatever happened meanwhile, all is reloaded.
        delete = {"op": "delete", "table": "Datapath_Binding", "where": [["name", "==", "goes"]]}
        server.run_tool(["ovsdb-tool", "transact", str(sb.db_file), json.dumps([SB, delete])])
        server.start(sb)
        snap = client.wait_until(lambda s: s if s.connected else None, timeout=20)
        assert names(snap) == {"stays"}
        changes = []
        while not events.empty():
            changes.append(events.get())
        reload = next(c for c in changes if c.reloaded and c.snapshot.connected)
        assert gone.uuid in reload.changed["Datapath_Binding"]


def test_conditions_are_kept_across_reconnects(servers: ServerFactory, short_tmp: Path) -> None:
    sb = servers(
        "sb", raft=f"unix:{short_tmp}/sb/sb.raft", extra_remotes=(f"punix:{short_tmp}/w.sock",)
    )
    only_a = [["name", "==", "a"]]
    with (
        OvsdbClient(f"unix:{short_tmp}/w.sock", SB, DP) as writer,
        OvsdbClient(sb.remote, SB, DP, conditions={"Datapath_Binding": only_a}) as reader,
    ):
        writer.wait_connected(10)
        writer.transact(datapaths("a", "b", "c"))
        snap = reader.wait_until(lambda s: s if names(s) == {"a"} else None, timeout=10)
        assert snap.condition_applied("Datapath_Binding", only_a)
        seqno = snap.cond_seqno

        only_b = [["name", "==", "b"]]
        reader.set_condition("Datapath_Binding", only_b)
        snap = reader.wait_until(
            lambda s: s if s.condition_applied("Datapath_Binding", only_b) else None, timeout=10
        )
        assert names(snap) == {"b"} and snap.cond_seqno > seqno
        assert not snap.condition_applied("Datapath_Binding", only_a)

        # Asked while disconnected (and the data moved meanwhile): applied once back.
        b_c_or_d = [["name", "==", "b"], ["name", "==", "c"], ["name", "==", "d"]]
        b = writer.wait_until(lambda s: s.one("Datapath_Binding", name="b"), timeout=5)
        with unreachable(sb):
            reader.wait_until(lambda s: not s.connected, timeout=10, what="the disconnect")
            reader.set_condition("Datapath_Binding", b_c_or_d)
            writer.transact([Delete("Datapath_Binding", b.uuid), *datapaths("d", first_key=10)])
        snap = reader.wait_until(
            lambda s: (
                s if s.connected and s.condition_applied("Datapath_Binding", b_c_or_d) else None
            ),
            timeout=20,
        )
        assert names(snap) == {"c", "d"}

        # [] selects nothing; it survives a reconnect too.
        reader.set_condition("Datapath_Binding", [])
        reader.wait_until(lambda s: s.condition_applied("Datapath_Binding", []), timeout=10)
        reader.force_reconnect()
        snap = reader.wait_until(
            lambda s: s if s.connected and s.condition_applied("Datapath_Binding", []) else None,
            timeout=20,
        )
        assert not snap.table("Datapath_Binding")


def cluster(servers: ServerFactory, short_tmp: Path, size: int) -> list[server.ServerSpec]:
    raft = [f"unix:{short_tmp}/sb{i}/sb{i}.raft" for i in range(1, size + 1)]
    return [
        servers(f"sb{i}", raft=raft[i - 1], join=tuple(raft[: i - 1])) for i in range(1, size + 1)
    ]


def wait_leader(
    members: list[server.ServerSpec], not_this: server.ServerSpec | None = None
) -> server.ServerSpec:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leader = cluster_leader(members, SB)
        if leader is not None and leader != not_this:
            return leader
        time.sleep(0.1)
    raise Timeout("no Raft leader")


@pytest.mark.slow
def test_a_leader_only_client_follows_the_raft_leader(
    servers: ServerFactory, short_tmp: Path
) -> None:
    members = cluster(servers, short_tmp, 3)
    leader = wait_leader(members)
    followers = [m for m in members if m != leader]
    remotes = ",".join(m.remote for m in members)
    with OvsdbClient(remotes, SB, DP, schema=schema.southbound_path()) as client:
        client.wait_connected(30)
        client.transact(datapaths("before"))
        client.wait_until(lambda s: s.one("Datapath_Binding", name="before"), timeout=10)

        # Only a follower to talk to: a leader-only client does not settle for it.
        with (
            OvsdbClient(followers[0].remote, SB, DP, schema=schema.southbound_path()) as picky,
            pytest.raises(Timeout),
        ):
            picky.wait_connected(3)
        with OvsdbClient(
            followers[0].remote, SB, DP, schema=schema.southbound_path(), leader_only=False
        ) as anyone:
            anyone.wait_until(lambda s: s.one("Datapath_Binding", name="before"), timeout=10)

        stop_daemons([leader.daemon(leader.name, str(short_tmp))])
        new_leader = wait_leader(followers)
        # Sent at once: it waits for the client to find the new leader, then succeeds.
        client.transact(datapaths("after", first_key=2), timeout=60)
        assert client.snapshot().connected
        status = client.server_status().result(5)
        assert status == {
            "remote": new_leader.remote,
            "connected": True,
            "model": "clustered",
            "leader": True,
        }
        assert cluster_leader(followers, SB) == new_leader
        assert names(client.snapshot()) == {"before", "after"}


def test_a_relay_serves_clients_that_do_not_need_the_leader(servers: ServerFactory) -> None:
    sb = servers("sb")
    relay = servers("relay", relay=sb.remote, database=SB)
    with OvsdbClient(sb.remote, SB, DP) as direct:
        direct.wait_connected(10)
        direct.transact(datapaths("seen"))
    with OvsdbClient(relay.remote, SB, DP, leader_only=False) as agent:
        agent.wait_until(lambda s: s.one("Datapath_Binding", name="seen"), timeout=10)
        # Transactions go through the relay to its source.
        agent.transact(datapaths("written", first_key=2))
        agent.wait_until(lambda s: s.one("Datapath_Binding", name="written"), timeout=10)
        status = agent.server_status().result(5)
        assert (status["model"], status["connected"], "leader" in status) == ("relay", True, False)
    with (
        OvsdbClient(relay.remote, SB, DP, schema=schema.southbound_path()) as northd,
        pytest.raises(Timeout),  # a relay is no leader
    ):
        northd.wait_connected(3)


def test_a_lock_passes_on_and_only_its_holder_writes(servers: ServerFactory) -> None:
    sb = servers("sb")
    first = OvsdbClient(sb.remote, SB, DP, lock="liveport_test", name="first")
    try:
        first.wait_until(lambda s: s.connected and s.has_lock, timeout=10, what="the lock")
        with OvsdbClient(sb.remote, SB, DP, lock="liveport_test", name="second") as second:
            snap = second.wait_connected(10)
            assert not snap.has_lock
            with pytest.raises(TxnError, match="does not hold the lock") as refused:
                second.transact(datapaths("nope"))
            assert refused.value.status == "not locked"
            first.transact(datapaths("by-first"))
            first.close()  # its session ends: the server gives the lock to the next waiter
            second.wait_until(lambda s: s.has_lock, timeout=10, what="the lock to pass on")
            second.transact(datapaths("by-second", first_key=2))
            snap = second.wait_until(
                lambda s: s if s.one("Datapath_Binding", name="by-second") else None, timeout=10
            )
            assert names(snap) == {"by-first", "by-second"}
    finally:
        first.close()


def test_tls(servers: ServerFactory, short_tmp: Path) -> None:
    root = short_tmp / "pki"
    pki.init(root)
    server_creds = pki.issue(root, "server", "sb")
    client_creds = pki.issue(root, "cms", "cms")
    (port,) = free_ports(1)
    sb = servers(
        "sb",
        extra_remotes=(f"pssl:{port}:127.0.0.1",),
        options=(
            f"--private-key={server_creds.private_key}",
            f"--certificate={server_creds.certificate}",
            f"--ca-cert={server_creds.ca_cert}",
        ),
    )
    wait_listening([port], timeout=10)
    configure_tls(
        client_creds.private_key, client_creds.certificate, client_creds.ca_cert, replace=True
    )
    remote = f"ssl:127.0.0.1:{port}"
    fetched = fetch_schema(remote, SB)
    assert fetched.name == SB and "Port_Binding" in fetched.tables
    with OvsdbClient(remote, SB, DP, schema=fetched) as client:
        client.wait_connected(10)
        client.transact(datapaths("over-tls"))
        client.wait_until(lambda s: s.one("Datapath_Binding", name="over-tls"), timeout=10)
    with OvsdbClient(sb.remote, SB, DP) as local:
        assert names(local.wait_connected(10)) == {"over-tls"}


def test_rbac_refusals_are_reported(servers: ServerFactory, short_tmp: Path) -> None:
    """A chassis over TLS writes its own rows (inserted with the UUIDs the client chose)
    and is refused the others, with the server's reason."""
    root = short_tmp / "pki"
    pki.init(root)
    server_creds = pki.issue(root, "server", "sb")
    chassis = pki.issue(root, "chassis", "hv1")
    (port,) = free_ports(1)
    sb = servers(
        "sb",
        db_remotes=(f"db:{SB},SB_Global,chassis_connections",),
        options=(
            f"--private-key={server_creds.private_key}",
            f"--certificate={server_creds.certificate}",
            f"--ca-cert={root / 'chassis-ca.pem'}",  # a chassis listener trusts chassis
        ),
    )
    with OvsdbClient(sb.remote, SB, rbac.SETUP_TABLES) as operator:
        listener = {f"pssl:{port}:127.0.0.1": CHASSIS_ROLE}
        operator.transact(rbac.setup_operations(operator.wait_connected(10), listener)[0])
    wait_listening([port], timeout=10)
    configure_tls(chassis.private_key, chassis.certificate, chassis.ca_cert, replace=True)
    own = {"hostname": "hv1", "encap_type": "geneve", "encap_ip": "192.0.2.1"}
    with OvsdbClient(f"ssl:127.0.0.1:{port}", SB, {"Chassis": None}) as hv1:
        hv1.wait_connected(10)
        inserted = hv1.transact([Insert("Chassis", {"name": "hv1", **own}, name="me")])
        me = hv1.wait_until(lambda s: s.one("Chassis", name="hv1"), timeout=10)
        assert me.uuid == inserted.inserted["me"]
        hv1.transact([Update("Chassis", me.uuid, {"encap_ip": "192.0.2.9"})])
        with pytest.raises(TxnError, match=r"permission error: .*hv1.*Chassis") as refused:
            hv1.transact([Insert("Chassis", {"name": "hv2", **own})])
        assert refused.value.status == "error"


class ReplyEater:
    """A unix-socket proxy in front of a server that, once armed, passes the next
    transaction to the server and then cuts the connection before the reply comes back."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.target = str(target)
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(listen))
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.sock.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.target)
        eating = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, upward: bool) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    if not upward and eating.is_set():
                        continue
                    if upward and self.armed.is_set() and b'"transact"' in data:
                        self.armed.clear()
                        eating.set()  # nothing more reaches the client...
                        dst.sendall(data)
                        time.sleep(0.5)  # ...while the server commits and replies
                        self.cut.set()
                        break
                    dst.sendall(data)
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    def arm(self) -> None:
        self.cut.clear()
        self.armed.set()

    def close(self) -> None:
        self.sock.close()


def test_a_transaction_whose_reply_is_lost_is_applied_once(
    servers: ServerFactory, short_tmp: Path
) -> None:
    sb = servers("sb")
    eater = ReplyEater(short_tmp / "proxy.sock", sb.socket)
    try:
        with OvsdbClient(f"unix:{short_tmp}/proxy.sock", SB, DP) as client:
            client.wait_connected(10)
            eater.arm()
            result = client.transact(
                [Insert("Datapath_Binding", {"tunnel_key": 1, "name": "once"}, name="dp")],
                timeout=60,
            )
            assert eater.cut.is_set()  # the first attempt's reply never came
            snap = client.wait_until(lambda s: s if s.connected else None, timeout=10)
            rows = snap.find("Datapath_Binding", name="once")
            assert [r.uuid for r in rows] == [result.inserted["dp"]]

            # A Delete whose reply is lost: the row is gone, which is what was asked.
            eater.arm()
            client.transact([Delete("Datapath_Binding", rows[0].uuid)], timeout=60)
            assert eater.cut.is_set()
            client.wait_until(lambda s: s.connected and not s.table("Datapath_Binding"), timeout=10)
    finally:
        eater.close()
