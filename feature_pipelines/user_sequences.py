"""User behaviour-sequence snapshots: the last N items / SKUs per behaviour type, as lists.

One snapshot per user active on a data day, stamped at the end of that day: each list holds
the user's SEQ_LENGTH newest events of its behaviour types before that moment, however old
(a shopper who returns after months keeps their history). Users not active keep their
previous snapshot (Feast's point-in-time join takes the latest).

The rule, in one place for the batch (SQL here) and for serving (`fold_sequences`, which
`POST /events` applies to the online row): newest first, ties in time broken by the smaller
id first, at most SEQ_LENGTH ids; every event of a listed type counts, repeats included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import duckdb
import pyarrow as pa

SEQ_LENGTH = 50
# sequence column -> (event types, id column)
SEQUENCES: dict[str, tuple[tuple[str, ...], str]] = {
    "item_click_seq": (("click",), "item_id"),
    "item_watch_seq": (("watch",), "item_id"),
    "item_engage_seq": (("share", "comment", "favorite", "cart"), "item_id"),
    "sku_click_seq": (("sku_click",), "sku_id"),
    "sku_cart_seq": (("sku_cart",), "sku_id"),
    "sku_purchase_seq": (("sku_purchase",), "sku_id"),
}
# event type -> the sequences it extends
SEQUENCES_OF: dict[str, list[str]] = defaultdict(list)
for _name, (_types, _) in SEQUENCES.items():
    for _type in _types:
        SEQUENCES_OF[_type].append(_name)


def fold_sequences(
    current: Mapping[str, Iterable[int] | None], events: Iterable[tuple[str, int, float]]
) -> dict[str, list[int]]:
    """`current` sequences (newest first) with `events` folded in, by the module's rule.

    `events` are (event_type, id, time) in any order; every one is newer than `current`
    (the online row holds what came before). Types that extend no sequence are ignored.
    """
    out = {name: list(current.get(name) or []) for name in SEQUENCES}
    # oldest first; at one time the larger id first, so the smaller one ends up nearer the head
    for event_type, target, _ in sorted(events, key=lambda e: (e[2], -e[1])):
        for name in SEQUENCES_OF[event_type]:
            out[name] = [int(target), *out[name]][:SEQ_LENGTH]
    return out


def build_user_sequences(con: duckdb.DuckDBPyConnection, events: str, days: str) -> pa.Table:
    """Snapshots for the users active on each day of table `days` (day DATE, end_ts
    TIMESTAMPTZ: the snapshot time), from relation `events` (mmrec.event_log.events_view).

    One pass over every day: each user's events of a sequence are numbered oldest first (k);
    a snapshot at day d holds the events numbered R-49..R, R being the last number on or
    before d (an ASOF join), so the cost follows the events, not the calendar.
    """
    branches = "\nUNION ALL\n".join(
        f"SELECT user_id, '{name}' AS seq, {id_col} AS entity_id, event_timestamp "
        f"FROM {events} WHERE event_type IN ({', '.join(repr(t) for t in types)})"
        for name, (types, id_col) in SEQUENCES.items()
    )
    lists = ",\n".join(
        f"coalesce(list(entity_id ORDER BY k DESC) FILTER (WHERE seq = '{name}'), []::BIGINT[]) "
        f"AS {name}"
        for name in SEQUENCES
    )
    sql = f"""
        WITH last_end AS (SELECT max(end_ts) AS end_ts FROM {days}),
        numbered AS (
            SELECT user_id, seq, entity_id, CAST(event_timestamp AS DATE) AS day,
              row_number() OVER (
                PARTITION BY user_id, seq ORDER BY event_timestamp, entity_id DESC
              ) AS k
            FROM ({branches}) WHERE event_timestamp < (SELECT end_ts FROM last_end)
        ),
        last_k AS (SELECT user_id, seq, day, max(k) AS k FROM numbered GROUP BY ALL),
        active AS (
            SELECT DISTINCT e.user_id, d.day, d.end_ts
            FROM {events} e JOIN {days} d ON CAST(e.event_timestamp AS DATE) = d.day
        ),
        wanted AS (
            SELECT a.user_id, a.day, a.end_ts, s.seq
            FROM active a CROSS JOIN (SELECT DISTINCT seq FROM numbered) s
        ),
        upto AS (
            SELECT w.user_id, w.day, w.end_ts, w.seq, l.k AS r
            FROM wanted w ASOF JOIN last_k l
              ON w.user_id = l.user_id AND w.seq = l.seq AND w.day >= l.day
        ),
        members AS (
            SELECT u.user_id, u.day, u.end_ts, u.seq, n.entity_id, n.k
            FROM upto u JOIN numbered n
              ON n.user_id = u.user_id AND n.seq = u.seq
             AND n.k BETWEEN u.r - {SEQ_LENGTH - 1} AND u.r
        )
        SELECT a.day, a.user_id, a.end_ts AS event_timestamp, {lists}
        FROM active a LEFT JOIN members m USING (user_id, day)
        GROUP BY a.day, a.user_id, a.end_ts
        ORDER BY a.day, a.user_id
    """
    return con.sql(sql).to_arrow_table()
