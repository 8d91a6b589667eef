"""Ranking at serving time: the `ranking` service's online features -> the trained MMoE.

Everything the model computes from an item alone (its ID embedding, cold flag, material
embedding, the text/visual projections and DSN generators; models.ranking.ItemEncoding) and
its static inputs (category, windowed CTRs, impressions, the recall vector) are computed once
per item snapshot, for the whole catalog, by an `on_load` hook of the reader, as are the
projections of every content row (the users' histories in MIN). A ranker that reads recall
vectors (use_recall_vector) gets them from the recall model it was trained with, served
beside it, through the function the index build uses (models/recall_vectors.py): the vectors
the index holds. A request then only builds its one user row, gathers its candidates'
rows and runs the user x item part (target attention, MIN, the MMoE): `rank`.

`rank_reference` is the unoptimised path: the online rows through
`models.ranking_inputs.build_ranking_data` (the function that builds the training tensors) and
the model's full forward pass. Tests hold `rank` to it (same scores within 1e-4, same order)
and to the offline point-in-time rows (tests/test_serving_consistency.py): no train/serve skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from feature_pipelines.item_stats import PRIOR_CTR
from mmrec.arrays import find_sorted
from mmrec.settings import Settings
from mmrec.vocab import MATERIALS, POSITIONS, SOURCES
from models.item_content import (
    CONTENT_VERSION_FIELDS,
    ItemContent,
    check_content_versions,
    content_rows,
    item_content_from_frame,
)
from models.layers import inference
from models.ranking import RankingModel, score_candidates
from models.ranking_config import RankingConfig
from models.ranking_inputs import (
    CTR_FEATURES,
    HISTORY_POPULARITY_FEATURE,
    POPULARITY_FEATURES,
    SEQUENCE_FEATURE,
    HistoryPopularity,
    ItemCategories,
    RankingData,
    build_ranking_data,
    load_item_content,
    require_content,
)
from models.ranking_tensors import CandidateInputs, ItemEncoding, UserInputs
from models.recall_inputs import item_table_from_frame
from models.recall_vectors import RECALL_MODEL_KEY, ItemVectors
from models.store import LoadedModel, load_stored
from serving.online_features import CandidateFeatureReader, ItemSnapshot
from serving.ranker_split import item_first_layer, score_encoded, split_first_layers
from serving.snapshot_files import Persisted

# What build_ranking_data reads from the online rows (besides the context columns).
FEATURE_COLUMNS = (
    "user_id", "item_id", "material", "category", "category_index", SEQUENCE_FEATURE,
    "cdr_category_affinity",
    "item_age_hours", *CTR_FEATURES, *POPULARITY_FEATURES,
)  # fmt: skip
CONTENT_COLUMNS = ("text_emb", "visual_emb", *CONTENT_VERSION_FIELDS)
RANKER_ITEMS = "ranker_items"  # the reader's snapshot.derived key of the catalog's item side
ENCODE_CHUNK = 4096  # catalog rows per encode_items call at snapshot load
SOURCE = "rec"  # the request source of recommendations (the model also saw "search")


@dataclass(frozen=True)
class RankedCandidates:
    """Task probabilities {task: (N,)} of the candidates, in the order of `item_ids`, and the
    online feature rows (one user, many items) they were computed from."""

    item_ids: np.ndarray
    task_probs: dict[str, np.ndarray]
    features: dict[str, list]
    inputs: RankingData | None = None  # the model inputs (rank_reference only)


@dataclass(frozen=True)
class CatalogItems:
    """The ranker's item side of one snapshot, row i = the reader's item_ids[i] (plus the
    trailing row of unknown ids).

    encoding: models.ranking.ItemEncoding of every row; first_layer (C + 1, H): the item's
    share of the MMoE's first layers (serving/ranker_split.py, its windowed CTRs
    included: the pipeline's prior where null); rankable (C + 1,) bool: material and category known
    (the rows build_ranking_data keeps); content_ids: the ids of the content table whose
    projected rows `history` {modality: (R + 1, d)} holds (row 0: no content); categories:
    every row's category index (the history's categories are looked up here); popularity
    (C + 1,) float32: every row's impressions in 7 days (0 where null; the history's
    popularity is looked up here, use_popularity); vectors: the catalog's recall vectors
    (use_recall_vector, else None).
    """

    encoding: ItemEncoding
    first_layer: Tensor
    rankable: np.ndarray
    content_ids: np.ndarray
    history: dict[str, Tensor]
    categories: ItemCategories
    popularity: np.ndarray
    vectors: ItemVectors | None = None

    def content_rows(self, item_ids: np.ndarray) -> np.ndarray:
        return content_rows(self.content_ids, item_ids)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """As named arrays, for the snapshot's files (`from_arrays` reads them back)."""
        arrays = {
            f"encoding.{name}": tensor.numpy()
            for name, tensor in vars(self.encoding).items()
            if tensor is not None
        }
        arrays |= {f"history.{m}": projected.numpy() for m, projected in self.history.items()}
        return (
            arrays
            | {
                "first_layer": self.first_layer.numpy(),
                "rankable": self.rankable,
                "content_ids": self.content_ids,
                "categories.item_ids": self.categories.item_ids,
                "categories.category": self.categories.category,
                "popularity": self.popularity,
            }
            | (self.vectors.to_arrays() if self.vectors is not None else {})
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CatalogItems:
        """From `to_arrays`'s arrays (memory maps: the tensors share their pages)."""

        def part(prefix: str) -> dict[str, Tensor]:
            return {
                name.removeprefix(prefix): torch.from_numpy(array)
                for name, array in arrays.items()
                if name.startswith(prefix)
            }

        return cls(
            encoding=ItemEncoding(**part("encoding.")),
            first_layer=torch.from_numpy(arrays["first_layer"]),
            rankable=arrays["rankable"],
            content_ids=arrays["content_ids"],
            history=part("history."),
            categories=ItemCategories(arrays["categories.item_ids"], arrays["categories.category"]),
            popularity=arrays["popularity"],
            vectors=ItemVectors.from_arrays(arrays),
        )


def load_ranking_model(settings: Settings, ref: Any) -> LoadedModel:
    """The ranking model `ref` (a tag in the workspace's BentoML store, or a stored model)."""
    return load_stored(settings, ref, RankingModel, RankingConfig, "mmrec train rank")


def _codes(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """Index of each value in `vocab`, -1 for None or anything else."""
    lookup = {v: i for i, v in enumerate(vocab)}
    return np.fromiter((lookup.get(v, -1) for v in values), np.int64, len(values))


def _floats(values: np.ndarray, fill: float) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").fillna(fill).to_numpy(np.float64)


class OnlineRanker:
    """The ranking model from the BentoML store, scoring one user's candidates per call."""

    def __init__(
        self,
        loaded: LoadedModel,
        reader: CandidateFeatureReader,
        recall: LoadedModel | None = None,
    ) -> None:
        """`reader` reads the model's own feature service (`loaded.feature_service`);
        `recall`: the served recall model, whose item vectors a ranker with use_recall_vector
        reads (it must be the one the ranker was trained with)."""
        if reader.service.name != loaded.feature_service:
            raise ValueError(
                f"{loaded.tag} was trained with feature service {loaded.feature_service!r}, "
                f"the reader reads {reader.service.name!r}"
            )
        self.recall = None
        if loaded.model.config.use_recall_vector:
            wanted = loaded.metadata.get(RECALL_MODEL_KEY)
            if recall is None or recall.tag != wanted:
                raise ValueError(
                    f"{loaded.tag} reads the item vectors of {wanted}, the service has "
                    f"{recall.tag if recall is not None else 'no recall model'}: serve that "
                    "recall model (MMREC_RECALL_MODEL) or retrain the ranker"
                )
            self.recall = recall
        self.tag, self.metadata = loaded.tag, loaded.metadata
        self.model: RankingModel = loaded.model
        self.model.eval()
        self.split = split_first_layers(self.model)  # the serving model's weights never change
        self.config: RankingConfig = loaded.model.config
        # Items of the train split: the rest are cold, as rank_train flags them in evaluation
        known = loaded.known_item_ids
        self.known_item_ids = np.empty(0, np.int64) if known is None else known
        # Users of the train split: the rest are served with user_id -1 (a zero embedding)
        users = loaded.known_user_ids
        self.known_user_ids = np.empty(0, np.int64) if users is None else users
        self.max_seq_len = int(self.metadata.get("max_seq_len", 20))
        self.reader = reader
        # the embeddings are consumed here: the snapshot keeps their projections, not them
        content = CONTENT_COLUMNS if self.config.use_multimodal else ()
        persisted = Persisted(CatalogItems.to_arrays, CatalogItems.from_arrays)
        reader.on_load(RANKER_ITEMS, self._catalog_items, consumes=content, persisted=persisted)

    def _content(self, snapshot: ItemSnapshot) -> ItemContent | None:
        """The snapshot's embeddings as dense tables, built by the same function as in
        training and held to the content versions the model was trained on."""
        if not self.config.use_multimodal:
            return None
        frame = pd.DataFrame(
            {"item_id": self.reader.item_ids, **{c: snapshot.column(c) for c in CONTENT_COLUMNS}}
        )
        content = item_content_from_frame(frame, self.config.content_modalities)
        if not len(content.item_ids):
            raise ValueError(
                f"{self.tag} needs content embeddings but no item has them online: run "
                "`mmrec content encode` and `mmrec features materialize`"
            )
        check_content_versions(
            self.tag, self.metadata, content.versions, CONTENT_VERSION_FIELDS, "mmrec train rank"
        )
        return content

    def _catalog_items(self, snapshot: ItemSnapshot) -> CatalogItems:
        """The reader's on_load hook: the item side of every catalog row (module docstring);
        the same rules as build_ranking_data, in one pass over the catalog."""
        ids = np.append(self.reader.item_ids, -1)  # the trailing row: unknown ids
        material = _codes(snapshot.columns["material"], MATERIALS)
        category = _floats(snapshot.columns["category_index"], -1).astype(np.int64)
        rankable = (material >= 0) & pd.notna(snapshot.columns["category"])
        ctr = np.stack([_floats(snapshot.columns[c], PRIOR_CTR) for c in CTR_FEATURES], axis=1)
        popularity = np.stack([_floats(snapshot.columns[c], 0.0) for c in POPULARITY_FEATURES], 1)
        content = self._content(snapshot)
        vectors = self._vectors(snapshot)
        items = CandidateInputs(
            item_id=torch.from_numpy(ids),
            material=torch.from_numpy(np.maximum(material, 0)),
            category=torch.from_numpy(category),
            is_cold=torch.from_numpy(~np.isin(ids, self.known_item_ids)),
            popularity=torch.from_numpy(popularity.astype(np.float32)),
            recall_vector=vectors.of(torch.from_numpy(ids)) if vectors is not None else None,
        )
        rows = content.rows(ids) if content is not None else None
        ctr = torch.from_numpy(ctr.astype(np.float32))
        parts, first = [], []
        with inference(self.model):
            for start in range(0, len(ids), ENCODE_CHUNK):
                chunk = items.take(slice(start, start + ENCODE_CHUNK))
                if content is not None:
                    chunk_rows = torch.from_numpy(rows[start : start + ENCODE_CHUNK])
                    chunk.text_emb = content.text[chunk_rows]
                    if content.visual is not None:
                        chunk.visual_emb = content.visual[chunk_rows]
                encoded = self.model.encode_items(chunk)
                parts.append(encoded)
                first.append(
                    item_first_layer(
                        self.model, encoded, ctr[start : start + ENCODE_CHUNK], self.split
                    )
                )
            history = {}
            if content is not None:  # every content row once: MIN's histories gather them
                history = self.model.project_content(
                    {"text": content.text, "visual": content.visual}
                )
        encoding = ItemEncoding(
            **{
                name: torch.cat([getattr(p, name) for p in parts])
                for name in vars(parts[0])
                if getattr(parts[0], name) is not None
            }
        )
        return CatalogItems(
            encoding=encoding,
            first_layer=torch.cat(first),
            rankable=rankable,
            content_ids=content.item_ids if content is not None else np.empty(0, np.int64),
            history=history,
            categories=ItemCategories(self.reader.item_ids, category[:-1]),
            popularity=popularity[:, POPULARITY_FEATURES.index(HISTORY_POPULARITY_FEATURE)].astype(
                np.float32
            ),
            vectors=vectors,
        )

    def _vectors(self, snapshot: ItemSnapshot) -> ItemVectors | None:
        """The catalog's recall vectors (use_recall_vector): the recall model's item tower
        over the snapshot's item rows, made as `mmrec index build` makes the index's."""
        if self.recall is None:
            return None
        columns = {name: snapshot.column(name) for name in snapshot.columns}
        frame = pd.DataFrame({"item_id": self.reader.item_ids, **columns})
        return ItemVectors.from_table(
            self.recall, item_table_from_frame(frame, self.recall.categories)
        )

    def _user(
        self, features: dict[str, list], scene: str, catalog: CatalogItems
    ) -> tuple[UserInputs, np.ndarray]:
        """The one user row (as build_ranking_data builds it) and its history's item ids."""
        seq = np.zeros(self.max_seq_len, dtype=np.int64)
        clicked = (features[SEQUENCE_FEATURE] or [None])[0]
        head = np.asarray((clicked if clicked is not None else [])[: self.max_seq_len], np.int64)
        seq[: len(head)] = head
        mask = np.zeros(self.max_seq_len, dtype=bool)
        mask[: len(head)] = True
        affinity = (features["cdr_category_affinity"] or [None])[0]
        width = self.config.n_categories
        if affinity is not None and len(affinity) != width:
            raise ValueError(f"cdr_category_affinity has {len(affinity)} values, want {width}")
        user_id = np.asarray(features["user_id"][:1], np.int64)
        user = UserInputs(
            seq_item_ids=torch.from_numpy(seq)[None],
            seq_mask=torch.from_numpy(mask)[None],
            position=torch.tensor([POSITIONS.index(scene)]),
            source=torch.tensor([SOURCES.index(SOURCE)]),
            category_affinity=torch.tensor(
                [affinity if affinity is not None else [0.0] * width], dtype=torch.float32
            ),
            user_id=torch.from_numpy(np.where(self._knows_user(user_id), user_id, -1)),
            seq_category=torch.from_numpy(np.where(mask, catalog.categories.of(seq), -1))[None],
        )
        if self.config.use_popularity:  # the history items' stats, as the candidates'
            popularity = catalog.popularity[self.reader.positions(seq)]
            user.seq_popularity = torch.from_numpy(np.where(mask, popularity, 0.0))[None]
        if catalog.vectors is not None:
            history = catalog.vectors.of(torch.from_numpy(seq))  # (L, recall_dim)
            user.seq_recall_vector = (history * torch.from_numpy(mask)[:, None])[None]
        return user, seq

    def _knows_user(self, user_ids: np.ndarray) -> np.ndarray:
        return find_sorted(self.known_user_ids, user_ids)[1]

    def rank(self, features: dict[str, list], scene: str) -> RankedCandidates:
        """Score every row of `features` (one user, N items: CandidateFeatureReader.read)."""
        catalog: CatalogItems = self.reader.snapshot().derived[RANKER_ITEMS]
        ids = np.asarray(features["item_id"], dtype=np.int64)
        positions = self.reader.positions(ids)
        keep = catalog.rankable[positions]  # build_ranking_data drops unpublished rows
        ids, positions = ids[keep], positions[keep]
        if not len(ids):
            raise ValueError("no candidate has item attributes online")
        rows = torch.from_numpy(positions)
        user, seq = self._user(features, scene, catalog)
        histories = {
            m: projected[torch.from_numpy(catalog.content_rows(seq))][None]
            for m, projected in catalog.history.items()
        }
        age = _floats(np.asarray(features["item_age_hours"], dtype=object)[keep], 0.0)
        probs = score_encoded(
            self.model,
            user,
            catalog.encoding.take(rows),
            histories,
            torch.from_numpy(age.astype(np.float32)),
            catalog.first_layer[rows],  # the CTRs are in the precomputed first layer
            self.split,
        )
        return RankedCandidates(ids, {t: p.numpy() for t, p in probs.items()}, features)

    def rank_reference(
        self, features: dict[str, list], scene: str, content: ItemContent | None
    ) -> RankedCandidates:
        """`rank` without precomputation: the training path's tensors and the full forward
        pass. `content`: the item content table (`reference_content`)."""
        require_content(self.config, content)
        frame = pd.DataFrame({name: features[name] for name in FEATURE_COLUMNS})
        frame["position"], frame["source"] = scene, SOURCE
        frame["is_cold"] = ~np.isin(frame.item_id.to_numpy(np.int64), self.known_item_ids)
        catalog: CatalogItems = self.reader.snapshot().derived[RANKER_ITEMS]
        # one day of item stats: the snapshot's, for the history as for the candidates
        frame["event_timestamp"] = now = np.datetime64(0, "us")
        popularity = HistoryPopularity.on_day(self.reader.item_ids, catalog.popularity[:-1], now)
        data = build_ranking_data(
            frame, content, self.max_seq_len, tasks=(), n_categories=self.config.n_categories,
            categories=catalog.categories, history_popularity=popularity,
        )  # fmt: skip
        data.user_known = torch.from_numpy(self._knows_user(data.user_id.numpy()))
        # one user: every row carries the same user side, so take it (and its history's
        # content, for MIN) from the first row only
        vectors = catalog.vectors
        user = data.batch(slice(0, 1), content, self.config.use_min, vectors).user
        items = data.batch(slice(None), content, False, vectors).items
        probs = score_candidates(self.model, user, items)
        return RankedCandidates(
            data.item_id.numpy(), {t: p.numpy() for t, p in probs.items()}, features, data
        )

    def reference_content(self, store, at: datetime) -> ItemContent | None:
        """The catalog's content as of `at` through Feast's offline store (what training
        reads), for `rank_reference`; None for an ID-only model."""
        if not self.config.use_multimodal:
            return None
        return load_item_content(store, self.reader.item_ids, at, self.config.content_modalities)
