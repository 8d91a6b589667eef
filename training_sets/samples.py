"""Labelled samples from the raw logs: which (query, item, time) rows to learn from.

Only labels and keys come from the logs; every feature is read later through Feast, at each
row's timestamp (training_sets/build.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from mmrec.errors import UserError
from training_sets.splits import DaySplit

WATCH_COMPLETION = 0.5  # watched share of a video/live that counts as a 'watch'
S2V_WINDOW_HOURS = 72  # a video click counts for a SKU engaged at most this long before
# Logs without sessions (session_id -1 or null, as imported data may be): a user's session
# ends after this long without an event, the usual web-analytics rule.
SESSION_GAP_MINUTES = 30


def sessionized_events(events: str) -> str:
    """CTE `ev`: relation `events` with a session on every row: the log's own session_id
    where it has one, else the user's bursts of activity split at gaps > SESSION_GAP_MINUTES,
    numbered per user below -1 so they never meet a logged id. Sessions are always keyed with
    the user."""
    return f"""
    ev AS (
        SELECT * EXCLUDE (_new) REPLACE (
            CASE WHEN session_id >= 0 THEN session_id
                 ELSE -2 - sum(_new) OVER (PARTITION BY user_id ORDER BY event_timestamp
                                           ROWS UNBOUNDED PRECEDING)
            END AS session_id)
        FROM (
            SELECT * REPLACE (coalesce(session_id, -1) AS session_id),
                   coalesce(epoch(event_timestamp) - lag(epoch(event_timestamp)) OVER (
                       PARTITION BY user_id ORDER BY event_timestamp)
                       > {SESSION_GAP_MINUTES * 60}, true)::INT AS _new
            FROM {events}
        )
    )"""


def ranking_samples(
    con: duckdb.DuckDBPyConnection, events: str, items_file: str, split: DaySplit
) -> pd.DataFrame:
    """One row per impression of relation `events` (mmrec.event_log.events_view) with its six task labels, context (source, position) and split;
    material comes from Feast with the other item features.

    label_watch is null for materials that cannot be watched (shop, aggregated): a masked label,
    not a negative.
    """
    flags = ",\n".join(
        f"bool_or(event_type = '{t}') AS did_{t}"
        for t in ("click", "share", "comment", "cart", "favorite")
    )
    labels = ",\n".join(
        f"coalesce(a.did_{t}, false)::TINYINT AS label_{t}"
        for t in ("click", "share", "comment", "cart", "favorite")
    )
    return con.execute(
        f"""
        WITH {sessionized_events(events)},
        acts AS (
            SELECT user_id, session_id, item_id, {flags}, max(watch_seconds) AS watch_seconds
            FROM ev WHERE event_type <> 'impression' AND item_id IS NOT NULL
            GROUP BY user_id, session_id, item_id
        ),
        first_seen AS (
            SELECT item_id, min(event_timestamp) AS first_seen FROM ev
            WHERE item_id IS NOT NULL GROUP BY item_id
        )
        SELECT i.user_id, i.item_id, date_trunc('second', i.event_timestamp) AS event_timestamp,
               epoch(date_trunc('second', i.event_timestamp))::BIGINT AS request_ts,
               i.session_id, i.source, i.position,
               {labels},
               CASE WHEN i.material IN ('video', 'live')
                    THEN (coalesce(a.watch_seconds, 0) / nullif(c.duration_s, 0) >= {WATCH_COMPLETION})::TINYINT END
                 AS label_watch,
               {split.sql_case("i.event_timestamp")} AS split,
               strftime(f.first_seen, '%Y-%m-%d') IN ({", ".join(f"'{d}'" for d in split.test)}) AS is_cold
        FROM ev i
        LEFT JOIN acts a USING (user_id, session_id, item_id)
        JOIN read_parquet($items) c USING (item_id)
        JOIN first_seen f USING (item_id)
        WHERE i.event_type = 'impression'
        ORDER BY i.event_timestamp, i.user_id, i.item_id
        """,
        {"items": items_file},
    ).df()


def recall_positives(
    con: duckdb.DuckDBPyConnection, events: str, items_file: str, split: DaySplit
) -> pd.DataFrame:
    """Positive (query, item) pairs for the three recall channels, at the click time, from
    relation `events`.

    - u2v: the user clicked the item.
    - v2v: the user clicked video `seed_item_id`, then video `item_id`, next in the session.
    - s2v: the user engaged SKU `sku_id` (click/cart/purchase) and later, within
      S2V_WINDOW_HOURS, clicked a video featuring it (the most recent such SKU).
    """
    return (
        con.execute(
            f"""
        WITH {sessionized_events(events)},
        items AS (SELECT item_id, material, sku_ids FROM read_parquet($items)),
        clicks AS (
            SELECT e.user_id, e.item_id, e.session_id, date_trunc('second', e.event_timestamp) AS ts, i.material
            FROM ev e JOIN items i USING (item_id) WHERE e.event_type = 'click'
        ),
        v2v AS (
            SELECT * FROM (
                SELECT user_id, item_id, ts, material,
                       lag(item_id) OVER w AS seed_item_id, lag(material) OVER w AS seed_material
                FROM clicks WINDOW w AS (PARTITION BY user_id, session_id ORDER BY ts, item_id)
            ) WHERE seed_item_id IS NOT NULL AND material = 'video' AND seed_material = 'video'
              AND seed_item_id <> item_id
        ),
        featured AS (
            SELECT c.user_id, c.item_id, c.ts, unnest(i.sku_ids) AS sku_id
            FROM clicks c JOIN items i USING (item_id) WHERE c.material = 'video'
        ),
        s2v AS (
            SELECT f.user_id, f.item_id, f.ts, arg_max(p.sku_id, p.event_timestamp) AS sku_id
            FROM featured f JOIN ev p
              ON p.user_id = f.user_id AND p.sku_id = f.sku_id
             AND p.event_type IN ('sku_click', 'sku_cart', 'sku_purchase')
             AND p.event_timestamp < f.ts
             AND p.event_timestamp >= f.ts - INTERVAL {S2V_WINDOW_HOURS} HOUR
            GROUP BY f.user_id, f.item_id, f.ts
        )
        SELECT 'u2v' AS channel, user_id, item_id, NULL::BIGINT AS seed_item_id, NULL::BIGINT AS sku_id, ts FROM clicks
        UNION ALL SELECT 'v2v', user_id, item_id, seed_item_id, NULL, ts FROM v2v
        UNION ALL SELECT 's2v', user_id, item_id, NULL, sku_id, ts FROM s2v
        ORDER BY ts, channel, user_id, item_id
        """,
            {"items": items_file},
        )
        .df()
        .rename(columns={"ts": "event_timestamp"})
        .assign(split=lambda d: _split_of(d.event_timestamp, split))
    )


def _split_of(ts: pd.Series, split: DaySplit) -> np.ndarray:
    day = pd.to_datetime(ts, utc=True).dt.strftime("%Y-%m-%d")
    return np.select([day.isin(split.test), day.isin(split.valid)], ["test", "valid"], "train")


@dataclass(frozen=True)
class NegativeSampler:
    """Global negatives at `ratio` per positive, among items published before the positive.

    `popularity_alpha` 0 samples uniformly; > 0 samples by impressions^alpha (the usual
    popularity correction, so that negatives look like what users were actually shown).
    No positive of the same query (user for u2v, seed for v2v/s2v) is drawn as its negative.
    """

    ratio: int = 4
    popularity_alpha: float = 0.0
    max_rounds: int = 20

    def sample(
        self,
        positives: pd.DataFrame,
        item_ids: np.ndarray,
        publish_ts: np.ndarray,
        popularity: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        if self.ratio < 1:
            raise UserError(f"negative ratio must be >= 1, got {self.ratio}")
        order = np.argsort(publish_ts, kind="stable")
        items_sorted, published_sorted = item_ids[order], publish_ts[order]
        weights = np.power(popularity[order].astype(np.float64) + 1.0, self.popularity_alpha)
        cdf = np.cumsum(weights)
        pos = positives.loc[positives.index.repeat(self.ratio)].reset_index(drop=True)
        ts = (
            pd.to_datetime(pos.event_timestamp, utc=True)
            .dt.as_unit("us")
            .astype("int64")
            .to_numpy()
        )
        n_available = np.searchsorted(published_sorted, ts, side="right")  # items published by then
        if (n_available == 0).any():
            raise ValueError(
                "a positive precedes every item's publish time; cannot sample negatives"
            )
        query_key = _query_key(pos)
        positive_pairs = set(zip(_query_key(positives), positives.item_id.to_numpy(), strict=True))
        draw = np.zeros(len(pos), dtype=np.int64)
        todo = np.arange(len(pos))
        for _ in range(self.max_rounds):
            limit = cdf[n_available[todo] - 1]
            picks = np.searchsorted(cdf, rng.random(len(todo)) * limit, side="right")
            draw[todo] = items_sorted[np.minimum(picks, n_available[todo] - 1)]
            clash = np.array(
                [
                    (q, d) in positive_pairs
                    for q, d in zip(query_key[todo], draw[todo], strict=True)
                ],
                dtype=bool,
            )
            todo = todo[clash]
            if len(todo) == 0:
                break
        keep = np.ones(len(pos), dtype=bool)
        keep[todo] = False  # could not find a non-positive in max_rounds: drop rather than leak
        negatives = pos.assign(item_id=draw)[keep]
        return negatives


def _query_key(frame: pd.DataFrame) -> np.ndarray:
    """The query identity per row: user for u2v, seed item for v2v, SKU for s2v."""
    key = np.where(
        frame.channel == "u2v",
        "u" + frame.user_id.astype(str),
        np.where(
            frame.channel == "v2v",
            "v" + frame.seed_item_id.astype(str),
            "s" + frame.sku_id.astype(str),
        ),
    )
    return key.astype(object)
