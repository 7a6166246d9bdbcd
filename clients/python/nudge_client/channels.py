"""Channels to a nudge server: plaintext or TLS (with a client certificate for mTLS), and the
API key sent as `authorization: Bearer <key>` metadata on every call.

The key travels through client interceptors rather than call credentials: interceptors work on
plaintext channels too (gRPC refuses call credentials there), and every stub made on the channel,
the raw ones included, carries the key without being told.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

__all__ = [
    "TlsOptions",
    "api_key_from_env",
    "bearer_interceptors",
    "bearer_metadata",
    "channel_from_env",
    "open_channel",
    "open_sync_channel",
]

#: Environment variables of `TlsOptions.from_env` and `channel_from_env`.
ENV_CA = "NUDGE_TLS_CA"
ENV_CLIENT_CERT = "NUDGE_TLS_CLIENT_CERT"
ENV_CLIENT_KEY = "NUDGE_TLS_CLIENT_KEY"
ENV_SERVER_NAME = "NUDGE_TLS_SERVER_NAME"
ENV_API_KEY = "NUDGE_API_KEY"

ChannelOptions = tuple[tuple[str, Any], ...]


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class TlsOptions:
    """How the client speaks TLS to the server.

    - `ca_file` or `ca_pem`: the roots the server's certificate must chain to (PEM); neither
      means the roots gRPC trusts by default (the system's, or $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
    - `cert_file` and `key_file` (both or neither): the client's own certificate chain and key,
      for a server that requires client certificates (mTLS).
    - `server_name_override`: the name the server's certificate must carry, when it is not the
      host of the target (a certificate for "nudge.internal" reached at 10.0.0.7:50051).

    Files are read when a channel is opened (`credentials()`): a certificate renewed on disk is
    picked up by the next client.
    """

    ca_file: str | Path | None = None
    ca_pem: bytes | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None and self.ca_pem is not None:
            raise ValueError("TlsOptions: give ca_file or ca_pem, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TlsOptions: cert_file and key_file go together (both or neither)")
        if self.server_name_override == "":
            raise ValueError("TlsOptions: server_name_override must not be empty")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TlsOptions | None:
        """The options of NUDGE_TLS_CA, NUDGE_TLS_CLIENT_CERT, NUDGE_TLS_CLIENT_KEY and
        NUDGE_TLS_SERVER_NAME; None (plaintext) when none of them is set."""
        ca, cert, key, name = (
            env.get(var) or None
            for var in (ENV_CA, ENV_CLIENT_CERT, ENV_CLIENT_KEY, ENV_SERVER_NAME)
        )
        if ca is None and cert is None and key is None and name is None:
            return None
        if (cert is None) != (key is None):
            raise ValueError(
                f"{ENV_CLIENT_CERT} and {ENV_CLIENT_KEY} go together (both or neither)"
            )
        return cls(ca_file=ca, cert_file=cert, key_file=key, server_name_override=name)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials, reading the files now; ValueError names a file that cannot
        be read."""
        roots = self.ca_pem
        if self.ca_file is not None:
            roots = _read(self.ca_file, "ca_file")
        cert = key = None
        if self.cert_file is not None and self.key_file is not None:
            cert = _read(self.cert_file, "cert_file")
            key = _read(self.key_file, "key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=cert
        )

    def channel_options(self) -> ChannelOptions:
        """The channel options these TLS options need (the server name override)."""
        if self.server_name_override is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name_override),)


def _tls_options(tls: bool | TlsOptions | None) -> TlsOptions | None:
    if tls is True:
        return TlsOptions()
    if tls is False or tls is None:
        return None
    return tls


def bearer_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `api_key`: `authorization: Bearer <key>`."""
    if not api_key or api_key != api_key.strip() or any(c in api_key for c in "\r\n\0"):
        raise ValueError("api_key must be a non-empty string without spaces around it or newlines")
    return (("authorization", f"Bearer {api_key}"),)


def _with_metadata(
    details: grpc.aio.ClientCallDetails, extra: tuple[tuple[str, str], ...]
) -> grpc.aio.ClientCallDetails:
    """`details` with `extra` added to its metadata; an authorization the caller gave on the
    call itself wins over the channel's."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in extra:
        if key not in metadata:
            metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _BearerUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(client_call_details, self._metadata), request)


class _BearerUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(client_call_details, self._metadata), request)


def bearer_interceptors(api_key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio` channels that send `authorization: Bearer <api_key>` on every
    unary-unary and unary-stream call (all the calls of the nudge API)::

        channel = grpc.aio.insecure_channel(target, interceptors=bearer_interceptors(key))

    A call that sets its own `authorization` metadata keeps it.
    """
    metadata = bearer_metadata(api_key)
    return [_BearerUnaryUnary(metadata), _BearerUnaryStream(metadata)]


def open_channel(
    target: str,
    *,
    tls: bool | TlsOptions | None = None,
    api_key: str | None = None,
    options: ChannelOptions = (),
) -> grpc.aio.Channel:
    """A `grpc.aio` channel to `target`: TLS when `tls` is True (default roots) or TlsOptions,
    plaintext otherwise; with `api_key`, every call carries it. The caller closes it."""
    interceptors = bearer_interceptors(api_key) if api_key is not None else None
    tls_options = _tls_options(tls)
    if tls_options is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
    return grpc.aio.secure_channel(
        target,
        tls_options.credentials(),
        options=[*options, *tls_options.channel_options()],
        interceptors=interceptors,
    )


def open_sync_channel(
    target: str, *, tls: bool | TlsOptions | None = None, options: ChannelOptions = ()
) -> grpc.Channel:
    """A blocking `grpc` channel to `target` (plaintext or TLS, as `open_channel`), for
    scripts and probes of the health service, which needs no API key."""
    tls_options = _tls_options(tls)
    if tls_options is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(
        target,
        tls_options.credentials(),
        options=[*options, *tls_options.channel_options()],
    )


def api_key_from_env(env: Mapping[str, str] = os.environ) -> str | None:
    """The API key of NUDGE_API_KEY; None when unset or empty."""
    return env.get(ENV_API_KEY) or None


def channel_from_env(
    target: str, env: Mapping[str, str] = os.environ, *, options: ChannelOptions = ()
) -> grpc.aio.Channel:
    """`open_channel` configured from the environment: TLS from NUDGE_TLS_CA,
    NUDGE_TLS_CLIENT_CERT, NUDGE_TLS_CLIENT_KEY and NUDGE_TLS_SERVER_NAME (plaintext when none
    is set), the API key from NUDGE_API_KEY (none when unset)."""
    return open_channel(
        target, tls=TlsOptions.from_env(env), api_key=api_key_from_env(env), options=options
    )
