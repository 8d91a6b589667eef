"""User feature views: behaviour sequences and cross-domain interest."""

from data_sources import NEVER_EXPIRES, user_behavior_push_source, user_cross_domain_source
from entities import user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

# What the user did last, newest first, per behaviour type (up to 50 ids each, however old).
user_behavior_seq_fv = FeatureView(
    name="user_behavior_seq",
    entities=[user],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(
            name="item_click_seq", dtype=Array(Int64), description="Clicked items, newest first."
        ),
        Field(name="item_watch_seq", dtype=Array(Int64), description="Watched videos/lives."),
        Field(
            name="item_engage_seq",
            dtype=Array(Int64),
            description="Shared/commented/favorited/carted items.",
        ),
        Field(
            name="sku_click_seq", dtype=Array(Int64), description="Clicked SKUs (product domain)."
        ),
        Field(name="sku_cart_seq", dtype=Array(Int64), description="SKUs added to cart."),
        Field(name="sku_purchase_seq", dtype=Array(Int64), description="Purchased SKUs."),
    ],
    source=user_behavior_push_source,
    online=True,
    description="Behaviour sequences; batch snapshots plus pushes from serving.",
)

# The user's interest over product categories learned from the product domain (CDR): the
# latest snapshot stays, however long ago the user was last active.
user_cross_domain_fv = FeatureView(
    name="user_cross_domain",
    entities=[user],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(
            name="cdr_category_affinity",
            dtype=Array(Float32),
            description="Decayed product-domain affinity per category (the data's category list, manifest order), sums to 1.",
        ),
        Field(
            name="cdr_top_category",
            dtype=String,
            description="The category with the highest affinity.",
        ),
        Field(
            name="cdr_event_count_30d", dtype=Int64, description="Product-domain events in 30 days."
        ),
    ],
    source=user_cross_domain_source,
    online=True,
)
