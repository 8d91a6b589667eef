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
- neighbour lists (issue #29): the vector channels of a request with V2V and S2V read from
  the index build's lists vs every row searched live (same candidates: a test pins it); the
  query rows each search sends, and for N = 100, 150, 200 (prefixes of the stored lists) the
  share of V2V / S2V rows a list answers (the rest search live: the choice of N);
- item snapshot at start-up: reading a snapshot version's files (Arrow columns, the ranker's
  item side memory-mapped) vs reading the online store and deriving the ranker's item side;
- recall catalog at start-up: the index build's stored copy vs a scan of the collection;
- the pipeline's own stage timings (features, recall, rank, mix, total) as it now runs.

Milvus index types and HNSW parameters (they change answers) are bench/hnsw_recall_bench.py's.

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

from index.build import neighbours_root, v2v_queries
from index.channels import Candidate, RecallFilter, multi_channel_recall, seed_item_vectors
from index.neighbours import TOP_N, NeighbourLists, NeighbourTable
from index.term_recall import TAG_COLUMNS
from mmrec.settings import REPO_ROOT, Settings
from mmrec.vocab import FRESH, MATERIALS, POPULAR, S2V, V2V
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.ranker import CatalogItems
from serving.recall import Seeds
from serving.schemas import RecommendRequest
from serving.snapshot_files import ItemColumns

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


def list_coverage(stage, cases: list, max_seq_len: int) -> dict:
    """Share of V2V / S2V query rows a neighbour list answers, for prefixes N of the lists."""
    stored = stage.lists
    out = {}
    for top_n in (100, 150, 200):
        tables = {
            channel: NeighbourTable(
                t.keys,
                t.tags,
                t.ids[:, :top_n],
                t.scores[:, :top_n],
                t.materials[:, :top_n],
                t.queries,
            )
            for channel, t in stored.tables.items()
        }
        stage.lists = NeighbourLists(stored.build_id, tables)
        listed: dict[str, list[float]] = {V2V: [], S2V: []}
        for seeds, filters in cases:
            for channel, (rows, _) in stage.vector_queries(seeds, max_seq_len, filters).items():
                if channel in listed and rows:
                    listed[channel].append(np.mean([isinstance(r, list) for r in rows]))
        out[str(top_n)] = {c: round(float(np.mean(v)), 4) for c, v in listed.items() if v}
    stage.lists = stored
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
    now = timed(lambda: reader._read_online(version=2))
    levers["snapshot_load"] = lever(timed(lambda: feast_snapshot(pipeline)), now)
    print("snapshot load", levers["snapshot_load"])

    def derive_all() -> None:
        online = reader._read_online(version=2)
        for hook in reader._hooks.values():
            hook(online)

    def from_files() -> None:
        key = reader.snapshot().key
        arrays, table = reader.files.read(key)
        ItemColumns(table, reader.layout.item_arrays)
        CatalogItems.from_arrays({k.split(".", 1)[1]: a for k, a in arrays.items()})

    if reader.snapshot().key is not None:
        levers["snapshot_start"] = lever(timed(derive_all), timed(from_files))
        print("snapshot at start-up", levers["snapshot_start"])
    if recall.lists is not None and recall.lists.catalog is not None:
        columns = [*(c for c in TAG_COLUMNS if c != "item_id"), "category", "vector"]
        levers["recall_catalog_start"] = lever(
            timed(lambda: recall.index.scan(columns)),
            timed(lambda: NeighbourLists.load(neighbours_root(settings), recall.build_id)),
        )
        print("recall catalog at start-up", levers["recall_catalog_start"])

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
    for i, (request, _) in enumerate(recs):
        user = pipeline.reader.read_user(request.user_id)
        seeds_of_request, _ = pipeline.seeds(request, user)
        # every 10th with a material filter, as the feed page sends: lists run short there
        materials = (MATERIALS[i % len(MATERIALS)],) if i % 10 == 9 else None
        filters = RecallFilter(materials, frozenset(seeds_of_request.clicked_items))
        cases.append((seeds_of_request, filters))

    def vector_recall(seeds, filters) -> None:
        queries = recall.vector_queries(seeds, ranker.max_seq_len, filters)
        rows_live.append(sum(isinstance(r, np.ndarray) for q, _ in queries.values() for r in q))
        multi_channel_recall(recall.index, queries, filters=filters)

    if recall.lists is not None:
        rows_live = []
        recall.use_lists = False
        before = each(vector_recall, cases)
        live_before = list(rows_live)
        recall.use_lists, rows_live = True, []
        levers["neighbour_lists"] = lever(before, each(vector_recall, cases))
        levers["neighbour_lists"]["rows_searched_p50"] = {
            "before": float(np.median(live_before)),
            "after": float(np.median(rows_live)),
        }
        levers["neighbour_lists"]["top_n"] = TOP_N
        levers["neighbour_lists"]["rows_from_lists_by_top_n"] = list_coverage(
            recall, cases, ranker.max_seq_len
        )
        print("neighbour lists", levers["neighbour_lists"])

    result["levers"] = levers
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving-levers.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'serving-levers.json'}")


if __name__ == "__main__":
    main()
