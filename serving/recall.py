"""Recall at serving time: seeds from the user's online features -> channels -> merged list.

Channels (index/channels.py): U2V (the user tower over the click sequence and CDR affinity),
V2V (stored vectors of the newest clicked items through the V2V adapter), S2V (the context SKU
and the newest clicked SKUs through the SKU tower), term recall on the user's interest tags,
and the fresh / popular fallbacks. The vector channels need Milvus; when it fails the request
goes on with the in-process channels and says so (`RecallResult.failed`).

V2V and S2V read their seeds' neighbour lists, computed at `mmrec index build` for the index
build being searched (index/neighbours.py), with the request's filters applied; a seed without
a list, or whose filtered list runs short, is searched live with U2V, in the one search a
request makes. The answers are the live search's (tests/test_serving_neighbours.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pymilvus.exceptions import MilvusException

from index.build import ModelMismatchError, sku_queries, v2v_queries
from index.channels import (
    Candidate,
    QueryRow,
    RankedItems,
    RecallFilter,
    fallback_recall,
    multi_channel_recall,
    seed_item_vectors,
)
from index.collections import ContentIndex
from index.errors import IndexConnectionError
from index.merge import MergedCandidate, merge_channels
from index.neighbours import NeighbourLists, material_codes
from index.term_recall import TAG_COLUMNS, TagIndex
from mmrec.arrays import find_sorted
from mmrec.vocab import FRESH, POPULAR, S2V, TERM, U2V, V2V
from models.recall import UserQuery, encode_queries
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
        lists_root: Path | None = None,
    ) -> None:
        """`seed_items`: the newest clicked items that seed V2V; `lists_root`: where the
        index builds' neighbour lists are (index.build.neighbours_root; None: search live)."""
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
        self.lists = None if lists_root is None else NeighbourLists.load(lists_root, self.build_id)
        if lists_root is not None and self.lists is None:
            log.warning(
                "%s has no neighbour lists: V2V and S2V search live (`mmrec index build` adds "
                "them)", index.collection,
            )  # fmt: skip
        self.use_lists = True  # False: every V2V / S2V row searches live (the reference path)
        if self.lists is not None and self.lists.catalog is not None:
            # the build's own copy of the collection's scalars and V2V queries: read, not
            # scanned back from Milvus (11.8-16.9 s at 104k items)
            self.catalog = self.lists.catalog
            self._v2v_queries = self.lists.tables[V2V].queries
        else:
            catalog = index.scan(
                [*(c for c in TAG_COLUMNS if c != "item_id"), "category", "vector"]
            )
            self.catalog = catalog.sort_values("item_id").reset_index(drop=True)
            # V2V's query of every item (its stored vector through the V2V adapter), computed
            # once: a request reads its seeds' rows instead of asking Milvus for their vectors
            vectors = np.stack(self.catalog.pop("vector").to_numpy())
            self._v2v_queries = v2v_queries(recall, vectors)
        self._item_ids = self.catalog.item_id.to_numpy(np.int64)
        self.tags = TagIndex(self.catalog)
        self.fresh = RankedItems.from_frame(
            self.catalog.sort_values(["publish_ts", "item_id"], ascending=[False, True])
        )
        self.popular = self.fresh  # until `use_popularity` is given scores
        self._material = dict(zip(self.catalog.item_id, self.catalog.material, strict=True))
        self._category = dict(zip(self.catalog.item_id, self.catalog.category, strict=True))

    @property
    def build_id(self) -> str:
        return self.index.record().build_id

    def _listed(self) -> NeighbourLists | None:
        """The neighbour lists when they belong to the build searched now."""
        lists = self.lists
        return lists if lists is not None and lists.build_id == self.build_id else None

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

    def _sku_pairs(self, seeds: Seeds) -> tuple[np.ndarray, np.ndarray]:
        """(SKU ids, category indexes) of the S2V seeds whose category the model knows."""
        pairs = [
            (sku, self._category_index[cat])
            for sku, cat in zip(seeds.sku_ids, seeds.sku_categories, strict=True)
            if cat in self._category_index
        ]
        return np.asarray([p[0] for p in pairs], np.int64), np.asarray(
            [p[1] for p in pairs], np.int64
        )

    def _sku_vectors(self, seeds: Seeds) -> np.ndarray:
        """S2V queries of the seed SKUs: the ones the index build searched for their lists,
        else (a SKU or category the build did not see) the SKU tower's now."""
        skus, categories = self._sku_pairs(seeds)
        if not len(skus):
            return np.empty((0, self.index.dim), dtype=np.float32)
        lists = self._listed()
        if lists is not None and S2V in lists.tables:
            rows = lists.tables[S2V].rows(skus, categories)
            if (rows >= 0).all():
                return lists.tables[S2V].queries[rows]
        return sku_queries(self.recall, skus, categories)

    def _v2v_vectors(self, seeds: Seeds) -> np.ndarray:
        """V2V queries of the newest `seed_items` clicked items that are in the index."""
        ids = np.asarray(seeds.clicked_items[: self.seed_items], dtype=np.int64)
        rows, found = find_sorted(self._item_ids, ids)
        if len(self._item_ids) and found.all():
            return self._v2v_queries[rows]
        # a seed upserted since the service started: ask Milvus for the stored vectors
        return v2v_queries(self.recall, seed_item_vectors(self.index, ids.tolist()))

    def vector_queries(
        self, seeds: Seeds, max_seq_len: int, filters: RecallFilter | None = None
    ) -> dict[str, tuple[list[QueryRow], int]]:
        """{channel: (query rows, quota)} of the vector channels the seeds can ask: V2V and
        S2V rows read their neighbour lists under `filters` where they can (the live search's
        answer), the rest are vectors for the live search."""
        queries: dict[str, tuple[list[QueryRow], int]] = {}
        q = self.quotas
        if seeds.clicked_items or seeds.category_affinity:
            queries[U2V] = (list(self._user_vectors(seeds, max_seq_len)), q[U2V])
        lists = self._listed() if filters is not None else None
        if seeds.clicked_items:
            keys = np.asarray(seeds.clicked_items[: self.seed_items], np.int64)
            listed = self._from_lists(lists, V2V, keys, None, q[V2V], filters)
            queries[V2V] = (self._with_vectors(listed, lambda: self._v2v_vectors(seeds)), q[V2V])
        if seeds.sku_ids:
            skus, categories = self._sku_pairs(seeds)
            listed = self._from_lists(lists, S2V, skus, categories, q[S2V], filters)
            queries[S2V] = (self._with_vectors(listed, lambda: self._sku_vectors(seeds)), q[S2V])
        return queries

    def _from_lists(
        self,
        lists: NeighbourLists | None,
        channel: str,
        keys: np.ndarray,
        tags: np.ndarray | None,
        limit: int,
        filters: RecallFilter | None,
    ) -> list[list[tuple[int, float]] | None]:
        """Each key's hits from its list under `filters`, None where it must search live."""
        if lists is None or channel not in lists.tables or filters is None or not self.use_lists:
            return [None] * len(keys)
        table = lists.tables[channel]
        excluded = np.fromiter(filters.exclude_ids, np.int64, len(filters.exclude_ids))
        codes = None if filters.materials is None else material_codes(filters.materials)
        return [
            None if row < 0 else table.hits(int(row), limit, excluded, codes)
            for row in table.rows(keys, tags)
        ]

    @staticmethod
    def _with_vectors(listed: list, vectors) -> list[QueryRow]:
        """`listed` with its None rows replaced by their query vectors (`vectors()`, computed
        only when a row needs one, for all rows as the live path does)."""
        if all(hits is not None for hits in listed):
            return listed
        live = vectors()
        if len(live) != len(listed):  # a seed not in the index: every row searches live
            return list(live)
        return [vec if hits is None else hits for hits, vec in zip(listed, live, strict=True)]

    def vector_channels(
        self, seeds: Seeds, filters: RecallFilter, max_seq_len: int
    ) -> dict[str, list[Candidate]]:
        """U2V, V2V and S2V (raises MilvusException / IndexConnectionError when Milvus fails)."""
        queries = self.vector_queries(seeds, max_seq_len, filters)
        # one Milvus search for the rows of the three channels (one round trip, not three)
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
