"""The simulation's statistics and bookkeeping, without a bento: the bootstrap intervals over
users, the gap between two arms, the arm assignment, histogram quantiles read from /metrics and
the per-arm summary of simulated visits."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from simulation.arms import ARMS, assign_arms, parse_arms
from simulation.latency import histogram_quantile, summarize_histograms
from simulation.report import (
    ALL_DAYS,
    bootstrap_ci,
    bootstrap_gap,
    markdown,
    summarize_period,
    summarize_run,
)


def test_bootstrap_ci_of_a_ratio_is_the_pooled_ratio_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(0)
    impressions = rng.integers(5, 15, 400)
    clicks = rng.binomial(impressions, 0.1)
    estimate = bootstrap_ci(clicks, impressions, seed=1)
    assert estimate.value == pytest.approx(clicks.sum() / impressions.sum())
    assert estimate.low < estimate.value < estimate.high
    # about 1.96 standard errors either side for ~4,000 Bernoulli(0.1) impressions
    assert 0.012 < estimate.high - estimate.low < 0.026


def test_bootstrap_ci_narrows_with_more_users() -> None:
    rng = np.random.default_rng(2)
    small, large = rng.normal(1.0, 1.0, 100), rng.normal(1.0, 1.0, 1600)
    width = [(e.high - e.low) for e in (bootstrap_ci(small), bootstrap_ci(large))]
    assert width[1] == pytest.approx(width[0] / 4, rel=0.25)  # 1 / sqrt(16)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(200):
        clicks = rng.binomial(10, 0.2, 300)  # 300 users, 10 impressions each
        estimate = bootstrap_ci(clicks, np.full(300, 10), resamples=500, seed=trial)
        covered += estimate.low <= 0.2 <= estimate.high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ci_without_users_or_denominator_is_undefined() -> None:
    assert bootstrap_ci(np.array([])).value is None
    assert bootstrap_ci(np.array([0, 0]), np.array([0, 0])).value is None


def test_bootstrap_gap_finds_a_real_difference_and_none_where_there_is_none() -> None:
    rng = np.random.default_rng(4)
    a = rng.binomial(10, 0.3, 500), np.full(500, 10)
    b = rng.binomial(10, 0.2, 500), np.full(500, 10)
    gap = bootstrap_gap(a, b, seed=0)
    assert gap.value == pytest.approx(a[0].mean() / 10 - b[0].mean() / 10)
    assert 0 < gap.low < gap.value < gap.high
    # 1.96 standard errors of the difference of two CTRs over 5,000 impressions each, both sides
    assert gap.high - gap.low == pytest.approx(2 * 1.96 * np.sqrt((0.21 + 0.16) / 5000), rel=0.2)
    holds_zero = 0
    for trial in range(100):  # two arms alike: the interval holds 0 about 95% of the time
        a, b = ((rng.binomial(10, 0.3, 300), np.full(300, 10)) for _ in range(2))
        same = bootstrap_gap(a, b, resamples=300, seed=trial)
        holds_zero += same.low <= 0 <= same.high
    assert 88 <= holds_zero <= 99


def test_arms_are_assigned_by_a_stable_hash_of_the_user() -> None:
    arms = tuple(ARMS.values())
    users = np.arange(1, 6001)
    first, again = assign_arms(users, arms, "x"), assign_arms(users, arms, "x")
    assert first == again
    shares = pd.Series([a.name for a in first]).value_counts(normalize=True)
    assert set(shares.index) == set(ARMS) and shares.between(0.14, 0.19).all()
    other = assign_arms(users, arms, "y")  # another experiment reshuffles
    assert 0.75 < np.mean([a != b for a, b in zip(first, other, strict=True)]) < 0.9


def test_parse_arms_keeps_the_known_order_and_names_unknown_ones() -> None:
    assert [a.name for a in parse_arms("random, full")] == ["full", "random"]
    with pytest.raises(ValueError, match=r"unknown arms.*nope"):
        parse_arms("full,nope")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * 40 / 80)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.005)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 2.0)]) == 1.0


METRICS_TEXT = """\
# HELP mmrec_stage_seconds Time of a /recommend stage.
# TYPE mmrec_stage_seconds histogram
mmrec_stage_seconds_bucket{le="0.01",stage="total"} 1.0
mmrec_stage_seconds_bucket{le="0.1",stage="total"} 3.0
mmrec_stage_seconds_bucket{le="+Inf",stage="total"} 4.0
mmrec_stage_seconds_count{stage="total"} 4.0
mmrec_stage_seconds_sum{stage="total"} 0.4
# HELP bentoml_service_request_duration_seconds Request duration.
# TYPE bentoml_service_request_duration_seconds histogram
bentoml_service_request_duration_seconds_bucket{endpoint="/recommend",http_response_code="200",le="0.1"} 2.0
bentoml_service_request_duration_seconds_bucket{endpoint="/recommend",http_response_code="200",le="+Inf"} 2.0
bentoml_service_request_duration_seconds_count{endpoint="/recommend",http_response_code="200"} 2.0
bentoml_service_request_duration_seconds_sum{endpoint="/recommend",http_response_code="200"} 0.1
bentoml_service_request_duration_seconds_bucket{endpoint="/recommend",http_response_code="400",le="+Inf"} 7.0
bentoml_service_request_duration_seconds_count{endpoint="/recommend",http_response_code="400"} 7.0
bentoml_service_request_duration_seconds_sum{endpoint="/recommend",http_response_code="400"} 0.7
"""


def test_metrics_text_gives_stage_and_endpoint_latency() -> None:
    summary = summarize_histograms(METRICS_TEXT)
    total = summary["mmrec_stage_seconds"]["total"]
    assert total["count"] == 4 and total["mean_ms"] == pytest.approx(100.0)
    assert total["p50_ms"] == pytest.approx(55.0)  # rank 2 of 4: halfway through (10, 100] ms
    recommend = summary["bentoml_service_request_duration_seconds"]["/recommend"]
    assert recommend["count"] == 2  # the 400s are not the service's latency


def _visits(seed: int = 0) -> pd.DataFrame:
    """Simulated visits of 3 arms over 2 days: the oracle clicks most, random least."""
    rng = np.random.default_rng(seed)
    rows = []
    for a, (arm, ctr) in enumerate((("full", 0.2), ("random", 0.05), ("oracle_catalog", 0.4))):
        for user in range(1000 * a, 1000 * a + 60):
            for day in (1, 2):
                clicks = int(rng.binomial(10, ctr))
                items = rng.choice(100, 10, replace=False).tolist()
                rows.append(
                    {
                        "seed": seed, "day": day, "data_day": f"2026-10-1{day}", "arm": arm,
                        "user_id": user, "impressions": 10, "clicks": clicks,
                        "expected_clicks": 10 * ctr, "cold_impressions": 2, "cold_clicks": min(clicks, 1),
                        "best_candidate_clicks": 3.0 if arm == "full" else np.nan,
                        "best_catalog_clicks": 4.0,
                        "items": items, "clicked": items[:clicks],
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_per_arm_has_intervals_coverage_and_gaps_to_the_oracle() -> None:
    summary = summarize_period(_visits(), resamples=300)
    assert list(summary) == ["full", "random", "oracle_catalog"]  # the arms' order
    full = summary["full"]
    assert full["users"] == 60 and full["impressions"] == 1200  # 60 users, 2 days, k = 10
    assert full["expected_ctr"].value == pytest.approx(0.2)
    assert full["cold_shown"].value == pytest.approx(0.2)
    assert full["of_candidate_ceiling"].value == pytest.approx(2 / 3)  # paired per user
    assert full["of_catalog_ceiling"].value == pytest.approx(0.5)
    assert summary["random"]["of_candidate_ceiling"].value is None  # it recalls nothing
    assert 0 < full["coverage"] <= 100
    gap = full["gap_to_oracle_catalog"]["ctr"]
    assert gap.high < 0 and gap.value == pytest.approx(
        full["ctr"].value - summary["oracle_catalog"]["ctr"].value
    )
    assert "gap_to_oracle_catalog" not in summary["oracle_catalog"]


def test_a_run_summary_has_each_day_all_days_and_the_verdicts() -> None:
    visits = _visits()
    run = {
        "seed": 0,
        "days": [{"day": 1, "data_day": "2026-10-11"}, {"day": 2, "data_day": "2026-10-12"}],
        "seconds": 1.0,
        "records": visits.to_dict("records"),
        "latency": [],
    }
    summary = summarize_run(run, resamples=200)
    assert list(summary["summary"]) == ["1", "2", ALL_DAYS]
    verdicts = {(v["metric"], v["baseline"]): v["full_above"] for v in summary["separation"]}
    assert verdicts == {("ctr", "random"): True, ("expected_ctr", "random"): True}
    report = {
        "command": "mmrec simulate",
        "world": "test",
        "config": {"days": 2, "users": 180, "k": 10, "scene": "home", "retrain_every": 0,
                   "arms": ["full", "random", "oracle_catalog"]},
        "runs": [summary],
    }  # fmt: skip
    text = markdown(report)
    assert re.search(r"- ctr: full 0\.\d+ \[.*\] vs random .*: above, no overlap", text)
