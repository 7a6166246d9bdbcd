"""Keys and certificates for the fakes, made with `cryptography` (nothing is downloaded)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """A test CA and a server certificate for 127.0.0.1 / localhost signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_KEY_CERT_SIGN = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class CertificateAuthority:
    """A throw-away CA that issues server and client certificates, valid for two days."""

    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "nudge test CA") -> CertificateAuthority:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_KEY_CERT_SIGN, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, *, server: bool = False, client: bool = False
    ) -> tuple[bytes, bytes]:
        """A certificate (PEM) and its key (PEM, PKCS#8) for `common_name`; `server` adds the
        SANs 127.0.0.1 and localhost and the serverAuth usage, `client` the clientAuth usage."""
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [
            *([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
            *([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []),
        ]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_pki(directory: Path) -> Pki:
    """Writes ca.pem, server.pem and server.key into `directory`."""
    ca = CertificateAuthority.create()
    cert_pem, key_pem = ca.issue("127.0.0.1", server=True)
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca.pem)
    pki.cert_file.write_bytes(cert_pem)
    pki.key_file.write_bytes(key_pem)
    return pki


def make_apns_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Writes an APNs-style .p8 key (PKCS#8 P-256); returns its public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(_pem_key(key))
    return key.public_key()


def make_service_account(
    path: Path, *, token_uri: str, project_id: str, email: str = "push@nudge-test.iam"
) -> rsa.RSAPublicKey:
    """Writes a Google service-account key file; returns its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": "test-key-1",
                "private_key": _pem_key(key).decode(),
                "client_email": email,
                "client_id": "1",
                "token_uri": token_uri,
            }
        ),
        encoding="utf-8",
    )
    return key.public_key()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS and mTLS tests: a CA with a server certificate (127.0.0.1, localhost)
    and a client certificate, and another CA with a client certificate of its own."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Writes the files of `TlsFiles` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("nudge test CA")
    other = CertificateAuthority.create("another test CA")
    files = TlsFiles(
        *(
            directory / name
            for name in (
                "ca.pem",
                "server.pem",
                "server.key",
                "client.pem",
                "client.key",
                "other-ca.pem",
                "other-client.pem",
                "other-client.key",
            )
        )
    )
    files.ca.write_bytes(ca.pem)
    files.other_ca.write_bytes(other.pem)
    for (cert_path, key_path), (cert, key) in (
        ((files.server_cert, files.server_key), ca.issue("127.0.0.1", server=True)),
        ((files.client_cert, files.client_key), ca.issue("nudge test client", client=True)),
        (
            (files.other_client_cert, files.other_client_key),
            other.issue("stranger", client=True),
        ),
    ):
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
    return files
