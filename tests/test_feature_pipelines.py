"""Event-to-feature pipelines: idempotent per day, and equal to what the raw log says."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_pipelines import layout
from feature_pipelines.run import build_features
from feature_pipelines.user_sequences import SEQ_LENGTH
from mmrec.settings import Settings


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


@pytest.fixture
def world_copy(tiny_world: Settings, tmp_path: Path) -> Settings:
    shutil.copytree(tiny_world.data_dir / "raw", tmp_path / "data" / "raw")
    settings = Settings(workspace=tmp_path)
    build_features(settings)
    return settings


def test_rebuilding_a_day_changes_nothing(world_copy: Settings) -> None:
    before = _digest(world_copy.offline_dir)
    build_features(world_copy, ["2026-10-03"])
    assert _digest(world_copy.offline_dir) == before


def test_a_new_day_only_adds_partitions(world_copy: Settings) -> None:
    last = layout.partition_path(world_copy, layout.USER_BEHAVIOR_SEQ, layout.day_start(5))
    shutil.rmtree(last.parent)
    before = _digest(world_copy.offline_dir)
    build_features(world_copy, ["2026-10-06"])
    after = _digest(world_copy.offline_dir)
    assert {k: v for k, v in after.items() if k in before} == before
    assert str(last.relative_to(world_copy.offline_dir)) in after


def test_unknown_day_is_rejected(world_copy: Settings) -> None:
    with pytest.raises(ValueError, match="not in the world"):
        build_features(world_copy, ["1999-01-01"])


def test_click_sequence_is_the_last_clicks_before_the_snapshot(tiny_world: Settings) -> None:
    events = pd.read_parquet(tiny_world.raw_dir / "events")
    snapshots = pd.read_parquet(tiny_world.offline_dir / layout.USER_BEHAVIOR_SEQ)
    rng = np.random.default_rng(0)
    for row in snapshots.iloc[rng.choice(len(snapshots), 25, replace=False)].itertuples():
        clicks = events[
            (events.user_id == row.user_id)
            & (events.event_type == "click")
            & (events.event_timestamp < row.event_timestamp)
        ].sort_values(["event_timestamp", "item_id"], ascending=[False, True])
        assert list(row.item_click_seq) == clicks.item_id.astype(int).tolist()[:SEQ_LENGTH]


def test_cross_domain_affinity_is_a_distribution(tiny_world: Settings) -> None:
    cdr = pd.read_parquet(tiny_world.offline_dir / layout.USER_CROSS_DOMAIN)
    sums = cdr.cdr_category_affinity.map(np.sum)
    assert np.allclose(sums, 1.0, atol=1e-5)


def test_item_stats_ctr_stays_between_zero_and_one(tiny_world: Settings) -> None:
    stats = pd.read_parquet(tiny_world.offline_dir / layout.ITEM_STATS)
    for column in ("ctr_7d", "ctr_home_7d", "ctr_inner_7d", "ctr_detail_7d"):
        assert stats[column].between(0, 1).all()
    assert (stats.clicks_7d <= stats.impressions_7d).all()
