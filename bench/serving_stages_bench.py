"""Where the recall stage's time goes, in-process (no HTTP), with and without `gc.freeze()`.

Runs the serving pipeline (serving.pipeline.RecommendationPipeline) on a workspace for `--requests`
random users and times the recall stage's parts: the one Milvus search for the vector
channels, the seed-vector lookup, term recall, the fresh/popular fallbacks and the merge;
first as loaded, then after `gc.collect(); gc.freeze()` (what serving/service.py does after
warm-up). Needs the workspace's milvus-lite file free (no bento serving it).

    python -m bench.serving_stages_bench [--workspace DIR] [--requests 300]

Writes bench/results/serving_stages.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import serving.recall as recall_module
from mmrec.settings import REPO_ROOT, Settings
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.schemas import RecommendRequest

RESULTS = REPO_ROOT / "bench" / "results"


def _timed(name: str, fn: Callable, sink: dict[str, list[float]]) -> Callable:
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        sink.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return out

    return wrapper


def run(pipeline: RecommendationPipeline, requests: int, n_users: int) -> dict:
    """Time `requests` requests; percentiles of each recall part and of the stage."""
    parts: dict[str, list[float]] = {}
    originals = (pipeline.index.search, pipeline.index.get_vectors, pipeline.recall.tags.recall)
    pipeline.index.search = _timed("milvus_search", originals[0], parts)
    pipeline.index.get_vectors = _timed("seed_vectors", originals[1], parts)
    pipeline.recall.tags.recall = _timed("term", originals[2], parts)
    fallback, merge = recall_module.fallback_recall, recall_module.merge_channels
    recall_module.fallback_recall = _timed("fresh_popular", fallback, parts)
    recall_module.merge_channels = _timed("merge", merge, parts)
    rng = random.Random(0)
    try:
        for _ in range(requests):
            request = RecommendRequest(user_id=rng.randrange(n_users), scene="home", k=20)
            timings = pipeline.recommend(request).response.timings_ms
            parts.setdefault("recall_stage", []).append(timings["recall"])
    finally:
        pipeline.index.search, pipeline.index.get_vectors, pipeline.recall.tags.recall = originals
        recall_module.fallback_recall, recall_module.merge_channels = fallback, merge
    return {
        name: {p: round(float(np.percentile(v, q)), 2) for p, q in (("p50", 50), ("p99", 99))}
        for name, v in parts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    settings = Settings.from_env(args.workspace)
    torch.set_num_threads(settings.torch_threads)
    pipeline = RecommendationPipeline(settings, ServingConfig())
    n_users = int(json.loads((settings.raw_dir / "manifest.json").read_text())["n_users"])
    result = {"as_loaded": run(pipeline, args.requests, n_users)}
    gc.collect()
    gc.freeze()
    result["after_gc_freeze"] = run(pipeline, args.requests, n_users)
    for phase, parts in result.items():
        print(phase, {name: f"{v['p50']} / {v['p99']}" for name, v in parts.items()})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_stages.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
