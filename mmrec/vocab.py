"""The world's vocabulary: the five M's and the product categories, shared by every stage."""

from __future__ import annotations

from datetime import UTC, datetime

# multi-source: where the traffic came from
SOURCES = ("search", "rec")
# multi-material: the kinds of content item
MATERIALS = ("video", "live", "shop", "aggregated")
# multi-position: where on the app the item was shown
POSITIONS = ("home", "inner", "detail")
# multi-behaviour on content, in funnel order
CONTENT_BEHAVIOURS = ("impression", "click", "watch", "share", "comment", "cart", "favorite")
# multi-behaviour on the product domain
PRODUCT_BEHAVIOURS = ("sku_click", "sku_cart", "sku_purchase")
EVENT_TYPES = CONTENT_BEHAVIOURS + PRODUCT_BEHAVIOURS

# Product categories with the nouns that name their goods; titles are built from these real
# English words so a pretrained text encoder can recover the category.
CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "electronics": ("wireless headphones", "bluetooth earbuds", "smartwatch", "laptop", "speaker"),
    "beauty": ("lipstick", "face serum", "moisturizer", "perfume", "mascara"),
    "apparel": ("denim jacket", "sneakers", "summer dress", "jeans", "hoodie"),
    "food": ("coffee beans", "dark chocolate", "green tea", "instant noodles", "snack box"),
    "home": ("sofa", "desk lamp", "blender", "cookware set", "pillow"),
    "sports": ("yoga mat", "dumbbells", "running shoes", "road bicycle", "tennis racket"),
    "toys": ("building blocks", "jigsaw puzzle", "doll house", "remote control car", "board game"),
    "books": ("mystery novel", "cookbook", "comic book", "history book", "poetry collection"),
    "baby": ("diapers", "baby stroller", "baby bottle", "crib", "teething toy"),
    "pets": ("dog food", "cat tree", "pet bed", "dog leash", "aquarium"),
    "automotive": ("dash cam", "car charger", "tire inflator", "seat cover", "car wax"),
    "outdoor": ("camping tent", "hiking backpack", "sleeping bag", "hiking boots", "fishing rod"),
}
CATEGORIES = tuple(CATEGORY_NOUNS)
N_CATEGORIES = len(CATEGORIES)

# Title styles: a text-only signal (some users prefer reviews, others deals...).
TITLE_STYLES = ("review", "unboxing", "tutorial", "haul", "deal")
QUALITY_LABELS = ("low", "medium", "high")

# The world's calendar starts here (UTC); day d covers [EPOCH + d days, EPOCH + d + 1 days).
WORLD_EPOCH = datetime(2026, 10, 1, tzinfo=UTC)

# Ranking tasks: one tower each, in funnel order (a label is 1 when the behaviour followed an
# impression; training_sets/samples.py derives them from the logs).
RANKING_TASKS = ("click", "watch", "share", "comment", "cart", "favorite")

# Recall channels: vector recall from a seed SKU, a seed video or the user; tag term recall;
# the fresh and popular fallbacks.
S2V, V2V, U2V, TERM, FRESH, POPULAR = "s2v", "v2v", "u2v", "term", "fresh", "popular"
VECTOR_CHANNELS = (S2V, V2V, U2V)
CHANNELS = (*VECTOR_CHANNELS, TERM, FRESH, POPULAR)

# The content modalities an item can carry: its title's text and its cover's (or video
# frames') pixels; a catalog without images has the first only (DataProfile).
CONTENT_MODALITIES = ("text", "visual")

# Content embedding widths: all-MiniLM-L6-v2 sentence embedding, EfficientNet-lite0 pooled
# features, and the learned fused projection (content/fusion.py).
TEXT_DIM = 384
VISUAL_DIM = 1280
FUSED_DIM = 128

# Feature services are model versions (Feast's own template names them so): a model records the
# service it was trained with, and serving reads features by that recorded name.
RECALL_SERVICE = "recall_v1"
RANKING_SERVICE = "ranking_v1"

# The BentoML model store names training saves under, and the tags indexing and serving load
# unless told otherwise (MMREC_RECALL_MODEL / MMREC_RANK_MODEL, --model): the newest version.
RECALL_MODEL_NAME = "recall"
RANKING_MODEL_NAME = "ranking"
LATEST_RECALL_MODEL = f"{RECALL_MODEL_NAME}:latest"
LATEST_RANKING_MODEL = f"{RANKING_MODEL_NAME}:latest"
