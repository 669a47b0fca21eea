"""liveport's small PKI: the certificates for TLS between OVSDB servers and their clients.

Trust model. ovsdb-server has one TLS context per process, so it cannot trust different CAs on
different listeners. liveport therefore runs two CAs, and gives each its own processes:

- the **control CA** signs the database servers (NB, SB), northd and the CMS;
- the **chassis CA** signs only hypervisor (chassis) certificates, whose Common Name is the
  chassis name (ovsdb-server's RBAC matches the CN against row columns).

The NB server and the SB server trust only the control CA, so a chassis certificate cannot
even connect to them. Chassis reach the SB through an SB relay that trusts only the chassis
CA (``relay_credentials``) and forwards their writes, checked against the chassis role,
to the SB server over its unix socket. A certificate the chassis CA signs can therefore
never act as northd, whatever its Common Name. Every client verifies its server against
the control CA. northd instances share the CN ``liveport-northd`` and CMS clients
``liveport-cms``; the prefix ``liveport-`` is reserved for these control identities and
refused in chassis and server names.

Layout of a PKI directory::

    DIR/control-ca.pem            control CA certificate
    DIR/chassis-ca.pem            chassis CA certificate (what the SB's chassis relay trusts)
    DIR/private/control-ca.key    CA keys, 0600, in a 0700 directory
    DIR/private/chassis-ca.key
    DIR/certs/NAME.pem            an issued certificate (followed by nothing else)
    DIR/private/NAME.key          its private key, 0600

Keys are ECDSA P-256 (PKCS#8 PEM, unencrypted), serial numbers random. Files are written to a
temporary name next to their destination and renamed into place, so a reader sees a whole file
or none; keys are created 0600 and are never readable by others, not even briefly. ``init``
either creates the whole PKI or leaves nothing behind. Nothing here is concurrent beyond that:
two ``issue`` calls for the same name cannot both win (the second gets Conflict, unless forced).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liveport.model.errors import Conflict, InvalidInput, LiveportError, NotFound
from liveport.model.security import CMS_IDENTITY, NORTHD_IDENTITY, RESERVED_PREFIX

DEFAULT_DIR: Final = Path("/etc/liveport/pki")
DIR_ENV: Final = "LIVEPORT_PKI_DIR"

KINDS: Final = ("chassis", "northd", "cms", "server")
DEFAULT_HOSTS: Final = ("127.0.0.1", "localhost")
NORTHD_CN: Final = NORTHD_IDENTITY  # what the SB's RBAC expects of northd (model.security)
CMS_CN: Final = CMS_IDENTITY

CONTROL_CA: Final = "control-ca"
CHASSIS_CA: Final = "chassis-ca"
_CA_LABELS: Final = {CONTROL_CA: "control", CHASSIS_CA: "chassis"}
_TOP_LEVEL: Final = ("private", "certs", f"{CONTROL_CA}.pem", f"{CHASSIS_CA}.pem")

MAX_DAYS: Final = 100 * 365
_BACKDATE: Final = dt.timedelta(minutes=5)  # tolerate clocks a little behind ours

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class Credentials:
    """What a TLS client or server passes to OVS or python-ovs."""

    private_key: Path  # --private-key
    certificate: Path  # --certificate
    ca_cert: Path  # --ca-cert: what the peer's certificate must be signed by

    def to_json(self) -> dict[str, str]:
        return {
            "private_key": str(self.private_key),
            "certificate": str(self.certificate),
            "ca_cert": str(self.ca_cert),
        }


@dataclass(frozen=True)
class CertInfo:
    """One certificate of a PKI directory, as `list_certificates` reports it."""

    name: str
    kind: str  # "ca", one of KINDS, or "unknown" (not signed by this PKI, or unrecognised)
    common_name: str
    issuer: str  # "control", "chassis", or "unknown"
    not_before: dt.datetime  # UTC
    not_after: dt.datetime  # UTC
    expired: bool
    path: Path

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "common_name": self.common_name,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "expired": self.expired,
            "path": str(self.path),
        }


def resolve(directory: Path | str | None) -> Path:
    """The PKI directory: the one given, else $LIVEPORT_PKI_DIR, else /etc/liveport/pki."""
    if directory is not None:
        return Path(directory).absolute()
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute()


# ----- public operations ------------------------------------------------------------------


def init(directory: Path, *, days: int = 3650) -> None:
    """Create both CAs and the SB trust bundle in `directory` (created if missing)."""
    _check_days(days)
    root = Path(directory)
    with _os_errors():
        _refuse_existing(root)
        start = _now() - _BACKDATE
        cas = [_make_ca(label, start, start + dt.timedelta(days=days)) for label in _CA_LABELS]
        created = _make_parents(root.parent)
        try:
            if root.exists():
                _init_in_place(root, cas)
            else:
                _init_by_rename(root, cas)
        except BaseException:
            for parent in reversed(created):
                with contextlib.suppress(OSError):
                    parent.rmdir()
            raise


def issue(
    directory: Path,
    kind: str,
    name: str,
    *,
    days: int = 825,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    hosts: Sequence[str] = (),
    force: bool = False,
) -> Credentials:
    """Issue a certificate of `kind` stored as certs/NAME.pem and private/NAME.key.

    chassis: CN = name, chassis CA. northd, cms: the shared control identity
    (liveport-northd, liveport-cms), control CA; `name` only names the files. server: CN =
    name, control CA, subjectAltName = `hosts` (default 127.0.0.1 and localhost).
    """
    _check_kind(kind)
    _check_name(name, kind)
    if hosts and kind != "server":
        raise InvalidInput(f"hosts apply only to server certificates, not to {kind}")
    alt_names = _subject_alt_names(hosts or DEFAULT_HOSTS) if kind == "server" else None
    start, end = _validity(days, not_before, not_after)
    root = Path(directory)
    creds = _credentials_for(root, kind, name)
    with _os_errors():
        _require_pki(root)
        if not force:
            _refuse_overwrite(creds)
        ca_label = "chassis" if kind == "chassis" else "control"
        ca_cert, ca_key = _load_ca(root, f"{ca_label}-ca")
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _leaf_builder(
            key, ca_cert, ca_key, _common_name_for(kind, name), start, end
        ).add_extension(_extended_key_usage(kind), critical=False)
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        cert = _sign(builder, ca_key)
        _install_pair(
            creds.private_key, _key_pem(key), creds.certificate, _cert_pem(cert), force=force
        )
    return creds


def credentials(directory: Path, name: str) -> Credentials:
    """The credentials of an already issued certificate, its kind read back from it."""
    root = Path(directory)
    _check_name(name)
    with _os_errors():
        _require_pki(root)
        cert_path, key_path = root / "certs" / f"{name}.pem", root / "private" / f"{name}.key"
        if not cert_path.exists():
            raise NotFound(f"no certificate named {name!r} in {root} ({cert_path} is missing)")
        cert = _load_cert(cert_path)
        if not key_path.exists():
            raise NotFound(f"the private key of {name!r} is missing: {key_path}")
        if _public_der(_load_key(key_path).public_key()) != _public_der(cert.public_key()):
            raise InvalidInput(f"{key_path} is not the private key of {cert_path}")
        control, chassis = (
            _load_cert(_ca_path(root, CONTROL_CA)),
            _load_cert(_ca_path(root, CHASSIS_CA)),
        )
        kind, _ = _classify(cert, control, chassis)
    if kind == "unknown":
        raise InvalidInput(f"{cert_path} was not issued by the PKI in {root}")
    return _credentials_for(root, kind, name)


def relay_credentials(directory: Path, server: str = "sb") -> Credentials:
    """What the SB's chassis relay runs with: the SB server's key and certificate (agents
    check it against the control CA like any server), trusting only the chassis CA."""
    creds = credentials(directory, server)
    return Credentials(creds.private_key, creds.certificate, Path(directory) / f"{CHASSIS_CA}.pem")


def common_name(certificate: Path) -> str:
    """The Common Name of the certificate in a PEM file."""
    with _os_errors():
        return _common_name(_load_cert(Path(certificate)), Path(certificate))


def list_certificates(directory: Path, *, now: dt.datetime | None = None) -> list[CertInfo]:
    """The two CAs (kind "ca") and every issued certificate, sorted by name.

    `expired` is judged at `now` (default: the current time).
    """
    root = Path(directory)
    at = _utc(now) if now is not None else _now()
    with _os_errors():
        _require_pki(root)
        control_path, chassis_path = _ca_path(root, CONTROL_CA), _ca_path(root, CHASSIS_CA)
        control, chassis = _load_cert(control_path), _load_cert(chassis_path)
        infos = [
            _info(CONTROL_CA, "ca", "control", control, control_path, at),
            _info(CHASSIS_CA, "ca", "chassis", chassis, chassis_path, at),
        ]
        certs_dir = root / "certs"
        entries = sorted(certs_dir.iterdir()) if certs_dir.is_dir() else []
        for path in entries:
            name = path.name.removesuffix(".pem")
            if path.suffix != ".pem" or not _NAME.fullmatch(name) or not path.is_file():
                continue  # temporary files of a write in progress, strays
            cert = _load_cert(path)
            kind, issuer = _classify(cert, control, chassis)
            infos.append(_info(name, kind, issuer, cert, path, at))
    return sorted(infos, key=lambda info: info.name)


# ----- validation -------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"unknown certificate kind {kind!r} (one of {', '.join(KINDS)})")


def _check_name(name: str, kind: str = "") -> None:
    what = f"{kind} name" if kind else "name"
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid {what} {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    if name in _CA_LABELS:
        raise InvalidInput(f"invalid {what} {name!r}: it names the CA's own files")
    if kind in ("chassis", "server") and name.startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"invalid {what} {name!r}: the prefix {RESERVED_PREFIX!r} is reserved "
            "for control identities"
        )


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be between 1 and {MAX_DAYS}, not {days}")


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    _check_days(days)
    start = _utc(not_before) if not_before is not None else _now() - _BACKDATE
    if not_after is not None:
        end = _utc(not_after)
    elif not_before is not None:
        end = start + dt.timedelta(days=days)
    else:
        end = _now() + dt.timedelta(days=days)
    if end <= start:
        raise InvalidInput(
            f"not_after ({end.isoformat()}) must be after not_before ({start.isoformat()})"
        )
    return start, end


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise InvalidInput(
                    f"host {host!r} is neither an IP address nor a DNS name"
                ) from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


# ----- building certificates -------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _utc(t: dt.datetime) -> dt.datetime:
    """Naive datetimes are UTC (as in certificates); aware ones are converted."""
    t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    return t.replace(microsecond=0)


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _extended_key_usage(kind: str) -> x509.ExtendedKeyUsage:
    if kind == "server":
        # Clustered ovsdb-servers connect to their peers, and backups to their active
        # server, with the same certificate: a server is also a client.
        return x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        )
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def _make_ca(
    label: str, start: dt.datetime, end: dt.datetime
) -> tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "liveport"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"liveport {_CA_LABELS[label]} CA"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return label, key, _sign(builder, key)


def _leaf_builder(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def _common_name_for(kind: str, name: str) -> str:
    return {"northd": NORTHD_CN, "cms": CMS_CN}.get(kind, name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ----- reading certificates ---------------------------------------------------------------


def _ca_path(root: Path, ca: str) -> Path:
    return root / f"{ca}.pem"


def _credentials_for(root: Path, kind: str, name: str) -> Credentials:
    return Credentials(
        private_key=root / "private" / f"{name}.key",
        certificate=root / "certs" / f"{name}.pem",
        ca_cert=root / f"{CONTROL_CA}.pem",
    )


def _require_pki(root: Path) -> None:
    if not _ca_path(root, CONTROL_CA).exists() or not _ca_path(root, CHASSIS_CA).exists():
        raise NotFound(f"no PKI in {root} (create one with `liveport pki init --dir {root}`)")


def _load_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InvalidInput(f"{path} does not hold a PEM certificate") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(f"{path} does not hold an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path} is not an ECDSA key")
    return key


def _load_ca(root: Path, ca: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = _ca_path(root, ca), root / "private" / f"{ca}.key"
    cert, key = _load_cert(cert_path), _load_key(key_path)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise InvalidInput(f"{key_path} is not the private key of {cert_path}")
    return cert, key


def _common_name(cert: x509.Certificate, path: Path) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        raise InvalidInput(f"{path} has no Common Name")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    public = ca.public_key()
    hash_algorithm = cert.signature_hash_algorithm
    if cert.issuer != ca.subject or hash_algorithm is None:
        return False
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature:
        return False
    return True


def _is_server(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def _classify(
    cert: x509.Certificate, control: x509.Certificate, chassis: x509.Certificate
) -> tuple[str, str]:
    """(kind, issuer) of an issued certificate; "unknown" for what this PKI did not sign."""
    if _signed_by(cert, chassis):
        return "chassis", "chassis"
    if not _signed_by(cert, control):
        return "unknown", "unknown"
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = values[0].value if values else None
    if cn == NORTHD_CN:
        return "northd", "control"
    if cn == CMS_CN:
        return "cms", "control"
    return ("server" if _is_server(cert) else "unknown"), "control"


def _info(
    name: str, kind: str, issuer: str, cert: x509.Certificate, path: Path, at: dt.datetime
) -> CertInfo:
    not_after = cert.not_valid_after.replace(tzinfo=dt.UTC)
    return CertInfo(
        name=name,
        kind=kind,
        common_name=_common_name(cert, path),
        issuer=issuer,
        not_before=cert.not_valid_before.replace(tzinfo=dt.UTC),
        not_after=not_after,
        expired=at > not_after,
        path=path,
    )


# ----- files ------------------------------------------------------------------------------


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """An operating-system failure (permissions, full disk) as a one-line LiveportError."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise LiveportError(f"{where}{exc.strerror or exc}") from exc


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never wider), write and sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _staged(final: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a fresh temporary name beside `final` (never ending in .pem)."""
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
    _write_new(tmp, data, mode)
    return tmp


def _refuse_existing(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise Conflict(f"{root} exists and is not a directory")
    if _ca_path(root, CONTROL_CA).exists() or _ca_path(root, CHASSIS_CA).exists():
        raise Conflict(f"{root} already holds a PKI")
    for entry in _TOP_LEVEL:
        if (root / entry).exists():
            raise Conflict(f"{root / entry} is in the way of a new PKI")


def _refuse_overwrite(creds: Credentials) -> None:
    for path in (creds.certificate, creds.private_key):
        if path.exists():
            raise Conflict(f"{path} exists (use force to replace it)")


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p, returning the directories created (outermost first) for an undo."""
    missing = []
    for parent in [directory, *directory.parents]:
        if parent.exists():
            break
        missing.append(parent)
    missing.reverse()
    for parent in missing:
        parent.mkdir(mode=0o755, exist_ok=True)
    return missing


def _populate(
    staging: Path, cas: Sequence[tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]]
) -> None:
    private, certs = staging / "private", staging / "certs"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    certs.mkdir(mode=0o755)
    for label, key, cert in cas:
        _write_new(private / f"{label}.key", _key_pem(key), 0o600)
        _write_new(staging / f"{label}.pem", _cert_pem(cert), 0o644)


def _init_by_rename(
    root: Path, cas: Sequence[tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]]
) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        _populate(staging, cas)
        staging.chmod(0o755)
        try:
            staging.rename(root)
        except OSError as exc:
            raise Conflict(f"{root} appeared while the PKI was created: {exc.strerror}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _init_in_place(
    root: Path, cas: Sequence[tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]]
) -> None:
    """Populate an existing directory: stage inside it, then move each entry into place."""
    staging = Path(tempfile.mkdtemp(prefix=".pki-init.", suffix=".tmp", dir=root))
    moved: list[Path] = []
    try:
        _populate(staging, cas)
        for entry in _TOP_LEVEL:
            source, target = staging / entry, root / entry
            if source.is_dir():
                source.rename(target)
            else:
                os.link(source, target)  # fails rather than replace a file that appeared
            moved.append(target)
    except BaseException:
        for target in moved:
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_pair(
    key_path: Path, key_pem: bytes, cert_path: Path, cert_pem: bytes, *, force: bool
) -> None:
    """Move a key and its certificate into place, each atomically, the key first."""
    tmp_key = _staged(key_path, key_pem, 0o600)
    tmp_cert: Path | None = None
    try:
        tmp_cert = _staged(cert_path, cert_pem, 0o644)
        if force:
            tmp_key.replace(key_path)
            tmp_cert.replace(cert_path)
            return
        try:
            os.link(tmp_key, key_path)
        except FileExistsError:
            raise Conflict(f"{key_path} exists (use force to replace it)") from None
        try:
            os.link(tmp_cert, cert_path)
        except BaseException as exc:
            key_path.unlink(missing_ok=True)
            if isinstance(exc, FileExistsError):
                raise Conflict(f"{cert_path} exists (use force to replace it)") from None
            raise
    finally:
        tmp_key.unlink(missing_ok=True)
        if tmp_cert is not None:
            tmp_cert.unlink(missing_ok=True)
