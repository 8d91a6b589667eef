"""A log that spans years with empty stretches costs only its days with events.

The same events (MovieLens-100k's, through the adapter's contract files) are imported and
turned into offline features twice: as they are (213 days in 7 months), and with every day
moved `--gap-days` apart (by default 18 days: 213 days of events over 10.5 years, with
3,600+ empty days between them). If any stage cost something per calendar day, the spread
log would take ~18x longer; the report gives both times, the ratio and the partitions written.

    python -m bench.gaps_bench [--gap-days 18]

Writes bench/results/gaps.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from feature_pipelines.run import build_features
from ingest.importer import import_data
from ingest.movielens import write_movielens_contract
from mmrec.settings import REPO_ROOT, Settings
from mmrec.world_manifest import read_world_manifest

RESULTS = REPO_ROOT / "bench" / "results"
DAY_S = 86_400


def spread(events: Path, out: Path, gap_days: int) -> Path:
    """The events with the k-th day that has events moved to first day + k * gap_days (times
    of day kept)."""
    frame = pd.read_csv(events)
    day = frame.event_ts // DAY_S
    rank = day.rank(method="dense").astype("int64") - 1
    frame["event_ts"] = (day.min() + rank * gap_days) * DAY_S + frame.event_ts % DAY_S
    frame.to_csv(out, index=False)
    return out


def run_one(events: Path, items: Path, root: Path) -> dict[str, Any]:
    """Import + features build in a fresh workspace `root`; times and sizes."""
    settings = Settings(workspace=root)
    started = time.perf_counter()
    import_data(settings, events, items)
    imported = time.perf_counter()
    build_features(settings)
    built = time.perf_counter()
    manifest = read_world_manifest(settings)
    first, last = pd.Timestamp(manifest["start"]), pd.Timestamp(manifest["end"])
    return {
        "events": manifest["n_events"],
        "days_with_events": len(manifest["days"]),
        "calendar_days": int((last - first).days),
        "import_s": round(imported - started, 2),
        "features_s": round(built - imported, 2),
        "partitions_written": sum(1 for _ in settings.offline_dir.rglob("*.parquet")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap-days", type=int, default=18)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmrec-gaps-") as tmp:
        folder = Path(tmp)
        events, items = write_movielens_contract(folder / "contract")
        spread_events = spread(events, folder / "contract" / "events_spread.csv", args.gap_days)
        compact = run_one(events, items, folder / "compact")
        spread_out = run_one(spread_events, items, folder / "spread")
    total = {
        name: r["import_s"] + r["features_s"] for name, r in (("c", compact), ("s", spread_out))
    }
    report = {
        "gap_days": args.gap_days,
        "compact": compact,
        "spread": spread_out,
        "spread_over_compact_seconds": round(total["s"] / total["c"], 2),
        "calendar_days_ratio": round(spread_out["calendar_days"] / compact["calendar_days"], 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gaps.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
