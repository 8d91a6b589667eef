"""Events as every batch stage reads them: the raw log plus the served-event log.

Two places hold events, with one row layout (`RAW_EVENTS`, docs/data-contract.md):

- `data/raw/events/day=YYYY-MM-DD/events.parquet`: what `mmrec generate` or `mmrec data
  import` wrote (an import replaces `data/raw/` whole, staged then swapped);
- `data/event_log/day=YYYY-MM-DD/<segment>.parquet`: what `POST /events` accepted, appended
  one segment per request and day (`ingest/event_log.py` writes it; `LOG_SCHEMA` is the raw
  row plus `event_id` and `logged_at`). It lives outside `data/raw/`, so an import keeps it.

`events_view` gives a DuckDB connection both as one relation. The served log is deduplicated
there by `event_id` (the first logged row wins): the service already drops a retried id at
append time, and this read catches what that cannot (a crash between writing a segment and
recording its ids, ids older than the service's dedupe window). The log's days extend the
data's days (`mmrec.world_manifest.world_days`), so features, materialize and training-set
splits cover them.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from mmrec.settings import Settings

if TYPE_CHECKING:  # every stage reads the days (world_manifest); only pipelines need DuckDB
    import duckdb

# One raw event row: what the generator and the importer write and every stage reads.
RAW_EVENTS = pa.schema(
    [
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),  # null for sku_* events
        ("sku_id", pa.int64()),  # null when none
        ("event_type", pa.string()),
        ("source", pa.string()),
        ("position", pa.string()),
        ("material", pa.string()),  # the item's; null for sku_* events
        ("session_id", pa.int64()),
        ("watch_seconds", pa.float64()),
        ("event_timestamp", pa.timestamp("ns", tz="UTC")),
    ]
)
# A served event: the raw row, its id (client-given or assigned) and when the service wrote it
# (wall clock; orders repeats of one id).
LOG_SCHEMA = pa.schema(
    [*RAW_EVENTS, ("event_id", pa.string()), ("logged_at", pa.timestamp("us", tz="UTC"))]
)
SEGMENT_SUFFIX = ".parquet"
DAY_PREFIX = "day="


def log_dir(settings: Settings) -> Path:
    """The served-event log's root folder."""
    return settings.data_dir / "event_log"


def day_dir(settings: Settings, day: date) -> Path:
    return log_dir(settings) / f"{DAY_PREFIX}{day:%Y-%m-%d}"


def segments(settings: Settings) -> list[Path]:
    """Every complete segment of the log, in path order (a segment is renamed into place only
    once written and synced, so a half-written one is never listed)."""
    root = log_dir(settings)
    return sorted(root.glob(f"{DAY_PREFIX}*/*{SEGMENT_SUFFIX}")) if root.is_dir() else []


def log_days(settings: Settings) -> list[str]:
    """ISO days that hold served events."""
    return sorted({path.parent.name.removeprefix(DAY_PREFIX) for path in segments(settings)})


def fingerprint(settings: Settings) -> str:
    """A digest of which segments the log holds (they never change once written)."""
    root = log_dir(settings)
    names = "\n".join(str(path.relative_to(root)) for path in segments(settings))
    return hashlib.sha256(names.encode()).hexdigest()


def raw_event_files(settings: Settings, first: datetime, end: datetime) -> list[str]:
    """Raw event files of the days overlapping [first, end)."""
    files = []
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        path = settings.events_file(day)
        if path.exists():
            files.append(str(path))
        day += timedelta(days=1)
    return files


SERVED_TABLE = "served_events"


def load_served(con: duckdb.DuckDBPyConnection, settings: Settings) -> str:
    """Temp table SERVED_TABLE on `con`: the log's events as raw rows, one per event_id (the
    first logged). Read once per connection; returns its name."""
    columns = ", ".join(RAW_EVENTS.names)
    files = [str(path) for path in segments(settings)]
    if files:
        query = (
            f"SELECT {columns} FROM read_parquet($files, filename = true) "
            "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY logged_at, filename) = 1"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {SERVED_TABLE} AS {query}", {"files": files})
    else:
        con.register("_no_served_events", RAW_EVENTS.empty_table())
        con.execute(f"CREATE OR REPLACE TEMP TABLE {SERVED_TABLE} AS FROM _no_served_events")
    return SERVED_TABLE


def events_view(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    raw_files: list[str] | None = None,
    name: str = "events",
) -> str:
    """Temp view `name` on `con`: the raw events of `raw_files` (every raw file when None) and
    every served event (load_served must have run on `con`), as RAW_EVENTS rows; returns
    `name`. Callers filter by time as before: the served part is small and read once."""
    if raw_files is None:
        raw_files = sorted(str(p) for p in (settings.raw_dir / "events").glob("*/*.parquet"))
    columns = ", ".join(RAW_EVENTS.names)
    served = f"SELECT {columns} FROM {SERVED_TABLE}"
    if raw_files:
        listed = ", ".join("'" + path.replace("'", "''") + "'" for path in raw_files)
        served = f"SELECT {columns} FROM read_parquet([{listed}]) UNION ALL {served}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {served}")
    return name
