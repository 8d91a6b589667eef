"""Point-in-time joins through Feast equal an independent pandas merge_asof: the latest value
at or before each row's timestamp, within the view's TTL, never from the future, and every
entity row comes back (nulls where nothing was valid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines import layout
from mmrec.settings import Settings
from mmrec.vocab import WORLD_EPOCH

# (feature view, offline source, join key, the columns compared)
CASES = [
    ("user_behavior_seq", layout.USER_BEHAVIOR_SEQ, "user_id", ["item_click_seq", "sku_cart_seq"]),
    (
        "user_cross_domain",
        layout.USER_CROSS_DOMAIN,
        "user_id",
        ["cdr_event_count_30d", "cdr_top_category"],
    ),
    ("item_stats", layout.ITEM_STATS, "item_id", ["impressions_7d", "ctr_7d"]),
]


def expected_asof(
    source: pd.DataFrame, rows: pd.DataFrame, key: str, ttl: pd.Timedelta
) -> pd.DataFrame:
    """The reference answer, computed without Feast (a TTL of 0: values never expire)."""
    left = rows.reset_index().sort_values("event_timestamp")
    right = source.rename(columns={"event_timestamp": "feature_ts"}).sort_values("feature_ts")
    joined = pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on="feature_ts",
        by=key,
        direction="backward",
        tolerance=ttl if ttl > pd.Timedelta(0) else None,
    )
    return joined.set_index("index").sort_index()


def _null(value) -> bool:
    return value is None or value is pd.NA or (np.isscalar(value) and pd.isna(value))


def _same(a, b) -> bool:
    if _null(a) or _null(b):
        return _null(a) and _null(b)
    if isinstance(a, (list, np.ndarray)):
        return b is not None and list(a) == list(b)
    return a == b if isinstance(a, str) else bool(np.isclose(float(a), float(b)))


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
def test_historical_features_equal_an_independent_asof_join(
    tiny_world: Settings, feature_store, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    # timestamps from before the world began to after it ended; ids include unknown ones
    start = WORLD_EPOCH - pd.Timedelta(days=3)
    offsets = pd.to_timedelta(rng.uniform(0, 12 * 86400, n), unit="s")
    timestamps = (start + offsets).floor("s").astype("datetime64[us, UTC]")
    entity_rows = pd.DataFrame(
        {
            "user_id": rng.integers(1, 330, n),  # tiny has 300 users
            "item_id": rng.integers(1, 600, n),  # and 550 items
            "event_timestamp": timestamps,
        }
    )
    refs = [f"{view}:{column}" for view, _, _, columns in CASES for column in columns]
    got = feature_store.get_historical_features(entity_df=entity_rows, features=refs).to_df()
    assert len(got) == n  # every entity row comes back
    got = got.merge(
        entity_rows.reset_index(), on=["user_id", "item_id", "event_timestamp"]
    ).set_index("index")
    got = got[~got.index.duplicated()].sort_index()
    assert len(got) == n
    for view, source_name, key, columns in CASES:
        ttl = pd.Timedelta(feature_store.get_feature_view(view).ttl)
        source = pd.read_parquet(tiny_world.offline_dir / source_name)[
            [key, "event_timestamp", *columns]
        ]
        want = expected_asof(source, entity_rows, key, ttl)
        assert (want.feature_ts.isna() | (want.feature_ts <= entity_rows.event_timestamp)).all()
        assert 0 < want.feature_ts.notna().sum() < n  # both found and not-found rows are checked
        for column in columns:
            mismatches = [i for i in range(n) if not _same(want[column].iat[i], got[column].iat[i])]
            assert not mismatches, (
                f"{view}.{column}: {len(mismatches)} rows differ, first {mismatches[0]}: "
                f"want {want[column].iat[mismatches[0]]!r} got {got[column].iat[mismatches[0]]!r}"
            )
