"""`mmrec data import` throughput: events/s, seconds and peak RSS of importing a generated
world's events and catalog through the data contract (docs/data-contract.md).

Exports the events, items (with covers and frames as bytes in Parquet; no media in CSV), SKUs
and users of a workspace's generated world as contract files, imports them into a temporary
workspace, and reports. The RSS is this process's (the import runs in it, DuckDB included),
sampled every 50 ms.

    python -m bench.import_bench [--workspace DIR] [--format parquet|csv]

Writes bench/results/import.json. Needs a generated world (`mmrec generate --scale bench` for
the >= 10M-event figure).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psutil

from ingest.importer import import_data
from mmrec.settings import REPO_ROOT, Settings
from mmrec.world_manifest import read_world_manifest

RESULTS = REPO_ROOT / "bench" / "results"
FORMATS = ("parquet", "csv")
# The generated world may lie ahead of the wall clock; no event is "in the future" here.
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


def export_world(world: Settings, folder: Path, fmt: str) -> dict[str, Path]:
    """Write the world's raw tables as contract files in `folder`; returns the paths by
    table. Parquet keeps native times, lists and media bytes; CSV gets ISO times and
    `|`-joined lists, and no media."""
    raw = world.raw_dir
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    csv = fmt == "csv"

    def time(column: str) -> str:
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ')" if csv else column

    def listed(column: str) -> str:
        return f"array_to_string({column}, '|')" if csv else column

    media = "" if csv else ", m.cover_png AS image, m.frame_pngs AS frames"
    media_join = "" if csv else f" LEFT JOIN '{raw}/item_media.parquet' m USING (item_id)"
    queries = {
        "events": (
            "SELECT user_id, item_id, sku_id, event_type, source, position, session_id, "
            f"watch_seconds, {time('event_timestamp')} AS event_ts "
            f"FROM '{raw}/events/*/*.parquet'"
        ),
        "items": (
            f"SELECT i.item_id, i.title, i.material, i.category, {listed('i.sku_ids')} AS "
            f"sku_ids, {listed('l.category_tags')} AS tags, i.duration_s, "
            f"{time('i.publish_ts')} AS publish_ts{media} FROM '{raw}/items.parquet' i "
            f"LEFT JOIN '{raw}/item_labels.parquet' l USING (item_id){media_join}"
        ),
        "skus": f"SELECT * FROM '{raw}/skus.parquet'",
        "users": (
            f"SELECT user_id, region, {time('registered_at')} AS registered_at "
            f"FROM '{raw}/users.parquet'"
        ),
    }
    options = "(HEADER)" if csv else "(FORMAT parquet)"
    paths = {}
    for table, query in queries.items():
        paths[table] = folder / f"{table}.{fmt}"
        con.execute(f"COPY ({query}) TO '{paths[table]}' {options}")
    con.close()
    return paths


class PeakRss:
    """The process's peak resident memory, sampled in a thread while in the `with` block."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench(world: Settings, fmt: str, scratch: Path) -> dict[str, Any]:
    """Export `world` in `fmt`, import it into a workspace under `scratch`; the figures."""
    manifest = read_world_manifest(world)
    started = time.perf_counter()
    files = export_world(world, scratch / "contract", fmt)
    export_s = time.perf_counter() - started
    target = Settings(workspace=scratch / "workspace")
    with PeakRss() as rss:
        started = time.perf_counter()
        report = import_data(target, **files, now=FAR_FUTURE)
        seconds = time.perf_counter() - started
    return {
        "format": fmt,
        "world": {k: manifest.get(k) for k in ("scale", "seed", "n_events", "n_items")},
        "events_in": sum(n for name, n in report.rows_read.items() if name.startswith("events")),
        "events_written": report.events_written,
        "dropped": {reason: c.count for reason, c in report.dropped.items()},
        "days": report.days,
        "export_s": round(export_s, 2),
        "import_s": round(seconds, 2),
        "events_per_s": round(report.events_written / seconds),
        "peak_rss_mib": round(rss.peak / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--format", choices=FORMATS, default="parquet")
    args = parser.parse_args()
    world = Settings.from_env(args.workspace)
    with tempfile.TemporaryDirectory(prefix="mmrec-import-bench-") as scratch:
        result = bench(world, args.format, Path(scratch))
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
