"""The parts of Feast (0.67) that mmrec uses beyond its documented API, in one place: a Feast
upgrade that moves or renames them breaks this file and tests/test_feast_internals.py, not the
stages that use them.

- The provider's online store (`FeatureStore._get_provider()`): serving reads the whole
  catalog's item rows with its `online_read`, the call `get_online_features` makes underneath
  (5.7x faster at 104k items, serving/online_features.py), and sets the retry policy of the
  Redis client it holds (`RedisOnlineStore._get_client`).
- The protobuf types an online read takes and returns (`EntityKey`, `Value`) and Feast's own
  conversion of a stored `Value` to Python (`feast.type_map`), so snapshot values equal
  `get_online_features`' values.
- The suffix of the event-timestamp columns of `OnlineResponse.to_dict(
  include_event_timestamps=True)` (`feast.online_response.TIMESTAMP_POSTFIX`).
"""

from __future__ import annotations

from typing import Any

from feast.online_response import TIMESTAMP_POSTFIX
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type as python_value

__all__ = [
    "TIMESTAMP_POSTFIX",
    "EntityKey",
    "Value",
    "int64_entity_key",
    "online_provider",
    "python_value",
    "redis_client",
]


def online_provider(store: Any) -> Any:
    """The store's provider: `online_read(config, view, entity_keys, requested_features)`
    reads stored rows as (timestamp, {feature: Value}) pairs."""
    return store._get_provider()


def redis_client(store: Any) -> Any:
    """The redis-py client a Redis online store reads and writes through (made on first use)."""
    return online_provider(store).online_store._get_client(store.config.online_store)


def int64_entity_key(join_key: str, value: int) -> EntityKey:
    """The online store's key of one entity with an int64 join key."""
    return EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(value))])
