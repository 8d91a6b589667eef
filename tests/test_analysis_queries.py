"""The ready queries (analysis/sql/*.sql) return the aggregates worked out by hand for the
known world in tests/analysis_fixtures.py."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import AnalysisError, queries
from analysis.pipeline import open_session
from mmrec.settings import Settings
from tests.analysis_fixtures import known_world  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def con(known_world: Settings):  # noqa: F811
    return open_session(known_world)


def _rows(frame: pd.DataFrame, key: list[str]) -> dict:
    return {tuple(row[k] for k in key): row for row in frame.to_dict("records")}


def test_coverage_counts_offline_live_and_online_entities_per_view(con) -> None:
    rows = _rows(queries.run(con, "coverage"), ["feature_view"])
    stats = rows[("item_stats",)]
    # 4 catalog items; 3 have stats rows; item 3's is older than the 7-day TTL.
    assert (stats["catalog_entities"], stats["offline_entities"]) == (4, 3)
    assert (stats["live_entities"], stats["online_entities"]) == (2, 2)
    assert stats["online_coverage"] == 0.5
    assert rows[("user_behavior_seq",)]["online_coverage"] == 0.75
    assert rows[("sku_attributes",)]["live_coverage"] == 1.0


def test_null_rates_count_nulls_per_layer_and_empty_lists(con) -> None:
    rows = _rows(queries.run(con, "null_rates"), ["feature_view", "feature", "layer"])
    # Offline: item 3's watch ratio is null. Online: item 3 was never materialized.
    assert rows[("item_stats", "watch_ratio_7d", "offline")]["null_rate"] == 0.25
    assert rows[("item_stats", "ctr_7d", "offline")]["null_rate"] == 0.0
    assert rows[("item_stats", "ctr_7d", "online")]["nulls"] == 1
    assert rows[("item_stats", "ctr_7d", "online")]["null_rate"] == 0.3333
    # User 2's click sequence is an empty list, not a null.
    clicks = rows[("user_behavior_seq", "item_click_seq", "offline")]
    assert (clicks["nulls"], clicks["empty_list_rate"]) == (0, 0.3333)


def test_freshness_measures_hours_from_each_entitys_newest_row_to_world_end(con) -> None:
    rows = _rows(queries.run(con, "freshness"), ["feature_view", "layer"])
    offline = rows[("item_stats", "offline")]
    # Newest rows: item 1 at END (0 h), item 2 48 h, item 3 on 2026-09-20 (408 h).
    assert (offline["entities"], offline["newest_lag_h"], offline["max_lag_h"]) == (3, 0.0, 408.0)
    assert offline["p50_lag_h"] == 48.0
    online = rows[("item_stats", "online")]
    assert (online["entities"], online["max_lag_h"]) == (2, 48.0)
    assert rows[("user_behavior_seq", "online")]["p50_lag_h"] == 24.0


def test_behaviour_rates_are_per_impression_by_position_and_material(con) -> None:
    rows = _rows(queries.run(con, "behaviour_rates"), ["position", "material"])
    assert set(rows) == {
        ("home", "video"),
        ("home", "live"),
        ("detail", "shop"),
        ("detail", "video"),
    }
    home_video = rows[("home", "video")]
    assert (home_video["impressions"], home_video["clicks"], home_video["ctr"]) == (4, 1, 0.25)
    assert (home_video["watch_rate"], home_video["mean_watch_s"]) == (0.25, 30.0)
    assert rows[("detail", "video")]["ctr"] == 1.0
    assert rows[("detail", "video")]["share_rate"] == 0.5
    assert rows[("detail", "shop")]["cart_rate"] == 0.5
    assert rows[("home", "live")]["ctr"] == 0.0


def test_event_mix_splits_impressions_by_source_position_and_material(con) -> None:
    frame = queries.run(con, "event_mix")
    rows = _rows(frame, ["source", "position", "material"])
    assert rows[("rec", "home", "video")]["impressions"] == 4
    assert rows[("rec", "home", "video")]["impression_share"] == 0.4
    assert rows[("search", "detail", "video")]["users"] == 2
    assert frame.impressions.sum() == 10  # the SKU click has no item and is left out


def test_feature_distributions_read_the_point_in_time_snapshot_within_ttl(con) -> None:
    rows = _rows(queries.run(con, "feature_distributions"), ["material"])
    # item 1's newest row (0.25, not the older 0.05); item 3 is stale, item 4 has no stats.
    assert set(rows) == {("video",), ("live",)}
    assert (rows[("video",)]["items"], rows[("video",)]["ctr_7d_p50"]) == (1, 0.25)
    assert rows[("live",)]["ctr_7d_p50"] == 0.1


def test_top_categories_rank_clicked_categories_per_region_and_cdr_segment(con) -> None:
    rows = _rows(queries.run(con, "top_categories"), ["segment_type", "segment", "rank"])
    east = rows[("region", "east", 1)]
    assert (east["category"], east["clicks"], east["click_share"]) == ("apparel", 2, 0.6667)
    assert rows[("region", "east", 2)]["category"] == "electronics"
    assert rows[("region", "west", 1)]["click_share"] == 1.0
    assert rows[("cdr_top_category", "electronics", 1)]["category"] == "electronics"
    assert rows[("cdr_top_category", "electronics", 1)]["clicks"] == 2


def test_label_rates_use_manifest_labels_or_label_prefixed_columns(con) -> None:
    rows = _rows(queries.run(con, "label_rates"), ["training_set", "label"])
    assert set(rows) == {
        ("ranking_v1", "click"),
        ("ranking_v1", "watch"),
        ("recall_v1", "positive"),
    }
    assert rows[("ranking_v1", "click")]["rate"] == 0.5
    watch = rows[("ranking_v1", "watch")]
    assert (watch["labelled"], watch["rate"]) == (3, 0.3333)  # one row leaves watch undefined
    assert rows[("recall_v1", "positive")]["rate"] == 0.2


def test_embedding_norms_summarise_each_encoder_version(con) -> None:
    (row,) = queries.run(con, "embedding_norms").to_dict("records")
    assert (row["encoder_version"], row["items"], row["text_dim"]) == ("v1", 2, 2)
    assert (row["text_norm_mean"], row["visual_norm_mean"]) == (1.0, 2.5)
    assert row["missing_or_zero"] == 1  # item 2's visual vector is all zeros


def test_a_query_whose_views_are_missing_names_them(tmp_path) -> None:
    empty = open_session(Settings(workspace=tmp_path))
    with pytest.raises(AnalysisError, match="training_labels"):
        queries.run(empty, "label_rates")


def test_unknown_query_name_lists_the_known_ones(con) -> None:
    with pytest.raises(AnalysisError, match="coverage"):
        queries.run(con, "no_such_query")
