"""Converters between AccountService's protobuf messages and the account types: each returns a new message."""

from __future__ import annotations

from monitors.v1 import account_service_pb2 as pb
from service_runtime.timestamps import to_timestamp
from services.monitor_svc.accounts.store import ApiKey, User


def user_to_proto(user: User) -> pb.User:
    return pb.User(id=user.id, email=user.email, create_time=to_timestamp(user.create_time))


def api_key_to_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        display_name=key.display_name,
        prefix=key.prefix,
        create_time=to_timestamp(key.create_time),
        last_use_time=to_timestamp(key.last_use_time),
        expire_time=to_timestamp(key.expire_time),
    )
