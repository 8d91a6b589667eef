"""The floor of the serving benchmark: a trivial BentoML endpoint with the recommender's
request and response shapes and process settings (serving.service.SERVICE_OPTIONS), answering
k made-up items without any work. What it costs is the framework's and the client's share of
a request on this machine; bench/serving_bench.py serves it right before the real service.

    bentoml serve bench.floor_service:Floor --working-dir <repo>
"""

from __future__ import annotations

import bentoml

from mmrec.vocab import RANKING_TASKS, U2V
from serving.schemas import RecommendedItem, RecommendRequest, RecommendResponse
from serving.service import SERVICE_OPTIONS


@bentoml.service(name="mmrec-floor", **SERVICE_OPTIONS)
class Floor:
    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    def recommend(self, **fields) -> RecommendResponse:
        """k items with every field filled, as the recommender answers."""
        request = RecommendRequest(**fields)
        items = [
            RecommendedItem(
                item_id=i,
                material="video",
                score=1.0 / (i + 1),
                task_scores=dict.fromkeys(RANKING_TASKS, 0.5),
                channel=U2V,
                found_by=[U2V],
            )
            for i in range(request.k)
        ]
        return RecommendResponse(
            user_id=request.user_id,
            scene=request.scene,
            items=items,
            degraded=[],
            cold_start=False,
            candidates=500,
            timings_ms={"total": 0.0},
            models={},
        )
