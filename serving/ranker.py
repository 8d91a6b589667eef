"""Ranking at serving time: the `ranking` service's online features -> the trained MMoE.

The online rows go through `training.rank_data.build_ranking_data`, the function that turns
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
import torch

from mmrec.settings import Settings
from serving.online_features import CandidateFeatureReader, ItemSnapshot
from training.export import load_stored
from training.models.ranking import RankingConfig, RankingModel, score_candidates
from training.rank_data import (
    CTR_FEATURES,
    SEQUENCE_FEATURE,
    ItemContent,
    RankingData,
    build_ranking_data,
    require_content,
)

# What build_ranking_data reads from the online rows (besides the context columns).
FEATURE_COLUMNS = (
    "user_id", "item_id", "material", "category", SEQUENCE_FEATURE, "cdr_category_affinity",
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


class OnlineRanker:
    """The ranking model from the BentoML store, scoring one user's candidates per call."""

    def __init__(self, settings: Settings, ref: Any, reader: CandidateFeatureReader) -> None:
        """`ref`: a tag in the workspace's BentoML store, or a stored model."""
        loaded = load_stored(settings, ref, RankingModel, RankingConfig, "mmrec train rank")
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
        """The snapshot's embeddings as two dense tables (an on_load hook of the reader:
        stacking 100k x 1664 floats takes seconds, so it runs with the snapshot's reload)."""
        text, visual = snapshot.column("text_emb"), snapshot.column("visual_emb")
        has = np.array([t is not None and v is not None for t, v in zip(text, visual, strict=True)])
        if not has.any():
            raise ValueError(
                f"{self.tag} needs content embeddings but no item has them online: run "
                "`mmrec content encode` and `mmrec features materialize`"
            )
        ids = self.reader.item_ids[has]
        dense_text = np.zeros((len(ids) + 1, self.config.text_dim), dtype=np.float32)
        dense_visual = np.zeros((len(ids) + 1, self.config.visual_dim), dtype=np.float32)
        dense_text[1:] = np.stack(text[has])
        dense_visual[1:] = np.stack(visual[has])
        versions = {"encoder_version": str(snapshot.column("encoder_version")[has][0])}
        return ItemContent(
            ids, torch.from_numpy(dense_text), torch.from_numpy(dense_visual), versions
        )

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
        data = build_ranking_data(frame, content, self.max_seq_len, with_labels=False)
        # one user: every row carries the same user side, so take it (and its history's
        # content, for MIN) from the first row only
        user = data.batch(slice(0, 1), content, history_content=self.config.use_min).user
        items = data.batch(slice(None), content, history_content=False).items
        probs = score_candidates(self.model, user, items)
        return RankedCandidates(
            data.item_id.numpy(), {t: p.numpy() for t, p in probs.items()}, data, frame
        )
