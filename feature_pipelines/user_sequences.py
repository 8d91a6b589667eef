"""User behaviour-sequence snapshots: the last N items / SKUs per behaviour type, as lists.

One snapshot per user active on the day, stamped at the end of that day, covering the
lookback window before it. Users not active keep their previous snapshot (Feast's
point-in-time join and TTL take care of validity).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

SEQ_LENGTH = 50
LOOKBACK = timedelta(days=30)
# sequence column -> (event types, id column)
SEQUENCES: dict[str, tuple[tuple[str, ...], str]] = {
    "item_click_seq": (("click",), "item_id"),
    "item_watch_seq": (("watch",), "item_id"),
    "item_engage_seq": (("share", "comment", "favorite", "cart"), "item_id"),
    "sku_click_seq": (("sku_click",), "sku_id"),
    "sku_cart_seq": (("sku_cart",), "sku_id"),
    "sku_purchase_seq": (("sku_purchase",), "sku_id"),
}


def build_user_sequences(
    con: duckdb.DuckDBPyConnection, events: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Snapshots at `end` for users with any event in [start, end) of relation `events`
    (mmrec.event_log.events_view), newest item first."""
    branches = "\nUNION ALL\n".join(
        f"SELECT user_id, '{name}' AS seq, {id_col} AS entity_id, event_timestamp "
        f"FROM ev WHERE event_type IN ({', '.join(repr(t) for t in types)})"
        for name, (types, id_col) in SEQUENCES.items()
    )
    lists = ",\n".join(
        f"coalesce(list(entity_id ORDER BY rn) FILTER (WHERE seq = '{name}'), []::BIGINT[]) AS {name}"
        for name in SEQUENCES
    )
    sql = f"""
        WITH ev AS (
            SELECT user_id, item_id, sku_id, event_type, event_timestamp
            FROM {events}
            WHERE event_timestamp >= $lookback AND event_timestamp < $end
        ),
        active AS (SELECT DISTINCT user_id FROM ev WHERE event_timestamp >= $start),
        tagged AS ({branches}),
        ranked AS (
            SELECT tagged.*, row_number() OVER (
                PARTITION BY user_id, seq ORDER BY event_timestamp DESC, entity_id
            ) AS rn
            FROM tagged SEMI JOIN active USING (user_id)
        )
        SELECT user_id, $end AS event_timestamp, {lists}
        FROM ranked WHERE rn <= {SEQ_LENGTH}
        GROUP BY user_id
        UNION ALL
        -- active users with none of these behaviours still get a (empty) snapshot
        SELECT user_id, $end, {", ".join("[]::BIGINT[]" for _ in SEQUENCES)}
        FROM active ANTI JOIN ranked USING (user_id)
        ORDER BY user_id
    """
    params = {"lookback": end - LOOKBACK, "start": start, "end": end}
    return con.execute(sql, params).df()
