"""Recall at serving time: seeds from the user's online features -> channels -> merged list.

Channels (index/channels.py): U2V (the user tower over the click sequence and CDR affinity),
V2V (stored vectors of the newest clicked items through the V2V adapter), S2V (the context SKU
and the newest clicked SKUs through the SKU tower), term recall on the user's interest tags,
and the fresh / popular fallbacks. The vector channels need Milvus; when it fails the request
goes on with the in-process channels and says so (`RecallResult.failed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from pymilvus.exceptions import MilvusException

from index.build import ModelMismatchError
from index.channels import (
    Candidate,
    RankedItems,
    RecallFilter,
    fallback_recall,
    multi_channel_recall,
    seed_item_vectors,
)
from index.collections import ContentIndex
from index.errors import IndexConnectionError
from index.merge import MergedCandidate, merge_channels
from index.term_recall import TAG_COLUMNS, TagIndex
from mmrec.arrays import find_sorted
from mmrec.vocab import FRESH, POPULAR, S2V, TERM, U2V, V2V
from models.layers import inference
from models.recall import SkuQuery, UserQuery, encode_queries
from models.recall_inputs import UNKNOWN_ITEM_ID
from models.store import LoadedModel

log = logging.getLogger(__name__)

VECTOR_INDEX = "vector_index"  # the degraded part named in responses


@dataclass
class Seeds:
    """What recall starts from, read from the user's online features."""

    clicked_items: list[int] = field(default_factory=list)  # newest first
    sku_ids: list[int] = field(default_factory=list)  # context SKU first, then newest clicked
    sku_categories: list[str | None] = field(default_factory=list)
    category_affinity: list[float] | None = None  # CDR, order of the data's categories
    interest_tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecallResult:
    candidates: list[MergedCandidate]
    failed: tuple[str, ...]  # degraded parts


class RecallStage:
    """Owns the content index reader, the in-process tag index and the fallback tables."""

    def __init__(
        self,
        recall: LoadedModel,
        index: ContentIndex,
        quotas: dict[str, int],
        seed_items: int = 5,
    ) -> None:
        """`seed_items`: the newest clicked items that seed V2V."""
        self.recall = recall
        self.index = index
        self.quotas = quotas
        self.seed_items = seed_items
        # the data's category list the model was trained with: the order of CDR affinities
        self.categories = recall.categories
        self._category_index = {c: i for i, c in enumerate(self.categories)}
        active = index.collection.removeprefix(f"{index.alias}_v")
        if active != recall.version:
            raise ModelMismatchError(
                f"the content index holds vectors of recall:{active} but the service loads "
                f"{recall.tag}: run `mmrec index build --model {recall.tag}` or serve "
                f"MMREC_RECALL_MODEL=recall:{active}"
            )
        self.catalog = index.scan(
            [*(c for c in TAG_COLUMNS if c != "item_id"), "category", "vector"]
        )
        self.catalog = self.catalog.sort_values("item_id").reset_index(drop=True)
        # V2V's query of every item (its stored vector through the V2V adapter), computed
        # once: a request reads its seeds' rows instead of asking Milvus for their vectors
        self._item_ids = self.catalog.item_id.to_numpy(np.int64)
        self._v2v_queries = self._v2v_adapted(np.stack(self.catalog.pop("vector").to_numpy()))
        self.tags = TagIndex(self.catalog)
        self.fresh = RankedItems.from_frame(
            self.catalog.sort_values(["publish_ts", "item_id"], ascending=[False, True])
        )
        self.popular = self.fresh  # until `use_popularity` is given scores
        self._material = dict(zip(self.catalog.item_id, self.catalog.material, strict=True))
        self._category = dict(zip(self.catalog.item_id, self.catalog.category, strict=True))

    def use_popularity(self, scores: np.ndarray) -> None:
        """Rank the popular fallback by `scores`, aligned with `self.catalog` (NaN = 0)."""
        scores = np.nan_to_num(np.asarray(scores, dtype=np.float64))
        self.popular = RankedItems.from_frame(
            self.catalog.assign(score=scores).sort_values(
                ["score", "item_id"], ascending=[False, True]
            )
        )

    def material_of(self, item_ids: np.ndarray) -> list[str]:
        return [self._material[int(i)] for i in item_ids]

    def interest_tags(self, affinity: list[float] | None, clicked: list[int], n: int) -> list[str]:
        """Top-n CDR categories, then the categories of the newest clicked items."""
        tags = []
        if affinity is not None:
            tags = [self.categories[i] for i in np.argsort(-np.asarray(affinity))[:n]]
        tags += [self._category[i] for i in clicked if i in self._category]
        return list(dict.fromkeys(tags))

    def _user_vectors(self, seeds: Seeds, max_seq_len: int) -> np.ndarray:
        seq = np.asarray(seeds.clicked_items[:max_seq_len], dtype=np.int64)
        ids = np.where(self.recall.knows(seq), seq, UNKNOWN_ITEM_ID)
        affinity = seeds.category_affinity or [0.0] * len(self.categories)
        query = UserQuery(
            seq_item_ids=torch.from_numpy(ids)[None, :],
            seq_mask=torch.ones((1, len(ids)), dtype=torch.bool),
            category_affinity=torch.tensor([affinity], dtype=torch.float32),
        )
        return encode_queries(self.recall.model, U2V, query).numpy()

    def _sku_vectors(self, seeds: Seeds) -> np.ndarray:
        pairs = [
            (sku, self._category_index[cat])
            for sku, cat in zip(seeds.sku_ids, seeds.sku_categories, strict=True)
            if cat in self._category_index
        ]
        if not pairs:
            return np.empty((0, self.index.dim), dtype=np.float32)
        query = SkuQuery(
            sku_id=torch.tensor([p[0] for p in pairs], dtype=torch.int64),
            sku_category=torch.tensor([p[1] for p in pairs], dtype=torch.int64),
        )
        return encode_queries(self.recall.model, S2V, query).numpy()

    def _v2v_adapted(self, stored: np.ndarray) -> np.ndarray:
        """Stored item vectors (Q, d) as V2V queries."""
        adapter = self.recall.model.v2v_adapter
        stored = np.asarray(stored, dtype=np.float32).reshape(-1, self.index.dim)
        if adapter is None or len(stored) == 0:
            return stored
        with inference(adapter):
            return adapter(torch.from_numpy(stored)).numpy()

    def _v2v_vectors(self, seeds: Seeds) -> np.ndarray:
        """V2V queries of the newest `seed_items` clicked items that are in the index."""
        ids = np.asarray(seeds.clicked_items[: self.seed_items], dtype=np.int64)
        rows, found = find_sorted(self._item_ids, ids)
        if len(self._item_ids) and found.all():
            return self._v2v_queries[rows]
        # a seed upserted since the service started: ask Milvus for the stored vectors
        return self._v2v_adapted(seed_item_vectors(self.index, ids.tolist()))

    def vector_queries(self, seeds: Seeds, max_seq_len: int) -> dict[str, tuple[np.ndarray, int]]:
        """{channel: (query vectors, quota)} of the vector channels the seeds can ask."""
        queries: dict[str, tuple[np.ndarray, int]] = {}
        q = self.quotas
        if seeds.clicked_items or seeds.category_affinity:
            queries[U2V] = (self._user_vectors(seeds, max_seq_len), q[U2V])
        if seeds.clicked_items:
            queries[V2V] = (self._v2v_vectors(seeds), q[V2V])
        if seeds.sku_ids:
            queries[S2V] = (self._sku_vectors(seeds), q[S2V])
        return queries

    def vector_channels(
        self, seeds: Seeds, filters: RecallFilter, max_seq_len: int
    ) -> dict[str, list[Candidate]]:
        """U2V, V2V and S2V (raises MilvusException / IndexConnectionError when Milvus fails)."""
        queries = self.vector_queries(seeds, max_seq_len)
        # one Milvus search for the three channels (one round trip, not three)
        return multi_channel_recall(self.index, queries, filters=filters) if queries else {}

    def recall_candidates(
        self, seeds: Seeds, filters: RecallFilter, total: int, max_seq_len: int = 20
    ) -> RecallResult:
        """Every channel, merged to at most `total` items by the channel quotas."""
        failed: tuple[str, ...] = ()
        try:
            results = self.vector_channels(seeds, filters, max_seq_len)
        except (MilvusException, IndexConnectionError) as err:
            log.warning("vector recall failed, serving fallback channels: %s", err)
            results, failed = {}, (VECTOR_INDEX,)
        # the fallbacks fill what the personal channels leave: ask for the whole total
        results[TERM] = self.tags.recall(seeds.interest_tags, limit=total, filters=filters)
        results[FRESH] = fallback_recall(self.fresh, channel=FRESH, limit=total, filters=filters)
        results[POPULAR] = fallback_recall(
            self.popular, channel=POPULAR, limit=total, filters=filters
        )
        return RecallResult(merge_channels(results, self.quotas, total=total), failed)
