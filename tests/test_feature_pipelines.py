"""Event-to-feature pipelines: idempotent, a file per month, and equal to what the raw log says
(on the synthetic world and on a long sparse log)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from datagen.long_log import LongLogShape, write_long_log
from feature_pipelines import layout
from feature_pipelines.run import build_features
from feature_pipelines.user_sequences import SEQ_LENGTH, build_user_sequences, fold_sequences
from ingest.importer import import_data
from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.world_manifest import world_days


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


def test_unknown_day_is_rejected(world_copy: Settings) -> None:
    with pytest.raises(UserError, match="not in the data"):
        build_features(world_copy, ["1999-01-01"])


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A small long sparse log (4 years, 300 active days, users idle for months), imported and
    built: the shape real logs have and the synthetic world does not."""
    root = tmp_path_factory.mktemp("long-log")
    shape = LongLogShape(users=40, items=300, events=6_000, active_days=300, years=4)
    events, items = write_long_log(root / "contract", shape, seed=3)
    settings = Settings(workspace=root / "ws")
    import_data(settings, events, items)
    build_features(settings)
    return settings


def test_a_long_sparse_log_costs_a_file_per_month_not_per_day(long_log: Settings) -> None:
    days = world_days(long_log)
    months = {day[:7] for day in days}
    assert len(days) == 300 and len(months) < 60
    sequence_files = list((long_log.offline_dir / layout.USER_BEHAVIOR_SEQ).rglob("*.parquet"))
    assert sorted(p.parent.name for p in sequence_files) == sorted(f"month={m}" for m in months)


def test_a_build_since_a_day_rewrites_only_the_months_from_it(long_log: Settings) -> None:
    before = _digest(long_log.offline_dir)
    mtimes = {p: p.stat().st_mtime_ns for p in long_log.offline_dir.rglob("*.parquet")}
    since = world_days(long_log)[200]
    build_features(long_log, since=since)
    assert _digest(long_log.offline_dir) == before  # same data, same bytes
    rewritten = {
        str(p.parent.name)
        for p, t in mtimes.items()
        if p.stat().st_mtime_ns != t
        and p.parent.parent.name in (layout.USER_BEHAVIOR_SEQ, layout.ITEM_STATS)
    }
    assert rewritten == {f"month={d[:7]}" for d in world_days(long_log) if d >= since}


def test_sequences_reach_back_however_long_the_user_was_idle(long_log: Settings) -> None:
    """A snapshot holds the user's last clicks before it, however old (no lookback window):
    the batch rule, which the service's fold (fold_sequences) applies online."""
    events = pd.read_parquet(long_log.raw_dir / "events")
    clicks = events[events.event_type == "click"]
    snapshots = pd.read_parquet(long_log.offline_dir / layout.USER_BEHAVIOR_SEQ)
    gaps = 0
    for row in snapshots.itertuples():
        mine = clicks[
            (clicks.user_id == row.user_id) & (clicks.event_timestamp < row.event_timestamp)
        ]
        mine = mine.sort_values(["event_timestamp", "item_id"], ascending=[False, True])
        assert list(row.item_click_seq) == mine.item_id.astype(int).tolist()[:SEQ_LENGTH]
        if len(mine) and row.event_timestamp - mine.event_timestamp.iloc[0] > pd.Timedelta(days=90):
            gaps += 1
    assert gaps > 0  # some snapshots follow a gap of months: their history is kept


def test_the_service_fold_equals_the_batch_rule(long_log: Settings) -> None:
    """Folding a user's events one day at a time onto the previous snapshot (as /events does
    online) gives the batch snapshot, ties in time included."""
    events = pd.read_parquet(long_log.raw_dir / "events")
    snapshots = pd.read_parquet(long_log.offline_dir / layout.USER_BEHAVIOR_SEQ)
    user = snapshots.user_id.value_counts().index[0]
    mine = events[events.user_id == user]
    mine = pd.concat([mine, mine.assign(item_id=mine.item_id + 1)])  # same-time ties
    folded: dict[str, list[int]] = {}
    previous = pd.Timestamp.min.tz_localize("UTC")
    for snapshot in (
        snapshots[snapshots.user_id == user].sort_values("event_timestamp").itertuples()
    ):
        new = mine[
            (mine.event_timestamp >= previous) & (mine.event_timestamp < snapshot.event_timestamp)
        ]
        folded = fold_sequences(
            folded,
            [
                (t, int(i), ts.timestamp())
                for t, i, ts in zip(new.event_type, new.item_id, new.event_timestamp, strict=True)
            ],
        )
        previous = snapshot.event_timestamp
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("ev", mine)
    con.execute(
        "CREATE TABLE days AS SELECT CAST(? AS DATE) AS day, CAST(? AS TIMESTAMPTZ) AS end_ts",
        [(previous - pd.Timedelta(days=1)).date(), previous],
    )
    batch = build_user_sequences(con, "ev", "days").to_pylist()[0]
    assert folded["item_click_seq"] == batch["item_click_seq"]


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
