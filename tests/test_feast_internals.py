"""The Feast internals mmrec relies on (mmrec/feast_internals.py) still behave as the code
using them expects: a Feast upgrade that changes them fails here, by name."""

from __future__ import annotations

from mmrec.feast_internals import (
    TIMESTAMP_POSTFIX,
    int64_entity_key,
    online_provider,
    python_value,
)


def test_online_read_of_an_item_equals_get_online_features(feature_store) -> None:
    view = feature_store.get_feature_view("item_attributes")
    features = ["material", "sku_ids"]
    item_id = 5
    [(stamp, values)] = online_provider(feature_store).online_read(
        feature_store.config, view, [int64_entity_key("item_id", item_id)], list(features)
    )
    want = feature_store.get_online_features(
        features=[f"item_attributes:{f}" for f in features], entity_rows=[{"item_id": item_id}]
    ).to_dict(include_event_timestamps=True)
    assert stamp is not None and values
    for name in features:
        assert python_value(values[name]) == want[name][0], name
    assert f"material{TIMESTAMP_POSTFIX}" in want
