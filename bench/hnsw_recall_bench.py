"""HNSW parameters on a Milvus server, chosen by candidate recall against FLAT on the service's
own queries.

On a trained workspace (the 104k-item one: `make bench-serving-100k` builds it) with its
milvus-lite index free: the serving pipeline (exact FLAT, milvus-lite) answers `--requests`
requests' recall stage with every row searched live; that is the truth. The same collection is
copied into a Milvus 2.3.5 server (PyPI's `milvus` wheel, scratch data folder) with HNSW
(M, efConstruction) and, per search `ef`, the same requests are recalled as the service does on
that engine: the seeds' V2V and S2V neighbour lists searched in the HNSW index unfiltered, the
request's filters applied to them, U2V (and rows whose list ran short) searched live. Reported
per setting: each vector channel's share of FLAT's candidates it returns (recall) and of all
vector candidates together, and the live search's p50 / p99 (ms, a loaded machine: an
indication only). The chosen setting is the smallest ef with candidate recall >= 0.95.

    python -m bench.hnsw_recall_bench --workspace bench/workspace-serving [--requests 200]

Writes bench/results/hnsw-recall.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from index.build import sku_queries
from index.channels import RecallFilter, multi_channel_recall
from index.collections import ContentIndex, build_content_index
from index.connection import open_index
from index.neighbours import TOP_N, NeighbourLists, search_table
from index.schema import HNSW_BUILD, METADATA_COLUMNS, IndexSpec
from index.server import LiteServer
from index.standalone import StandaloneServer
from mmrec.arrays import find_sorted
from mmrec.settings import REPO_ROOT, Settings
from mmrec.vocab import MATERIALS, S2V, U2V, V2V
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.schemas import RecommendRequest

RESULTS = REPO_ROOT / "bench" / "results"
EFS = (150, 200, 256, 384, 512)  # ef < 150 (the U2V/V2V quota) is raised to it anyway
TARGET = 0.95
CHANNELS = (U2V, V2V, S2V)


def service_cases(pipeline: RecommendationPipeline, n: int) -> list[tuple]:
    """(seeds, filters) of `n` requests of random users (scenes rotating, every 10th with a
    material filter, as the feed page sends)."""
    users = pd.read_parquet(pipeline.settings.raw_dir / "users.parquet", columns=["user_id"])
    rng = random.Random(0)
    cases = []
    for i in range(n):
        materials = [MATERIALS[i % len(MATERIALS)]] if i % 10 == 9 else None
        request = RecommendRequest(
            user_id=int(rng.choice(users.user_id.tolist())),
            scene=("home", "inner", "detail")[i % 3],
            materials=materials,
        )
        user, _ = pipeline.user_features(request.user_id)
        seeds, _ = pipeline.seeds(request, user)
        if seeds.clicked_items:  # a user with history: U2V and V2V have queries
            filters = RecallFilter(
                materials=tuple(materials) if materials else None,
                exclude_ids=frozenset(seeds.clicked_items),
            )
            cases.append((seeds, filters))
    return cases


def lists_for(pipeline, cases, index: ContentIndex, catalog: pd.DataFrame) -> NeighbourLists:
    """Neighbour lists of the cases' seeds only (a list depends on its own query alone), as
    `mmrec index build` would compute them in `index`."""
    stage = pipeline.recall
    items = np.unique(
        [i for seeds, _ in cases for i in seeds.clicked_items[: stage.seed_items]]
    ).astype(np.int64)
    rows, found = find_sorted(stage._item_ids, items)
    items, rows = items[found], rows[found]
    ids = catalog.item_id.to_numpy(np.int64)
    codes = catalog.material.map(MATERIALS.index).to_numpy(np.int64)
    pairs = {p for seeds, _ in cases for p in zip(*stage._sku_pairs(seeds), strict=True)}
    skus = np.asarray(sorted(pairs), np.int64).reshape(-1, 2)
    tables = {
        V2V: search_table(
            index, items, np.full(len(items), -1), stage._v2v_queries[rows], TOP_N[V2V], ids,
            codes, "V2V lists",
        ),
        S2V: search_table(
            index, skus[:, 0], skus[:, 1], sku_queries(stage.recall, skus[:, 0], skus[:, 1]),
            TOP_N[S2V], ids, codes, "S2V lists",
        ),
    }  # fmt: skip
    return NeighbourLists(index.record().build_id, tables)


def candidates(stage, cases, lists: NeighbourLists | None, max_seq_len: int) -> tuple:
    """Per case {channel: item ids} of the vector channels, and the searches' ms; `lists`
    None: every row searched live."""
    stage.use_lists = lists is not None
    if lists is not None:
        stage.lists = lists
    out, times = [], []
    for seeds, filters in cases:
        queries = stage.vector_queries(seeds, max_seq_len, filters)
        started = time.perf_counter()
        found = multi_channel_recall(stage.index, queries, filters=filters)
        times.append((time.perf_counter() - started) * 1000)
        out.append({c: {x.item_id for x in found.get(c, [])} for c in CHANNELS})
    return out, times


def recall_of(got: list[dict], truth: list[dict]) -> dict[str, float]:
    """Mean share of the truth's candidates found, per channel and over all vector channels."""
    shares: dict[str, list[float]] = {c: [] for c in (*CHANNELS, "all")}
    for have, want in zip(got, truth, strict=True):
        for channel in CHANNELS:
            if want[channel]:
                shares[channel].append(len(have[channel] & want[channel]) / len(want[channel]))
        every, found = set().union(*want.values()), set().union(*have.values())
        if every:
            shares["all"].append(len(found & every) / len(every))
    return {c: round(float(np.mean(v)), 4) for c, v in shares.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--m", type=int, default=HNSW_BUILD["M"])
    parser.add_argument("--ef-construction", type=int, default=HNSW_BUILD["efConstruction"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings.from_env(args.workspace)
    with LiteServer(settings.index_uri) as lite:
        pipeline = RecommendationPipeline(
            settings, ServingConfig.from_settings(settings), milvus_uri=lite.uri
        )
        stage = pipeline.recall
        max_seq_len = pipeline.ranker.max_seq_len
        cases = service_cases(pipeline, args.requests)
        truth, flat_ms = candidates(stage, cases, None, max_seq_len)
        catalog = stage.index.scan([*(c for c in METADATA_COLUMNS if c != "item_id"), "vector"])
    catalog = catalog.sort_values("item_id").reset_index(drop=True)
    vectors = np.stack(catalog.pop("vector").to_numpy()).astype(np.float32)
    spec = IndexSpec("HNSW", {"M": args.m, "efConstruction": args.ef_construction}, {"ef": EFS[0]})
    settings_rows = []
    with tempfile.TemporaryDirectory() as scratch, StandaloneServer(Path(scratch)) as server:
        client = open_index(settings.replace(milvus_uri=server.uri, milvus_token=server.token))
        report = build_content_index(client, vectors, catalog, "hnsw_copy", spec=spec)
        hnsw = ContentIndex(client)
        for ef in EFS:
            record = replace(hnsw.record(), spec=replace(spec, search_params={"ef": ef}))
            stage.index = ContentIndex.pinned(client, record)
            lists = lists_for(pipeline, cases, stage.index, catalog)
            got, ms = candidates(stage, cases, lists, max_seq_len)
            row = {
                "index": "HNSW", "M": args.m, "efConstruction": args.ef_construction, "ef": ef,
                "recall_vs_flat": recall_of(got, truth),
                "live_search_ms": {"p50": round(float(np.percentile(ms, 50)), 2),
                                   "p99": round(float(np.percentile(ms, 99)), 2)},
            }  # fmt: skip
            print(row)
            settings_rows.append(row)
    chosen = next((r for r in settings_rows if r["recall_vs_flat"]["all"] >= TARGET), None)
    result = {
        "catalog_items": len(catalog), "cases": len(cases), "build_s": round(report.seconds, 1),
        "flat_live_search_ms": {"p50": round(float(np.percentile(flat_ms, 50)), 2),
                                "p99": round(float(np.percentile(flat_ms, 99)), 2)},
        "settings": settings_rows, "target_recall": TARGET, "chosen": chosen,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hnsw-recall.json").write_text(json.dumps(result, indent=2))
    print(f"chosen {chosen}; wrote {RESULTS / 'hnsw-recall.json'}")


if __name__ == "__main__":
    main()
