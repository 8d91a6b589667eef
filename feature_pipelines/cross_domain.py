"""Cross-domain (CDR) interest: a user's decayed category affinities from product-domain
events (sku click / cart / purchase), used to rank content."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

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
    end: datetime,
    categories: Sequence[str],
) -> pd.DataFrame:
    """Snapshots at `end` for users with product events of relation `events` in the lookback
    window.

    cdr_category_affinity is a list over the data's `categories` summing to 1 (users whose
    product events all fall outside the vocabulary get no row).
    """
    weights = " ".join(f"WHEN '{t}' THEN {w}" for t, w in EVENT_WEIGHTS.items())
    scores = con.execute(
        f"""
        SELECT e.user_id, s.category,
               sum((CASE e.event_type {weights} END)
                   * pow(0.5, ($end_s - epoch(e.event_timestamp)) / 86400.0 / {HALF_LIFE_DAYS})) AS score,
               count(*) AS n
        FROM {events} e JOIN read_parquet($skus) s USING (sku_id)
        WHERE e.event_type IN ({", ".join(repr(t) for t in EVENT_WEIGHTS)})
          AND e.event_timestamp >= $lookback AND e.event_timestamp < $end
        GROUP BY ALL
        """,
        {
            "skus": skus_file,
            "lookback": end - LOOKBACK,
            "end": end,
            "end_s": end.timestamp(),
        },
    ).df()
    columns = [
        "user_id",
        "event_timestamp",
        "cdr_category_affinity",
        "cdr_top_category",
        "cdr_event_count_30d",
    ]
    scores = scores[scores.category.isin(categories)]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    # A (users x categories) pivot; pandas does this in one call where SQL would need a
    # cross join against the category list.
    matrix = scores.pivot_table(
        index="user_id", columns="category", values="score", aggfunc="sum", fill_value=0.0
    ).reindex(columns=list(categories), fill_value=0.0)
    values = matrix.to_numpy(dtype=np.float64)
    affinity = (values / values.sum(axis=1, keepdims=True)).astype(np.float32)
    counts = scores.groupby("user_id")["n"].sum().reindex(matrix.index)
    return pd.DataFrame(
        {
            "user_id": matrix.index.to_numpy(dtype=np.int64),
            "event_timestamp": pd.Timestamp(end),
            "cdr_category_affinity": list(affinity),
            "cdr_top_category": np.asarray(categories)[values.argmax(axis=1)],
            "cdr_event_count_30d": counts.to_numpy(dtype=np.int64),
        }
    )
