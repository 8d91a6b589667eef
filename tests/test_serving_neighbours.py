"""V2V and S2V from the neighbour lists of the index build answer as the live search does.

`mmrec index build` stores every item's V2V and every SKU's S2V top-N beside the build
(index/neighbours.py); a request reads its seeds' lists under its filters and searches live
only U2V and the rows whose filtered list runs short. On the same index build (exact FLAT in
milvus-lite) and the same requests, the candidates equal the live search's item for item: the
live path searches the same query vectors (those the build searched for the lists) with the
request's filters in Milvus.
"""

from __future__ import annotations

import numpy as np
import pytest

from index.build import neighbours_root
from index.channels import RecallFilter
from index.neighbours import TOP_N, NeighbourLists
from mmrec.vocab import S2V, U2V, V2V
from serving.recall import Seeds
from serving.schemas import RecommendRequest
from tests.test_serving_pipeline import active_user


def _requests(pipeline) -> list[RecommendRequest]:
    """Users with histories, every scene, material filters (narrow ones force live rows), a
    context SKU and a cold user."""
    user_id, _ = active_user(pipeline)
    users = [user_id, *range(1, 80, 5)]
    requests = [
        RecommendRequest(user_id=u, scene=("home", "inner", "detail")[u % 3], k=20) for u in users
    ]
    requests += [
        RecommendRequest(user_id=user_id, scene="detail", k=8, materials=["live"]),
        RecommendRequest(user_id=user_id, scene="home", k=8, materials=["shop", "video"]),
        RecommendRequest(user_id=user_id, scene="detail", k=10, context_sku_id=3),
        RecommendRequest(user_id=10**9, scene="detail", k=5, context_sku_id=1),
    ]
    return requests


@pytest.fixture(scope="module")
def searched_rows(pipeline, monkeypatch_module):
    """Query rows of every Milvus search the pipeline makes, appended per call."""
    calls: list[int] = []
    search = pipeline.index.search

    def counting(queries, *args, **kwargs):
        calls.append(len(queries))
        return search(queries, *args, **kwargs)

    monkeypatch_module.setattr(pipeline.index, "search", counting)
    return calls


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_build_stores_lists_for_the_active_version(pipeline, serving_world) -> None:
    lists = NeighbourLists.load(neighbours_root(serving_world), pipeline.index.record().build_id)
    assert lists is not None and pipeline.recall.lists is not None
    catalog = pipeline.recall.catalog
    v2v = lists.tables[V2V]
    np.testing.assert_array_equal(v2v.keys, np.sort(catalog.item_id.to_numpy(np.int64)))
    assert v2v.top_n == TOP_N[V2V] and lists.tables[S2V].top_n == TOP_N[S2V]
    assert len(lists.tables[S2V].keys) > 0
    # each list is best first, and a catalog smaller than top_n lists every item once
    assert (np.diff(v2v.scores[0][v2v.ids[0] >= 0]) <= 0).all()
    assert len(set(v2v.ids[0][v2v.ids[0] >= 0].tolist())) == min(len(catalog), v2v.top_n)


def test_candidates_from_the_lists_equal_the_live_search_item_for_item(
    pipeline, searched_rows, monkeypatch
) -> None:
    stage = pipeline.recall
    compared = listed_requests = 0
    for request in _requests(pipeline):
        user, online = pipeline.user_features(request.user_id)
        seeds = pipeline.seeds(request, user)[0] if online else Seeds()
        filters = RecallFilter(
            materials=tuple(request.materials) if request.materials else None,
            exclude_ids=frozenset(seeds.clicked_items),
        )
        searched_rows.clear()
        fast = stage.recall_candidates(seeds, filters, pipeline.config.candidates)
        rows_fast = sum(searched_rows)
        with monkeypatch.context() as patch:
            patch.setattr(stage, "use_lists", False)
            searched_rows.clear()
            live = stage.recall_candidates(seeds, filters, pipeline.config.candidates)
            rows_live = sum(searched_rows)
        assert [(c.item_id, c.channel, c.found_by) for c in fast.candidates] == [
            (c.item_id, c.channel, c.found_by) for c in live.candidates
        ], request
        np.testing.assert_array_equal(
            [c.score for c in fast.candidates], [c.score for c in live.candidates]
        )
        compared += 1
        queries = stage.vector_queries(seeds, pipeline.ranker.max_seq_len)
        assert rows_fast <= rows_live, request
        if (V2V in queries or S2V in queries) and request.materials is None:
            # unrestricted: every V2V / S2V row from its list, U2V the only live row
            assert rows_fast == len(queries.get(U2V, ([], 0))[0]) < rows_live, request
            listed_requests += 1
    assert compared == len(_requests(pipeline)) and listed_requests >= 3


def test_whole_answers_with_lists_equal_the_answers_without(pipeline, monkeypatch) -> None:
    requests = _requests(pipeline)
    fast = [pipeline.recommend(r).response for r in requests]
    monkeypatch.setattr(pipeline.recall, "use_lists", False)
    for request, have in zip(requests, fast, strict=True):
        want = pipeline.recommend(request).response
        assert [(i.item_id, i.channel, i.found_by) for i in have.items] == [
            (i.item_id, i.channel, i.found_by) for i in want.items
        ], request
        assert [i.score for i in have.items] == [i.score for i in want.items]
