"""The experiment fields of POST /recommend (serving/policies.py), in-process on the trained
tiny world: the popular and random baselines an A/B arm can ask for, and the recalled
candidates a client can ask to see; normal requests are answered as before."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.pipeline import RecommendationPipeline
from serving.schemas import RecommendRequest
from tests.test_serving_pipeline import active_user


def ask(pipeline: RecommendationPipeline, user_id: int, **fields):
    return pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", **fields)).response


def test_a_normal_request_answers_without_candidate_ids(pipeline) -> None:
    user_id, _ = active_user(pipeline)
    out = ask(pipeline, user_id, k=10)
    assert out.candidate_ids is None and len(out.items) == 10


def test_include_candidates_lists_what_was_recalled_and_ranked(pipeline) -> None:
    user_id, clicked = active_user(pipeline)
    out = ask(pipeline, user_id, k=10, include_candidates=True)
    assert len(out.candidate_ids) == out.candidates == len(set(out.candidate_ids))
    assert {i.item_id for i in out.items} <= set(out.candidate_ids)
    assert not set(out.candidate_ids) & set(clicked)
    plain = ask(pipeline, user_id, k=10)  # the same answer without the list
    assert [i.item_id for i in plain.items] == [i.item_id for i in out.items]


def test_the_popular_policy_is_the_catalog_by_seven_day_clicks_minus_the_clicked(pipeline) -> None:
    user_id, clicked = active_user(pipeline)
    out = ask(pipeline, user_id, k=15, policy="popular")
    ids = [i.item_id for i in out.items]
    assert len(ids) == 15 and out.candidates == 0 and out.candidate_ids is None
    assert not set(ids) & set(clicked)
    assert {i.channel for i in out.items} == {"popular"}
    scores = [i.score for i in out.items]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    popular = pipeline.recall.popular.item_ids.tolist()
    expected = [i for i in popular if i not in set(clicked)][:15]
    assert ids == expected
    new_user = ask(pipeline, 10**9, k=15, policy="popular")  # no history: the same head
    assert [i.item_id for i in new_user.items] == popular[:15]


def test_the_random_policy_is_seeded_by_user_and_clock_and_keeps_the_filters(pipeline) -> None:
    user_id, clicked = active_user(pipeline)
    first = [i.item_id for i in ask(pipeline, user_id, k=20, policy="random").items]
    again = [i.item_id for i in ask(pipeline, user_id, k=20, policy="random").items]
    other = [i.item_id for i in ask(pipeline, user_id + 1, k=20, policy="random").items]
    assert first == again and first != other and len(set(first)) == 20
    assert not set(first) & set(clicked)
    videos = ask(pipeline, user_id, k=20, policy="random", materials=["video"])
    assert {i.material for i in videos.items} == {"video"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"policy": "best"}, "policy"),
        ({"policy": "popular", "include_candidates": True}, "include_candidates needs policy"),
        ({"include_candidates": "yes please"}, "include_candidates"),
    ],
)
def test_bad_experiment_fields_are_refused_naming_the_field(fields, message) -> None:
    with pytest.raises(ValidationError, match=message):
        RecommendRequest(user_id=1, scene="home", **fields)
