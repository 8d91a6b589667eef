"""No train/serve skew: the features (and model inputs) the ranker used for an online request
equal the offline point-in-time features of that user and those items at the request time,
which is how the training sets were built (training_sets/build.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import torch

from models.ranking_inputs import build_ranking_data
from serving.ranker import FEATURE_COLUMNS
from serving.schemas import RecommendRequest
from tests.test_serving_pipeline import active_user


@pytest.fixture(scope="module")
def online_and_offline(pipeline):
    user_id, _ = active_user(pipeline)
    rec = pipeline.recommend(RecommendRequest(user_id=user_id, scene="inner", k=10))
    online = rec.ranked.features
    entity = pd.DataFrame(
        {
            "user_id": user_id,
            "item_id": online.item_id.to_numpy(np.int64),
            "event_timestamp": datetime.fromtimestamp(rec.request_ts, UTC),
            "request_ts": rec.request_ts,
        }
    )
    service = pipeline.store.get_feature_service("ranking_v1")
    offline = pipeline.store.get_historical_features(entity_df=entity, features=service).to_df()
    offline = offline.set_index("item_id").loc[online.item_id].reset_index()
    return rec, online, offline


def _same(a, b) -> bool:
    if a is None or (np.isscalar(a) and pd.isna(a)):
        return b is None or (np.isscalar(b) and pd.isna(b))
    if isinstance(a, str):
        return a == b
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=1e-5)


def test_every_ranking_feature_online_equals_the_point_in_time_value(online_and_offline) -> None:
    rec, online, offline = online_and_offline
    assert len(online) == rec.response.candidates > 0
    assert len(offline) == len(online)  # every entity row came back
    for column in FEATURE_COLUMNS:
        mismatches = [
            (int(item), a, b)
            for item, a, b in zip(online.item_id, online[column], offline[column], strict=True)
            if not _same(a, b)
        ]
        assert not mismatches, f"{column}: online != offline for {mismatches[:3]}"


def test_the_model_inputs_equal_those_built_from_the_offline_rows(
    pipeline, online_and_offline
) -> None:
    rec, online, offline = online_and_offline
    context = online[["position", "source", "is_cold"]]
    offline_frame = pd.concat([offline[list(FEATURE_COLUMNS)], context], axis=1)
    content = pipeline.ranker.content()
    expected = build_ranking_data(
        offline_frame,
        content,
        pipeline.ranker.max_seq_len,
        tasks=(),
        n_categories=pipeline.ranker.config.n_categories,
    )
    for name, value in vars(rec.ranked.inputs).items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, getattr(expected, name), msg=name)
