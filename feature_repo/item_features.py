"""Item and SKU feature views: content attributes and timeliness statistics."""

from datetime import timedelta

from data_sources import (
    NEVER_EXPIRES,
    item_attributes_source,
    item_stats_source,
    sku_attributes_source,
)
from entities import item, sku
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

# What an item is: material, category, the SKUs it features, when it was published.
item_attributes_fv = FeatureView(
    name="item_attributes",
    entities=[item],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name="material", dtype=String, description="video | live | shop | aggregated."),
        Field(name="category", dtype=String, description="Primary product category."),
        Field(
            name="category_index",
            dtype=Int64,
            description="Position of the category in the data's category list (manifest); null outside it.",
        ),
        Field(name="sku_ids", dtype=Array(Int64), description="Linked product SKUs."),
        Field(name="publish_ts_s", dtype=Int64, description="Publish time, unix seconds."),
        Field(
            name="duration_s",
            dtype=Float32,
            description="Video/live length in seconds; 0 otherwise.",
        ),
    ],
    source=item_attributes_source,
    online=True,
)

# How an item has been doing lately (7-day window, smoothed CTR), for timeliness: the TTL is
# the window, so an item not shown for a week has no statistics rather than stale ones.
item_stats_fv = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=7),
    schema=[
        Field(name="impressions_1d", dtype=Int64, description="Impressions in the last day."),
        Field(name="clicks_1d", dtype=Int64, description="Clicks in the last day."),
        Field(name="impressions_7d", dtype=Int64, description="Impressions in 7 days."),
        Field(name="clicks_7d", dtype=Int64, description="Clicks in 7 days."),
        Field(name="ctr_7d", dtype=Float32, description="Smoothed CTR, 7 days."),
        Field(name="ctr_home_7d", dtype=Float32, description="Smoothed CTR at the home position."),
        Field(
            name="ctr_inner_7d", dtype=Float32, description="Smoothed CTR at the inner position."
        ),
        Field(
            name="ctr_detail_7d", dtype=Float32, description="Smoothed CTR at the detail position."
        ),
        Field(name="watch_ratio_7d", dtype=Float32, description="Mean watched share of the video."),
    ],
    source=item_stats_source,
    online=True,
)

# What a SKU is.
sku_attributes_fv = FeatureView(
    name="sku_attributes",
    entities=[sku],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name="sku_category", dtype=String, description="Product category."),
        Field(name="sku_price", dtype=Float32, description="Price."),
    ],
    source=sku_attributes_source,
    online=True,
)
