"""The serving pipeline in-process on the trained tiny world: recall -> rank -> mix, cold start,
filters, pushed events, and degraded answers when a backend fails."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from index.build import build_index, v2v_queries
from index.server import LiteServer
from mmrec.settings import Settings
from mmrec.vocab import FRESH, MATERIALS, POPULAR, S2V, TERM, U2V, V2V
from mmrec.world_manifest import world_end
from serving.config import ServingConfig
from serving.events import EventIntake, updated_sequences
from serving.pipeline import ONLINE_STORE, RecommendationPipeline
from serving.recall import VECTOR_INDEX
from serving.schemas import BehaviourEvent, RecommendRequest
from serving.snapshot_files import snapshots_root
from tests.analysis_fixtures import copy_world

CHANNELS = {U2V, V2V, S2V, TERM, FRESH, POPULAR}


def active_user(pipeline: RecommendationPipeline) -> tuple[int, list[int]]:
    """A user with a click history online, and that history."""
    for user_id in range(200):
        seq = pipeline.reader.read_user(user_id)["item_click_seq"][0]
        if seq:
            return user_id, list(seq)
    raise AssertionError("no user with clicks in the tiny world")


def test_a_known_user_gets_k_ranked_items_from_the_personal_channels(pipeline) -> None:
    user_id, clicked = active_user(pipeline)
    out = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=20)).response
    assert len(out.items) == 20 and out.degraded == [] and not out.cold_start
    ids = [i.item_id for i in out.items]
    assert len(set(ids)) == 20
    assert not set(ids) & set(clicked)  # already-clicked items are filtered out
    assert out.candidates == min(pipeline.config.candidates, len(pipeline.recall.catalog))
    for item in out.items:
        assert item.material in MATERIALS and item.channel in item.found_by
        assert set(item.found_by) <= CHANNELS
        assert set(item.task_scores) == set(pipeline.ranker.config.tasks)
        assert all(0.0 <= p <= 1.0 for p in item.task_scores.values())
    found = {c for item in out.items for c in item.found_by}
    assert {U2V, V2V} & found
    # each material queue keeps the ranker's order (mixing never reorders within a queue)
    for material in MATERIALS:
        scores = [i.score for i in out.items if i.material == material]
        assert scores == sorted(scores, reverse=True)
    assert {"features", "recall", "rank", "mix", "total"} <= set(out.timings_ms)
    assert out.models["index"].endswith(pipeline.recall_model.version)


def test_materials_filter_keeps_full_lists_with_scene_shares(pipeline) -> None:
    user_id, _ = active_user(pipeline)
    only = RecommendRequest(user_id=user_id, scene="detail", k=10, materials=["shop", "live"])
    out = pipeline.recommend(only).response
    assert len(out.items) == 10 and {i.material for i in out.items} <= {"shop", "live"}
    # the detail scene caps shop at 0.5 and live at 0.2 of a list: among the two, 5:2
    shop = sum(i.material == "shop" for i in out.items)
    assert 7 <= shop <= 8


def test_an_unknown_user_gets_the_cold_start_path_with_the_context_sku(pipeline) -> None:
    out = pipeline.recommend(
        RecommendRequest(user_id=10**12, scene="detail", k=15, context_sku_id=3)
    ).response
    assert out.cold_start and out.degraded == [] and len(out.items) == 15
    found = {c for item in out.items for c in item.found_by}
    assert U2V not in found and V2V not in found
    assert found & {S2V, TERM, FRESH, POPULAR}


def test_ranking_scores_depend_on_the_scene(pipeline) -> None:
    user_id, _ = active_user(pipeline)
    home = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=5))
    detail = pipeline.recommend(RecommendRequest(user_id=user_id, scene="detail", k=5))
    assert home.ranked is not None and detail.ranked is not None
    assert not np.allclose(home.ranked.task_probs["click"], detail.ranked.task_probs["click"])


def test_v2v_seeds_are_the_newest_clicked_items_as_milvus_stores_them(pipeline) -> None:
    from index.channels import seed_item_vectors
    from serving.recall import Seeds

    _, clicked = active_user(pipeline)
    stage = pipeline.recall
    unknown = 10**9  # not in the index: left out, as Milvus leaves it out
    for seeds in (clicked, [unknown, *clicked]):
        got = stage._v2v_vectors(Seeds(clicked_items=seeds))
        newest = seeds[: pipeline.config.seed_items]
        want = v2v_queries(stage.recall, seed_item_vectors(stage.index, newest))
        assert len(got) == len([i for i in newest if i != unknown]) > 0
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_posted_click_reaches_the_next_request(pipeline) -> None:
    from serving.events import EventIntake

    user_id, clicked = active_user(pipeline)
    fresh_item = next(int(i) for i in pipeline.recall.catalog.item_id if int(i) not in set(clicked))
    event = BehaviourEvent(user_id=user_id, event_type="click", item_id=fresh_item)
    result = EventIntake(pipeline.settings, pipeline.store, pipeline.now).accept([event])
    assert result.users_updated == 1 and result.appended == 1 and result.degraded == []
    seq = pipeline.reader.read_user(user_id)["item_click_seq"][0]
    assert list(seq) == [fresh_item, *clicked][: len(seq)]
    out = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=50)).response
    assert fresh_item not in {i.item_id for i in out.items}  # now seen, so filtered


def test_events_fold_into_sequences_newest_first_and_capped() -> None:
    events = [
        BehaviourEvent(user_id=1, event_type="click", item_id=7, event_ts=10),
        BehaviourEvent(user_id=1, event_type="sku_cart", sku_id=9, event_ts=30),
        BehaviourEvent(user_id=1, event_type="share", item_id=8, event_ts=20),
    ]
    out = updated_sequences({"item_click_seq": [1, 2], "sku_cart_seq": None}, events)
    assert out["item_click_seq"] == [7, 1, 2]
    assert out["item_engage_seq"] == [8]
    assert out["sku_cart_seq"] == [9]
    long = updated_sequences({"item_click_seq": list(range(50))}, events)
    assert len(long["item_click_seq"]) == 50 and long["item_click_seq"][0] == 7


def test_an_event_without_its_target_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs item_id"):
        BehaviourEvent(user_id=1, event_type="click", sku_id=3)


def test_the_vector_index_failing_gives_a_flagged_fallback_answer(
    serving_world: Settings, serving_config: ServingConfig, tmp_path
) -> None:
    with LiteServer(tmp_path / "milvus.db") as server:
        build_index(serving_world, serving_config.recall_model, uri=server.uri, show_progress=False)
        pipeline = RecommendationPipeline(serving_world, serving_config, milvus_uri=server.uri)
    # the server is gone now
    user_id, _ = active_user(pipeline)
    out = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=10)).response
    assert out.degraded == [VECTOR_INDEX] and len(out.items) == 10
    assert {c for item in out.items for c in item.found_by} <= {TERM, FRESH, POPULAR}


def test_the_online_store_failing_gives_a_flagged_cold_start_answer(
    serving_world: Settings, serving_config: ServingConfig, index_server: LiteServer, tmp_path
) -> None:
    broken = copy_world(serving_world, tmp_path / "ws")
    pipeline = RecommendationPipeline(broken, serving_config, milvus_uri=index_server.uri)
    with sqlite3.connect(broken.data_dir / "feast" / "online_store.db") as db:  # lose every table
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            db.execute(f'DROP TABLE "{table}"')
    out = pipeline.recommend(
        RecommendRequest(user_id=1, scene="detail", k=10, context_sku_id=3)
    ).response
    assert ONLINE_STORE in out.degraded and out.cold_start and len(out.items) == 10


@pytest.mark.parametrize("broken", ["read_user", "sku_lookup"])
def test_a_bug_reading_features_raises_instead_of_answering_degraded(
    pipeline, monkeypatch, broken: str
) -> None:
    """Only the online stores' own errors (serving.online_features.ONLINE_STORE_ERRORS) make
    an answer degraded: a bug (here a TypeError) is not relabelled as the store failing."""

    def bug(*args, **kwargs):
        raise TypeError("a bug, not the online store")

    user_id, _ = active_user(pipeline)
    if broken == "read_user":
        monkeypatch.setattr(pipeline.reader, "read_user", bug)
    else:
        monkeypatch.setattr(pipeline, "_sku_categories", bug)
    with pytest.raises(TypeError, match="a bug"):
        pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=5, context_sku_id=3))


def test_a_worker_started_after_events_were_logged_answers_at_the_same_clock(
    serving_world: Settings, serving_config: ServingConfig, index_server: LiteServer, tmp_path
) -> None:
    """/events stamps events at the world clock, the day after the data, and that day in the
    event log moves `world_end` one day on. A second worker of the same service started after
    that (late, or restarted by BentoML) used to read its clock then: a day later, other item
    ages, other scores under the same `item_snapshot`. The clock is kept with the snapshot
    version's files instead, so every worker serving that version answers at it."""
    world = copy_world(serving_world, tmp_path / "ws")
    shutil.rmtree(snapshots_root(world), ignore_errors=True)  # the first worker writes them
    first = RecommendationPipeline(world, serving_config, milvus_uri=index_server.uri)
    user_id, _ = active_user(first)
    item = int(first.recall.catalog.item_id.iloc[0])
    EventIntake(world, first.store, first.now).accept(
        [BehaviourEvent(user_id=user_id, event_type="click", item_id=item)]
    )
    assert world_end(world).timestamp() > first.now()  # the data's end moved on
    second = RecommendationPipeline(world, serving_config, milvus_uri=index_server.uri)
    assert second.now() == first.now()
    request = RecommendRequest(user_id=user_id, scene="home", k=10)
    a, b = (p.recommend(request).response for p in (first, second))
    assert a.models["item_snapshot"] == b.models["item_snapshot"] == first.reader.snapshot().key
    assert [(i.item_id, i.score) for i in a.items] == [(i.item_id, i.score) for i in b.items]
