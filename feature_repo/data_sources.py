"""Offline sources (Parquet written by feature_pipelines/, read by the DuckDB offline store)
and the push source that streams fresh behaviour sequences to the online store.

Feast's DuckDB offline store opens a FileSource path as given (relative to the process's
working directory, not the repo), so paths are absolute: the workspace's data/offline folder
next to this feature repo.
"""

from pathlib import Path

from feast import FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import Int64

OFFLINE_DIR = Path(__file__).resolve().parent.parent / "data" / "offline"


def offline_source(name: str, description: str) -> FileSource:
    """A FileSource over every day partition of one offline source."""
    return FileSource(
        name=f"{name}_source",
        path=str(OFFLINE_DIR / name / "*" / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


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
