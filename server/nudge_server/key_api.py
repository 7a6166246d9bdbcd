"""The KeyService servicer: an app's admin key manages the app's own keys."""

from __future__ import annotations

import grpc
from nudge.v1 import keys_pb2, keys_pb2_grpc

from . import requests
from .api_errors import grpc_errors
from .api_keys import SCOPES, ApiKey, ApiKeyStore
from .errors import InvalidArgument
from .wire import to_timestamp

SCOPE_NAMES = {
    keys_pb2.SCOPE_DECIDE: "decide",
    keys_pb2.SCOPE_REPORT: "report",
    keys_pb2.SCOPE_ADMIN: "admin",
}
_SCOPE_PROTO = {name: value for value, name in SCOPE_NAMES.items()}


def _scopes(values: list[int]) -> list[str]:
    names = []
    for value in values:
        name = SCOPE_NAMES.get(value)  # type: ignore[call-overload]
        if name is None:
            raise InvalidArgument("scopes", f"unknown scope value {value}")
        names.append(name)
    return names


def key_to_proto(key: ApiKey) -> keys_pb2.ApiKey:
    message = keys_pb2.ApiKey(
        key_id=key.key_id,
        app_id=key.app_id,
        name=key.name,
        scopes=[_SCOPE_PROTO[name] for name in SCOPES if name in key.scopes],
        created_at=to_timestamp(key.created_at),
    )
    if key.revoked_at is not None:
        message.revoked_at.CopyFrom(to_timestamp(key.revoked_at))
    return message


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    """CreateKey, ListKeys, RevokeKey. The auth interceptor has checked that the caller's key
    has the admin scope and belongs to the app the request names."""

    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    @grpc_errors
    async def CreateKey(
        self, request: keys_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.CreateKeyResponse:
        issued = await self._store.create(
            request.app_id, _scopes(list(request.scopes)), request.name
        )
        return keys_pb2.CreateKeyResponse(api_key=key_to_proto(issued.key), key=issued.token)

    @grpc_errors
    async def ListKeys(
        self, request: keys_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        keys = await self._store.list(request.app_id, include_revoked=request.include_revoked)
        return keys_pb2.ListKeysResponse(api_keys=[key_to_proto(key) for key in keys])

    @grpc_errors
    async def RevokeKey(
        self, request: keys_pb2.RevokeKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.RevokeKeyResponse:
        requests.printable(request.key_id, "key_id", 64, required=True)
        key = await self._store.revoke(request.app_id, request.key_id)
        return keys_pb2.RevokeKeyResponse(api_key=key_to_proto(key))
