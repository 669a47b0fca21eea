"""An OVSDB client on the `ovs` IDL with exactly one owner.

Concurrency model: one thread (the owner) holds the ovs.db.idl.Idl and is the only code that
touches it. It runs the IDL, turns each batch of updates into a new immutable Snapshot, tells
listeners what changed, and executes transactions submitted by other threads. Everybody
else reads Snapshots (cheap: an attribute read) and submits work through a queue; results
come back as concurrent.futures.Future objects. Listeners run on the owner thread and must
only enqueue work (STYLE.md 7).

Snapshots are built incrementally: only tables whose rows changed are copied.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from typing import Any, TypeVar

import ovs.db.idl
import ovs.json
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from liveport.model.errors import Conflict, InvalidInput, LiveportError, Timeout
from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import (
    Change,
    Delete,
    Insert,
    Mutate,
    Op,
    Ref,
    Row,
    Snapshot,
    TableRows,
    TxnResult,
    Update,
    Verify,
    index_keys,
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
MAX_TXN_ATTEMPTS = 8
RECONNECT_PATIENCE = 60.0  # seconds a transaction waits for a server to talk to


class TxnError(LiveportError):
    """A transaction was refused or failed; `status` is the IDL's status string and `detail`
    the server's error (e.g. 'constraint violation: ...' or an RBAC refusal)."""

    def __init__(self, status: str, detail: str) -> None:
        detail = _server_error_text(detail)
        super().__init__(f"transaction {status}: {detail}" if detail else f"transaction {status}")
        self.status = status
        self.detail = detail


def _server_error_text(detail: str) -> str:
    """The IDL reports server errors as JSON text; make them one readable line."""
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


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # scalar | optional | set | map


def _column_kind(column: Any) -> str:
    ctype = column.type
    if ctype.is_map():
        return "map"
    if ctype.is_scalar():
        return "scalar"
    if ctype.is_optional():
        return "optional"
    return "set"


def _convert(row: Any, table: str, columns: Sequence[_Column]) -> Row:
    data: dict[str, Any] = {}
    raw = row._data  # Datum per column; reading it avoids ovs.db.idl's Row lookups for refs
    for col in columns:
        datum = raw.get(col.name)
        values = datum.values if datum is not None else {}
        if col.kind in {"scalar", "optional"}:
            data[col.name] = next(iter(values)).value if values else None
        elif col.kind == "set":
            data[col.name] = frozenset(atom.value for atom in values)
        else:
            data[col.name] = FrozenMap({k.value: v.value for k, v in values.items()})
    return Row(uuid=row.uuid, table=table, data=FrozenMap(data))


class _Idl(ovs.db.idl.Idl):  # type: ignore[misc]
    """Records which rows each run() touched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.touched: dict[str, set[uuid.UUID]] = {}

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        self.touched.setdefault(row._table.name, set()).add(row.uuid)


def fetch_schema(remote: str, database: str, timeout: float = 10.0) -> ovs.db.idl.SchemaHelper:
    """Asks the server for its schema (the server, not a file, is authoritative)."""
    _check_remote(remote)
    deadline = time.monotonic() + timeout
    remotes = [r for r in remote.split(",") if r]
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
                return ovs.db.idl.SchemaHelper(None, reply.result)
        time.sleep(0.05)
    raise Timeout(f"cannot fetch the {database} schema ({last_error})")


def _not_yet_available(error: Any) -> bool:
    return isinstance(error, Mapping) and error.get("error") == "database not available"


class OvsdbClient:
    """One IDL connection to one database, owned by one thread.

    tables maps a table name to the columns to replicate (None: all columns).
    conditions maps a table name to an initial monitor condition (default: all rows).
    """

    def __init__(
        self,
        remote: str,
        database: str,
        tables: Mapping[str, Sequence[str] | None],
        *,
        schema: ovs.db.idl.SchemaHelper | str | None = None,
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
        helper = (
            ovs.db.idl.SchemaHelper(location=schema)
            if isinstance(schema, str)
            else schema
            if schema is not None
            else fetch_schema(remote, database)
        )
        for table, columns in tables.items():
            if columns is None:
                helper.register_table(table)
            else:
                helper.register_columns(table, list(columns))
        self._idl = _Idl(remote, helper, probe_interval=probe_interval_ms, leader_only=leader_only)
        self._columns: dict[str, list[_Column]] = {
            name: [_Column(c, _column_kind(col)) for c, col in table.columns.items()]
            for name, table in self._idl.tables.items()
        }
        for table, cond in (conditions or {}).items():
            self._idl.cond_change(table, cond)
        if lock:
            self._idl.set_lock(lock)
        self._tables: dict[str, TableRows] = {name: {} for name in self._idl.tables}
        self._indexes: dict[tuple[str, str], dict[Any, frozenset[uuid.UUID]]] = {
            (table, column): {} for table, columns in (indexes or {}).items() for column in columns
        }
        self._rows_identity: dict[str, int] = {}
        self._snapshot = Snapshot(0, dict(self._tables), connected=False)
        self._cond = threading.Condition()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._listeners: list[Listener] = []
        self._pending: list[_PendingTxn] = []
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ovsdb-{self.name}", daemon=True)
        self._thread.start()

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
                everything = {t: frozenset(rows) for t, rows in self._tables.items()}
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
        (python-ovs's predicted condition sequence numbers over-count when changes
        coalesce, so they are not used.)
        """
        self._submit(lambda: self._idl.cond_change(table, condition))

    def force_reconnect(self) -> None:
        self._submit(self._idl.force_reconnect)

    def server_status(self) -> Future[dict[str, Any]]:
        """Thread-safe (answered by the owner thread): the server this client is connected
        to or trying, whether it monitors, and from the server's _Server database its model
        (standalone, clustered, relay) and, clustered, whether it is the leader."""
        answer: Future[dict[str, Any]] = Future()

        def ask() -> None:
            status: dict[str, Any] = {
                "remote": str(self._idl.session_name()),
                "connected": self._monitoring(),
            }
            tables = self._idl.server_tables or {}
            rows = tables["Database"].rows.values() if "Database" in tables else ()
            for row in rows:
                if row.name == self.database:
                    status["model"] = str(row.model)
                    if row.model == "clustered":
                        status["leader"] = bool(row.leader)
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

    # ----- owner thread ----------------------------------------------------------------------

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
            _say_goodbye(getattr(getattr(self._idl._session, "rpc", None), "stream", None))
            self._idl.close()
            while not self._commands.empty():
                self._commands.get_nowait()
            for pending in self._pending:
                if not pending.future.done():
                    pending.future.set_exception(ClientClosed(f"{self.name} client closed"))

    def _loop(self) -> None:
        last_change = -1
        last_lock = False
        last_connected = False
        last_cond = -1
        last_counts: list[int] = []
        while not self._stopping:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass
            while not self._commands.empty():
                self._commands.get_nowait()()
            try:
                self._idl.run()
            except ssl.SSLError as exc:  # a server certificate we do not trust: retry later
                log.warning("%s: %s: %s", self.name, self.remote, _tls_error_text(exc))
                self._idl.force_reconnect()
            connected = self._monitoring()
            # Row counts too: an inserted row whose monitored columns all hold their defaults
            # bumps no change_seqno in python-ovs.
            counts = [len(t.rows) for t in self._idl.tables.values()]
            if (
                self._idl.change_seqno != last_change
                or self._idl.has_lock != last_lock
                or connected != last_connected
                or self._idl.cond_seqno != last_cond
                or counts != last_counts
            ):
                last_counts = counts
                last_change = self._idl.change_seqno
                last_lock = self._idl.has_lock
                last_connected = connected
                last_cond = self._idl.cond_seqno
                self._publish(connected)
            self._advance_transactions()
            poller = ovs.poller.Poller()
            self._idl.wait(poller)
            for pending in self._pending:
                if pending.txn is not None:
                    pending.txn.wait(poller)
                elif pending.retry_at is not None:
                    poller.timer_wait(max(0, int((pending.retry_at - time.monotonic()) * 1000)))
                else:
                    poller.immediate_wake()
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            poller.block()

    def _monitoring(self) -> bool:
        return bool(
            self._idl.state == self._idl.IDL_S_MONITORING and self._idl._session.is_connected()
        )

    def _publish(self, connected: bool) -> None:
        gc_was_enabled = gc.isenabled()
        gc.disable()  # building many small frozen rows; GC passes here only cost time
        try:
            touched = self._idl.touched
            self._idl.touched = {}
            changed: dict[str, frozenset[uuid.UUID]] = {}
            reloaded = False
            for name, table in self._idl.tables.items():
                rows = table.rows
                if self._rows_identity.get(name) != id(rows):
                    # The IDL replaced its row map (initial fetch or reconnect): rebuild.
                    self._rows_identity[name] = id(rows)
                    cols = self._columns[name]
                    self._tables[name] = {u: _convert(r, name, cols) for u, r in rows.items()}
                    self._reindex(name, None, self._tables[name])
                    changed[name] = frozenset(self._tables[name]) | frozenset(touched.get(name, ()))
                    reloaded = True
                    continue
                old = self._tables[name]
                ids = set(touched.get(name, ()))
                if len(rows) != len(old):
                    # python-ovs does not notify a row whose monitored columns all hold
                    # their defaults (only the count gives it away): take it too.
                    ids |= rows.keys() ^ old.keys()
                if ids:
                    cols = self._columns[name]
                    new = dict(old)
                    for row_uuid in ids:
                        row = rows.get(row_uuid)
                        if row is None:
                            new.pop(row_uuid, None)
                        else:
                            new[row_uuid] = _convert(row, name, cols)
                    self._tables[name] = new
                    self._reindex(name, old, new, ids)
                    changed[name] = frozenset(ids)
            snap = Snapshot(
                self._snapshot.seqno + 1,
                dict(self._tables),
                connected=connected,
                has_lock=bool(self._idl.has_lock),
                cond_seqno=int(self._idl.cond_seqno),
                indexes=dict(self._indexes),
                acked_conditions={
                    name: table.condition_state.acked for name, table in self._idl.tables.items()
                },
            )
        finally:
            if gc_was_enabled:
                gc.enable()
        with self._cond:
            self._snapshot = snap
            self._cond.notify_all()
        change = Change(snapshot=snap, changed=changed, reloaded=reloaded)
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
        touched: set[uuid.UUID] | None = None,
    ) -> None:
        """Updates the indexes of table (copy-on-write: published snapshots keep theirs)."""
        for (itable, column), current in list(self._indexes.items()):
            if itable != table:
                continue
            if old is None or touched is None:
                fresh: dict[Any, set[uuid.UUID]] = {}
                for row_uuid, row in new.items():
                    for key in index_keys(row.data.get(column)):
                        fresh.setdefault(key, set()).add(row_uuid)
                self._indexes[(itable, column)] = {k: frozenset(v) for k, v in fresh.items()}
                continue
            index = dict(current)
            for row_uuid in touched:
                before, after = old.get(row_uuid), new.get(row_uuid)
                for key in index_keys(before.data.get(column)) if before else ():
                    remaining = index.get(key, frozenset()) - {row_uuid}
                    if remaining:
                        index[key] = remaining
                    else:
                        index.pop(key, None)
                for key in index_keys(after.data.get(column)) if after else ():
                    index[key] = index.get(key, frozenset()) | {row_uuid}
            self._indexes[(itable, column)] = index

    def _advance_transactions(self) -> None:
        still: list[_PendingTxn] = []
        now = time.monotonic()
        for pending in self._pending:
            if pending.future.done():
                continue
            if pending.txn is None:
                if pending.retry_at is not None and now < pending.retry_at:
                    still.append(pending)
                    continue
                if not self._start(pending):
                    continue
            assert pending.txn is not None
            status = pending.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                still.append(pending)
                continue
            txn, pending.txn = pending.txn, None
            if status in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                inserted = {name: txn.get_insert_uuid(u) for name, u in pending.inserted.items()}
                pending.future.set_result(TxnResult(inserted=inserted, attempts=pending.attempts))
            elif (
                status == ovs.db.idl.Transaction.TRY_AGAIN
                and not self._monitoring()
                and now < pending.created + RECONNECT_PATIENCE
            ):
                # No server (a cluster is electing a leader, the server restarts): that is
                # no conflict; send it again once connected, up to RECONNECT_PATIENCE.
                pending.attempts -= 1
                pending.retry_at = now + 0.05
                still.append(pending)
            elif status == ovs.db.idl.Transaction.TRY_AGAIN and pending.attempts < MAX_TXN_ATTEMPTS:
                # The database moved under us (or a Verify failed): replay the ops on fresh data.
                pending.retry_at = now + 0.002 * (2**pending.attempts)
                still.append(pending)
            else:
                text = ovs.db.idl.Transaction.status_to_string(status)
                pending.future.set_exception(TxnError(text, txn.get_error() or ""))
        self._pending = still

    def _start(self, pending: _PendingTxn) -> bool:
        """Builds the IDL transaction for pending; False if it failed before being sent."""
        pending.attempts += 1
        pending.retry_at = None
        txn = ovs.db.idl.Transaction(self._idl)
        if pending.comment:
            txn.add_comment(pending.comment)
        names: dict[str, Any] = {}
        pending.inserted = {}
        try:
            for op in pending.ops:
                self._apply(txn, op, names, pending.inserted)
        except TxnError as exc:
            txn.abort()
            pending.future.set_exception(exc)
            return False
        pending.txn = txn
        return True

    def _row(self, table: str, row_uuid: uuid.UUID) -> Any:
        try:
            rows = self._idl.tables[table].rows
        except KeyError:
            raise TxnError("error", f"table {table} is not monitored") from None
        row = rows.get(row_uuid)
        if row is None:
            raise TxnError("error", f"{table} row {row_uuid} does not exist (any more)")
        return row

    def _apply(
        self, txn: Any, op: Op, names: dict[str, Any], inserted: dict[str, uuid.UUID]
    ) -> None:
        def resolve(value: Any) -> Any:
            if isinstance(value, Ref):
                if value.name not in names:
                    raise TxnError("error", f"reference to unknown inserted row {value.name!r}")
                return names[value.name]
            if isinstance(value, (list, tuple, set, frozenset)):
                return [resolve(v) for v in value]
            if isinstance(value, Mapping):
                return {k: resolve(v) for k, v in value.items()}
            if value is None:
                return []
            return value

        if isinstance(op, Insert):
            table = self._idl.tables[op.table]
            row = txn.insert(table)
            for column, value in (op.values or dict([_placeholder(table)])).items():
                setattr(row, column, resolve(value))
            if op.name is not None:
                names[op.name] = row
                inserted[op.name] = row.uuid
        elif isinstance(op, Update):
            row = self._row(op.table, op.uuid)
            for column, value in op.values.items():
                setattr(row, column, resolve(value))
        elif isinstance(op, Delete):
            self._row(op.table, op.uuid).delete()
        elif isinstance(op, Mutate):
            row = self._row(op.table, op.uuid)
            if op.op == "add":
                row.addvalue(op.column, resolve(op.key))
            elif op.op == "remove":
                row.delvalue(op.column, resolve(op.key))
            elif op.op == "setkey":
                row.setkey(op.column, op.key, resolve(op.value))
            elif op.op == "delkey":
                row.delkey(op.column, op.key)
            else:
                raise TxnError("error", f"unknown mutation {op.op!r}")
        elif isinstance(op, Verify):
            self._row(op.table, op.uuid).verify(op.column)


def _placeholder(table: Any) -> tuple[str, Any]:
    """One column of table with its default value. python-ovs sends no insert at all for a
    new row none of whose columns was written, so inserting a row of defaults (an
    NB_Global, say) writes one of them explicitly."""
    for name, column in sorted(table.columns.items()):
        ctype = column.type
        if ctype.is_map():
            return name, {}
        if not ctype.is_scalar():
            return name, []
        if not ctype.key.ref_table_name:
            return name, ctype.key.type.default_atom().value
    raise TxnError("error", f"cannot insert an empty {table.name} row")


class _PendingTxn:
    __slots__ = ("attempts", "comment", "created", "future", "inserted", "ops", "retry_at", "txn")

    def __init__(self, ops: tuple[Op, ...], comment: str, future: Future[TxnResult]) -> None:
        self.ops = ops
        self.comment = comment
        self.future = future
        self.txn: Any = None
        self.attempts = 0
        self.created = time.monotonic()
        self.retry_at: float | None = None
        self.inserted: dict[str, uuid.UUID] = {}
