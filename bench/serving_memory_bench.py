"""Start-up and memory of the served bento at two catalog sizes, and the growth per 100k items.

For each workspace (trained: `mmrec run`), the bento is built from its model store and served
with `--workers` processes over its milvus-lite index (`LiteServer`); the time to /readyz is
start-up; after `--requests` requests each worker's RSS, PSS and USS are read (psutil's
memory_full_info: PSS counts a page shared by n processes as 1/n in each, USS is what one
worker alone holds). The growth per 100k items is the difference between the two sizes over
their difference in catalog items, scaled to 100k: what a 1M-item catalog adds is ~9 times it.

    python -m bench.serving_memory_bench --workspaces bench/workspace-small,bench/workspace-serving \
        [--repeats 3] [--out FILE]

Memory varies from one start to the next (now and then one worker holds ~360 MB more than
the other), so `--repeats` serves each size that many times and reports, per size, the run
with the median PSS (every run is under `runs`). Writes bench/results/serving-memory.json
unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.serving_bench import RESULTS, run_level, worker_memory_mb
from index.server import LiteServer
from mmrec.settings import Settings
from serving.bento_process import BentoServer, build_bento, workspace_env
from serving.snapshot_files import snapshots_root


def measure(workspace: Path, workers: int, requests: int, repeats: int) -> list[dict]:
    """Start-up to /readyz and per-worker memory of the bento serving `workspace`, for each of
    `repeats` starts of one bento build."""
    settings = Settings.from_env(workspace)
    env = {**workspace_env(settings), "MMREC_SERVING_WORKERS": str(workers)}
    users = pd.read_parquet(settings.raw_dir / "users.parquet", columns=["user_id"]).user_id
    users = users.sample(min(len(users), 500), random_state=0).tolist()
    catalog = len(pd.read_parquet(settings.raw_dir / "items.parquet", columns=["item_id"]))
    tag = build_bento(env)
    rows = []
    with LiteServer(settings.index_uri) as lite:
        log = RESULTS / f"serving-memory-{workspace.name}.log"
        if not any(snapshots_root(settings).glob("*/manifest.json")):
            with BentoServer(tag, {**env, **lite.environment()}, log):
                pass  # the first start writes the item snapshot's files; time the next ones
        for _ in range(repeats):
            started = time.monotonic()
            with BentoServer(tag, {**env, **lite.environment()}, log) as server:
                startup_s = round(time.monotonic() - started, 1)
                level = asyncio.run(run_level(server.url, users, 4, requests, 120, 20))
                memory = worker_memory_mb(server)
            row = {
                "workspace": str(workspace), "catalog_items": catalog, "workers": workers,
                "startup_s": startup_s, **memory, "requests": level["requests"],
                "status_counts": level["status_counts"],
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }  # fmt: skip
            print(row)
            rows.append(row)
    return rows


def median_run(runs: list[dict]) -> dict:
    """The run whose mean PSS a worker is the median of `runs` (the lower one of an even count)."""
    ranked = sorted(runs, key=lambda run: float(np.mean(run["pss_mb_per_worker"])))
    return ranked[(len(ranked) - 1) // 2]


def growth_per_100k(small: dict, large: dict, key: str) -> float | None:
    """(large - small) of the per-worker median of `key` (or of `key` itself, a number), per
    100k catalog items; None when both have the same catalog."""
    items = large["catalog_items"] - small["catalog_items"]
    if items == 0:
        return None
    delta = float(np.median(large[key])) - float(np.median(small[key]))
    return round(delta / items * 100_000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", required=True, help="two trained workspaces, small first")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100, help="before memory is read")
    parser.add_argument("--repeats", type=int, default=1, help="starts of each size")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving-memory.json")
    args = parser.parse_args()
    workspaces = [Path(w).resolve() for w in args.workspaces.split(",")]
    if len(workspaces) != 2:
        raise SystemExit("--workspaces takes two workspaces: the small one, then the large one")
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = [measure(w, args.workers, args.requests, args.repeats) for w in workspaces]
    sizes = [median_run(size_runs) for size_runs in runs]
    small, large = sizes
    result = {
        "sizes": sizes,
        "runs": runs,
        "growth_per_100k_items": {
            key: growth_per_100k(small, large, key)
            for key in ("rss_mb_per_worker", "pss_mb_per_worker", "uss_mb_per_worker", "startup_s")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["growth_per_100k_items"]), f"wrote {args.out}")


if __name__ == "__main__":
    main()
