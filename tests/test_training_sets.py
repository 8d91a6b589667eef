"""Training sets through Feast: point-in-time correct, every sample kept, the negative ratio
holds and no positive leaks in as a negative."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrec.settings import Settings
from mmrec.vocab import RANKING_TASKS
from training_sets.build import (
    BuildConfig,
    build_ranking_set,
    build_recall_set,
    read_split,
)


@pytest.fixture(scope="module")
def built_sets(tiny_world: Settings, feature_store) -> tuple[dict, dict]:
    config = BuildConfig(chunk_rows=5_000)  # several chunks on the tiny world
    return build_ranking_set(tiny_world, config, feature_store), build_recall_set(
        tiny_world, config, feature_store
    )


def _all(settings: Settings, name: str) -> pd.DataFrame:
    return pd.concat(
        [read_split(settings, name, s) for s in ("train", "valid", "test")], ignore_index=True
    )


def test_ranking_set_keeps_every_impression_with_its_labels(
    tiny_world: Settings, built_sets
) -> None:
    ranking = _all(tiny_world, "ranking_v1")
    events = pd.read_parquet(tiny_world.raw_dir / "events")
    assert len(ranking) == (events.event_type == "impression").sum()
    assert built_sets[0]["rows"] == ranking.split.value_counts().to_dict()
    clicks = set(
        zip(
            *events.loc[events.event_type == "click", ["session_id", "item_id"]].T.values,
            strict=True,
        )
    )
    labelled = set(
        zip(*ranking.loc[ranking.label_click == 1, ["session_id", "item_id"]].T.values, strict=True)
    )
    assert labelled == clicks
    assert ranking.loc[ranking.material.isin(["shop", "aggregated"]), "label_watch"].isna().all()
    for task in RANKING_TASKS:
        assert ranking[f"label_{task}"].dropna().isin([0, 1]).all()


def test_sample_features_never_come_from_after_the_sample(tiny_world: Settings, built_sets) -> None:
    """Every item in a sample's click sequence was clicked by that user before the sample."""
    ranking = _all(tiny_world, "ranking_v1")
    events = pd.read_parquet(tiny_world.raw_dir / "events")
    clicks = (
        events[events.event_type == "click"].groupby(["user_id", "item_id"]).event_timestamp.min()
    )
    rows = ranking[ranking.item_click_seq.notna()].sample(400, random_state=0)
    checked = 0
    for row in rows.itertuples():
        for item in row.item_click_seq:
            assert clicks[(row.user_id, item)] < row.event_timestamp
            checked += 1
    assert checked > 100
    # time-varying item features: item_age_hours is computed at each row's own time
    assert (ranking.item_age_hours.dropna() >= 0).all()


def test_splits_follow_the_days(tiny_world: Settings, built_sets) -> None:
    ranking = _all(tiny_world, "ranking_v1")
    days = built_sets[0]["days"]
    for split in ("train", "valid", "test"):
        part = ranking[ranking.split == split]
        assert set(part.event_timestamp.dt.strftime("%Y-%m-%d")) <= set(days[split])
    assert ranking.loc[ranking.split != "test", "is_cold"].sum() == 0 or days["test"]


def test_recall_negative_ratio_and_no_positive_leaks(tiny_world: Settings, built_sets) -> None:
    recall = _all(tiny_world, "recall_v1")
    manifest = built_sets[1]
    positives, negatives = recall[recall.label == 1], recall[recall.label == 0]
    assert len(negatives) == 4 * len(positives) - manifest["negatives_dropped"]
    assert manifest["negatives_dropped"] <= 0.01 * len(negatives)
    key = np.where(
        recall.channel == "u2v",
        recall.user_id,
        np.where(recall.channel == "v2v", recall.seed_item_id, recall.sku_id),
    )
    recall = recall.assign(query=recall.channel + ":" + pd.Series(key).astype(str).to_numpy())
    positive_pairs = set(
        zip(
            recall.loc[recall.label == 1, "query"],
            recall.loc[recall.label == 1, "item_id"],
            strict=True,
        )
    )
    leaks = [
        p
        for p in zip(
            recall.loc[recall.label == 0, "query"],
            recall.loc[recall.label == 0, "item_id"],
            strict=True,
        )
        if p in positive_pairs
    ]
    assert leaks == []
    # negatives were published before the sample time (they could have been shown)
    publish = pd.read_parquet(tiny_world.raw_dir / "items.parquet").set_index("item_id").publish_ts
    assert (negatives.item_id.map(publish) <= negatives.event_timestamp).all()


def test_recall_channels_have_their_query_features(tiny_world: Settings, built_sets) -> None:
    recall = _all(tiny_world, "recall_v1")
    assert set(recall.channel) == {"u2v", "v2v", "s2v"}
    s2v = recall[recall.channel == "s2v"]
    assert s2v.sku_category.notna().all()
    v2v = recall[recall.channel == "v2v"]
    assert v2v.seed_material.eq("video").all()


def test_rebuilding_replaces_the_set(tiny_world: Settings, built_sets, feature_store) -> None:
    before = _all(tiny_world, "ranking_v1")
    build_ranking_set(tiny_world, BuildConfig(chunk_rows=50_000), feature_store)
    after = _all(tiny_world, "ranking_v1")
    pd.testing.assert_frame_equal(before, after)
    assert not any(
        p.name.startswith(".") for p in tiny_world.training_set_dir("ranking_v1").parent.iterdir()
    )
