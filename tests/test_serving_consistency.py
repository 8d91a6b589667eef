"""No train/serve skew, and the optimised serving path changes nothing a user gets.

- The features the ranker used for an online request equal the offline point-in-time
  features of that user and those items at the request time (how the training sets were
  built: training_sets/build.py).
- The ranker's precomputed path (`OnlineRanker.rank`: item side per snapshot, user x item part
  per request) scores like the training path (`build_ranking_data` + the full forward pass)
  over the OFFLINE rows and content: same order, probabilities within 1e-4.
- Whole answers: the pipeline with the precomputed ranker answers as with the reference ranker
  (same items in the same order, same channels, scores within 1e-4) across users, scenes,
  filters and a context SKU.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import torch

from index.collections import ContentIndex
from models.ranking_inputs import build_ranking_data
from models.store import stored_model
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.ranker import FEATURE_COLUMNS, RANKER_ITEMS, OnlineRanker, load_ranking_model
from serving.schemas import RecommendRequest
from tests.conftest import run_cli
from tests.test_serving_pipeline import active_user

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def online_and_offline(pipeline):
    user_id, _ = active_user(pipeline)
    rec = pipeline.recommend(RecommendRequest(user_id=user_id, scene="inner", k=10))
    online = pd.DataFrame(rec.ranked.features)
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


def test_the_precomputed_ranker_scores_as_the_training_path_on_offline_rows(
    pipeline, online_and_offline
) -> None:
    rec, _, offline = online_and_offline
    ranker = pipeline.ranker
    content = ranker.reference_content(pipeline.store, datetime.fromtimestamp(rec.request_ts, UTC))
    expected = ranker.rank_reference(offline.to_dict("list"), "inner", content)
    got = rec.ranked
    assert len(expected.item_ids) == len(got.item_ids) > 0
    np.testing.assert_array_equal(got.item_ids, expected.item_ids)
    for task, probs in expected.task_probs.items():
        np.testing.assert_allclose(got.task_probs[task], probs, atol=TOLERANCE, err_msg=task)
    # and the reference's inputs are those the training sets get from the same rows
    frame = offline[list(FEATURE_COLUMNS)].assign(
        position="inner", source="rec", is_cold=expected.inputs.is_cold.numpy()
    )
    built = build_ranking_data(
        frame, content, ranker.max_seq_len, tasks=(), n_categories=ranker.config.n_categories
    )
    np.testing.assert_array_equal(built.item_rows.numpy(), expected.inputs.item_rows.numpy())
    np.testing.assert_array_equal(built.seq_rows.numpy(), expected.inputs.seq_rows.numpy())


def _requests(pipeline) -> list[RecommendRequest]:
    user_id, _ = active_user(pipeline)
    others = [u for u in range(1, 60, 7) if u != user_id]
    requests = [RecommendRequest(user_id=user_id, scene=s, k=20) for s in ("home", "detail")]
    requests += [RecommendRequest(user_id=u, scene="inner", k=10) for u in others]
    requests += [
        RecommendRequest(user_id=user_id, scene="detail", k=8, materials=["shop", "live"]),
        RecommendRequest(user_id=10**9, scene="detail", k=5, context_sku_id=1),
    ]
    return requests


def test_the_optimised_pipeline_answers_as_the_reference_pipeline(pipeline, monkeypatch) -> None:
    requests = _requests(pipeline)
    fast = [pipeline.recommend(r) for r in requests]
    ranker = pipeline.ranker
    content = ranker.reference_content(
        pipeline.store, datetime.fromtimestamp(fast[0].request_ts, UTC)
    )
    monkeypatch.setattr(
        ranker, "rank", lambda features, scene: ranker.rank_reference(features, scene, content)
    )
    for request, got in zip(requests, fast, strict=True):
        want = pipeline.recommend(request).response
        have = got.response
        assert [i.item_id for i in have.items] == [i.item_id for i in want.items], request
        assert [(i.channel, i.found_by) for i in have.items] == [
            (i.channel, i.found_by) for i in want.items
        ]
        np.testing.assert_allclose(
            [i.score for i in have.items], [i.score for i in want.items], atol=TOLERANCE
        )
        assert have.candidates == want.candidates and have.degraded == want.degraded


def test_a_ranker_on_recall_vectors_reads_the_index_vectors_of_its_recall_model(
    serving_world, serving_config, index_server
) -> None:
    """The shared encoder (--recall-vector): serving's vectors are the active index's, the
    precomputed path scores as the training path, and another recall model is refused."""
    ws = str(serving_world.workspace)
    recall = serving_config.recall_model  # the session's: another test may train a newer one
    run_cli("train", "rank", "--epochs", "1", "--recall-vector", "--recall-model", recall, "-w", ws)
    tag = str(stored_model(serving_world, "ranking:latest").tag)
    config = ServingConfig(recall_model=serving_config.recall_model, rank_model=tag)
    pipeline = RecommendationPipeline(serving_world, config, milvus_uri=index_server.uri)
    ranker = pipeline.ranker
    assert ranker.metadata["recall_model"] == pipeline.recall_model.tag
    vectors = pipeline.reader.snapshot().derived[RANKER_ITEMS].vectors
    ids = pipeline.reader.item_ids[:50]
    stored = ContentIndex(index_server.uri).get_vectors(ids)
    assert len(stored) == len(ids)
    got = vectors.of(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(got, np.stack([stored[int(i)] for i in ids]), atol=1e-5)

    user_id, _ = active_user(pipeline)
    rec = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=10))
    want = ranker.rank_reference(
        rec.ranked.features,
        "home",
        ranker.reference_content(pipeline.store, datetime.fromtimestamp(rec.request_ts, UTC)),
    )
    np.testing.assert_array_equal(rec.ranked.item_ids, want.item_ids)
    for task, probs in want.task_probs.items():
        np.testing.assert_allclose(rec.ranked.task_probs[task], probs, atol=TOLERANCE)

    other = dataclasses.replace(pipeline.recall_model, tag="recall:another")
    with pytest.raises(ValueError, match="reads the item vectors of"):
        OnlineRanker(load_ranking_model(serving_world, tag), pipeline.reader, other)
