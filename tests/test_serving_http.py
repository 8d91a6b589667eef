"""End to end over real HTTP: `bentoml build` a bento from this repo with the trained tiny
world's models, `bentoml serve` it in a subprocess, and talk to it; fuzz both endpoints with
hostile bodies and with bodies drawn from the served OpenAPI schema (no request may get a
5xx), and make the event log unwritable (503, nothing stored)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrec import event_log
from mmrec.settings import Settings
from mmrec.vocab import EVENT_TYPES
from tests.conftest import unwritable
from tests.test_serving_pipeline import CHANNELS

pytestmark = pytest.mark.slow


def test_recommend_answers_with_ranked_items(server: str) -> None:
    body = {"user_id": 3, "scene": "home", "k": 12}
    resp = httpx.post(f"{server}/recommend", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert len(out["items"]) == 12 and out["degraded"] == []
    for item in out["items"]:
        assert item["channel"] in CHANNELS and item["task_scores"]["click"] >= 0
    assert out["models"]["recall"].startswith("recall:")


def test_experiment_fields_over_http(server: str) -> None:
    """An A/B client's fields (serving/policies.py): a baseline policy, the recalled set."""
    ask = {"user_id": 3, "scene": "home", "k": 5}
    plain = httpx.post(f"{server}/recommend", json=ask, timeout=30).json()
    assert plain["candidate_ids"] is None
    full = httpx.post(f"{server}/recommend", json={**ask, "include_candidates": True}, timeout=30)
    assert full.status_code == 200, full.text
    ids = full.json()["candidate_ids"]
    assert len(ids) == full.json()["candidates"] and {i["item_id"] for i in plain["items"]} <= set(
        ids
    )
    popular = httpx.post(f"{server}/recommend", json={**ask, "policy": "popular"}, timeout=30)
    assert {i["channel"] for i in popular.json()["items"]} == {"popular"}


def test_events_then_recommend(server: str) -> None:
    event = {"user_id": 5, "event_type": "click", "item_id": 11}
    resp = httpx.post(f"{server}/events", json={"events": [event]}, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["users_updated"], out["events"], out["appended"], out["degraded"]) == (1, 1, 1, [])
    resp = httpx.post(f"{server}/recommend", json={"user_id": 5, "scene": "inner"}, timeout=30)
    assert resp.status_code == 200 and 11 not in {i["item_id"] for i in resp.json()["items"]}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"user_id": 1, "scene": "home", "k": 0}, "k"),
        ({"user_id": 1, "scene": "home", "k": 500}, "k"),
        ({"user_id": 1, "scene": "kitchen"}, "scene"),
        ({"user_id": "one", "scene": "home"}, "user_id"),
        ({"scene": "home"}, "user_id"),
        ({"user_id": 1, "scene": "home", "materials": ["podcast"]}, "materials"),
        ({"user_id": 1, "scene": "home", "colour": "red"}, "colour"),
        ({"user_id": -4, "scene": "home"}, "user_id"),
        ({"user_id": 1, "scene": "home", "policy": "best"}, "policy"),
        (
            {"user_id": 1, "scene": "home", "policy": "random", "include_candidates": True},
            "include_candidates needs policy ranked",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(server: str, body: dict, needle: str) -> None:
    resp = httpx.post(f"{server}/recommend", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert needle in resp.text


def test_malformed_json_and_bad_events_get_400(server: str) -> None:
    resp = httpx.post(
        f"{server}/recommend",
        content=b'{"user_id": 1,',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    bad_event = {"events": [{"user_id": 1, "event_type": "click"}]}
    resp = httpx.post(f"{server}/events", json=bad_event, timeout=30)
    assert resp.status_code == 400 and "item_id" in resp.text
    resp = httpx.post(f"{server}/events", json={"events": []}, timeout=30)
    assert resp.status_code == 400


def test_openapi_schema_and_probes(server: str) -> None:
    schema = httpx.get(f"{server}/docs.json", timeout=30).json()
    assert {"/recommend", "/events"} <= set(schema["paths"])
    assert httpx.get(f"{server}/livez", timeout=5).status_code == 200
    assert httpx.get(f"{server}/readyz", timeout=5).status_code == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
recommend_bodies = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.integers(-5, 2**63) | json_values,
        "scene": st.sampled_from(["home", "inner", "detail", "x"]) | json_values,
        "k": st.integers(-3, 300) | json_values,
        "context_sku_id": st.integers(-3, 10**6) | json_values,
        "materials": st.lists(st.sampled_from(["video", "live", "shop", "aggregated", "y"]))
        | json_values,
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=recommend_bodies | json_values)
def test_no_request_body_gets_a_server_error(server: str, body) -> None:
    resp = httpx.post(f"{server}/recommend", json=body, timeout=30)
    assert resp.status_code in (200, 400), (body, resp.status_code, resp.text)


event_objects = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.integers(-5, 2**63) | json_values,
        "event_type": st.sampled_from([*EVENT_TYPES, "purchase"]) | json_values,
        "item_id": st.integers(-3, 500) | json_values,  # the tiny catalog's ids and beyond
        "sku_id": st.integers(-3, 300) | json_values,
        "event_ts": st.integers(-5, 2**41) | json_values,
        "source": st.sampled_from(["search", "rec", "ads"]) | json_values,
        "position": st.sampled_from(["home", "inner", "detail", "top"]) | json_values,
        "session_id": st.integers(-3, 2**63) | json_values,
        "watch_seconds": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "event_id": st.text(max_size=140) | json_values,
    },
)
events_bodies = st.fixed_dictionaries(
    {}, optional={"events": st.lists(event_objects, max_size=4) | json_values}
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=events_bodies | json_values)
def test_no_events_body_gets_a_server_error(server: str, body) -> None:
    resp = httpx.post(f"{server}/events", json=body, timeout=30)
    assert resp.status_code in (200, 400), (body, resp.status_code, resp.text)


@pytest.fixture(scope="module")
def openapi(server: str):
    """The served OpenAPI document, loaded by schemathesis."""
    return schemathesis.openapi.from_url(f"{server}/docs.json")


@pytest.mark.parametrize("path", ["/recommend", "/events"])
def test_bodies_drawn_from_the_openapi_schema_get_200_or_400(
    openapi, server: str, path: str
) -> None:
    """Schema-driven fuzzing (schemathesis over /docs.json): what the published schema allows
    is answered, a /recommend body with 200. A 400 stays possible for what a schema cannot
    say: no body at all (BentoML does not mark request bodies required), include_candidates
    with a policy that recalls nothing (a rule across two fields), an event of an item outside
    the catalog or after the service clock. Never a 5xx."""

    @settings(max_examples=60, deadline=None)
    @given(case=openapi.include(path=path, method="POST").as_strategy())
    def post(case) -> None:
        response = case.call(base_url=server)
        body = case.body if isinstance(case.body, dict) else None
        body_must_pass = (
            path == "/recommend"
            and body is not None
            and not (body.get("include_candidates") and body.get("policy", "ranked") != "ranked")
        )
        allowed = (200,) if body_must_pass else (200, 400)
        assert response.status_code in allowed, (case.body, response.status_code, response.text)

    post()


def test_an_unwritable_event_log_answers_503_and_stores_nothing(
    server: str, serving_world: Settings
) -> None:
    body = {"events": [{"user_id": 21, "event_type": "click", "item_id": 9, "event_id": "u503"}]}
    folder = event_log.log_dir(serving_world)
    httpx.post(f"{server}/events", json={"events": [{**body["events"][0], "event_id": "warm"}]})
    before = event_log.segments(serving_world)
    with unwritable(folder):
        resp = httpx.post(f"{server}/events", json=body, timeout=30)
        assert resp.status_code == 503, resp.text
        assert "cannot be written" in resp.json()["error"] and "Fix:" in resp.json()["error"]
    assert event_log.segments(serving_world) == before
    resp = httpx.post(f"{server}/events", json=body, timeout=30)  # the client's retry
    assert resp.status_code == 200 and resp.json()["appended"] == 1, resp.text
