"""The BentoML service: POST /recommend, POST /events, the feed page at /feed/ (serving/feed.py);
/livez, /readyz, /metrics (BentoML's and serving/metrics.py's), /docs from BentoML.

Build and serve (README): `bentoml build` packs this module with the recall and ranking
models named by MMREC_RECALL_MODEL / MMREC_RANK_MODEL (default `<name>:latest` of the store in
BENTOML_HOME); `bentoml serve <tag>` runs it. The feature repo and data come from
MMREC_WORKSPACE, the index from MMREC_MILVUS_URI (mmrec/settings.py). Request bodies are
validated by their pydantic models (serving/schemas.py): BentoML answers 400 with the field
that failed. MMREC_SERVING_WORKERS processes (default 1: a milvus-lite file opens in one
process; for more, serve the index with `mmrec index serve` and point MMREC_MILVUS_URI at it).
In front of both APIs, serving/guard.py: the bearer token on writes (MMREC_API_TOKEN), the body
size and time limits. Plain `bentoml serve` binds 127.0.0.1 (README: Security).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import replace
from http import HTTPStatus
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException
from fastapi import Path, Query
from fastapi.responses import FileResponse, Response
from starlette.responses import JSONResponse

from mmrec.errors import UserError
from mmrec.id_map import ID_CHARS, UnknownIdError
from mmrec.settings import Settings
from serving.feed import PAGE, feed_app, parse_ids
from serving.guard import GuardConfig, RequestGuard
from serving.schemas import EventsRequest, EventsResponse, RecommendRequest, RecommendResponse

log = logging.getLogger(__name__)
# This module is the service's entry point: the one place it reads the environment. BentoML
# needs the worker count and the model tags when the class is defined.
SETTINGS = Settings.from_env()


class RequestRejected(BentoMLException):
    """A valid-looking request the service cannot act on (400, message says why)."""

    error_code = HTTPStatus.BAD_REQUEST


def _freeze_long_lived() -> None:
    """Collect, then move every object alive now out of the collector's reach (objects
    dropped later are still freed by reference counting)."""
    gc.collect()
    gc.freeze()


# The service's process and traffic settings (bench/floor_service.py serves its trivial
# endpoint with the same ones, the floor the serving benchmark is judged against).
SERVICE_OPTIONS = {
    "workers": SETTINGS.serving_workers,
    "traffic": {"timeout": 30, "max_concurrency": 64},
    "resources": {"cpu": "2"},
    # loopback unless `bentoml serve --host` says otherwise (README: Security)
    "http": {"host": "127.0.0.1"},
}


@bentoml.service(name="mmrec-recommender", **SERVICE_OPTIONS)
@bentoml.asgi_app(feed_app, path="/feed")
class Recommender:
    recall_model = bentoml.models.BentoModel(SETTINGS.recall_model)
    rank_model = bentoml.models.BentoModel(SETTINGS.rank_model)

    def __init__(self) -> None:
        import torch

        from serving.config import ServingConfig
        from serving.events import EventIntake
        from serving.feed import FeedCatalog
        from serving.ids import ServedIds
        from serving.metrics import service_metrics
        from serving.pipeline import RecommendationPipeline

        # the machine's threads shared by the workers: more would only contend for the cores
        torch.set_num_threads(max(1, SETTINGS.torch_threads // SETTINGS.serving_workers))
        config = replace(
            ServingConfig.from_settings(SETTINGS),
            recall_model=self.recall_model,
            rank_model=self.rank_model,
        )
        self.pipeline = RecommendationPipeline(SETTINGS, config)
        # requests and answers carry the data's own ids; the pipeline works on keys
        self.ids = ServedIds(SETTINGS)
        self.intake = EventIntake(SETTINGS, self.pipeline.store, self.pipeline.now, self.ids)
        self.feed = FeedCatalog(SETTINGS.raw_dir, self.ids.ids)
        self.metrics = service_metrics()
        self.metrics.observe_index(self.pipeline.models["index"])
        self.pipeline.reader.on_load("metrics", self.metrics.observe_snapshot)
        # warm-up: the first search of a collection and the first forward pass are slow
        # (~0.6 s measured); pay it before /readyz says yes, not in a user's request
        self.pipeline.recommend(RecommendRequest(user_id=0, scene="home", k=1))
        # The loaded models, Feast objects and snapshots are long-lived: move them out of the
        # collector's reach. Without this a full collection walked them every few seconds and
        # was the p99 (recall p99 299 -> 27 ms in-process, bench/serving_bench.py). on_load
        # runs the hook now and again after each background reload of the item snapshot.
        self.pipeline.reader.on_load("gc_freeze", lambda snapshot: _freeze_long_lived())
        log.info("serving %s", self.pipeline.models)

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    def recommend(self, **fields) -> RecommendResponse:
        """Recall + rank + mix for one user and scene; see RecommendRequest for the fields."""
        request = RecommendRequest(**fields)
        try:
            keyed = self.ids.keyed_request(request)
        except UnknownIdError as err:  # e.g. a string id in an integer-id workspace
            raise RequestRejected(str(err)) from None
        recommendation = self.pipeline.recommend(keyed)
        self.metrics.observe_recommendation(recommendation.response, recommendation.channels)
        return self.ids.answer(request, recommendation.response)

    @bentoml.api(route="/events", input_spec=EventsRequest, output_spec=EventsResponse)
    def events(self, **fields) -> EventsResponse | JSONResponse:
        """Log the events durably, then fold them into the users' online sequences
        (serving/events.py). 400: an event the contract or catalog refuses; 503: the event
        log cannot be written (nothing stored). Both name what failed and the fix."""
        from ingest.event_log import EventLogUnavailable

        try:
            accepted = self.intake.accept(EventsRequest(**fields).events)
            self.metrics.observe_events(accepted)
            return accepted
        except UserError as err:
            return JSONResponse({"error": str(err)}, status_code=HTTPStatus.BAD_REQUEST)
        except EventLogUnavailable as err:
            log.error("%s", err)
            return JSONResponse({"error": str(err)}, status_code=HTTPStatus.SERVICE_UNAVAILABLE)

    # The feed page (serving/feed.py): FastAPI routes of the mounted app, given this service
    @feed_app.get("/")
    def feed_page(self) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @feed_app.get("/api/items")
    def feed_items(
        self, ids: str = "", each: Annotated[list[str] | None, Query(alias="id")] = None
    ) -> Response:
        """Display fields (title, material, category) of items: ?ids=3,17,42 or
        ?id=B07X-12&id=B07X-13 (the data's own ids)."""
        try:
            return JSONResponse(self.feed.describe(parse_ids(ids, each or [])))
        except UserError as err:
            return JSONResponse({"error": str(err)}, status_code=HTTPStatus.BAD_REQUEST)

    @feed_app.get("/api/users")
    def feed_users(self) -> JSONResponse:
        return JSONResponse({"sample": self.feed.sample_users, "new_user": self.feed.new_user})

    @feed_app.get("/api/users/{user_id:path}/recent")
    def feed_recent(self, user_id: Annotated[str, Path(max_length=ID_CHARS)]) -> JSONResponse:
        """The user's newest clicked items, as the online store has them now (an id that
        cannot be a user's here: 422; an unknown user: none)."""
        try:
            key = self.ids.ids.user.key(user_id, "user_id")
            own = self.ids.ids.user.parse(user_id, "user_id")
        except UnknownIdError as err:
            return JSONResponse({"error": str(err)}, status_code=422)
        user, _ = (None, None) if key is None else self.pipeline.user_features(key)
        recent = [] if user is None else self.feed.recent_clicks(user)
        return JSONResponse({"user_id": own, "item_ids": recent})

    @feed_app.get("/media/{item_id:path}")
    def feed_media(self, item_id: Annotated[str, Path(max_length=ID_CHARS)]) -> Response:
        """An item's cover, by item id only (never a path from the request: the id is looked
        up in the catalog)."""
        try:
            cover = self.feed.cover(item_id)
        except UnknownIdError as err:
            return JSONResponse({"error": str(err)}, status_code=422)
        if cover is None:
            return JSONResponse({"error": f"item {item_id} has no cover"}, status_code=404)
        data, media_type = cover
        return Response(data, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})

    def __is_ready__(self) -> bool:
        """Ready when the index answers and the item snapshot is loaded."""
        try:
            self.pipeline.index.count()
        except Exception as err:  # the readiness probe reports, it does not raise
            log.warning("not ready: %s", err)
            return False
        return self.pipeline.reader.snapshot_version > 0


Recommender.add_asgi_middleware(RequestGuard, guard=GuardConfig.from_settings(SETTINGS))
