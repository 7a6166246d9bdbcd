"""The DeviceService servicer: converts between proto messages and `devices` types, nothing more."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import timestamp_pb2
from nudge.v1 import decision_pb2, devices_pb2, devices_pb2_grpc

from . import requests
from .api_errors import grpc_errors
from .decision_api import PLATFORMS, enum_value
from .devices import (
    AppEnvironment,
    Device,
    DeviceStatus,
    DeviceStore,
    device_token,
    push_platform,
    registration,
)
from .model import Platform

ENVIRONMENTS = {
    devices_pb2.APP_ENVIRONMENT_UNSPECIFIED: AppEnvironment.PRODUCTION,
    devices_pb2.APP_ENVIRONMENT_PRODUCTION: AppEnvironment.PRODUCTION,
    devices_pb2.APP_ENVIRONMENT_SANDBOX: AppEnvironment.SANDBOX,
}
_ENVIRONMENT_PROTO = {
    AppEnvironment.PRODUCTION: devices_pb2.APP_ENVIRONMENT_PRODUCTION,
    AppEnvironment.SANDBOX: devices_pb2.APP_ENVIRONMENT_SANDBOX,
}
_STATUS_PROTO = {
    DeviceStatus.ACTIVE: devices_pb2.DEVICE_STATUS_ACTIVE,
    DeviceStatus.RETIRED: devices_pb2.DEVICE_STATUS_RETIRED,
    DeviceStatus.UNREGISTERED: devices_pb2.DEVICE_STATUS_UNREGISTERED,
}
_PLATFORM_PROTO = {
    Platform.IOS: decision_pb2.PLATFORM_IOS,
    Platform.ANDROID: decision_pb2.PLATFORM_ANDROID,
}


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def device_to_proto(device: Device) -> devices_pb2.Device:
    """The Device message of a stored device."""
    return devices_pb2.Device(
        device_id=str(device.device_id),
        app_id=device.app_id,
        user_id=device.user_id,
        platform=_PLATFORM_PROTO[device.platform],
        token=device.token,
        environment=_ENVIRONMENT_PROTO[device.environment],
        status=_STATUS_PROTO[device.status],
        status_reason=device.status_reason,
        created_at=_timestamp(device.created_at),
        updated_at=_timestamp(device.updated_at),
        retired_at=_timestamp(device.retired_at),
    )


class DeviceServicer(devices_pb2_grpc.DeviceServiceServicer):
    """Serves RegisterDevice, UnregisterDevice and ListDevices."""

    def __init__(self, store: DeviceStore) -> None:
        self._store = store

    @grpc_errors
    async def RegisterDevice(
        self, request: devices_pb2.RegisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> devices_pb2.RegisterDeviceResponse:
        reg = registration(
            app=request.app_id,
            user=request.user_id,
            platform=enum_value(PLATFORMS, request.platform, "platform"),
            token=request.token,
            environment=enum_value(ENVIRONMENTS, request.environment, "environment"),
        )
        device, created = await self._store.register(reg)
        return devices_pb2.RegisterDeviceResponse(device=device_to_proto(device), created=created)

    @grpc_errors
    async def UnregisterDevice(
        self, request: devices_pb2.UnregisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> devices_pb2.UnregisterDeviceResponse:
        app_id = requests.app_id(request.app_id)
        user_id = requests.printable(request.user_id, "user_id", 128, required=True)
        platform = push_platform(enum_value(PLATFORMS, request.platform, "platform"))
        token = device_token(platform, request.token)
        done = await self._store.unregister(app_id, user_id, platform, token)
        return devices_pb2.UnregisterDeviceResponse(unregistered=done)

    @grpc_errors
    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> devices_pb2.ListDevicesResponse:
        app_id = requests.app_id(request.app_id)
        user_id = requests.printable(request.user_id, "user_id", 128, required=True)
        devices = await self._store.list(app_id, user_id, request.include_inactive)
        return devices_pb2.ListDevicesResponse(devices=[device_to_proto(d) for d in devices])
