"""M8 in a secure lab: the SB server itself refuses a rogue chassis, whatever it sends.

The rogue holds hv3's genuine certificate and speaks raw OVSDB JSON-RPC over TLS (no agent
in the way), on both SB listeners. Every write outside hv3's own rows is refused by
ovsdb-server with a permission error (or, for a forged `authority`, a constraint
violation), and the network does not notice: vm1 stays on hv1 and keeps receiving.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveport.cms import security
from liveport.lab import lab, vms
from liveport.lab.secure import LabTls
from liveport.lab.state import is_lab
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model.security import CHASSIS_ROLE, CONTROL_ROLE
from liveport.ovsdb import schema, server
from liveport.runtime import pki
from liveport.runtime.process import stop_daemons

from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

SB = schema.SB_NAME


class Rpc:
    """One raw OVSDB JSON-RPC connection (TLS, or the operator's unix socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = ""
        self.next_id = 0

    @classmethod
    def tls(cls, port: int, creds: pki.Credentials | None, ca_cert: Path) -> Rpc:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(ca_cert)
        if creds is not None:
            context.load_cert_chain(creds.certificate, creds.private_key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        return cls(context.wrap_socket(raw))

    @classmethod
    def unix(cls, path: Path) -> Rpc:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        return cls(sock)

    def call(self, method: str, params: list[Any]) -> Any:
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


@dataclass
class SecureNet:
    directory: Path
    tls: LabTls

    def rpc(self, name: str, port: int) -> Rpc:
        creds = self.tls.credentials(name)
        return Rpc.tls(port, creds, Path(self.tls.pki_dir) / "control-ca.pem")


@pytest.fixture(scope="module")
def net() -> Iterator[SecureNet]:
    base = Path(tempfile.mkdtemp(prefix="lps-", dir="/tmp"))
    d = base / "lab"
    try:
        lab.up(d, 3, secure=True)
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
                    c["logical_port"] == "vm3" and c["chassis"] == "hv2"
                    for c in s.rows("Port_Claim")
                ),
                timeout=10,
                what="hv2's claim on vm3",
            )
        tls = lab.Layout.of(d).tls
        assert tls is not None
        yield SecureNet(d, tls)
    finally:
        if is_lab(d):
            lab.down(d)
        shutil.rmtree(base, ignore_errors=True)


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


@pytest.mark.parametrize("listener", ["chassis", "control"])
@pytest.mark.parametrize("attempt", sorted(ROGUE_WRITES))
def test_a_rogue_chassis_is_refused_by_the_server(
    net: SecureNet, attempt: str, listener: str
) -> None:
    port = net.tls.sb_chassis_port if listener == "chassis" else net.tls.sb_control_port
    rogue = net.rpc("hv3", port)
    try:
        result = outcome(rogue.transact(ROGUE_WRITES[attempt]))
    finally:
        rogue.close()
    role = "liveport-chassis" if listener == "chassis" else "liveport-control"
    assert result.startswith(f'permission error: RBAC rules for client "hv3" role "{role}"'), (
        f"{attempt} via the {listener} listener: {result}"
    )


def test_each_rogue_write_is_real(net: SecureNet) -> None:
    """Without a role (the operator's unix socket) every one of those writes would apply:
    each matches rows or inserts a valid one (checked inside a transaction that aborts)."""
    operator = Rpc.unix(lab.Layout.of(net.directory).sb.socket)
    try:
        for attempt, op in ROGUE_WRITES.items():
            results = operator.transact(op, {"op": "abort"})
            assert "error" not in results[0], f"{attempt}: {results[0]}"
            assert results[0].get("count", 1) >= 1, f"{attempt} matches no row"
            assert results[1]["error"] == "aborted"
    finally:
        operator.close()


def test_authority_cannot_be_forged(net: SecureNet) -> None:
    """On the control listener a row naming the rogue as its authority would pass RBAC; the
    schema allows only northd's name there."""
    rogue = net.rpc("hv3", net.tls.sb_control_port)
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
                    "authority": "hv3",
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
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        rogue = net.rpc("hv3", net.tls.nb_port)
        try:
            rogue.call(
                "transact", ["OVN_Northbound", update("Logical_Switch_Port", {}, name="vm1")]
            )
        finally:
            rogue.close()


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
    port = net.tls.sb_chassis_port
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
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        rpc = Rpc.tls(port, creds, ca)
        try:
            rpc.call("list_dbs", [])
        finally:
            rpc.close()
    # The same request with a trusted certificate is answered.
    good = net.rpc("hv3", net.tls.sb_chassis_port)
    try:
        assert SB in good.call("list_dbs", [])
    finally:
        good.close()


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
