"""Each serving lever alone, in-process, against the path it replaced, on the same requests.

On a trained workspace (the 100k-item one: `make bench-serving-100k` builds it), with the
workspace's milvus-lite file free (no bento serving it), one torch thread:

- item snapshot load: the online store's `online_read` (serving/online_features.py) vs
  Feast's `get_online_features` for the same items (the previous path);
- rank: the precomputed item side (`OnlineRanker.rank`) vs the training path over the same
  online rows (`OnlineRanker.rank_reference`: build_ranking_data + the full forward pass);
- V2V seed vectors: the in-process copy of the index's vectors vs Milvus `get` + the adapter;
- V2V seeds: the one Milvus search with the newest 5 clicked items as V2V seeds vs the whole
  click sequence (up to 50, what the service did before; this one changes answers);
- fresh + popular: a prefix of the precomputed ranking vs a scan of the whole catalog table;
- the pipeline's own stage timings (features, recall, rank, mix, total) as it now runs.

    python -m bench.serving_levers_bench --workspace DIR [--requests 200]

Writes bench/results/serving-levers.json; medians and p99 in ms, and each lever's ratio of
medians (previous / now).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from index.channels import Candidate, RecallFilter, multi_channel_recall, seed_item_vectors
from mmrec.settings import REPO_ROOT, Settings
from mmrec.vocab import FRESH, POPULAR, V2V
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.recall import Seeds
from serving.schemas import RecommendRequest

RESULTS = REPO_ROOT / "bench" / "results"


def timed(fn: Callable[[], object], reps: int = 1) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def pcts(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
    }


def lever(before: list[float], after: list[float]) -> dict:
    b, a = pcts(before), pcts(after)
    return {"before": b, "after": a, "ratio_p50": round(b["p50"] / max(a["p50"], 1e-9), 2)}


def feast_snapshot(pipeline: RecommendationPipeline) -> None:
    """The previous snapshot load: get_online_features + to_dict, 2,000 items a call."""
    reader = pipeline.reader
    for start in range(0, len(reader.item_ids), 2000):
        chunk = reader.item_ids[start : start + 2000]
        pipeline.store.get_online_features(
            features=reader.layout.item_refs, entity_rows=[{"item_id": int(i)} for i in chunk]
        ).to_dict()


def whole_table_fallback(catalog: pd.DataFrame, limit: int, filters: RecallFilter) -> list:
    """The previous fresh/popular channel: filter the whole ranked table per request."""
    rows = np.flatnonzero(filters.frame_mask(catalog).to_numpy())
    ids = catalog["item_id"].to_numpy(np.int64)[rows]
    _, first = np.unique(ids, return_index=True)
    rows = rows[np.sort(first)[:limit]]
    return [Candidate(int(i), 1.0, FRESH) for i in catalog["item_id"].to_numpy(np.int64)[rows]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings.from_env(args.workspace)
    started = time.perf_counter()
    pipeline = RecommendationPipeline(settings, ServingConfig.from_settings(settings))
    result: dict = {"pipeline_start_s": round(time.perf_counter() - started, 1)}
    reader, recall, ranker = pipeline.reader, pipeline.recall, pipeline.ranker
    result["catalog_items"] = len(reader.item_ids)
    print(f"pipeline loaded in {result['pipeline_start_s']} s, {len(reader.item_ids)} items")

    levers: dict[str, dict] = {}
    now = timed(lambda: reader._load_snapshot(version=2))
    levers["snapshot_load"] = lever(timed(lambda: feast_snapshot(pipeline)), now)
    print("snapshot load", levers["snapshot_load"])

    users = pd.read_parquet(settings.raw_dir / "users.parquet", columns=["user_id"]).user_id
    rng = random.Random(0)
    requests = [
        RecommendRequest(user_id=int(rng.choice(users)), scene=("home", "inner", "detail")[i % 3])
        for i in range(args.requests)
    ]
    for request in requests[:20]:  # warm-up
        pipeline.recommend(request)
    stages: dict[str, list[float]] = {}
    recs = []
    for request in requests:
        rec = pipeline.recommend(request)
        recs.append((request, rec))
        for stage, ms in rec.response.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    result["pipeline_stage_ms"] = {stage: pcts(v) for stage, v in stages.items()}
    print("pipeline stages", result["pipeline_stage_ms"])

    ranked = [(r, rec) for r, rec in recs if rec.ranked is not None]
    at = datetime.fromtimestamp(ranked[0][1].request_ts, UTC)
    content = ranker.reference_content(pipeline.store, at)

    def each(fn: Callable[..., object], items: list) -> list[float]:
        """One timing per item: fn(*item)."""
        return [timed(lambda item=item: fn(*item))[0] for item in items]

    pairs = [(rec.ranked.features, r.scene) for r, rec in ranked]
    levers["rank"] = lever(
        each(lambda f, scene: ranker.rank_reference(f, scene, content), pairs),
        each(ranker.rank, pairs),
    )
    print("rank", levers["rank"])

    histories = [
        [int(i) for i in (pipeline.reader.read_user(r.user_id)["item_click_seq"][0] or [])]
        for r, _ in recs
    ]
    histories = [h for h in histories if h]
    seeds = [(h,) for h in histories]
    levers["v2v_seed_vectors"] = lever(
        each(lambda h: recall._v2v_adapted(seed_item_vectors(recall.index, h[:5])), seeds),
        each(lambda h: recall._v2v_vectors(Seeds(clicked_items=h)), seeds),
    )
    print("v2v seed vectors", levers["v2v_seed_vectors"])

    quota = recall.quotas[V2V]

    def v2v_search(n_seeds: int) -> list[float]:
        configured, recall.seed_items = recall.seed_items, n_seeds
        try:
            return each(
                lambda h: multi_channel_recall(
                    recall.index,
                    {V2V: (recall._v2v_vectors(Seeds(clicked_items=h)), quota)},
                    filters=RecallFilter(exclude_ids=frozenset(h)),
                ),
                seeds,
            )
        finally:
            recall.seed_items = configured

    levers["v2v_seeds_5_vs_sequence"] = lever(v2v_search(50), v2v_search(5))
    levers["v2v_seeds_5_vs_sequence"]["history_len_p50"] = float(
        np.median([len(h) for h in histories])
    )
    print("v2v seeds", levers["v2v_seeds_5_vs_sequence"])

    catalog = recall.catalog.sort_values(["publish_ts", "item_id"], ascending=[False, True])
    total = pipeline.config.candidates
    filters = [(RecallFilter(exclude_ids=frozenset(h)),) for h in histories]
    levers["fresh_popular"] = lever(
        each(
            lambda f: [whole_table_fallback(catalog, total, f) for _ in (FRESH, POPULAR)], filters
        ),
        each(lambda f: [recall.fresh.top(total, f), recall.popular.top(total, f)], filters),
    )
    print("fresh + popular", levers["fresh_popular"])

    result["levers"] = levers
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving-levers.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'serving-levers.json'}")


if __name__ == "__main__":
    main()
