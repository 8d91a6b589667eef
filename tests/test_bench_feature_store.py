"""The feature-store benchmark compares like with like: its hand-written DuckDB ASOF join
returns, row for row, every value Feast's point-in-time join of the `ranking` service does."""

from __future__ import annotations

import pandas as pd

from bench.feature_store_bench import duckdb_asof, feast_pit
from mmrec.settings import Settings
from tests.test_feast_point_in_time import _same


def _impression_rows(settings: Settings, n: int) -> pd.DataFrame:
    events = pd.read_parquet(
        settings.raw_dir / "events", columns=["user_id", "item_id", "event_timestamp", "event_type"]
    )
    rows = events[events.event_type == "impression"].sample(n, random_state=0)
    rows = rows.drop(columns="event_type").reset_index(drop=True)
    rows["event_timestamp"] = (
        pd.to_datetime(rows.event_timestamp, utc=True).dt.floor("s").astype("datetime64[us, UTC]")
    )
    rows["request_ts"] = rows.event_timestamp.astype("int64") // 10**6
    return rows


def test_asof_baseline_returns_what_feast_returns(tiny_world: Settings, feature_store) -> None:
    rows = _impression_rows(tiny_world, 400)
    feast = feast_pit(feature_store, rows)
    raw = duckdb_asof(feature_store, rows).sort_values("rid").reset_index(drop=True)
    assert len(feast) == len(raw) == len(rows)
    features = [c for c in feast.columns if c not in rows.columns]
    assert len(features) > 20 and set(features) <= set(raw.columns)
    for column in ("user_id", "item_id"):
        assert (feast[column].to_numpy() == raw[column].to_numpy()).all()
    differ = {
        name: int(sum(not _same(a, b) for a, b in zip(feast[name], raw[name], strict=True)))
        for name in features
    }
    assert {name: n for name, n in differ.items() if n} == {}
    # the sample is not all nulls: most rows found a value in most views
    assert feast[features].notna().mean().mean() > 0.5
