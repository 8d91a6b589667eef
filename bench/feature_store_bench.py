"""Feature-store benchmark at bench scale (issue #2).

(a) Point-in-time join through Feast (`ranking` service, DuckDB offline store) for N entity
    rows vs a hand-written DuckDB ASOF join of the same sources in the same run: seconds,
    ratio, rows returned, peak RSS (each side runs in its own child process so RSS is its own).
    Both sides join the rows in the same chunks (--chunk-rows, as `mmrec train build-sets`
    does): a ranking row carries 1,664 embedding floats, so 1M rows at once do not fit.
(b) Materialize throughput (entity rows/s) into SQLite and into a real redis-server.
(c) Online read latency of the `ranking` service for 1 user + 500 items, p50/p99: Feast's
    get_online_features vs serving's CandidateFeatureReader (item snapshot + Feast user read),
    on the same requests.

    python -m bench.feature_store_bench [--rows 1000000] [--chunk-rows 200000] [--scale bench]
                                        [--workspace DIR]

Writes bench/results/feature_store.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.settings import REPO_ROOT, Settings

RESULTS = REPO_ROOT / "bench" / "results"
WARMUP = 20  # online reads before timing (SQLite pages, Feast's caches)


def _ensure_world(settings: Settings, scale: str, seed: int) -> None:
    from datagen.world import generate_world
    from feature_pipelines.run import build_features
    from mmrec.feast_store import apply_repo

    # refreshed on every run: the bench joins through the repo's current definitions
    shutil.copytree(
        REPO_ROOT / "feature_repo",
        settings.feature_repo,
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
    if not (settings.raw_dir / "manifest.json").exists():
        generate_world(settings, scale, seed)
    if not (settings.offline_dir / "item_stats").exists():
        build_features(settings)
    if not (settings.offline_dir / "item_embeddings").exists():
        # the ranking service reads the content views: encode the catalog once (slow at bench
        # scale; resumable if interrupted)
        from content.encode import run_encode
        from content.encoding import EncodeConfig

        run_encode(settings, EncodeConfig())
    apply_repo(settings)


def _entity_rows(settings: Settings, n: int, seed: int) -> Path:
    """N (user, item, time) rows sampled from impressions, written to Parquet."""
    path = settings.data_dir / "bench" / f"entity_rows_{n}.parquet"
    if path.exists():
        return path
    import duckdb

    con = duckdb.connect()
    frame = con.execute(
        # the sample is taken after the filter: SAMPLE on a FROM clause samples before WHERE
        f"""SELECT * FROM (SELECT user_id, item_id, event_timestamp FROM read_parquet($f)
                           WHERE event_type = 'impression')
            USING SAMPLE {n} ROWS (reservoir, {seed})""",
        {"f": str(settings.raw_dir / "events" / "*" / "*.parquet")},
    ).df()
    frame["event_timestamp"] = (
        pd.to_datetime(frame.event_timestamp, utc=True).dt.floor("s").astype("datetime64[us, UTC]")
    )
    frame["request_ts"] = frame.event_timestamp.astype("int64") // 10**6
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path


def child_command(
    module: str, mode: str, settings: Settings, rows_path: Path, chunk_rows: int
) -> list[str]:
    """`python -m <module> --child <mode> ...`: one join of the rows in a fresh process."""
    return [
        sys.executable, "-m", module, "--child", mode, "--workspace", str(settings.workspace),
        "--rows-file", str(rows_path), "--chunk-rows", str(chunk_rows),
    ]  # fmt: skip


def _child(mode: str, settings: Settings, rows_path: Path, chunk_rows: int) -> dict:
    """Run one measurement in a fresh process; returns its JSON line plus its peak RSS."""
    cmd = child_command("bench.feature_store_bench", mode, settings, rows_path, chunk_rows)
    # stderr passes through: the child's progress bar shows how far the join is
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed with exit {out.returncode} (its stderr is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


def feast_pit(store, rows: pd.DataFrame) -> pd.DataFrame:
    from mmrec.feast_store import historical_features

    return historical_features(store, store.get_feature_service("ranking_v1"), rows)


def duckdb_asof(store, rows: pd.DataFrame) -> pd.DataFrame:
    """The same join by hand: one DuckDB ASOF JOIN per view of the `ranking` service, every
    feature it serves with the view's TTL (generated from the Feast definitions, so both
    sides return the same columns), plus the two request-time features computed in SQL."""
    import duckdb

    from mmrec.feast_store import ON_DEMAND, service_refs_by_entity
    from mmrec.vocab import CATEGORIES

    groups = service_refs_by_entity(store, store.get_feature_service("ranking_v1"))
    groups.pop(ON_DEMAND, None)
    refs = [ref for group in groups.values() for ref in group]
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
    ctes, selects, joins = [], [], []
    for n, name in enumerate(views):
        view = store.get_feature_view(name)
        alias, key = f"v{n}", view.join_keys[0]
        ctes.append(f"{alias} AS (SELECT * FROM read_parquet('{view.batch_source.path}'))")
        ttl_days = view.ttl.total_seconds() / 86400  # 0: never expires (Feast's convention)
        valid = (
            f"{alias}.event_timestamp > r.event_timestamp - INTERVAL {ttl_days} DAY"
            if ttl_days
            else "true"
        )
        for ref in refs:
            if ref.startswith(f"{name}:"):
                feature = ref.split(":")[1]
                selects.append(f"CASE WHEN {valid} THEN {alias}.{feature} END AS {feature}")
        joins.append(
            f"ASOF LEFT JOIN {alias} ON r.{key} = {alias}.{key} "
            f"AND r.event_timestamp >= {alias}.event_timestamp"
        )
    case = " ".join(f"WHEN '{c}' THEN {i + 1}" for i, c in enumerate(CATEGORIES))
    con = duckdb.connect()
    con.register("rows", rows)
    newline = ",\n"
    return con.execute(
        f"""
        WITH r AS (SELECT row_number() OVER () AS rid, * FROM rows),
        {newline.join(ctes)},
        j AS (SELECT r.*, {newline.join(selects)} FROM r {" ".join(joins)})
        SELECT *, greatest(0, (request_ts - publish_ts_s) / 3600.0) AS item_age_hours,
               coalesce(cdr_category_affinity[CASE category {case} END], 0)
                 AS cdr_item_category_affinity
        FROM j
        """
    ).df()


def run_child(mode: str, settings: Settings, rows_file: Path, chunk_rows: int) -> None:
    from mmrec.feast_store import open_store
    from mmrec.io import progress

    rows = pd.read_parquet(rows_file)
    join = feast_pit if mode == "feast" else duckdb_asof
    store = open_store(settings)
    rows_out, filled, cells, chunk_seconds = 0, 0, 0, []
    for start in progress(range(0, len(rows), chunk_rows), f"{mode} PIT join"):
        t0 = time.perf_counter()
        frame = join(store, rows.iloc[start : start + chunk_rows])
        chunk_seconds.append(time.perf_counter() - t0)
        rows_out += len(frame)
        # outside the timing: how many feature values the join found (not all nulls)
        features = frame.columns.difference([*rows.columns, "rid"])
        filled += int(frame[features].notna().to_numpy().sum())
        cells += frame[features].size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": sum(chunk_seconds),
                "chunk_seconds": chunk_seconds,
                "rows_in": len(rows),
                "rows_out": rows_out,
                "features": len(features),
                "feature_values_found_share": filled / cells,
                "peak_rss_mb": peak_mb,
            }
        )
    )


def materialize_and_read(settings: Settings, reps: int) -> dict:
    from mmrec.feast_store import apply_repo, materialize, open_store
    from mmrec.world_manifest import world_end

    end = world_end(settings)
    from mmrec.loopback import RedisServer
    from serving.online_features import CandidateFeatureReader

    items = pd.read_parquet(settings.offline_dir / "item_stats").item_id.unique()
    catalog = pd.read_parquet(
        settings.offline_dir / "item_attributes", columns=["item_id"]
    ).item_id.to_numpy()
    users = pd.read_parquet(
        settings.offline_dir / "user_behavior_seq", columns=["user_id"]
    ).user_id.unique()
    rng = np.random.default_rng(0)
    out = {}
    redis = RedisServer(settings.data_dir / "redis-bench").start()
    try:
        for backend in ("sqlite", "redis"):
            cfg = settings.replace(online_store=backend, redis_url=redis.url)
            apply_repo(cfg)
            store = open_store(cfg)
            start = time.perf_counter()
            ranking_views = [
                p.name
                for p in store.get_feature_service("ranking_v1").feature_view_projections
                if p.name in {v.name for v in store.list_feature_views()}
            ]
            windows = materialize(store, end, ranking_views)
            seconds = time.perf_counter() - start
            entity_rows = _rows_in_windows(store, end, windows)
            service = store.get_feature_service("ranking_v1")
            reader = CandidateFeatureReader(store, "ranking_v1", catalog)
            t0 = time.perf_counter()
            reader.read(int(users[0]), items[:1], {"request_ts": 0})  # loads the item snapshot
            snapshot_seconds = time.perf_counter() - t0
            now = {"request_ts": int(end.timestamp())}
            requests = [
                (int(rng.choice(users)), rng.choice(items, 500, replace=False))
                for _ in range(WARMUP + reps)
            ]
            # each way over the same requests in its own loop (interleaved, Feast's ~200 ms
            # of allocations set off the collector inside the reader's calls), warm-up dropped
            feast_ms = _timed_ms(partial(_feast_read, store, service, now), requests)
            reader_ms = _timed_ms(partial(reader.read, request=now), requests)
            out[backend] = {
                "materialize_seconds": seconds,
                "materialized_entity_rows": entity_rows,
                "materialize_rows_per_s": entity_rows / seconds,
                "online_ranking_1user_500items_ms": {
                    "feast_get_online_features": _percentiles(feast_ms),
                    "candidate_feature_reader": _percentiles(reader_ms),
                    "reader_snapshot_load_seconds": snapshot_seconds,
                    "reader_snapshot_items": len(catalog),
                    **_snapshot_size_mb(reader.snapshot()),
                    "reps": reps,
                },
            }
    finally:
        redis.stop()
    return out


def _feast_read(store, service, now: dict, user: int, candidates: np.ndarray) -> None:
    rows = [{"user_id": user, "item_id": int(i), **now} for i in candidates]
    store.get_online_features(features=service, entity_rows=rows)


def _timed_ms(read, requests: list) -> list[float]:
    """Milliseconds of `read(user, candidates)` per request, the first WARMUP dropped."""
    out = []
    for user, candidates in requests:
        t0 = time.perf_counter()
        read(user, candidates)
        out.append((time.perf_counter() - t0) * 1000)
    return out[WARMUP:]


def _snapshot_size_mb(snapshot) -> dict[str, float]:
    """Bytes the reader's item snapshot holds, and what the same values would hold as the
    Python lists Feast's to_dict() returns (8-byte pointer + 24-byte float object a value)."""
    held = as_lists = 0
    for column in snapshot.columns.values():
        held += column.nbytes  # the object array's pointers
        for value in column:
            if isinstance(value, np.ndarray):
                held += sys.getsizeof(value)  # header + data (the array owns its buffer)
                as_lists += sys.getsizeof([]) + value.size * (8 + sys.getsizeof(1.0))
            elif value is not None:
                size = sys.getsizeof(value)
                held += size
                as_lists += size
    return {"reader_snapshot_mb": held / 2**20, "snapshot_as_python_lists_mb": as_lists / 2**20}


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def _rows_in_windows(store, end, windows: dict) -> int:
    """Distinct entities per view within its TTL window: the rows materialize writes."""
    import duckdb

    con = duckdb.connect()
    total = 0
    for name, ttl in windows.items():
        view = store.get_feature_view(name)
        total += con.execute(
            f"SELECT count(DISTINCT {view.join_keys[0]}) FROM read_parquet($g) "
            "WHERE event_timestamp >= $s AND event_timestamp < $e",
            {"g": view.batch_source.path, "s": end - ttl, "e": end},
        ).fetchone()[0]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows for the PIT join")
    parser.add_argument(
        "--chunk-rows", type=int, default=200_000, help="entity rows per join call, both sides"
    )
    parser.add_argument("--scale", default="bench", help="world scale to generate if missing")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reps", type=int, default=200, help="online reads per backend")
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT / "bench" / "workspace")
    parser.add_argument("--skip-pit", action="store_true", help="only (b) and (c)")
    parser.add_argument("--child", choices=("feast", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.rows, args.reps, args.chunk_rows) < 1:
        parser.error("--rows, --chunk-rows and --reps must be >= 1")
    settings = Settings(workspace=args.workspace.resolve())
    if args.child:
        run_child(args.child, settings, args.rows_file, args.chunk_rows)
        return
    _ensure_world(settings, args.scale, args.seed)
    path = RESULTS / "feature_store.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["scale"] = json.loads((settings.raw_dir / "manifest.json").read_text())["scale"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.skip_pit:
        rows_path = _entity_rows(settings, args.rows, args.seed)
        raw = _child("duckdb", settings, rows_path, args.chunk_rows)
        feast = _child("feast", settings, rows_path, args.chunk_rows)
        result["pit_join"] = {
            "entity_rows": args.rows,
            "chunk_rows": args.chunk_rows,
            "duckdb_asof": raw,
            "feast_ranking_service": feast,
            "ratio_feast_over_asof": feast["seconds"] / raw["seconds"],
            "rows_dropped_by_feast": feast["rows_in"] - feast["rows_out"],
        }
        path.write_text(json.dumps(result, indent=2) + "\n")  # kept if (b)/(c) fail
    result["online"] = materialize_and_read(settings, args.reps)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
