"""Where each offline source lives: `<offline_dir>/<source>/month=YYYY-MM/part.parquet`.

One partition a calendar month (`mmrec.io.partition_name`): re-running a day rewrites its
month's file (atomically, with the same content), and a log with years of sparse days costs a
file per month, not per day. Feast reads each source through the glob `source_glob`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from mmrec.io import PARTITION_FILE, partition_name
from mmrec.settings import Settings
from mmrec.vocab import WORLD_EPOCH

# The offline sources the pipelines write, by name.
USER_BEHAVIOR_SEQ = "user_behavior_seq"
USER_CROSS_DOMAIN = "user_cross_domain"
ITEM_STATS = "item_stats"
ITEM_ATTRIBUTES = "item_attributes"
SKU_ATTRIBUTES = "sku_attributes"
SOURCES = (USER_BEHAVIOR_SEQ, USER_CROSS_DOMAIN, ITEM_STATS, ITEM_ATTRIBUTES, SKU_ATTRIBUTES)

# Each source's Parquet schema. Written explicitly, so a partition without rows or with an
# all-null column (data without SKUs has no cross-domain rows) still carries the types Feast's
# offline store joins on: one timestamp type everywhere, microseconds UTC.
_TS = pa.timestamp("us", tz="UTC")
_IDS = pa.list_(pa.int64())
SCHEMAS: dict[str, pa.Schema] = {
    USER_BEHAVIOR_SEQ: pa.schema(
        [("user_id", pa.int64()), ("event_timestamp", _TS)]
        + [
            (f"{kind}_seq", _IDS)
            for kind in (
                "item_click",
                "item_watch",
                "item_engage",
                "sku_click",
                "sku_cart",
                "sku_purchase",
            )
        ]
    ),
    USER_CROSS_DOMAIN: pa.schema(
        [
            ("user_id", pa.int64()),
            ("event_timestamp", _TS),
            ("cdr_category_affinity", pa.list_(pa.float32())),
            ("cdr_top_category", pa.string()),
            ("cdr_event_count_30d", pa.int64()),
        ]
    ),
    ITEM_STATS: pa.schema(
        [("item_id", pa.int64()), ("event_timestamp", _TS)]
        + [
            (f"{what}_{window}", pa.int64())
            for window in ("1d", "7d")
            for what in ("impressions", "clicks")
        ]
        + [
            (name, pa.float32())
            for name in ("ctr_7d", "ctr_home_7d", "ctr_inner_7d", "ctr_detail_7d", "watch_ratio_7d")
        ]
    ),
    ITEM_ATTRIBUTES: pa.schema(
        [
            ("item_id", pa.int64()),
            ("event_timestamp", _TS),
            ("material", pa.string()),
            ("category", pa.string()),
            ("category_index", pa.int64()),
            ("sku_ids", _IDS),
            ("publish_ts_s", pa.int64()),
            ("duration_s", pa.float32()),
        ]
    ),
    SKU_ATTRIBUTES: pa.schema(
        [
            ("sku_id", pa.int64()),
            ("event_timestamp", _TS),
            ("sku_category", pa.string()),
            ("sku_price", pa.float32()),
        ]
    ),
}


def day_start(day: int) -> datetime:
    """Start (UTC) of world day `day`; day 0 is the world epoch."""
    return WORLD_EPOCH + timedelta(days=day)


def partition_path(settings: Settings, source: str, when: datetime) -> Path:
    """The file holding `source`'s rows of `when`'s month."""
    return settings.offline_dir / source / partition_name(when) / PARTITION_FILE


def source_glob(offline_dir: Path, source: str) -> str:
    """The absolute glob over every partition of one source."""
    return str(offline_dir / source / "*" / "*.parquet")
