"""TLS for the gRPC server: the certificate files, checked at start, and reloaded when they change.

`server_credentials` reads NUDGE_TLS_CERT, NUDGE_TLS_KEY and NUDGE_TLS_CLIENT_CA and checks them
(readable, PEM, an unencrypted key that belongs to the first certificate of the chain) before the
server opens anything: a bad file is a `ConfigError` naming it, never a plaintext fallback.

The credentials are gRPC's dynamic ones: before every new connection's handshake gRPC asks
`CertificateReloader` for a newer configuration, and it re-reads the files when their stat
(mtime, size, inode) changed, so a renewed certificate (cert-manager, a Kubernetes secret, a
cron job) is served to new connections without a restart. A renewal that does not check out
(half-written, key and certificate out of step) is logged and the previous files stay in use;
connections already open keep the certificate of their handshake. Whether client certificates
are required is fixed at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .errors import ConfigError
from .settings import TlsSettings

log = logging.getLogger(__name__)

_CERT = "NUDGE_TLS_CERT"
_KEY = "NUDGE_TLS_KEY"
_CLIENT_CA = "NUDGE_TLS_CLIENT_CA"


@dataclass(frozen=True)
class TlsMaterial:
    """The checked contents of the TLS files."""

    chain_pem: bytes
    key_pem: bytes
    #: None: client certificates are not asked for.
    client_ca_pem: bytes | None
    #: The server certificate's subject and expiry, for the logs.
    subject: str
    not_after: dt.datetime


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror or exc}") from None


def _certificates(variable: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(variable, f"{path} holds no PEM certificate") from None


_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def load_material(settings: TlsSettings) -> TlsMaterial:
    """Reads and checks the files of `settings` (which must have TLS enabled).

    Raises ConfigError naming the variable and the file: unreadable, not PEM, an encrypted key,
    or a key that is not the first certificate's.
    """
    if settings.cert_file is None or settings.key_file is None:
        raise ValueError("load_material needs settings with TLS enabled")
    chain_pem = _read(_CERT, settings.cert_file)
    chain = _certificates(_CERT, settings.cert_file, chain_pem)
    key_pem = _read(_KEY, settings.key_file)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        # cryptography's signal for a key that needs a password; gRPC cannot take one.
        raise ConfigError(
            _KEY, f"{settings.key_file} is encrypted; the server needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(_KEY, f"{settings.key_file} holds no PEM private key") from None
    if key.public_key().public_bytes(_DER, _SPKI) != chain[0].public_key().public_bytes(
        _DER, _SPKI
    ):
        raise ConfigError(
            _KEY,
            f"{settings.key_file} does not match the certificate in {settings.cert_file} "
            f"(the first certificate of {_CERT} must be the one of this key)",
        )
    client_ca_pem = None
    if settings.client_ca_file is not None:
        client_ca_pem = _read(_CLIENT_CA, settings.client_ca_file)
        _certificates(_CLIENT_CA, settings.client_ca_file, client_ca_pem)
    return TlsMaterial(
        chain_pem=chain_pem,
        key_pem=key_pem,
        client_ca_pem=client_ca_pem,
        subject=chain[0].subject.rfc4514_string(),
        not_after=chain[0].not_valid_after_utc,
    )


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.chain_pem)], root_certificates=material.client_ca_pem
    )


def _log_loaded(event: str, settings: TlsSettings, material: TlsMaterial) -> None:
    fields = {
        "cert_file": str(settings.cert_file),
        "subject": material.subject,
        "not_after": material.not_after.isoformat(),
        "client_certificates": "required" if material.client_ca_pem is not None else "no",
    }
    if material.not_after <= dt.datetime.now(dt.UTC):
        log.error("tls_certificate_expired", extra=fields)
    else:
        log.info(event, extra=fields)


FileStamp = tuple[int, int, int, int] | None


def _stamp(path: Path | None) -> FileStamp:
    if path is None:
        return None
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes secret swaps a symlink
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class CertificateReloader:
    """gRPC's certificate configuration fetcher: None (no change) unless the files changed and
    their new contents check out.

    gRPC calls it from its own threads, before each new connection's handshake: it costs three
    stat calls then, and reads the files only after they changed.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Taken before the first load: a file that changes while it is read is read again.
        self._stamps = self._current_stamps()

    def _current_stamps(self) -> tuple[FileStamp, ...]:
        s = self._settings
        return (_stamp(s.cert_file), _stamp(s.key_file), _stamp(s.client_ca_file))

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamps = self._current_stamps()
            if stamps == self._stamps:
                return None
            # Remembered even when the new files fail: one log line per change, not per handshake.
            self._stamps = stamps
            try:
                material = load_material(self._settings)
            except ConfigError as exc:
                log.error(
                    "tls_reload_failed",
                    extra={"variable": exc.path, "error": exc.message, "kept": "previous files"},
                )
                return None
            except Exception:  # raising into gRPC's handshake would fail it, not report it
                log.exception("tls_reload_crashed")
                return None
        _log_loaded("tls_reloaded", self._settings, material)
        return _configuration(material)


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """The server's credentials; None when TLS is off (plaintext).

    Raises ConfigError when a file is unreadable or does not check out (see `load_material`).
    """
    if not settings.enabled:
        return None
    reloader = CertificateReloader(settings)
    material = load_material(settings)
    _log_loaded("tls_loaded", settings, material)
    return grpc.dynamic_ssl_server_credentials(
        _configuration(material),
        reloader,
        require_client_authentication=material.client_ca_pem is not None,
    )
