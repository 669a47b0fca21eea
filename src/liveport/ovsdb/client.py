"""An OVSDB client with exactly one owner thread and one copy of the data.

Concurrency model: one thread (the owner) holds the JSON-RPC session and is the only code
that touches it, the rows and the protocol state. python-ovs provides the transport only
(ovs.jsonrpc.Session: connecting and reconnecting with backoff, inactivity probes, several
remotes, unix/tcp/ssl streams); the database protocol is liveport's own
(liveport.ovsdb.protocol). The owner applies each update from the server straight into
frozen Rows, publishes a new immutable Snapshot per batch of messages, tells listeners what
changed, and executes transactions submitted by other threads. Everybody else reads
Snapshots (cheap: an attribute read) and submits work through a queue; results come back as
concurrent.futures.Future objects. Listeners run on the owner thread and must only enqueue
work (STYLE.md 7).

Each row exists once in memory, as the Row the snapshots share; a new snapshot copies only
the tables whose rows changed (copy-on-write of the table's map, not of its rows). Short
strings and small sets and maps that many rows hold are stored once too, and the heap
memory freed after parsing large messages is given back to the system.

A connection goes through these steps (the owner thread's state):
1. `lock` (if the client wants one), and a monitor of the _Server database's Database row
   for this database. A clustered server that is not connected to its cluster, is behind
   what we saw already or (leader_only) is not the leader, and a relay when leader_only,
   are dropped for the next remote; so is a server that becomes so later.
2. `monitor_cond_since` (`monitor_cond` where the server lacks it) with the id of the last
   transaction we hold: the server answers with only what changed since then, or with
   everything (a reload) if it no longer knows that transaction (or never did: only
   clustered databases and relays keep a history).
3. Monitoring: update3/update2 notifications, `monitor_cond_change` for new conditions
   (acknowledged after the rows they select were sent), `locked`/`stolen`, transactions.

Transactions are sent only while monitoring, each with the rows we hold as the reference
(Verify, "does not exist"), and asserting the lock when the client has one. One whose reply
is lost in a reconnect is sent again on the new connection: its Inserts carry UUIDs chosen
here, so if the first attempt was applied the second fails with "duplicate uuid" and is
reported as the success it was; Updates and Mutates are idempotent; a Delete of a row that
is gone by then is taken as done.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import json
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import ovs.json
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from liveport.model.errors import Conflict, InvalidInput, LiveportError, Timeout
from liveport.ovsdb.protocol import (
    SERVER_DATABASE,
    ColumnSchema,
    ConditionState,
    InvalidOp,
    ProtocolError,
    RowCodec,
    Schema,
    Sharer,
    TxnOutcome,
    apply_table_update,
    build_transaction,
    judge_server,
    load_schema,
    normal_condition,
    parse_schema,
    txn_outcome,
)
from liveport.ovsdb.rows import (
    Change,
    Op,
    Row,
    Snapshot,
    TableRows,
    TxnResult,
    index_add,
    index_keys,
    index_remove,
    ops_summary,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Poll:
    """poll(2) for python-ovs's Poller. python-ovs emulates poll() with select(), which
    fails beyond 1024 descriptors. select.poll alone will not do either: its register()
    replaces a descriptor's event mask, while python-ovs registers POLLIN and POLLOUT for
    one socket separately -- a large message would then never be sent on (seen: a
    1000-row transaction hung). This keeps the union, as the emulation does."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._events: dict[int, int] = {}

    def register(self, fd: Any, events: int) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        self._events[number] = self._events.get(number, 0) | events
        self._poll.register(number, self._events[number])

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        return self._poll.poll(timeout)


if not ovs.poller._using_eventlet_green_select():  # eventlet patches select(): keep theirs
    ovs.poller.SelectPoll = _Poll

Condition = list[Any]
Listener = Callable[[Change], None]
SHARED_MEMBERS = 4  # sets and maps of at most this many members are stored once...
SHARED_ENTRIES = 4096  # ...in a table rebuilt from the rows when past this or twice its size
TRIM_AFTER = 4 << 20  # bytes of messages after which freed heap memory is given back
TRIM_DELAY = 1.0  # seconds
OP_BYTES = 300  # about what one operation of a transaction takes on the wire


def _heap_trimmer() -> Callable[[], Any] | None:
    """glibc's malloc_trim(0), where there is one. Parsing a large message (the initial
    contents) allocates many small blocks that are freed once the rows are built; glibc
    keeps such pages, so without this the process's RSS would stay at its peak."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_trim_heap = _heap_trimmer()
MAX_TXN_ATTEMPTS = 8
RECONNECT_PATIENCE = 60.0  # seconds a transaction waits for a server to talk to


class TxnError(LiveportError):
    """A transaction was refused or failed. `status`: "error" (refused: the server's reason,
    or an operation that names a row we do not hold), "try again" (retries exhausted, or no
    server in RECONNECT_PATIENCE), "not locked" (the client wants a lock it does not hold);
    `detail`: why, e.g. 'constraint violation: ...' or an RBAC 'permission error: ...'."""

    def __init__(self, status: str, detail: str) -> None:
        detail = _server_error_text(detail)
        super().__init__(f"transaction {status}: {detail}" if detail else f"transaction {status}")
        self.status = status
        self.detail = detail


def _server_error_text(detail: str) -> str:
    """Server errors come as JSON text (an error object); make them one readable line."""
    try:
        doc = json.loads(detail)
    except ValueError:
        return detail.strip()
    if isinstance(doc, dict) and "error" in doc:
        details = doc.get("details")
        return f"{doc['error']}: {details}" if details else str(doc["error"])
    return detail.strip()


class ClientClosed(LiveportError):
    pass


_tls: tuple[str, str, str] | None = None


def configure_tls(
    private_key: str | os.PathLike[str],
    certificate: str | os.PathLike[str],
    ca_cert: str | os.PathLike[str],
    *,
    replace: bool = False,
) -> None:
    """The TLS identity of this process for `ssl:` remotes.

    python-ovs keeps one identity per process (class attributes of ovs.stream.Stream), so
    a process is one principal: an agent, northd or a CMS. Configuring a second, different
    identity is refused rather than silently switching every connection to it, unless
    replace (a tool that works with one lab after another); connections already open keep
    the identity they were made with.
    """
    global _tls  # noqa: PLW0603 - python-ovs itself holds this per process
    paths = (str(private_key), str(certificate), str(ca_cert))
    for what, path in zip(("private key", "certificate", "CA certificate"), paths, strict=True):
        if not os.access(path, os.R_OK):
            raise InvalidInput(f"{what} {path} cannot be read")
    if _tls is not None and _tls != paths and not replace:
        raise Conflict(f"this process already uses the TLS identity of {_tls[1]}")
    ovs.stream.Stream.ssl_set_private_key_file(paths[0])
    ovs.stream.Stream.ssl_set_certificate_file(paths[1])
    ovs.stream.Stream.ssl_set_ca_cert_file(paths[2])
    _tls = paths


def _check_remote(remote: str) -> None:
    if any(r.startswith("ssl:") for r in remote.split(",")) and _tls is None:
        raise InvalidInput(
            f"{remote} is a TLS remote: give --private-key, --certificate and --ca-cert"
        )


def _say_goodbye(stream: Any) -> None:
    """Ends a TLS session properly (close_notify), so the server does not log every
    short-lived connection as an unexpected EOF."""
    sock = getattr(stream, "socket", None)
    if isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(0.2)
            sock.unwrap()


def _tls_error_text(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message})"
    return "TLS: " + str(exc.reason or exc).replace("_", " ").lower()


def _tls_failure(target: str) -> str:
    """Why a TLS connection to target fails, in OpenSSL's words ("" if it does not, or if
    target is not TLS). python-ovs only reports an errno; an operator needs to know whether
    the certificate was refused, expired or from the wrong CA."""
    if _tls is None or not target.startswith("ssl:"):
        return ""
    host, _, port = target[4:].rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # OVS identifies servers by CA, not by name
    try:
        context.load_verify_locations(_tls[2])
        context.load_cert_chain(_tls[1], _tls[0])
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=2) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)  # TLS 1.3: the server judges our certificate after the handshake
    except ssl.SSLError as exc:
        return _tls_error_text(exc)
    except (OSError, ValueError) as exc:
        return str(exc)
    return ""


def json_parser() -> str:
    """'C' when the ovs library parses JSON in C, 'PYTHON' otherwise (1.8-2.7x slower)."""
    return str(getattr(ovs.json, "PARSER", "PYTHON"))


def fetch_schema(remote: str, database: str, timeout: float = 10.0) -> Schema:
    """Asks the server for its schema (the server, not a file, is authoritative)."""
    _check_remote(remote)
    deadline = time.monotonic() + timeout
    remotes = _split_remotes(remote)
    last_error = "no remote given"
    while time.monotonic() < deadline:
        for target in remotes:
            try:
                error, stream = ovs.stream.Stream.open_block(
                    ovs.stream.Stream.open(target),
                    timeout=int(max(1, deadline - time.monotonic()) * 1000),
                )
            except ssl.SSLError as exc:  # python-ovs lets a refused server certificate out
                raise LiveportError(f"{target}: {_tls_error_text(exc)}") from None
            if error:
                last_error = f"{target}: {_tls_failure(target) or os.strerror(error)}"
                continue
            conn = ovs.jsonrpc.Connection(stream)
            try:
                req = ovs.jsonrpc.Message.create_request("get_schema", [database])
                error, reply = conn.transact_block(req)
            finally:
                _say_goodbye(stream)
                conn.close()
            if error:
                last_error = f"{target}: {_tls_failure(target) or os.strerror(error)}"
            elif reply.error and _not_yet_available(reply.error):
                # A cluster member still joining, or a relay not yet synced with its
                # source: another server, or this one a little later, will answer.
                last_error = f"{target}: {_server_error_text(json.dumps(reply.error))}"
            elif reply.error:
                raise LiveportError(f"{target} does not serve {database}: {reply.error}")
            else:
                return parse_schema(reply.result)
        time.sleep(0.05)
    raise Timeout(f"cannot fetch the {database} schema ({last_error})")


def _not_yet_available(error: Any) -> bool:
    return isinstance(error, Mapping) and error.get("error") == "database not available"


def _split_remotes(remote: str) -> list[str]:
    """The remotes of a comma-separated list. A piece without ':' continues the remote
    before it (a unix socket path may contain commas)."""
    remotes: list[str] = []
    for piece in remote.split(","):
        if remotes and ":" not in piece:
            remotes[-1] += "," + piece
        elif piece:
            remotes.append(piece)
    return remotes


class _State(enum.Enum):
    DISCONNECTED = "disconnected"
    SERVER_MONITOR = "asked _Server"  # waiting for the _Server monitor's reply
    DATA_MONITOR = "asked the data"  # waiting for the data monitor's reply
    MONITORING = "monitoring"


SERVER_MONITOR_ID = "liveport-server"
DATA_MONITOR_ID = "liveport-data"
NO_TXN = str(uuid.UUID(int=0))  # the last transaction id when we hold nothing
MAX_BATCH = 100  # messages handled before a snapshot is published and commands run


class OvsdbClient:
    """One connection to one database, owned by one thread.

    tables maps a table name to the columns to replicate (None: all columns).
    conditions maps a table name to an initial monitor condition (default: all rows).
    schema: the database's schema, as fetch_schema returns it, or the path of a schema
    file (default: fetched from the server).
    """

    def __init__(
        self,
        remote: str,
        database: str,
        tables: Mapping[str, Sequence[str] | None],
        *,
        schema: Schema | str | os.PathLike[str] | None = None,
        conditions: Mapping[str, Condition] | None = None,
        leader_only: bool = True,
        probe_interval_ms: int | None = None,
        lock: str | None = None,
        indexes: Mapping[str, Sequence[str]] | None = None,
        name: str = "",
    ) -> None:
        _check_remote(remote)
        self.remote = remote
        self.database = database
        self.name = name or database
        if isinstance(schema, (str, os.PathLike)):
            schema = load_schema(Path(schema))
        self._schema = schema if schema is not None else fetch_schema(remote, database)
        if self._schema.name != database:
            raise InvalidInput(f"the schema given is {self._schema.name}'s, not {database}'s")
        # Small sets and maps, each stored once, per type of their members.
        self._pools: dict[tuple[str, str | None], dict[Any, Any]] = {}
        self._pools_limit = SHARED_ENTRIES
        self._codecs = _codecs(self._schema, tables, self._sharer)
        self._conditions = {table: ConditionState() for table in self._codecs}
        for table, cond in (conditions or {}).items():
            self._check_table(table)
            self._conditions[table].want(normal_condition(cond))
        self._lock = lock
        self._leader_only = leader_only
        self._session = ovs.jsonrpc.Session.open_multiple(
            _split_remotes(remote), probe_interval=probe_interval_ms
        )
        # Connection state (owner thread only).
        self._state = _State.DISCONNECTED
        self._seqno: int | None = None  # the session's seqno of the connection we serve
        self._requests: dict[str, Any] = {}  # what -> JSON-RPC id of our request in flight
        self._server_codec = RowCodec(SERVER_DATABASE, SERVER_DATABASE.columns)
        self._server_rows: dict[uuid.UUID, Row] = {}
        self._min_index = 0
        self._last_txn = NO_TXN
        self._since = True  # the server knows monitor_cond_since
        self._has_lock = False
        self._cond_seqno = 0
        self._churn = 0  # bytes of messages parsed or built since the heap was last trimmed
        self._trim_at: float | None = None  # when to trim it
        # Data: the current tables (maps shared with the last snapshot until written).
        self._tables: dict[str, dict[uuid.UUID, Row]] = {t: {} for t in self._codecs}
        self._published: dict[str, TableRows] = dict(self._tables)
        self._copied: set[str] = set()  # tables copied since the last snapshot
        self._rebuilt: set[str] = set()  # tables replaced wholesale since then
        self._changed: dict[str, set[uuid.UUID]] = {}
        self._reloaded = False
        self._dirty = False  # anything else a snapshot shows changed
        self._indexes: dict[tuple[str, str], dict[Any, Any]] = {
            (table, column): {} for table, columns in (indexes or {}).items() for column in columns
        }
        self._snapshot = Snapshot(0, dict(self._tables), connected=False)
        self._cond = threading.Condition()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._listeners: list[Listener] = []
        self._pending: list[_PendingTxn] = []
        self._in_flight: dict[Any, _PendingTxn] = {}  # JSON-RPC id -> transaction
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ovsdb-{self.name}", daemon=True)
        self._thread.start()

    def _check_table(self, table: str) -> None:
        if table not in self._codecs:
            raise InvalidInput(f"{self.name}: table {table} is not monitored")

    # ----- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def add_listener(self, listener: Listener) -> Future[None]:
        """listener(change) runs on the owner thread after each new snapshot; keep it short.

        It is first called (on the owner thread, in order with everything else) with the
        current snapshot as a reload, so a listener added after the first fetch misses
        nothing. The returned future resolves once that has happened.
        """

        attached: Future[None] = Future()

        def attach() -> None:
            self._listeners.append(listener)
            snap = self._snapshot
            if snap.seqno > 0:
                everything = {t: frozenset(rows) for t, rows in self._published.items()}
                try:
                    listener(Change(snapshot=snap, changed=everything, reloaded=True))
                except Exception:
                    log.exception("%s: listener failed", self.name)
            attached.set_result(None)

        self._submit(attach)
        return attached

    def wait_until(
        self,
        predicate: Callable[[Snapshot], T | None],
        *,
        timeout: float,
        what: str = "a condition",
    ) -> T:
        """Returns predicate(snapshot) as soon as it is truthy; raises Timeout otherwise.

        The predicate is evaluated once per new snapshot, never by polling on a timer.
        """
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            with self._cond:
                while self._snapshot.seqno == seen and self._failure is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Timeout(f"timed out after {timeout:g}s waiting for {what}")
                    self._cond.wait(remaining)
                if self._failure is not None:
                    raise ClientClosed(f"{self.name} client failed: {self._failure}")
                snap = self._snapshot
            seen = snap.seqno
            result = predicate(snap)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise Timeout(f"timed out after {timeout:g}s waiting for {what}")

    def wait_connected(self, timeout: float) -> Snapshot:
        return self.wait_until(
            lambda s: s if s.connected else None,
            timeout=timeout,
            what=f"{self.name} at {self.remote}",
        )

    # ----- writing -------------------------------------------------------------------------

    def transact_async(self, ops: Sequence[Op], *, comment: str = "") -> Future[TxnResult]:
        future: Future[TxnResult] = Future()
        if not ops:
            future.set_result(TxnResult())
            return future
        pending = _PendingTxn(tuple(ops), comment, future)
        self._submit(lambda: self._pending.append(pending))
        return future

    def transact(self, ops: Sequence[Op], *, comment: str = "", timeout: float = 30.0) -> TxnResult:
        """Commits ops atomically; raises TxnError on refusal, Timeout if no answer came."""
        future = self.transact_async(ops, comment=comment)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise Timeout(
                f"{self.name}: no answer to a transaction ({ops_summary(ops)}) in {timeout:g}s"
            ) from None

    def set_condition(self, table: str, condition: Condition) -> None:
        """Changes what rows of table are monitored (OVSDB conditions, OR-ed; [] = none).

        Trust the table's contents again once snapshot.condition_applied(table, condition):
        the server sends the rows a new condition selects before acknowledging it.
        snapshot.cond_seqno counts the condition changes the server has acknowledged.
        """
        self._check_table(table)
        state, wanted = self._conditions[table], normal_condition(condition)

        def want() -> None:
            state.want(wanted)

        self._submit(want)

    def force_reconnect(self) -> None:
        self._submit(self._reconnect)

    def server_status(self) -> Future[dict[str, Any]]:
        """Thread-safe (answered by the owner thread): the server this client is connected
        to or trying, whether it monitors, and from the server's _Server database its model
        (standalone, clustered, relay) and, clustered, whether it is the leader."""
        answer: Future[dict[str, Any]] = Future()

        def ask() -> None:
            status: dict[str, Any] = {
                "remote": str(self._session.get_name()),
                "connected": self._state is _State.MONITORING,
            }
            for row in self._server_rows.values():  # the monitor asks for our database's only
                status["model"] = str(row["model"])
                if row["model"] == "clustered":
                    status["leader"] = bool(row["leader"])
            answer.set_result(status)

        self._submit(ask)
        return answer

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, command: Callable[[], None]) -> None:
        if self._stopping or self._failure is not None:
            raise ClientClosed(f"{self.name} client is closed")
        self._commands.put(command)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # ----- owner thread: the loop --------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            log.exception("%s: owner thread failed", self.name)
            self._failure = exc
            for pending in self._pending:
                if not pending.future.done():
                    pending.future.set_exception(ClientClosed(f"{self.name} client failed: {exc}"))
            with self._cond:
                self._cond.notify_all()
        finally:
            _say_goodbye(getattr(self._session.rpc, "stream", None))
            self._session.close()
            while not self._commands.empty():
                self._commands.get_nowait()
            for pending in self._pending:
                if not pending.future.done():
                    pending.future.set_exception(ClientClosed(f"{self.name} client closed"))

    def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass
            while not self._commands.empty():
                self._commands.get_nowait()()
            busy = self._communicate()
            self._publish()
            self._prune_shared()
            self._release_memory()
            self._advance_transactions()
            self._send_condition_changes()
            poller = ovs.poller.Poller()
            self._session.wait(poller)
            self._session.recv_wait(poller)
            self._wait_transactions(poller)
            if self._trim_at is not None:
                poller.timer_wait(max(0, int((self._trim_at - time.monotonic()) * 1000)))
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            if busy:
                poller.immediate_wake()
            poller.block()

    def _communicate(self) -> bool:
        """Runs the session and handles what the server sent (up to MAX_BATCH messages);
        True if there may be more to read."""
        gc_was_enabled = gc.isenabled()
        gc.disable()  # building many small frozen rows; GC passes here only cost time
        rpc = self._session.rpc
        received = rpc.get_received_bytes() if rpc is not None else 0
        try:
            self._session.run()
            for _ in range(MAX_BATCH):
                if not self._session.is_connected():
                    if self._state is not _State.DISCONNECTED:
                        self._lost_connection()
                    return False
                seqno = self._session.get_seqno()
                if seqno != self._seqno:
                    self._new_connection(seqno)
                if self._state is _State.DISCONNECTED:
                    return False  # a server we gave up on: its messages are not wanted
                msg = self._session.recv()
                if msg is None:
                    return False
                self._dispatch(msg)
            return True
        except ssl.SSLError as exc:  # a server certificate we do not trust: retry later
            log.warning("%s: %s: %s", self.name, self.remote, _tls_error_text(exc))
            self._session.force_reconnect()
            return False
        finally:
            if rpc is not None and rpc is self._session.rpc:
                self._churn += rpc.get_received_bytes() - received
            if gc_was_enabled:
                gc.enable()

    def _sharer(self, column: ColumnSchema) -> Callable[[Any], Any]:
        """How to share the values of column: a port's address is in its binding's
        addresses and port_security and in the same columns of its logical port, and many
        ports share the options that name their chassis."""
        # Equal values of other types (True and 1, 1 and 1.0) must not stand in for them.
        signature = (column.key.atomic, column.value.atomic if column.value else None)

        def share(value: Any) -> Any:
            if 0 < len(value) <= SHARED_MEMBERS:
                return self._pools.setdefault(signature, {}).setdefault(value, value)
            return value

        return share

    def _prune_shared(self) -> None:
        """Forgets the shared values no row holds any more (the pools rebuilt from the
        rows), once they hold more than SHARED_ENTRIES or twice what they held then."""
        if sum(len(pool) for pool in self._pools.values()) <= self._pools_limit:
            return
        self._pools = {}
        for table, codec in self._codecs.items():
            spec = self._schema.tables[table]
            for name in codec.columns:
                if spec.columns[name].kind in ("set", "map"):
                    share = self._sharer(spec.columns[name])
                    for row in self._tables[table].values():
                        share(row.data[name])
        shared = sum(len(pool) for pool in self._pools.values())
        self._pools_limit = max(SHARED_ENTRIES, 2 * shared)

    def _release_memory(self) -> None:
        """Gives freed heap memory back to the system TRIM_DELAY after traffic (by then the
        callers have usually dropped what they built around it too), at once after much
        of it. Cheap: a few ms for a heap of 100 MB, at most once per TRIM_DELAY unless
        TRIM_AFTER bytes of messages came or went."""
        if _trim_heap is None or not self._churn:
            return
        now = time.monotonic()
        if self._trim_at is None:
            self._trim_at = now + TRIM_DELAY
        if now >= self._trim_at or self._churn > TRIM_AFTER:
            self._churn, self._trim_at = 0, None
            _trim_heap()

    def _reconnect(self) -> None:
        if self._state is _State.MONITORING:
            # We had a good server: come back at once rather than after a backoff.
            self._session.reset_backoff()
        self._session.force_reconnect()

    # ----- owner thread: the connection --------------------------------------------------------

    def _new_connection(self, seqno: int) -> None:
        if self._state is not _State.DISCONNECTED:
            self._lost_connection()
        self._seqno = seqno
        self._state = _State.SERVER_MONITOR
        if self._lock is not None:
            # Asked first, so the answer arrives before the data: a snapshot that says
            # "connected" already says whether we hold the lock.
            self._request("lock", "lock", [self._lock])
        where = [["name", "==", self._schema.name]]
        monitor = {"Database": [{"columns": list(self._server_codec.columns), "where": where}]}
        self._request("server", "monitor_cond", ["_Server", SERVER_MONITOR_ID, monitor])

    def _lost_connection(self) -> None:
        if self._state is _State.MONITORING:
            self._dirty = True
            log.info("%s: lost %s", self.name, self._session.get_name())
        self._state = _State.DISCONNECTED
        self._requests.clear()
        self._server_rows = {}
        self._set_lock(False)
        for state in self._conditions.values():
            if state.requested is not None:
                # The server may have applied it (and sent some of its rows) or not: only a
                # reload under the conditions asked next is sure to be right.
                if state.new is None:
                    state.new = state.requested
                state.requested = None
                self._last_txn = NO_TXN
        for pending in self._in_flight.values():
            # Sent, unanswered: maybe applied. Sent again once connected (not an attempt).
            pending.request_id = None
            pending.uncertain = True
            pending.attempts -= 1
        self._in_flight.clear()

    def _request(self, what: str, method: str, params: list[Any]) -> None:
        msg = ovs.jsonrpc.Message.create_request(method, params)
        self._requests[what] = msg.id
        self._session.send(msg)

    def _drop_server(self, reason: str) -> None:
        """Leaves this server for the next remote."""
        log.info("%s: %s: %s; trying another server", self.name, self._session.get_name(), reason)
        self._reconnect()
        self._lost_connection()

    def _resync(self, reason: str) -> None:
        """What we hold may be wrong: reload everything from a new connection."""
        log.error("%s: %s: %s; reloading", self.name, self._session.get_name(), reason)
        self._last_txn = NO_TXN
        self._reconnect()
        self._lost_connection()

    def _dispatch(self, msg: Any) -> None:
        try:
            if msg.type == ovs.jsonrpc.Message.T_NOTIFY:
                self._notification(msg.method, msg.params)
            elif msg.type in (ovs.jsonrpc.Message.T_REPLY, ovs.jsonrpc.Message.T_ERROR):
                self._response(msg)
        except ProtocolError as exc:
            self._resync(str(exc))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Something the server sent has a shape we did not expect: never let it kill
            # the owner thread; start afresh instead.
            log.debug("%s: malformed message %s", self.name, msg, exc_info=True)
            self._resync(f"a malformed message ({type(exc).__name__}: {exc})")

    def _notification(self, method: str, params: Any) -> None:
        if not isinstance(params, list) or not params:
            return
        monitor = params[0]
        if method == "update3" and len(params) == 3 and monitor == DATA_MONITOR_ID:
            self._apply_updates(params[2])
            self._last_txn = str(params[1])
        elif method == "update2" and len(params) == 2 and monitor == DATA_MONITOR_ID:
            self._apply_updates(params[1])
        elif method == "update2" and len(params) == 2 and monitor == SERVER_MONITOR_ID:
            self._server_update(params[1])
        elif method in ("locked", "stolen") and params == [self._lock]:
            self._set_lock(method == "locked")
        else:
            log.debug("%s: ignored notification %s", self.name, method)

    def _response(self, msg: Any) -> None:
        what = next((w for w, rid in self._requests.items() if rid == msg.id), None)
        if what is not None:
            del self._requests[what]
            error = msg.error if msg.type == ovs.jsonrpc.Message.T_ERROR else None
            {
                "lock": self._lock_reply,
                "server": self._server_reply,
                "data": self._data_reply,
                "condition": self._condition_reply,
            }[what](msg.result, error)
            return
        pending = self._in_flight.pop(msg.id, None)
        if pending is not None:
            self._transaction_reply(pending, msg)

    def _lock_reply(self, result: Any, error: Any) -> None:
        if error is not None:
            log.warning("%s: the lock %s was refused: %s", self.name, self._lock, error)
        else:
            self._set_lock(isinstance(result, dict) and result.get("locked") is True)

    def _set_lock(self, held: bool) -> None:
        if held != self._has_lock:
            self._has_lock = held
            self._dirty = True

    def _server_reply(self, result: Any, error: Any) -> None:
        if error is not None:
            # No _Server database (an old or unusual server): nothing to judge it by.
            log.debug("%s: no _Server database (%s)", self.name, error)
            self._ask_data()
            return
        if not isinstance(result, dict):
            raise ProtocolError(f"malformed reply to the _Server monitor: {result!r}")
        self._server_update(result)
        if self._state is _State.SERVER_MONITOR:
            self._ask_data()

    def _server_update(self, updates: Any) -> None:
        if not isinstance(updates, dict):
            raise ProtocolError(f"malformed _Server update: {updates!r}")
        apply_table_update(self._server_codec, self._server_rows, updates.get("Database", {}))
        database = next(iter(self._server_rows.values()), None)
        verdict = judge_server(
            database,
            name=self._schema.name,
            leader_only=self._leader_only,
            min_index=self._min_index,
        )
        if not verdict.usable:
            self._drop_server(verdict.reason)
        elif verdict.index is not None:
            self._min_index = verdict.index

    def _ask_data(self) -> None:
        """Sends the data monitor: from our last transaction on (conditions as the server
        applied them), or everything (under the conditions wanted now)."""
        self._state = _State.DATA_MONITOR
        everything = self._last_txn == NO_TXN or not self._since
        requests: dict[str, list[dict[str, Any]]] = {}
        for table, codec in self._codecs.items():
            state = self._conditions[table]
            if everything:
                state.requested, state.new = state.latest, None
                condition = state.requested
            else:
                condition = state.acked
            request: dict[str, Any] = {"columns": list(codec.columns)}
            if condition != [True]:
                request["where"] = condition
            requests[table] = [request]
        params: list[Any] = [self._schema.name, DATA_MONITOR_ID, requests]
        if self._since:
            self._request("data", "monitor_cond_since", [*params, self._last_txn])
        else:
            self._request("data", "monitor_cond", params)

    def _data_reply(self, result: Any, error: Any) -> None:
        if error is not None:
            if self._since and error == "unknown method":
                self._since = False  # before OVS 2.12
                self._ask_data()
            else:
                self._drop_server(f"the monitor was refused: {json.dumps(error)}")
            return
        if self._since:
            if not (isinstance(result, list) and len(result) == 3):
                raise ProtocolError(f"malformed reply to monitor_cond_since: {result!r}")
            found, last_txn, updates = result
        else:
            found, last_txn, updates = False, NO_TXN, result
        if found:
            self._apply_updates(updates)
        else:
            self._reload(updates)
        self._last_txn = str(last_txn)
        acked = False
        for state in self._conditions.values():
            if state.requested is not None:
                acked = acked or state.requested != state.acked
                state.acked, state.requested = state.requested, None
        if acked:
            self._cond_seqno += 1
        self._state = _State.MONITORING
        self._dirty = True
        log.info(
            "%s: monitoring %s (%s)",
            self.name,
            self._session.get_name(),
            "changes since our last transaction" if found else "all rows",
        )

    # ----- owner thread: data ------------------------------------------------------------------

    def _apply_updates(self, updates: Any) -> None:
        if not isinstance(updates, dict):
            raise ProtocolError(f"malformed <table-updates2>: {updates!r}")
        for table, update in updates.items():
            codec = self._codecs.get(table)
            if codec is None:
                raise ProtocolError(f"an update of table {table}, which we do not monitor")
            if table not in self._copied:
                self._tables[table] = dict(self._tables[table])  # the snapshot keeps the old
                self._copied.add(table)
            touched = apply_table_update(codec, self._tables[table], update)
            if touched:
                self._changed.setdefault(table, set()).update(touched)

    def _reload(self, updates: Any) -> None:
        if not isinstance(updates, dict):
            raise ProtocolError(f"malformed <table-updates2>: {updates!r}")
        unknown = set(updates) - set(self._codecs)
        if unknown:
            raise ProtocolError(f"an update of tables we do not monitor: {sorted(unknown)}")
        for table, codec in self._codecs.items():
            rows: dict[uuid.UUID, Row] = {}
            apply_table_update(codec, rows, updates.pop(table, {}))
            before = self._tables[table]
            self._tables[table] = rows
            self._copied.add(table)
            self._rebuilt.add(table)
            self._changed.setdefault(table, set()).update(before.keys() | rows.keys())
        self._reloaded = True
        self._churn += TRIM_AFTER  # the old rows and the reply are garbage now

    def _publish(self) -> None:
        """A new snapshot, if anything changed since the last one."""
        changed = {table: frozenset(ids) for table, ids in self._changed.items() if ids}
        if not (changed or self._dirty or self._rebuilt):
            return
        for table in self._copied:
            if table in self._rebuilt:
                self._reindex(table, None, self._tables[table])
            elif table in changed:
                old = self._published[table]
                self._reindex(table, old, self._tables[table], changed[table])
        self._published = dict(self._tables)
        snap = Snapshot(
            self._snapshot.seqno + 1,
            self._published,
            connected=self._state is _State.MONITORING,
            has_lock=self._has_lock,
            cond_seqno=self._cond_seqno,
            indexes=dict(self._indexes),
            acked_conditions={table: state.acked for table, state in self._conditions.items()},
        )
        change = Change(snapshot=snap, changed=changed, reloaded=self._reloaded)
        self._copied.clear()
        self._rebuilt.clear()
        self._changed.clear()
        self._reloaded = self._dirty = False
        with self._cond:
            self._snapshot = snap
            self._cond.notify_all()
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("%s: listener failed", self.name)

    def _reindex(
        self,
        table: str,
        old: TableRows | None,
        new: TableRows,
        touched: frozenset[uuid.UUID] | None = None,
    ) -> None:
        """Updates the indexes of table (copy-on-write: published snapshots keep theirs)."""
        for (itable, column), current in list(self._indexes.items()):
            if itable != table:
                continue
            index: dict[Any, Any] = {} if old is None or touched is None else dict(current)
            if old is None or touched is None:
                holders: dict[Any, list[uuid.UUID]] = {}
                for row_uuid, row in new.items():
                    for key in index_keys(row.data.get(column)):
                        holders.setdefault(key, []).append(row_uuid)
                for key, found in holders.items():
                    index[key] = found[0] if len(found) == 1 else frozenset(found)
            else:
                for row_uuid in touched:
                    before, after = old.get(row_uuid), new.get(row_uuid)
                    for key in index_keys(before.data.get(column)) if before else ():
                        index_remove(index, key, row_uuid)
                    for key in index_keys(after.data.get(column)) if after else ():
                        index_add(index, key, row_uuid)
            self._indexes[(itable, column)] = index

    # ----- owner thread: conditions ------------------------------------------------------------

    def _send_condition_changes(self) -> None:
        """Asks for the conditions set since the last request, once that one is answered."""
        if self._state is not _State.MONITORING or "condition" in self._requests:
            return
        requests: dict[str, list[dict[str, Any]]] = {}
        for table, state in self._conditions.items():
            if state.new is not None:
                requests[table] = [{"where": state.new}]
                state.requested, state.new = state.new, None
        if requests:
            params = [DATA_MONITOR_ID, DATA_MONITOR_ID, requests]
            self._request("condition", "monitor_cond_change", params)

    def _condition_reply(self, result: Any, error: Any) -> None:
        if error is not None:
            # Refused (a malformed condition?): go back to what the server surely applies.
            for state in self._conditions.values():
                state.requested = None
            self._resync(f"a condition was refused: {json.dumps(error)}")
            return
        for state in self._conditions.values():
            if state.requested is not None:
                state.acked, state.requested = state.requested, None
        self._cond_seqno += 1
        self._dirty = True

    # ----- owner thread: transactions ----------------------------------------------------------

    def _advance_transactions(self) -> None:
        still: list[_PendingTxn] = []
        now = time.monotonic()
        for pending in self._pending:
            if pending.future.done():
                continue
            if pending.outcome is not None and not self._settle(pending, pending.outcome):
                continue
            if pending.request_id is not None or (
                pending.retry_at is not None and now < pending.retry_at
            ):
                still.append(pending)
            elif self._state is not _State.MONITORING:
                if now < pending.created + RECONNECT_PATIENCE:
                    still.append(pending)  # no server now (an election, a restart): wait
                else:
                    detail = f"no server at {self.remote} to send it to in {RECONNECT_PATIENCE:g}s"
                    pending.future.set_exception(TxnError("try again", detail))
            elif self._send_transaction(pending):
                still.append(pending)
        self._pending = still

    def _wait_transactions(self, poller: Any) -> None:
        now = time.monotonic()
        for pending in self._pending:
            if pending.request_id is not None:
                continue
            if pending.retry_at is not None:
                wake_at = pending.retry_at
            elif self._state is not _State.MONITORING:
                wake_at = pending.created + RECONNECT_PATIENCE
            else:
                wake_at = now
            poller.timer_wait(max(0, int((wake_at - now) * 1000)))

    def _send_transaction(self, pending: _PendingTxn) -> bool:
        """Sends pending (or settles it at once); True while it is still to be answered."""
        pending.attempts += 1
        pending.retry_at = None
        try:
            request = build_transaction(
                self._schema,
                pending.ops,
                self._tables,
                lock=self._lock,
                comment=pending.comment,
                uncertain=pending.uncertain,
                row_uuids=pending.row_uuids,
            )
        except InvalidOp as exc:
            pending.future.set_exception(TxnError("error", str(exc)))
            return False
        if self._lock is not None and not self._has_lock:
            detail = f"{self.name} does not hold the lock {self._lock}"
            pending.future.set_exception(TxnError("not locked", detail))
            return False
        if not request.changes:  # nothing to change: as the IDL, do not even ask
            pending.future.set_result(TxnResult(attempts=pending.attempts))
            return False
        msg = ovs.jsonrpc.Message.create_request(
            "transact", [self._schema.name, *request.operations]
        )
        if self._session.send(msg):
            pending.attempts -= 1  # the connection is failing: sent again on the next one
            pending.retry_at = time.monotonic() + 0.05
            return True
        self._churn += OP_BYTES * len(request.operations)  # the request and its JSON
        pending.request_id = msg.id
        pending.inserted = request.inserted
        pending.row_uuids = request.row_uuids
        self._in_flight[msg.id] = pending
        return True

    def _transaction_reply(self, pending: _PendingTxn, msg: Any) -> None:
        """Records the outcome; it is acted on after the next snapshot is published, so a
        caller whose transaction returns sees its effects (the server sends the updates a
        transaction caused before its reply)."""
        pending.request_id = None
        if msg.type == ovs.jsonrpc.Message.T_ERROR:
            pending.outcome = txn_outcome(None, msg.error)
        else:
            pending.outcome = txn_outcome(msg.result)

    def _settle(self, pending: _PendingTxn, outcome: TxnOutcome) -> bool:
        """Acts on a transaction's outcome; True if it is to be sent again."""
        pending.outcome = None
        status = outcome.status
        if status == "success" or (status == "duplicate uuid" and pending.uncertain):
            # duplicate uuid after a lost reply: our first attempt inserted the rows.
            result = TxnResult(inserted=dict(pending.inserted), attempts=pending.attempts)
            pending.future.set_result(result)
            return False
        if status in ("try again", "not owner") and pending.attempts < MAX_TXN_ATTEMPTS:
            # The database moved under us (a Verify failed), the server canceled it, or the
            # lock went: send it again on fresh data (and refuse it if the lock is gone).
            pending.retry_at = time.monotonic() + 0.002 * (2**pending.attempts)
            return True
        final = {"try again": "try again", "not owner": "not locked"}.get(status, "error")
        pending.future.set_exception(TxnError(final, outcome.detail))
        return False


def _codecs(
    schema: Schema, tables: Mapping[str, Sequence[str] | None], sharer: Sharer
) -> dict[str, RowCodec]:
    codecs = {}
    for table, columns in tables.items():
        spec = schema.tables.get(table)
        if spec is None:
            raise InvalidInput(f"{schema.name} has no table {table}")
        names = list(spec.columns) if columns is None else list(columns)
        unknown = [c for c in names if c not in spec.columns]
        if unknown:
            raise InvalidInput(f"{schema.name} table {table} has no column {unknown[0]}")
        codecs[table] = RowCodec(spec, names, sharer)
    return codecs


class _PendingTxn:
    __slots__ = (
        "attempts",
        "comment",
        "created",
        "future",
        "inserted",
        "ops",
        "outcome",
        "request_id",
        "retry_at",
        "row_uuids",
        "uncertain",
    )

    def __init__(self, ops: tuple[Op, ...], comment: str, future: Future[TxnResult]) -> None:
        self.ops = ops
        self.comment = comment
        self.future = future
        self.attempts = 0
        self.created = time.monotonic()
        self.retry_at: float | None = None
        self.request_id: Any = None  # the JSON-RPC id while sent and unanswered
        self.outcome: TxnOutcome | None = None  # the reply, until acted on
        self.uncertain = False  # an earlier attempt's reply was lost: it may be applied
        self.inserted: Mapping[str, uuid.UUID] = {}
        self.row_uuids: Sequence[uuid.UUID] = ()  # chosen by the first attempt, kept
