"""Self-signed CA and certificates: HTTPS for 127.0.0.1/localhost and the SNS signing cert."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CA_FILE = "emulator-ca.pem"
CA_KEY_FILE = "emulator-ca-key.pem"
SERVER_CERT_FILE = "emulator-server.pem"
SERVER_KEY_FILE = "emulator-server-key.pem"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Pay emulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    *, subject: x509.Name, issuer: x509.Name, key: rsa.RSAPublicKey, days: int
) -> x509.CertificateBuilder:
    """A certificate of `key` for `subject` by `issuer`, valid from yesterday for `days` days
    (its extensions still to add)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def ensure_tls_files(directory: Path) -> TlsFiles:
    """Reuse the CA from `directory` when present, so clients keep trusting it across restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = directory / CA_FILE, directory / CA_KEY_FILE
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError("CA key must be RSA")
        ca_key = loaded
    else:
        ca_key = _key()
        ca_name = _name("Amazon Pay emulator CA")
        ca_cert = (
            _certificate(subject=ca_name, issuer=ca_name, key=ca_key.public_key(), days=3650)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_key_path.write_bytes(_key_pem(ca_key))
        ca_key_path.chmod(0o600)
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server_cert = (
        _certificate(
            subject=_name("localhost"),
            issuer=ca_cert.subject,
            key=server_key.public_key(),
            days=825,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
    key_path.write_bytes(_key_pem(server_key))
    key_path.chmod(0o600)
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca_path, cert_path, key_path)


@functools.cache
def sns_signing_identity() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A self-signed certificate standing in for sns.<region>.amazonaws.com (one per process)."""
    key = _key()
    name = _name("sns.us-east-1.amazonaws.com")
    cert = (
        _certificate(subject=name, issuer=name, key=key.public_key(), days=3650)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("sns.us-east-1.amazonaws.com")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)
