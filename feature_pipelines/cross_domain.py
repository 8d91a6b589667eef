"""Cross-domain (CDR) interest: a user's decayed category affinities from product-domain
events (sku click / cart / purchase), used to rank content."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd

LOOKBACK = timedelta(days=30)
HALF_LIFE_DAYS = 7.0
# How much one event of each type says about interest in its SKU's category.
EVENT_WEIGHTS = {"sku_click": 1.0, "sku_cart": 3.0, "sku_purchase": 5.0}


def build_cross_domain(
    con: duckdb.DuckDBPyConnection,
    events: str,
    skus_file: str,
    days: str,
    categories: Sequence[str],
) -> pd.DataFrame:
    """Snapshots at the end of each day of table `days` (day DATE, end_ts TIMESTAMPTZ) for the
    users with product events of relation `events` in the LOOKBACK before it.

    cdr_category_affinity is a list over the data's `categories` summing to 1: each event
    weighs EVENT_WEIGHTS[type] halved every HALF_LIFE_DAYS before the snapshot; events of SKUs
    outside the vocabulary are left out (a user with only those gets no row).
    """
    weights = " ".join(f"WHEN '{t}' THEN {w}" for t, w in EVENT_WEIGHTS.items())
    scores = con.execute(
        f"""
        SELECT d.day, e.user_id, d.end_ts, s.category,
               sum((CASE e.event_type {weights} END)
                   * pow(0.5, (epoch(d.end_ts) - epoch(e.event_timestamp)) / 86400.0
                              / {HALF_LIFE_DAYS})) AS score,
               count(*) AS n
        FROM {events} e JOIN read_parquet($skus) s USING (sku_id)
        JOIN {days} d ON e.event_timestamp >= d.end_ts - INTERVAL {LOOKBACK.days} DAY
                     AND e.event_timestamp < d.end_ts
        WHERE e.event_type IN ({", ".join(repr(t) for t in EVENT_WEIGHTS)})
          AND list_contains($categories, s.category)
        GROUP BY ALL
        """,
        {"skus": skus_file, "categories": list(categories)},
    ).df()
    columns = ["day", "user_id", "event_timestamp", "cdr_category_affinity",
               "cdr_top_category", "cdr_event_count_30d"]  # fmt: skip
    if scores.empty:
        return pd.DataFrame(columns=columns)
    # A (user-day x category) pivot; pandas does this in one call where SQL would need a
    # cross join against the category list.
    key = ["day", "user_id", "end_ts"]
    matrix = scores.pivot_table(
        index=key, columns="category", values="score", aggfunc="sum", fill_value=0.0
    ).reindex(columns=list(categories), fill_value=0.0)
    values = matrix.to_numpy(dtype=np.float64)
    frame = matrix.index.to_frame(index=False).rename(columns={"end_ts": "event_timestamp"})
    frame["cdr_category_affinity"] = list(
        (values / values.sum(axis=1, keepdims=True)).astype(np.float32)
    )
    frame["cdr_top_category"] = np.asarray(categories)[values.argmax(axis=1)]
    frame["cdr_event_count_30d"] = (
        scores.groupby(key)["n"].sum().reindex(matrix.index).to_numpy(dtype=np.int64)
    )
    return frame[columns]
