"""The BentoML service: POST /recommend, POST /events; /livez, /readyz, /docs from BentoML.

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

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from mmrec.errors import UserError
from mmrec.settings import Settings
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
class Recommender:
    recall_model = bentoml.models.BentoModel(SETTINGS.recall_model)
    rank_model = bentoml.models.BentoModel(SETTINGS.rank_model)

    def __init__(self) -> None:
        import torch

        from serving.config import ServingConfig
        from serving.events import EventIntake
        from serving.pipeline import RecommendationPipeline

        # the machine's threads shared by the workers: more would only contend for the cores
        torch.set_num_threads(max(1, SETTINGS.torch_threads // SETTINGS.serving_workers))
        config = replace(
            ServingConfig.from_settings(SETTINGS),
            recall_model=self.recall_model,
            rank_model=self.rank_model,
        )
        self.pipeline = RecommendationPipeline(SETTINGS, config)
        self.intake = EventIntake(SETTINGS, self.pipeline.store, self.pipeline.now)
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
        return self.pipeline.recommend(RecommendRequest(**fields)).response

    @bentoml.api(route="/events", input_spec=EventsRequest, output_spec=EventsResponse)
    def events(self, **fields) -> EventsResponse | JSONResponse:
        """Log the events durably, then fold them into the users' online sequences
        (serving/events.py). 400: an event the contract or catalog refuses; 503: the event
        log cannot be written (nothing stored). Both name what failed and the fix."""
        from ingest.event_log import EventLogUnavailable

        try:
            return self.intake.accept(EventsRequest(**fields).events)
        except UserError as err:
            return JSONResponse({"error": str(err)}, status_code=HTTPStatus.BAD_REQUEST)
        except EventLogUnavailable as err:
            log.error("%s", err)
            return JSONResponse({"error": str(err)}, status_code=HTTPStatus.SERVICE_UNAVAILABLE)

    def __is_ready__(self) -> bool:
        """Ready when the index answers and the item snapshot is loaded."""
        try:
            self.pipeline.index.count()
        except Exception as err:  # the readiness probe reports, it does not raise
            log.warning("not ready: %s", err)
            return False
        return self.pipeline.reader.snapshot_version > 0


Recommender.add_asgi_middleware(RequestGuard, guard=GuardConfig.from_settings(SETTINGS))
