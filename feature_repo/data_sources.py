"""Offline sources (Parquet written by feature_pipelines/) and the push source that streams
fresh behaviour sequences to the online store.

One definition, two engines: under the DuckDB offline store (default) each source is a
FileSource; under the Spark offline store a SparkSource over the same files, since Feast's Spark
store accepts nothing else (`SparkOfflineStore.get_historical_features` raises "requires
SparkSource or IcebergSource"). `feast apply` runs with MMREC_OFFLINE_STORE set by mmrec
(mmrec/feast_store.py), as the Redis profile's yaml reads MMREC_REDIS_URL.

Feast's DuckDB offline store opens a FileSource path as given (relative to the process's
working directory, not the repo), so paths are absolute: the workspace's data/offline folder
next to this feature repo.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.field import Field
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Int64

# The TTL of what does not go stale: a user's long-term behaviour (a shopper back after months
# keeps their history) and an item's or SKU's content (the whole catalog stays servable).
# Feast's convention: a TTL of 0 never expires, offline (point-in-time joins) and when
# materializing alike. Windowed statistics keep their window as TTL (item_features.py).
NEVER_EXPIRES = timedelta(0)

OFFLINE_DIR = Path(__file__).resolve().parent.parent / "data" / "offline"
OFFLINE_STORE = os.environ.get("MMREC_OFFLINE_STORE", "duckdb")


def offline_source(name: str, description: str) -> DataSource:
    """A source over every day partition of one offline source, of the offline store's type."""
    common = {
        "name": f"{name}_source",
        "path": str(OFFLINE_DIR / name / "*" / "*.parquet"),
        "timestamp_field": "event_timestamp",
        "description": description,
    }
    if OFFLINE_STORE == "spark":
        return SparkSource(file_format="parquet", **common)
    return FileSource(file_format=ParquetFormat(), **common)


# Last-N items and SKUs per behaviour type, snapshot at the end of each active day.
user_behavior_seq_source = offline_source("user_behavior_seq", "User behaviour-sequence snapshots.")
# Decayed product-domain category affinities per user.
user_cross_domain_source = offline_source("user_cross_domain", "Cross-domain (CDR) interest.")
# Windowed item impressions, clicks, CTR by position and watch ratio.
item_stats_source = offline_source("item_stats", "Item statistics for timeliness.")
# Item content attributes, valid from the item's publish time.
item_attributes_source = offline_source("item_attributes", "Item content attributes.")
# SKU category and price.
sku_attributes_source = offline_source("sku_attributes", "SKU attributes.")

# Fresh behaviour sequences pushed by the serving layer; backfilled from the batch source.
user_behavior_push_source = PushSource(
    name="user_behavior_push",
    batch_source=user_behavior_seq_source,
    description="Behaviour-sequence updates pushed while serving.",
)

# The time of the request, for features computed at request time (item age).
request_context_source = RequestSource(
    name="request_context",
    schema=[Field(name="request_ts", dtype=Int64, description="Request time, unix seconds.")],
)
