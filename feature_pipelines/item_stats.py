"""Item statistics for timeliness: windowed impressions, clicks, smoothed CTR by position and
watch ratio, one snapshot per item shown in the window, stamped at the end of each day."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from mmrec.vocab import POSITIONS

WINDOW = timedelta(days=7)
# Smoothed CTR = (clicks + PRIOR_CTR * PRIOR_WEIGHT) / (impressions + PRIOR_WEIGHT): a new item
# starts at the prior instead of 0/0, and a handful of impressions cannot swing it to 0 or 1.
PRIOR_CTR = 0.08
PRIOR_WEIGHT = 20.0


def _count(event_type: str, *conditions: str) -> str:
    where = " AND ".join((f"event_type = '{event_type}'", *conditions))
    return f"count(*) FILTER (WHERE {where})"


def _ctr(*conditions: str) -> str:
    clicks, impressions = _count("click", *conditions), _count("impression", *conditions)
    return f"(({clicks}) + {PRIOR_CTR * PRIOR_WEIGHT}) / (({impressions}) + {PRIOR_WEIGHT})"


def build_item_stats(
    con: duckdb.DuckDBPyConnection, events: str, items_file: str, end: datetime
) -> pd.DataFrame:
    """Snapshots at `end` for items with an impression in [end - 7 days, end) of relation
    `events`."""
    last_day = "event_timestamp >= $day"
    per_position = ",\n".join(
        f"{_ctr(f'position = {p!r}')}::FLOAT AS ctr_{p}_7d" for p in POSITIONS
    )
    sql = f"""
        SELECT e.item_id, $end AS event_timestamp,
          {_count("impression", last_day)}::BIGINT AS impressions_1d,
          {_count("click", last_day)}::BIGINT AS clicks_1d,
          {_count("impression")}::BIGINT AS impressions_7d,
          {_count("click")}::BIGINT AS clicks_7d,
          {_ctr()}::FLOAT AS ctr_7d,
          {per_position},
          coalesce(avg(watch_seconds / nullif(i.duration_s, 0)) FILTER (WHERE event_type = 'watch'), 0)::FLOAT
            AS watch_ratio_7d
        FROM {events} e JOIN read_parquet($items) i USING (item_id)
        WHERE e.item_id IS NOT NULL AND event_timestamp >= $window AND event_timestamp < $end
        GROUP BY e.item_id
        HAVING {_count("impression")} > 0
        ORDER BY e.item_id
    """
    params = {
        "items": items_file,
        "window": end - WINDOW,
        "day": end - timedelta(days=1),
        "end": end,
    }
    return con.execute(sql, params).df()
