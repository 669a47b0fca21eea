"""M8 in a secure lab: the SB server itself refuses a rogue chassis, whatever it sends.

The rogue holds hv3's genuine certificate and speaks raw OVSDB JSON-RPC over TLS (no agent
in the way). On the chassis listener (the SB's chassis relay) every write outside hv3's own
rows is refused by ovsdb-server with a permission error; the control listener (the SB
server, which trusts only the control CA) does not even complete its handshake; the CMS,
which may connect there, can write nothing (or, for a forged `authority`, hits a
constraint violation). The network does not notice: vm1 stays on hv1 and keeps receiving.
What hv3 writes into its own rows never reaches another port's row verbatim nor an
operator's terminal unescaped, and a certificate minted with the chassis CA's key for
northd's name is refused every write.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveport.cms import security
from liveport.lab import faults, lab, vms
from liveport.lab.secure import LabTls
from liveport.lab.state import is_lab
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model.security import CHASSIS_ROLE, CMS_IDENTITY, CONTROL_ROLE, NORTHD_IDENTITY
from liveport.ovsdb import schema, server
from liveport.ovsdb.rows import Row
from liveport.runtime import pki
from liveport.runtime.process import stop_daemons

from tests.forgery import forge
from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

SB = schema.SB_NAME


class Rpc:
    """One raw OVSDB JSON-RPC connection (TLS, or the operator's unix socket)."""

    def __init__(
        self, sock: socket.socket, reconnect: Callable[[], socket.socket] | None = None
    ) -> None:
        self.sock = sock
        self.buffer = ""
        self.next_id = 0
        # The server probes an idle connection and closes it when nobody answers (this
        # client answers only inside call()): a call finding it closed connects again.
        self.reconnect = reconnect

    @classmethod
    def tls(cls, port: int, creds: pki.Credentials | None, ca_cert: Path) -> Rpc:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(ca_cert)
        if creds is not None:
            context.load_cert_chain(creds.certificate, creds.private_key)

        def connect() -> socket.socket:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            return context.wrap_socket(raw)

        return cls(connect(), connect)

    @classmethod
    def unix(cls, path: Path) -> Rpc:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        return cls(sock)

    def call(self, method: str, params: list[Any]) -> Any:
        try:
            return self._call(method, params)
        except (ssl.SSLEOFError, ConnectionError) as exc:
            if self.reconnect is None:
                raise
            if not isinstance(exc, ssl.SSLEOFError) and "closed the connection" not in str(exc):
                raise
            self.sock.close()
            self.sock, self.buffer = self.reconnect(), ""
            return self._call(method, params)

    def _call(self, method: str, params: list[Any]) -> Any:
        self.next_id += 1
        self.sock.sendall(
            json.dumps({"method": method, "params": params, "id": self.next_id}).encode()
        )
        decoder = json.JSONDecoder()
        while True:
            self.buffer = self.buffer.lstrip()
            if self.buffer:
                try:
                    msg, end = decoder.raw_decode(self.buffer)
                except ValueError:
                    msg = None
                if msg is not None:
                    self.buffer = self.buffer[end:]
                    if msg.get("id") == self.next_id:
                        if msg.get("error"):
                            raise RuntimeError(msg["error"])
                        return msg["result"]
                    if msg.get("method") == "echo":
                        self.sock.sendall(
                            json.dumps({"result": msg["params"], "id": msg["id"]}).encode()
                        )
                    continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buffer += data.decode()

    def transact(self, *ops: dict[str, Any]) -> list[Any]:
        result: list[Any] = self.call("transact", [SB, *ops])
        return result

    def close(self) -> None:
        self.sock.close()


def outcome(results: list[Any]) -> str:
    """'ok', or the first error of a transaction as 'error: details'."""
    for r in results:
        if isinstance(r, dict) and "error" in r:
            return f"{r['error']}: {r.get('details', '')}"
    return "ok"


def refusal(client: str, role: str) -> str:
    """How the SB server begins its answer to a write the client's role does not allow."""
    return f'permission error: RBAC rules for client "{client}" role "{role}"'


def applies(rpc: Rpc, writes: Mapping[str, dict[str, Any]]) -> None:
    """Each write applies for rpc's client (matches rows or inserts a valid one), checked
    inside a transaction that aborts, so nothing changes."""
    for attempt, op in writes.items():
        results = rpc.transact(op, {"op": "abort"})
        assert "error" not in results[0], f"{attempt}: {results[0]}"
        assert results[0].get("count", 1) >= 1, f"{attempt} matches no row"
        assert results[1]["error"] == "aborted", f"{attempt}: {results[1]}"


@dataclass
class SecureNet:
    directory: Path
    tls: LabTls

    def rpc(self, name: str, port: int) -> Rpc:
        creds = self.tls.credentials(name)
        return Rpc.tls(port, creds, Path(self.tls.pki_dir) / "control-ca.pem")


def build_network(d: Path) -> None:
    """vm1 and vm3 requested on hv1 (vm3 migrating to hv2, which holds a destination claim),
    peer on hv2, vm4 on hv3, free (requested nowhere) on hv1."""
    nbctl(
        d,
        "ls-add", "ls0",
        "--", "lsp-add", "ls0", "vm1",
        "--", "lsp-set-addresses", "vm1", "00:00:00:00:00:01 10.0.0.1",
        "--", "lsp-set-options", "vm1", "requested-chassis=hv1",
        "--", "lsp-add", "ls0", "vm3",
        "--", "lsp-set-addresses", "vm3", "00:00:00:00:00:03 10.0.0.3",
        "--", "lsp-set-options", "vm3", "requested-chassis=hv1",
        "--", "lsp-add", "ls0", "peer",
        "--", "lsp-set-addresses", "peer", "00:00:00:00:00:02 10.0.0.2",
        "--", "lsp-add", "ls0", "vm4",
        "--", "lsp-set-addresses", "vm4", "00:00:00:00:00:04 10.0.0.4",
        "--", "lsp-add", "ls0", "free",
        "--", "lsp-set-addresses", "free", "00:00:00:00:00:05 10.0.0.5",
    )  # fmt: skip
    vms.add(d, "vm1", chassis="hv1", port="vm1", mac="00:00:00:00:00:01", ips=["10.0.0.1"])
    vms.add(d, "vm3", chassis="hv1", port="vm3", mac="00:00:00:00:00:03", ips=["10.0.0.3"])
    vms.add(d, "peer", chassis="hv2", port="peer", mac="00:00:00:00:00:02", ips=["10.0.0.2"])
    vms.add(d, "vm4", chassis="hv3", port="vm4", mac="00:00:00:00:00:04", ips=["10.0.0.4"])
    vms.add(d, "free", chassis="hv1", port="free", mac="00:00:00:00:00:05", ips=["10.0.0.5"])
    for port in ("vm1", "vm3", "peer", "vm4", "free"):
        nbctl(d, "wait-until", "Logical_Switch_Port", port, "up=true")
    with lab.cms(d) as cms:
        cms.start("vm3", "hv2")  # vm3 is migrating to hv2: hv2 holds a destination claim
        cms.sb.wait_until(
            lambda s: any(
                c["logical_port"] == "vm3" and c["chassis"] == "hv2" for c in s.rows("Port_Claim")
            ),
            timeout=10,
            what="hv2's claim on vm3",
        )


@pytest.fixture(scope="module")
def net() -> Iterator[SecureNet]:
    base = Path(tempfile.mkdtemp(prefix="lps-", dir="/tmp"))
    d = base / "lab"
    try:
        lab.up(d, 3, secure=True)
        build_network(d)
        tls = lab.Layout.of(d).tls
        assert tls is not None
        yield SecureNet(d, tls)
    finally:
        if is_lab(d):
            lab.down(d)
        shutil.rmtree(base, ignore_errors=True)


def answers(port: int, creds: pki.Credentials | None, ca: Path, database: str) -> None:
    """A client with these credentials is served on port (it lists database)."""
    rpc = Rpc.tls(port, creds, ca)
    try:
        assert database in rpc.call("list_dbs", []), f"port {port} does not serve {database}"
    finally:
        rpc.close()


def refused(port: int, creds: pki.Credentials | None, ca: Path) -> None:
    """Something listens on port (the connection is not refused) but these credentials get
    no answer: the TLS handshake fails or the server drops the connection."""
    with pytest.raises((ssl.SSLError, ConnectionError)) as caught:
        rpc = Rpc.tls(port, creds, ca)
        try:
            rpc.call("list_dbs", [])
        finally:
            rpc.close()
    assert not isinstance(caught.value, ConnectionRefusedError), f"nothing listens on {port}"


def where(**columns: str) -> list[list[str]]:
    return [[k, "==", v] for k, v in columns.items()]


def update(table: str, row: dict[str, Any], **match: str) -> dict[str, Any]:
    return {"op": "update", "table": table, "where": where(**match), "row": row}


ROGUE_WRITES = {
    "own vm1 (requested for hv1)": update("Port_Binding", {"chassis": "hv3"}, logical_port="vm1"),
    "name itself vm3's migration destination": update(
        "Port_Binding", {"migration_destination": "hv3"}, logical_port="vm3"
    ),
    "name itself vm1's requested chassis": update(
        "Port_Binding", {"requested_chassis": "hv3"}, logical_port="vm1"
    ),
    "record an activation in hv2's claim on vm3": update(
        "Port_Claim", {"activated": 1}, logical_port="vm3", chassis="hv2"
    ),
    "give itself a claim on vm3": {
        "op": "insert",
        "table": "Port_Claim",
        "row": {"logical_port": "vm3", "chassis": "hv3", "role": "destination", "activated": 1},
    },
    "edit hv1's Chassis row": update("Chassis", {"encap_ip": "198.18.0.3"}, name="hv1"),
    "delete hv1's Chassis row": {"op": "delete", "table": "Chassis", "where": where(name="hv1")},
    "rename its own Chassis row to hv1": update("Chassis", {"name": "hv1"}, name="hv3"),
    "fake hv1's heartbeat": update("Chassis_Private", {"heartbeat": 1}, name="hv1"),
    "remove hv1's VIF reports": {
        "op": "delete",
        "table": "Chassis_VIF",
        "where": where(chassis="hv1"),
    },
    "move its VIF report to hv1": update("Chassis_VIF", {"chassis": "hv1"}, chassis="hv3"),
    "change the global state": update("SB_Global", {"nb_cfg": 99}),
    "drop the RBAC roles": {"op": "delete", "table": "RBAC_Role", "where": []},
    "open a listener": {
        "op": "insert",
        "table": "Connection",
        "row": {"target": "ptcp:6999:127.0.0.1"},
    },
    "insert a binding of its own": {
        "op": "insert",
        "table": "Port_Binding",
        "row": {
            "logical_port": "evil",
            "datapath": ["uuid", "00000000-0000-0000-0000-000000000000"],
            "tunnel_key": 999,
            "chassis": "hv3",
        },
    },
}


@pytest.mark.parametrize("attempt", sorted(ROGUE_WRITES))
def test_a_rogue_chassis_is_refused_by_the_server(net: SecureNet, attempt: str) -> None:
    rogue = net.rpc("hv3", net.tls.sb_chassis_port)
    try:
        result = outcome(rogue.transact(ROGUE_WRITES[attempt]))
    finally:
        rogue.close()
    assert result.startswith(refusal("hv3", CHASSIS_ROLE)), f"{attempt}: {result}"


@pytest.mark.parametrize("attempt", sorted(ROGUE_WRITES))
def test_the_cms_can_write_nothing_in_the_sb(net: SecureNet, attempt: str) -> None:
    cms = net.rpc("cms", net.tls.sb_control_port)
    try:
        result = outcome(cms.transact(ROGUE_WRITES[attempt]))
    finally:
        cms.close()
    assert result.startswith(refusal(CMS_IDENTITY, CONTROL_ROLE)), f"{attempt}: {result}"


def test_a_chassis_certificate_cannot_reach_the_control_listener(net: SecureNet) -> None:
    """The SB server trusts only the control CA: a chassis' handshake fails there, while
    the same request with the CMS's certificate is answered."""
    ca = Path(net.tls.pki_dir) / "control-ca.pem"
    answers(net.tls.sb_control_port, net.tls.credentials("cms"), ca, SB)
    refused(net.tls.sb_control_port, net.tls.credentials("hv3"), ca)


NORTHD_WRITES = {
    "re-point vm1 to hv3": update("Port_Binding", {"chassis": "hv3"}, logical_port="vm1"),
    "activate hv2's claim on vm3": update(
        "Port_Claim", {"activated": 1}, logical_port="vm3", chassis="hv2"
    ),
    "give hv3 a claim on vm1": {
        "op": "insert",
        "table": "Port_Claim",
        "row": {
            "logical_port": "vm1",
            "chassis": "hv3",
            "role": "destination",
            "authority": "liveport-northd",
        },
    },
    "rename a datapath": update("Datapath_Binding", {"name": "evil"}, name="ls0"),
    "declare hv1 dead": update("SB_Global", {"live_chassis": ["set", []]}),
}


def test_a_northd_certificate_minted_by_the_chassis_ca_is_refused_every_write(
    net: SecureNet, tmp_path: Path
) -> None:
    """With the chassis CA's key, an attacker signs a certificate for northd's name. The
    control listener refuses its handshake (the SB server trusts only the control CA);
    the chassis listener lets it in with the chassis role, where northd's rows are out of
    reach. The genuine northd certificate can make each of these writes (checked inside
    transactions that abort)."""
    pki_dir = Path(net.tls.pki_dir)
    fake = forge(pki_dir, "chassis-ca", NORTHD_IDENTITY, tmp_path / "forged")
    answers(net.tls.sb_control_port, net.tls.credentials("northd"), fake.ca_cert, SB)
    refused(net.tls.sb_control_port, fake, fake.ca_cert)
    for attempt, op in NORTHD_WRITES.items():
        rpc = Rpc.tls(net.tls.sb_chassis_port, fake, fake.ca_cert)
        try:
            result = outcome(rpc.transact(op))
        finally:
            rpc.close()
        assert result.startswith(refusal(NORTHD_IDENTITY, CHASSIS_ROLE)), f"{attempt}: {result}"
    northd = net.rpc("northd", net.tls.sb_control_port)
    try:
        applies(northd, NORTHD_WRITES)
    finally:
        northd.close()
    with lab.cms(net.directory) as cms:
        pb = cms.sb.snapshot().lookup("Port_Binding", "logical_port", "vm1")[0]
        assert pb["chassis"] == "hv1"


def test_each_rogue_write_is_real(net: SecureNet) -> None:
    """Without a role (the operator's unix socket) every one of those writes would apply:
    each matches rows or inserts a valid one (checked inside a transaction that aborts)."""
    operator = Rpc.unix(lab.Layout.of(net.directory).sb.socket)
    try:
        applies(operator, ROGUE_WRITES)
    finally:
        operator.close()


def test_authority_cannot_be_forged(net: SecureNet) -> None:
    """On the control listener a row naming another control identity (the CMS) as its
    authority would pass RBAC; the schema allows only northd's name there."""
    rogue = net.rpc("cms", net.tls.sb_control_port)
    try:
        dp = rogue.transact({"op": "select", "table": "Datapath_Binding", "where": []})[0]["rows"][
            0
        ]
        results = rogue.transact(
            {
                "op": "insert",
                "table": "Port_Binding",
                "row": {
                    "logical_port": "evil",
                    "datapath": dp["_uuid"],
                    "tunnel_key": 999,
                    "chassis": "hv3",
                    "authority": "liveport-cms",
                },
            }
        )
    finally:
        rogue.close()
    assert outcome(results).startswith("constraint violation"), outcome(results)


def test_its_own_rows_stay_writable(net: SecureNet) -> None:
    """The refusals above are the policy, not a broken connection: hv3 may edit its own."""
    rogue = net.rpc("hv3", net.tls.sb_chassis_port)
    try:
        results = rogue.transact(
            update("Chassis", {"external_ids": ["map", [["note", "mine"]]]}, name="hv3")
        )
    finally:
        rogue.close()
    assert outcome(results) == "ok" and results[0]["count"] == 1


def test_agents_have_no_nb_access(net: SecureNet) -> None:
    """The NB answers the CMS on its port, and refuses a chassis' certificate there."""
    ca = Path(net.tls.pki_dir) / "control-ca.pem"
    answers(net.tls.nb_port, net.tls.credentials("cms"), ca, "OVN_Northbound")
    refused(net.tls.nb_port, net.tls.credentials("hv3"), ca)


def test_the_network_does_not_notice(net: SecureNet) -> None:
    d = net.directory
    with BindingWatch(d, ["vm1", "vm3"]) as watch, Traffic(d, "peer", "vm1", rate=200.0).start():
        vms.wait_capture(d, "vm1", lambda f: len(f) > 5, chassis="hv1")
        for attempt, op in ROGUE_WRITES.items():
            rogue = net.rpc("hv3", net.tls.sb_chassis_port)
            try:
                assert outcome(rogue.transact(op)) != "ok", attempt
            finally:
                rogue.close()
        count = len(vms.capture(d, "vm1"))
        vms.wait_capture(d, "vm1", lambda f: len(f) > count + 20, chassis="hv1", timeout=10)
    assert watch.owners("vm1") == ["hv1"]
    with lab.cms(d) as cms:
        sb = cms.sb.snapshot()
        assert sb.lookup("Port_Binding", "logical_port", "vm1")[0]["chassis"] == "hv1"
        claim = next(
            c for c in sb.rows("Port_Claim") if c["logical_port"] == "vm3" and c["chassis"] == "hv2"
        )
        assert claim["activated"] is None


@pytest.mark.parametrize("case", ["no certificate", "another CA", "expired", "chassis CA on NB"])
def test_untrusted_clients_cannot_connect(net: SecureNet, case: str, tmp_path: Path) -> None:
    ca = Path(net.tls.pki_dir) / "control-ca.pem"
    port, trusted, database = net.tls.sb_chassis_port, net.tls.credentials("hv3"), SB
    creds: pki.Credentials | None
    if case == "no certificate":
        creds = None
    elif case == "another CA":
        pki.init(tmp_path / "other")
        creds = pki.issue(tmp_path / "other", "chassis", "hv3")
    elif case == "expired":
        shutil.copytree(net.tls.pki_dir, tmp_path / "pki")
        now = dt.datetime.now(dt.UTC)
        creds = pki.issue(
            tmp_path / "pki",
            "chassis",
            "hv3",
            not_before=now - dt.timedelta(days=10),
            not_after=now - dt.timedelta(days=1),
            force=True,
        )
    else:
        creds, port = net.tls.credentials("hv1"), net.tls.nb_port
        trusted, database = net.tls.credentials("cms"), "OVN_Northbound"
    # The same request on the same port with a trusted certificate is answered.
    answers(port, trusted, ca, database)
    refused(port, creds, ca)


def test_sb_setup_is_idempotent_and_keeps_what_is_not_liveports(short_tmp: Path) -> None:
    spec = server.ServerSpec(
        "sb",
        short_tmp / "sb",
        schema.southbound_path(),
        db_remotes=(f"db:{SB},SB_Global,connections",),
    )
    server.start(spec)
    try:
        operator = Rpc.unix(spec.socket)
        try:
            # A row from before the policy (no authority) and an operator's own role.
            dp = {"tunnel_key": 1, "name": "x"}
            grants = ["map", [["Chassis", ["named-uuid", "p"]]]]
            perm = {"table": "Chassis", "authorization": "name", "insert_delete": False}
            results = operator.transact(
                {"op": "insert", "table": "Datapath_Binding", "row": dp},
                {"op": "insert", "table": "RBAC_Permission", "row": perm, "uuid-name": "p"},
                {
                    "op": "insert",
                    "table": "RBAC_Role",
                    "row": {"name": "auditor", "permissions": grants},
                },
            )
            assert outcome(results) == "ok", outcome(results)
        finally:
            operator.close()
        listeners = {"pssl:0:127.0.0.1": CHASSIS_ROLE}
        first = security.setup_southbound(spec.remote, listeners)
        assert "Datapath_Binding: authority liveport-northd on 1 rows" in first, "|".join(first)
        assert "listener pssl:0:127.0.0.1: added (role liveport-chassis)" in first
        assert security.setup_southbound(spec.remote, listeners) == []
        result = run_cli(
            "sb", "setup", "--sb-db", spec.remote, "--chassis-listener", "pssl:0:127.0.0.1"
        )
        assert result.returncode == 0 and "already follows" in result.stdout, result.stderr
        operator = Rpc.unix(spec.socket)
        try:
            rows = operator.transact({"op": "select", "table": "RBAC_Role", "where": []})[0]["rows"]
            assert sorted(r["name"] for r in rows) == ["auditor", CHASSIS_ROLE, CONTROL_ROLE]
            dps = operator.transact({"op": "select", "table": "Datapath_Binding", "where": []})
            assert dps[0]["rows"][0]["authority"] == "liveport-northd"
        finally:
            operator.close()
        # Moving the listener replaces the old one.
        moved = security.setup_southbound(spec.remote, {"pssl:0:127.0.0.1": CONTROL_ROLE})
        assert moved == ["listener pssl:0:127.0.0.1: role liveport-control"]
    finally:
        stop_daemons([spec.daemon("sb", str(short_tmp))])


def test_an_unnamed_port_is_not_taken_by_a_chassis_that_claims_it_incoming(
    net: SecureNet,
) -> None:
    """A port without requested-chassis (named by nobody) stays with the chassis that holds
    it: hv3 plugs a VIF for it, says the VM is incoming and announces it -- through its own,
    genuine agent. Without the owner's hypervisor saying "outgoing" that makes hv3 neither
    a destination nor the owner; it is recorded as a conflict (M1, M8)."""
    d = net.directory
    with BindingWatch(d, ["free"]) as watch, lab.cms(d) as cms:
        vms.add(d, "usurper", chassis="hv3", port="free", mac="00:00:00:00:00:05", ips=["10.0.0.5"])
        vms.set_vif_external_id(d, "usurper", "hv3", "migration-status", "incoming")
        cms.sb.wait_until(
            lambda s: (
                "VIF on hv3 ignored: hv1 holds the port"
                in s.lookup("Port_Binding", "logical_port", "free")[0]["status"].get("binding", "")
            ),
            timeout=10,
            what="hv3 recorded as a conflict",
        )
        for kind in ("garp", "rarp"):
            vms.send(d, "usurper", vms.SendSpec(kind=kind), count=3)
        with Traffic(d, "peer", "free", rate=200.0):
            vms.wait_capture(d, "free", lambda f: len(f) > 10, chassis="hv1", timeout=10)
        pb = cms.sb.snapshot().lookup("Port_Binding", "logical_port", "free")[0]
        assert pb["chassis"] == "hv1" and pb["migration_destination"] is None
        assert not [
            c for c in cms.sb.snapshot().rows("Port_Claim")
            if c["logical_port"] == "free" and c["chassis"] == "hv3"
        ]  # fmt: skip
        # Nothing of the peer's traffic reached the usurper's VIF.
        assert not [f for f in vms.capture(d, "usurper") if f.info.seq is not None]
    assert watch.owners("free") == ["hv1"]


def test_daemons_refuse_a_certificate_that_is_not_theirs(net: SecureNet) -> None:
    """The SB would refuse all their writes: they say so at start instead."""
    hv3 = net.tls.client_args("hv3")
    host = lab.Layout.of(net.directory).chassis("hv1")
    agent = run_cli("agent", "--ovs-db", host.db_remote, "--mgmt-socket", "/nonexistent", *hv3)
    assert agent.returncode != 0
    assert "the certificate is for chassis 'hv3', not 'hv1'" in agent.stderr, agent.stderr
    northd = run_cli(
        "northd",
        "--nb-db",
        net.tls.nb_remote,
        "--sb-db",
        net.tls.sb_control_remote,
        *net.tls.client_args("hv1"),
    )
    assert northd.returncode != 0
    assert "northd's certificate is for 'hv1', not 'liveport-northd'" in northd.stderr
    partial = run_cli("status", "--dir", str(net.directory), "-p", hv3[1])
    assert partial.returncode != 0
    assert "TLS needs all three of --private-key, --certificate, --ca-cert" in partial.stderr


# ----- what a chassis writes into its own rows ----------------------------------------------

FORGED = "\x1b[31mX\x1b[0m\n  port vm1          ls0      hv3      up"
FORGED_LINE = re.compile(r"^\s*port vm1\s+\S+\s+hv3\s+up", re.M)


def human_status(d: Path) -> str:
    result = run_cli("status", "--dir", str(d))
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_status(d: Path) -> dict[str, Any]:
    result = run_cli("status", "--dir", str(d), "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)  # stays valid JSON, whatever was written
    return doc


def doctor_output(d: Path) -> str:
    result = run_cli("lab", "doctor", "--dir", str(d), "--settle", "0")
    assert result.returncode in (0, 1), result.stderr
    return result.stdout + result.stderr


def assert_clean(text: str) -> None:
    """No control character reached the output and no line was forged."""
    assert not [c for c in text if ord(c) < 0x20 and c != "\n"], repr(text[:400])
    assert not FORGED_LINE.search(text), text


class Rogue:
    """Raw OVSDB with a chassis' genuine certificate, a new connection per transaction: a
    raw connection left idle while a test waits would be dropped by the server's inactivity
    probe (Rpc answers probes only while it waits for a reply), and a rogue can always
    connect again."""

    def __init__(self, net: SecureNet, chassis: str, port: int) -> None:
        self.net, self.chassis, self.port = net, chassis, port

    def transact(self, *ops: dict[str, Any]) -> list[Any]:
        rpc = self.net.rpc(self.chassis, self.port)
        try:
            return rpc.transact(*ops)
        finally:
            rpc.close()


@contextmanager
def rogue_chassis(net: SecureNet, chassis: str, port: int | None = None) -> Iterator[Rogue]:
    """The chassis' agent stopped (SIGSTOP: the attacker owns the host) and raw
    connections with its genuine certificate; the agent resumes afterwards."""
    faults.pause(net.directory, f"{chassis}/agent")
    try:
        yield Rogue(net, chassis, port or net.tls.sb_chassis_port)
    finally:
        faults.resume(net.directory, f"{chassis}/agent")


def wait_port(d: Path, name: str, predicate: Callable[[Row], bool], what: str) -> Row:
    """The port's binding once predicate holds of it (waits on the SB, not on time)."""
    with lab.cms(d) as cms:
        return cms.sb.wait_until(
            lambda s: next(
                (r for r in s.lookup("Port_Binding", "logical_port", name) if predicate(r)), None
            ),
            timeout=10,
            what=what,
        )


def test_a_chassis_cannot_write_into_another_ports_status(net: SecureNet) -> None:
    """hv3 reports a VIF of its own for vm1 (requested on hv1) and then refuses it with a
    text of escape codes and a line that looks like vm1 bound on hv3. Nothing of that text
    reaches vm1's row, status or doctor; a 300 KB text is refused by the server itself."""
    d = net.directory
    with rogue_chassis(net, "hv3") as rogue:
        inserted = rogue.transact(
            {
                "op": "insert",
                "table": "Chassis_VIF",
                "row": {"chassis": "hv3", "iface_id": "vm1"},
            }
        )
        assert outcome(inserted) == "ok", outcome(inserted)
        wait_port(
            d,
            "vm1",
            lambda r: "VIF on hv3 ignored" in r["status"].get("binding", ""),
            "hv3's VIF recorded as ignored",
        )
        huge = rogue.transact(
            update(
                "Chassis_VIF",
                {"status": ["map", [["error", "A" * 300_000]]]},
                chassis="hv3",
                iface_id="vm1",
            )
        )
        assert outcome(huge).startswith("constraint violation"), outcome(huge)[:200]
        forged = rogue.transact(
            update(
                "Chassis_VIF",
                {"status": ["map", [["error", FORGED]]]},
                chassis="hv3",
                iface_id="vm1",
            )
        )
        assert outcome(forged) == "ok", outcome(forged)
        # The refused VIF is no longer a candidate: northd drops it from the reasons.
        pb = wait_port(
            d,
            "vm1",
            lambda r: "hv3" not in r["status"].get("binding", ""),
            "hv3's refused VIF dropped",
        )
        assert pb["chassis"] == "hv1"
        assert "31m" not in str(dict(pb["status"])) and "hv3" not in str(dict(pb["status"]))
        text = human_status(d)
        assert_clean(text)
        assert re.search(r"^\s*port vm1\s+ls0\s+hv1\s+up", text, re.M), text
        doc = json_status(d)
        vm1 = next(p for p in doc["ports"] if p["name"] == "vm1")
        assert vm1["chassis"] == "hv1" and "31m" not in json.dumps(vm1["status"])
        assert_clean(doctor_output(d))
        rogue.transact(
            {"op": "delete", "table": "Chassis_VIF", "where": where(chassis="hv3", iface_id="vm1")}
        )


def test_a_named_chassis_refusal_is_repeated_only_escaped_and_bounded(net: SecureNet) -> None:
    """hv2, vm3's migration destination, may say why it refuses vm3's VIF: northd repeats
    that, escaped and cut, in vm3's status."""
    d = net.directory
    with rogue_chassis(net, "hv2") as rogue:
        text = FORGED + "B" * 5000
        inserted = rogue.transact(
            {
                "op": "insert",
                "table": "Chassis_VIF",
                "row": {
                    "chassis": "hv2",
                    "iface_id": "vm3",
                    "status": ["map", [["error", text[:1000]]]],
                },
            }
        )
        assert outcome(inserted) == "ok", outcome(inserted)
        try:
            pb = wait_port(
                d,
                "vm3",
                lambda r: "VIF on hv2 refused" in r["status"].get("error", ""),
                "hv2's refusal noted",
            )
            error = pb["status"]["error"]
            assert "\x1b" not in error and "\n" not in error
            assert "\\x1b[31mX\\x1b[0m\\n  port vm1" in error
            assert len(error) < 400
            human = human_status(d)
            assert_clean(human)
            assert "VIF on hv2 refused: \\x1b[31mX" in human
        finally:
            rogue.transact(
                {
                    "op": "delete",
                    "table": "Chassis_VIF",
                    "where": where(chassis="hv2", iface_id="vm3"),
                }
            )


def test_a_chassis_with_a_forged_address_is_ignored_and_printed_escaped(net: SecureNet) -> None:
    """hv3 sets its own encap_ip to an address followed by a line that looks like vm1 bound
    on hv3. It is no IP address: nobody builds a tunnel to it, northd takes hv3 for unusable
    (its own port vm4 loses its binding until it mends its row), and status prints the value
    escaped on hv3's own line; --json keeps it and stays valid."""
    d = net.directory
    forged = "198.18.0.3\n  port vm1          ls0      hv3      up"
    with rogue_chassis(net, "hv3") as rogue:
        original = rogue.transact(
            {
                "op": "select",
                "table": "Chassis",
                "where": where(name="hv3"),
                "columns": ["encap_ip"],
            }
        )[0]["rows"][0]["encap_ip"]
        try:
            assert outcome(rogue.transact(update("Chassis", {"encap_ip": forged}, name="hv3"))) == (
                "ok"
            )
            wait_port(d, "vm4", lambda r: r["chassis"] is None, "hv3 taken for unusable")
            text = human_status(d)
            assert_clean(text)
            hv3 = next(line for line in text.splitlines() if line.startswith("chassis hv3"))
            assert "198.18.0.3\\n  port vm1" in hv3 and "UNUSABLE" in hv3, hv3
            doc = json_status(d)
            assert next(c for c in doc["chassis"] if c["name"] == "hv3")["encap_ip"] == forged
            assert_clean(doctor_output(d))
            for chassis in ("hv1", "hv2"):
                tunnels = run_ovs_vsctl(
                    d, chassis, "--bare", "--columns=name", "find", "Interface", "type=geneve"
                )
                assert "lp-hv3" not in tunnels.split(), (chassis, tunnels)
        finally:
            rogue.transact(update("Chassis", {"encap_ip": original}, name="hv3"))
    wait_port(d, "vm4", lambda r: r["chassis"] == "hv3" and r["up"], "vm4 back on hv3")


def run_ovs_vsctl(d: Path, chassis: str, *args: str) -> str:
    host = lab.Layout.of(d).chassis(chassis)
    return subprocess.run(
        ["ovs-vsctl", f"--db={host.db_remote}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
