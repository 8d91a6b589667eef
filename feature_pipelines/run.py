"""`mmrec features build`: run every pipeline for the chosen days (all by default).

Each (source, day) partition is written atomically, so re-running a day replaces it with the
same content and a new day only adds partitions.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import duckdb
import pandas as pd

from feature_pipelines import layout
from feature_pipelines.catalog_attributes import build_item_attributes, build_sku_attributes
from feature_pipelines.cross_domain import LOOKBACK as CDR_LOOKBACK
from feature_pipelines.cross_domain import build_cross_domain
from feature_pipelines.item_stats import WINDOW as STATS_WINDOW
from feature_pipelines.item_stats import build_item_stats
from feature_pipelines.user_sequences import LOOKBACK as SEQ_LOOKBACK
from feature_pipelines.user_sequences import build_user_sequences
from mmrec.io import progress, write_parquet
from mmrec.settings import Settings
from mmrec.world_manifest import world_days

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
        raise ValueError(f"days {unknown} are not in the world ({all_days[0]} .. {all_days[-1]})")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    items, skus = str(settings.raw_dir / "items.parquet"), str(settings.raw_dir / "skus.parquet")
    first_day = layout.day_start(0)
    written = dict.fromkeys(layout.SOURCES, 0)

    def emit(source: str, frame: pd.DataFrame, when) -> None:
        # One timestamp type in every source: microseconds, UTC (Feast reads naive as UTC,
        # but mixed units or zones across partitions break the union DuckDB reads).
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
            "datetime64[us, UTC]"
        )
        write_parquet(frame, layout.partition_path(settings, source, when))
        written[source] += len(frame)

    sku_time = first_day - SKU_CATALOG_AGE
    emit(layout.SKU_ATTRIBUTES, build_sku_attributes(con, skus, sku_time), sku_time)
    if days is None or all_days[0] in chosen:  # the backfilled catalog, day by publish day
        backfill_start = con.execute(
            "SELECT min(publish_ts) FROM read_parquet($f)", {"f": items}
        ).fetchone()[0]
        day = backfill_start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < first_day:
            emit(
                layout.ITEM_ATTRIBUTES,
                build_item_attributes(con, items, day, day + timedelta(days=1)),
                day,
            )
            day += timedelta(days=1)

    for label in progress(chosen, "feature pipelines"):
        start = pd.Timestamp(label, tz="UTC").to_pydatetime()
        end = start + timedelta(days=1)
        lookback = max(SEQ_LOOKBACK, CDR_LOOKBACK, STATS_WINDOW)
        files = layout.event_files(settings, end - lookback, end)
        emit(layout.ITEM_ATTRIBUTES, build_item_attributes(con, items, start, end), start)
        emit(layout.USER_BEHAVIOR_SEQ, build_user_sequences(con, files, start, end), start)
        emit(layout.USER_CROSS_DOMAIN, build_cross_domain(con, files, skus, end), start)
        emit(layout.ITEM_STATS, build_item_stats(con, files, items, end), start)
    log.info("offline sources written: %s", written)
    return written
