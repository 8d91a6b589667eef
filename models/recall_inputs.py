"""Recall training set (Feast-built, training_sets/build.py) -> two-tower model tensors.

Two inputs, both read through the `recall` feature service:

- the rows of `read_split(settings, "recall", split)`: channel, keys, label, time and the
  query-side features (click sequence, CDR affinity, seed SKU category);
- `ItemTable`: the item features of the whole catalog (attributes, embeddings, tags) from
  `get_historical_features` with the service's item views at the end of the world. Item
  features are static per item (attributes and content rows are stamped at the item's publish
  time, one encoder version at a time), so the join at the end returns, for every item, the
  row a join at any of its impressions returns; the set's per-row copies of these columns are
  therefore not read (a (rows, 1664) float copy would not fit at small scale). Evaluation
  needs the same table for the candidates, so training and evaluation share one.

Choices, stated once:
- Content present (the service has `item_embeddings` and `item_tags`): item fields id, text,
  visual, tags (category_probs) + quality (quality_score). Absent: an ID + attribute tower,
  fields id and tags, where tags is the item's category one-hot and quality 0.5 (unknown);
  `ItemTable.content` records which. Items the encoder skipped (empty title, unreadable cover)
  get zero text/visual vectors and the attribute tags, counted in `ItemTable.stats`.
- Cold IDs: items without a click in the train split have an ID embedding nothing trained.
  Their ID is replaced by `UNKNOWN_ITEM_ID` (everywhere: candidates, V2V seeds, U2V history),
  a row that ID dropout in training (training/recall_train.py) teaches to mean "unknown", so
  cold items are served by their content fields.
- S2V rows whose seed SKU has no category (SKU unknown to Feast) are dropped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import Tensor

from mmrec.arrays import find_sorted
from mmrec.errors import UserError
from mmrec.feast_store import service_refs_by_entity
from mmrec.vocab import CATEGORIES, FUSED_DIM, RECALL_SERVICE, TEXT_DIM, VISUAL_DIM
from models.feature_columns import padded_sequences, stack_embeddings
from models.item_content import (
    CONTENT_VERSION_FIELDS,
    NO_VERSION,
    content_versions,
)
from models.recall import ItemInputs, Query, SkuQuery, UserQuery

log = logging.getLogger(__name__)

FEATURE_SERVICE = RECALL_SERVICE
VERSION_FIELDS = (*CONTENT_VERSION_FIELDS, "tag_model_version")
SEQUENCE_FEATURE = "item_click_seq"  # newest first, as written by feature_pipelines
# The hashed ID table maps -1 to its last bucket; the table is sized with headroom
# (`id_buckets`) so no catalog item shares that bucket.
UNKNOWN_ITEM_ID = -1
UNKNOWN_QUALITY = 0.5
ROW_COLUMNS = (
    "channel", "user_id", "item_id", "seed_item_id", "sku_id", "event_timestamp", "label",
    SEQUENCE_FEATURE, "cdr_category_affinity", "sku_category",
)  # fmt: skip


def id_buckets(max_id: int, minimum: int = 1024) -> int:
    """Hash buckets for IDs up to `max_id`: a power of two >= 2 * max_id (room to grow)."""
    return max(minimum, 1 << int(2 * max(max_id, 1) - 1).bit_length())


def read_rows(settings, split: str) -> pd.DataFrame:
    """The recall split's keys, labels and query-side features (not the item columns)."""
    files = sorted(
        (settings.training_set_dir(FEATURE_SERVICE) / f"split={split}").glob("*.parquet")
    )
    if not files:
        raise UserError(
            f"no recall {split} split in {settings.training_set_dir(FEATURE_SERVICE)}: "
            "run `mmrec train build-sets`"
        )
    missing = [c for c in ROW_COLUMNS if c not in pq.read_schema(files[0]).names]
    if missing:
        raise UserError(f"the recall set lacks columns {missing}: rebuild it with build-sets")
    return pd.concat(
        [pd.read_parquet(f, columns=list(ROW_COLUMNS)) for f in files], ignore_index=True
    )


def _category_one_hot(category_index: pd.Series, n_categories: int) -> np.ndarray:
    """(N, n_categories) float32 from the `category_index` feature; null (a category outside
    the data's list) gives an all-zero row."""
    out = np.zeros((len(category_index), n_categories), dtype=np.float32)
    codes = category_index.astype("float64")
    rows = np.flatnonzero(codes.notna().to_numpy())
    out[rows, codes.iloc[rows].to_numpy(np.int64)] = 1.0
    return out


@dataclass
class ItemTable:
    """Item features by id: N items sorted by id.

    item_id (N,) int64; is_video (N,) bool; publish_ts (N,) int64 seconds; category_one_hot
    (N, C) over `categories` (the data's list); tags (N, C) category_probs (attribute one-hot
    where absent); quality (N,); text (N, 384), visual (N, 1280), fused (N, 128) or None
    without content (visual None too for a catalog without images); has_content (N,) bool;
    model_id (N,) int64: item_id, or UNKNOWN_ITEM_ID for items unknown to the ID table.
    """

    item_id: np.ndarray
    is_video: np.ndarray
    publish_ts: np.ndarray
    category_one_hot: np.ndarray
    tags: np.ndarray
    quality: np.ndarray
    text: np.ndarray | None
    visual: np.ndarray | None
    fused: np.ndarray | None
    has_content: np.ndarray
    versions: dict[str, str]
    categories: tuple[str, ...] = CATEGORIES
    model_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    stats: dict[str, int] = field(default_factory=dict)
    # item_id, material, category, tags (category_tags, or [category] without content),
    # publish_ts, quality: the scalar fields the content index stores next to each vector
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def content(self) -> bool:
        return self.text is not None

    def __len__(self) -> int:
        return len(self.item_id)

    def rows(self, item_ids: np.ndarray, missing: int | None = None) -> np.ndarray:
        """Table rows of `item_ids` (same shape); ids not in the table raise ValueError, or
        map to `missing` when given."""
        flat = np.asarray(item_ids, dtype=np.int64).ravel()
        pos, hit = find_sorted(self.item_id, flat)
        if missing is None and not hit.all():
            raise ValueError(f"items missing from the catalog: {sorted(set(flat[~hit]))[:5]}")
        return np.where(hit, pos, missing if missing is not None else 0).reshape(np.shape(item_ids))

    def set_known(self, known_ids: np.ndarray) -> None:
        """Items outside `known_ids` get UNKNOWN_ITEM_ID as their model-facing ID."""
        self.model_id = np.where(
            np.isin(self.item_id, known_ids), self.item_id, UNKNOWN_ITEM_ID
        ).astype(np.int64)
        self.stats["items_known"] = int((self.model_id != UNKNOWN_ITEM_ID).sum())

    def inputs(self, rows: np.ndarray | Tensor) -> ItemInputs:
        """ItemInputs of table rows (B,); modality fields only with content."""
        rows = np.asarray(rows, dtype=np.int64)
        model_id = self.model_id if len(self.model_id) else self.item_id
        items = ItemInputs(
            item_id=torch.from_numpy(model_id[rows]),
            tags=torch.from_numpy(self.tags[rows]),
            quality=torch.from_numpy(self.quality[rows]),
        )
        if self.content:
            items.text_emb = torch.from_numpy(self.text[rows])
        if self.visual is not None:
            items.visual_emb = torch.from_numpy(self.visual[rows])
        return items

    @property
    def modalities(self) -> tuple[str, ...]:
        """The content modalities the table holds."""
        return tuple(m for m, v in (("text", self.text), ("visual", self.visual)) if v is not None)


def item_feature_refs(store) -> list[str]:
    """`view:feature` refs of the recall service's item-keyed views."""
    service = store.get_feature_service(FEATURE_SERVICE)
    return service_refs_by_entity(store, service).get("item", [])


def catalog_ids(settings) -> np.ndarray:
    """Every item id of the world's catalog (keys only; features come through Feast)."""
    path = Path(settings.raw_dir) / "items.parquet"
    if not path.exists():
        raise UserError(f"no catalog at {path}: run `mmrec data import` or `mmrec generate` first")
    return np.unique(pd.read_parquet(path, columns=["item_id"]).item_id.to_numpy(np.int64))


def load_item_table(
    store, item_ids: np.ndarray, at: datetime, categories: tuple[str, ...] = CATEGORIES
) -> ItemTable:
    """The item features of `item_ids` through Feast at `at` (see the module docstring);
    `categories`: the data's category list (DataProfile)."""
    refs = item_feature_refs(store)
    entity = pd.DataFrame(
        {
            "item_id": np.unique(np.asarray(item_ids, dtype=np.int64)),
            "event_timestamp": pd.Timestamp(at).tz_convert("UTC").as_unit("us"),
        }
    )
    frame = store.get_historical_features(entity_df=entity, features=refs).to_df()
    return item_table_from_frame(frame, categories)


def item_table_from_frame(
    frame: pd.DataFrame, categories: tuple[str, ...] = CATEGORIES
) -> ItemTable:
    """An ItemTable from a frame of item_id + the recall service's item features."""
    unpublished = frame.material.isna()
    frame = frame.loc[~unpublished].sort_values("item_id").reset_index(drop=True)
    if frame.empty:
        raise UserError("no item has attributes in the feature store: run the feature stages")
    one_hot = _category_one_hot(frame.category_index, len(categories))
    content = {"text_emb", "visual_emb", "category_probs", "quality_score"} <= set(frame.columns)
    stats = {"items": len(frame), "items_unpublished": int(unpublished.sum())}
    text = visual = fused = None
    has_content = np.zeros(len(frame), dtype=bool)
    tags, quality = one_hot, np.full(len(frame), UNKNOWN_QUALITY, dtype=np.float32)
    versions = dict.fromkeys(VERSION_FIELDS, NO_VERSION)
    if content:
        has_content = (frame.text_emb.notna() & frame.category_probs.notna()).to_numpy()
        text = stack_embeddings(frame.text_emb, TEXT_DIM)
        # a catalog without images has no visual modality at all (not zero vectors)
        visual = (
            stack_embeddings(frame.visual_emb, VISUAL_DIM)
            if frame.visual_emb.notna().any()
            else None
        )
        fused = (
            stack_embeddings(frame.fused_emb, FUSED_DIM) if "fused_emb" in frame.columns else None
        )
        tags = stack_embeddings(frame.category_probs, len(categories), fill=one_hot)
        quality = frame.quality_score.fillna(UNKNOWN_QUALITY).to_numpy(np.float32)
        versions = content_versions(frame, VERSION_FIELDS)
        stats["items_without_content"] = int((~has_content).sum())
    tags_text = (
        frame.category_tags.where(frame.category_tags.notna(), frame.category.map(lambda c: [c]))
        if "category_tags" in frame.columns
        else frame.category.map(lambda c: [c])
    )
    attributes = pd.DataFrame(
        {
            "item_id": frame.item_id.to_numpy(np.int64),
            "material": frame.material.to_numpy(),
            "category": frame.category.to_numpy(),
            "tags": tags_text.map(list).to_numpy(),
            "publish_ts": frame.publish_ts_s.to_numpy(np.int64),
            "quality": quality,
        }
    )
    log.info("item table: %s, content %s", stats, versions)
    return ItemTable(
        item_id=frame.item_id.to_numpy(np.int64),
        is_video=(frame.material == "video").to_numpy(),
        publish_ts=frame.publish_ts_s.to_numpy(np.int64),
        category_one_hot=one_hot,
        tags=tags,
        quality=quality,
        text=text,
        visual=visual,
        fused=fused,
        has_content=has_content,
        versions=versions,
        categories=tuple(categories),
        stats=stats,
        attributes=attributes,
    )


@dataclass
class ChannelData:
    """Row-aligned tensors of one channel of one split (N rows).

    query: the channel's query inputs; item_rows (N,) ItemTable rows of the candidate;
    item_id (N,) raw ids; labels (N,) float; event_ts (N,) int64 seconds; seed_rows (N,)
    ItemTable rows of the V2V seed (-1 elsewhere); seq_rows (N, L) table rows of the history
    (-1 = padding or not in the table).
    """

    channel: str
    query: Query
    item_rows: Tensor
    item_id: Tensor
    labels: Tensor
    event_ts: Tensor
    seed_rows: Tensor
    seq_rows: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: Tensor) -> ChannelData:
        """The same channel restricted to `rows`."""
        return ChannelData(
            self.channel,
            self.query.take(rows),
            *(t[rows] for t in (self.item_rows, self.item_id, self.labels, self.event_ts)),
            self.seed_rows[rows],
            self.seq_rows[rows],
        )


def channel_data(
    rows: pd.DataFrame, channel: str, table: ItemTable, max_seq_len: int = 20
) -> tuple[ChannelData, dict[str, int]]:
    """Tensors of one channel's rows (a `read_rows` frame); returns them and drop counts."""
    frame = rows[rows.channel == channel]
    in_table = table.rows(frame.item_id.to_numpy(np.int64), missing=-1) >= 0
    stats = {f"{channel}_rows_item_unpublished": int((~in_table).sum())}
    frame = frame[in_table]
    if channel == "s2v":
        known_sku = frame.sku_category.isin(list(table.categories))
        stats["s2v_rows_sku_without_category"] = int((~known_sku).sum())
        frame = frame[known_sku]
    if channel == "v2v":
        seed_rows = table.rows(frame.seed_item_id.to_numpy(np.int64), missing=-1)
        stats["v2v_rows_seed_unpublished"] = int((seed_rows < 0).sum())
        frame = frame[seed_rows >= 0]
    frame = frame.reset_index(drop=True)
    seq = padded_sequences(frame[SEQUENCE_FEATURE], max_seq_len)
    seq_rows = np.where(seq >= 0, table.rows(seq, missing=-1), -1)
    seed_rows = np.full(len(frame), -1, dtype=np.int64)
    query: Query
    if channel == "u2v":
        query = UserQuery(
            seq_item_ids=torch.from_numpy(seq),  # raw ids; `model_query` maps unknown ones
            seq_mask=torch.from_numpy(seq >= 0),
            category_affinity=torch.from_numpy(
                stack_embeddings(frame.cdr_category_affinity, len(table.categories))
            ),
        )
    elif channel == "s2v":
        query = SkuQuery(
            sku_id=torch.from_numpy(frame.sku_id.to_numpy(np.int64)),
            sku_category=torch.from_numpy(
                frame.sku_category.map(table.categories.index).to_numpy(np.int64)
            ),
        )
    else:
        seed_rows = table.rows(frame.seed_item_id.to_numpy(np.int64))
        query = table.inputs(seed_rows)
    data = ChannelData(
        channel=channel,
        query=query,
        item_rows=torch.from_numpy(table.rows(frame.item_id.to_numpy(np.int64))),
        item_id=torch.from_numpy(frame.item_id.to_numpy(np.int64)),
        labels=torch.from_numpy(frame.label.to_numpy(np.float32)),
        event_ts=torch.from_numpy(frame.event_timestamp.astype("int64").to_numpy() // 10**6),
        seed_rows=torch.from_numpy(seed_rows),
        seq_rows=torch.from_numpy(seq_rows),
    )
    return data, stats


def model_query(data: ChannelData, rows: Tensor, table: ItemTable) -> Query:
    """The query inputs of `rows` with item IDs as the model sees them (unknown -> UNKNOWN)."""
    if data.channel == "v2v":
        return table.inputs(data.seed_rows[rows].numpy())
    query = data.query.take(rows)
    if data.channel == "u2v":
        known = table.model_id if len(table.model_id) else table.item_id
        seq_rows = data.seq_rows[rows].numpy()
        ids = np.where(seq_rows >= 0, known[np.maximum(seq_rows, 0)], UNKNOWN_ITEM_ID)
        query.seq_item_ids = torch.from_numpy(ids)
        query.seq_mask = torch.from_numpy(seq_rows >= 0)
    return query
