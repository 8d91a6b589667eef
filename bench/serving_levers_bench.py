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
- U2V known ids: a binary search in the model's sorted known ids vs `np.isin` over them;
- Milvus index type (changes answers, so reported beside the levers, not as one): copies of
  the active collection indexed FLAT and IVF_FLAT in a scratch milvus-lite file, searched with
  the requests' own U2V/V2V/S2V queries and filters; latency, and each channel's overlap with
  FLAT's (exact) answer;
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
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from index.build import v2v_queries
from index.channels import Candidate, RecallFilter, multi_channel_recall, seed_item_vectors
from index.collections import ContentIndex, build_content_index
from index.schema import METADATA_COLUMNS, IndexSpec
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


INDEX_TYPES = {
    "FLAT": IndexSpec(),
    "IVF_FLAT nlist=1024 nprobe=16": IndexSpec("IVF_FLAT", {"nlist": 1024}, {"nprobe": 16}),
    "IVF_FLAT nlist=256 nprobe=64": IndexSpec("IVF_FLAT", {"nlist": 256}, {"nprobe": 64}),
}


def index_types(index: ContentIndex, cases: list[tuple[dict, RecallFilter]]) -> dict:
    """Each of INDEX_TYPES over a copy of the active collection, on the same vector queries:
    p50/p99 ms of the one search a request makes, and per channel the mean share of FLAT's
    (exact) answer it returns."""
    frame = index.scan([*(c for c in METADATA_COLUMNS if c != "item_id"), "vector"])
    vectors = np.stack(frame.pop("vector").to_numpy()).astype(np.float32)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        copies = {}
        for number, (name, spec) in enumerate(INDEX_TYPES.items()):
            uri = f"{scratch}/copy{number}.db"
            build_content_index(uri, vectors, frame, "copy", spec=spec, show_progress=False)
            copies[name] = ContentIndex(uri)
        exact = [multi_channel_recall(copies["FLAT"], q, filters=f) for q, f in cases]
        for name, copy in copies.items():
            times, overlap = [], {}
            for (queries, filters), truth in zip(cases, exact, strict=True):
                started = time.perf_counter()
                found = multi_channel_recall(copy, queries, filters=filters)
                times.append((time.perf_counter() - started) * 1000)
                for channel, hits in truth.items():
                    if hits:
                        got = {c.item_id for c in found[channel]}
                        share = len(got & {c.item_id for c in hits}) / len(hits)
                        overlap.setdefault(channel, []).append(share)
            out[name] = {
                "search_ms": pcts(times),
                "overlap_with_exact": {c: round(float(np.mean(v)), 4) for c, v in overlap.items()},
            }
            print(name, out[name])
    return out


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
        each(lambda h: v2v_queries(recall.recall, seed_item_vectors(recall.index, h[:5])), seeds),
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

    known = recall.recall.known_item_ids
    sequences = [(np.asarray(h[: ranker.max_seq_len], np.int64),) for h in histories]
    levers["u2v_known_ids"] = lever(
        each(lambda seq: np.isin(seq, known), sequences), each(recall.recall.knows, sequences)
    )
    print("u2v known ids", levers["u2v_known_ids"])

    cases = []
    for request, _ in recs:
        user = pipeline.reader.read_user(request.user_id)
        seeds_of_request, _ = pipeline.seeds(request, user)
        queries = recall.vector_queries(seeds_of_request, ranker.max_seq_len)
        if queries:
            cases.append(
                (queries, RecallFilter(exclude_ids=frozenset(seeds_of_request.clicked_items)))
            )
    result["milvus_index_types"] = index_types(recall.index, cases)

    result["levers"] = levers
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving-levers.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'serving-levers.json'}")


if __name__ == "__main__":
    main()
