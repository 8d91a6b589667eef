"""Where each offline source lives: `<offline_dir>/<source>/day=YYYY-MM-DD/part.parquet`.

One partition a day makes re-running a day idempotent (its file is replaced atomically) and a
new day an append. Feast reads each source through the glob `source_glob`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from mmrec.settings import Settings
from mmrec.vocab import WORLD_EPOCH

# The offline sources the pipelines write, by name.
USER_BEHAVIOR_SEQ = "user_behavior_seq"
USER_CROSS_DOMAIN = "user_cross_domain"
ITEM_STATS = "item_stats"
ITEM_ATTRIBUTES = "item_attributes"
SKU_ATTRIBUTES = "sku_attributes"
SOURCES = (USER_BEHAVIOR_SEQ, USER_CROSS_DOMAIN, ITEM_STATS, ITEM_ATTRIBUTES, SKU_ATTRIBUTES)


def day_start(day: int) -> datetime:
    """Start (UTC) of world day `day`; day 0 is the world epoch."""
    return WORLD_EPOCH + timedelta(days=day)


def partition_path(settings: Settings, source: str, when: datetime) -> Path:
    return settings.offline_dir / source / f"day={when:%Y-%m-%d}" / "part.parquet"


def source_glob(offline_dir: Path, source: str) -> str:
    """The absolute glob over every partition of one source."""
    return str(offline_dir / source / "*" / "*.parquet")


def event_files(settings: Settings, first: datetime, end: datetime) -> list[str]:
    """Event log files of the days overlapping [first, end)."""
    files = []
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        path = settings.events_file(day)
        if path.exists():
            files.append(str(path))
        day += timedelta(days=1)
    return files
