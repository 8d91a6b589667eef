"""The service's own Prometheus metrics, on BentoML's /metrics beside its request metrics.

prometheus_client is imported when the first worker builds them, not at module import:
BentoML sets PROMETHEUS_MULTIPROC_DIR in each worker after importing the service module,
and a metric created before that is never written to the files /metrics merges across
workers (bentoml/metrics.py says the same). One set per process (`service_metrics`).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from serving.schemas import EventsResponse, RecommendResponse

STAGES = ("features", "recall", "rank", "mix", "total")
# seconds; the 100k-item world's stages sit between 1 ms and 100 ms
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Per-stage latency, candidates per channel, degraded answers, events, snapshot, index."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.stage_seconds = Histogram(
            "mmrec_stage_seconds",
            "Time of a /recommend stage (features, recall, rank, mix; total is the request).",
            ["stage"],
            buckets=STAGE_BUCKETS,
        )
        self.candidates = Counter(
            "mmrec_candidates",
            "Candidates ranked, by the recall channel whose slot each took.",
            ["channel"],
        )
        self.recommended = Counter(
            "mmrec_recommended_items", "Items answered, by the channel of their slot.", ["channel"]
        )
        self.degraded = Counter(
            "mmrec_degraded_answers",
            "/recommend answers served with a failed part replaced by fallbacks, by part.",
            ["part"],
        )
        self.events = Counter(
            "mmrec_events",
            "Events /events accepted: appended to the log, or duplicates of logged ones.",
            ["result"],
        )
        self.snapshot_version = Gauge(
            "mmrec_item_snapshot_version",
            "Version of the worker's item-feature snapshot (1 at start, +1 per reload).",
            multiprocess_mode="liveall",
        )
        self.snapshot_loaded = Gauge(
            "mmrec_item_snapshot_loaded_timestamp_seconds",
            "When the worker's item snapshot was loaded (age: time() - this).",
            multiprocess_mode="liveall",
        )
        self.index_collection = Gauge(
            "mmrec_index_collection",
            "1 for the Milvus collection the worker searches.",
            ["collection"],
            multiprocess_mode="liveall",
        )

    def observe_recommendation(self, response: RecommendResponse, channels: dict[str, int]) -> None:
        """One answer: its stage times, its candidates per channel (`channels`), its items."""
        for stage in STAGES:
            if stage in response.timings_ms:
                self.stage_seconds.labels(stage).observe(response.timings_ms[stage] / 1000)
        for channel, count in channels.items():
            self.candidates.labels(channel).inc(count)
        for item in response.items:
            self.recommended.labels(item.channel).inc()
        for part in response.degraded:
            self.degraded.labels(part).inc()

    def observe_events(self, response: EventsResponse) -> None:
        self.events.labels("appended").inc(response.appended)
        self.events.labels("duplicate").inc(response.duplicates)

    def observe_snapshot(self, snapshot: Any) -> None:
        """The reader's on_load hook: each (re)loaded item snapshot."""
        self.snapshot_version.set(snapshot.version)
        self.snapshot_loaded.set(time.time())

    def observe_index(self, collection: str) -> None:
        self.index_collection.labels(collection).set(1)


@cache
def service_metrics() -> ServiceMetrics:
    """This process's metrics (a second registration of the same names would fail)."""
    return ServiceMetrics()
