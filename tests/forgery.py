"""What an attacker holding a CA's private key can do: sign a certificate with any Common
Name. Written with `cryptography` directly, as an attacker would, not with liveport's PKI
(which refuses to issue such names)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liveport.runtime import pki


def forge(pki_dir: Path, ca: str, common_name: str, out: Path) -> pki.Credentials:
    """A key and a certificate for `common_name` signed with the key of CA `ca`
    ("chassis-ca" or "control-ca") of the PKI in pki_dir, written under out; the returned
    credentials trust the control CA (as every client of liveport's servers does)."""
    ca_cert = x509.load_pem_x509_certificate((pki_dir / f"{ca}.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (pki_dir / "private" / f"{ca}.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / f"{common_name}.key", out / f"{common_name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki.Credentials(key_path, cert_path, pki_dir / "control-ca.pem")
