"""The server's TLS settings and certificate files: checks at start, reloads on change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization
from fakes.keys import CertificateAuthority, TlsFiles, make_tls_files
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nudge_client import TlsOptions, open_channel
from nudge_server.errors import ConfigError
from nudge_server.settings import ServerSettings, TlsSettings
from nudge_server.tls import CertificateReloader, load_material, server_credentials


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "pki")


def _replace(path: Path, data: bytes) -> None:
    """Writes `path` the way certificate tools do: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# --- settings ------------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    assert not TlsSettings.from_env({}).enabled
    assert not ServerSettings.from_env({}).tls.enabled
    settings = TlsSettings.from_env(
        {"NUDGE_TLS_CERT": "/s.pem", "NUDGE_TLS_KEY": "/s.key", "NUDGE_TLS_CLIENT_CA": "/ca.pem"}
    )
    assert settings == TlsSettings(Path("/s.pem"), Path("/s.key"), Path("/ca.pem"))
    assert settings.enabled


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NUDGE_TLS_CERT": "/s.pem"}, "NUDGE_TLS_KEY"),
        ({"NUDGE_TLS_KEY": "/s.key"}, "NUDGE_TLS_CERT"),
        ({"NUDGE_TLS_CLIENT_CA": "/ca.pem"}, "NUDGE_TLS_CLIENT_CA"),
    ],
)
def test_settings_refuse_half_a_configuration(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as error:
        TlsSettings.from_env(env)
    assert error.value.path == variable


def test_plaintext_has_no_credentials() -> None:
    assert server_credentials(TlsSettings()) is None


# --- the files -----------------------------------------------------------------------------------


def test_material_of_good_files(tls_files: TlsFiles) -> None:
    material = load_material(TlsSettings(tls_files.server_cert, tls_files.server_key, tls_files.ca))
    assert material.chain_pem == tls_files.server_cert.read_bytes()
    assert material.key_pem == tls_files.server_key.read_bytes()
    assert material.client_ca_pem == tls_files.ca.read_bytes()
    assert material.subject == "CN=127.0.0.1"


def _config_error(settings: TlsSettings) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        load_material(settings)
    return error.value


def test_missing_files_are_named(tls_files: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    error = _config_error(TlsSettings(missing, tls_files.server_key))
    assert (error.path, str(missing) in error.message) == ("NUDGE_TLS_CERT", True)
    error = _config_error(TlsSettings(tls_files.server_cert, missing))
    assert (error.path, str(missing) in error.message) == ("NUDGE_TLS_KEY", True)
    error = _config_error(TlsSettings(tls_files.server_cert, tls_files.server_key, missing))
    assert (error.path, str(missing) in error.message) == ("NUDGE_TLS_CLIENT_CA", True)


def test_files_that_are_not_pem(tls_files: TlsFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    error = _config_error(TlsSettings(junk, tls_files.server_key))
    assert error.path == "NUDGE_TLS_CERT"
    assert error.message == f"{junk} holds no PEM certificate"
    # A certificate where the key should be is no key.
    error = _config_error(TlsSettings(tls_files.server_cert, tls_files.server_cert))
    assert error.path == "NUDGE_TLS_KEY"
    assert error.message == f"{tls_files.server_cert} holds no PEM private key"
    error = _config_error(TlsSettings(tls_files.server_cert, tls_files.server_key, junk))
    assert error.path == "NUDGE_TLS_CLIENT_CA"


def test_a_key_of_another_certificate(tls_files: TlsFiles) -> None:
    error = _config_error(TlsSettings(tls_files.server_cert, tls_files.client_key))
    assert error.path == "NUDGE_TLS_KEY"
    assert error.message.startswith(
        f"{tls_files.client_key} does not match the certificate in {tls_files.server_cert}"
    )


def test_an_encrypted_key(tls_files: TlsFiles, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(tls_files.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    error = _config_error(TlsSettings(tls_files.server_cert, encrypted))
    assert error.path == "NUDGE_TLS_KEY"
    assert "encrypted" in error.message


def test_a_chain_file_with_its_intermediate(tls_files: TlsFiles, tmp_path: Path) -> None:
    # The server's certificate first, then more: the key is checked against the first.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(tls_files.server_cert.read_bytes() + tls_files.ca.read_bytes())
    assert load_material(TlsSettings(chain, tls_files.server_key)).subject == "CN=127.0.0.1"
    reversed_chain = tmp_path / "reversed.pem"
    reversed_chain.write_bytes(tls_files.ca.read_bytes() + tls_files.server_cert.read_bytes())
    assert _config_error(TlsSettings(reversed_chain, tls_files.server_key)).path == "NUDGE_TLS_KEY"


# --- reloading -----------------------------------------------------------------------------------


def test_reloader_answers_none_until_the_files_change(
    tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TlsSettings(tls_files.server_cert, tls_files.server_key)
    reloader = CertificateReloader(settings)
    assert reloader() is None
    assert reloader() is None
    cert, key = CertificateAuthority.create("renewed CA").issue("127.0.0.1", server=True)
    # Half-way through a renewal the certificate is new and the key old: keep the old pair.
    _replace(tls_files.server_cert, cert)
    with caplog.at_level(logging.ERROR, logger="nudge_server.tls"):
        assert reloader() is None
        assert reloader() is None  # and say so once, not at every handshake
    failures = [r for r in caplog.records if r.getMessage() == "tls_reload_failed"]
    assert [getattr(r, "variable", None) for r in failures] == ["NUDGE_TLS_KEY"]
    _replace(tls_files.server_key, key)
    assert reloader() is not None
    assert reloader() is None


async def _health(target: str, tls: TlsOptions) -> health_pb2.HealthCheckResponse:
    async with open_channel(target, tls=tls) as channel:
        answer: health_pb2.HealthCheckResponse = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return answer


async def test_a_renewed_certificate_is_served_to_new_connections(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    credentials = server_credentials(TlsSettings(tls_files.server_cert, tls_files.server_key))
    assert credentials is not None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    target = f"127.0.0.1:{port}"
    old_roots = TlsOptions(ca_file=tls_files.ca)
    try:
        async with open_channel(target, tls=old_roots) as kept:
            stub = health_pb2_grpc.HealthStub(kept)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

            renewed = CertificateAuthority.create("renewed CA")
            cert, key = renewed.issue("127.0.0.1", server=True)
            new_ca = tmp_path / "renewed-ca.pem"
            new_ca.write_bytes(renewed.pem)
            _replace(tls_files.server_key, key)
            _replace(tls_files.server_cert, cert)

            new_roots = TlsOptions(ca_file=new_ca)
            assert (
                await _health(target, new_roots)
            ).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(target, old_roots)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # The connection made before the renewal keeps its handshake.
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(None)
