"""liveport's PKI: real files, checked with cryptography and with real TLS handshakes."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import queue
import re
import shutil
import socket
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liveport.cli import pki as pki_cli
from liveport.model.errors import Conflict, InvalidInput, LiveportError, NotFound
from liveport.model.security import NORTHD_IDENTITY
from liveport.runtime import pki

from tests.forgery import forge

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init(directory)
    return directory


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    try:
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    except InvalidSignature:
        return False
    return True


def cn_of(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def key_matches(key_path: Path, cert: x509.Certificate) -> bool:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every entry under `directory` with its content, to compare before and after."""
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(kind).value


# ----- init -------------------------------------------------------------------------------


def test_init_creates_two_ca_and_the_sb_bundle(pki_dir: Path) -> None:
    control, chassis = cert_of(pki_dir / "control-ca.pem"), cert_of(pki_dir / "chassis-ca.pem")
    assert signed_by(control, control) and signed_by(chassis, chassis)
    assert not signed_by(chassis, control) and control.subject != chassis.subject
    for ca, key in ((control, "control-ca"), (chassis, "chassis-ca")):
        constraints = extension(ca, x509.BasicConstraints)
        assert constraints.ca
        usage = extension(ca, x509.KeyUsage)
        assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
        assert key_matches(pki_dir / "private" / f"{key}.key", ca)
        assert mode(pki_dir / "private" / f"{key}.key") == 0o600
    assert mode(pki_dir / "private") == 0o700
    # No bundle of both CAs: no process may trust both (a chassis CA key must not be able
    # to mint a certificate that a control listener accepts).
    assert not list(pki_dir.glob("*trust*"))
    assert (pki_dir / "certs").is_dir()
    assert not [p for p in pki_dir.parent.iterdir() if p.name != "pki"]  # no staging left


def test_init_twice_is_refused_and_changes_nothing(pki_dir: Path) -> None:
    before = tree(pki_dir)
    with pytest.raises(Conflict, match="already holds a PKI"):
        pki.init(pki_dir)
    assert tree(pki_dir) == before


def test_init_into_an_existing_directory_keeps_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("hello")
    pki.init(tmp_path)
    assert (tmp_path / "README").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README",
        "certs",
        "chassis-ca.pem",
        "control-ca.pem",
        "private",
    ]
    assert mode(tmp_path / "private") == 0o700


def test_init_refuses_a_directory_with_a_stray_private_dir(tmp_path: Path) -> None:
    (tmp_path / "private").mkdir()
    with pytest.raises(Conflict, match="in the way"):
        pki.init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["private"]


def failing_on_call(n: int, real: Callable[..., Any]) -> Callable[..., Any]:
    calls = {"n": 0}

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    return fake


def test_init_that_fails_leaves_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sign = pki._sign
    monkeypatch.setattr(pki, "_sign", failing_on_call(2, real_sign))  # the second CA
    with pytest.raises(RuntimeError, match="injected"):
        pki.init(tmp_path / "a" / "b" / "pki")
    assert list(tmp_path.iterdir()) == []  # not even the parents it created

    (tmp_path / "keep").write_text("x")
    monkeypatch.setattr(pki, "_sign", real_sign)
    # The third entry moved into an existing directory fails: the first two are taken back.
    monkeypatch.setattr(os, "link", failing_on_call(2, os.link))
    with pytest.raises(RuntimeError, match="injected"):
        pki.init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_init_refuses_nonpositive_days(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="days"):
        pki.init(tmp_path / "pki", days=0)
    assert list(tmp_path.iterdir()) == []


# ----- issue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "cn", "ca", "trust", "usages"),
    [
        ("chassis", "hv1", "hv1", "chassis-ca", "control-ca.pem", [CLIENT_AUTH]),
        ("northd", "northd", "liveport-northd", "control-ca", "control-ca.pem", [CLIENT_AUTH]),
        ("northd", "northd-2", "liveport-northd", "control-ca", "control-ca.pem", [CLIENT_AUTH]),
        ("cms", "cms", "liveport-cms", "control-ca", "control-ca.pem", [CLIENT_AUTH]),
        ("server", "sb", "sb", "control-ca", "control-ca.pem", [SERVER_AUTH, CLIENT_AUTH]),
        ("server", "nb", "nb", "control-ca", "control-ca.pem", [SERVER_AUTH, CLIENT_AUTH]),
    ],
)
def test_issue_signs_with_the_right_ca(
    pki_dir: Path,
    kind: str,
    name: str,
    cn: str,
    ca: str,
    trust: str,
    usages: list[x509.ObjectIdentifier],
) -> None:
    creds = pki.issue(pki_dir, kind, name)
    assert creds == pki.Credentials(
        private_key=pki_dir / "private" / f"{name}.key",
        certificate=pki_dir / "certs" / f"{name}.pem",
        ca_cert=pki_dir / trust,
    )
    cert = cert_of(creds.certificate)
    other = "control-ca" if ca == "chassis-ca" else "chassis-ca"
    assert signed_by(cert, cert_of(pki_dir / f"{ca}.pem"))
    assert not signed_by(cert, cert_of(pki_dir / f"{other}.pem"))
    assert cert.issuer == cert_of(pki_dir / f"{ca}.pem").subject
    assert cn_of(cert) == cn == pki.common_name(creds.certificate)
    assert list(extension(cert, x509.ExtendedKeyUsage)) == usages
    assert not extension(cert, x509.BasicConstraints).ca
    assert extension(cert, x509.KeyUsage).digital_signature
    assert key_matches(creds.private_key, cert)
    assert mode(creds.private_key) == 0o600
    assert creds.certificate.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert pki.credentials(pki_dir, name) == creds


def test_server_alt_names_default_and_given(pki_dir: Path) -> None:
    default = cert_of(pki.issue(pki_dir, "server", "sb").certificate)
    san = extension(default, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]

    hosts = ["10.0.0.5", "fd00::5", "db.example.com"]
    given = cert_of(pki.issue(pki_dir, "server", "nb", hosts=hosts).certificate)
    san = extension(given, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("fd00::5"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["db.example.com"]


def test_client_certificates_have_no_alt_names(pki_dir: Path) -> None:
    cert = cert_of(pki.issue(pki_dir, "chassis", "hv1").certificate)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "1-64 letters"),
        ("h" * 65, "1-64 letters"),
        ("hv 1", "1-64 letters"),
        ("../hv1", "1-64 letters"),
        ("hvé", "1-64 letters"),
        ("liveport-hv1", "reserved for control identities"),
        ("liveport-northd", "reserved for control identities"),
        ("chassis-ca", "CA's own files"),
    ],
)
def test_invalid_chassis_names_are_refused(pki_dir: Path, name: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as excinfo:
        pki.issue(pki_dir, "chassis", name)
    assert "chassis name" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert list((pki_dir / "certs").iterdir()) == []


def test_valid_chassis_names_are_accepted(pki_dir: Path) -> None:
    for name in ("h", "hv_1.rack-2", "H" * 64, "liveport"):
        assert cn_of(cert_of(pki.issue(pki_dir, "chassis", name).certificate)) == name


@pytest.mark.parametrize(
    ("kind", "name", "kwargs", "problem"),
    [
        ("server", "liveport-nb", {}, "reserved for control identities"),
        ("server", "control-ca", {}, "CA's own files"),
        ("router", "r1", {}, "unknown certificate kind"),
        ("cms", "cms", {"hosts": ["db"]}, "only to server"),
        ("server", "nb", {"hosts": ["not a host"]}, "neither an IP address nor a DNS name"),
        ("chassis", "hv1", {"days": 0}, "days must be between"),
        ("chassis", "hv1", {"days": -5}, "days must be between"),
        (
            "chassis",
            "hv1",
            {"not_before": dt.datetime(2030, 1, 1), "not_after": dt.datetime(2029, 1, 1)},
            "must be after",
        ),
    ],
)
def test_bad_issue_requests_are_refused(
    pki_dir: Path, kind: str, name: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        pki.issue(pki_dir, kind, name, **kwargs)
    assert list((pki_dir / "certs").iterdir()) == []


def test_issue_without_a_pki_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="liveport pki init"):
        pki.issue(tmp_path / "nowhere", "chassis", "hv1")
    assert list(tmp_path.iterdir()) == []


def test_issue_refuses_to_overwrite_unless_forced(pki_dir: Path) -> None:
    first = pki.issue(pki_dir, "chassis", "hv1")
    before = tree(pki_dir)
    with pytest.raises(Conflict, match="hv1"):
        pki.issue(pki_dir, "chassis", "hv1")
    assert tree(pki_dir) == before

    # A key without its certificate (or the reverse) is also not overwritten.
    first.certificate.unlink()
    with pytest.raises(Conflict, match=r"hv1\.key"):
        pki.issue(pki_dir, "chassis", "hv1")

    second = pki.issue(pki_dir, "chassis", "hv1", force=True)
    assert second == first
    assert second.private_key.read_bytes() != before["private/hv1.key"]
    cert = cert_of(second.certificate)
    assert cert.serial_number != cert_of_bytes(before["certs/hv1.pem"]).serial_number
    assert key_matches(second.private_key, cert) and mode(second.private_key) == 0o600
    assert sorted(p.name for p in (pki_dir / "certs").iterdir()) == ["hv1.pem"]
    assert sorted(p.name for p in (pki_dir / "private").iterdir()) == [
        "chassis-ca.key",
        "control-ca.key",
        "hv1.key",
    ]


def cert_of_bytes(data: bytes | None) -> x509.Certificate:
    assert data is not None
    return x509.load_pem_x509_certificate(data)


def test_issue_that_fails_while_signing_leaves_nothing(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(pki_dir)
    monkeypatch.setattr(pki, "_sign", failing_on_call(1, pki._sign))
    with pytest.raises(RuntimeError, match="injected"):
        pki.issue(pki_dir, "chassis", "hv1")
    assert tree(pki_dir) == before


def test_issue_that_fails_installing_the_certificate_takes_the_key_back(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(pki_dir)
    real_link = os.link

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".pem"):
            raise OSError(28, "No space left on device", str(dst))
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(LiveportError, match="No space left on device"):
        pki.issue(pki_dir, "server", "nb")
    assert tree(pki_dir) == before


def test_validity_defaults_and_overrides(pki_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    cert = cert_of(pki.issue(pki_dir, "chassis", "hv1", days=10).certificate)
    not_before = cert.not_valid_before.replace(tzinfo=dt.UTC)
    not_after = cert.not_valid_after.replace(tzinfo=dt.UTC)
    assert now - dt.timedelta(hours=1) < not_before <= now
    assert abs(not_after - (now + dt.timedelta(days=10))) < dt.timedelta(minutes=1)

    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
    cert = cert_of(
        pki.issue(pki_dir, "chassis", "hv2", not_before=start, not_after=end).certificate
    )
    assert cert.not_valid_before == start.replace(tzinfo=None)
    assert cert.not_valid_after == end.replace(tzinfo=None)


# ----- reading back -----------------------------------------------------------------------


def test_list_reports_cas_certificates_and_expiry(pki_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    pki.issue(pki_dir, "server", "sb")
    pki.issue(pki_dir, "chassis", "hv2")
    pki.issue(pki_dir, "northd", "northd")
    pki.issue(
        pki_dir,
        "chassis",
        "hv1",
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(days=1),
    )
    pki.issue(pki_dir, "cms", "cms")
    (pki_dir / "certs" / ".hv3.pem.0123.tmp").write_text("half written")
    infos = pki.list_certificates(pki_dir)
    summary = [(i.name, i.kind, i.common_name, i.issuer, i.expired) for i in infos]
    assert summary == [
        ("chassis-ca", "ca", "liveport chassis CA", "chassis", False),
        ("cms", "cms", "liveport-cms", "control", False),
        ("control-ca", "ca", "liveport control CA", "control", False),
        ("hv1", "chassis", "hv1", "chassis", True),
        ("hv2", "chassis", "hv2", "chassis", False),
        ("northd", "northd", "liveport-northd", "control", False),
        ("sb", "server", "sb", "control", False),
    ]
    assert infos[3].path == pki_dir / "certs" / "hv1.pem"
    assert infos[3].not_after < now < infos[4].not_after
    later = pki.list_certificates(pki_dir, now=now + dt.timedelta(days=4000))
    assert all(info.expired for info in later)
    assert json.loads(json.dumps([i.to_json() for i in infos]))[3]["expired"] is True


def test_certificates_of_another_pki_are_not_recognised(pki_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init(other)
    foreign = pki.issue(other, "chassis", "hv9")
    shutil.copy(foreign.certificate, pki_dir / "certs" / "hv9.pem")
    shutil.copy(foreign.private_key, pki_dir / "private" / "hv9.key")
    with pytest.raises(InvalidInput, match="not issued by the PKI"):
        pki.credentials(pki_dir, "hv9")
    (info,) = [i for i in pki.list_certificates(pki_dir) if i.name == "hv9"]
    assert (info.kind, info.issuer) == ("unknown", "unknown")


def test_credentials_errors_name_the_file(pki_dir: Path) -> None:
    with pytest.raises(NotFound, match="hv1"):
        pki.credentials(pki_dir, "hv1")
    with pytest.raises(InvalidInput, match="invalid name"):
        pki.credentials(pki_dir, "../control-ca")

    creds = pki.issue(pki_dir, "chassis", "hv1")
    other = pki.issue(pki_dir, "chassis", "hv2")
    shutil.copy(other.private_key, creds.private_key)
    with pytest.raises(InvalidInput, match="is not the private key of"):
        pki.credentials(pki_dir, "hv1")
    creds.private_key.unlink()
    with pytest.raises(NotFound, match=r"hv1\.key"):
        pki.credentials(pki_dir, "hv1")

    bad = pki_dir / "certs" / "hv2.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    for call in (
        lambda: pki.credentials(pki_dir, "hv2"),
        lambda: pki.common_name(bad),
        lambda: pki.list_certificates(pki_dir),
    ):
        with pytest.raises(InvalidInput, match=re.escape(str(bad))):
            call()
    with pytest.raises(NotFound, match=r"missing\.pem"):
        pki.common_name(pki_dir / "missing.pem")


def test_a_broken_ca_key_is_reported_not_raised_raw(pki_dir: Path) -> None:
    (pki_dir / "private" / "chassis-ca.key").write_text("not a key")
    with pytest.raises(InvalidInput, match=r"chassis-ca\.key"):
        pki.issue(pki_dir, "chassis", "hv1")
    pki.issue(pki_dir, "northd", "northd")  # the control CA is unaffected


# ----- command line -----------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="liveport")
    pki_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def test_cli_init_issue_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    monkeypatch.setenv("LIVEPORT_PKI_DIR", str(directory))
    assert run_cli("pki", "init", "--days", "30") == 0
    assert str(directory) in capsys.readouterr().out
    assert cert_of(directory / "control-ca.pem").not_valid_after < dt.datetime.now() + (
        dt.timedelta(days=31)
    )

    assert run_cli("pki", "issue", "server", "sb", "--host", "10.1.1.1", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ca_cert"] == str(directory / "control-ca.pem")
    assert doc["certificate"] == str(directory / "certs" / "sb.pem")
    assert doc["private_key"] == str(directory / "private" / "sb.key")
    san = extension(cert_of(directory / "certs" / "sb.pem"), x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.1.1")]

    assert run_cli("pki", "issue", "northd") == 0
    out = capsys.readouterr().out
    assert str(directory / "private" / "northd.key") in out
    assert str(directory / "control-ca.pem") in out
    with pytest.raises(Conflict):
        run_cli("pki", "issue", "northd")
    assert run_cli("pki", "issue", "northd", "--force") == 0
    with pytest.raises(InvalidInput, match="needs a NAME"):
        run_cli("pki", "issue", "chassis")
    with pytest.raises(InvalidInput, match="reserved"):
        run_cli("pki", "issue", "chassis", "liveport-x")

    other = tmp_path / "elsewhere"
    assert run_cli("pki", "init", "--dir", str(other)) == 0
    assert run_cli("pki", "issue", "cms", "--dir", str(other)) == 0
    assert (other / "certs" / "cms.pem").exists() and not (directory / "certs" / "cms.pem").exists()
    capsys.readouterr()

    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    pki.issue(directory, "chassis", "hv1", not_before=past - dt.timedelta(days=1), not_after=past)
    assert run_cli("pki", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "CN", "ISSUER", "EXPIRES"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["chassis-ca", "control-ca", "hv1", "northd", "sb"]
    assert rows["hv1"].endswith("EXPIRED") and "EXPIRED" not in rows["sb"]
    assert rows["northd"].split()[:4] == ["northd", "northd", "liveport-northd", "control"]

    assert run_cli("pki", "list", "--json") == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["hv1"]["expired"] is True and listed["sb"]["kind"] == "server"


def test_cli_without_a_pki(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="liveport pki init"):
        run_cli("pki", "list", "--dir", str(tmp_path / "none"))


# ----- real TLS ---------------------------------------------------------------------------


class TlsServer:
    """A TLS server on 127.0.0.1 that requires client certificates, as ovsdb-server does.

    Each connection is handshaken in the server's thread; the outcome (None for success, or
    the exception) goes to `outcomes`, and a successful client is sent b"ok".
    """

    def __init__(self, creds: pki.Credentials) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(creds.certificate, creds.private_key)
        self.context.load_verify_locations(creds.ca_cert)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.outcomes: queue.Queue[Exception | None] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
                self.outcomes.put(None)
            except (ssl.SSLError, OSError) as exc:
                conn.close()
                self.outcomes.put(exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close would not)
        self.listener.close()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def connect(self, client: ssl.SSLContext) -> tuple[bytes | Exception, Exception | None]:
        """What the client received (or its error), and the server's outcome."""
        received: bytes | Exception
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            try:
                with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    received = tls.recv(2)  # TLS 1.3 reports a refused client cert here
            except (ssl.SSLError, OSError) as exc:
                received = exc
        return received, self.outcomes.get(timeout=5)


def client_context(ca_cert: Path, creds: pki.Credentials | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
    context.load_verify_locations(ca_cert)
    if creds is not None:
        context.load_cert_chain(creds.certificate, creds.private_key)
    return context


@pytest.fixture
def tls_server(pki_dir: Path) -> Iterator[Callable[[str], TlsServer]]:
    servers: list[TlsServer] = []

    def start(name: str) -> TlsServer:
        server = TlsServer(pki.issue(pki_dir, "server", name))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def refused_because(outcome: Exception | None, reason: str) -> bool:
    return isinstance(outcome, ssl.SSLError) and reason in str(outcome)


def test_real_tls_sb_accepts_control_identities_only(
    pki_dir: Path, tmp_path: Path, tls_server: Callable[[str], TlsServer]
) -> None:
    """The SB server trusts the control CA alone: northd gets in, a chassis does not, and
    neither does a certificate for northd's name minted with the chassis CA's key."""
    server = tls_server("sb")
    control_ca = pki_dir / "control-ca.pem"
    northd = pki.issue(pki_dir, "northd", "northd")
    assert server.connect(client_context(northd.ca_cert, northd)) == (b"ok", None)
    hv1 = pki.issue(pki_dir, "chassis", "hv1")
    received, outcome = server.connect(client_context(control_ca, hv1))
    assert received != b"ok" and refused_because(outcome, "certificate verify failed")
    fake_northd = forge(pki_dir, "chassis-ca", NORTHD_IDENTITY, tmp_path / "forged")
    received, outcome = server.connect(client_context(control_ca, fake_northd))
    assert received != b"ok" and refused_because(outcome, "certificate verify failed")


def test_real_tls_chassis_relay_accepts_chassis_and_refuses_strangers(
    pki_dir: Path, tmp_path: Path
) -> None:
    pki.issue(pki_dir, "server", "sb")
    relay = TlsServer(pki.relay_credentials(pki_dir))
    try:
        control_ca = pki_dir / "control-ca.pem"
        hv1 = pki.issue(pki_dir, "chassis", "hv1")
        assert hv1.ca_cert == control_ca  # the client still checks the relay as a server
        received, outcome = relay.connect(client_context(hv1.ca_cert, hv1))
        assert received == b"ok" and outcome is None
        northd = pki.issue(pki_dir, "northd", "northd")
        received, outcome = relay.connect(client_context(control_ca, northd))
        assert received != b"ok" and refused_because(outcome, "certificate verify failed")

        other = tmp_path / "other"
        pki.init(other)
        stranger = pki.issue(other, "chassis", "hv1")  # same CN, same CA names, other keys
        received, outcome = relay.connect(client_context(control_ca, stranger))
        assert received != b"ok" and refused_because(outcome, "certificate verify failed")

        received, outcome = relay.connect(client_context(control_ca, None))
        assert received != b"ok" and refused_because(outcome, "did not return a certificate")

        now = dt.datetime.now(dt.UTC)
        expired = pki.issue(
            pki_dir,
            "chassis",
            "hv2",
            not_before=now - dt.timedelta(days=2),
            not_after=now - dt.timedelta(days=1),
        )
        received, outcome = relay.connect(client_context(control_ca, expired))
        assert received != b"ok" and refused_because(outcome, "certificate has expired")
    finally:
        relay.close()


def test_real_tls_nb_refuses_chassis_and_clients_refuse_foreign_servers(
    pki_dir: Path, tmp_path: Path, tls_server: Callable[[str], TlsServer]
) -> None:
    server = tls_server("nb")
    control_ca = pki_dir / "control-ca.pem"
    cms = pki.issue(pki_dir, "cms", "cms")
    assert server.connect(client_context(control_ca, cms)) == (b"ok", None)
    hv1 = pki.issue(pki_dir, "chassis", "hv1")
    received, outcome = server.connect(client_context(control_ca, hv1))
    assert received != b"ok" and refused_because(outcome, "certificate verify failed")

    # A client checks the server against its own control CA: another PKI's server is refused.
    other = tmp_path / "other"
    pki.init(other)
    foreign_nb = TlsServer(pki.issue(other, "server", "nb"))
    try:
        received, outcome = foreign_nb.connect(client_context(control_ca, cms))
        assert isinstance(received, ssl.SSLCertVerificationError)
        assert outcome is not None
    finally:
        foreign_nb.close()


def test_the_chassis_relay_trusts_only_the_chassis_ca(pki_dir: Path) -> None:
    pki.issue(pki_dir, "server", "sb")
    relay = pki.relay_credentials(pki_dir)
    server = pki.credentials(pki_dir, "sb")
    assert (relay.private_key, relay.certificate) == (server.private_key, server.certificate)
    assert relay.ca_cert == pki_dir / "chassis-ca.pem"
    assert server.ca_cert == pki_dir / "control-ca.pem"
