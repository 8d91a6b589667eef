"""Item statistics for timeliness: windowed impressions, clicks, smoothed CTR by position and
watch ratio, one snapshot per item shown in the window, stamped at the end of each data day."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pyarrow as pa

from mmrec.vocab import POSITIONS

WINDOW = timedelta(days=7)
# Smoothed CTR = (clicks + PRIOR_CTR * PRIOR_WEIGHT) / (impressions + PRIOR_WEIGHT): a new item
# starts at the prior instead of 0/0, and a handful of impressions cannot swing it to 0 or 1.
PRIOR_CTR = 0.08
PRIOR_WEIGHT = 20.0


def build_item_stats(
    con: duckdb.DuckDBPyConnection, events: str, items_file: str, days: str
) -> pa.Table:
    """Snapshots at the end of each day of table `days` (day DATE, end_ts TIMESTAMPTZ) for the
    items with an impression of relation `events` in the WINDOW before it.

    One pass: events are counted per item and day first, then each snapshot sums its
    window's days (a range join), so the cost follows the events, not the calendar.
    """
    positions = [(p, f"position = {p!r}") for p in POSITIONS]
    per_day = ",\n".join(
        [
            "count(*) FILTER (WHERE event_type = 'impression') AS imp",
            "count(*) FILTER (WHERE event_type = 'click') AS clk",
            *(
                f"count(*) FILTER (WHERE event_type = 'impression' AND {c}) AS imp_{p}"
                for p, c in positions
            ),
            *(
                f"count(*) FILTER (WHERE event_type = 'click' AND {c}) AS clk_{p}"
                for p, c in positions
            ),
            # the watch ratio's mean over the window: its sum and count per day
            "sum(watch_seconds / nullif(i.duration_s, 0)) FILTER (WHERE event_type = 'watch') AS wr_sum",
            "count(watch_seconds / nullif(i.duration_s, 0)) FILTER (WHERE event_type = 'watch') AS wr_n",
        ]
    )
    in_day = "a.day = d.day"
    per_position = ",\n".join(
        f"{_ctr(f'sum(a.clk_{p})', f'sum(a.imp_{p})')}::FLOAT AS ctr_{p}_7d" for p in POSITIONS
    )
    sql = f"""
        WITH a AS (
            SELECT e.item_id, CAST(e.event_timestamp AS DATE) AS day, {per_day}
            FROM {events} e JOIN read_parquet({_quoted(items_file)}) i USING (item_id)
            WHERE e.item_id IS NOT NULL
            GROUP BY ALL
        )
        SELECT d.day, a.item_id, d.end_ts AS event_timestamp,
          coalesce(sum(a.imp) FILTER (WHERE {in_day}), 0)::BIGINT AS impressions_1d,
          coalesce(sum(a.clk) FILTER (WHERE {in_day}), 0)::BIGINT AS clicks_1d,
          sum(a.imp)::BIGINT AS impressions_7d,
          sum(a.clk)::BIGINT AS clicks_7d,
          {_ctr("sum(a.clk)", "sum(a.imp)")}::FLOAT AS ctr_7d,
          {per_position},
          coalesce(sum(a.wr_sum) / nullif(sum(a.wr_n), 0), 0)::FLOAT AS watch_ratio_7d
        FROM a JOIN {days} d
          ON a.day > d.day - INTERVAL {WINDOW.days} DAY AND a.day <= d.day
        GROUP BY d.day, a.item_id, d.end_ts
        HAVING sum(a.imp) > 0
        ORDER BY d.day, a.item_id
    """
    return con.sql(sql).to_arrow_table()


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ctr(clicks: str, impressions: str) -> str:
    return f"(({clicks}) + {PRIOR_CTR * PRIOR_WEIGHT}) / (({impressions}) + {PRIOR_WEIGHT})"
