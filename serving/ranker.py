"""Ranking at serving time: the `ranking` service's online features -> the trained MMoE.

The online rows go through `models.ranking_inputs.build_ranking_data`, the function that turns
the offline training rows into tensors, so the two cannot drift apart (no train/serve skew by
construction; tests/test_serving_consistency.py compares the values with the offline
point-in-time features). Content embeddings come from the reader's item snapshot as one dense
table, rebuilt when the snapshot is reloaded (stacking 500 x 1664 floats per request would
cost more than the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mmrec.settings import Settings
from models.item_content import (
    CONTENT_VERSION_FIELDS,
    ItemContent,
    check_content_versions,
    item_content_from_frame,
)
from models.ranking import RankingConfig, RankingModel, score_candidates
from models.ranking_inputs import (
    CTR_FEATURES,
    SEQUENCE_FEATURE,
    RankingData,
    build_ranking_data,
    require_content,
)
from models.store import LoadedModel, load_stored
from serving.online_features import CandidateFeatureReader, ItemSnapshot

# What build_ranking_data reads from the online rows (besides the context columns).
FEATURE_COLUMNS = (
    "user_id", "item_id", "material", "category", "category_index", SEQUENCE_FEATURE,
    "cdr_category_affinity",
    "item_age_hours", *CTR_FEATURES,
)  # fmt: skip
RANKER_CONTENT = "ranker_content"  # the reader's snapshot.derived key of the dense content


@dataclass(frozen=True)
class RankedCandidates:
    """Task probabilities {task: (N,)} of the candidates and the model inputs they came from."""

    item_ids: np.ndarray
    task_probs: dict[str, np.ndarray]
    inputs: RankingData
    features: pd.DataFrame  # the online feature rows the inputs were built from


def load_ranking_model(settings: Settings, ref: Any) -> LoadedModel:
    """The ranking model `ref` (a tag in the workspace's BentoML store, or a stored model)."""
    return load_stored(settings, ref, RankingModel, RankingConfig, "mmrec train rank")


class OnlineRanker:
    """The ranking model from the BentoML store, scoring one user's candidates per call."""

    def __init__(self, loaded: LoadedModel, reader: CandidateFeatureReader) -> None:
        """`reader` reads the model's own feature service (`loaded.feature_service`)."""
        if reader.service.name != loaded.feature_service:
            raise ValueError(
                f"{loaded.tag} was trained with feature service {loaded.feature_service!r}, "
                f"the reader reads {reader.service.name!r}"
            )
        self.tag, self.metadata = loaded.tag, loaded.metadata
        self.model: RankingModel = loaded.model
        self.config: RankingConfig = loaded.model.config
        # Items of the train split: the rest are cold, as rank_train flags them in evaluation
        known = loaded.known_item_ids
        self.known_item_ids = np.empty(0, np.int64) if known is None else known
        self.max_seq_len = int(self.metadata.get("max_seq_len", 20))
        self.reader = reader
        if self.config.use_multimodal:
            reader.on_load(RANKER_CONTENT, self._dense_content)

    def content(self) -> ItemContent | None:
        """Text and visual embeddings of the snapshot's items (None for an ID-only model)."""
        if not self.config.use_multimodal:
            return None
        return self.reader.snapshot().derived[RANKER_CONTENT]

    def _dense_content(self, snapshot: ItemSnapshot) -> ItemContent:
        """The snapshot's embeddings as two dense tables, built by the same function as in
        training and held to the content versions the model was trained on (an on_load hook
        of the reader: stacking 100k x 1664 floats takes seconds, so it runs with the
        snapshot's reload)."""
        columns = ("text_emb", "visual_emb", *CONTENT_VERSION_FIELDS)
        frame = pd.DataFrame(
            {"item_id": self.reader.item_ids, **{name: snapshot.column(name) for name in columns}}
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

    def features_frame(
        self, features: dict[str, list], scene: str, source: str = "rec"
    ) -> pd.DataFrame:
        """The online rows as the columns build_ranking_data reads, plus the context."""
        frame = pd.DataFrame({name: features[name] for name in FEATURE_COLUMNS})
        frame["position"] = scene
        frame["source"] = source
        frame["is_cold"] = ~np.isin(frame.item_id.to_numpy(np.int64), self.known_item_ids)
        return frame

    def rank(self, features: dict[str, list], scene: str) -> RankedCandidates:
        """Score every row of `features` (one user, N items: CandidateFeatureReader.read)."""
        content = self.content()
        require_content(self.config, content)
        frame = self.features_frame(features, scene)
        data = build_ranking_data(
            frame, content, self.max_seq_len, tasks=(), n_categories=self.config.n_categories
        )
        # one user: every row carries the same user side, so take it (and its history's
        # content, for MIN) from the first row only
        user = data.batch(slice(0, 1), content, history_content=self.config.use_min).user
        items = data.batch(slice(None), content, history_content=False).items
        probs = score_candidates(self.model, user, items)
        return RankedCandidates(
            data.item_id.numpy(), {t: p.numpy() for t, p in probs.items()}, data, frame
        )
