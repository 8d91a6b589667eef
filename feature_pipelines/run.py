"""`mmrec features build`: run every pipeline for the chosen days (all by default).

Each (source, day) partition is written atomically, so re-running a day replaces it with the
same content and a new day only adds partitions. Events are the raw log's and those the service
accepted (`POST /events`, mmrec/event_log.py): the served events' days are days here too.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa

from feature_pipelines import layout
from feature_pipelines.catalog_attributes import build_item_attributes, build_sku_attributes
from feature_pipelines.cross_domain import LOOKBACK as CDR_LOOKBACK
from feature_pipelines.cross_domain import build_cross_domain
from feature_pipelines.item_stats import WINDOW as STATS_WINDOW
from feature_pipelines.item_stats import build_item_stats
from feature_pipelines.user_sequences import LOOKBACK as SEQ_LOOKBACK
from feature_pipelines.user_sequences import build_user_sequences
from mmrec.errors import UserError
from mmrec.event_log import events_view, load_served, raw_event_files
from mmrec.io import progress, write_parquet
from mmrec.settings import Settings
from mmrec.world_manifest import data_profile, world_days

log = logging.getLogger(__name__)
SKU_CATALOG_AGE = timedelta(days=365)  # SKU attributes are valid from a year before day 0


def build_features(settings: Settings, days: list[str] | None = None) -> dict[str, int]:
    """Build every offline source for `days` (ISO dates; all world days when None).

    Returns rows written per source.
    """
    all_days = world_days(settings)
    chosen = all_days if days is None else days
    unknown = sorted(set(chosen) - set(all_days))
    if unknown:
        raise UserError(f"days {unknown} are not in the world ({all_days[0]} .. {all_days[-1]})")
    categories = data_profile(settings).categories
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    load_served(con, settings)  # POST /events' log, read beside the raw events of each day
    items, skus = str(settings.raw_dir / "items.parquet"), str(settings.raw_dir / "skus.parquet")
    first_day = pd.Timestamp(all_days[0], tz="UTC").to_pydatetime()
    written = dict.fromkeys(layout.SOURCES, 0)

    def emit(source: str, frame: pd.DataFrame, when) -> None:
        # One timestamp type in every source: microseconds, UTC (Feast reads naive as UTC,
        # but mixed units or zones across partitions break the union DuckDB reads).
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
            "datetime64[us, UTC]"
        )
        schema = layout.SCHEMAS[source]
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        write_parquet(table, layout.partition_path(settings, source, when))
        written[source] += len(frame)

    sku_time = first_day - SKU_CATALOG_AGE
    emit(layout.SKU_ATTRIBUTES, build_sku_attributes(con, skus, sku_time), sku_time)
    # Items are stamped at their publish time, one partition per publish day. The catalog
    # published before the data's first day (the backfill) is read in one query, as are the
    # items published on days without events (a log with gaps: only days with events are
    # data days, so nothing costs per calendar day).
    if days is None or all_days[0] in chosen:
        backfill = build_item_attributes(con, items, None, first_day, categories)
        for day, frame in _by_publish_day(backfill):
            emit(layout.ITEM_ATTRIBUTES, frame, day)
    previous_day = dict(zip(all_days[1:], all_days, strict=False))  # day -> data day before
    for label in progress(chosen, "feature pipelines"):
        start = pd.Timestamp(label, tz="UTC").to_pydatetime()
        end = start + timedelta(days=1)
        lookback = max(SEQ_LOOKBACK, CDR_LOOKBACK, STATS_WINDOW)
        events = events_view(con, settings, raw_event_files(settings, end - lookback, end))
        since = (
            pd.Timestamp(previous_day[label], tz="UTC").to_pydatetime() + timedelta(days=1)
            if label in previous_day
            else first_day
        )
        published = build_item_attributes(con, items, since, end, categories)
        for day, frame in _by_publish_day(published):
            emit(layout.ITEM_ATTRIBUTES, frame, day)
        emit(layout.USER_BEHAVIOR_SEQ, build_user_sequences(con, events, start, end), start)
        emit(
            layout.USER_CROSS_DOMAIN, build_cross_domain(con, events, skus, end, categories), start
        )
        emit(layout.ITEM_STATS, build_item_stats(con, events, items, end), start)
    log.info("offline sources written: %s", written)
    return written


def _by_publish_day(frame: pd.DataFrame) -> list[tuple[datetime, pd.DataFrame]]:
    """`frame` split by the UTC day of its event_timestamp (the publish time)."""
    days = pd.to_datetime(frame.event_timestamp, utc=True).dt.floor("D")
    return [(day.to_pydatetime(), part) for day, part in frame.groupby(days, sort=True)]
