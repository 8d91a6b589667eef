"""Ranking training set (one row per impression, features from Feast) -> model tensors.

`read_split(settings, "ranking", split)` rows carry the `ranking` feature service's values at
each impression's time. This module turns them into `RankingData`: per-row tensors for
`UserInputs` / `CandidateInputs`, six task labels and their masks, and the keys evaluation
groups by (user, warm/cold). Item content embeddings are not copied per row: both the
candidate's and the user's history items point into one `ItemContent` table, gathered per
batch (a (N, L, 1664) float copy of every history would not fit in memory at small scale).

Choices, stated once:
- Missing content: when the `ranking` service has no `item_embeddings` view (the content
  stage has not run), `load_item_content` returns None and `require_content` refuses any
  config with `use_multimodal` (ValueError naming the fix); ID-only configs still train.
  Items the encoder skipped (empty title, unreadable cover; content/encode.py) get zero
  vectors and are counted in `RankingData.stats`.
- Rows whose item attributes are null were impressed before the item's publish time as Feast
  sees it (material/category unknown at that moment): dropped and counted.
- Null user features mean "no history yet": empty sequence, zero CDR affinities. Null item
  stats mean "no impression in 7 days": CTRs take the smoothing prior the pipeline uses for
  new items (feature_pipelines.item_stats.PRIOR_CTR), so a new item looks the same here as
  in the online store's next snapshot.
- History categories: each clicked item's category index as of the end of the data (Feast's
  item_attributes view, `load_item_categories`; serving: the snapshot's), -1 when unknown;
  the model turns them into the user's click share per category (`use_history_category`).
- Popularity (`use_popularity`): the candidate's impressions in 1 and 7 days (item_stats at
  the row's time, 0 when the view has no row: no impression in 7 days), and each history
  item's impressions in 7 days as of the row's time too (`load_history_popularity`: item
  stats are stamped at the end of each data day, so the value at a row's time is the value
  at the start of its day; serving: the snapshot's, as for its candidates); the model turns
  them into the user's taste for popular items.
- Cold start: `is_cold` (the set's flag: first seen on a test day; rank_train widens it to
  items absent from the train split) zeroes the candidate's ID
  embedding in the model, so cold items are ranked by their modality projections and DSN
  residuals (models/ranking.py; `id_dropout` trains that path on warm items).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from feature_pipelines.item_stats import PRIOR_CTR
from mmrec.arrays import find_sorted
from mmrec.errors import UserError
from mmrec.vocab import (
    CATEGORIES,
    CONTENT_MODALITIES,
    MATERIALS,
    POSITIONS,
    RANKING_SERVICE,
    RANKING_TASKS,
    SOURCES,
)
from models.feature_columns import padded_sequences, stack_embeddings
from models.item_content import CONTENT_VERSION_FIELDS, ItemContent, item_content_from_frame
from models.ranking_config import RankingConfig
from models.ranking_tensors import CandidateInputs, UserInputs
from models.recall_vectors import ItemVectors

log = logging.getLogger(__name__)

FEATURE_SERVICE = RANKING_SERVICE
CONTENT_VIEW = "item_embeddings"
# The windowed rates fed to the timeliness block (RankingConfig.n_ctr_windows = 4).
CTR_FEATURES = ("ctr_7d", "ctr_home_7d", "ctr_inner_7d", "ctr_detail_7d")
SEQUENCE_FEATURE = "item_click_seq"  # newest first, as written by feature_pipelines
STATS_VIEW = "item_stats"
# The candidate's popularity (use_popularity): the world draws impressions by popularity.
POPULARITY_FEATURES = ("impressions_1d", "impressions_7d")
HISTORY_POPULARITY_FEATURE = "impressions_7d"  # each history item's, at the row's time


def content_projection(store) -> list[str] | None:
    """Feature refs of the `ranking` service's item_embeddings view, None when it has none."""
    service = store.get_feature_service(FEATURE_SERVICE)
    for projection in service.feature_view_projections:
        if projection.name == CONTENT_VIEW:
            names = {f.name for f in projection.features}
            wanted = ("text_emb", "visual_emb", *CONTENT_VERSION_FIELDS)
            missing = [n for n in wanted if n not in names]
            if missing:
                raise UserError(f"the {FEATURE_SERVICE} service's {CONTENT_VIEW} lacks {missing}")
            return [f"{CONTENT_VIEW}:{n}" for n in wanted]
    return None


def load_item_content(
    store, item_ids: np.ndarray, at: datetime, modalities: tuple[str, ...] = CONTENT_MODALITIES
) -> ItemContent | None:
    """One content row per item through Feast's point-in-time join at `at`.

    Point-in-time safety: content embeddings are static per encoder version and the
    item_embeddings view stamps each item's row at its publish time (content/encode.py), so
    any `at` after publication returns the one row a join at the impression's own time
    returns; `at` = the end of the data covers every item it mentions. Returns None when the
    `ranking` service has no content view (see `require_content`).
    """
    refs = content_projection(store)
    if refs is None:
        return None
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    entity = pd.DataFrame(
        {"item_id": ids, "event_timestamp": pd.Timestamp(at).tz_convert("UTC").as_unit("us")}
    )
    frame = store.get_historical_features(entity_df=entity, features=refs).to_df()
    return item_content_from_frame(frame, modalities)


@dataclass(frozen=True)
class ItemCategories:
    """Category index (into the data's list, -1 = outside it) per item id, ids sorted."""

    item_ids: np.ndarray
    category: np.ndarray

    def of(self, item_ids: np.ndarray) -> np.ndarray:
        """Category indices of `item_ids` (any shape), -1 for ids not in the table."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos, hit = find_sorted(self.item_ids, ids.ravel())
        out = np.full(ids.size, -1, dtype=np.int64)
        out[hit] = self.category[pos[hit]]
        return out.reshape(ids.shape)


def load_item_categories(store, item_ids: np.ndarray, at: datetime) -> ItemCategories:
    """Each item's `category_index` through Feast's point-in-time join at `at` (an item's
    attributes are stamped at its publish time, so `at` = the end of the data covers every
    item the sets mention)."""
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    entity = pd.DataFrame(
        {"item_id": ids, "event_timestamp": pd.Timestamp(at).tz_convert("UTC").as_unit("us")}
    )
    frame = store.get_historical_features(
        entity_df=entity, features=["item_attributes:category_index"]
    ).to_df()
    frame = frame.sort_values("item_id")
    return ItemCategories(
        frame.item_id.to_numpy(np.int64),
        frame.category_index.astype("float64").fillna(-1).to_numpy(np.int64),
    )


# (day, item) lookup keys of the history's item stats
_ITEM_KEY_BITS = 40  # item ids below 2**40 share a key with their day


def _day_keys(item_ids: np.ndarray, days: np.ndarray) -> np.ndarray:
    """int64 (day, item) keys: days since the epoch above _ITEM_KEY_BITS, the item below."""
    return (days.astype(np.int64) << _ITEM_KEY_BITS) + item_ids.astype(np.int64)


def _days(timestamps) -> np.ndarray:
    """Whole UTC days since the epoch of timestamps (naive = UTC): a row's stats day."""
    stamps = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True)).tz_convert(None)
    return stamps.to_numpy().astype("datetime64[D]").astype(np.int64)


@dataclass(frozen=True)
class HistoryPopularity:
    """impressions_7d of items at the start of days (`load_history_popularity`): a lookup by
    (item, row time), 0 for pairs without stats (no impression in the 7 days before)."""

    keys: np.ndarray  # sorted _day_keys
    impressions: np.ndarray  # float32, by key

    @classmethod
    def on_day(cls, item_ids: np.ndarray, impressions: np.ndarray, at: np.datetime64):
        """The table of one day (serving: the item snapshot's stats at the request time)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        keys = _day_keys(ids, np.full(len(ids), _days(np.array([at]))[0]))
        order = np.argsort(keys)
        return cls(keys[order], np.asarray(impressions, dtype=np.float32)[order])

    def of(self, item_ids: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """(N, L) float32 impressions of history items `item_ids` (N, L) at their rows' times
        `timestamps` (N,) datetime64."""
        ids = np.asarray(item_ids, dtype=np.int64)
        days = np.broadcast_to(_days(timestamps)[:, None], ids.shape)
        pos, hit = find_sorted(self.keys, _day_keys(ids, days).ravel())
        return np.where(hit, self.impressions[pos], 0.0).astype(np.float32).reshape(ids.shape)


def popularity_projection(store) -> bool:
    """Whether the `ranking` service reads the item_stats features popularity needs."""
    service = store.get_feature_service(FEATURE_SERVICE)
    for projection in service.feature_view_projections:
        if projection.name == STATS_VIEW:
            return set(POPULARITY_FEATURES) <= {f.name for f in projection.features}
    return False


def load_history_popularity(
    store, frames: list[pd.DataFrame], max_seq_len: int
) -> HistoryPopularity | None:
    """The history items' impressions_7d at their rows' times, through Feast's point-in-time
    join: one entity row per (history item, row day), at the day's start + 1 s. Item stats
    are stamped at the end of each data day (feature_pipelines/item_stats.py), so a join at a
    row's own time returns the same row as at its day's start + 1 s: the newest stamp before it
    and the 7-day TTL window both move only at midnight (a row in the first second of a day
    would keep the stamp exactly 7 days old, which a join at its own time drops). None when
    the service has no item_stats view."""
    if not popularity_projection(store):
        return None
    keys = []
    for frame in frames:
        seq = padded_sequences(frame[SEQUENCE_FEATURE], max_seq_len)
        days = np.broadcast_to(_days(frame.event_timestamp)[:, None], seq.shape)
        keys.append(_day_keys(seq[seq >= 0], days[seq >= 0]))
    keys = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    if not len(keys):
        return HistoryPopularity(keys, np.empty(0, np.float32))
    days = (keys >> _ITEM_KEY_BITS).astype("datetime64[D]")
    entity = pd.DataFrame(
        {
            "item_id": keys & ((1 << _ITEM_KEY_BITS) - 1),
            "event_timestamp": pd.to_datetime(days + np.timedelta64(1, "s"), utc=True).as_unit(
                "us"
            ),
        }
    )
    frame = store.get_historical_features(
        entity_df=entity, features=[f"{STATS_VIEW}:{HISTORY_POPULARITY_FEATURE}"]
    ).to_df()
    day = _days(frame.event_timestamp)
    order_keys = _day_keys(frame.item_id.to_numpy(np.int64), day)
    order = np.argsort(order_keys)
    values = frame[HISTORY_POPULARITY_FEATURE].astype("float64").fillna(0.0).to_numpy(np.float32)
    return HistoryPopularity(order_keys[order], values[order])


def require_content(config: RankingConfig, content: ItemContent | None) -> None:
    """Refuse multimodal configs when no content embeddings exist (the documented choice:
    no silent zero vectors standing in for a whole modality)."""
    if config.use_multimodal and content is None:
        raise UserError(
            f"the {FEATURE_SERVICE} feature service has no {CONTENT_VIEW} view: run "
            "`mmrec content encode`, add the view to the service and `mmrec features apply`, "
            "then rebuild the sets; or train ID-only (--no-multimodal --no-dsn --no-min)"
        )


class RankingBatch(NamedTuple):
    user: UserInputs
    items: CandidateInputs
    labels: dict[str, Tensor]
    label_masks: dict[str, Tensor]


@dataclass
class RankingData:
    """Per-row tensors of one split; N rows, L = max sequence length.

    seq_item_ids (N, L) int64, seq_mask (N, L) bool, seq_rows (N, L) int64 (ItemContent rows),
    seq_category (N, L) int64 (-1 = unknown or padding), seq_popularity (N, L) float32 the
    history items' impressions_7d at the row's time (None without a HistoryPopularity),
    position / source (N,) int64, category_affinity (N, 12) float32, item_id / material /
    category (N,) int64, item_rows (N,) int64, age_hours (N,) float32, ctr_windows (N, 4)
    float32, popularity (N, 2) float32 (POPULARITY_FEATURES), is_cold (N,) bool, labels {task: (N,) float32}, label_masks {task: (N,) bool},
    user_id (N,) int64, user_known (N,) bool (False = a user the model is not trained on: its
    input is user_id -1); stats: counts of what was dropped or filled.
    """

    seq_item_ids: Tensor
    seq_mask: Tensor
    seq_rows: Tensor
    seq_category: Tensor
    position: Tensor
    source: Tensor
    category_affinity: Tensor
    item_id: Tensor
    material: Tensor
    category: Tensor
    item_rows: Tensor
    age_hours: Tensor
    ctr_windows: Tensor
    popularity: Tensor
    is_cold: Tensor
    labels: dict[str, Tensor]
    label_masks: dict[str, Tensor]
    user_id: Tensor
    user_known: Tensor
    seq_popularity: Tensor | None = None
    extra: pd.DataFrame | None = None  # other columns of the set, kept for baselines
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item_id.shape[0])

    def subset(self, rows: Tensor | slice) -> RankingData:
        """The same split restricted to `rows` (stats stay those of the whole split)."""
        changes = {
            name: value[rows] for name, value in vars(self).items() if isinstance(value, Tensor)
        }
        if self.extra is not None:
            index = np.arange(len(self))[rows.numpy() if isinstance(rows, Tensor) else rows]
            changes["extra"] = self.extra.iloc[index].reset_index(drop=True)
        changes["labels"] = {t: v[rows] for t, v in self.labels.items()}
        changes["label_masks"] = {t: v[rows] for t, v in self.label_masks.items()}
        return replace(self, **changes)

    def batch(
        self,
        rows: Tensor | slice,
        content: ItemContent | None = None,
        history_content: bool = True,
        vectors: ItemVectors | None = None,
    ) -> RankingBatch:
        """Model inputs for `rows`; with `content`, the candidates' embeddings are gathered
        from its table, and with `history_content` too the history's (MIN needs them; they
        are the costly part: (B, L, 1664) floats); with `vectors`, the candidates' and the
        history's recall vectors (use_recall_vector)."""
        user = UserInputs(
            seq_item_ids=self.seq_item_ids[rows],
            seq_mask=self.seq_mask[rows],
            position=self.position[rows],
            source=self.source[rows],
            category_affinity=self.category_affinity[rows],
            user_id=torch.where(self.user_known[rows], self.user_id[rows], -1),
            seq_category=self.seq_category[rows],
            seq_popularity=None if self.seq_popularity is None else self.seq_popularity[rows],
        )
        items = CandidateInputs(
            item_id=self.item_id[rows],
            material=self.material[rows],
            category=self.category[rows],
            age_hours=self.age_hours[rows],
            ctr_windows=self.ctr_windows[rows],
            popularity=self.popularity[rows],
            is_cold=self.is_cold[rows],
        )
        if content is not None:
            item_rows = self.item_rows[rows]
            if history_content:
                seq_rows = self.seq_rows[rows]
                user.seq_text_emb = content.text[seq_rows]  # (B, L, 384)
                if content.visual is not None:
                    user.seq_visual_emb = content.visual[seq_rows]  # (B, L, 1280)
            items.text_emb = content.text[item_rows]  # (B, 384)
            if content.visual is not None:
                items.visual_emb = content.visual[item_rows]  # (B, 1280)
        if vectors is not None:
            items.recall_vector = vectors.of(items.item_id)  # (B, recall_dim)
            mask = user.seq_mask.unsqueeze(-1).to(vectors.vectors.dtype)
            user.seq_recall_vector = vectors.of(user.seq_item_ids) * mask  # (B, L, recall_dim)
        labels = {t: v[rows] for t, v in self.labels.items()}
        masks = {t: v[rows] for t, v in self.label_masks.items()}
        return RankingBatch(user, items, labels, masks)


def _index(values: pd.Series, vocab: tuple[str, ...], name: str) -> Tensor:
    lookup = {v: i for i, v in enumerate(vocab)}
    codes = values.map(lookup)
    if codes.isna().any():
        bad = sorted(set(values[codes.isna()].astype(str)))[:5]
        raise ValueError(f"{name} has values outside {vocab}: {bad}")
    return torch.from_numpy(codes.to_numpy(np.int64))


def build_ranking_data(
    frame: pd.DataFrame,
    content: ItemContent | None,
    max_seq_len: int = 20,
    tasks: tuple[str, ...] = RANKING_TASKS,
    n_categories: int = len(CATEGORIES),
    categories: ItemCategories | None = None,
    history_popularity: HistoryPopularity | None = None,
    keep_columns: tuple[str, ...] = (),
) -> RankingData:
    """Tensors of one ranking split (a `read_split` frame); see the module docstring.

    `tasks`: the labels to read (serving passes () with the online features of its
    candidates: the same code turns offline and online feature values into model inputs).
    `n_categories`: the width of the data's category vectors (the model config's). The
    candidate's category is its `category_index` feature (-1 outside the data's list).
    `categories`: the history items' categories (None: all unknown). `history_popularity`:
    the history items' impressions at the rows' times (None: `seq_popularity` is None).
    `keep_columns`: columns of `frame` kept as they are in `RankingData.extra` (the GBDT
    baseline's).
    """
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    required = ["user_id", "item_id", "source", "position", "material", "category", "is_cold"]
    required += ["category_index"]
    required += [SEQUENCE_FEATURE, "cdr_category_affinity", "item_age_hours", *CTR_FEATURES]
    required += [*POPULARITY_FEATURES]
    required += [f"label_{t}" for t in tasks] + list(keep_columns)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"the ranking set lacks columns {missing}: rebuild it with build-sets")
    unpublished = frame.material.isna() | frame.category.isna()
    frame = frame.loc[~unpublished].reset_index(drop=True)
    if frame.empty:
        raise UserError("the ranking split has no row with item attributes: run the feature stages")

    seq = padded_sequences(frame[SEQUENCE_FEATURE], max_seq_len)
    seq_mask = seq >= 0
    seq = np.where(seq_mask, seq, 0)
    item_ids = frame.item_id.to_numpy(np.int64)
    if content is not None:
        seq_rows, item_rows = content.rows(seq), content.rows(item_ids)
    else:
        seq_rows, item_rows = np.zeros_like(seq), np.zeros_like(item_ids)
    ctr = frame[list(CTR_FEATURES)].astype("float64").fillna(PRIOR_CTR).to_numpy(np.float32)
    popularity = frame[list(POPULARITY_FEATURES)].astype("float64").fillna(0.0)
    seq_popularity = None
    if history_popularity is not None:
        seq_popularity = np.where(
            seq_mask, history_popularity.of(seq, frame.event_timestamp), 0.0
        ).astype(np.float32)
    labels, masks = {}, {}
    for task in tasks:
        raw = frame[f"label_{task}"].astype("float64")
        masks[task] = torch.from_numpy(raw.notna().to_numpy())
        labels[task] = torch.from_numpy(raw.fillna(0.0).to_numpy(np.float32))
    stats = {
        "rows": len(frame),
        "rows_dropped_item_unpublished": int(unpublished.sum()),
        "rows_without_history": int((~seq_mask.any(axis=1)).sum()),
        "rows_without_cdr": int(frame.cdr_category_affinity.isna().sum()),
        "rows_without_item_stats": int(frame[CTR_FEATURES[0]].isna().sum()),
    }
    if content is not None:
        stats["candidate_rows_without_content"] = int((item_rows == 0).sum())
        stats["history_items_without_content"] = int(((seq_rows == 0) & seq_mask).sum())
    return RankingData(
        seq_item_ids=torch.from_numpy(seq),
        seq_mask=torch.from_numpy(seq_mask),
        seq_rows=torch.from_numpy(seq_rows),
        seq_category=torch.from_numpy(
            np.where(seq_mask, categories.of(seq), -1)
            if categories is not None
            else np.full_like(seq, -1)
        ),
        position=_index(frame.position, POSITIONS, "position"),
        source=_index(frame.source, SOURCES, "source"),
        category_affinity=torch.from_numpy(
            stack_embeddings(frame.cdr_category_affinity, n_categories)
        ),
        item_id=torch.from_numpy(item_ids),
        material=_index(frame.material, MATERIALS, "material"),
        category=torch.from_numpy(
            frame.category_index.astype("float64").fillna(-1).to_numpy(np.int64)
        ),
        item_rows=torch.from_numpy(item_rows),
        age_hours=torch.from_numpy(frame.item_age_hours.fillna(0.0).to_numpy(np.float32)),
        ctr_windows=torch.from_numpy(ctr),
        popularity=torch.from_numpy(popularity.to_numpy(np.float32)),
        is_cold=torch.from_numpy(frame.is_cold.to_numpy(bool)),
        labels=labels,
        label_masks=masks,
        user_id=torch.from_numpy(frame.user_id.to_numpy(np.int64)),
        user_known=torch.ones(len(frame), dtype=torch.bool),
        seq_popularity=None if seq_popularity is None else torch.from_numpy(seq_popularity),
        extra=frame[list(keep_columns)] if keep_columns else None,
        stats=stats,
    )


def referenced_items(frames: list[pd.DataFrame], max_seq_len: int) -> np.ndarray:
    """Every item id the frames mention as candidate or in the first `max_seq_len` of the
    click sequence: the ids the content table must hold."""
    ids = [f.item_id.to_numpy(np.int64) for f in frames]
    for f in frames:
        seq = padded_sequences(f[SEQUENCE_FEATURE], max_seq_len)
        ids.append(seq[seq >= 0])
    return np.unique(np.concatenate(ids))
