"""Item content-understanding feature views: pretrained-encoder embeddings and predicted tags.

Written by `mmrec content encode` (content/encode.py) as
`data/offline/{item_embeddings,item_tags}/day=YYYY-MM-DD/part.parquet`, one row per item
stamped with its publish time and the encoder name and version that produced it. What is
there follows the data (the manifest's profile): a catalog without images has a null
`visual_emb` and a text-only `fused_emb`; data without quality labels a null quality.
"""

from data_sources import NEVER_EXPIRES, offline_source
from entities import item
from feast import FeatureView, Field
from feast.types import Array, Float32, String

item_embeddings_source = offline_source(
    "item_embeddings", "Text, visual and fused item embeddings from pretrained encoders."
)
item_tags_source = offline_source("item_tags", "Predicted category and quality tags.")

# What an item looks and reads like: a content item's representation does not go stale,
# whatever its last event.
item_embeddings_fv = FeatureView(
    name="item_embeddings",
    entities=[item],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(
            name="text_emb",
            dtype=Array(Float32),
            description="all-MiniLM-L6-v2 title embedding, 384-d, L2-normalised.",
        ),
        Field(
            name="visual_emb",
            dtype=Array(Float32),
            description="EfficientNet-lite0 pooled features, 1280-d: the cover, or the mean over sampled video frames (the cover when the catalog has no frames); null when the item has no image.",
        ),
        Field(
            name="fused_emb",
            dtype=Array(Float32),
            description="Learned projection of the modalities present (text + visual, or text alone), 128-d, L2-normalised (recall).",
        ),
        Field(
            name="encoder_name",
            dtype=String,
            description="The text+image encoders that produced the row ('+none': no image encoder ran).",
        ),
        Field(
            name="encoder_version",
            dtype=String,
            description="Digest of encoder wheels, preprocessing, backend and video pooling.",
        ),
        Field(
            name="fusion_version",
            dtype=String,
            description="Version of the trained fusion projection behind fused_emb.",
        ),
    ],
    source=item_embeddings_source,
    online=True,
    description="Content embeddings for recall and ranking; one encoder version at a time.",
)

# What the item is about and how good it looks, as predicted by light heads over the embeddings.
item_tags_fv = FeatureView(
    name="item_tags",
    entities=[item],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(
            name="category_tags",
            dtype=Array(String),
            description="Predicted categories, most probable first.",
        ),
        Field(
            name="category_probs",
            dtype=Array(Float32),
            description="Probability per category, in the order of the data's categories (the manifest's; mmrec.vocab.CATEGORIES for the synthetic world).",
        ),
        Field(
            name="quality_label",
            dtype=String,
            description="Predicted quality grade: low | medium | high; null when the data has no quality labels.",
        ),
        Field(
            name="quality_score",
            dtype=Float32,
            description="Expected quality grade in [0, 1]; null (unknown) when the data has no quality labels.",
        ),
        Field(
            name="tag_model_version",
            dtype=String,
            description="Version of the tag heads (includes the encoder version).",
        ),
    ],
    source=item_tags_source,
    online=True,
    description="Classification and quality tags from the content-understanding layer.",
)
