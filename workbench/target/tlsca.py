"""The workbench's own certificate authority: one CA per state folder, and the leaves it issues.

The CA (``ca.pem``, ECDSA P-256, ten years) is what every client of the embedded targets trusts
(``--ca-file``, ``CERTCTL_CA_FILE``); its key (``ca-key.pem``) is kept beside it, mode 0600, so
it can issue more than the stand-in's certificate: the connector daemons' (nginx, Apache,
HAProxy, the F5 mock), each on loopback. Private keys are written 0600 from their first byte
and never enter a record, a result or a log.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
CA_NAME = "certctl workbench stand-in CA"
LEAF_DAYS = 825
RENEW_BEFORE = timedelta(days=7)  # a leaf closer than this to its end is issued again
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


def ensure_ca(tls_dir: Path) -> tuple[Path, Path]:
    """The CA certificate and key in ``tls_dir``, made once and kept (both or neither)."""
    ca_file, key_file = tls_dir / CA_FILE, tls_dir / CA_KEY_FILE
    if ca_file.exists() and key_file.exists():
        return ca_file, key_file
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_file, _pem_key(key))
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_file, key_file


def issue(tls_dir: Path, common_name: str, cert_file: Path, key_file: Path,
          names: tuple[str, ...] = LOOPBACK_NAMES) -> tuple[Path, Path]:
    """A leaf for ``names`` (DNS names or IP addresses) signed by the CA of ``tls_dir``.

    Kept while it is valid for more than :data:`RENEW_BEFORE` and was signed by this CA;
    otherwise issued again, with a new key.
    """
    ca_file, ca_key_file = ensure_ca(tls_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    if cert_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        fresh = cert.not_valid_after_utc > datetime.now(UTC) + RENEW_BEFORE
        if fresh and _signed_by(cert, ca_cert):
            return cert_file, key_file
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(key_file, _pem_key(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def write_private(path: Path, data: bytes) -> None:
    """Write a secret with mode 0600 from the start (no window with wider permissions)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip
