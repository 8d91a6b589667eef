"""One day of behaviour: sessions, impressions and the funnel after them, vectorized per day.

The logging policy shows a mix of items from the session's intent category, popular items
and random items. A user clicks by a hidden utility: category interest, plus visual quality,
title style and popularity weighted by the user's own modality preferences, plus material
taste, position bias and the link to the product they came from. Product-domain events
(sku click / cart / purchase) follow the user's product interest, which is correlated with
content interest: the cross-domain signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from datagen.catalog import SECONDS_PER_DAY, Catalog
from datagen.scales import Scale
from mmrec.vocab import MATERIALS, N_CATEGORIES, POSITIONS, SOURCES, WORLD_EPOCH

POSITION_SHARES = np.array([0.5, 0.3, 0.2])  # home, inner, detail
POSITION_BIAS = np.array([-0.2, 0.0, 0.3])
SEARCH_SHARE = 0.3
# Where each impression slot's item comes from: intent category, popular, uniform random.
SLOT_MIX = np.array([0.55, 0.25, 0.20])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a (N, K) weight matrix (vectorized inverse CDF)."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), weights.shape[1] - 1)


class WeightedPools:
    """Popularity-weighted item pools per category, for fast vectorized sampling."""

    def __init__(self, item_idx: np.ndarray, category: np.ndarray, weight: np.ndarray) -> None:
        order = np.argsort(category, kind="stable")
        self.items = item_idx[order]
        self.cdf_by_cat: list[tuple[int, np.ndarray]] = []
        starts = np.searchsorted(category[order], np.arange(N_CATEGORIES + 1))
        w = weight[order]
        for c in range(N_CATEGORIES):
            lo, hi = starts[c], starts[c + 1]
            self.cdf_by_cat.append((lo, np.cumsum(w[lo:hi])))
        self.global_cdf = np.cumsum(weight)
        self.global_items = item_idx

    def sample_in_category(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(cats), dtype=np.int64)
        for c in range(N_CATEGORIES):
            rows = np.flatnonzero(cats == c)
            lo, cdf = self.cdf_by_cat[c]
            if len(cdf) == 0:  # no item of this category yet: fall back to the global pool
                out[rows] = self.sample_global(len(rows), rng)
                continue
            picks = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1])
            out[rows] = self.items[lo + np.minimum(picks, len(cdf) - 1)]
        return out

    def sample_global(self, n: int, rng: np.random.Generator) -> np.ndarray:
        picks = np.searchsorted(self.global_cdf, rng.random(n) * self.global_cdf[-1])
        return self.global_items[np.minimum(picks, len(self.global_items) - 1)]


def simulate_day(
    catalog: Catalog, scale: Scale, day: int, rng: np.random.Generator
) -> pd.DataFrame:
    """All events of day `day` as a long table, one behaviour per row, sorted by time."""
    day_start = int(WORLD_EPOCH.timestamp()) + day * SECONDS_PER_DAY
    items, il, ul = catalog.items, catalog.item_latent, catalog.user_latent
    publish_s = items.publish_ts.astype("datetime64[s, UTC]").astype("int64").to_numpy()
    available = np.flatnonzero(publish_s < day_start + SECONDS_PER_DAY // 2)
    popularity_now = popularity_on_day(il, publish_s, day_start)
    item_cat = il.category_idx.to_numpy()
    pools = WeightedPools(available, item_cat[available], np.sqrt(popularity_now[available]))
    popular = WeightedPools(available, item_cat[available], popularity_now[available])

    # --- sessions ------------------------------------------------------------------------
    activity = ul.activity.to_numpy()
    active = np.flatnonzero(rng.random(len(activity)) < np.clip(scale.active_rate * activity, 0, 1))
    n_sessions = np.maximum(1, rng.poisson(scale.sessions_per_active_user, len(active)))
    s_user = np.repeat(active, n_sessions)  # user row index per session
    n_s = len(s_user)
    s_position = rng.choice(len(POSITIONS), n_s, p=POSITION_SHARES)
    s_source = np.where(rng.random(n_s) < SEARCH_SHARE, 0, 1)  # index into SOURCES: search, rec
    s_start = day_start + SECONDS_PER_DAY // 2 + rng.uniform(0, SECONDS_PER_DAY / 2 - 900, n_s)
    interest = np.stack(ul.category_interest.to_numpy())
    product_interest = np.stack(ul.product_interest.to_numpy())
    s_intent = _sample_rows(
        np.where((s_position == 2)[:, None], product_interest[s_user], interest[s_user]), rng
    )
    # detail sessions start on a product page: the user clicked a SKU of the intent category
    skus = catalog.skus
    sku_pools = WeightedPools(
        np.arange(len(skus)), skus.category_idx.to_numpy(), np.ones(len(skus))
    )
    s_context_sku = np.where(s_position == 2, sku_pools.sample_in_category(s_intent, rng), -1)

    # --- impressions ---------------------------------------------------------------------
    k = scale.impressions_per_session
    imp_session = np.repeat(np.arange(n_s), k)
    imp_slot = np.tile(np.arange(k), n_s)
    mix = np.tile(SLOT_MIX, (len(imp_session), 1))
    mix[s_source[imp_session] == 0] = [0.85, 0.1, 0.05]  # search: the query's category
    origin = _sample_rows(mix, rng)
    imp_item = np.empty(len(imp_session), dtype=np.int64)
    for o, sampler in enumerate(
        (
            lambda rows: pools.sample_in_category(s_intent[imp_session[rows]], rng),
            lambda rows: popular.sample_global(len(rows), rng),
            lambda rows: available[rng.integers(0, len(available), len(rows))],
        )
    ):
        rows = np.flatnonzero(origin == o)
        imp_item[rows] = sampler(rows)
    # detail pages also show content featuring the page's SKU
    sku_ids = skus.sku_id.to_numpy()
    item_skus = items.sku_ids.to_list()
    sku_to_items = _sku_item_index(items, available)
    detail_rows = np.flatnonzero(
        (s_position[imp_session] == 2) & (rng.random(len(imp_session)) < 0.4)
    )
    for row in detail_rows:
        featuring = sku_to_items.get(int(sku_ids[s_context_sku[imp_session[row]]]))
        if featuring is not None:
            imp_item[row] = featuring[rng.integers(0, len(featuring))]
    # dedupe within a session: one impression per (session, item)
    keep = ~pd.DataFrame({"s": imp_session, "i": imp_item}).duplicated().to_numpy()
    imp_session, imp_slot, imp_item = imp_session[keep], imp_slot[keep], imp_item[keep]
    imp_user = s_user[imp_session]
    imp_ts = s_start[imp_session] + imp_slot * 8 + rng.uniform(0, 4, len(imp_item))

    # --- the hidden click utility ----------------------------------------------------------
    quality = il.quality.to_numpy()[imp_item]
    material = il.material_idx.to_numpy()[imp_item]
    linked = np.zeros(len(imp_item), dtype=bool)
    for row in np.flatnonzero(s_position[imp_session] == 2):
        linked[row] = sku_ids[s_context_sku[imp_session[row]]] in item_skus[imp_item[row]]
    logit, relevance = click_logit(
        il, ul, imp_user, imp_item, popularity_now[imp_item], s_position[imp_session], linked
    )
    clicked = rng.random(len(logit)) < _sigmoid(logit)

    # --- after the click -------------------------------------------------------------------
    c = np.flatnonzero(clicked)
    click_ts = imp_ts[c] + rng.uniform(1, 5, len(c))
    duration = items.duration_s.to_numpy()[imp_item[c]]
    watch_ratio = _sigmoid(0.6 * relevance[c] + 2.0 * (quality[c] - 0.5) + rng.normal(0, 1, len(c)))
    watch_seconds = np.round(duration * watch_ratio, 1)
    watched = duration > 0
    engage_logit = 0.6 * relevance[c] + 2.0 * (quality[c] - 0.5)
    follow = {
        "share": rng.random(len(c)) < _sigmoid(-4.0 + engage_logit),
        "comment": rng.random(len(c)) < _sigmoid(-4.2 + engage_logit),
        "favorite": rng.random(len(c)) < _sigmoid(-3.0 + engage_logit),
        "cart": rng.random(len(c)) < _sigmoid(-3.4 + engage_logit + 1.0 * (material[c] == 2)),
    }
    first_sku = np.array([item_skus[i][0] for i in imp_item[c]], dtype=np.int64)

    def content_events(event_type: str, rows: np.ndarray, ts: np.ndarray, **extra) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": catalog.users.user_id.to_numpy()[imp_user[rows]],
                "item_id": items.item_id.to_numpy()[imp_item[rows]],
                "sku_id": extra.get("sku_id", np.full(len(rows), -1)),
                "event_type": event_type,
                "source": np.asarray(SOURCES)[s_source[imp_session[rows]]],
                "position": np.asarray(POSITIONS)[s_position[imp_session[rows]]],
                "material": np.asarray(MATERIALS)[material[rows]],
                "session_id": day * 10_000_000 + imp_session[rows],
                "watch_seconds": extra.get("watch_seconds", np.full(len(rows), np.nan)),
                "event_ts": ts,
            }
        )

    frames = [
        content_events("impression", np.arange(len(imp_item)), imp_ts),
        content_events("click", c, click_ts),
        content_events(
            "watch", c[watched], click_ts[watched] + 1.0, watch_seconds=watch_seconds[watched]
        ),
    ]
    for event_type, mask in follow.items():
        extra = {"sku_id": first_sku[mask]} if event_type == "cart" else {}
        ts = (
            click_ts[mask]
            + np.nan_to_num(watch_seconds[mask]) * rng.uniform(0.3, 1.0, mask.sum())
            + 2
        )
        frames.append(content_events(event_type, c[mask], ts, **extra))
    frames.append(
        _product_events(catalog, s_user, s_position, s_context_sku, s_start, active, day_start, rng)
    )
    events = pd.concat(frames, ignore_index=True)
    events["event_timestamp"] = pd.to_datetime(
        np.round(events.pop("event_ts") * 1e6).astype("int64"), unit="us", utc=True
    )
    for column in ("item_id", "sku_id"):
        events[column] = events[column].astype("Int64").mask(events[column] < 0)
    return events.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)


def popularity_on_day(
    item_latent: pd.DataFrame, publish_s: np.ndarray, day_start: int
) -> np.ndarray:
    """Each item's popularity on the day starting at `day_start` (epoch seconds): its base
    popularity halved every half-life since publication, at the day's 18:00."""
    age_days = (day_start + SECONDS_PER_DAY * 0.75 - publish_s) / SECONDS_PER_DAY
    return item_latent.popularity_base.to_numpy() * 0.5 ** (
        np.clip(age_days, 0, None) / item_latent.popularity_half_life_days.to_numpy()
    )


def click_logit(
    item_latent: pd.DataFrame,
    user_latent: pd.DataFrame,
    users: np.ndarray,
    items: np.ndarray,
    popularity: np.ndarray,
    position: np.ndarray,
    linked: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The hidden click logit of impressions (user row, item row, the item's popularity that
    day, position index, shown on the page of a product it features) and their category
    relevance; the generator draws clicks from it, evaluation scores the oracle with it."""
    il, ul = item_latent, user_latent
    interest = np.stack(ul.category_interest.to_numpy())
    quality = il.quality.to_numpy()[items]
    relevance = np.log(N_CATEGORIES * interest[users, il.category_idx.to_numpy()[items]] + 0.05)
    style_match = il.style_idx.to_numpy()[items] == ul.preferred_style_idx.to_numpy()[users]
    pop_z = np.log(popularity + 1e-3)
    material_pref = np.stack(ul.material_pref.to_numpy())[users, il.material_idx.to_numpy()[items]]
    logit = (
        -2.7
        + 0.8 * relevance
        + ul.pref_visual.to_numpy()[users] * 4.0 * (quality - 0.5)
        + ul.pref_text.to_numpy()[users] * (2.5 * style_match - 0.5)
        + ul.pref_popularity.to_numpy()[users] * 1.5 * (pop_z - 0.3)
        + 0.5 * np.log(len(MATERIALS) * material_pref)
        + POSITION_BIAS[position]
        + 0.8 * linked
    )
    return logit, relevance


def _sku_item_index(items: pd.DataFrame, available: np.ndarray) -> dict[int, np.ndarray]:
    """sku_id -> row indexes of available items that feature it."""
    exploded = items.iloc[available][["sku_ids"]].assign(row=available).explode("sku_ids")
    return {
        int(sku): rows.to_numpy() for sku, rows in exploded.groupby("sku_ids", sort=False)["row"]
    }


def _product_events(
    catalog: Catalog,
    s_user: np.ndarray,
    s_position: np.ndarray,
    s_context_sku: np.ndarray,
    s_start: np.ndarray,
    active: np.ndarray,
    day_start: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """SKU clicks (browsing plus the product page each detail session starts on), carts,
    purchases: the product domain whose interest the CDR features carry over to content."""
    skus, ul = catalog.skus, catalog.user_latent
    n_browse = rng.poisson(2.0 * ul.activity.to_numpy()[active])
    b_user = np.repeat(active, n_browse)
    product_interest = np.stack(ul.product_interest.to_numpy())
    b_cat = _sample_rows(product_interest[b_user], rng)
    sku_pools = WeightedPools(
        np.arange(len(skus)), skus.category_idx.to_numpy(), np.ones(len(skus))
    )
    b_sku = sku_pools.sample_in_category(b_cat, rng)
    b_ts = day_start + rng.uniform(0, SECONDS_PER_DAY, len(b_user))
    detail = np.flatnonzero(s_position == 2)
    user_row = np.concatenate([b_user, s_user[detail]])
    sku_row = np.concatenate([b_sku, s_context_sku[detail]])
    click_ts = np.concatenate([b_ts, s_start[detail] - 5.0])
    cart = rng.random(len(user_row)) < 0.25
    purchase = cart & (rng.random(len(user_row)) < 0.35)
    parts = []
    for event_type, mask, delay in (
        ("sku_click", np.ones(len(user_row), bool), 0.0),
        ("sku_cart", cart, 30.0),
        ("sku_purchase", purchase, 300.0),
    ):
        parts.append(
            pd.DataFrame(
                {
                    "user_id": catalog.users.user_id.to_numpy()[user_row[mask]],
                    "item_id": -1,
                    "sku_id": skus.sku_id.to_numpy()[sku_row[mask]],
                    "event_type": event_type,
                    "source": None,
                    "position": None,
                    "material": None,
                    "session_id": -1,
                    "watch_seconds": np.nan,
                    "event_ts": click_ts[mask] + delay,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["session_id"] = out["session_id"].astype("int64")
    return out
