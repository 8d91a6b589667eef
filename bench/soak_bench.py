"""Soak benchmark (issue #16, part 5): the served bento under mixed traffic for minutes.

    python -m bench.soak_bench [--workspace DIR] [--minutes 10] [--concurrency 8] [--name soak]

The workspace (default: MMREC_WORKSPACE or the repo's, after `make demo`) is served through a
soak workspace, bench/workspace-soak: its own feature registry, online store, index file and
an empty event log, the rest linked to the source read-only. The soak posts thousands of
events; in the source's event log the next `mmrec features build` would train on them.
Served as `bench/serving_bench.py --workers 2` serves it: the bento built from this repo, two
workers, the index shared through a milvus-lite server. The online store is a private
redis-server (the features materialized into it) when one is installed, else SQLite; the
JSON says which.

Then, one minute at a time, `--concurrency` clients send requests back to back: three in
four POST /recommend (`bench.serving_bench.run_level`), one in four POST /events (a click or
an impression of a random user on a random catalog item). Per minute: requests and statuses
per endpoint, p50/p99 latency, and each worker's resident memory at the minute's end.
Overall: the 5xx count (target 0), non-200 answers by status, and each worker's RSS growth
from the end of the first minute (the warm-up) to the end of the last, in percent (target
under 10%). The item snapshot reloads every `--snapshot-refresh-s` (default 120 s, so a
10-minute soak goes through four reloads per worker; the service's default is 600 s); each
minute records the snapshot version /metrics reports. Writes bench/results/NAME.json and
.png; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from bench.serving_bench import RESULTS, percentiles, run_level, worker_rss_by_pid
from index.server import LiteServer
from mmrec.feast_store import apply_repo, materialize, open_store
from mmrec.loopback import RedisServer, redis_installed
from mmrec.settings import REPO_ROOT, Settings
from mmrec.world_manifest import world_end
from serving.bento_process import BentoServer, build_bento, workspace_env

SOAK_WS = REPO_ROOT / "bench" / "workspace-soak"
MAX_MINUTES = 60  # bounded: a soak is a benchmark, not a service
# data/ entries the soak writes (copied, or left out to start empty); the rest are linked
COPIED = ("feast", "index")
LEFT_OUT = ("event_log",)
RSS_GROWTH_TARGET_PCT = 10.0
EVENT_TYPES = ("click", "impression")


def soak_workspace(source: Settings, target: Path) -> Settings:
    """A fresh workspace at `target` serving `source`'s world (module docstring)."""
    if target.exists():
        shutil.rmtree(target)
    (target / "data").mkdir(parents=True)
    shutil.copytree(
        source.feature_repo, target / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")
    )
    for entry in sorted(source.data_dir.iterdir()):
        if entry.name in COPIED:
            shutil.copytree(entry, target / "data" / entry.name)
        elif entry.name not in LEFT_OUT:
            (target / "data" / entry.name).symlink_to(entry.resolve())
    return source.replace(workspace=target.resolve(), milvus_uri=None)


async def post_events(
    url: str, users: list[int], items: list[int], concurrency: int, seconds: float
) -> dict:
    """`concurrency` clients posting one event each, back to back, for `seconds`."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    rng = random.Random(concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            event = {
                "user_id": rng.choice(users),
                "event_type": rng.choice(EVENT_TYPES),
                "item_id": rng.choice(items),
            }
            started = time.perf_counter()
            resp = await client.post(f"{url}/events", json={"events": [event]})
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[resp.status_code] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "latency_ms": percentiles(latencies),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
    }


async def soak_minute(
    url: str, users: list[int], items: list[int], concurrency: int, k: int
) -> tuple[dict, dict]:
    """One minute of mixed traffic: (the /recommend level, the /events level)."""
    events_clients = max(1, concurrency // 4)
    return await asyncio.gather(
        run_level(url, users, concurrency - events_clients, 10**9, 60.0, k),
        post_events(url, users, items, events_clients, 60.0),
    )


def rss_growth_pct(per_minute: list[dict[int, float]]) -> dict[str, float | None]:
    """Each worker's RSS growth from the first minute's end to the last's, in percent (None
    for a worker that was not there the whole time: a restarted worker)."""
    first, last = per_minute[0], per_minute[-1]
    return {
        str(pid): round(100 * (last[pid] - rss) / rss, 2) if pid in last else None
        for pid, rss in first.items()
    }


def plot(minutes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [m["minute"] for m in minutes]
    for endpoint in ("recommend", "events"):
        left.plot(x, [m[endpoint]["latency_ms"]["p99"] for m in minutes], "o-", label=endpoint)
    left.set(xlabel="minute", ylabel="p99 ms", title="p99 latency per minute", xticks=x)
    left.legend()
    for pid in minutes[0]["worker_rss_mb"]:
        rss = [m["worker_rss_mb"].get(pid) for m in minutes]
        right.plot(x, rss, "o-", label=f"worker pid {pid}")
    right.set(xlabel="minute", ylabel="MB", title="resident memory per worker", xticks=x)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def online_store(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    """The soak workspace on a private Redis with its features materialized, when
    redis-server is installed; else as it is (SQLite)."""
    if not redis_installed():
        return settings
    redis = RedisServer(RESULTS / "soak-redis").start()
    stack.callback(redis.stop)
    settings = settings.replace(online_store="redis", redis_url=redis.url)
    apply_repo(settings)
    materialize(open_store(settings), world_end(settings))
    return settings


def snapshot_version(url: str) -> int | None:
    """The highest item snapshot version /metrics reports (None: not reported)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    versions = [
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mmrec_item_snapshot_version"
    ]
    return max(versions, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--minutes", type=int, default=10, help=f"1..{MAX_MINUTES}")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--name", default="soak", help="results file name")
    parser.add_argument(
        "--snapshot-refresh-s", type=float, default=120.0, help="item snapshot reload interval"
    )
    args = parser.parse_args()
    if not 1 <= args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in 1..{MAX_MINUTES}")
    if not args.snapshot_refresh_s > 0:
        parser.error(f"--snapshot-refresh-s must be > 0 seconds, got {args.snapshot_refresh_s}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "matplotlib", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    source = Settings.from_env(args.workspace)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        settings = online_store(soak_workspace(source, SOAK_WS), stack)
        lite = stack.enter_context(LiteServer(settings.index_uri))
        env = {
            **workspace_env(settings),
            "MMREC_SERVING_WORKERS": "2",
            "MMREC_MILVUS_URI": lite.uri,
            "MMREC_SNAPSHOT_REFRESH_S": str(args.snapshot_refresh_s),
        }
        raw = settings.raw_dir
        users = pd.read_parquet(raw / "users.parquet", columns=["user_id"]).user_id
        users = users.sample(min(len(users), 2000), random_state=0).tolist()
        items = pd.read_parquet(raw / "items.parquet", columns=["item_id"]).item_id.tolist()
        server = stack.enter_context(
            BentoServer(build_bento(env), env, RESULTS / f"{args.name}-serve.log")
        )
        minutes = []
        for minute in range(1, args.minutes + 1):
            recommend, events = asyncio.run(
                soak_minute(server.url, users, items, args.concurrency, args.k)
            )
            rss = worker_rss_by_pid(server)
            minutes.append(
                {
                    "minute": minute,
                    "recommend": {
                        key: recommend[key] for key in ("requests", "latency_ms", "status_counts")
                    },
                    "events": {
                        key: events[key] for key in ("requests", "latency_ms", "status_counts")
                    },
                    "worker_rss_mb": {str(pid): mb for pid, mb in rss.items()},
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "snapshot_version": snapshot_version(server.url),
                }
            )
            print(
                f"minute {minute}: /recommend {recommend['requests']} req p99 "
                f"{recommend['latency_ms']['p99']} ms {recommend['status_counts']}; /events "
                f"{events['requests']} req p99 {events['latency_ms']['p99']} ms "
                f"{events['status_counts']}; worker RSS {sorted(rss.values())} MB"
            )
    statuses: Counter[int] = Counter()
    for m in minutes:
        for endpoint in ("recommend", "events"):
            statuses.update({int(s): n for s, n in m[endpoint]["status_counts"].items()})
    growth = rss_growth_pct([{int(p): mb for p, mb in m["worker_rss_mb"].items()} for m in minutes])
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    rss_ok = all(g is not None and g < RSS_GROWTH_TARGET_PCT for g in growth.values())
    result = {
        "online_store": settings.online_store, "workers": 2, "index": "milvus-lite server (URI)",
        "concurrency": args.concurrency, "minutes": args.minutes,
        "snapshot_refresh_s": args.snapshot_refresh_s,
        "catalog_items": len(items), "users_sampled": len(users),
        "server_errors_5xx": server_errors,
        "non_200_by_status": {str(s): n for s, n in sorted(statuses.items()) if s != 200},
        "rss_growth_after_warmup_pct": growth,
        "targets": {"5xx": 0, "rss_growth_pct_below": RSS_GROWTH_TARGET_PCT},
        "targets_met": server_errors == 0 and rss_ok,
        "per_minute": minutes,
    }  # fmt: skip
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    plot(minutes, RESULTS / f"{args.name}.png")
    print(
        f"{settings.online_store} online store: {server_errors} 5xx, non-200 "
        f"{result['non_200_by_status']}, RSS growth after minute 1 {growth} %; wrote "
        f"{RESULTS / args.name}.json and .png"
    )
    if not result["targets_met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
