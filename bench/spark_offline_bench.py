"""Spark offline store vs DuckDB (issue #19): the point-in-time join of the `ranking` feature
service for N entity rows through each offline-store profile, on the same world and rows.

Each profile runs in its own child process (`mmrec.feast_store.historical_features` chunk by
chunk, as `mmrec train build-sets` does, via bench.feature_store_bench.run_child); the parent
samples the RSS of the child's whole process tree every 0.2 s, so Spark's JVM (a child of the
Python process) counts. Spark runs as feature_store.spark.yaml says (local[2]), its driver
sized by --spark-driver-memory.
On one 2-core machine Spark is expected to be slower; the point is that the same definitions
and code run on a cluster by changing spark.master.

    python -m bench.spark_offline_bench [--rows 200000] [--chunk-rows 200000] [--scale bench]
                                        [--workspace DIR]

The world and entity rows are bench.feature_store_bench's (same workspace, same sample).
Writes bench/results/spark_offline-<rows>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import psutil

from bench.feature_store_bench import _ensure_world, _entity_rows, child_command, run_child
from mmrec.settings import OFFLINE_STORES, REPO_ROOT, Settings, SettingsError

RESULTS = REPO_ROOT / "bench" / "results"
SAMPLE_S = 0.2  # RSS sampling period of the child's process tree


def _tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (0 for any that just exited)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def _child(store: str, settings: Settings, rows_path: Path, chunk_rows: int) -> dict:
    """One profile's join in a fresh process: its JSON line, wall seconds and tree peak RSS."""
    cmd = [
        *child_command("bench.spark_offline_bench", store, settings, rows_path, chunk_rows),
        *("--spark-driver-memory", settings.spark_driver_memory),
    ]
    start = time.perf_counter()
    # stderr passes through: the child's progress bar shows how far the join is
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_S)
    out = proc.communicate()[0]
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{store} child failed with exit {proc.returncode} (stderr above)")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "process_wall_seconds": wall, "tree_peak_rss_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="entity rows for the PIT join")
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="entity rows per call")
    parser.add_argument("--scale", default="bench", help="world scale to generate if missing")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT / "bench" / "workspace")
    parser.add_argument(
        "--spark-driver-memory",
        default="1g",
        help="the Spark driver's JVM size (MMREC_SPARK_DRIVER_MEMORY); it holds each joined chunk",
    )
    parser.add_argument("--child", choices=OFFLINE_STORES, help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.rows, args.chunk_rows) < 1:
        parser.error("--rows and --chunk-rows must be >= 1")
    try:
        settings = Settings(
            workspace=args.workspace.resolve(), spark_driver_memory=args.spark_driver_memory
        )
    except SettingsError as err:
        parser.error(f"--spark-driver-memory: {err}")
    if args.child:
        run_child(
            "feast", settings.replace(offline_store=args.child), args.rows_file, args.chunk_rows
        )
        return
    from mmrec.feast_store import apply_repo

    _ensure_world(settings, args.scale, args.seed)  # applies the DuckDB profile
    apply_repo(settings.replace(offline_store="spark"))
    rows_path = _entity_rows(settings, args.rows, args.seed)
    runs = {store: _child(store, settings, rows_path, args.chunk_rows) for store in OFFLINE_STORES}
    result = {
        "scale": json.loads((settings.raw_dir / "manifest.json").read_text())["scale"],
        "entity_rows": args.rows,
        "chunk_rows": args.chunk_rows,
        "cpus": os.cpu_count(),
        "spark_conf": "feature_repo/feature_store.spark.yaml (local[2])",
        "spark_driver_memory": settings.spark_driver_memory,
        **runs,
        "ratio_spark_over_duckdb_seconds": runs["spark"]["seconds"] / runs["duckdb"]["seconds"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"spark_offline-{args.rows}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
