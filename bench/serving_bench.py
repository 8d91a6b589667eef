"""Serving benchmark (issue #7): the built bento under load over loopback HTTP.

Builds the bento from this repo (the workspace's BentoML store), runs `bentoml serve`, and
for each concurrency level sends POST /recommend from that many concurrent clients (one
asyncio httpx client; users drawn at random from the world, scenes rotating) until
`--requests` answers or `--seconds` pass, whichever first. Reports client-side latency
p50/p99, throughput, errors, and the service's own per-stage timings (features, recall, rank,
mix; medians and p99 of `timings_ms` in the responses).

    python -m bench.serving_bench [--workspace DIR] [--levels 1,8,32] [--requests 300]
        [--workers N] [--name NAME] [--no-floor]

Before the service, the same levels run against a trivial BentoML endpoint with the same
request/response shapes and process settings (bench/floor_service.py): the framework's and the
client's own share, measured in the same run; each level reports its p99 over the floor's.
Also reported: start-up to /readyz, each worker's memory after the levels (`rss_mb_per_worker`,
`pss_mb_per_worker`: pages shared between workers counted once across them,
`uss_mb_per_worker`: pages only that worker has; psutil's memory_full_info), and per level the
CPU time each request cost the service's processes, the index server and the client
(`cpu_ms_per_request`): with 2 cores, 2,000 ms over their sum is the most requests a second
the machine can answer (`cpu_bound_rps`), whatever the concurrency.

`--engines lite,standalone` serves the same bento once per index engine, side by side under
`engines` in the JSON: `lite` (the workspace's milvus-lite file behind `LiteServer`, FLAT) and
`standalone` (a Milvus 2.3.5 server from PyPI's `milvus` wheel, data under the workspace's
`data/index/milvus-standalone`, HNSW; the index and its neighbour lists are built there by
`index.build.build_index` the first time, reused after). The first engine's figures are also
the JSON's top-level keys (the layout of earlier runs).

Writes bench/results/NAME.json and .png (default serving, serving-workers<N> with --workers
N). The client runs on the same 2 cores as the server; the JSON keeps the 1-minute load
average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from index.server import LiteServer
from mmrec.settings import REPO_ROOT, Settings
from mmrec.vocab import LATEST_RECALL_MODEL, POSITIONS
from serving.bento_process import BentoServer, build_bento, workspace_env

RESULTS = REPO_ROOT / "bench" / "results"
STAGES = ("features", "recall", "rank", "mix", "total")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p99 of `values` (NaN when there are none), rounded to 0.01."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan")}
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p99": round(float(np.percentile(values, 99)), 2),
    }


async def run_level(
    url: str, users: list[int], concurrency: int, requests: int, seconds: float, k: int
) -> dict:
    """`concurrency` workers sending requests back to back; returns the level's figures."""
    latencies, stages, statuses = [], {s: [] for s in STAGES}, {}
    candidates: list[int] = []
    sent = 0
    deadline = time.monotonic() + seconds
    rng = random.Random(concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.monotonic() < deadline:
            sent += 1
            body = {"user_id": rng.choice(users), "scene": POSITIONS[sent % 3], "k": k}
            started = time.perf_counter()
            resp = await client.post(f"{url}/recommend", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 200:
                out = resp.json()
                candidates.append(out["candidates"])
                for stage in STAGES:
                    stages[stage].append(out["timings_ms"].get(stage, 0.0))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "latency_ms": percentiles(latencies),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "candidates_ranked_median": float(np.median(candidates)) if candidates else 0.0,
        "service_stage_ms": {stage: percentiles(values) for stage, values in stages.items()},
    }


def plot(levels: list[dict], floor: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    conc = [str(lv["concurrency"]) for lv in levels]
    for key, style in (("p50", "o-"), ("p99", "s--")):
        left.plot(conc, [lv["latency_ms"][key] for lv in levels], style, label=f"service {key}")
        if floor:
            left.plot(
                conc, [lv["latency_ms"][key] for lv in floor], style, color="grey",
                label=f"trivial endpoint {key}",
            )  # fmt: skip
    left.set(xlabel="concurrent clients", ylabel="ms", title="/recommend latency", yscale="log")
    left.legend(fontsize=8)
    bottom = np.zeros(len(levels))
    for stage in ("features", "recall", "rank", "mix"):
        values = np.array([lv["service_stage_ms"][stage]["p50"] for lv in levels])
        right.bar(conc, values, bottom=bottom, label=stage)
        bottom += values
    right.set(xlabel="concurrent clients", ylabel="ms (median)", title="in-service stages")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) so far of this process (the client) and of its children: the
    milvus-lite server, and `bentoml serve` with its workers (the service)."""
    import psutil

    def used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    out = {"service": 0.0, "index": 0.0, "client": used(psutil.Process())}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            part = "index" if "milvus" in " ".join(child.cmdline()) else "service"
            out[part] += used(child)
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """{part: CPU ms per request} and the request rate 2 cores could carry at that cost."""
    per = {part: round((after[part] - before[part]) * 1000 / max(requests, 1), 2) for part in after}
    per["total"] = round(sum(per.values()), 2)
    cores = os.cpu_count() or 1
    return {"cpu_ms_per_request": per, "cpu_bound_rps": round(cores * 1000 / per["total"], 1)}


def run_levels(url: str, users: list[int], args: argparse.Namespace, label: str) -> list[dict]:
    """A warm-up, then every concurrency level of `args.levels` against `url`."""
    asyncio.run(run_level(url, users, 2, 20, 30, args.k))  # warm-up, not reported
    levels = []
    for concurrency in (int(c) for c in args.levels.split(",")):
        before = cpu_seconds()
        level = asyncio.run(run_level(url, users, concurrency, args.requests, args.seconds, args.k))
        level.update(cpu_per_request(before, cpu_seconds(), level["requests"]))
        level["load_avg_1m"] = round(os.getloadavg()[0], 2)
        levels.append(level)
        stage = level["service_stage_ms"]
        print(
            f"{label} c={concurrency:>2}: {level['requests']} req, {level['throughput_rps']} "
            f"req/s, p50 {level['latency_ms']['p50']} / p99 {level['latency_ms']['p99']} ms; "
            f"in service p50 total {stage['total']['p50']} (features {stage['features']['p50']} "
            f"recall {stage['recall']['p50']} rank {stage['rank']['p50']} mix "
            f"{stage['mix']['p50']}); statuses {level['status_counts']}; CPU ms/request "
            f"{level['cpu_ms_per_request']} -> at most {level['cpu_bound_rps']} req/s"
        )
    return levels


def worker_rss_by_pid(server: BentoServer) -> dict[int, float]:
    """Resident memory (MB) of each service worker, by process id (bench/soak_bench.py)."""
    import psutil

    children = psutil.Process(server.pid).children(recursive=True)
    return {
        c.pid: round(c.memory_info().rss / 2**20, 1)
        for c in children
        if "worker" in " ".join(c.cmdline())
    }


def worker_memory_mb(server: BentoServer) -> dict[str, list[float]]:
    """{rss, pss, uss}_mb_per_worker of the service workers (the children of `bentoml serve`
    that loaded it), each smallest first. PSS counts a page shared by n processes as 1/n of
    it in each, so the sum over workers counts shared pages once; USS is what a worker alone
    holds (what stopping it would free)."""
    import psutil

    children = psutil.Process(server.pid).children(recursive=True)
    rows = [c.memory_full_info() for c in children if "worker" in " ".join(c.cmdline())]
    return {
        f"{kind}_mb_per_worker": sorted(round(getattr(r, kind) / 2**20, 1) for r in rows)
        for kind in ("rss", "pss", "uss")
    }


@contextlib.contextmanager
def index_engine(engine: str, settings: Settings, env: dict[str, str]):
    """Serve the workspace's index with `engine` for the block; yields the variables that
    point the service at it (and the server, for its process id)."""
    if engine == "lite":
        with LiteServer(settings.index_uri) as lite:
            yield lite.environment()
        return

    from index.build import build_index, load_recall_model, neighbours_root
    from index.collections import ContentIndex
    from index.connection import connect
    from index.errors import UnknownCollectionError
    from index.neighbours import NeighbourLists
    from index.standalone import StandaloneServer, default_data_dir

    with StandaloneServer(default_data_dir(settings.data_dir)) as server:
        remote = settings.replace(milvus_uri=server.uri, milvus_token=server.token)
        model = load_recall_model(remote, env.get("MMREC_RECALL_MODEL", LATEST_RECALL_MODEL))
        try:
            record = ContentIndex(connect(server.uri, token=server.token)).record()
            ready = record.collection.endswith(f"_v{model.version}") and (
                NeighbourLists.load(neighbours_root(settings), record.build_id) is not None
            )
        except UnknownCollectionError:
            ready = False
        if not ready:
            print(f"building the index of {model.tag} on the Milvus server (reused next time)")
            build_index(remote, model.tag)
        yield server.environment()


def serve_engine(
    engine: str, tag: str, settings: Settings, env: dict[str, str], users: list[int], args
) -> dict:
    """One engine's run: start-up to /readyz, the levels, the workers' memory.

    `startup_s` is a start with the item snapshot's files already written (what every start
    after the first materialize is); when there were none, a first start writes them and its
    time is `first_startup_s`."""
    from serving.snapshot_files import snapshots_root

    out: dict = {"engine": engine}
    with index_engine(engine, settings, env) as variables:
        log = RESULTS / f"serving-serve-{engine}.log"
        if not any(snapshots_root(settings).glob("*/manifest.json")):
            started = time.monotonic()
            with BentoServer(tag, {**env, **variables}, log):
                out["first_startup_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        with BentoServer(tag, {**env, **variables}, log) as server:
            out["startup_s"] = round(time.monotonic() - started, 1)
            print(f"{engine}: service ready in {out['startup_s']} s")
            out["levels"] = run_levels(server.url, users, args, f"{engine:<10}")
            out |= worker_memory_mb(server)
    print(f"{engine}: startup {out['startup_s']} s, worker memory {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=300, help="per concurrency level")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="service processes")
    parser.add_argument(
        "--engines", default="lite", help="index engines, comma-separated: lite, standalone"
    )
    parser.add_argument("--name", default=None, help="results file name (default by workers)")
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the trivial endpoint (bench/floor_service.py) first, same levels",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.from_env(args.workspace)
    env = {**workspace_env(settings), "MMREC_SERVING_WORKERS": str(args.workers)}
    users = pd.read_parquet(settings.raw_dir / "users.parquet", columns=["user_id"]).user_id
    users = users.sample(min(len(users), 2000), random_state=0).tolist()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = build_bento(env)
    floor: list[dict] = []
    if args.floor:
        log = RESULTS / "serving-floor-serve.log"
        with BentoServer("bench.floor_service:Floor", env, log, working_dir=REPO_ROOT) as server:
            floor = run_levels(server.url, users, args, "floor     ")
    engines = {}
    for engine in args.engines.split(","):
        engines[engine] = serve_engine(engine, tag, settings, env, users, args)
        for level, base in zip(engines[engine]["levels"], floor, strict=False):
            level["p99_over_floor"] = round(
                level["latency_ms"]["p99"] / base["latency_ms"]["p99"], 2
            )
    catalog = len(pd.read_parquet(settings.raw_dir / "items.parquet", columns=["item_id"]))
    first = engines[args.engines.split(",")[0]]
    result = {
        "bento": tag, "catalog_items": catalog, "k": args.k, "workers": args.workers,
        **{key: value for key, value in first.items() if key != "engine"},
        "engines": engines,
        "floor": {"service": "bench.floor_service:Floor", "levels": floor},
    }  # fmt: skip
    name = args.name or ("serving" if args.workers == 1 else f"serving-workers{args.workers}")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(first["levels"], floor, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / name}.json and .png")


if __name__ == "__main__":
    main()
