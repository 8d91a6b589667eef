"""Features computed at request time (python-mode on-demand views), the same code offline
and online so training and serving agree."""

from data_sources import request_context_source
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64
from item_features import item_attributes_fv
from user_features import user_cross_domain_fv


# Hours since the item was published, at the time of the request (timeliness).
@on_demand_feature_view(
    sources=[item_attributes_fv, request_context_source],
    # Fields carry no description: Feast checks them against fields inferred from a trial run.
    schema=[Field(name="item_age_hours", dtype=Float64)],
    mode="python",
)
def item_freshness(inputs: dict) -> dict:
    ages = []
    for published, now in zip(inputs["publish_ts_s"], inputs["request_ts"], strict=True):
        ages.append(
            None if published is None or now is None else max(0.0, (now - published) / 3600.0)
        )
    return {"item_age_hours": ages}


# The user's cross-domain affinity for this item's category (user x item).
@on_demand_feature_view(
    sources=[user_cross_domain_fv, item_attributes_fv],
    schema=[Field(name="cdr_item_category_affinity", dtype=Float64)],
    mode="python",
)
def user_item_affinity(inputs: dict) -> dict:
    # cdr_category_affinity and category_index both follow the data's category list (the
    # manifest), so the UDF needs no vocabulary of its own.
    out = []
    for affinity, index in zip(
        inputs["cdr_category_affinity"], inputs["category_index"], strict=True
    ):
        usable = affinity is not None and index is not None and 0 <= index < len(affinity)
        out.append(float(affinity[index]) if usable else 0.0)
    return {"cdr_item_category_affinity": out}
