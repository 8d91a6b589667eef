"""Entities: who or what a feature describes."""

from feast import Entity, ValueType

# A shopper.
user = Entity(
    name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A shopper."
)
# A content item: a video, live stream, shop page or aggregated page.
item = Entity(
    name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="A content item."
)
# A product SKU that content items feature.
sku = Entity(
    name="sku", join_keys=["sku_id"], value_type=ValueType.INT64, description="A product SKU."
)
