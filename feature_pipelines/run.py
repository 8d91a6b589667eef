"""`mmrec features build`: run every pipeline over the data's days, one query per source.

Each pipeline computes the snapshots of every chosen day in one pass over the events (so a
21-year log of 3,840 sparse days costs what its events cost, not a query per day), and the
rows go to monthly partitions (`layout.partition_path`). A full build swaps each source's
folder in whole; a build of some days rewrites their months' files (each atomically), with
the same content when nothing changed. Events are the raw log's and those the service
accepted (`POST /events`, mmrec/event_log.py): the served events' days are data days too.

`data/offline/build.json` records what a build read (the raw manifest's digest and each
served-log day's segments), so `fold_event_log` (run by `mmrec features materialize`) can
rebuild exactly the months that events posted since then change, before anything is loaded
into the online store: materialize never sets a pushed sequence back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import date, timedelta

import duckdb
import pandas as pd
import pyarrow as pa

from feature_pipelines import layout
from feature_pipelines.catalog_attributes import build_item_attributes, build_sku_attributes
from feature_pipelines.cross_domain import build_cross_domain
from feature_pipelines.item_stats import build_item_stats
from feature_pipelines.user_sequences import build_user_sequences
from mmrec.errors import UserError
from mmrec.event_log import DAY_PREFIX, events_view, load_served, segments
from mmrec.io import (
    partition_name,
    partition_names,
    progress,
    read_json,
    write_json,
    write_partitions,
)
from mmrec.settings import Settings
from mmrec.world_manifest import data_profile, read_world_manifest, world_days

log = logging.getLogger(__name__)
SKU_CATALOG_AGE = timedelta(days=365)  # SKU attributes are valid from a year before day 0
BUILD_RECORD = "build.json"
DAYS_TABLE = "snapshot_days"
EVENTS_TABLE = "build_events"
# what the pipelines read of an event
EVENT_COLUMNS = (
    "user_id", "item_id", "sku_id", "event_type", "position", "watch_seconds", "event_timestamp"
)  # fmt: skip


def build_features(
    settings: Settings, days: list[str] | None = None, *, since: str | None = None
) -> dict[str, int]:
    """Build the offline sources; returns rows written per source.

    `days` (ISO dates): rebuild the months holding them; `since`: rebuild every month from
    that day's on; neither: everything (stale partitions removed).
    """
    all_days = world_days(settings)
    chosen = days if days is not None else ([] if since is None else [since])
    unknown = sorted(set(chosen) - set(all_days))
    if unknown:
        raise UserError(
            f"days {unknown} are not in the data ({all_days[0]} .. {all_days[-1]}): "
            "give days that hold events (`mmrec sql` lists them)"
        )
    whole = days is None and since is None
    if since is not None:
        months = {_month(d) for d in all_days if d >= since}
    else:
        months = {_month(d) for d in (all_days if whole else chosen)}
    snapshot_days = [d for d in all_days if _month(d) in months]
    categories = data_profile(settings).categories
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    load_served(con, settings)  # POST /events' log, read beside the raw events
    # read once: every pipeline scans the events, and a long log is thousands of day files
    con.execute(
        f"CREATE TEMP TABLE {EVENTS_TABLE} AS SELECT {', '.join(EVENT_COLUMNS)} "
        f"FROM {events_view(con, settings)}"
    )
    events = EVENTS_TABLE
    ends = pd.to_datetime(pd.Series(snapshot_days), utc=True) + pd.Timedelta(days=1)
    con.register("_days", pd.DataFrame({"day": pd.to_datetime(snapshot_days).date, "end_ts": ends}))
    con.execute(f"CREATE TEMP TABLE {DAYS_TABLE} AS SELECT day::DATE AS day, end_ts FROM _days")
    items, skus = str(settings.raw_dir / "items.parquet"), str(settings.raw_dir / "skus.parquet")
    first_day = pd.Timestamp(all_days[0], tz="UTC").to_pydatetime()
    sku_time = first_day - SKU_CATALOG_AGE
    # source -> (its rows, with the column its partitions follow; whether it is rebuilt whole:
    # the catalog's attributes depend on no day, the snapshots only on their own days')
    builds: dict[str, tuple[Callable[[], pa.Table | pd.DataFrame], str, bool]] = {
        layout.SKU_ATTRIBUTES: (
            lambda: build_sku_attributes(con, skus, sku_time),
            "event_timestamp",
            True,
        ),
        layout.ITEM_ATTRIBUTES: (
            lambda: build_item_attributes(con, items, None, _day_end(all_days[-1]), categories),
            "event_timestamp",
            True,
        ),
        layout.USER_BEHAVIOR_SEQ: (
            lambda: build_user_sequences(con, events, DAYS_TABLE),
            "day",
            whole,
        ),
        layout.USER_CROSS_DOMAIN: (
            lambda: build_cross_domain(con, events, skus, DAYS_TABLE, categories),
            "day",
            whole,
        ),
        layout.ITEM_STATS: (lambda: build_item_stats(con, events, items, DAYS_TABLE), "day", whole),
    }
    written = {}
    for source, (build, by, replace_all) in progress(builds.items(), "feature pipelines"):
        rows = build()
        partitions = partition_names(
            rows[by].to_pandas() if isinstance(rows, pa.Table) else rows[by]
        )
        table = _as_source(source, rows)
        # every rebuilt month gets its file, empty or not, and a catalog source without rows
        # (the SKUs of data without any) one empty file: Feast needs a file for the schema
        wanted = months if by == "day" else set(partitions) or {partition_name(sku_time)}
        write_partitions(
            table, partitions, settings.offline_dir / source, whole=replace_all, also=wanted
        )
        written[source] = table.num_rows
    con.close()
    if days is None:  # every change up to now is in: what a fold compares against
        write_json(build_inputs(settings), settings.offline_dir / BUILD_RECORD)
    log.info("offline sources written: %s", written)
    return written


def fold_event_log(settings: Settings) -> list[str]:
    """Bring the offline sources up to date with the data: rebuild every month from the first
    day whose served events the last full build did not read (everything when the raw data
    changed or no build is recorded); returns the months rebuilt ([] when nothing changed)."""
    record_path = settings.offline_dir / BUILD_RECORD
    before = read_json(record_path) if record_path.exists() else {}
    now = build_inputs(settings)
    if before == now:
        return []
    if before.get("raw") != now["raw"]:
        build_features(settings)
        return sorted({_month(d) for d in world_days(settings)})
    changed = [d for d, f in now["served"].items() if before["served"].get(d) != f]
    if not changed:  # a day's segments went (a hand-cleaned log): rebuild all
        build_features(settings)
        return sorted({_month(d) for d in world_days(settings)})
    since = min(changed)
    build_features(settings, since=since)
    return sorted({_month(d) for d in world_days(settings) if d >= since})


def build_inputs(settings: Settings) -> dict[str, object]:
    """What a build reads: the raw manifest's digest and, per served-log day, its segments'."""
    read_world_manifest(settings)  # no data: a UserError naming the command that makes it
    raw = hashlib.sha256((settings.raw_dir / "manifest.json").read_bytes()).hexdigest()
    by_day: dict[str, list[str]] = {}
    for path in segments(settings):
        by_day.setdefault(path.parent.name.removeprefix(DAY_PREFIX), []).append(path.name)
    served = {
        day: hashlib.sha256("\n".join(names).encode()).hexdigest()
        for day, names in sorted(by_day.items())
    }
    return {"raw": raw, "served": served}


def _as_source(source: str, rows: pa.Table | pd.DataFrame) -> pa.Table:
    """`rows` in the source's schema (layout.SCHEMAS): its columns, in order, typed. One
    timestamp type everywhere (microseconds, UTC): mixed units or zones across partitions
    break the union DuckDB reads."""
    schema = layout.SCHEMAS[source]
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    return rows.select(schema.names).cast(schema)


def _month(day: str) -> str:
    return partition_name(date.fromisoformat(day))


def _day_end(day: str):
    return pd.Timestamp(day, tz="UTC").to_pydatetime() + timedelta(days=1)
