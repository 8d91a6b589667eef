"""Feature services: the feature sets models are trained and served with, by name.

Each is a model version (`recall_v1`, as in Feast's own template): a trained model records the
service it read, and serving reads features by that recorded name. A changed feature set is a new
service (`recall_v2`) beside the old one, so models trained on either keep serving.
"""

from feast import FeatureService
from item_content_features import item_embeddings_fv, item_tags_fv
from item_features import item_attributes_fv, item_stats_fv, sku_attributes_fv
from on_demand_features import item_freshness, user_item_affinity
from user_features import user_behavior_seq_fv, user_cross_domain_fv

# Recall (two towers): who the user is by behaviour, what the item is, the seed SKU (S2V).
recall_service = FeatureService(
    name="recall_v1",
    features=[
        user_behavior_seq_fv,
        user_cross_domain_fv,
        item_attributes_fv,
        item_embeddings_fv,
        item_tags_fv,
        sku_attributes_fv,
    ],
    description="Features of the multimodal recall model (query and item towers).",
)

# Ranking (multi-task MMoE): recall's features plus timeliness and user x item features.
ranking_service = FeatureService(
    name="ranking_v1",
    features=[
        user_behavior_seq_fv,
        user_cross_domain_fv,
        item_attributes_fv,
        item_embeddings_fv,
        item_tags_fv,
        item_stats_fv,
        item_freshness,
        user_item_affinity,
    ],
    description="Features of the multi-task ranking model.",
)
