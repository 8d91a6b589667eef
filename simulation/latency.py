"""The served latency of the loop, read from the service's Prometheus text at /metrics.

A bento is served afresh every simulated day, so its histograms hold exactly that day's
requests: per /recommend stage (`mmrec_stage_seconds`, serving/metrics.py) and per endpoint
(`bentoml_service_request_duration_seconds`, BentoML's). Quantiles are read from the buckets
as Prometheus's `histogram_quantile` does (linear within the bucket), so they are only as
fine as the buckets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

STAGE_HISTOGRAM = "mmrec_stage_seconds"
REQUEST_HISTOGRAM = "bentoml_service_request_duration_seconds"
QUANTILES = (0.5, 0.9, 0.99)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs, as
    Prometheus computes it: linear inside the bucket holding the rank, the largest finite
    bound when the rank falls in the +Inf bucket; None for an empty histogram."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def summarize_histograms(text: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """{histogram: {label: {count, mean_ms, p50_ms, p90_ms, p99_ms}}} of the two histograms in
    a /metrics text: stages by `stage`, requests by `endpoint` (200 answers only)."""
    parts: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"buckets": defaultdict(float), "sum": 0.0, "count": 0.0}
    )
    for family in text_string_to_metric_families(text):
        if family.name not in (STAGE_HISTOGRAM, REQUEST_HISTOGRAM):
            continue
        for sample in family.samples:
            labels = sample.labels
            if family.name == STAGE_HISTOGRAM:
                key = labels.get("stage", "")
            elif labels.get("http_response_code", "200") == "200":
                key = labels.get("endpoint", "")
            else:
                continue
            part = parts[(family.name, key)]
            if sample.name.endswith("_bucket"):
                part["buckets"][float(labels["le"])] += sample.value
            elif sample.name.endswith("_sum"):
                part["sum"] += sample.value
            elif sample.name.endswith("_count"):
                part["count"] += sample.value
    out: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    for (name, key), part in sorted(parts.items()):
        count = part["count"]
        summary: dict[str, float | None] = {
            "count": count,
            "mean_ms": 1000 * part["sum"] / count if count else None,
        }
        for q in QUANTILES:
            value = histogram_quantile(q, list(part["buckets"].items()))
            summary[f"p{round(q * 100)}_ms"] = None if value is None else 1000 * value
        out[name][key] = summary
    return dict(out)
