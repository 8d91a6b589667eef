"""The catalog and the population: SKUs, content items and users with their hidden latents.

Observable columns go to `raw/`; the latents that drive behaviour (interests, modality
preferences, item quality, popularity curve) go to `truth/` and are read only by evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datagen.scales import Scale
from mmrec.errors import UserError
from mmrec.vocab import (
    CATEGORIES,
    CATEGORY_NOUNS,
    MATERIALS,
    N_CATEGORIES,
    TITLE_STYLES,
    WORLD_EPOCH,
)

MATERIAL_SHARES = np.array([0.5, 0.15, 0.2, 0.15])  # video, live, shop, aggregated
REGIONS = ("north", "south", "east", "west")
QUALITY_ADJECTIVES = {
    "low": ("cheap", "basic", "knockoff", "random"),
    "medium": ("popular", "everyday", "classic", "simple"),
    "high": ("premium", "top rated", "professional", "elegant"),
}
STYLE_TEMPLATES = {
    "review": "Honest review of the {adj} {noun}",
    "unboxing": "Unboxing my new {adj} {noun}",
    "tutorial": "How to choose a {adj} {noun}: a tutorial",
    "haul": "Big {noun} haul with {adj} picks",
    "deal": "Deal alert: {adj} {noun} on sale today",
}
SECONDS_PER_DAY = 86_400


@dataclass
class Catalog:
    """Everything static about the world, observable and latent, as DataFrames."""

    skus: pd.DataFrame
    items: pd.DataFrame  # observable item columns
    item_latent: pd.DataFrame  # quality, style, popularity curve (truth only)
    users: pd.DataFrame  # observable user columns
    user_latent: pd.DataFrame  # interests and preferences (truth only)


def quality_label(quality: np.ndarray) -> np.ndarray:
    """Bucket a latent quality in [0, 1] into low / medium / high."""
    return np.select([quality < 1 / 3, quality < 2 / 3], ["low", "medium"], "high")


def make_skus(scale: Scale, rng: np.random.Generator) -> pd.DataFrame:
    """SKUs with a category and a price; sku_id starts at 1."""
    category = rng.integers(0, N_CATEGORIES, scale.n_skus)
    price = np.round(np.exp(rng.normal(3.5 + 0.1 * category, 0.6)), 2)
    return pd.DataFrame(
        {
            "sku_id": np.arange(1, scale.n_skus + 1, dtype=np.int64),
            "category": np.asarray(CATEGORIES)[category],
            "category_idx": category,
            "price": price,
        }
    )


def _link_skus(
    category: np.ndarray, skus: pd.DataFrame, rng: np.random.Generator
) -> list[np.ndarray]:
    """1..3 SKUs of the item's category; a quarter of items also feature one off-category SKU."""
    by_category = [
        skus.sku_id.to_numpy()[skus.category_idx.to_numpy() == c] for c in range(N_CATEGORIES)
    ]
    counts = rng.integers(1, 4, len(category))
    cross = rng.random(len(category)) < 0.25
    linked = []
    for cat, count, has_cross in zip(category, counts, cross, strict=True):
        pool = by_category[cat]
        chosen = rng.choice(pool, size=min(count, len(pool)), replace=False)
        if has_cross:
            other = by_category[(cat + 1 + rng.integers(0, N_CATEGORIES - 1)) % N_CATEGORIES]
            chosen = np.append(chosen, rng.choice(other))
        linked.append(np.unique(chosen).astype(np.int64))
    return linked


def make_titles(category: np.ndarray, style: np.ndarray, quality: np.ndarray, rng) -> list[str]:
    """Titles whose nouns carry the category, adjectives the quality and template the style."""
    labels = quality_label(quality)
    titles = []
    for cat, sty, label in zip(category, style, labels, strict=True):
        nouns = CATEGORY_NOUNS[CATEGORIES[cat]]
        noun = nouns[rng.integers(0, len(nouns))]
        adjectives = QUALITY_ADJECTIVES[label]
        adj = adjectives[rng.integers(0, len(adjectives))]
        title = STYLE_TEMPLATES[TITLE_STYLES[sty]].format(adj=adj, noun=noun)
        titles.append(title + (" !!! click now" if label == "low" and rng.random() < 0.5 else ""))
    return titles


def make_items(
    scale: Scale, skus: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Content items: the backfilled catalog plus `n_items_per_day` new items every day.

    Items of day d are published in the first half of that day; sessions run in the second
    half, so every published item can be shown the day it arrives (cold start).
    """
    n_items = scale.n_items_initial + scale.n_items_per_day * scale.n_days
    epoch_s = int(WORLD_EPOCH.timestamp())
    backfill = epoch_s - rng.uniform(
        0, scale.backfill_days * SECONDS_PER_DAY, scale.n_items_initial
    )
    day = np.repeat(np.arange(scale.n_days), scale.n_items_per_day)
    fresh = epoch_s + day * SECONDS_PER_DAY + rng.uniform(0, SECONDS_PER_DAY / 2, len(day))
    publish_s = np.concatenate([np.sort(backfill), fresh]).astype(np.int64)

    category_weights = 1.0 / np.arange(1, N_CATEGORIES + 1) ** 0.5
    category = rng.choice(N_CATEGORIES, n_items, p=category_weights / category_weights.sum())
    material = rng.choice(len(MATERIALS), n_items, p=MATERIAL_SHARES)
    quality = rng.beta(2.0, 2.0, n_items)
    style = rng.integers(0, len(TITLE_STYLES), n_items)
    duration = np.where(
        material == 0,
        rng.uniform(15, 180, n_items),
        np.where(material == 1, rng.uniform(600, 3600, n_items), 0.0),
    )
    item_id = np.arange(1, n_items + 1, dtype=np.int64)
    items = pd.DataFrame(
        {
            "item_id": item_id,
            "material": np.asarray(MATERIALS)[material],
            "title": make_titles(category, style, quality, rng),
            "category": np.asarray(CATEGORIES)[category],
            "sku_ids": _link_skus(category, skus, rng),
            "publish_ts": pd.to_datetime(publish_s, unit="s", utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "duration_s": np.round(duration, 1),
        }
    )
    latent = pd.DataFrame(
        {
            "item_id": item_id,
            "category_idx": category,
            "material_idx": material,
            "quality": quality,
            "style_idx": style,
            "popularity_base": np.exp(rng.normal(0.0, 1.0, n_items)),
            "popularity_half_life_days": rng.uniform(2.0, 10.0, n_items),
        }
    )
    return items, latent


@dataclass(frozen=True)
class ModalityTaste:
    """How users' modality preferences (visual, text, popularity) are drawn: from
    Dirichlet(concentration), the visual and text ones then multiplied by `content_gain`."""

    concentration: float
    content_gain: float


MODALITY_TASTES = {
    # every user cares a bit about everything: on the small world the hidden utility's click
    # AUC drops 0.833 -> 0.828 when it uses the population's mean pref_visual (or pref_text)
    # instead of each user's
    "mixed": ModalityTaste(concentration=1.0, content_gain=1.0),
    # most users care mostly about one modality, and about pixels and titles twice as much:
    # 0.897 -> 0.882 (pref_visual), 0.871 (pref_text). The test bed for per-user modality
    # interest (GMF's MIN); README says so.
    "strong": ModalityTaste(concentration=0.25, content_gain=2.0),
}


def get_modality_taste(name: str) -> ModalityTaste:
    """The named taste, or a UserError that lists the valid names."""
    try:
        return MODALITY_TASTES[name]
    except KeyError:
        raise UserError(
            f"unknown modality taste {name!r}; choose one of {', '.join(MODALITY_TASTES)}"
        ) from None


def make_users(
    scale: Scale, rng: np.random.Generator, taste: ModalityTaste = MODALITY_TASTES["mixed"]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users with peaked category interests, a correlated product-domain interest (so
    product behaviour predicts content interest: the cross-domain signal), and modality
    preferences: how much they respond to visual quality, text style and popularity."""
    n = scale.n_users
    interest = rng.dirichlet(np.full(N_CATEGORIES, 0.3), n)
    product_interest = 0.7 * interest + 0.3 * rng.dirichlet(np.full(N_CATEGORIES, 0.5), n)
    modality_pref = rng.dirichlet(np.full(3, taste.concentration), n)  # visual, text, popularity
    modality_pref[:, :2] *= taste.content_gain
    user_id = np.arange(1, n + 1, dtype=np.int64)
    registered_s = int(WORLD_EPOCH.timestamp()) - rng.integers(1, 720, n) * SECONDS_PER_DAY
    users = pd.DataFrame(
        {
            "user_id": user_id,
            "region": np.asarray(REGIONS)[rng.integers(0, len(REGIONS), n)],
            "registered_at": pd.to_datetime(registered_s, unit="s", utc=True).astype(
                "datetime64[us, UTC]"
            ),
        }
    )
    latent = pd.DataFrame(
        {
            "user_id": user_id,
            "category_interest": list(interest.astype(np.float32)),
            "product_interest": list(product_interest.astype(np.float32)),
            "pref_visual": modality_pref[:, 0],
            "pref_text": modality_pref[:, 1],
            "pref_popularity": modality_pref[:, 2],
            "preferred_style_idx": rng.integers(0, len(TITLE_STYLES), n),
            "material_pref": list(
                rng.dirichlet(np.full(len(MATERIALS), 2.0), n).astype(np.float32)
            ),
            "activity": np.clip(np.exp(rng.normal(0.0, 0.5, n)), 0.2, 3.0),
        }
    )
    return users, latent


def make_catalog(
    scale: Scale, rng: np.random.Generator, taste: ModalityTaste = MODALITY_TASTES["mixed"]
) -> Catalog:
    """The static world for one scale, users' modality taste and random stream."""
    skus = make_skus(scale, rng)
    items, item_latent = make_items(scale, skus, rng)
    users, user_latent = make_users(scale, rng, taste)
    return Catalog(skus, items, item_latent, users, user_latent)
